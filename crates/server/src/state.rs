//! State shared by every connection and request: the registry, the open
//! sessions' outboxes, and the one place registry effects become I/O.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::extract::ws::Utf8Bytes;
use kaigi_proto::signal::{ServerMessage, StreamType};
use kaigi_proto::{KickReason, SdkAppId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{Effect, Registry, SessionId, StreamKinds};
use crate::sfu::Publication;

/// How many messages may wait for a slow client before it is dropped.
/// Large enough for a burst of joins into a 1000-user room; the channel
/// allocates as it fills, so idle sessions do not pay for it.
pub const OUTBOX_CAPACITY: usize = 2048;

/// What a session's connection task is asked to send.
#[derive(Debug)]
pub enum Outbound {
    /// A serialized server message.
    Text(Utf8Bytes),
    /// Send `client-banned` with this reason, then close.
    Kick(KickReason),
    /// A serialized `chat` message, for sessions of protocol 3 or later.
    Chat(Utf8Bytes),
    /// A serialized message about a `sub` stream, for sessions of
    /// protocol 4 or later.
    Sub(Utf8Bytes),
    /// Start receiving (these kinds of) this publisher's stream of this type.
    Subscribe(SessionId, StreamType, StreamKinds),
    /// Stop receiving this publisher's stream of this type.
    Unsubscribe(SessionId, StreamType),
    /// The room moved to another node: say `ROOM_MOVED`, then close.
    Moved,
    /// Tell the session what of its media is blocked (protocol 6+).
    Blocked(crate::registry::Blocked),
}

struct SessionHandle {
    outbox: mpsc::Sender<Outbound>,
    /// Cancelled when the session must be dropped (its outbox overflowed).
    drop: CancellationToken,
}

/// The server's shared state.
pub struct Shared {
    /// The configuration it runs with.
    pub config: Config,
    /// App id → secret key.
    pub app_keys: HashMap<SdkAppId, String>,
    registry: Mutex<Registry>,
    sessions: Mutex<HashMap<SessionId, SessionHandle>>,
    session_count: watch::Sender<usize>,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// `client-banned` per reason, before protocol 6 and from it.
    banned_text: [[Utf8Bytes; 3]; 2],
    publications: Mutex<HashMap<(SessionId, StreamType), Arc<Publication>>>,
    /// The UDP and TCP ports all media goes through.
    pub media_ports: Arc<kaigi_rtc::MediaPorts>,
    /// The invites made through the admin API.
    pub invites: crate::invites::Invites,
    /// Admin calls per app and action (TRTC's 20 a second).
    pub admin_limits: crate::admin::CallLimiter,
    /// The apps' room webhooks.
    pub webhooks: crate::webhooks::Webhooks,
    /// This node's membership in a service of several nodes, if it is in
    /// one (set once, as the server starts).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

pub use kaigi_proto::unix_now;

impl Shared {
    /// State for a server with this config, its media on `media_ports`.
    pub fn new(config: Config, media_ports: Arc<kaigi_rtc::MediaPorts>) -> Arc<Self> {
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let webhooks = crate::webhooks::Webhooks::start(
            &config.webhooks,
            config.webhook_policy,
            metrics.webhooks.clone(),
            shutdown.clone(),
        );
        Arc::new(Shared {
            webhooks,
            media_ports,
            invites: Default::default(),
            admin_limits: Default::default(),
            app_keys: config.app_keys(),
            config,
            registry: Mutex::new(Registry::new()),
            sessions: Mutex::new(HashMap::new()),
            session_count: watch::Sender::new(0),
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
            banned_text: [5, 6]
                .map(|p| KickReason::ALL.map(|r| ServerMessage::banned(r, p).to_json().into())),
            publications: Mutex::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// The sessions in a room (to move them when the room leaves this
    /// node).
    pub fn sessions_in(&self, app: SdkAppId, room: &kaigi_proto::RoomId) -> Vec<SessionId> {
        self.read(|reg| {
            reg.room(app, room)
                .map(|r| r.participants().iter().map(|(_, p)| p.session).collect())
                .unwrap_or_default()
        })
    }

    /// Asks a session to go (its room moved to another node): it is told
    /// `ROOM_MOVED` and closed, and reconnects.
    pub fn move_session(&self, session: SessionId) {
        if let Some(h) = self.sessions.lock().get(&session) {
            if h.outbox.try_send(Outbound::Moved).is_err() {
                h.drop.cancel();
            }
        }
    }

    /// Registers a new session's outbox and returns its id.
    pub fn open_session(
        &self,
        outbox: mpsc::Sender<Outbound>,
        drop: CancellationToken,
    ) -> SessionId {
        let mut sessions = self.sessions.lock();
        // Random, so that nobody can guess another client's id to `resume`
        // with; unique among the open sessions.
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(id, SessionHandle { outbox, drop });
        self.session_count.send_replace(sessions.len());
        self.metrics.connections.inc();
        id
    }

    /// Unregisters a session; its place in a room is left by the caller.
    pub fn close_session(&self, id: SessionId) {
        let mut sessions = self.sessions.lock();
        if sessions.remove(&id).is_some() {
            self.session_count.send_replace(sessions.len());
            self.metrics.connections.dec();
        }
    }

    /// Runs an operation on the registry and carries out its effects while
    /// still holding the lock, so every session sees effects in the order
    /// the registry made them.
    pub fn apply<T>(&self, op: impl FnOnce(&mut Registry) -> (T, Vec<Effect>)) -> T {
        let mut reg = self.registry.lock();
        let (out, effects) = op(&mut reg);
        if !effects.is_empty() {
            self.dispatch(effects);
        }
        self.webhooks.emit(reg.take_events());
        let (rooms, participants) = reg.counts();
        self.metrics.rooms.set(rooms as i64);
        self.metrics.participants.set(participants as i64);
        out
    }

    /// Runs a registry operation that may be refused: its effects are
    /// dispatched when it succeeds; its error is returned as it is, with
    /// nothing changed.
    pub fn try_apply<T, E>(
        &self,
        op: impl FnOnce(&mut Registry) -> Result<(T, Vec<Effect>), E>,
    ) -> Result<T, E> {
        self.apply(|reg| match op(reg) {
            Ok((out, effects)) => (Ok(out), effects),
            Err(e) => (Err(e), Vec::new()),
        })
    }

    /// Reads the registry.
    pub fn read<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(&self.registry.lock())
    }

    fn dispatch(&self, effects: Vec<Effect>) {
        let sessions = self.sessions.lock();
        let deliver = |to: SessionId, msg: Outbound| {
            if let Some(h) = sessions.get(&to) {
                if h.outbox.try_send(msg).is_err() {
                    // Too slow to keep up (or already closing): drop it
                    // rather than let its backlog grow without bound.
                    h.drop.cancel();
                }
            }
        };
        for effect in effects {
            match effect {
                Effect::Broadcast { to, msg } => {
                    let sub = msg.stream_type() == Some(StreamType::Sub);
                    let text: Utf8Bytes = msg.to_json().into();
                    for s in to {
                        let text = text.clone();
                        deliver(
                            s,
                            if sub {
                                Outbound::Sub(text)
                            } else {
                                Outbound::Text(text)
                            },
                        );
                    }
                }
                Effect::Chat { to, msg } => {
                    let text: Utf8Bytes = msg.to_json().into();
                    for s in to {
                        deliver(s, Outbound::Chat(text.clone()));
                    }
                }
                Effect::Subscribe {
                    subscriber,
                    publisher,
                    stream_type,
                    kinds,
                } => {
                    deliver(
                        subscriber,
                        Outbound::Subscribe(publisher, stream_type, kinds),
                    );
                }
                Effect::Unsubscribe {
                    subscriber,
                    publisher,
                    stream_type,
                } => {
                    deliver(subscriber, Outbound::Unsubscribe(publisher, stream_type));
                }
                Effect::Block { session, blocked } => {
                    for t in StreamType::ALL {
                        if let Some(p) = self.publications.lock().get(&(session, t)) {
                            p.set_blocked(blocked.audio, blocked.video);
                        }
                    }
                    deliver(session, Outbound::Blocked(blocked));
                }
                Effect::Kick { session, reason } => {
                    Metrics::count(&self.metrics.kicks, reason.as_str());
                    if let Some(c) = self.cluster.get().cloned() {
                        tokio::spawn(async move {
                            c.remember_kick(session, reason, crate::registry::KICKED_MEMORY_SECS)
                                .await
                        });
                    }
                    deliver(session, Outbound::Kick(reason));
                }
            }
        }
    }

    /// The serialized `client-banned` message for a reason, for a session
    /// of `protocol`.
    pub fn banned_text(&self, reason: KickReason, protocol: u32) -> Utf8Bytes {
        let i = KickReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.banned_text[usize::from(protocol >= 6)][i].clone()
    }

    /// Registers a session's publication (before the registry announces it).
    pub fn add_publication(&self, p: Arc<Publication>) {
        self.publications
            .lock()
            .insert((p.session, p.stream_type), p);
    }

    /// A session's publication of a stream type.
    pub fn publication(
        &self,
        session: SessionId,
        stream_type: StreamType,
    ) -> Option<Arc<Publication>> {
        self.publications
            .lock()
            .get(&(session, stream_type))
            .cloned()
    }

    /// Removes and closes a session's publication of a stream type.
    pub fn remove_publication(&self, session: SessionId, stream_type: StreamType) {
        if let Some(p) = self.publications.lock().remove(&(session, stream_type)) {
            p.close();
        }
    }

    /// The number of open sessions.
    pub fn session_count(&self) -> usize {
        *self.session_count.borrow()
    }

    /// Watches the number of open sessions (every open and close).
    pub fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.session_count.subscribe()
    }
}
