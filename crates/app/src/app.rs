//! The app's state: one `Client` at a time, the local stream (preview and
//! publication), the embedded server and the frame server. Its commands
//! are split by concern: local media in `media.rs`, the call (join, leave,
//! mute and the bridge from SDK events to [`crate::UiEvent`]s and tiles) in
//! `call.rs`, frames and the embedded server here.

use std::net::SocketAddr;
use std::sync::Arc;

use kaigi_sdk::{Client, ClientEvent, LocalStream};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinHandle;

use crate::embedded::{EmbeddedServer, DEFAULT_LISTEN};
use crate::error::{AppError, AppErrorCode};
use crate::events::{Emitter, UiEvent};
use crate::frames::FrameServer;

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
    /// The shared screen, while sharing.
    pub(crate) share: Option<LocalStream>,
    pub(crate) bridge: Option<JoinHandle<()>>,
    /// The microphone's processing, for this and every later stream.
    pub(crate) audio_processing: kaigi_sdk::AudioProcessing,
    /// The room joined on the embedded server: this app hosts it.
    pub(crate) hosted: Option<(kaigi_proto::RoomId, crate::host::Host)>,
    /// The invite to the room: the one joined through, or the one this
    /// host made last.
    pub(crate) invite: Option<crate::call::InviteInfo>,
}

/// The managed state behind the UI's commands.
pub struct App {
    pub(crate) emit: Emitter,
    pub(crate) frames: FrameServer,
    #[cfg(feature = "ipc-transports")]
    pub(crate) views: crate::ipc_views::IpcViews,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) embedded: OnceCell<EmbeddedServer>,
    pub(crate) listen: SocketAddr,
    pub(crate) media_ip: Option<std::net::IpAddr>,
    /// Tells the UI of devices plugged in and out (`device-changed`).
    device_watch: JoinHandle<()>,
    /// An invite link the app was opened with, until the UI takes it.
    opened_invite: parking_lot::Mutex<Option<String>>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.device_watch.abort();
    }
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
        let mut changes = kaigi_sdk::devices::changes();
        let tell = emit.clone();
        let device_watch = tokio::spawn(async move {
            while let Some(c) = changes.recv().await {
                tell(UiEvent::Client(ClientEvent::device_changed(
                    c.action, &c.device,
                )));
            }
        });
        Ok(App {
            opened_invite: Default::default(),
            device_watch,
            emit,
            frames,
            #[cfg(feature = "ipc-transports")]
            views: Default::default(),
            state: Arc::new(Mutex::new(State::default())),
            embedded: OnceCell::new(),
            listen,
            media_ip,
        })
    }

    /// Takes a `kaigi://` link given to the app (its command line, or a
    /// second launch's): kept for [`Self::take_opened_invite`] and told to
    /// the UI (`invite-opened`). Other arguments are ignored.
    pub fn open_link(&self, arg: &str) -> bool {
        let arg = arg.trim();
        let is_link = arg
            .get(..kaigi_proto::invite::LINK_SCHEME.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(kaigi_proto::invite::LINK_SCHEME));
        if !is_link || arg.len() > 2048 {
            return false;
        }
        *self.opened_invite.lock() = Some(arg.to_owned());
        (self.emit)(UiEvent::App(crate::events::AppEvent::InviteOpened {
            link: arg.to_owned(),
        }));
        true
    }

    /// The link the app was opened with, once.
    pub fn take_opened_invite(&self) -> Option<String> {
        self.opened_invite.lock().take()
    }

    /// The frame server's address and token.
    pub fn frame_endpoint(&self) -> FrameEndpoint {
        FrameEndpoint {
            url: self.frames.url(),
            token: self.frames.token().to_owned(),
        }
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
