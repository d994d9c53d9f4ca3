//! The WebSocket signaling endpoint: one task per connection that reads
//! requests, answers them, relays room events and enforces the limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kaigi_proto::signal::{
    parse_client_message, ClientMessage, ErrorMessage, JoinRequest, Joined, ParseError,
    PeerLeaveReason, RoomRef, ServerMessage, StreamType,
};
use kaigi_proto::{
    usersig, ErrorCode, Role, SdkAppId, UserId, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::RateLimit;
use crate::metrics::Metrics;
use crate::negotiation::publish_error_code;
use crate::registry::{Effect, JoinError, Member, Place, SessionId, StreamKinds};
use crate::sfu::{MediaPeer, Publication};
use crate::state::{unix_now, Outbound, Shared, OUTBOX_CAPACITY};
use kaigi_rtc::PeerEvent;

/// WebSocket close codes the server uses (see `docs/protocol.md`).
pub mod close_code {
    /// After `client-banned`, or a normal close.
    pub const NORMAL: u16 = 1000;
    /// Binary frames are not part of the protocol.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Malformed message or rate limit.
    pub const POLICY: u16 = 1008;
    /// Message too large.
    pub const TOO_BIG: u16 = 1009;
    /// The server is restarting or shutting down.
    pub const RESTART: u16 = 1012;
    /// Nothing heard within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The client could not keep up with the messages sent to it.
    pub const TOO_SLOW: u16 = 4001;
    /// A WebSocket protocol violation (unmasked or reserved frames, bad
    /// opcodes, bad fragmentation).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_TEXT: u16 = 1007;
}

/// Frames larger than this are refused by the WebSocket layer itself (close
/// 1009); up to it, an over-long message gets a typed error first.
const MAX_FRAME_BYTES: usize = kaigi_proto::signal::MAX_ANSWER_BYTES + 1024;

/// How long a closing connection waits for the client's close frame, and
/// then for its last writes.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How many frames a closing connection reads and discards at most.
const CLOSE_DRAIN_FRAMES: usize = 4096;
/// Frames handed to a session's writer and not yet written; more means the
/// client does not read, and it is dropped.
const WRITE_QUEUE: usize = 256;
/// How long one write to a client may take before it is dropped as too slow.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection may stay open without being in a room: on
/// opening and after a `leave`. Pings do not extend it.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

// Messages over the protocol limit but under the frame limit get a typed error.
const _: () = assert!(kaigi_proto::signal::MAX_ANSWER_BYTES < MAX_FRAME_BYTES);

/// `GET /ws`: upgrade to a signaling session.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<axum::Extension<crate::listener::ConnectionSlot>>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Small buffers keep idle connections cheap; messages are small.
        .read_buffer_size(4 * 1024)
        // A threshold, not an allocation: frames queue until a flush.
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            let tracker = shared.tasks.clone();
            tracker.track_future(async move {
                // The connection counts against the caps until the session ends.
                let _slot = slot;
                run(socket, shared, peer).await
            })
        })
}

/// How many chat messages a session may send: 5 a second, 10 at once.
/// More are refused (`RATE_LIMITED`), the connection stays.
pub const CHAT_RATE: RateLimit = RateLimit {
    per_sec: 5,
    burst: 10,
};

/// A token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
    limit: RateLimit,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            last: Instant::now(),
            limit,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(self.limit.per_sec);
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How a session ended, which decides what its room is told.
enum End {
    /// Closed by the client, or after `leave`.
    Left,
    /// Forced out; the registry already removed it.
    Kicked,
    /// Heartbeat timeout.
    Timeout,
    /// Closed for a protocol fault.
    Fault,
}

pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) shared: Arc<Shared>,
    /// Frames for the writer task; never awaited, so no client can block
    /// its own session.
    pub(crate) out: mpsc::Sender<Message>,
    /// The read half of the socket.
    pub(crate) incoming: SplitStream<WebSocket>,
    /// Cancelled when the client is too slow (outbox or writer overflow,
    /// or a write past its deadline).
    pub(crate) dropped: CancellationToken,
    /// When the connection must be in a room by, while it is in none.
    pub(crate) join_by: Option<Instant>,
    /// The peer connection, made on the first publish or subscription.
    pub(crate) media: Option<MediaPeer>,
    /// What this session publishes, by stream type.
    pub(crate) publications: std::collections::BTreeMap<StreamType, Arc<Publication>>,
    /// The `publish` to answer once the negotiation carrying it completes,
    /// and its stream type.
    pub(crate) publish_reply: Option<(u64, StreamType)>,
    /// A `publish` that arrived while another was negotiated.
    pub(crate) queued_publish: Option<crate::negotiation::QueuedPublish>,
    /// Whether the offer in flight carries that publish.
    pub(crate) publish_offered: bool,
    /// The protocol version the client joined with.
    pub(crate) protocol: u32,
    /// Chat messages it may still send now ([`CHAT_RATE`]).
    chat_bucket: Bucket,
    /// The next offer is the first of a replaced connection.
    pub(crate) new_connection: bool,
    /// The mute states of the streams in the room, as last told to the
    /// client (a `stream-updated` the server sends by itself repeats them).
    pub(crate) mutes: std::collections::HashMap<(UserId, StreamType), (bool, bool)>,
}

/// How often the layers a client receives are chosen again.
const LAYER_CHOICE_EVERY: Duration = Duration::from_millis(250);

