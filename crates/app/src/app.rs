//! The app's state and commands: one `Client` at a time, the local stream
//! (preview and publication), the embedded server, and the bridge that
//! turns SDK events into [`UiEvent`]s and frame-server tiles.

use std::net::SocketAddr;
use std::sync::Arc;

use kaigi_proto::signal::PeerInfo;
use kaigi_proto::{usersig, Role, RoomId, SdkAppId, UserId};
use kaigi_sdk::{
    devices, AudioInput, Client, ClientEvent, ClientOptions, LocalStream, LocalStreamConfig,
    VideoInput,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::embedded::{EmbeddedServer, DEFAULT_LISTEN};
use crate::error::AppError;
use crate::events::{AppEvent, Emitter, UiEvent};
use crate::frames::{FrameServer, IpcViews};

/// The camera entry that is a moving test pattern (for machines without a
/// camera, demos and tests).
pub const TEST_PATTERN: &str = "test-pattern";
/// The microphone entry that is a tone.
pub const TONE: &str = "tone";

/// A device the UI can pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// What to pass back.
    pub id: String,
    /// What to show.
    pub label: String,
}

/// Everything the device pickers show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Devices {
    /// Cameras, then the test pattern.
    pub cameras: Vec<Device>,
    /// Microphones, then the tone.
    pub microphones: Vec<Device>,
    /// Speakers.
    pub speakers: Vec<Device>,
}

/// The join form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JoinForm {
    /// `ws://HOST:PORT`; empty: the embedded server.
    pub server: Option<String>,
    /// Required with `server`.
    pub sdk_app_id: Option<u32>,
    /// The name to join as.
    pub user_id: String,
    /// Required with `server`; made by the app for the embedded server.
    pub user_sig: Option<String>,
    /// A numeric room, or …
    pub room_id: Option<u64>,
    /// … a string room.
    pub str_room_id: Option<String>,
    /// `anchor` (default) or `audience`.
    pub role: Option<Role>,
    /// Camera id (`test-pattern` for the pattern); none: no video.
    pub camera: Option<String>,
    /// Microphone id (`tone` for a tone); none: no audio.
    pub microphone: Option<String>,
}

/// What `join_room` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// Who joined.
    pub user_id: UserId,
    /// The room, as the UI shows it.
    pub room: String,
    /// The role held.
    pub role: Role,
    /// The others already there.
    pub users: Vec<PeerInfo>,
    /// The server joined.
    pub server: String,
    /// Whether that is the embedded server.
    pub embedded: bool,
    /// For the embedded server: the command that joins a second participant.
    pub bot_command: Option<String>,
    /// Whether this client publishes (anchors with a camera or microphone).
    pub publishing: bool,
}

/// What `start_preview` opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Video (shown on the `local` tile).
    pub video: bool,
    /// Audio.
    pub audio: bool,
}

/// Where the frame server is, for the UI's tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameEndpoint {
    /// `ws://127.0.0.1:PORT/frames`.
    pub url: String,
    /// The per-launch token.
    pub token: String,
}

#[derive(Default)]
struct State {
    client: Option<Arc<Client>>,
    local: Option<LocalStream>,
    bridge: Option<JoinHandle<()>>,
}

/// The managed state behind the UI's commands.
pub struct App {
    emit: Emitter,
    frames: FrameServer,
    views: IpcViews,
    state: Arc<Mutex<State>>,
    embedded: OnceCell<EmbeddedServer>,
    listen: SocketAddr,
    media_ip: Option<std::net::IpAddr>,
}

