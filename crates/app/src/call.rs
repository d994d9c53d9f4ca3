//! The call: joining (the embedded server or another), leaving, muting,
//! and the bridge from the client's events to the UI and the tiles.

use std::sync::Arc;

use kaigi_proto::signal::{parse_stream_name, stream_name, PeerInfo};
use kaigi_proto::{usersig, Role, RoomId, SdkAppId, UserId};
use kaigi_sdk::devices::DeviceAction;
use kaigi_sdk::{Client, ClientEvent, ClientOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::app::{App, State};
use crate::error::{AppError, AppErrorCode};
use crate::events::{AppEvent, Emitter, UiEvent};
use crate::media::close_local;
use kaigi_proto::unix_now;

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
    /// Required with `server` unless `secret_key` is given; made by the
    /// app for the embedded server.
    pub user_sig: Option<String>,
    /// With `server`: the app's secret key. The app makes its own UserSig
    /// with it and is the room's host (it may remove participants, end the
    /// meeting and make invites, through the server's admin API).
    pub secret_key: Option<String>,
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
    /// An invite link or code: the server (from the link, else `server`),
    /// the room and the UserSig come from it; only `user_id` is needed.
    pub invite: Option<String>,
}

/// An invite to the room, as the UI shows and copies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteInfo {
    /// `kaigi://invite/CODE?server=URL`.
    pub link: String,
    /// The code, `k3m-9xq2-7hd`.
    pub code: String,
    /// Unix seconds when it stops admitting anyone.
    pub expires_at: u64,
    /// Whether this app made it (and may revoke it).
    pub revocable: bool,
}

/// What `join_room` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// Who joined.
    pub user_id: UserId,
    /// The room, as the UI shows it: its number, or its name (unquoted).
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
    /// Whether this app is the room's host (its embedded server holds the
    /// room, or it joined with the app's key): it may remove participants,
    /// end the meeting for all and make invites.
    pub host: bool,
    /// The invite joined through, if any (it can be passed on).
    pub invite: Option<InviteInfo>,
}

/// The frame server's tile table, for the bridge task.
#[derive(Clone)]
pub(crate) struct FramesHandle(crate::frames::SourceTable);

/// How long tile sizes settle (a window being dragged) before the server
/// is told.
const TILE_SIZE_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// A layer up to this much larger than its tile is worth receiving (a
/// 400×300 tile takes 320×240 upscaled, a 440×330 one 640×480).
const LAYER_OVER_TILE: f64 = 1.5;

/// Tells the server the size each remote tile is shown at (see
/// `Client::set_remote_video_size`), as tiles open and resize, until the
/// client is gone.
pub(crate) async fn follow_tile_sizes(
    client: std::sync::Weak<Client>,
    mut sizes: crate::frames::TileSizes,
) {
    let mut told: std::collections::HashMap<String, (u32, u32)> = Default::default();
    while sizes.changed().await.is_ok() {
        tokio::time::sleep(TILE_SIZE_SETTLE).await;
        let now = sizes.borrow_and_update().clone();
        let Some(client) = client.upgrade() else {
            break;
        };
        for (tile, (w, h)) in now {
            if tile == crate::frames::LOCAL_TILE {
                continue;
            }
            let limit = (
                (f64::from(w) * LAYER_OVER_TILE) as u32,
                (f64::from(h) * LAYER_OVER_TILE) as u32,
            );
            if told.get(&tile) == Some(&limit) {
                continue;
            }
            let Some((user, stream_type)) = parse_stream_name(&tile) else {
                continue;
            };
            match client
                .set_stream_video_size(&user, stream_type, limit.0, limit.1)
                .await
            {
                Ok(()) => {
                    debug!(%user, width = limit.0, height = limit.1, "tile size told");
                    told.insert(tile, limit);
                }
                Err(e) => debug!(%user, error = %e, "tile size not told"),
            }
        }
    }
}

/// Forwards the client's events to the UI; keeps the tiles in step with
/// the remote streams; after a forced exit closes the local stream and
/// forgets the client.
/// Whether `event` means the client is out of its room for good: forced
/// out, or reconnecting gave up. Its devices are released and the UI says
/// why (the kicked-out dialog).
fn ends_the_call(event: &ClientEvent) -> bool {
    match event {
        ClientEvent::ClientBanned { .. } => true,
        ClientEvent::Error { name, .. } => name == "RECONNECT_FAILED",
        _ => false,
    }
}

