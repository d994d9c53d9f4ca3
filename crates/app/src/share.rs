//! Screen sharing: the sources to pick from (the whole screen and each
//! window, with thumbnails), and sharing one as the user's `sub` stream
//! beside the camera. The sharer's own screen gets no tile (it is not
//! shown back to them); the UI shows a "You are sharing" bar instead.

use std::io::Write;

use kaigi_media::screen::{ScreenTarget, X11Screen};
use kaigi_media::VideoFrame;
use kaigi_sdk::{AudioInput, LocalStream, LocalStreamConfig, VideoInput};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::app::App;
use crate::error::{AppError, AppErrorCode};
use crate::events::{AppEvent, UiEvent};

/// The largest thumbnail, in pixels.
pub const THUMBNAIL: (usize, usize) = (320, 180);

/// The default frames per second of a shared screen.
pub const SHARE_FPS: u32 = 10;

/// Something that can be shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareSource {
    /// What to pass to `start_share`: `screen`, or `window:ID`.
    pub id: String,
    /// `screen` or `window`.
    pub kind: String,
    /// A window's title (empty for the screen: the UI names it).
    pub title: String,
    /// Its size in pixels.
    pub width: u32,
    /// Its size in pixels.
    pub height: u32,
    /// A small picture of it: a `data:image/bmp;base64,…` URL (absent if
    /// it could not be read, e.g. a window being unmapped).
    pub thumbnail: Option<String>,
}

/// What `start_share` shares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareRequest {
    /// A [`ShareSource::id`].
    pub source: String,
    /// Frames per second, 1 to 30 (default 10).
    #[serde(default)]
    pub fps: Option<u32>,
}

/// The target a source id names.
fn target_of(id: &str) -> Result<ScreenTarget, AppError> {
    let bad = || AppError::invalid(format!("not a share source: {id:?}"));
    match id {
        "screen" => Ok(ScreenTarget::Screen),
        other => {
            let n = other.strip_prefix("window:").ok_or_else(bad)?;
            n.parse::<u32>()
                .ok()
                .filter(|n| *n != 0)
                .map(ScreenTarget::Window)
                .ok_or_else(bad)
        }
    }
}

fn share_failed(e: impl std::fmt::Display) -> AppError {
    AppError::new(AppErrorCode::ShareFailed, e.to_string())
}

/// A 24-bit BMP of `frame` (BT.601, limited range), as a data URL.
pub fn bmp_data_url(frame: &VideoFrame) -> String {
    use base64::Engine;
    let (w, h) = (frame.width, frame.height);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut bmp = Vec::with_capacity(size);
    bmp.extend_from_slice(b"BM");
    let _ = bmp.write_all(&(size as u32).to_le_bytes());
    let _ = bmp.write_all(&0u32.to_le_bytes());
    let _ = bmp.write_all(&54u32.to_le_bytes());
    let _ = bmp.write_all(&40u32.to_le_bytes());
    let _ = bmp.write_all(&(w as i32).to_le_bytes());
    // Negative: rows top to bottom.
    let _ = bmp.write_all(&(-(h as i32)).to_le_bytes());
    let _ = bmp.write_all(&1u16.to_le_bytes());
    let _ = bmp.write_all(&24u16.to_le_bytes());
    let _ = bmp.write_all(&[0u8; 24]);
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let clamp = |x: i32| x.clamp(0, 255) as u8;
    for j in 0..h {
        for i in 0..w {
            let c = 298 * (i32::from(y[j * w + i]) - 16);
            let k = (j / 2) * (w / 2) + i / 2;
            let d = i32::from(u[k]) - 128;
            let e = i32::from(v[k]) - 128;
            let r = clamp((c + 409 * e + 128) >> 8);
            let g = clamp((c - 100 * d - 208 * e + 128) >> 8);
            let b = clamp((c + 516 * d + 128) >> 8);
            bmp.extend_from_slice(&[b, g, r]);
        }
        bmp.resize(bmp.len() + (row - w * 3), 0);
    }
    format!(
        "data:image/bmp;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bmp)
    )
}

/// The screen and its windows on the X display of `$DISPLAY`, with
/// thumbnails (read on a blocking thread: X calls block).
fn sources() -> Result<Vec<ShareSource>, AppError> {
    if std::env::var_os("DISPLAY").is_none() {
        return Err(share_failed(
            "no X display to capture ($DISPLAY is not set; on Wayland, Kaigi \
             shares through XWayland only for now)",
        ));
    }
    let x = X11Screen::open(None, ScreenTarget::Screen).map_err(share_failed)?;
    let (w, h) = x.screen_size().map_err(share_failed)?;
    let thumb = |t| {
        x.thumbnail(t, THUMBNAIL.0, THUMBNAIL.1)
            .ok()
            .map(|f| bmp_data_url(&f))
    };
    let mut out = vec![ShareSource {
        id: "screen".into(),
        kind: "screen".into(),
        title: String::new(),
        width: w as u32,
        height: h as u32,
        thumbnail: thumb(ScreenTarget::Screen),
    }];
    for win in x.windows().map_err(share_failed)? {
        out.push(ShareSource {
            id: format!("window:{}", win.id),
            kind: "window".into(),
            title: win.title.clone(),
            width: u32::from(win.width),
            height: u32::from(win.height),
            thumbnail: thumb(ScreenTarget::Window(win.id)),
        });
    }
    Ok(out)
}

