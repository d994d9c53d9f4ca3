//! The session task: owns the signaling WebSocket while in a room, relays
//! server events, sends heartbeats, and rejoins after a dropped connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kaigi_proto::signal::{
    ClientMessage, ErrorMessage, JoinRequest, Joined, PeerLeaveReason, RoomRef, ServerMessage,
};
use kaigi_proto::{ErrorCode, KickReason, Role, RoomId, UserId, PROTOCOL_VERSION};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::client::{Command, Request, Shared};
use crate::error::ClientError;
use crate::events::{ClientEvent, ConnectionState};
use crate::media::{Arrived, MediaSession};
use kaigi_rtc::quality::{assess, grade, LinkCounters, Quality};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const JOIN_REQ_ID: u64 = 1;

/// How often `network-quality` is reported.
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

/// The interface that reaches the server: media binds to it.
fn local_ip(ws: &Ws) -> std::net::IpAddr {
    let addr = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().ok(),
        MaybeTlsStream::Rustls(s) => s.get_ref().0.local_addr().ok(),
        _ => None,
    };
    addr.map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

type Reply = oneshot::Sender<Result<(), ClientError>>;

/// A media session for the connection `ws`.
fn new_media(shared: &Shared, ws: &Ws) -> MediaSession {
    let mut m = MediaSession::new(
        local_ip(ws),
        shared.remotes.clone(),
        shared.audio_out.clone(),
    );
    m.decode = shared.opts.decode;
    m
}

/// Requests waiting for the server's answer, and what the session
/// remembers across reconnects.
#[derive(Default)]
struct Pending {
    publish: Option<(u64, Option<Reply>)>,
    unpublish: Option<(u64, Reply)>,
    /// Other requests by request id.
    requests: HashMap<u64, (Request, Reply)>,
    /// Each remote stream's (audio muted, video muted).
    mutes: HashMap<UserId, (bool, bool)>,
    /// Streams subscribed by request (asked again after a reconnect).
    subscribed: HashMap<UserId, (bool, bool)>,
}

impl Pending {
    /// Fails everything outstanding (the connection dropped).
    fn fail_all(&mut self) {
        if let Some((_, Some(r))) = self.publish.take() {
            let _ = r.send(Err(ClientError::ConnectionLost));
        }
        if let Some((_, r)) = self.unpublish.take() {
            let _ = r.send(Err(ClientError::ConnectionLost));
        }
        for (_, (_, r)) in self.requests.drain() {
            let _ = r.send(Err(ClientError::ConnectionLost));
        }
    }

    /// The request `req_id` answered: removed, with its reply.
    fn answered(&mut self, req_id: Option<u64>) -> Option<(Request, Reply)> {
        self.requests.remove(&req_id?)
    }
}

impl Request {
    fn message(&self, req_id: u64) -> ClientMessage {
        match self.clone() {
            Request::Mute { audio, video } => ClientMessage::Mute {
                req_id,
                audio,
                video,
            },
            Request::Subscribe { user, audio, video } => ClientMessage::Subscribe {
                req_id,
                user_id: user.to_string(),
                audio,
                video,
            },
            Request::Unsubscribe { user } => ClientMessage::Unsubscribe {
                req_id,
                user_id: user.to_string(),
            },
            Request::SwitchRole(role) => ClientMessage::SwitchRole { req_id, role },
        }
    }
}

/// Waits for `leave` (or the client being dropped), refusing other
/// commands meanwhile: used while no connection exists.
async fn until_leave(commands: &mut mpsc::UnboundedReceiver<Command>) -> Option<Reply> {
    loop {
        match commands.recv().await {
            Some(Command::Leave(reply)) => return Some(reply),
            Some(Command::Publish(_, reply))
            | Some(Command::Unpublish(reply))
            | Some(Command::Request(_, reply)) => {
                let _ = reply.send(Err(ClientError::ConnectionLost));
            }
            None => return None,
        }
    }
}

