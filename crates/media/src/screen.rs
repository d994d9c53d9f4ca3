//! Screen capture on X11: the whole screen or one window of a display,
//! as I420 frames no larger than 1920×1080 (scaled to keep the aspect), for
//! the `sub` (screen-share) stream. Pixels come from `GetImage` on the X
//! connection (x11rb, no native library); with the DAMAGE extension only
//! the rows that changed since the last frame are read and converted.
//!
//! Wayland sessions share through the desktop portal instead (not here).

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, ImageFormat, Window as XWindow};
use x11rb::rust_connection::RustConnection;

use crate::frame::VideoFrame;
use crate::MediaError;

/// The largest picture a screen is sent at; larger screens are scaled down.
pub const MAX_SCREEN: (usize, usize) = (1920, 1080);

/// What to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenTarget {
    /// The whole screen (the root window).
    Screen,
    /// One top-level window, by its X id.
    Window(u32),
}

/// A window that can be shared, for a picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedWindow {
    /// Its X id.
    pub id: u32,
    /// Its title (`_NET_WM_NAME`, else `WM_NAME`), maybe empty.
    pub title: String,
    /// Its size in pixels.
    pub width: u16,
    /// Its size in pixels.
    pub height: u16,
}

/// A capture of one X display.
pub struct X11Screen {
    conn: RustConnection,
    root: XWindow,
    target: ScreenTarget,
    max: (usize, usize),
    /// The DAMAGE object watching the target, and a region to fetch its
    /// rectangles into (none: the server has no DAMAGE; every grab reads all).
    damage: Option<(u32, u32)>,
    /// The last full-size picture, updated where damaged.
    last: Option<VideoFrame>,
}

fn x_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Capture(format!("X11: {e}"))
}

impl X11Screen {
    /// Opens `display` (`:0`; `None`: `$DISPLAY`) to capture `target`.
    pub fn open(display: Option<&str>, target: ScreenTarget) -> Result<Self, MediaError> {
        let (conn, screen) = x11rb::connect(display).map_err(|e| {
            let name = display
                .map(str::to_owned)
                .or_else(|| std::env::var("DISPLAY").ok())
                .unwrap_or_else(|| "(no DISPLAY set)".into());
            MediaError::Capture(format!("X11: display {name} cannot be opened: {e}"))
        })?;
        let root = conn.setup().roots[screen].root;
        let mut s = X11Screen {
            conn,
            root,
            target,
            max: MAX_SCREEN,
            damage: None,
            last: None,
        };
        // The depth must be one this reader understands (24 or 32 bits in
        // 32-bit pixels, as every X server of this century).
        s.bits_per_pixel()?;
        s.damage = s.watch_damage();
        Ok(s)
    }

    /// Starts watching the target's changes, if the server has DAMAGE.
    fn watch_damage(&self) -> Option<(u32, u32)> {
        use x11rb::protocol::{damage, xfixes};
        xfixes::query_version(&self.conn, 5, 0).ok()?.reply().ok()?;
        damage::query_version(&self.conn, 1, 1).ok()?.reply().ok()?;
        let drawable = self.drawable();
        let id = self.conn.generate_id().ok()?;
        damage::create(&self.conn, id, drawable, damage::ReportLevel::NON_EMPTY)
            .ok()?
            .check()
            .ok()?;
        let region = self.conn.generate_id().ok()?;
        xfixes::create_region(&self.conn, region, &[])
            .ok()?
            .check()
            .ok()?;
        Some((id, region))
    }

    fn drawable(&self) -> XWindow {
        match self.target {
            ScreenTarget::Screen => self.root,
            ScreenTarget::Window(id) => id,
        }
    }

    /// The rows changed since the last call (`None`: unknown, read all).
    fn damaged_rows(&mut self, h: usize) -> Option<(usize, usize)> {
        use x11rb::protocol::{damage, xfixes};
        let (id, region) = self.damage?;
        // Notify events only say "something changed"; the region says what.
        while let Ok(Some(_)) = self.conn.poll_for_event() {}
        damage::subtract(&self.conn, id, x11rb::NONE, region).ok()?;
        let rects = xfixes::fetch_region(&self.conn, region)
            .ok()?
            .reply()
            .ok()?;
        let mut rows: Option<(usize, usize)> = None;
        for r in rects.rectangles {
            let y0 = usize::try_from(r.y.max(0)).unwrap_or(0).min(h);
            let y1 = (y0 + usize::from(r.height)).min(h);
            if y1 > y0 {
                rows = Some(rows.map_or((y0, y1), |(a, b)| (a.min(y0), b.max(y1))));
            }
        }
        // Whole chroma rows.
        Some(rows.map_or((0, 0), |(a, b)| (a & !1, (b + 1) & !1)))
    }

    /// Caps the picture at `max` (both even) instead of [`MAX_SCREEN`].
    pub fn with_max_size(mut self, max: (usize, usize)) -> Self {
        self.max = max;
        self
    }

