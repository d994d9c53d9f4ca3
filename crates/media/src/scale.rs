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
    if w < 2 || h < 2 {
        // A line: each output takes its pixel(s), the edge repeated.
        for y in 0..oh {
            let r0 = &src[(2 * y).min(h - 1) * w..][..w];
            let r1 = &src[(2 * y + 1).min(h - 1) * w..][..w];
            for x in 0..ow {
                let (a, b) = (2 * x, (2 * x + 1).min(w - 1));
                let sum = r0[a] as u16 + r0[b] as u16 + r1[a] as u16 + r1[b] as u16;
                out[y * ow + x] = ((sum + 2) / 4) as u8;
            }
        }
        return (out, ow, oh);
    }
    // Each pair of rows summed down the columns first (contiguous: the
    // compiler vectorizes it), then pairs of those sums: no bounds to
    // clamp.
    let mut sums = vec![0u16; w];
    for (row, pair) in out.chunks_exact_mut(ow).zip(src.chunks_exact(2 * w)) {
        let (r0, r1) = pair.split_at(w);
        for ((t, &a), &b) in sums.iter_mut().zip(r0).zip(r1) {
            *t = a as u16 + b as u16;
        }
        for (o, s) in row.iter_mut().zip(sums.chunks_exact(2)) {
            *o = ((s[0] + s[1] + 2) >> 2) as u8;
        }
    }
    (out, ow, oh)
}

/// Per output position: the source index, the next one (clamped to the
/// edge) and the next one's 8-bit weight.
fn taps(src: usize, dst: usize) -> Vec<(usize, usize, u32)> {
    let step = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            let pos = ((i as f64 + 0.5) * step - 0.5).max(0.0);
            let i0 = (pos.floor() as usize).min(src - 1);
            let frac = if i0 + 1 < src { pos - i0 as f64 } else { 0.0 };
            (i0, (i0 + 1).min(src - 1), (frac * 256.0).round() as u32)
        })
        .collect()
}

/// Scales one plane to `dw × dh` into `out`. Bilinear, rows first: the
/// two source rows are blended across their whole width (contiguous, so
/// the compiler vectorizes it) into 16-bit sums, then each output pixel
/// takes two of those. No rounding until the end, so the result is the
/// exact bilinear value whichever direction goes first.
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
    let mut blended = vec![0u16; w];
    for (row, &(y0, y1, fy)) in out.chunks_exact_mut(dw).zip(&ys) {
        let (r0, r1) = (&src[y0 * w..][..w], &src[y1 * w..][..w]);
        let (a, b) = (256 - fy as u16, fy as u16);
        for ((t, &p0), &p1) in blended.iter_mut().zip(r0).zip(r1) {
            *t = p0 as u16 * a + p1 as u16 * b;
        }
        for (o, &(x0, x1, fx)) in row.iter_mut().zip(&xs) {
            let v = blended[x0] as u32 * (256 - fx) + blended[x1] as u32 * fx;
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

    #[test]
    fn halving_averages_each_2x2_block() {
        // Noise, odd sizes (the last row and column dropped) and lines.
        let noise = |c: usize, r: usize| {
            let h = (c as u32).wrapping_mul(2_654_435_761) ^ (r as u32).wrapping_mul(40_503);
            (h ^ (h >> 15)).wrapping_mul(2_246_822_519) as u8
        };
        for (w, h) in [(640, 480), (7, 5), (1, 6), (6, 1), (1, 1)] {
            let src: Vec<u8> = (0..w * h).map(|i| noise(i % w, i / w)).collect();
            let (out, ow, oh) = halve(&src, w, h);
            assert_eq!((ow, oh), ((w / 2).max(1), (h / 2).max(1)));
            for y in 0..oh {
                for x in 0..ow {
                    let p = |x: usize, y: usize| src[y.min(h - 1) * w + x.min(w - 1)] as u16;
                    let sum = p(2 * x, 2 * y)
                        + p(2 * x + 1, 2 * y)
                        + p(2 * x, 2 * y + 1)
                        + p(2 * x + 1, 2 * y + 1);
                    assert_eq!(out[y * ow + x], ((sum + 2) / 4) as u8, "{w}×{h} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn rows_first_gives_the_exact_bilinear_value() {
        // Noise, so every weight and edge matters: each output pixel is the
        // textbook bilinear sample (both directions at once, rounded once).
        let f = frame(640, 360, |c, r| {
            let h = (c as u32).wrapping_mul(2_654_435_761) ^ (r as u32).wrapping_mul(40_503);
            (h ^ (h >> 15)).wrapping_mul(2_246_822_519) as u8
        });
        for (mw, mh) in [(354, 196), (500, 300), (639, 359)] {
            let s = f.scaled_to_fit(mw, mh).unwrap();
            let (xs, ys) = (taps(640, s.width), taps(360, s.height));
            for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
                for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                    let p = |x: usize, y: usize| f.y()[y * 640 + x] as u32;
                    let top = p(x0, y0) * (256 - fx) + p(x1, y0) * fx;
                    let bot = p(x0, y1) * (256 - fx) + p(x1, y1) * fx;
                    let want = ((top * (256 - fy) + bot * fy + (1 << 15)) >> 16) as u8;
                    assert_eq!(s.y()[oy * s.width + ox], want, "{mw}×{mh} at {ox},{oy}");
                }
            }
        }
    }
}