pub(crate) async fn bridge(
    mut events: kaigi_sdk::EventStream,
    emit: Emitter,
    client: Arc<Client>,
    state: Arc<Mutex<State>>,
    frames: FramesHandle,
) {
    while let Some(event) = events.recv().await {
        match &event {
            ClientEvent::StreamSubscribed {
                user_id,
                stream_type,
            } => {
                if let Some(remote) = client
                    .remote_streams()
                    .into_iter()
                    .find(|r| r.user_id() == user_id && r.stream_type() == *stream_type)
                {
                    frames
                        .0
                        .set(&stream_name(user_id, *stream_type), remote.video());
                }
            }
            ClientEvent::StreamRemoved {
                user_id,
                stream_type,
            } => frames.0.remove(&stream_name(user_id, *stream_type)),
            // The app's own watcher tells these, in a call or not.
            ClientEvent::DeviceChanged { action, .. } if *action != DeviceAction::Active => {
                continue
            }
            ClientEvent::ClientBanned { .. } | ClientEvent::Error { .. }
                if ends_the_call(&event) =>
            {
                warn!(?event, "out of the room");
                let mut s = state.lock().await;
                if s.client.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    s.client = None;
                    s.bridge = None;
                    s.hosted = None;
                    s.invite = None;
                }
                client.stop_audio_output();
                if let Some(local) = s.local.take() {
                    local.close();
                }
                let shared = s.share.take();
                frames.0.clear();
                drop(s);
                emit(UiEvent::Client(event));
                emit(UiEvent::App(AppEvent::LocalStreamClosed {}));
                if let Some(share) = shared {
                    share.close();
                    emit(UiEvent::App(AppEvent::ShareStopped {}));
                }
                continue;
            }
            _ => {}
        }
        emit(UiEvent::Client(event));
    }
}

