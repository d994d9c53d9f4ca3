//! Frames over the Tauri IPC instead of the frame server's WebSocket: a
//! command whose raw-bytes response is the next frame (pulled), or a Tauri
//! channel the app pushes frames through. Both lost to the WebSocket in the
//! tile benchmark (BENCHMARKS.md, "Video into the window"); they are built
//! only with the `ipc-transports` feature, so the benchmark can still
//! compare them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::error::AppError;
use crate::frames::TileView;

/// The most views open over the IPC at once (a tile is one view; a UI that
/// leaks views gets an error, not unbounded memory).
pub const MAX_IPC_VIEWS: usize = 64;

struct IpcView {
    view: Arc<tokio::sync::Mutex<TileView>>,
    stop: CancellationToken,
}

/// Views over the Tauri IPC, by id: pulled a frame at a time
/// ([`IpcViews::next`], a command whose raw-bytes response is the frame) or
/// pushed to a sink ([`IpcViews::push`], a Tauri channel). Both end with an
/// empty message when the tile ends.
#[derive(Default)]
pub struct IpcViews {
    next_id: AtomicU64,
    views: Arc<parking_lot::Mutex<HashMap<u64, IpcView>>>,
}

/// A view id the IPC does not know (closed, ended, or never opened).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewError {
    /// No such view.
    #[error("no view {0}")]
    Unknown(u64),
    /// [`MAX_IPC_VIEWS`] are open.
    #[error("{MAX_IPC_VIEWS} views are open already")]
    TooMany,
}

impl IpcViews {
    fn insert(&self, view: TileView) -> Result<(u64, IpcView), ViewError> {
        let mut views = self.views.lock();
        if views.len() >= MAX_IPC_VIEWS {
            return Err(ViewError::TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let v = IpcView {
            view: Arc::new(tokio::sync::Mutex::new(view)),
            stop: CancellationToken::new(),
        };
        let handle = IpcView {
            view: v.view.clone(),
            stop: v.stop.clone(),
        };
        views.insert(id, v);
        Ok((id, handle))
    }

    fn remove(views: &parking_lot::Mutex<HashMap<u64, IpcView>>, id: u64) {
        let removed = views.lock().remove(&id);
        if let Some(v) = removed {
            v.stop.cancel();
        }
    }

    /// Opens a view to pull frames from.
    pub fn open(&self, view: TileView) -> Result<u64, ViewError> {
        self.insert(view).map(|(id, _)| id)
    }

    /// The view's next frame (the newest); empty once the tile has ended or
    /// the view was closed, after which the id is forgotten.
    pub async fn next(&self, id: u64) -> Result<Vec<u8>, ViewError> {
        let (view, stop) = {
            let views = self.views.lock();
            let v = views.get(&id).ok_or(ViewError::Unknown(id))?;
            (v.view.clone(), v.stop.clone())
        };
        let mut view = view.lock().await;
        let msg = tokio::select! {
            _ = stop.cancelled() => None,
            m = view.next() => m,
        };
        match msg {
            Some(m) => Ok(m),
            None => {
                Self::remove(&self.views, id);
                Ok(Vec::new())
            }
        }
    }

    /// Sends the view's frames to `sink` as they come (newest first when
    /// the sink is slow to return), then an empty message when the tile
    /// ends. Stops when `sink` returns false or the view is closed.
    pub fn push(
        &self,
        view: TileView,
        sink: impl Fn(Vec<u8>) -> bool + Send + 'static,
    ) -> Result<u64, ViewError> {
        let (id, v) = self.insert(view)?;
        let views = self.views.clone();
        tokio::spawn(async move {
            let mut view = v.view.lock().await;
            loop {
                let msg = tokio::select! {
                    _ = v.stop.cancelled() => break,
                    m = view.next() => m,
                };
                let ended = msg.is_none();
                if !sink(msg.unwrap_or_default()) || ended {
                    break;
                }
            }
            Self::remove(&views, id);
        });
        Ok(id)
    }

    /// Closes a view: a pending `next` returns empty, a push stops.
    pub fn close(&self, id: u64) {
        Self::remove(&self.views, id);
    }

    /// Closes every view.
    pub fn close_all(&self) {
        let all: Vec<u64> = self.views.lock().keys().copied().collect();
        for id in all {
            self.close(id);
        }
    }

    /// How many views are open.
    pub fn len(&self) -> usize {
        self.views.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl App {
    /// Opens a view of `tile` (`local` or a user id) to pull frames from
    /// over the IPC with [`App::next_frame`], scaled down to fit `fit`
    /// (the tile's width and height in device pixels; zero: as they are).
    pub fn open_view(&self, tile: &str, fit: (u32, u32)) -> Result<u64, AppError> {
        Ok(self.views.open(self.frames.open_view(tile, fit))?)
    }

    /// The view's next frame, in the frame server's message format (I420 +
    /// trailer); empty once the tile has ended or the view was closed.
    pub async fn next_frame(&self, view: u64) -> Result<Vec<u8>, AppError> {
        Ok(self.views.next(view).await?)
    }

    /// Pushes `tile`'s frames to `sink` (a Tauri channel) as they come; an
    /// empty message when the tile ends. Returns the view id to close.
    pub fn push_view(
        &self,
        tile: &str,
        fit: (u32, u32),
        sink: impl Fn(Vec<u8>) -> bool + Send + 'static,
    ) -> Result<u64, AppError> {
        Ok(self.views.push(self.frames.open_view(tile, fit), sink)?)
    }

    /// Closes an IPC view.
    pub fn close_view(&self, view: u64) {
        self.views.close(view);
    }

    /// How many IPC views are open.
    pub fn open_views(&self) -> usize {
        self.views.len()
    }
}
