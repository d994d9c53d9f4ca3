//! Screen capture on X11: the whole screen or one window of a display,
//! as I420 frames no larger than 1920×1080 (scaled to keep the aspect), for
//! the `sub` (screen-share) stream. Pixels come from `GetImage` on the X
//! connection (x11rb, no native library).
//!
//! Wayland sessions share through the desktop portal instead (not here).

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, ImageFormat, Window as XWindow,
};
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
    /// The conversion's scratch (BGRX rows into I420).
    max: (usize, usize),
}

fn x_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Capture(format!("X11: {e}"))
}

impl X11Screen {
    /// Opens `display` (`:0`; `None`: `$DISPLAY`) to capture `target`.
    pub fn open(display: Option<&str>, target: ScreenTarget) -> Result<Self, MediaError> {
        let (conn, screen) = x11rb::connect(display).map_err(x_err)?;
        let root = conn.setup().roots[screen].root;
        let s = X11Screen {
            conn,
            root,
            target,
            max: MAX_SCREEN,
        };
        // The depth must be one this reader understands (24 or 32 bits in
        // 32-bit pixels, as every X server of this century).
        s.bits_per_pixel()?;
        Ok(s)
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
            for (prop, ty) in [(net_name, utf8), (AtomEnum::WM_NAME.into(), AtomEnum::STRING.into())] {
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

    /// Grabs one frame: the target's pixels as I420, scaled down to fit the
    /// maximum size, with even dimensions.
    pub fn grab(&mut self) -> Result<VideoFrame, MediaError> {
        let drawable = match self.target {
            ScreenTarget::Screen => self.root,
            ScreenTarget::Window(id) => id,
        };
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
        let image = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                drawable,
                0,
                0,
                w as u16,
                h as u16,
                u32::MAX,
            )
            .map_err(x_err)?
            .reply()
            .map_err(|e| MediaError::Capture(format!("X11: the picture could not be read ({e})")))?;
        if image.data.len() < w * h * 4 {
            return Err(MediaError::Capture(format!(
                "X11: {} bytes for a {w}×{h} picture",
                image.data.len()
            )));
        }
        let mut frame = bgrx_to_i420(&image.data, w, h)?;
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
    let (y, u, v) = f.planes_mut();
    let cw = w / 2;
    for row in (0..h).step_by(2) {
        for col in (0..w).step_by(2) {
            let (mut rs, mut gs, mut bs) = (0i32, 0i32, 0i32);
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = ((row + dr) * w + col + dc) * 4;
                let (b, g, r) = (
                    i32::from(bgrx[i]),
                    i32::from(bgrx[i + 1]),
                    i32::from(bgrx[i + 2]),
                );
                y[(row + dr) * w + col + dc] = ((66 * r + 129 * g + 25 * b + 128) >> 8) as u8 + 16;
                rs += r;
                gs += g;
                bs += b;
            }
            let (r, g, b) = (rs / 4, gs / 4, bs / 4);
            let ci = (row / 2) * cw + col / 2;
            u[ci] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v[ci] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    Ok(f)
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
