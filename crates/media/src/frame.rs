//! Raw video (I420) and audio (interleaved i16 PCM) frames.

use crate::MediaError;

/// A raw video frame in I420 (YUV 4:2:0, planar), tightly packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// Y plane (`width × height`), then U and V (`width/2 × height/2` each).
    pub data: Vec<u8>,
    /// Capture time, microseconds since the Unix epoch.
    pub captured_us: u64,
}

impl VideoFrame {
    /// A black frame.
    pub fn black(width: usize, height: usize) -> Result<Self, MediaError> {
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(MediaError::Invalid(format!(
                "I420 needs even, non-zero dimensions, got {width}×{height}"
            )));
        }
        let luma = width * height;
        let mut data = vec![16u8; luma + luma / 2];
        data[luma..].fill(128);
        Ok(VideoFrame {
            width,
            height,
            data,
            captured_us: 0,
        })
    }

    /// The Y plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    /// The U plane.
    pub fn u(&self) -> &[u8] {
        let l = self.width * self.height;
        &self.data[l..l + l / 4]
    }

    /// The V plane.
    pub fn v(&self) -> &[u8] {
        let l = self.width * self.height;
        &self.data[l + l / 4..]
    }

    /// The Y, U and V planes, mutable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let l = self.width * self.height;
        let (y, uv) = self.data.split_at_mut(l);
        let (u, v) = uv.split_at_mut(l / 4);
        (y, u, v)
    }

    /// The Y plane, mutable.
    pub fn y_mut(&mut self) -> &mut [u8] {
        let l = self.width * self.height;
        &mut self.data[..l]
    }
}

impl openh264::formats::YUVSource for VideoFrame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        VideoFrame::y(self)
    }

    fn u(&self) -> &[u8] {
        VideoFrame::u(self)
    }

    fn v(&self) -> &[u8] {
        VideoFrame::v(self)
    }
}

/// A chunk of audio: interleaved signed 16-bit samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
    /// Capture time, microseconds since the Unix epoch.
    pub captured_us: u64,
}

impl AudioFrame {
    /// The RMS level in dBFS (−∞ … 0); `None` for no samples.
    pub fn dbfs(&self) -> Option<f32> {
        if self.samples.is_empty() {
            return None;
        }
        let sum: f64 = self.samples.iter().map(|s| f64::from(*s).powi(2)).sum();
        let rms = (sum / self.samples.len() as f64).sqrt() / 32768.0;
        Some((20.0 * rms.max(1e-10).log10()) as f32)
    }

    /// A TRTC-style volume from 0 (silence, −60 dBFS or below) to 100 (0 dBFS).
    pub fn volume(&self) -> u8 {
        match self.dbfs() {
            Some(db) => (((db + 60.0) / 60.0).clamp(0.0, 1.0) * 100.0).round() as u8,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_have_i420_sizes() {
        let f = VideoFrame::black(640, 480).unwrap();
        assert_eq!(
            (f.y().len(), f.u().len(), f.v().len()),
            (640 * 480, 320 * 240, 320 * 240)
        );
        assert!(VideoFrame::black(641, 480).is_err());
        assert!(VideoFrame::black(0, 480).is_err());
    }

    #[test]
    fn volume_scale() {
        let silent = AudioFrame {
            sample_rate: 48000,
            channels: 1,
            samples: vec![0; 960],
            captured_us: 0,
        };
        assert_eq!(silent.volume(), 0);
        let full = AudioFrame {
            samples: vec![i16::MAX; 960],
            ..silent.clone()
        };
        assert_eq!(full.volume(), 100);
    }
}
