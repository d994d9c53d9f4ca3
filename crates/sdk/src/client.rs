//! The [`Client`]: one user's presence in one room at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use kaigi_proto::endpoint::signaling_url;
use kaigi_proto::signal::{PeerInfo, StreamType};
use kaigi_proto::{Role, RoomId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info_span, Instrument};

use crate::error::ClientError;
use crate::events::{ClientEvent, ConnectionState, EventStream};
use crate::machine::{Request, Status};
use crate::options::ClientOptions;
use crate::session;
use crate::shared::{Order, Shared};

/// What `join` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// The room.
    pub room: RoomId,
    /// The role granted.
    pub role: Role,
    /// This session's id on the server.
    pub session_id: String,
    /// The users already in the room.
    pub users: Vec<PeerInfo>,
}

/// What of a remote stream to receive (see [`Client::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Receive its audio.
    pub audio: bool,
    /// Receive its video.
    pub video: bool,
}

impl Default for SubscribeOptions {
    /// Audio and video.
    fn default() -> Self {
        SubscribeOptions {
            audio: true,
            video: true,
        }
    }
}

struct SessionCtl {
    commands: mpsc::UnboundedSender<Order>,
    task: JoinHandle<()>,
}

/// A participant: joins one room at a time, reports events, reconnects.
///
/// Dropping a `Client` leaves its room.
pub struct Client {
    shared: Arc<Shared>,
    session: tokio::sync::Mutex<Option<SessionCtl>>,
    volume_task: Mutex<Option<JoinHandle<()>>>,
    /// Forwards the published stream's device failures: one task for the
    /// stream published now, however often it was published.
    device_task: Mutex<Option<(crate::media::LocalStream, JoinHandle<()>)>>,
    /// The open speaker, while remote audio is played.
    speaker: crate::follow::SpeakerSlot,
    /// Reports devices plugged in and out, once the client has joined.
    device_watch: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// A client for these options. Fails only on a malformed server URL.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let url = signaling_url(&opts.server_url)
            .map_err(|e| ClientError::InvalidOptions(e.to_string()))?;
        Ok(Client {
            shared: Arc::new(Shared {
                tls: crate::shared::tls_config(opts.ca_file.as_deref())?,
                opts,
                url,
                status: Mutex::new(Status {
                    state: ConnectionState::Disconnected,
                    room: None,
                    peers: BTreeMap::new(),
                }),
                listeners: Mutex::new(Vec::new()),
                remotes: Arc::new(Mutex::new(std::collections::HashMap::new())),
                local: Mutex::new(None),
                audio_out: Arc::new(Mutex::new(None)),
            }),
            volume_task: Mutex::new(None),
            device_task: Mutex::new(None),
            speaker: crate::follow::SpeakerSlot::new(),
            device_watch: Mutex::new(None),
            session: tokio::sync::Mutex::new(None),
        })
    }

    /// A new stream of this client's events from now on. Several may be
    /// open; each gets every event.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.listeners.lock().push(tx);
        EventStream { rx }
    }

    /// The user this client is.
    pub fn user_id(&self) -> &UserId {
        &self.shared.opts.user_id
    }

    /// The connection state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.shared.status().state
    }

    /// The room this client is in (or rejoining), if any.
    pub fn room(&self) -> Option<RoomId> {
        self.shared.status().room.as_ref().map(|(r, _)| r.clone())
    }

    /// The other users in the room, as last known.
    pub fn remote_users(&self) -> Vec<PeerInfo> {
        self.shared
            .status()
            .peers
            .iter()
            .map(|(u, r)| PeerInfo {
                user_id: u.clone(),
                role: *r,
            })
            .collect()
    }

    /// How many other users are in the room, as last known.
    pub fn remote_user_count(&self) -> usize {
        self.shared.status().peers.len()
    }

    /// Enters `room` as `role`. Resolves once in the room; fails with a
    /// typed error (auth, bad room id, timeout, unreachable server).
    pub async fn join(&self, room: RoomId, role: Role) -> Result<JoinInfo, ClientError> {
        let mut slot = self.session.lock().await;
        if self.connection_state() != ConnectionState::Disconnected {
            return Err(ClientError::AlreadyInRoom);
        }
        if let Some(old) = slot.take() {
            // A session that ended by itself (forced out, gave up).
            let _ = old.task.await;
        }
        self.shared.set_state(ConnectionState::Connecting);
        let (ws, joined) = match session::connect_and_join(&self.shared, &room, role, None).await {
            Ok(ok) => ok,
            Err(e) => {
                self.shared.set_state(ConnectionState::Disconnected);
                return Err(e);
            }
        };
        {
            let mut s = self.shared.status();
            s.room = Some((room.clone(), role));
            s.peers = joined
                .users
                .iter()
                .map(|p| (p.user_id.clone(), p.role))
                .collect();
        }
        self.shared.set_state(ConnectionState::Connected);
        let info = JoinInfo {
            room: room.clone(),
            role,
            session_id: joined.session_id.clone(),
            users: joined.users.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let span = info_span!("client", user = %self.shared.opts.user_id, %room);
        let task =
            tokio::spawn(session::run(self.shared.clone(), ws, joined, room, rx).instrument(span));
        *slot = Some(SessionCtl { commands: tx, task });
        Ok(info)
    }

    /// Publishes `stream` to the room: resolves once the server receives it.
    /// An `audience` gets `AUDIENCE_CANNOT_PUBLISH`.
    pub async fn publish(&self, stream: &crate::media::LocalStream) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Order::Publish(stream.clone(), StreamType::Main, tx))?;
        let result = rx.await.unwrap_or(Err(ClientError::ConnectionLost));
        if result.is_ok() {
            self.forward_device_errors(stream);
        }
        result
    }

    /// Publishes `stream` as this user's `sub` stream, a shared screen (a
    /// [`crate::media::LocalStream`] made with
    /// [`crate::media::VideoInput::Screen`]), beside the `main` one, as
    /// TRTC's auxiliary stream: the others get `stream-added` with
    /// `streamType` `sub`. Resolves once the server receives it. While
    /// both are sent, the screen gets the larger share of the send
    /// estimate.
    pub async fn publish_screen(
        &self,
        stream: &crate::media::LocalStream,
    ) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Order::Publish(stream.clone(), StreamType::Sub, tx))?;
        rx.await.unwrap_or(Err(ClientError::ConnectionLost))
    }

    /// Stops publishing the `sub` stream and closes it (its capture ends;
    /// share again with a new stream); the others get `stream-removed`
    /// for it, and the `main` stream goes on.
    pub async fn unpublish_screen(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Order::Unpublish(StreamType::Sub, tx))?;
        rx.await.unwrap_or(Err(ClientError::ConnectionLost))
    }

    /// Follows the published stream's devices until it closes or stops
    /// being the published one: failures reported as `error` events
    /// (`DEVICE_LOST`), the source moved to the default device
    /// (`device-changed`, `active`), or with none, to the next one plugged
    /// in. Publishing the same stream again keeps the one follower.
    fn forward_device_errors(&self, stream: &crate::media::LocalStream) {
        let mut slot = self.device_task.lock();
        if let Some((s, task)) = slot.as_ref() {
            if s.same_as(stream) && !task.is_finished() {
                return;
            }
        }
        if let Some((_, task)) = slot.take() {
            task.abort();
        }
        if stream.camera_id().is_some() || stream.microphone_id().is_some() {
            self.watch_devices();
        }
        let task = crate::follow::follow_stream(Arc::downgrade(&self.shared), stream.clone());
        *slot = Some((stream.clone(), task));
    }

    /// Starts reporting devices plugged in and out (`device-changed`), once
    /// this client uses a device: a client of synthetic media only never
    /// lists the machine's devices.
    fn watch_devices(&self) {
        let mut watch = self.device_watch.lock();
        if watch.is_none() {
            *watch = Some(crate::follow::watch_devices(Arc::downgrade(&self.shared)));
        }
    }

    /// Ends the device-failure forwarder (nothing is published any more).
    fn stop_device_errors(&self) {
        if let Some((_, task)) = self.device_task.lock().take() {
            task.abort();
        }
    }

    /// Stops publishing.
    pub async fn unpublish(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Order::Unpublish(StreamType::Main, tx))?;
        let result = rx.await.unwrap_or(Err(ClientError::ConnectionLost));
        self.stop_device_errors();
        result
    }

    /// Mutes or unmutes the published audio: nothing is sent while muted,
    /// and the others get `mute-audio` / `unmute-audio` and `stream-updated`.
    pub async fn mute_audio(&self, muted: bool) -> Result<(), ClientError> {
        self.mute(Some(muted), None).await
    }

    /// Mutes or unmutes the published video (see [`Client::mute_audio`]).
    pub async fn mute_video(&self, muted: bool) -> Result<(), ClientError> {
        self.mute(None, Some(muted)).await
    }

    async fn mute(&self, audio: Option<bool>, video: Option<bool>) -> Result<(), ClientError> {
        self.request(Request::Mute { audio, video }).await
    }

    /// Receives `user`'s stream, or only its audio or video; subscribing
    /// again changes what is received. Needed with `auto_subscribe: false`,
    /// and after [`Client::unsubscribe`]. `stream-subscribed` follows when
    /// its first track arrives. A user who publishes nothing gets
    /// `STREAM_NOT_FOUND`.
    pub async fn subscribe(
        &self,
        user: &UserId,
        opts: SubscribeOptions,
    ) -> Result<(), ClientError> {
        self.subscribe_stream(user, StreamType::Main, opts).await
    }

    /// Receives `user`'s stream of `stream_type` (see [`Client::subscribe`]).
    pub async fn subscribe_stream(
        &self,
        user: &UserId,
        stream_type: StreamType,
        opts: SubscribeOptions,
    ) -> Result<(), ClientError> {
        self.request(Request::Subscribe {
            user: user.clone(),
            stream_type,
            audio: opts.audio,
            video: opts.video,
        })
        .await
    }

    /// Stops receiving `user`'s stream (its [`crate::media::RemoteStream`] ends).
    pub async fn unsubscribe(&self, user: &UserId) -> Result<(), ClientError> {
        self.unsubscribe_stream(user, StreamType::Main).await
    }

    /// Stops receiving `user`'s stream of `stream_type`.
    pub async fn unsubscribe_stream(
        &self,
        user: &UserId,
        stream_type: StreamType,
    ) -> Result<(), ClientError> {
        self.request(Request::Unsubscribe {
            user: user.clone(),
            stream_type,
        })
        .await
    }

    /// Tells the server the largest size this client shows `user`'s video
    /// at (its tile), so no larger simulcast layer than that is sent
    /// (`0` by `0` lifts the limit). Kept across reconnects.
    pub async fn set_remote_video_size(
        &self,
        user: &UserId,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        self.set_stream_video_size(user, StreamType::Main, width, height)
            .await
    }

    /// [`Client::set_remote_video_size`] for `user`'s stream of
    /// `stream_type`.
    pub async fn set_stream_video_size(
        &self,
        user: &UserId,
        stream_type: StreamType,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        self.request(Request::SetVideoSize {
            user: user.clone(),
            stream_type,
            size: kaigi_proto::signal::VideoSize::new(width, height),
        })
        .await
    }

    /// Sends a chat message to everyone else in the room (they get a
    /// `chat` event); resolves once the server took it. Up to 2,000
    /// characters; 5 a second (10 at once), more are refused
    /// (`RATE_LIMITED`). Messages live only for the call: the server keeps
    /// none, and who joins later does not see earlier ones.
    pub async fn send_chat(&self, text: &str) -> Result<(), ClientError> {
        kaigi_proto::signal::check_chat_text(text).map_err(ClientError::InvalidParameter)?;
        self.request(Request::Chat {
            text: text.to_owned(),
        })
        .await
    }

    /// Switches between `anchor` and `audience`. Becoming an audience stops
    /// publishing (the others get `stream-removed`); the others get
    /// `peer-role`.
    pub async fn switch_role(&self, role: Role) -> Result<(), ClientError> {
        self.request(Request::SwitchRole(role)).await
    }

    async fn request(&self, request: Request) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Order::Request(request, reply))?;
        rx.await.unwrap_or(Err(ClientError::ConnectionLost))
    }

    /// Emits `audio-volume` every `interval` with each user's volume (this
    /// client's own published audio included, after processing), and
    /// `speaking-while-muted` when its muted microphone hears a voice;
    /// `None` stops it.
    pub fn enable_audio_volume_evaluation(&self, interval: Option<Duration>) {
        /// `speaking-while-muted` comes at most this often.
        const SPEAKING_HINT_EVERY: Duration = Duration::from_secs(3);
        let mut task = self.volume_task.lock();
        if let Some(t) = task.take() {
            t.abort();
        }
        let Some(interval) = interval.filter(|i| !i.is_zero()) else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        *task = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut hinted: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                if shared.status().state != ConnectionState::Connected {
                    continue;
                }
                let mut result: Vec<crate::events::AudioVolumeEntry> = shared
                    .remotes
                    .lock()
                    .values()
                    .filter(|r| r.audio_packets() > 0)
                    .map(|r| crate::events::AudioVolumeEntry {
                        user_id: r.user_id().clone(),
                        audio_volume: r.audio_level(),
                    })
                    .collect();
                let mut speaking_muted = false;
                if let Some(local) = shared.local.lock().as_ref().filter(|l| l.has_audio()) {
                    result.push(crate::events::AudioVolumeEntry {
                        user_id: shared.opts.user_id.clone(),
                        audio_volume: local.audio_level(),
                    });
                    speaking_muted = local.audio_muted() && local.voice_active();
                }
                shared.emit(ClientEvent::AudioVolume { result });
                let now = tokio::time::Instant::now();
                if speaking_muted && hinted.is_none_or(|t| now - t >= SPEAKING_HINT_EVERY) {
                    hinted = Some(now);
                    shared.emit(ClientEvent::SpeakingWhileMuted {});
                }
            }
        }));
    }

    /// Plays every remote user's audio on speaker `id` (from
    /// [`crate::devices::speakers`]; `None`: the first one), replacing the
    /// speaker in use. A speaker that stops working later is reported as
    /// an `error` event (`DEVICE_LOST`) and replaced by the first other
    /// one that opens (`device-changed`, `active`), or, with none, by the
    /// next one plugged in.
    pub fn set_audio_output(&self, id: Option<&str>) -> Result<(), ClientError> {
        self.watch_devices();
        let mixer = kaigi_media::Mixer::new();
        self.speaker
            .open(id, mixer.clone(), Arc::downgrade(&self.shared))?;
        *self.shared.audio_out.lock() = Some(mixer);
        Ok(())
    }

    /// Stops playing remote audio and releases the speaker.
    pub fn stop_audio_output(&self) {
        *self.shared.audio_out.lock() = None;
        self.speaker.close();
    }

    /// The speaker in use, if remote audio is played.
    pub fn audio_output(&self) -> Option<String> {
        self.speaker.name()
    }

    /// The streams being received from the other users.
    pub fn remote_streams(&self) -> Vec<crate::media::RemoteStream> {
        self.shared.remotes.lock().values().cloned().collect()
    }

    fn command(&self, cmd: Order) -> Result<(), ClientError> {
        let slot = self
            .session
            .try_lock()
            .map_err(|_| ClientError::NotInRoom)?;
        match slot.as_ref() {
            Some(ctl) if self.connection_state() != ConnectionState::Disconnected => {
                ctl.commands.send(cmd).map_err(|_| ClientError::NotInRoom)
            }
            _ => Err(ClientError::NotInRoom),
        }
    }

    /// Leaves the room: resolves when the server has confirmed. All media
    /// stops: the peer connection closes, and the published
    /// [`crate::LocalStream`] is closed (its devices released), as after a
    /// forced exit. Not in a room (never joined, already left, forced out):
    /// does nothing.
    pub async fn leave(&self) -> Result<(), ClientError> {
        let mut slot = self.session.lock().await;
        let Some(ctl) = slot.take() else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        let result = if ctl.commands.send(Order::Leave(tx)).is_ok() {
            // If the task ended first (forced out), there is nothing to leave.
            rx.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        let _ = ctl.task.await;
        result
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(t) = self.volume_task.lock().take() {
            t.abort();
        }
        self.stop_device_errors();
        if let Some(t) = self.device_watch.lock().take() {
            t.abort();
        }
        // Dropping the command sender makes the session task leave and end.
        if let Some(ctl) = self.session.get_mut().take() {
            drop(ctl.commands);
        }
    }
}