fn to_client_error(e: ErrorMessage) -> ClientError {
    match e.name {
        c if c.is_auth() => ClientError::Auth {
            code: c,
            message: e.message,
        },
        ErrorCode::InvalidParameter => ClientError::InvalidParameter(e.message),
        ErrorCode::AlreadyInRoom => ClientError::AlreadyInRoom,
        ErrorCode::SessionBanned => {
            ClientError::Banned(e.kick_reason.unwrap_or(KickReason::DuplicateUserId))
        }
        code => ClientError::Server {
            code,
            message: e.message,
        },
    }
}

/// How long one write to the server may take. A server (or a path) that
/// stops reading fills the socket's buffer and then blocks the write; past
/// this the connection counts as lost and the session reconnects, so the
/// session task never hangs on its own socket.
const SEND_DEADLINE: Duration = Duration::from_secs(5);

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<(), ClientError> {
    let text =
        serde_json::to_string(msg).map_err(|e| ClientError::InvalidOptions(e.to_string()))?;
    match tokio::time::timeout(SEND_DEADLINE, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ClientError::ConnectionLost),
        Err(_) => {
            warn!("a write to the server did not complete in time; reconnecting");
            Err(ClientError::ConnectionLost)
        }
    }
}

/// The next server message; `None` when the connection is gone.
async fn next_message(ws: &mut Ws) -> Option<ServerMessage> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(m) => return Some(m),
                Err(e) => warn!(error = %e, "unreadable server message ignored"),
            },
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Connects and joins, within the join timeout.
pub(crate) async fn connect_and_join(
    shared: &Shared,
    room: &RoomId,
    role: Role,
    resume: Option<String>,
) -> Result<(Ws, Joined), ClientError> {
    let timeout = shared.opts.join_timeout;
    let attempt = async {
        // Nagle off: small, latency-bound messages.
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(shared.url.as_str(), None, true)
                .await
                .map_err(|e| ClientError::Unreachable(format!("{}: {e}", shared.url)))?;
        let opts = &shared.opts;
        let join = ClientMessage::Join(JoinRequest {
            req_id: JOIN_REQ_ID,
            sdk_app_id: opts.sdk_app_id.0,
            user_id: opts.user_id.to_string(),
            user_sig: opts.user_sig.clone(),
            room: RoomRef::from(room),
            role,
            resume,
            protocol: Some(PROTOCOL_VERSION),
            auto_subscribe: opts.auto_subscribe,
        });
        send(&mut ws, &join).await?;
        loop {
            match next_message(&mut ws).await {
                Some(ServerMessage::Joined(j)) if j.req_id == JOIN_REQ_ID => return Ok((ws, j)),
                Some(ServerMessage::Error(e))
                    if e.req_id == Some(JOIN_REQ_ID) || e.req_id.is_none() =>
                {
                    return Err(to_client_error(e))
                }
                Some(_) => {}
                None => return Err(ClientError::ConnectionLost),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))?
}

enum Outcome {
    Leave(Option<oneshot::Sender<Result<(), ClientError>>>),
    Banned(KickReason, String),
    Lost,
}

/// Runs a joined session until leave, a forced exit, or giving up.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut ws: Ws,
    mut joined: Joined,
    room: RoomId,
    role: Role,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut req_id = JOIN_REQ_ID;
    let mut media = new_media(&shared, &ws);
    let mut pending = Pending::default();
    loop {
        let outcome = connected(
            &shared,
            &mut ws,
            &joined,
            &mut commands,
            &mut req_id,
            &mut media,
            &mut pending,
        )
        .await;
        if !matches!(outcome, Outcome::Lost) {
            pending.fail_all();
            *shared.local.lock().unwrap_or_else(|e| e.into_inner()) = None;
            // Leave and every forced exit stop all media, and close the
            // published stream's sources (devices released).
            let published = std::mem::replace(&mut media, new_media(&shared, &ws))
                .close()
                .await;
            if let Some(stream) = published {
                stream.close();
            }
        }
        match outcome {
            Outcome::Leave(reply) => {
                req_id += 1;
                let result = leave(&shared, &mut ws, req_id).await;
                shared.set_state(ConnectionState::Disconnected);
                info!("left");
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                return;
            }
            Outcome::Banned(reason, message) => {
                // Tell the app first; the closing handshake can follow.
                banned(&shared, reason, message);
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return;
            }
            Outcome::Lost => {
                shared.set_state(ConnectionState::Reconnecting);
                shared.emit(ClientEvent::network_quality(Quality {
                    uplink: grade::DISCONNECTED,
                    downlink: grade::DISCONNECTED,
                    ..Quality::default()
                }));
                pending.fail_all();
                // The server's side of the media is gone with the session;
                // what was published is published again after rejoining.
                let republish = std::mem::replace(&mut media, new_media(&shared, &ws))
                    .close()
                    .await;
                let resume = joined.session_id.clone();
                // The role now held, which `switch-role` may have changed.
                let role = shared.status().room.as_ref().map_or(role, |(_, r)| *r);
                match reconnect(&shared, &room, role, resume, &mut commands).await {
                    Rejoin::Joined(new_ws, new_joined) => {
                        ws = *new_ws;
                        joined = new_joined;
                        req_id = JOIN_REQ_ID;
                        media = new_media(&shared, &ws);
                        resync_peers(&shared, &joined, &room);
                        shared.set_state(ConnectionState::Connected);
                        // Streams subscribed by request are asked for again.
                        for (user, (audio, video)) in pending.subscribed.clone() {
                            req_id += 1;
                            let msg = Request::Subscribe { user, audio, video }.message(req_id);
                            let _ = send(&mut ws, &msg).await;
                        }
                        if let Some(stream) = republish.filter(|s| !s.is_closed()) {
                            req_id += 1;
                            let msg = ClientMessage::Publish {
                                req_id,
                                audio: stream.has_audio(),
                                video: stream.has_video(),
                            };
                            media.publish(stream);
                            if send(&mut ws, &msg).await.is_ok() {
                                pending.publish = Some((req_id, None));
                            }
                        }
                    }
                    Rejoin::Stopped(reply) => {
                        shared.set_state(ConnectionState::Disconnected);
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(()));
                        }
                        return;
                    }
                    Rejoin::Banned(reason) => {
                        banned(&shared, reason, reason.message().to_owned());
                        return;
                    }
                    Rejoin::Failed(e) => {
                        warn!(error = %e, "reconnecting failed; giving up");
                        shared.set_state(ConnectionState::Disconnected);
                        shared.emit(ClientEvent::Error {
                            code: 0,
                            name: "RECONNECT_FAILED".into(),
                            message: format!("could not rejoin the room: {e}"),
                        });
                        return;
                    }
                }
            }
        }
    }
}

