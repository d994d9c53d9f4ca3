//! The app's state: one `Client` at a time, the local stream (preview and
//! publication), the embedded server and the frame server. Its commands
//! are split by concern: local media in `media.rs`, the call (join, leave,
//! mute and the bridge from SDK events to [`crate::UiEvent`]s and tiles) in
//! `call.rs`, frames and the embedded server here.

use std::net::SocketAddr;
use std::sync::Arc;

use kaigi_sdk::{Client, LocalStream};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinHandle;

use crate::embedded::{EmbeddedServer, DEFAULT_LISTEN};
use crate::error::{AppError, AppErrorCode};
use crate::events::Emitter;
use crate::frames::{FrameServer, IpcViews};

/// Where the frame server is, for the UI's tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameEndpoint {
    /// `ws://127.0.0.1:PORT/frames`.
    pub url: String,
    /// The per-launch token.
    pub token: String,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) client: Option<Arc<Client>>,
    pub(crate) local: Option<LocalStream>,
    pub(crate) bridge: Option<JoinHandle<()>>,
}

/// The managed state behind the UI's commands.
pub struct App {
    pub(crate) emit: Emitter,
    pub(crate) frames: FrameServer,
    pub(crate) views: IpcViews,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) embedded: OnceCell<EmbeddedServer>,
    pub(crate) listen: SocketAddr,
    pub(crate) media_ip: Option<std::net::IpAddr>,
}

impl App {
    /// An app delivering its events through `emit`. The embedded server
    /// listens on `KAIGI_LISTEN` (default 127.0.0.1:7880), with media on
    /// `KAIGI_MEDIA_IP` if set, once first needed.
    pub async fn new(emit: Emitter) -> Result<Self, AppError> {
        let listen = std::env::var("KAIGI_LISTEN")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned())
            .parse()
            .map_err(|e| AppError::invalid(format!("KAIGI_LISTEN: {e}")))?;
        let media_ip = match std::env::var("KAIGI_MEDIA_IP") {
            Ok(ip) if !ip.is_empty() => Some(
                ip.parse()
                    .map_err(|e| AppError::invalid(format!("KAIGI_MEDIA_IP: {e}")))?,
            ),
            _ => None,
        };
        let frames = FrameServer::start()
            .await
            .map_err(|e| AppError::new(AppErrorCode::FrameServerFailed, e.to_string()))?;
        Ok(App {
            emit,
            frames,
            views: IpcViews::default(),
            state: Arc::new(Mutex::new(State::default())),
            embedded: OnceCell::new(),
            listen,
            media_ip,
        })
    }

    /// The frame server's address and token.
    pub fn frame_endpoint(&self) -> FrameEndpoint {
        FrameEndpoint {
            url: self.frames.url(),
            token: self.frames.token().to_owned(),
        }
    }

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

    /// The frame server (for measurements).
    pub fn frame_server(&self) -> &FrameServer {
        &self.frames
    }

    /// The embedded server, started on first use.
    pub async fn embedded(&self) -> Result<&EmbeddedServer, AppError> {
        self.embedded
            .get_or_try_init(|| EmbeddedServer::start(self.listen, self.media_ip))
            .await
            .map_err(|e| AppError::new(AppErrorCode::ServerStartFailed, e.to_string()))
    }

    /// Whether a client is in a room.
    pub async fn in_room(&self) -> bool {
        self.state.lock().await.client.is_some()
    }

    /// Whether a local stream is open (its devices held).
    pub async fn has_local_stream(&self) -> bool {
        self.state.lock().await.local.is_some()
    }
}
