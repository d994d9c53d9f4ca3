//! Scaling I420 frames down to the size they are shown at: halving by
//! 2×2 averages while the frame is more than twice the target, then
//! bilinear in 8-bit fixed point. Never scales up.

use crate::frame::VideoFrame;

/// The largest even size with `frame`'s aspect that fits in `max_w × max_h`
/// (at least 2×2), or `None` when the frame fits already.
pub fn fit(width: usize, height: usize, max_w: usize, max_h: usize) -> Option<(usize, usize)> {
    if width <= max_w && height <= max_h {
        return None;
    }
    let s = (max_w as f64 / width as f64).min(max_h as f64 / height as f64);
    let even = |v: f64| ((v / 2.0 + 1e-6).floor() as usize * 2).max(2);
    Some((even(width as f64 * s), even(height as f64 * s)))
}

/// Halves a plane with 2×2 averages (odd last row/column dropped).
fn halve(src: &[u8], w: usize, h: usize) -> (Vec<u8>, usize, usize) {
    let (ow, oh) = ((w / 2).max(1), (h / 2).max(1));
    let mut out = vec![0u8; ow * oh];
    for y in 0..oh {
        let r0 = &src[(2 * y).min(h - 1) * w..][..w];
        let r1 = &src[(2 * y + 1).min(h - 1) * w..][..w];
        let row = &mut out[y * ow..][..ow];
        for (x, o) in row.iter_mut().enumerate() {
            let (a, b) = (2 * x, (2 * x + 1).min(w - 1));
            let sum = r0[a] as u16 + r0[b] as u16 + r1[a] as u16 + r1[b] as u16;
            *o = ((sum + 2) / 4) as u8;
        }
    }
    (out, ow, oh)
}

/// Source index and 8-bit weight of the next sample, per output position.
fn taps(src: usize, dst: usize) -> Vec<(usize, u16)> {
    let step = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            let pos = ((i as f64 + 0.5) * step - 0.5).max(0.0);
            let i0 = (pos.floor() as usize).min(src - 1);
            let frac = if i0 + 1 < src { pos - i0 as f64 } else { 0.0 };
            (i0, (frac * 256.0).round() as u16)
        })
        .collect()
}

/// Scales one plane to `dw × dh` into `out`.
fn plane(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize, out: &mut [u8]) {
    let (mut buf, mut w, mut h) = (None::<Vec<u8>>, sw, sh);
    while w >= 2 * dw && h >= 2 * dh && w >= 2 && h >= 2 {
        let (b, nw, nh) = halve(buf.as_deref().unwrap_or(src), w, h);
        (buf, w, h) = (Some(b), nw, nh);
    }
    let src = buf.as_deref().unwrap_or(src);
    if (w, h) == (dw, dh) {
        out.copy_from_slice(&src[..dw * dh]);
        return;
    }
    let xs = taps(w, dw);
    let ys = taps(h, dh);
    for (row, &(y0, fy)) in out.chunks_exact_mut(dw).zip(&ys) {
        let r0 = &src[y0 * w..][..w];
        let r1 = &src[(y0 + 1).min(h - 1) * w..][..w];
        for (o, &(x0, fx)) in row.iter_mut().zip(&xs) {
            let x1 = (x0 + 1).min(w - 1);
            let top = r0[x0] as u32 * (256 - fx as u32) + r0[x1] as u32 * fx as u32;
            let bot = r1[x0] as u32 * (256 - fx as u32) + r1[x1] as u32 * fx as u32;
            let v = top * (256 - fy as u32) + bot * fy as u32;
            *o = ((v + (1 << 15)) >> 16) as u8;
        }
    }
}

impl VideoFrame {
    /// This frame scaled down to fit in `max_w × max_h` (aspect kept, even
    /// size), or `None` when it fits already.
    pub fn scaled_to_fit(&self, max_w: usize, max_h: usize) -> Option<VideoFrame> {
        let (dw, dh) = fit(self.width, self.height, max_w, max_h)?;
        let mut out = VideoFrame {
            width: dw,
            height: dh,
            data: vec![0u8; dw * dh * 3 / 2],
            captured_us: self.captured_us,
        };
        let (cw, ch, dcw, dch) = (self.width / 2, self.height / 2, dw / 2, dh / 2);
        let (y, u, v) = out.planes_mut();
        plane(self.y(), self.width, self.height, dw, dh, y);
        plane(self.u(), cw, ch, dcw, dch, u);
        plane(self.v(), cw, ch, dcw, dch, v);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> VideoFrame {
        let mut fr = VideoFrame::black(w, h).unwrap();
        let (y, u, v) = fr.planes_mut();
        for r in 0..h {
            for c in 0..w {
                y[r * w + c] = f(c, r);
            }
        }
        u.fill(90);
        v.fill(200);
        fr
    }

    #[test]
    fn fits_keeping_the_aspect_and_never_grows() {
        assert_eq!(fit(640, 360, 1000, 1000), None);
        assert_eq!(fit(640, 360, 640, 360), None);
        assert_eq!(fit(640, 360, 354, 196), Some((348, 196)));
        assert_eq!(fit(640, 360, 320, 1000), Some((320, 180)));
        assert_eq!(fit(640, 360, 1, 1), Some((2, 2)));
    }

    #[test]
    fn flat_stays_flat_and_chroma_is_kept() {
        let f = frame(640, 360, |_, _| 77);
        let s = f.scaled_to_fit(354, 196).unwrap();
        assert_eq!((s.width, s.height), (348, 196));
        assert_eq!(s.data.len(), 348 * 196 * 3 / 2);
        assert!(s.y().iter().all(|&p| p == 77));
        assert!(s.u().iter().all(|&p| p == 90));
        assert!(s.v().iter().all(|&p| p == 200));
    }

    #[test]
    fn a_gradient_stays_a_gradient() {
        // Luma rising left to right: after scaling, still rising, same ends.
        let f = frame(1280, 720, |c, _| (c * 255 / 1279) as u8);
        for (mw, mh) in [(640, 360), (354, 196), (160, 90)] {
            let s = f.scaled_to_fit(mw, mh).unwrap();
            let row = &s.y()[s.width * (s.height / 2)..][..s.width];
            assert!(row.windows(2).all(|w| w[1] >= w[0]), "{mw}×{mh}: monotonic");
            assert!(
                row[0] < 8 && row[s.width - 1] > 247,
                "{mw}×{mh}: ends {} {}",
                row[0],
                row[s.width - 1]
            );
        }
    }

    #[test]
    fn a_checkerboard_averages_to_grey() {
        let f = frame(640, 360, |c, r| if (c + r) % 2 == 0 { 0 } else { 254 });
        let s = f.scaled_to_fit(320, 180).unwrap();
        assert!(
            s.y().iter().all(|&p| p == 127),
            "2×2 averages of a checkerboard"
        );
    }
}