    fn bits_per_pixel(&self) -> Result<u8, MediaError> {
        let setup = self.conn.setup();
        let depth = setup
            .roots
            .iter()
            .find(|s| s.root == self.root)
            .map(|s| s.root_depth)
            .unwrap_or(24);
        let bpp = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        if bpp != 32 || (depth != 24 && depth != 32) {
            return Err(MediaError::Capture(format!(
                "X11: a depth-{depth} screen with {bpp}-bit pixels cannot be captured"
            )));
        }
        Ok(bpp)
    }

    /// The screen's size.
    pub fn screen_size(&self) -> Result<(u16, u16), MediaError> {
        let g = self
            .conn
            .get_geometry(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        Ok((g.width, g.height))
    }

    /// The top-level windows a window manager lists (`_NET_CLIENT_LIST`),
    /// else the root's mapped children, with their titles.
    pub fn windows(&self) -> Result<Vec<SharedWindow>, MediaError> {
        let atom = |name: &[u8]| -> Result<u32, MediaError> {
            Ok(self
                .conn
                .intern_atom(false, name)
                .map_err(x_err)?
                .reply()
                .map_err(x_err)?
                .atom)
        };
        let client_list = atom(b"_NET_CLIENT_LIST")?;
        let listed = self
            .conn
            .get_property(false, self.root, client_list, AtomEnum::WINDOW, 0, 4096)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let mut ids: Vec<u32> = listed.value32().map(|v| v.collect()).unwrap_or_default();
        if ids.is_empty() {
            let tree = self
                .conn
                .query_tree(self.root)
                .map_err(x_err)?
                .reply()
                .map_err(x_err)?;
            ids = tree.children;
        }
        let net_name = atom(b"_NET_WM_NAME")?;
        let utf8 = atom(b"UTF8_STRING")?;
        let mut out = Vec::new();
        for id in ids {
            let Ok(attrs) = self.conn.get_window_attributes(id).map_err(x_err)?.reply() else {
                continue;
            };
            if attrs.map_state != x11rb::protocol::xproto::MapState::VIEWABLE {
                continue;
            }
            let Ok(g) = self.conn.get_geometry(id).map_err(x_err)?.reply() else {
                continue;
            };
            let mut title = String::new();
            for (prop, ty) in [
                (net_name, utf8),
                (AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()),
            ] {
                if let Ok(r) = self
                    .conn
                    .get_property(false, id, prop, ty, 0, 1024)
                    .map_err(x_err)?
                    .reply()
                {
                    if !r.value.is_empty() {
                        title = String::from_utf8_lossy(&r.value).into_owned();
                        break;
                    }
                }
            }
            out.push(SharedWindow {
                id,
                title,
                width: g.width,
                height: g.height,
            });
        }
        Ok(out)
    }

    /// `drawable`'s size rounded down to even numbers (I420's).
    fn even_size(&self, drawable: XWindow) -> Result<(usize, usize), MediaError> {
        let g = self
            .conn
            .get_geometry(drawable)
            .map_err(x_err)?
            .reply()
            .map_err(|e| MediaError::Capture(format!("X11: the window is gone ({e})")))?;
        let (w, h) = (usize::from(g.width) & !1, usize::from(g.height) & !1);
        if w == 0 || h == 0 {
            return Err(MediaError::Capture("X11: the window has no area".into()));
        }
        Ok((w, h))
    }

    /// Rows `y0..y1` of `drawable`, `w` wide, as BGRX.
    fn read_rows(
        &self,
        drawable: XWindow,
        w: usize,
        y0: usize,
        y1: usize,
    ) -> Result<Vec<u8>, MediaError> {
        let image = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                drawable,
                0,
                y0 as i16,
                w as u16,
                (y1 - y0) as u16,
                u32::MAX,
            )
            .map_err(x_err)?
            .reply()
            .map_err(|e| {
                MediaError::Capture(format!("X11: the picture could not be read ({e})"))
            })?;
        if image.data.len() < w * (y1 - y0) * 4 {
            return Err(MediaError::Capture(format!(
                "X11: {} bytes for a {w}×{} picture",
                image.data.len(),
                y1 - y0
            )));
        }
        Ok(image.data)
    }

    /// A small picture of window `id` (or the whole screen), fitted into
    /// `max_w` × `max_h`, for a picker: read once, not tracked.
    pub fn thumbnail(
        &self,
        target: ScreenTarget,
        max_w: usize,
        max_h: usize,
    ) -> Result<VideoFrame, MediaError> {
        let drawable = match target {
            ScreenTarget::Screen => self.root,
            ScreenTarget::Window(id) => id,
        };
        let (w, h) = self.even_size(drawable)?;
        let full = bgrx_to_i420(&self.read_rows(drawable, w, 0, h)?, w, h)?;
        Ok(full.scaled_to_fit(max_w, max_h).unwrap_or(full))
    }