/// The next event of a session's peer connection; never, without one.
async fn next_media_event(media: &mut Option<MediaPeer>) -> PeerEvent {
    match media {
        Some(m) => match m.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Writes frames to the client in order, batching what is queued into one
/// flush. A write that does not finish by [`WRITE_DEADLINE`] marks the
/// session too slow and ends the writer (the socket closes when the
/// session ends).
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Message>,
    dropped: CancellationToken,
) {
    while let Some(first) = frames.recv().await {
        let mut closing = matches!(first, Message::Close(_));
        let wrote = tokio::time::timeout(WRITE_DEADLINE, async {
            sink.feed(first).await?;
            while !closing {
                let Ok(next) = frames.try_recv() else { break };
                closing = matches!(next, Message::Close(_));
                sink.feed(next).await?;
            }
            sink.flush().await
        })
        .await;
        match wrote {
            Ok(Ok(())) if !closing => {}
            Ok(_) => break,
            Err(_) => {
                debug!("a write to the client missed its deadline");
                dropped.cancel();
                break;
            }
        }
    }
}

/// The close code for a WebSocket-level read error, if the connection is
/// still there to be told.
fn read_error_close(e: &axum::Error) -> Option<(u16, ErrorCode, &'static str)> {
    let inner = std::error::Error::source(e)?;
    let ws = inner.downcast_ref::<tungstenite::Error>()?;
    match ws {
        tungstenite::Error::Capacity(_) => Some((
            close_code::TOO_BIG,
            ErrorCode::MessageTooLarge,
            "frame too large",
        )),
        tungstenite::Error::Utf8(_) => Some((
            close_code::INVALID_TEXT,
            ErrorCode::InvalidMessage,
            "text frame is not UTF-8",
        )),
        tungstenite::Error::Protocol(_) => Some((
            close_code::PROTOCOL_ERROR,
            ErrorCode::InvalidMessage,
            "WebSocket protocol violation",
        )),
        _ => None,
    }
}

async fn run(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr) {
    let (tx, mut rx) = mpsc::channel(OUTBOX_CAPACITY);
    let dropped = CancellationToken::new();
    let id = shared.open_session(tx, dropped.clone());
    let span = info_span!("session", id = %format_args!("{id:016x}"), %peer);
    let (sink, incoming) = socket.split();
    let (out, frames) = mpsc::channel(WRITE_QUEUE);
    let mut writer = tokio::spawn(write_loop(sink, frames, dropped.clone()));
    let mut s = Session {
        id,
        shared: shared.clone(),
        out,
        incoming,
        dropped: dropped.clone(),
        join_by: Some(Instant::now() + JOIN_DEADLINE),
        media: None,
        publications: Default::default(),
        publish_reply: None,
        queued_publish: None,
        publish_offered: false,
        protocol: kaigi_proto::MIN_PROTOCOL_VERSION,
        chat_bucket: Bucket::new(CHAT_RATE),
        new_connection: false,
        mutes: std::collections::HashMap::new(),
    };
    let end = async {
        debug!("connected");
        let timeout = shared.config.heartbeat_timeout;
        let mut deadline = Instant::now() + timeout;
        let mut bucket = Bucket::new(shared.config.rate_limit);
        // Layers are chosen again this often while video is received.
        let mut layers = tokio::time::interval(LAYER_CHOICE_EVERY);
        layers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let receives_video = s.media.as_ref().is_some_and(|m| m.receives_video());
            // A publisher of simulcast layers that can be told which are
            // needed (protocol 7) is told on the same tick.
            let sends_layers = s.protocol >= 7 && s.publications.values().any(|p| p.layers.len() > 1);
            let join_by = s.join_by;
            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => {
                    s.fail(ErrorCode::ServerShuttingDown, "the server is shutting down; reconnect later", close_code::RESTART).await;
                    break End::Left;
                }
                _ = dropped.cancelled() => {
                    Metrics::count(&shared.metrics.rejected, "too-slow");
                    info!("dropped: the client does not read what is sent to it");
                    s.close(close_code::TOO_SLOW, "too slow").await;
                    break End::Fault;
                }
                out = rx.recv() => match out {
                    Some(Outbound::Text(text)) => s.relay(text),
                    // A client of protocol 1 or 2 does not know `chat`.
                    Some(Outbound::Chat(text)) => if s.protocol >= 3 { s.relay(text) },
                    // A client of protocol 3 or earlier knows only `main`
                    // streams.
                    Some(Outbound::Sub(text)) => if s.protocol >= 4 { s.relay(text) },
                    Some(Outbound::Subscribe(publisher, stream_type, kinds)) => {
                        if s.protocol >= 4 || stream_type.is_main() {
                            s.subscribe(publisher, stream_type, kinds).await
                        }
                    }
                    Some(Outbound::Unsubscribe(publisher, stream_type)) => {
                        s.unsubscribe(publisher, stream_type).await
                    }
                    Some(Outbound::Moved) => {
                        info!("the room moved to another node; the client reconnects");
                        s.fail(ErrorCode::RoomMoved, "the room moved to another node of the service; reconnect and join again", close_code::RESTART).await;
                        break End::Left;
                    }
                    Some(Outbound::Blocked(b)) => {
                        if s.protocol >= 6 {
                            s.send(&ServerMessage::Blocked { audio: b.audio, video: b.video });
                        }
                    }
                    Some(Outbound::Kick(reason)) => {
                        info!(%reason, "forced out");
                        s.push(Message::Text(shared.banned_text(reason, s.protocol)));
                        s.close(close_code::NORMAL, "client-banned").await;
                        break End::Kicked;
                    }
                    None => break End::Left,
                },
                event = next_media_event(&mut s.media) => s.on_media_event(event).await,
                _ = layers.tick(), if receives_video || sends_layers => {
                    if receives_video {
                        s.allocate_layers().await;
                    }
                    if sends_layers {
                        s.tell_layers();
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    Metrics::count(&shared.metrics.rejected, "heartbeat");
                    info!("heartbeat timeout");
                    s.fail(ErrorCode::HeartbeatTimeout, format!("nothing received for {} s", timeout.as_secs()), close_code::HEARTBEAT_TIMEOUT).await;
                    break End::Timeout;
                }
                _ = tokio::time::sleep_until(join_by.unwrap_or(deadline)), if join_by.is_some() => {
                    Metrics::count(&shared.metrics.rejected, "no-join");
                    info!("no join in time");
                    s.fail(ErrorCode::HeartbeatTimeout, format!("no join within {} s", JOIN_DEADLINE.as_secs()), close_code::HEARTBEAT_TIMEOUT).await;
                    break End::Timeout;
                }
                frame = s.incoming.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => {
                            if let Some((code, name, why)) = read_error_close(&e) {
                                Metrics::count(&shared.metrics.rejected, "websocket");
                                warn!(error = %e, "bad frame");
                                s.fail(name, format!("{why}: {e}"), code).await;
                                break End::Fault;
                            }
                            break End::Left;
                        }
                        None => break End::Left,
                    };
                    deadline = Instant::now() + timeout;
                    // Every frame counts, control frames included.
                    if !matches!(frame, Message::Close(_)) && !bucket.take() {
                        Metrics::count(&shared.metrics.rejected, "rate-limited");
                        s.fail(ErrorCode::RateLimited, "too many messages", close_code::POLICY).await;
                        break End::Fault;
                    }
                    match frame {
                        Message::Text(text) => {
                            match parse_client_message(&text) {
                                Ok(msg) => s.handle(msg).await,
                                Err(e) => {
                                    let code = if matches!(e, ParseError::TooLarge(_)) { close_code::TOO_BIG } else { close_code::POLICY };
                                    Metrics::count(&shared.metrics.rejected, if code == close_code::TOO_BIG { "too-large" } else { "malformed" });
                                    warn!(error = %e, "bad message");
                                    s.send(&ServerMessage::Error(ErrorMessage::new(e.req_id(), e.code(), e.to_string())));
                                    s.close(code, "bad message").await;
                                    break End::Fault;
                                }
                            }
                        }
                        Message::Binary(_) => {
                            Metrics::count(&shared.metrics.rejected, "binary");
                            s.fail(ErrorCode::InvalidMessage, "binary frames are not part of the protocol", close_code::UNSUPPORTED_DATA).await;
                            break End::Fault;
                        }
                        Message::Close(_) => {
                            // Answer the client's close; the writer ends
                            // after it.
                            s.push(Message::Close(None));
                            break End::Left;
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
    }
    .instrument(span.clone())
    .await;
    // The writer gets a bounded time for what is queued (the close frame
    // last); a client that does not read loses it.
    // Closing the writer's queue lets it end once the queue is written.
    drop(std::mem::replace(&mut s.out, mpsc::channel(1).0));
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    for stream_type in StreamType::ALL {
        shared.remove_publication(id, stream_type);
    }
    if let Some(mut media) = s.media.take() {
        media.detach_all(id);
        media.close().await;
    }
    // Counted as open until its media is torn down.
    shared.close_session(id);
    let reason = match end {
        End::Kicked => None,
        End::Timeout => Some(PeerLeaveReason::Timeout),
        End::Left | End::Fault => Some(PeerLeaveReason::Left),
    };
    if let Some(reason) = reason {
        shared.apply(|reg| ((), reg.leave(id, reason)));
    }
    span.in_scope(|| debug!("closed"));
}

fn session_id_text(id: SessionId) -> String {
    format!("{id:016x}")
}

impl Session {
    /// Queues a frame for the writer; a full queue means the client does
    /// not read, and it is dropped.
    pub(crate) fn push(&mut self, frame: Message) {
        if self.out.try_send(frame).is_err() {
            self.dropped.cancel();
        }
    }

    pub(crate) fn send(&mut self, msg: &ServerMessage) {
        self.push(Message::Text(Utf8Bytes::from(msg.to_json())));
    }

    /// Sends a close frame, then waits (briefly, boundedly) for the
    /// client's close so that what was sent before it is not lost to a TCP
    /// reset caused by unread data.
    async fn close(&mut self, code: u16, reason: &'static str) {
        self.push(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })));
        if self.dropped.is_cancelled() {
            // It does not read: it will not answer either.
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            for _ in 0..CLOSE_DRAIN_FRAMES {
                match self.incoming.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
    }

    /// Sends a connection-level error, then closes.
    async fn fail(&mut self, name: ErrorCode, message: impl Into<String>, code: u16) {
        self.send(&ServerMessage::Error(ErrorMessage::new(
            None, name, message,
        )));
        self.close(code, "error").await;
    }

    async fn handle(&mut self, msg: ClientMessage) {
        let reply = match msg {
            ClientMessage::Ping { req_id } => Some(ServerMessage::Pong { req_id }),
            ClientMessage::Leave { req_id } => {
                let id = self.id;
                self.stop_publishing_all().await;
                self.shared
                    .apply(|reg| ((), reg.leave(id, PeerLeaveReason::Left)));
                if let Some(mut media) = self.media.take() {
                    media.detach_all(id);
                    media.close().await;
                }
                self.join_by = Some(Instant::now() + JOIN_DEADLINE);
                Some(ServerMessage::Left { req_id })
            }
            ClientMessage::Join(join) => {
                let req_id = join.req_id;
                let joined = match self.verify_join(&join) {
                    Ok(v) => {
                        let placed = match self.resume_allowed(&join).await {
                            Ok(()) => match self.grant_still_valid(&v).await {
                                Ok(()) => self.place(v.app, &v.room).await,
                                Err(e) => Err(e),
                            },
                            Err(e) => Err(e),
                        };
                        placed.and_then(|()| self.join(join, v))
                    }
                    Err(e) => Err(e),
                };
                Some(match joined {
                    Ok(j) => {
                        self.join_by = None;
                        self.shared.metrics.joins.inc();
                        ServerMessage::Joined(j)
                    }
                    Err(mut e) => {
                        e.req_id = Some(req_id);
                        Metrics::count(&self.shared.metrics.join_failures, &e.name.to_string());
                        info!(code = e.code, message = %e.message, "join refused");
                        ServerMessage::Error(e)
                    }
                })
            }
            msg if self.protocol < 4 && msg.stream_type() == Some(StreamType::Sub) => {
                Some(ServerMessage::Error(ErrorMessage::new(
                    Some(msg.req_id()),
                    ErrorCode::InvalidMessage,
                    format!(
                        "`sub` streams need protocol 4; this session joined with {}",
                        self.protocol
                    ),
                )))
            }
            ClientMessage::Publish {
                req_id,
                stream_type,
                audio,
                video,
                simulcast,
            } => self
                .publish(
                    req_id,
                    stream_type,
                    StreamKinds { audio, video },
                    &simulcast,
                )
                .await
                .err()
                .map(|mut e| {
                    e.req_id = Some(req_id);
                    ServerMessage::Error(e)
                }),
            ClientMessage::Unpublish {
                req_id,
                stream_type,
            } => {
                self.stop_publishing(stream_type).await;
                Some(ServerMessage::Unpublished { req_id })
            }
            ClientMessage::Mute {
                req_id,
                stream_type,
                audio,
                video,
            } => {
                let id = self.id;
                let muted = self
                    .shared
                    .try_apply(|reg| reg.mute(id, stream_type, audio, video).map(|fx| ((), fx)));
                Some(match muted {
                    Ok(()) => ServerMessage::Muted { req_id },
                    Err(e) => ServerMessage::Error(ErrorMessage::new(
                        Some(req_id),
                        publish_error_code(e),
                        e.to_string(),
                    )),
                })
            }
            ClientMessage::Subscribe {
                req_id,
                user_id,
                stream_type,
                audio,
                video,
            } => Some(self.request_subscription(
                req_id,
                &user_id,
                stream_type,
                Some(StreamKinds { audio, video }),
            )),
            ClientMessage::SetVideoSize {
                req_id,
                user_id,
                stream_type,
                size,
            } => Some(match UserId::new(user_id) {
                Ok(user) => {
                    if let Ok(media) = self.media().await {
                        media.set_video_size(user.clone(), stream_type, size);
                    }
                    ServerMessage::VideoSizeSet {
                        req_id,
                        user_id: user,
                        stream_type,
                    }
                }
                Err(e) => ServerMessage::Error(ErrorMessage::new(
                    Some(req_id),
                    ErrorCode::InvalidParameter,
                    e.to_string(),
                )),
            }),
            ClientMessage::Unsubscribe {
                req_id,
                user_id,
                stream_type,
            } => Some(self.request_subscription(req_id, &user_id, stream_type, None)),
            ClientMessage::Chat { req_id, text } => Some(self.chat(req_id, text)),
            ClientMessage::SwitchRole { req_id, role } => {
                let id = self.id;
                let switched = self
                    .shared
                    .try_apply(|reg| reg.switch_role(id, role).map(|fx| ((), fx)));
                Some(match switched {
                    Ok(()) => {
                        if role == Role::Audience {
                            // The registry already told the others.
                            for stream_type in StreamType::ALL {
                                if self.publications.remove(&stream_type).is_some() {
                                    self.shared.remove_publication(id, stream_type);
                                    if let Some(media) = self.media.as_mut() {
                                        media.retire_receiving(stream_type);
                                    }
                                }
                            }
                        }
                        info!(%role, "role switched");
                        ServerMessage::RoleSwitched { req_id, role }
                    }
                    Err(e) => ServerMessage::Error(ErrorMessage::new(
                        Some(req_id),
                        publish_error_code(e),
                        e.to_string(),
                    )),
                })
            }
            ClientMessage::Answer { sdp } => self.answer(sdp).await.err().map(ServerMessage::Error),
        };
        if let Some(reply) = reply {
            self.send(&reply);
        }
    }

    /// `chat`: checked, limited, and sent to the others in the room (those
    /// that speak protocol 3); the reply says when.
    fn chat(&mut self, req_id: u64, text: String) -> ServerMessage {
        let refuse = |code: ErrorCode, message: String| {
            ServerMessage::Error(ErrorMessage::new(Some(req_id), code, message))
        };
        if self.protocol < 3 {
            return refuse(
                ErrorCode::InvalidMessage,
                format!(
                    "chat needs protocol 3; this session joined with {}",
                    self.protocol
                ),
            );
        }
        if let Err(e) = kaigi_proto::signal::check_chat_text(&text) {
            return refuse(ErrorCode::InvalidParameter, e);
        }
        if !self.chat_bucket.take() {
            Metrics::count(&self.shared.metrics.rejected, "chat-rate");
            return refuse(
                ErrorCode::RateLimited,
                format!("at most {} chat messages a second", CHAT_RATE.per_sec),
            );
        }
        let id = self.id;
        let sent_at = kaigi_proto::unix_now_ms();
        let sent = self.shared.apply(|reg| match reg.chat_audience(id) {
            Some((user_id, to)) => (
                true,
                vec![Effect::Chat {
                    to,
                    msg: ServerMessage::Chat {
                        user_id,
                        text,
                        sent_at,
                    },
                }],
            ),
            None => (false, Vec::new()),
        });
        if !sent {
            return refuse(ErrorCode::NotInRoom, "join a room first".into());
        }
        ServerMessage::ChatSent { req_id, sent_at }
    }

    /// `subscribe` (with the kinds wanted) or `unsubscribe` (`None`): the
    /// registry checks it, and its effect reaches this session's own outbox
    /// like any other subscription change.
    fn request_subscription(
        &mut self,
        req_id: u64,
        user_id: &str,
        stream_type: StreamType,
        kinds: Option<StreamKinds>,
    ) -> ServerMessage {
        let user = match UserId::new(user_id) {
            Ok(u) => u,
            Err(e) => {
                return ServerMessage::Error(ErrorMessage::new(
                    Some(req_id),
                    ErrorCode::InvalidParameter,
                    e.to_string(),
                ))
            }
        };
        let id = self.id;
        let done = self.shared.try_apply(|reg| match kinds {
            Some(k) => reg.subscribe(id, &user, stream_type, k),
            None => reg
                .unsubscribe(id, &user, stream_type)
                .map(|fx| (StreamKinds::NONE, fx)),
        });
        match (done, kinds) {
            (Ok(got), Some(_)) => ServerMessage::Subscribed {
                req_id,
                user_id: user,
                stream_type,
                audio: got.audio,
                video: got.video,
            },
            (Ok(_), None) => ServerMessage::Unsubscribed {
                req_id,
                user_id: user,
                stream_type,
            },
            (Err(e), _) => ServerMessage::Error(ErrorMessage::new(
                Some(req_id),
                publish_error_code(e),
                e.to_string(),
            )),
        }
    }

    /// In a service of several nodes, the room's node: this one (the room
    /// is placed here, or was), or another, which the client is sent to
    /// (`ROOM_ELSEWHERE` with `redirect`).
    async fn place(&self, app: SdkAppId, room: &kaigi_proto::RoomId) -> Result<(), ErrorMessage> {
        let Some(cluster) = self.shared.cluster.get() else {
            return Ok(());
        };
        let unavailable = |e: crate::cluster::ClusterError| {
            warn!(error = %e, %room, "a room could not be placed");
            ErrorMessage::new(
                None,
                ErrorCode::ServiceUnavailable,
                format!("the service cannot place the room now ({e}); try again shortly"),
            )
        };
        let owner = cluster.place(app, room).await.map_err(unavailable)?;
        if owner.node_id == cluster.node_id() {
            return Ok(());
        }
        let url = cluster
            .advertised(&owner.node_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                unavailable(crate::cluster::ClusterError::Config(format!(
                    "node {} holds the room but did not say where it is",
                    owner.node_id
                )))
            })?;
        self.shared.metrics.redirected.inc();
        info!(%room, node = %owner.node_id, %url, "the room is on another node: redirected");
        Err(ErrorMessage {
            redirect: Some(url.clone()),
            ..ErrorMessage::new(
                None,
                ErrorCode::RoomElsewhere,
                format!("the room is on another node of the service: join at {url}"),
            )
        })
    }

    /// In a service, whether the session a join resumes was forced out on
    /// any node (each remembers its own too).
    async fn resume_allowed(&self, j: &JoinRequest) -> Result<(), ErrorMessage> {
        let (Some(cluster), Some(resume)) = (
            self.shared.cluster.get(),
            j.resume
                .as_deref()
                .and_then(|r| u64::from_str_radix(r, 16).ok()),
        ) else {
            return Ok(());
        };
        match cluster.kicked(resume).await {
            Ok(Some(reason)) => Err(ErrorMessage {
                kick_reason: Some(reason),
                ..ErrorMessage::new(None, ErrorCode::SessionBanned, reason.message())
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(ErrorMessage::new(
                None,
                ErrorCode::ServiceUnavailable,
                format!(
                    "the service cannot check the resumed session now ({e}); try again shortly"
                ),
            )),
        }
    }

    /// Whether the invite a granted UserSig came from still stands (it
    /// was not revoked, at whichever node).
    async fn grant_still_valid(&self, v: &Verified) -> Result<(), ErrorMessage> {
        let Some(sig) = &v.granted_sig else {
            return Ok(());
        };
        match crate::invites::revoked(&self.shared, sig).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(ErrorMessage::new(
                None,
                ErrorCode::RoomNotGranted,
                "the invite this UserSig came from was revoked",
            )),
            Err(e) => Err(ErrorMessage::new(
                None,
                ErrorCode::ServiceUnavailable,
                format!("{e}; try again shortly"),
            )),
        }
    }

    /// The checks of `join` (protocol, user, room, app, UserSig, grant):
    /// done before a room is placed for it.
    fn verify_join(&self, j: &JoinRequest) -> Result<Verified, ErrorMessage> {
        let invalid = |m: String| ErrorMessage::new(None, ErrorCode::InvalidParameter, m);
        let protocol = j.protocol.unwrap_or(MIN_PROTOCOL_VERSION);
        let newest = self.shared.config.max_protocol.min(PROTOCOL_VERSION);
        if !(MIN_PROTOCOL_VERSION..=newest).contains(&protocol) {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::UnsupportedProtocol,
                format!(
                    "this server speaks protocols {MIN_PROTOCOL_VERSION} to {newest}, not {protocol}"
                ),
            ));
        }
        let user = UserId::new(j.user_id.clone()).map_err(|e| invalid(e.to_string()))?;
        // Its UserSig authorizes admin calls; it is no participant.
        if user.as_str() == kaigi_proto::ADMIN_IDENTIFIER {
            return Err(invalid(format!(
                "{} is the admin identity and cannot join rooms",
                kaigi_proto::ADMIN_IDENTIFIER
            )));
        }
        let room = j.room.room().map_err(|e| invalid(e.to_string()))?;
        let app = SdkAppId(j.sdk_app_id);
        let key = self.shared.app_keys.get(&app).ok_or_else(|| {
            ErrorMessage::new(
                None,
                ErrorCode::UnknownSdkAppId,
                format!("this server has no SdkAppId {app}"),
            )
        })?;
        let claims = usersig::verify(&j.user_sig, app, key, user.as_str(), unix_now())
            .map_err(|e| ErrorMessage::new(None, ErrorCode::from(&e), e.to_string()))?;
        // A UserSig carrying a room grant (a privateMapKey, as invites give)
        // enters only that room, only while the grant and its invite last;
        // so does a separate privateMapKey (protocol 6), and an app may
        // require one of the two.
        let not_granted = |m: String| ErrorMessage::new(None, ErrorCode::RoomNotGranted, m);
        let mut granted_sig = None;
        let mut granted = false;
        if let Some(grant) = kaigi_proto::grant::from_claims(&claims) {
            if !grant.admits(app, user.as_str(), &room, unix_now()) {
                return Err(not_granted(format!(
                    "the UserSig grants room {} until unix time {}, not this room now",
                    grant.room, grant.expires_at
                )));
            }
            granted_sig = usersig::decode(&j.user_sig).ok().map(|s| s.sig);
            granted = true;
        }
        if let Some(ticket) = &j.private_map_key {
            let ticket_claims = usersig::verify(ticket, app, key, user.as_str(), unix_now())
                .map_err(|e| not_granted(format!("the privateMapKey: {e}")))?;
            let grant = kaigi_proto::grant::from_claims(&ticket_claims)
                .ok_or_else(|| not_granted("the privateMapKey carries no room grant".into()))?;
            if !grant.admits(app, user.as_str(), &room, unix_now()) {
                return Err(not_granted(format!(
                    "the privateMapKey grants room {} until unix time {}, not this room now",
                    grant.room, grant.expires_at
                )));
            }
            granted = true;
        }
        if !granted && self.shared.config.require_room_grant.contains(&app) {
            return Err(not_granted(format!(
                "app {app} lets users enter a room only with a room grant (privateMapKey) from its backend"
            )));
        }
        Ok(Verified {
            protocol,
            user,
            room,
            app,
            granted_sig,
        })
    }

    fn join(&mut self, j: JoinRequest, v: Verified) -> Result<Joined, ErrorMessage> {
        let Verified {
            protocol,
            user,
            room,
            app,
            ..
        } = v;
        let resume = j
            .resume
            .as_deref()
            .and_then(|r| u64::from_str_radix(r, 16).ok());
        let id = self.id;
        let place = Place {
            app,
            room: room.clone(),
            user: user.clone(),
        };
        let member = Member {
            role: j.role,
            auto_subscribe: j.auto_subscribe,
        };
        let now = unix_now();
        let outcome = self
            .shared
            .try_apply(|reg| reg.join(id, place, member, resume, now));
        let joined = outcome.map_err(|e| match e {
            JoinError::AlreadyInRoom(_) => {
                ErrorMessage::new(None, ErrorCode::AlreadyInRoom, e.to_string())
            }
            JoinError::ResumeBanned(reason) => ErrorMessage {
                kick_reason: Some(reason),
                ..ErrorMessage::new(None, ErrorCode::SessionBanned, reason.message())
            },
        })?;
        self.protocol = protocol;
        info!(%app, %room, %user, role = %j.role, protocol, replaced = joined.replaced.is_some(), "joined");
        let timeout = self.shared.config.heartbeat_timeout;
        Ok(Joined {
            req_id: j.req_id,
            session_id: session_id_text(id),
            room: RoomRef::from(&room),
            role: j.role,
            users: joined.users,
            heartbeat_interval_ms: heartbeat_interval(timeout).as_millis() as u64,
            heartbeat_timeout_ms: timeout.as_millis() as u64,
        })
    }
}

/// A `join` that passed its checks.
struct Verified {
    protocol: u32,
    user: UserId,
    room: kaigi_proto::RoomId,
    app: SdkAppId,
    /// The `TLS.sig` of a UserSig carrying a room grant: whether the
    /// invite it came from was revoked is asked next.
    granted_sig: Option<String>,
}

/// How often clients should ping: a quarter of the timeout, at most 5 s.
pub fn heartbeat_interval(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let mut b = Bucket::new(RateLimit {
            per_sec: 1,
            burst: 3,
        });
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[test]
    fn heartbeat_interval_is_bounded() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }
}