fn banned(shared: &Shared, reason: KickReason, message: String) {
    info!(%reason, "forced out");
    // The state is already DISCONNECTED when the app handles the event.
    let prev = {
        let mut s = shared.status();
        let prev = s.state;
        s.state = ConnectionState::Disconnected;
        s.room = None;
        s.peers.clear();
        prev
    };
    shared.emit(ClientEvent::ClientBanned { reason, message });
    if prev != ConnectionState::Disconnected {
        shared.emit(ClientEvent::ConnectionStateChanged {
            prev_state: prev,
            state: ConnectionState::Disconnected,
        });
    }
}

/// Emits joins and leaves for the difference between the peers known
/// before a drop and those found on rejoining.
fn resync_peers(shared: &Shared, joined: &Joined, room: &RoomId) {
    let now: BTreeMap<_, _> = joined
        .users
        .iter()
        .map(|p| (p.user_id.clone(), p.role))
        .collect();
    let before = {
        let mut status = shared.status();
        status.room = Some((room.clone(), joined.role));
        std::mem::replace(&mut status.peers, now.clone())
    };
    for (user, _) in before.iter().filter(|(u, _)| !now.contains_key(*u)) {
        shared.emit(ClientEvent::PeerLeave {
            user_id: user.clone(),
            reason: PeerLeaveReason::Left,
        });
    }
    for (user, role) in now.iter().filter(|(u, _)| !before.contains_key(*u)) {
        shared.emit(ClientEvent::PeerJoin {
            user_id: user.clone(),
            role: *role,
        });
    }
}