    /// Grabs one frame: the target's pixels as I420, scaled down to fit the
    /// maximum size, with even dimensions.
    pub fn grab(&mut self) -> Result<VideoFrame, MediaError> {
        let drawable = self.drawable();
        let (w, h) = self.even_size(drawable)?;
        let damaged = self.damaged_rows(h);
        let reusable = self
            .last
            .as_ref()
            .is_some_and(|f| f.width == w && f.height == h);
        let (y0, y1) = match (damaged, reusable) {
            (Some(rows), true) => rows,
            _ => (0, h),
        };
        if !reusable {
            self.last = Some(VideoFrame::black(w, h)?);
        }
        if y1 > y0 {
            let image = self.read_rows(drawable, w, y0, y1)?;
            if let Some(last) = self.last.as_mut() {
                convert_rows(&image, w, y0, y1, last);
            }
        }
        let mut frame = self
            .last
            .clone()
            .ok_or_else(|| MediaError::Capture("X11: no picture".into()))?;
        frame.captured_us = crate::unix_micros();
        Ok(match frame.scaled_to_fit(self.max.0, self.max.1) {
            Some(scaled) => scaled,
            None => frame,
        })
    }
}

/// 32-bit BGRX pixels (X's little-endian ZPixmap), `w` × `h` (even), to
/// I420 (BT.601, limited range), each chroma sample the mean of its 2×2
/// block.
pub fn bgrx_to_i420(bgrx: &[u8], w: usize, h: usize) -> Result<VideoFrame, MediaError> {
    let mut f = VideoFrame::black(w, h)?;
    if bgrx.len() < w * h * 4 {
        return Err(MediaError::Invalid(format!(
            "{} bytes for a {w}×{h} BGRX picture",
            bgrx.len()
        )));
    }
    convert_rows(bgrx, w, 0, h, &mut f);
    Ok(f)
}

#[inline(always)]
fn luma(b: i32, g: i32, r: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// Converts the band of rows `y0..y1` (even bounds) of `f`, given as a
/// `w`-wide BGRX picture of just those rows, two rows at a time (one
/// chroma row).
fn convert_rows(bgrx: &[u8], w: usize, y0: usize, y1: usize, f: &mut VideoFrame) {
    let cw = w / 2;
    let (y_plane, u_plane, v_plane) = f.planes_mut();
    for row in (y0..y1).step_by(2) {
        let at = row - y0;
        let top = &bgrx[at * w * 4..(at + 1) * w * 4];
        let bottom = &bgrx[(at + 1) * w * 4..(at + 2) * w * 4];
        let (y_top, y_rest) = y_plane[row * w..(row + 2) * w].split_at_mut(w);
        let u_row = &mut u_plane[(row / 2) * cw..(row / 2 + 1) * cw];
        let v_row = &mut v_plane[(row / 2) * cw..(row / 2 + 1) * cw];
        for (i, ((t, b), (yt, yb))) in top
            .chunks_exact(8)
            .zip(bottom.chunks_exact(8))
            .zip(y_top.chunks_exact_mut(2).zip(y_rest.chunks_exact_mut(2)))
            .enumerate()
        {
            let px =
                |p: &[u8], o: usize| (i32::from(p[o]), i32::from(p[o + 1]), i32::from(p[o + 2]));
            let (b0, g0, r0) = px(t, 0);
            let (b1, g1, r1) = px(t, 4);
            let (b2, g2, r2) = px(b, 0);
            let (b3, g3, r3) = px(b, 4);
            yt[0] = luma(b0, g0, r0);
            yt[1] = luma(b1, g1, r1);
            yb[0] = luma(b2, g2, r2);
            yb[1] = luma(b3, g3, r3);
            let (r, g, bl) = (
                (r0 + r1 + r2 + r3) >> 2,
                (g0 + g1 + g2 + g3) >> 2,
                (b0 + b1 + b2 + b3) >> 2,
            );
            u_row[i] = (((-38 * r - 74 * g + 112 * bl + 128) >> 8) + 128) as u8;
            v_row[i] = (((112 * r - 94 * g - 18 * bl + 128) >> 8) + 128) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgrx_converts_as_bt601_limited_range() {
        // 2×2 white, then 2×2 pure red.
        let white = [255u8, 255, 255, 0].repeat(4);
        let f = bgrx_to_i420(&white, 2, 2).unwrap();
        assert_eq!(f.y(), &[235, 235, 235, 235]);
        assert_eq!((f.u()[0], f.v()[0]), (128, 128));
        let red = [0u8, 0, 255, 0].repeat(4);
        let f = bgrx_to_i420(&red, 2, 2).unwrap();
        assert_eq!(f.y()[0], 82);
        assert_eq!((f.u()[0], f.v()[0]), (90, 240));
        assert!(bgrx_to_i420(&white, 3, 2).is_err());
    }
}
