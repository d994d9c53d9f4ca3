//! The synthetic camera: a moving test pattern whose top rows carry a frame
//! counter and the capture time as large black and white blocks, so both
//! can be read back after lossy H.264 coding.

use crate::frame::VideoFrame;
use crate::{unix_micros, MediaError};

/// The side of one stamp block, in pixels. Large enough that an H.264
/// encoder at ordinary bitrates keeps each block's mean far from the middle.
pub const BLOCK: usize = 16;
const STAMP_BITS: usize = 32 + 64 + 8;
const BLACK: u8 = 16;
const WHITE: u8 = 235;

/// What a frame carries: its number and when it was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Frame counter, from 0.
    pub counter: u32,
    /// Capture time, microseconds since the Unix epoch.
    pub captured_us: u64,
}

fn crc8(bytes: &[u8]) -> u8 {
    // CRC-8 (polynomial x^8 + x^2 + x + 1) with a non-zero start and
    // final xor, so that an all-black or all-white frame never checks out.
    let mut crc = 0xA5u8;
    for b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc ^ 0x5A
}

impl Stamp {
    fn bytes(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[..4].copy_from_slice(&self.counter.to_be_bytes());
        b[4..12].copy_from_slice(&self.captured_us.to_be_bytes());
        b[12] = crc8(&b[..12]);
        b
    }

    /// Draws the stamp into the top rows of `frame`.
    pub fn draw(&self, frame: &mut VideoFrame) {
        let cols = frame.width / BLOCK;
        let width = frame.width;
        let bytes = self.bytes();
        let y = frame.y_mut();
        for bit in 0..STAMP_BITS {
            let on = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
            let (bx, by) = ((bit % cols) * BLOCK, (bit / cols) * BLOCK);
            for row in by..by + BLOCK {
                y[row * width + bx..row * width + bx + BLOCK].fill(if on { WHITE } else { BLACK });
            }
        }
    }

    /// Reads a stamp back from a (possibly lossily coded) frame; `None` if
    /// the frame carries none or it does not check out.
    pub fn read(frame: &VideoFrame) -> Option<Stamp> {
        let cols = frame.width / BLOCK;
        if cols == 0 || rows_needed(frame.width) * BLOCK > frame.height {
            return None;
        }
        let y = frame.y();
        let mut bytes = [0u8; 13];
        for bit in 0..STAMP_BITS {
            let (bx, by) = ((bit % cols) * BLOCK, (bit / cols) * BLOCK);
            // The block's centre, away from edges where coding smears.
            let mut sum = 0u32;
            for row in by + 4..by + BLOCK - 4 {
                sum += y[row * frame.width + bx + 4..row * frame.width + bx + BLOCK - 4]
                    .iter()
                    .map(|v| u32::from(*v))
                    .sum::<u32>();
            }
            let mean = sum / ((BLOCK as u32 - 8) * (BLOCK as u32 - 8));
            if mean > 128 {
                bytes[bit / 8] |= 0x80 >> (bit % 8);
            }
        }
        if crc8(&bytes[..12]) != bytes[12] {
            return None;
        }
        Some(Stamp {
            counter: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            captured_us: u64::from_be_bytes(bytes[4..12].try_into().ok()?),
        })
    }
}

fn rows_needed(width: usize) -> usize {
    let cols = width / BLOCK;
    if cols == 0 {
        return usize::MAX / BLOCK;
    }
    STAMP_BITS.div_ceil(cols)
}

/// A moving test pattern: scrolling colour bars and a bouncing box, with a
/// [`Stamp`] in its top rows.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: usize,
    height: usize,
    counter: u32,
}

impl TestPattern {
    /// A pattern of this size. The width must fit the stamp (at least 320)
    /// and both dimensions must be even.
    pub fn new(width: usize, height: usize) -> Result<Self, MediaError> {
        VideoFrame::black(width, height)?;
        if width < 320 || rows_needed(width) * BLOCK + BLOCK > height {
            return Err(MediaError::Invalid(format!(
                "the test pattern needs at least 320×{} , got {width}×{height}",
                rows_needed(320.max(width)) * BLOCK + BLOCK
            )));
        }
        Ok(TestPattern {
            width,
            height,
            counter: 0,
        })
    }

