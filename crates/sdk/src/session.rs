//! The session's I/O: owns the signaling WebSocket and the media session
//! while in a room, feeds the [`Machine`] what happens (server messages,
//! the client's orders, the time, the results of what it asked for) and
//! carries out what it returns. Every decision is the machine's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kaigi_proto::signal::{ClientMessage, JoinRequest, Joined, RoomRef, ServerMessage, StreamType};
use kaigi_proto::{Role, RoomId, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::warn;

use crate::error::ClientError;
use crate::machine::{
    to_client_error, Command, Machine, MediaAction, Output, Publishing, Settings, Token,
    JOIN_REQ_ID,
};
use crate::media::{Arrived, LocalStream, MediaSession};
use crate::shared::{Order, Reply, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A rejoin attempt under way.
type Attempt = Pin<Box<dyn Future<Output = Result<(Ws, Joined), ClientError>> + Send>>;

/// How long one write to the server may take. A server (or a path) that
/// stops reading fills the socket's buffer and then blocks the write; past
/// this the connection counts as lost and the session reconnects, so the
/// session task never hangs on its own socket.
const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// How many queued orders one turn of the session loop takes.
const ORDERS_PER_TURN: usize = 64;

/// How long the closing handshake may take.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

/// The interface that reaches the server: media binds to it.
fn local_ip(ws: &Ws) -> IpAddr {
    let addr = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().ok(),
        MaybeTlsStream::Rustls(s) => s.get_ref().0.local_addr().ok(),
        _ => None,
    };
    addr.map(|a| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

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

/// A failed connect: a TLS failure (an untrusted certificate above all)
/// says so and how to fix it; anything else is an unreachable server.
fn connect_error(url: &str, e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    use tokio_tungstenite::tungstenite::Error as E;
    let tls = match &e {
        E::Tls(t) => Some(t.to_string()),
        E::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|r| r.to_string()),
        _ => None,
    };
    match tls {
        Some(t) => ClientError::Tls(format!(
            "{url}: {t} (a server with a private CA needs its certificate: ca_file, or --ca)"
        )),
        None => ClientError::Unreachable(format!("{url}: {e}")),
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
        // In a service of several nodes the first node may send the client
        // to the room's node (`ROOM_ELSEWHERE` with `redirect`); a few hops
        // at most. Every attempt starts at the configured server, so a
        // reconnect after the room's node died is placed anew.
        let mut url = shared.url.clone();
        let mut protocols = PROTOCOLS.iter().copied();
        let mut protocol = protocols.next().unwrap_or(PROTOCOL_VERSION);
        let mut redirects = 0;
        while redirects < MAX_REDIRECTS {
            match join_at(shared, &url, room, role, resume.clone(), protocol).await {
                Ok(Ok(joined)) => return Ok(joined),
                Ok(Err(next)) => {
                    tracing::info!(from = %url, to = %next, "the room is on another node");
                    url = next;
                    redirects += 1;
                }
                Err(ClientError::Server {
                    code: kaigi_proto::ErrorCode::UnsupportedProtocol,
                    message,
                }) => match protocols.next() {
                    Some(older) => {
                        tracing::info!(%url, refused = protocol, older, %message, "joining with an older protocol");
                        protocol = older;
                    }
                    None => {
                        return Err(ClientError::Server {
                            code: kaigi_proto::ErrorCode::UnsupportedProtocol,
                            message,
                        })
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Server {
            code: kaigi_proto::ErrorCode::RoomElsewhere,
            message: format!("redirected more than {MAX_REDIRECTS} times"),
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))?
}

/// The protocol versions this client joins with, newest first: a server
/// that refuses one (`UNSUPPORTED_PROTOCOL`: an older server, or one held
/// to an older version while a service's nodes are upgraded) is joined
/// again with the next. The client handles every message of each (7 adds
/// only `video-layers`, which the server sends by itself).
const PROTOCOLS: [u32; 2] = [PROTOCOL_VERSION, 6];

/// How many times one join follows `ROOM_ELSEWHERE`.
const MAX_REDIRECTS: usize = 3;

/// Connects to `url` and joins: the connection and the reply, or the URL
/// the server sends the client to instead.
async fn join_at(
    shared: &Shared,
    url: &str,
    room: &RoomId,
    role: Role,
    resume: Option<String>,
    protocol: u32,
) -> Result<Result<(Ws, Joined), String>, ClientError> {
    {
        // Nagle off: small, latency-bound messages.
        let connector = tokio_tungstenite::Connector::Rustls(shared.tls.clone());
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector))
                .await
                .map_err(|e| connect_error(url, e))?;
        let opts = &shared.opts;
        let join = ClientMessage::Join(JoinRequest {
            req_id: JOIN_REQ_ID,
            sdk_app_id: opts.sdk_app_id.0,
            user_id: opts.user_id.to_string(),
            user_sig: opts.user_sig.clone(),
            room: RoomRef::from(room),
            role,
            resume,
            protocol: Some(protocol),
            auto_subscribe: opts.auto_subscribe,
            private_map_key: opts.private_map_key.clone(),
        });
        send(&mut ws, &join).await?;
        loop {
            match next_message(&mut ws).await {
                Some(ServerMessage::Joined(j)) if j.req_id == JOIN_REQ_ID => {
                    return Ok(Ok((ws, j)))
                }
                Some(ServerMessage::Error(e))
                    if e.req_id == Some(JOIN_REQ_ID) || e.req_id.is_none() =>
                {
                    if let (kaigi_proto::ErrorCode::RoomElsewhere, Some(to)) =
                        (e.name, e.redirect.as_ref())
                    {
                        if to.starts_with("ws://") || to.starts_with("wss://") {
                            let _ = ws.close(None).await;
                            return Ok(Err(to.clone()));
                        }
                    }
                    return Err(to_client_error(e));
                }
                Some(_) => {}
                None => return Err(ClientError::ConnectionLost),
            }
        }
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// What the session task holds: the I/O the machine's outputs act on.
struct Io {
    shared: Arc<Shared>,
    room: RoomId,
    ws: Option<Ws>,
    /// The address media binds to (the interface that reaches the server).
    bind: IpAddr,
    media: MediaSession,
    replies: HashMap<Token, Reply>,
    next_token: Token,
    /// The stream of the publish order being handled.
    to_publish: Option<LocalStream>,
    /// The published streams, kept across a dropped connection.
    kept: BTreeMap<StreamType, LocalStream>,
    /// The kept streams to publish again once rejoined.
    to_republish: BTreeMap<StreamType, LocalStream>,
    rejoin: Option<Attempt>,
}

/// What a publish of `stream` as `stream_type` sends.
fn publishing(stream: &LocalStream, stream_type: StreamType) -> Publishing {
    Publishing {
        stream_type,
        audio: stream.has_audio(),
        video: stream.has_video(),
        layers: stream.layers(),
    }
}

/// Runs a joined session until leave, a forced exit, or giving up.
pub(crate) async fn run(
    shared: Arc<Shared>,
    ws: Ws,
    joined: Joined,
    room: RoomId,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    let settings = Settings {
        reconnect: shared.opts.reconnect,
        leave_timeout: shared.opts.leave_timeout,
        request_timeout: shared.opts.request_timeout,
    };
    let mut machine = Machine::new(settings, room.clone(), &joined, now(), rand::random());
    let bind = local_ip(&ws);
    let mut io = Io {
        media: MediaSession::new(bind, shared.remotes.clone(), shared.audio_out.clone()),
        shared,
        room,
        ws: Some(ws),
        bind,
        replies: HashMap::new(),
        next_token: 0,
        to_publish: None,
        kept: BTreeMap::new(),
        to_republish: BTreeMap::new(),
        rejoin: None,
    };
    io.media.decode = io.shared.opts.decode;
    // One timer, moved when the machine's next deadline moves.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<std::time::Instant> = None;
    while !machine.is_done() {
        let wake = machine.poll_timeout();
        if wake != armed {
            if let Some(at) = wake {
                timer.as_mut().reset(at.into());
            }
            armed = wake;
        }
        let out = tokio::select! {
            order = orders.recv() => {
                let mut out = io.order(&mut machine, order);
                // Orders that queued meanwhile go in the same turn (up to
                // a bound, so the connection is read in between).
                for _ in 0..ORDERS_PER_TURN {
                    if machine.is_done() || out.iter().any(|o| matches!(o, Output::Media(MediaAction::Publish(_)))) {
                        break;
                    }
                    match orders.try_recv() {
                        Ok(order) => out.extend(io.order(&mut machine, Some(order))),
                        Err(_) => break,
                    }
                }
                out
            }
            msg = next_message_on(&mut io.ws) => match msg {
                Some(m) => machine.server(m, now()),
                None => {
                    io.ws = None;
                    machine.connection_lost(now())
                }
            },
            track = io.media.next_track() => match io.media.on_track(track).await {
                Some(Arrived::Subscribed(user, stream_type)) => machine.subscribed(user, stream_type),
                _ => Vec::new(),
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                machine.timeout(now())
            }
            result = attempt_of(&mut io.rejoin) => {
                io.rejoin = None;
                match result {
                    Ok((ws, joined)) => io.rejoined(&mut machine, ws, &joined),
                    Err(e) => machine.rejoin_failed(e, now()),
                }
            }
        };
        io.apply(&mut machine, out).await;
        io.to_publish = None;
    }
}

/// The next message on the connection, if there is one; else never.
async fn next_message_on(ws: &mut Option<Ws>) -> Option<ServerMessage> {
    match ws {
        Some(ws) => next_message(ws).await,
        None => std::future::pending().await,
    }
}

/// The rejoin attempt's result, if one runs; else never.
async fn attempt_of(attempt: &mut Option<Attempt>) -> Result<(Ws, Joined), ClientError> {
    match attempt {
        Some(a) => a.await,
        None => std::future::pending().await,
    }
}

impl Io {
    fn token(&mut self, reply: Reply) -> Token {
        self.next_token += 1;
        self.replies.insert(self.next_token, reply);
        self.next_token
    }

    /// Hands the client's order to the machine.
    fn order(&mut self, machine: &mut Machine, order: Option<Order>) -> Vec<Output> {
        let (command, reply) = match order {
            // The client was dropped: leave, nobody waits.
            None => (Command::Leave, None),
            Some(Order::Leave(reply)) => (Command::Leave, Some(reply)),
            Some(Order::Publish(stream, stream_type, reply)) => {
                let command = Command::Publish(publishing(&stream, stream_type));
                self.to_publish = Some(stream);
                (command, Some(reply))
            }
            Some(Order::Unpublish(stream_type, reply)) => {
                (Command::Unpublish(stream_type), Some(reply))
            }
            Some(Order::Request(request, reply)) => (Command::Request(request), Some(reply)),
        };
        let token = reply.map(|r| self.token(r));
        machine.command(command, token, now())
    }

    /// A rejoin attempt succeeded: new connection, new media, and what was
    /// published is published again if its stream still runs.
    fn rejoined(&mut self, machine: &mut Machine, ws: Ws, joined: &Joined) -> Vec<Output> {
        self.bind = local_ip(&ws);
        self.ws = Some(ws);
        self.media = self.new_media();
        self.to_republish = std::mem::take(&mut self.kept);
        self.to_republish.retain(|_, s| !s.is_closed());
        let kinds = self
            .to_republish
            .iter()
            .map(|(t, s)| publishing(s, *t))
            .collect();
        machine.rejoined(joined, kinds, now())
    }

    fn new_media(&self) -> MediaSession {
        let mut m = MediaSession::new(
            self.bind,
            self.shared.remotes.clone(),
            self.shared.audio_out.clone(),
        );
        m.decode = self.shared.opts.decode;
        m
    }

    fn set_local(&self, stream: Option<LocalStream>) {
        *self.shared.local.lock() = stream;
    }

    /// Carries out `out` in order; what that reports back to the machine
    /// (an answer made, link counters, a failed write) is carried out too.
    async fn apply(&mut self, machine: &mut Machine, out: Vec<Output>) {
        let mut queue = VecDeque::from(out);
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Status(status) => *self.shared.status() = status,
                Output::Emit(event) => self.shared.emit(event),
                Output::Send(msg) => {
                    let Some(ws) = self.ws.as_mut() else { continue };
                    if send(ws, &msg).await.is_err() {
                        self.ws = None;
                        queue.extend(machine.connection_lost(now()));
                    }
                }
                Output::Reply(token, result) => {
                    if let Some(reply) = self.replies.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::Media(action) => {
                    let more = self.media_action(machine, action).await;
                    queue.extend(more);
                }
                Output::Rejoin { resume, role } => {
                    let shared = self.shared.clone();
                    let room = self.room.clone();
                    self.rejoin = Some(Box::pin(async move {
                        connect_and_join(&shared, &room, role, Some(resume)).await
                    }));
                }
                Output::CancelRejoin => self.rejoin = None,
                Output::Close => {
                    if let Some(mut ws) = self.ws.take() {
                        // Finish the closing handshake so the server sees
                        // a clean close, within a bound.
                        let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
                            let _ = ws.close(None).await;
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                    }
                }
                Output::Done => {}
            }
        }
    }

    async fn media_action(&mut self, machine: &mut Machine, action: MediaAction) -> Vec<Output> {
        match action {
            MediaAction::Publish(stream_type) => {
                if let Some(stream) = self.to_publish.take() {
                    self.media.publish(stream_type, stream);
                }
            }
            MediaAction::Republish => {
                for (stream_type, stream) in std::mem::take(&mut self.to_republish) {
                    self.media.publish(stream_type, stream);
                }
            }
            MediaAction::CancelPublish(stream_type) => self.media.cancel_publish(stream_type),
            MediaAction::Unpublish(stream_type) => {
                self.media.unpublish(stream_type);
                if stream_type.is_main() {
                    self.set_local(None);
                }
            }
            MediaAction::SetMuted { audio, video } => self.media.set_muted(audio, video),
            MediaAction::Answer {
                sdp,
                carries_publish,
                new_connection,
            } => {
                let answer = self
                    .media
                    .answer(sdp, carries_publish, new_connection)
                    .await;
                return machine.answered(answer);
            }
            MediaAction::StartSending(stream_type) => {
                self.media.start_sending(stream_type).await;
                if stream_type.is_main() {
                    self.set_local(self.media.published(StreamType::Main).cloned());
                }
            }
            MediaAction::SendLayers(stream_type, active) => {
                self.media.send_layers(stream_type, &active)
            }
            MediaAction::StreamRemoved(user, stream_type) => {
                self.media.stream_removed(&user, stream_type)
            }
            MediaAction::MeasureLink => {
                let counters = self.media.link_counters().await.unwrap_or_default();
                return machine.link(counters);
            }
            MediaAction::Reset => {
                let fresh = self.new_media();
                let old = std::mem::replace(&mut self.media, fresh);
                self.kept = old.close().await;
            }
            MediaAction::CloseAll => {
                self.set_local(None);
                let fresh = self.new_media();
                let old = std::mem::replace(&mut self.media, fresh);
                let published = old.close().await;
                // Devices are released: the published streams' sources end.
                let kept = std::mem::take(&mut self.kept).into_values();
                let waiting = std::mem::take(&mut self.to_republish).into_values();
                for stream in published.into_values().chain(kept).chain(waiting) {
                    stream.close();
                }
            }
        }
        Vec::new()
    }
}