fn local_config(camera: Option<&str>, microphone: Option<&str>) -> LocalStreamConfig {
    LocalStreamConfig {
        video: match camera {
            None => VideoInput::None,
            Some(TEST_PATTERN) => VideoInput::TestPattern {
                width: 640,
                height: 360,
            },
            Some(id) => VideoInput::Camera {
                id: Some(id.to_owned()),
                width: 640,
                height: 360,
            },
        },
        audio: match microphone {
            None => AudioInput::None,
            Some(TONE) => AudioInput::Tone { hz: 440.0 },
            Some(id) => AudioInput::Microphone {
                id: Some(id.to_owned()),
            },
        },
        fps: 30,
        video_bitrate_bps: 800_000,
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
            .map_err(|e| AppError::new("FRAME_SERVER_FAILED", e.to_string()))?;
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
            .map_err(|e| AppError::new("SERVER_START_FAILED", e.to_string()))
    }

    /// Cameras, microphones and speakers, with the synthetic sources last.
    pub fn list_devices(&self) -> Devices {
        let conv = |d: Vec<kaigi_sdk::DeviceInfo>| {
            d.into_iter()
                .map(|d| Device {
                    id: d.id,
                    label: d.label,
                })
                .collect::<Vec<_>>()
        };
        let mut cameras = conv(devices::cameras());
        cameras.push(Device {
            id: TEST_PATTERN.into(),
            label: "Test pattern".into(),
        });
        let mut microphones = conv(devices::microphones());
        microphones.push(Device {
            id: TONE.into(),
            label: "Tone (440 Hz)".into(),
        });
        Devices {
            cameras,
            microphones,
            speakers: conv(devices::speakers()),
        }
    }

    /// Opens the camera and microphone (replacing an earlier preview) and
    /// shows the video on the `local` tile. `user` names the stream others
    /// will see if it is published.
    pub async fn start_preview(
        &self,
        user: &str,
        camera: Option<&str>,
        microphone: Option<&str>,
    ) -> Result<Preview, AppError> {
        let user = UserId::new(user).map_err(|e| AppError::invalid(e.to_string()))?;
        let mut state = self.state.lock().await;
        if let Some(old) = state.local.take() {
            old.close();
        }
        self.frames.remove_source("local");
        if camera.is_none() && microphone.is_none() {
            return Ok(Preview {
                video: false,
                audio: false,
            });
        }
        let stream = LocalStream::new(&user, local_config(camera, microphone))?;
        if stream.has_video() {
            self.frames.set_source("local", stream.video());
        }
        let preview = Preview {
            video: stream.has_video(),
            audio: stream.has_audio(),
        };
        state.local = Some(stream);
        Ok(preview)
    }

    /// Closes the preview: devices released.
    pub async fn stop_preview(&self) {
        let mut state = self.state.lock().await;
        close_local(&mut state, &self.frames, &self.emit);
    }

    /// Joins a room (the embedded server when no server is given) and, as
    /// an anchor with a camera or microphone, publishes.
    pub async fn join_room(&self, form: JoinForm) -> Result<Joined, AppError> {
        let user =
            UserId::new(form.user_id.trim()).map_err(|e| AppError::invalid(e.to_string()))?;
        let room = match (form.room_id, form.str_room_id.as_deref().map(str::trim)) {
            (Some(n), None) => RoomId::num(n),
            (None, Some(s)) if !s.is_empty() => RoomId::str(s.to_owned()),
            _ => return Err(AppError::invalid("give a room number or a room name")),
        }
        .map_err(|e| AppError::invalid(e.to_string()))?;
        let role = form.role.unwrap_or_default();
        let server = form
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let (url, app_id, sig, embedded) = match server {
            Some(url) => {
                let app = form
                    .sdk_app_id
                    .ok_or_else(|| AppError::invalid("SdkAppId is required with a server"))?;
                let sig = form
                    .user_sig
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| AppError::invalid("UserSig is required with a server"))?;
                (url.to_owned(), SdkAppId(app), sig, false)
            }
            None => {
                let e = self.embedded().await?;
                let sig = usersig::generate(
                    e.sdk_app_id(),
                    e.secret_key(),
                    user.as_str(),
                    86_400,
                    unix_now(),
                );
                (e.url().to_owned(), e.sdk_app_id(), sig, true)
            }
        };
        let mut state = self.state.lock().await;
        if state.client.is_some() {
            return Err(AppError::new("ALREADY_IN_ROOM", "leave the room first"));
        }
        let client = Arc::new(Client::new(ClientOptions::new(
            url.clone(),
            app_id,
            user.clone(),
            sig,
        ))?);
        client.enable_audio_volume_evaluation(Some(std::time::Duration::from_millis(300)));
        let events = client.events();
        let joined = client.join(room.clone(), role).await?;
        state.bridge = Some(tokio::spawn(bridge(
            events,
            self.emit.clone(),
            client.clone(),
            self.state.clone(),
            self.frames_handle(),
        )));
        state.client = Some(client.clone());
        // Anchors publish what the preview shows (made again if it was
        // opened under another name).
        let mut publishing = false;
        if role == Role::Anchor && (form.camera.is_some() || form.microphone.is_some()) {
            drop(state);
            self.start_preview(
                user.as_str(),
                form.camera.as_deref(),
                form.microphone.as_deref(),
            )
            .await?;
            state = self.state.lock().await;
            if let Some(local) = state.local.clone() {
                client.publish(&local).await?;
                publishing = true;
            }
        }
        info!(%user, %room, %url, "joined");
        let bot_command = if embedded {
            self.embedded.get().map(|e| e.bot_command(&room))
        } else {
            None
        };
        Ok(Joined {
            user_id: user,
            room: room.to_string(),
            role: joined.role,
            users: joined.users,
            server: url,
            embedded,
            bot_command,
            publishing,
        })
    }

    fn frames_handle(&self) -> FramesHandle {
        FramesHandle(self.frames.shared_sources())
    }

    /// Leaves the room: when it completes the local stream is closed and
    /// `client-left` is emitted.
    pub async fn leave_room(&self) -> Result<(), AppError> {
        let mut state = self.state.lock().await;
        let Some(client) = state.client.take() else {
            return Err(AppError::new("NOT_IN_ROOM", "not in a room"));
        };
        let result = client.leave().await;
        if let Some(b) = state.bridge.take() {
            b.abort();
        }
        client.stop_audio_output();
        close_local(&mut state, &self.frames, &self.emit);
        self.frames.clear();
        (self.emit)(UiEvent::App(AppEvent::ClientLeft {}));
        result.map_err(AppError::from)
    }

    /// Mutes or unmutes the microphone and camera (absent: unchanged).
    pub async fn set_mute(&self, audio: Option<bool>, video: Option<bool>) -> Result<(), AppError> {
        let state = self.state.lock().await;
        let publishing = state.client.as_ref().filter(|_| state.local.is_some());
        match publishing {
            Some(client) => {
                if let Some(a) = audio {
                    client.mute_audio(a).await?;
                }
                if let Some(v) = video {
                    client.mute_video(v).await?;
                }
            }
            None => {
                let local = state.local.as_ref().ok_or_else(|| {
                    AppError::new("NO_LOCAL_STREAM", "no camera or microphone is open")
                })?;
                if let Some(a) = audio {
                    local.set_audio_muted(a);
                }
                if let Some(v) = video {
                    local.set_video_muted(v);
                }
            }
        }
        Ok(())
    }

    /// Switches the camera live (between cameras), or reopens the stream
    /// with the new source (to or from the test pattern) and republishes.
    pub async fn set_camera(&self, id: &str) -> Result<(), AppError> {
        self.switch(Some(id), None).await
    }

    /// Switches the microphone; see [`App::set_camera`].
    pub async fn set_microphone(&self, id: &str) -> Result<(), AppError> {
        self.switch(None, Some(id)).await
    }

    async fn switch(&self, camera: Option<&str>, microphone: Option<&str>) -> Result<(), AppError> {
        let (local, client) = {
            let state = self.state.lock().await;
            let local = state.local.clone().ok_or_else(|| {
                AppError::new("NO_LOCAL_STREAM", "no camera or microphone is open")
            })?;
            (local, state.client.clone())
        };
        let live = match (
            camera,
            microphone,
            &local.config().video,
            &local.config().audio,
        ) {
            (Some(c), None, VideoInput::Camera { .. }, _) if c != TEST_PATTERN => {
                Some(local.switch_camera(Some(c)))
            }
            (None, Some(m), _, AudioInput::Microphone { .. }) if m != TONE => {
                Some(local.switch_microphone(Some(m)))
            }
            _ => None,
        };
        if let Some(result) = live {
            return result.map_err(AppError::from);
        }
        // Another kind of source: a new stream, published in place of the old.
        let keep_camera = camera_of(&local);
        let keep_mic = microphone_of(&local);
        let user = local_user(&client, &local);
        let cam = camera.map(str::to_owned).or(keep_camera);
        let mic = microphone.map(str::to_owned).or(keep_mic);
        if let Some(c) = &client {
            c.unpublish().await?;
        }
        self.start_preview(&user, cam.as_deref(), mic.as_deref())
            .await?;
        if let Some(c) = &client {
            let state = self.state.lock().await;
            if let Some(l) = &state.local {
                c.publish(l).await?;
            }
        }
        Ok(())
    }

    /// Plays the others on speaker `id`.
    pub async fn set_speaker(&self, id: &str) -> Result<(), AppError> {
        let state = self.state.lock().await;
        let client = state
            .client
            .as_ref()
            .ok_or_else(|| AppError::new("NOT_IN_ROOM", "join a room first"))?;
        client.set_audio_output(Some(id)).map_err(AppError::from)
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

fn camera_of(local: &LocalStream) -> Option<String> {
    match &local.config().video {
        VideoInput::None => None,
        VideoInput::TestPattern { .. } => Some(TEST_PATTERN.into()),
        VideoInput::Camera { .. } => local.camera_id(),
    }
}

fn microphone_of(local: &LocalStream) -> Option<String> {
    match &local.config().audio {
        AudioInput::None => None,
        AudioInput::Tone { .. } => Some(TONE.into()),
        AudioInput::Microphone { .. } => local.microphone_id(),
    }
}

fn local_user(client: &Option<Arc<Client>>, _local: &LocalStream) -> String {
    client
        .as_ref()
        .map(|c| c.user_id().to_string())
        .unwrap_or_else(|| "me".into())
}

fn close_local(state: &mut State, frames: &FrameServer, emit: &Emitter) {
    if let Some(local) = state.local.take() {
        local.close();
        frames.remove_source("local");
        emit(UiEvent::App(AppEvent::LocalStreamClosed {}));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The frame server's tile table, for the bridge task.
#[derive(Clone)]
struct FramesHandle(crate::frames::SourceTable);

/// Forwards the client's events to the UI; keeps the tiles in step with
/// the remote streams; after a forced exit closes the local stream and
/// forgets the client.
async fn bridge(
    mut events: kaigi_sdk::EventStream,
    emit: Emitter,
    client: Arc<Client>,
    state: Arc<Mutex<State>>,
    frames: FramesHandle,
) {
    while let Some(event) = events.recv().await {
        match &event {
            ClientEvent::StreamSubscribed { user_id } => {
                if let Some(remote) = client
                    .remote_streams()
                    .into_iter()
                    .find(|r| r.user_id() == user_id)
                {
                    frames.0.set(user_id.as_str(), remote.video());
                }
            }
            ClientEvent::StreamRemoved { user_id } => frames.0.remove(user_id.as_str()),
            ClientEvent::ClientBanned { reason, .. } => {
                warn!(%reason, "forced out");
                let mut s = state.lock().await;
                if s.client.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    s.client = None;
                    s.bridge = None;
                }
                client.stop_audio_output();
                if let Some(local) = s.local.take() {
                    local.close();
                }
                frames.0.clear();
                drop(s);
                emit(UiEvent::Client(event));
                emit(UiEvent::App(AppEvent::LocalStreamClosed {}));
                continue;
            }
            _ => {}
        }
        emit(UiEvent::Client(event));
    }
}