    /// The next frame, stamped with its counter and `captured_us`.
    pub fn frame_at(&mut self, captured_us: u64) -> VideoFrame {
        let (w, h, n) = (self.width, self.height, self.counter as usize);
        let mut f = VideoFrame {
            width: w,
            height: h,
            data: vec![0; w * h * 3 / 2],
            captured_us,
        };
        // Scrolling vertical bars in luma and chroma.
        const BARS: [(u8, u8, u8); 8] = [
            (235, 128, 128),
            (210, 16, 146),
            (170, 166, 16),
            (145, 54, 34),
            (106, 202, 222),
            (81, 90, 240),
            (41, 240, 110),
            (16, 128, 128),
        ];
        let bar_w = (w / 8).max(1);
        let shift = n * 4;
        let (luma, chroma) = f.data.split_at_mut(w * h);
        let (u, v) = chroma.split_at_mut(w * h / 4);
        for x in 0..w {
            let (yv, _, _) = BARS[((x + shift) / bar_w) % 8];
            for row in 0..h {
                luma[row * w + x] = yv;
            }
        }
        for x in 0..w / 2 {
            let (_, uv, vv) = BARS[((x * 2 + shift) / bar_w) % 8];
            for row in 0..h / 2 {
                u[row * (w / 2) + x] = uv;
                v[row * (w / 2) + x] = vv;
            }
        }
        // A box bouncing across the lower part.
        // `new` guarantees the stamp fits; the box gets what is left below it.
        let top = rows_needed(w) * BLOCK + BLOCK;
        let size = (h / 6).max(8).min(h - top);
        let span_x = w - size;
        let span_y = (h - top - size).max(1);
        let bx = bounce(n * 7, span_x);
        let by = top + bounce(n * 5, span_y);
        for row in by..by + size {
            luma[row * w + bx..row * w + bx + size].fill(235);
        }
        Stamp {
            counter: self.counter,
            captured_us,
        }
        .draw(&mut f);
        self.counter = self.counter.wrapping_add(1);
        f
    }

    /// The next frame, stamped with the current time.
    pub fn next_frame(&mut self) -> VideoFrame {
        self.frame_at(unix_micros())
    }

    /// How many frames it has made.
    pub fn frames_made(&self) -> u32 {
        self.counter
    }
}

fn bounce(t: usize, span: usize) -> usize {
    if span == 0 {
        return 0;
    }
    let p = t % (2 * span);
    if p < span {
        p
    } else {
        2 * span - p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_pattern_draws_every_frame() {
        let mut p = TestPattern::new(320, 112).unwrap();
        for i in 0..100 {
            let f = p.frame_at(i);
            assert_eq!(Stamp::read(&f).map(|s| s.counter), Some(i as u32));
        }
    }

    #[test]
    fn stamp_round_trips_uncoded() {
        let mut p = TestPattern::new(640, 480).unwrap();
        for i in 0..5 {
            let f = p.frame_at(1_700_000_000_000_000 + i);
            assert_eq!(
                Stamp::read(&f),
                Some(Stamp {
                    counter: i as u32,
                    captured_us: 1_700_000_000_000_000 + i
                })
            );
        }
    }

    #[test]
    fn damaged_or_missing_stamp_is_refused() {
        let mut f = TestPattern::new(320, 240).unwrap().frame_at(42);
        assert!(Stamp::read(&f).is_some());
        // Invert the first block: one bit flipped.
        let w = f.width;
        for row in 0..BLOCK {
            for px in &mut f.y_mut()[row * w..row * w + BLOCK] {
                *px = 251 - *px;
            }
        }
        assert_eq!(Stamp::read(&f), None);
        assert_eq!(Stamp::read(&VideoFrame::black(640, 480).unwrap()), None);
        let mut white = VideoFrame::black(640, 480).unwrap();
        white.y_mut().fill(235);
        assert_eq!(Stamp::read(&white), None);
    }

    #[test]
    fn too_small_is_refused() {
        assert!(TestPattern::new(160, 120).is_err());
        assert!(TestPattern::new(320, 90).is_err());
        assert!(TestPattern::new(320, 240).is_ok());
    }
}