async fn connected(
    shared: &Shared,
    ws: &mut Ws,
    joined: &Joined,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    req_id: &mut u64,
    media: &mut MediaSession,
    pending: &mut Pending,
) -> Outcome {
    let interval = Duration::from_millis(joined.heartbeat_interval_ms.max(100));
    let dead_after = Duration::from_millis(joined.heartbeat_timeout_ms.max(1000));
    // The first ping goes out at once: it measures the round trip.
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut quality_tick =
        tokio::time::interval_at(Instant::now() + QUALITY_INTERVAL, QUALITY_INTERVAL);
    quality_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counters = LinkCounters::default();
    // The outstanding ping, and the latest signaling round trip (ms).
    let mut ping: Option<(u64, Instant)> = None;
    let mut signaling_rtt: Option<f64> = None;
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Leave(reply)) => return Outcome::Leave(Some(reply)),
                Some(Command::Publish(stream, reply)) => {
                    if pending.publish.is_some() {
                        let _ = reply.send(Err(ClientError::Server { code: ErrorCode::AlreadyPublishing, message: "a publish is in progress".into() }));
                        continue;
                    }
                    *req_id += 1;
                    let msg = ClientMessage::Publish { req_id: *req_id, audio: stream.has_audio(), video: stream.has_video() };
                    media.publish(stream);
                    if send(ws, &msg).await.is_err() {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                        return Outcome::Lost;
                    }
                    pending.publish = Some((*req_id, Some(reply)));
                }
                Some(Command::Unpublish(reply)) => {
                    *req_id += 1;
                    media.unpublish();
                    *shared.local.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if send(ws, &ClientMessage::Unpublish { req_id: *req_id }).await.is_err() {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                        return Outcome::Lost;
                    }
                    pending.unpublish = Some((*req_id, reply));
                }
                Some(Command::Request(request, reply)) => {
                    *req_id += 1;
                    if let Request::Mute { audio, video } = &request {
                        media.set_muted(*audio, *video);
                    }
                    if send(ws, &request.message(*req_id)).await.is_err() {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                        return Outcome::Lost;
                    }
                    pending.requests.insert(*req_id, (request, reply));
                }
                None => return Outcome::Leave(None),
            },
            track = media.next_track() => {
                if let Some(Arrived::Subscribed(user_id)) = media.on_track(track).await {
                    shared.emit(ClientEvent::StreamSubscribed { user_id });
                }
            }
            _ = heartbeat.tick() => {
                *req_id += 1;
                if send(ws, &ClientMessage::Ping { req_id: *req_id }).await.is_err() {
                    return Outcome::Lost;
                }
                ping = Some((*req_id, Instant::now()));
            }
            _ = quality_tick.tick() => {
                let mut now = media.link_counters().await.unwrap_or_default();
                if now.rtt_ms().is_none() {
                    // No media yet: the signaling round trip stands in.
                    now.ice_rtt_ms = signaling_rtt;
                }
                shared.emit(ClientEvent::network_quality(assess(&counters, &now)));
                counters = now;
            }
            _ = tokio::time::sleep_until(last_heard + dead_after) => {
                warn!("nothing heard from the server; reconnecting");
                return Outcome::Lost;
            }
            msg = next_message(ws) => {
                last_heard = Instant::now();
                match msg {
                    None => return Outcome::Lost,
                    Some(ServerMessage::Pong { req_id: r }) => {
                        if let Some((_, sent)) = ping.take_if(|(id, _)| *id == r) {
                            signaling_rtt = Some(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Some(ServerMessage::PeerJoin { user_id, role }) => {
                        shared.status().peers.insert(user_id.clone(), role);
                        shared.emit(ClientEvent::PeerJoin { user_id, role });
                    }
                    Some(ServerMessage::PeerLeave { user_id, reason }) => {
                        shared.status().peers.remove(&user_id);
                        shared.emit(ClientEvent::PeerLeave { user_id, reason });
                    }
                    Some(ServerMessage::ClientBanned { reason, message }) => {
                        return Outcome::Banned(reason, message);
                    }
                    Some(ServerMessage::Offer { sdp, publish_req_id, new_connection }) => match media
                        .answer(sdp, publish_req_id.is_some() && publish_req_id == pending.publish.as_ref().map(|(id, _)| *id), new_connection)
                        .await
                    {
                        Ok(sdp) => {
                            if send(ws, &ClientMessage::Answer { sdp }).await.is_err() {
                                return Outcome::Lost;
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "answering the server's offer failed");
                            shared.emit(ClientEvent::Error { code: ErrorCode::MediaFailed.code(), name: e.name(), message: e.to_string() });
                        }
                    },
                    Some(ServerMessage::Published { req_id: r }) if pending.publish.as_ref().is_some_and(|(id, _)| *id == r) => {
                        media.start_sending().await;
                        *shared.local.lock().unwrap_or_else(|e| e.into_inner()) = media.published().cloned();
                        if let Some((_, Some(reply))) = pending.publish.take() {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(ServerMessage::Unpublished { req_id: r }) if pending.unpublish.as_ref().is_some_and(|(id, _)| *id == r) => {
                        if let Some((_, reply)) = pending.unpublish.take() {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(ServerMessage::Error(e)) if e.req_id.is_some() && pending.publish.as_ref().is_some_and(|(id, _)| Some(*id) == e.req_id) => {
                        // Refused as a second publish, the first goes on;
                        // otherwise nothing is published.
                        if e.code == ErrorCode::AlreadyPublishing.code() {
                            media.cancel_publish();
                        } else {
                            media.unpublish();
                        }
                        if let Some((_, Some(reply))) = pending.publish.take() {
                            let _ = reply.send(Err(to_client_error(e)));
                        }
                    }
                    Some(ServerMessage::StreamAdded { user_id, audio, video, audio_muted, video_muted }) => {
                        pending.mutes.insert(user_id.clone(), (audio_muted, video_muted));
                        shared.emit(ClientEvent::StreamAdded { user_id, audio, video });
                    }
                    Some(ServerMessage::StreamUpdated { user_id, audio_muted, video_muted }) => {
                        let (was_audio, was_video) = pending
                            .mutes
                            .insert(user_id.clone(), (audio_muted, video_muted))
                            .unwrap_or_default();
                        let u = user_id.clone();
                        if audio_muted != was_audio {
                            shared.emit(if audio_muted { ClientEvent::MuteAudio { user_id: u.clone() } } else { ClientEvent::UnmuteAudio { user_id: u.clone() } });
                        }
                        if video_muted != was_video {
                            shared.emit(if video_muted { ClientEvent::MuteVideo { user_id: u } } else { ClientEvent::UnmuteVideo { user_id: u } });
                        }
                        shared.emit(ClientEvent::StreamUpdated { user_id, audio_muted, video_muted });
                    }
                    Some(
                        ServerMessage::Muted { req_id: r }
                        | ServerMessage::Subscribed { req_id: r, .. }
                        | ServerMessage::Unsubscribed { req_id: r, .. }
                        | ServerMessage::RoleSwitched { req_id: r, .. },
                    ) if pending.requests.contains_key(&r) => {
                        if let Some((request, reply)) = pending.answered(Some(r)) {
                            request_done(shared, media, pending, request);
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(ServerMessage::Error(e)) if e.req_id.is_some_and(|r| pending.requests.contains_key(&r)) => {
                        if let Some((_, reply)) = pending.answered(e.req_id) {
                            let _ = reply.send(Err(to_client_error(e)));
                        }
                    }
                    Some(ServerMessage::PeerRole { user_id, role }) => {
                        shared.status().peers.insert(user_id.clone(), role);
                        shared.emit(ClientEvent::PeerRole { user_id, role });
                    }
                    Some(ServerMessage::StreamRemoved { user_id }) => {
                        pending.mutes.remove(&user_id);
                        pending.subscribed.remove(&user_id);
                        media.stream_removed(&user_id);
                        shared.emit(ClientEvent::StreamRemoved { user_id });
                    }
                    Some(ServerMessage::Error(e)) => {
                        warn!(code = e.code, message = %e.message, "server error");
                        if e.req_id.is_none() && e.name != ErrorCode::ServerShuttingDown {
                            shared.emit(ClientEvent::Error { code: e.code, name: e.name.to_string(), message: e.message });
                        }
                    }
                    Some(other) => debug!(?other, "ignored"),
                }
            }
        }
    }
}

/// What a request's success changes on this side.
fn request_done(
    shared: &Shared,
    media: &mut MediaSession,
    pending: &mut Pending,
    request: Request,
) {
    match request {
        Request::Mute { .. } => {}
        Request::Subscribe { user, audio, video } => {
            pending.subscribed.insert(user, (audio, video));
        }
        Request::Unsubscribe { user } => {
            pending.subscribed.remove(&user);
            media.stream_removed(&user);
        }
        Request::SwitchRole(role) => {
            if let Some((_, r)) = shared.status().room.as_mut() {
                *r = role;
            }
            if role == Role::Audience {
                // The server ended what was published.
                media.unpublish();
                *shared.local.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }
}

/// Sends `leave` and waits for `left`, then closes the connection.
async fn leave(shared: &Shared, ws: &mut Ws, req_id: u64) -> Result<(), ClientError> {
    let timeout = shared.opts.leave_timeout;
    let result = async {
        if send(ws, &ClientMessage::Leave { req_id }).await.is_err() {
            // The connection is gone, and with it our place in the room.
            return Ok(());
        }
        loop {
            match next_message(ws).await {
                Some(ServerMessage::Left { req_id: r }) if r == req_id => return Ok(()),
                Some(ServerMessage::ClientBanned { .. }) | None => return Ok(()),
                Some(_) => {}
            }
        }
    };
    let result = tokio::time::timeout(timeout, result)
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout.as_millis() as u64)));
    // Finish the closing handshake so the server sees a clean close.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    result
}

enum Rejoin {
    Joined(Box<Ws>, Joined),
    Stopped(Option<oneshot::Sender<Result<(), ClientError>>>),
    Banned(KickReason),
    Failed(ClientError),
}

async fn reconnect(
    shared: &Shared,
    room: &RoomId,
    role: Role,
    resume: String,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Rejoin {
    let policy = shared.opts.reconnect;
    let started = Instant::now();
    let mut backoff = policy.initial_backoff;
    let mut attempt = 0u32;
    loop {
        // Jitter spreads out many clients reconnecting to a restarted server.
        let wait = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            reply = until_leave(commands) => return Rejoin::Stopped(reply),
            _ = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
        let try_join = connect_and_join(shared, room, role, Some(resume.clone()));
        let result = tokio::select! {
            reply = until_leave(commands) => return Rejoin::Stopped(reply),
            r = try_join => r,
        };
        match result {
            Ok((ws, joined)) => {
                info!(attempt, "rejoined");
                return Rejoin::Joined(Box::new(ws), joined);
            }
            Err(ClientError::Banned(reason)) => return Rejoin::Banned(reason),
            Err(e) if !e.is_retryable() => return Rejoin::Failed(e),
            Err(e) => {
                debug!(attempt, error = %e, "rejoin failed; retrying");
                if started.elapsed() >= policy.give_up_after {
                    return Rejoin::Failed(e);
                }
                backoff = (backoff * 2).min(policy.max_backoff);
            }
        }
    }
}