impl App {
    /// Joins a room (the embedded server when no server is given) and, as
    /// an anchor with a camera or microphone, publishes.
    pub async fn join_room(&self, form: JoinForm) -> Result<Joined, AppError> {
        let user =
            UserId::new(form.user_id.trim()).map_err(|e| AppError::invalid(e.to_string()))?;
        let with_invite = form.invite.as_deref().is_some_and(|s| !s.trim().is_empty());
        let mut room = match (form.room_id, form.str_room_id.as_deref().map(str::trim)) {
            (Some(n), None) => RoomId::num(n),
            (None, Some(s)) if !s.is_empty() => RoomId::str(s.to_owned()),
            // The invite names the room.
            _ if with_invite => Ok(RoomId::Num(1)),
            _ => return Err(AppError::invalid("give a room number or a room name")),
        }
        .map_err(|e| AppError::invalid(e.to_string()))?;
        let role = form.role.unwrap_or_default();
        let server = form
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let mut joined_invite = None;
        let mut remote_admin = None;
        let (url, app_id, sig, embedded) = match (form.invite.as_deref().map(str::trim), server) {
            (Some(text), server) if !text.is_empty() => {
                let invite: kaigi_proto::invite::Invite =
                    text.parse()
                        .map_err(|e: kaigi_proto::invite::InviteParseError| {
                            AppError::new(AppErrorCode::InvalidInvite, e.to_string())
                        })?;
                let url = invite
                    .server
                    .clone()
                    .or_else(|| server.map(str::to_owned))
                    .ok_or_else(|| {
                        AppError::new(
                            AppErrorCode::InvalidInvite,
                            "an invite code needs the server's address; paste the whole link",
                        )
                    })?;
                let ca = std::env::var_os("KAIGI_CA").map(std::path::PathBuf::from);
                let got =
                    kaigi_sdk::invite::redeem(&url, &invite.code, user.as_str(), ca.as_deref())
                        .await?;
                room = got.room()?;
                joined_invite = Some(InviteInfo {
                    link: kaigi_proto::invite::Invite::link(&url, &invite.code),
                    code: invite.code.to_string(),
                    expires_at: got.0.expires_at,
                    revocable: false,
                });
                (url, SdkAppId(got.0.sdk_app_id), got.0.user_sig, false)
            }
            (_, Some(url)) => {
                let app = form
                    .sdk_app_id
                    .ok_or_else(|| AppError::invalid("SdkAppId is required with a server"))?;
                let key = form
                    .secret_key
                    .as_deref()
                    .map(str::trim)
                    .filter(|k| !k.is_empty());
                let sig = match (form.user_sig.as_deref().map(str::trim), key) {
                    (Some(sig), _) if !sig.is_empty() => sig.to_owned(),
                    (_, Some(key)) => {
                        usersig::generate(SdkAppId(app), key, user.as_str(), 86_400, unix_now())
                    }
                    _ => {
                        return Err(AppError::invalid(
                            "UserSig (or the app's key) is required with a server",
                        ))
                    }
                };
                if let Some(key) = key {
                    remote_admin = Some(crate::host::RemoteAdmin {
                        server: url.to_owned(),
                        app: SdkAppId(app),
                        key: key.to_owned(),
                        ca: std::env::var_os("KAIGI_CA").map(std::path::PathBuf::from),
                    });
                }
                (url.to_owned(), SdkAppId(app), sig, false)
            }
            (_, None) => {
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
            return Err(AppError::new(
                AppErrorCode::AlreadyInRoom,
                "leave the room first",
            ));
        }
        let mut options = ClientOptions::new(url.clone(), app_id, user.clone(), sig);
        // A server with a private CA: its certificate, as for the CLI.
        options.ca_file = std::env::var_os("KAIGI_CA").map(std::path::PathBuf::from);
        // How long to keep trying after the connection drops (default 120 s).
        if let Some(secs) = std::env::var("KAIGI_RECONNECT_GIVE_UP_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            options.reconnect.give_up_after = std::time::Duration::from_secs(secs);
        }
        let client = Arc::new(Client::new(options)?);
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
        tokio::spawn(follow_tile_sizes(
            Arc::downgrade(&client),
            self.frames.tile_sizes(),
        ));
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
        let host = match remote_admin {
            Some(admin) => Some(crate::host::Host::Remote(admin)),
            None if embedded => Some(crate::host::Host::Embedded),
            None => None,
        };
        let is_host = host.is_some();
        state.hosted = host.map(|h| (room.clone(), h));
        state.invite = joined_invite.clone();
        let bot_command = if embedded {
            self.embedded.get().map(|e| e.bot_command(&room))
        } else {
            None
        };
        Ok(Joined {
            user_id: user,
            room: match &room {
                RoomId::Num(n) => n.to_string(),
                RoomId::Str(s) => s.clone(),
            },
            role: joined.role,
            users: joined.users,
            server: url,
            embedded,
            bot_command,
            publishing,
            host: is_host,
            invite: joined_invite,
        })
    }

    /// Sends a chat message to everyone else in the room.
    pub async fn send_chat(&self, text: &str) -> Result<(), AppError> {
        let client = self
            .state
            .lock()
            .await
            .client
            .clone()
            .ok_or_else(|| AppError::new(AppErrorCode::NotInRoom, "not in a room"))?;
        client.send_chat(text).await.map_err(AppError::from)
    }

    /// The room this app hosts, and how, or `NOT_HOST`.
    async fn hosted(&self) -> Result<(kaigi_proto::RoomId, crate::host::Host), AppError> {
        self.state.lock().await.hosted.clone().ok_or_else(|| {
            AppError::new(
                AppErrorCode::NotHost,
                "only the host (the app whose server holds the room, or that joined with the app's key) can do that",
            )
        })
    }

    /// As the host: removes `user_id` from the room (they see the
    /// kicked-out dialog, `removed-by-admin`).
    pub async fn remove_participant(&self, user_id: &str) -> Result<(), AppError> {
        let user = UserId::new(user_id).map_err(|e| AppError::invalid(e.to_string()))?;
        let (room, host) = self.hosted().await?;
        if !host.remove_user(self.embedded.get(), &room, &user).await? {
            return Err(AppError::new(
                AppErrorCode::NotInRoom,
                format!("{user} is not in the room"),
            ));
        }
        Ok(())
    }

    /// The room's invite: the one joined through, or (as the host) the
    /// one made last, made now if there is none.
    pub async fn create_invite(&self) -> Result<InviteInfo, AppError> {
        if let Some(invite) = self.state.lock().await.invite.clone() {
            return Ok(invite);
        }
        let (room, host) = self.hosted().await?;
        let made = host.create_invite(self.embedded.get(), &room).await?;
        let mut state = self.state.lock().await;
        if state.hosted.as_ref().map(|(r, _)| r) != Some(&room) {
            return Err(AppError::new(AppErrorCode::NotInRoom, "the call ended"));
        }
        state.invite = Some(made.clone());
        Ok(made)
    }

    /// As the host: revokes the room's invite (nobody enters with it any
    /// more); the next `create_invite` makes a new one.
    pub async fn revoke_invite(&self) -> Result<(), AppError> {
        let (_, host) = self.hosted().await?;
        let taken = self.state.lock().await.invite.take();
        if let Some(invite) = taken {
            host.revoke_invite(self.embedded.get(), &invite.code)
                .await?;
        }
        Ok(())
    }

    /// As the host: ends the meeting for everyone (`room-dismissed`), this
    /// app included.
    pub async fn end_meeting(&self) -> Result<(), AppError> {
        let (room, host) = self.hosted().await?;
        host.dismiss(self.embedded.get(), &room).await
    }

    pub(crate) fn frames_handle(&self) -> FramesHandle {
        FramesHandle(self.frames.shared_sources())
    }

    /// Leaves the room: when it completes the local stream is closed and
    /// `client-left` is emitted.
    pub async fn leave_room(&self) -> Result<(), AppError> {
        let mut state = self.state.lock().await;
        let Some(client) = state.client.take() else {
            return Err(AppError::new(AppErrorCode::NotInRoom, "not in a room"));
        };
        let result = client.leave().await;
        state.hosted = None;
        state.invite = None;
        if let Some(b) = state.bridge.take() {
            b.abort();
        }
        client.stop_audio_output();
        close_local(&mut state, &self.frames, &self.emit);
        if let Some(share) = state.share.take() {
            share.close();
            (self.emit)(UiEvent::App(AppEvent::ShareStopped {}));
        }
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
                    AppError::new(
                        AppErrorCode::NoLocalStream,
                        "no camera or microphone is open",
                    )
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
}