impl App {
    /// What can be shared: the whole screen first, then each window.
    pub async fn list_share_sources(&self) -> Result<Vec<ShareSource>, AppError> {
        tokio::task::spawn_blocking(sources)
            .await
            .map_err(share_failed)?
    }

    /// Shares a source as this user's `sub` stream. The others see it as
    /// a screen; the UI gets `share-started`, and `share-stopped` when it
    /// ends (stop, leave, forced exit, or the window closing).
    pub async fn start_share(&self, req: ShareRequest) -> Result<(), AppError> {
        let target = target_of(&req.source)?;
        let fps = req.fps.unwrap_or(SHARE_FPS);
        if !(1..=30).contains(&fps) {
            return Err(AppError::invalid("fps is 1 to 30"));
        }
        let mut state = self.state.lock().await;
        let client = state
            .client
            .clone()
            .ok_or_else(|| AppError::new(AppErrorCode::NotInRoom, "not in a room"))?;
        if state.share.as_ref().is_some_and(|s| !s.is_closed()) {
            return Err(AppError::new(
                AppErrorCode::AlreadySharing,
                "the screen is shared already",
            ));
        }
        let window = match target {
            ScreenTarget::Screen => None,
            ScreenTarget::Window(id) => Some(id),
        };
        let config = LocalStreamConfig {
            video: VideoInput::Screen {
                display: None,
                window,
            },
            audio: AudioInput::None,
            fps,
            simulcast: false,
            ..Default::default()
        };
        let stream = LocalStream::new(client.user_id(), config)
            .map_err(|e| share_failed(AppError::from(e).message))?;
        if let Err(e) = client.publish_screen(&stream).await {
            stream.close();
            return Err(e.into());
        }
        info!(source = %req.source, fps, "sharing");
        state.share = Some(stream.clone());
        drop(state);
        (self.emit)(UiEvent::App(AppEvent::ShareStarted {
            source: req.source.clone(),
        }));
        // The share ends with its stream: stopped, or the window gone.
        let state = self.state.clone();
        let emit = self.emit.clone();
        tokio::spawn(async move {
            stream.closed().await;
            let mut s = state.lock().await;
            if !s.share.as_ref().is_some_and(|cur| cur.same_as(&stream)) {
                return;
            }
            s.share = None;
            if let Some(client) = s.client.clone() {
                drop(s);
                if let Err(e) = client.unpublish_screen().await {
                    warn!(error = %e, "ending the share");
                }
            }
            emit(UiEvent::App(AppEvent::ShareStopped {}));
        });
        Ok(())
    }

    /// Stops sharing (the others get `stream-removed` for the screen).
    pub async fn stop_share(&self) -> Result<(), AppError> {
        let mut state = self.state.lock().await;
        let Some(stream) = state.share.take() else {
            return Ok(());
        };
        let client = state.client.clone();
        drop(state);
        let result = match client {
            Some(c) => c.unpublish_screen().await.map_err(AppError::from),
            None => Ok(()),
        };
        stream.close();
        (self.emit)(UiEvent::App(AppEvent::ShareStopped {}));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_named_as_the_ui_passes_them() {
        assert_eq!(target_of("screen").unwrap(), ScreenTarget::Screen);
        assert_eq!(
            target_of("window:4194305").unwrap(),
            ScreenTarget::Window(4_194_305)
        );
        for bad in ["", "window:", "window:0", "window:x", "screen:1", "win:5"] {
            assert_eq!(
                target_of(bad).unwrap_err().code,
                AppErrorCode::InvalidParameter,
                "{bad}"
            );
        }
    }

    #[test]
    fn thumbnails_are_bitmaps_of_the_picture() {
        use base64::Engine;
        // A 4×2 frame: white left half, black right half.
        let mut f = VideoFrame::black(4, 2).unwrap();
        let (y, u, v) = f.planes_mut();
        y.copy_from_slice(&[235, 235, 16, 16, 235, 235, 16, 16]);
        u.fill(128);
        v.fill(128);
        let url = bmp_data_url(&f);
        let b64 = url.strip_prefix("data:image/bmp;base64,").unwrap();
        let bmp = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&bmp[..2], b"BM");
        assert_eq!(bmp.len(), 54 + 12 * 2);
        assert_eq!(&bmp[54..60], &[255; 6]);
        assert_eq!(&bmp[60..66], &[0; 6]);
    }
}
