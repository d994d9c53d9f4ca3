//! Several `kaigi-server` nodes as one service, on Redis: each node
//! announces itself and its load; a room lives on exactly one node, whose
//! ownership is a lease in Redis that the owner renews, fenced by a token
//! that only grows. Nothing here runs without `--redis`: a single node
//! with no Redis is the default and keeps all its state in memory.
//!
//! Keys (all under the configured prefix, `kaigi:` by default):
//! - `nodes`: a hash, node id → its [`NodeStatus`] as JSON (the last one
//!   it wrote);
//! - `alive:{node}`: present while the node is alive (it sets the key
//!   with a time to live of [`ClusterConfig::lease`] every
//!   [`ClusterConfig::heartbeat`]);
//! - `room:{app}:{n|s}:{room}`: `{node}|{token}`, the room's owner, with a
//!   time to live of the lease;
//! - `kicked:{session}`: why a session was forced out, for as long as
//!   it may not `resume`;
//! - `fence`: the counter every placement's token is taken from;
//! - `placed:{node}`: rooms placed on the node in the last two heartbeats
//!   (counted as its load until its own report has their people);
//! - `rpc:{node}`: the pub/sub channel a node takes requests (and replies
//!   to its own requests) on, see [`Cluster::call`];
//! - `invite:{code}`, `invites:{app}`, `issued:{sig}`: the service's
//!   invites (see [`crate::invite_store`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaigi_proto::{KickReason, RoomId, SdkAppId};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a node joins a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub redis: String,
    /// This node's id: letters, digits, `-`, `_` and `.`.
    pub node_id: String,
    /// Where clients reach this node's signaling (`ws://…/ws` or
    /// `wss://…/ws`).
    pub advertise: String,
    /// The prefix of every key (several services may share one Redis).
    pub prefix: String,
    /// How long a node counts as alive, and a room's lease lasts, without
    /// being renewed.
    pub lease: Duration,
    /// How often the node renews its presence and its leases.
    pub heartbeat: Duration,
}

impl ClusterConfig {
    /// A node `node_id` reached at `advertise`, on the Redis at `redis`,
    /// with the default prefix, a 3 s lease and a 1 s heartbeat: a node
    /// that dies loses its rooms within 3 s.
    pub fn new(redis: &str, node_id: &str, advertise: &str) -> Self {
        ClusterConfig {
            redis: redis.to_owned(),
            node_id: node_id.to_owned(),
            advertise: advertise.to_owned(),
            prefix: "kaigi:".into(),
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
        }
    }

    /// Why the configuration cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad(format!(
                "a node id is 1 to 64 letters, digits, '-', '_' or '.', not {:?}",
                self.node_id
            ));
        }
        if !(self.advertise.starts_with("ws://") || self.advertise.starts_with("wss://")) {
            return bad(format!(
                "the advertised address is a ws:// or wss:// URL, not {:?}",
                self.advertise
            ));
        }
        if self.heartbeat * 2 > self.lease {
            return bad("the lease must last at least two heartbeats".into());
        }
        Ok(())
    }
}

/// A random node id, for a node started without one.
pub fn generated_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

/// What went wrong with the service.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is unusable.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No node is alive to place a room on.
    #[error("no node of the service is alive")]
    NoNodes,
    /// A request to another node failed.
    #[error("a request to another node: {0}")]
    Rpc(String),
}

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Its id.
    pub node_id: String,
    /// Where clients reach its signaling.
    pub advertise: String,
    /// Participants in its rooms.
    pub participants: u64,
    /// Rooms it owns.
    pub rooms: u64,
    /// Its process's CPU use over the last heartbeat, in % of one core.
    pub cpu: f64,
    /// When it wrote this (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Rooms placed on it in the last two heartbeats (counted by the
    /// service, not reported by the node).
    #[serde(skip)]
    pub recent: u64,
}

/// A node's load, as placement compares it: participants first, then CPU
/// (each 10 % of a core counts as one participant), and each room placed
/// on it since its last reports as one more participant (rooms placed in
/// a burst, before any report, would otherwise all go to one node).
fn load_score(n: &NodeStatus) -> f64 {
    n.participants as f64 + n.cpu / 10.0 + n.recent as f64
}

/// What this node reports about itself each heartbeat: participants and
/// rooms.
pub type LoadFn = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Whether this node has anyone in a room (a lease of an empty room is
/// given up).
pub type RoomsFn = Arc<dyn Fn(SdkAppId, &RoomId) -> bool + Send + Sync>;

/// Who owns a room: a node, and the token of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning node's id.
    pub node_id: String,
    /// The lease's fencing token: a later placement always has a larger one.
    pub token: u64,
}

impl Owner {
    fn parse(v: &str) -> Option<Owner> {
        let (node, token) = v.rsplit_once('|')?;
        Some(Owner {
            node_id: node.to_owned(),
            token: token.parse().ok()?,
        })
    }

    fn value(&self) -> String {
        format!("{}|{}", self.node_id, self.token)
    }
}

/// Sets KEYS[1] to `ARGV[1]|INCR(KEYS[2])` with a time to live of ARGV[2]
/// ms unless it is set; returns what it holds. A room it places is noted
/// in the node's recent placements KEYS[3] (a sorted set by Redis's
/// clock, trimmed to the last ARGV[3] ms), which placement counts as load
/// until the node's own report has the room's people in it.
const PLACE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
local t = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. '|' .. t
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ms - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[3], ms, KEYS[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return v";

/// Extends KEYS[1]'s time to live to ARGV[2] ms if it still holds ARGV[1]
/// (1); writes it back if it is gone (2: Redis restarted empty, or the
/// lease ran out while Redis was out of reach and nobody took the room),
/// raising the fence KEYS[2] to the token ARGV[3] so later placements
/// still get larger ones; 0 if another node owns the room now.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if f < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
return 2";

/// Deletes KEYS[1] if it still holds ARGV[1].
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A lease this node lost (another node owns the room now, or it expired
/// while Redis could not be reached): the room must leave this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLease {
    /// The room's app.
    pub app: SdkAppId,
    /// The room.
    pub room: RoomId,
    /// The token it held.
    pub token: u64,
}

#[derive(Default)]
struct Held {
    /// Rooms this node owns, their lease tokens, and since when.
    leases: HashMap<(SdkAppId, RoomId), u64>,
    /// When each lease was taken up (a room just placed has nobody in it
    /// yet: it is not given up for a lease's time).
    adopted: HashMap<(SdkAppId, RoomId), Instant>,
    /// When Redis last answered a heartbeat.
    last_ok: Option<Instant>,
    /// The last heartbeat's round trip to Redis.
    latency: Option<Duration>,
}

/// What a node does with a request from another: the request's body in,
/// the reply's out.
pub type RpcHandler = Arc<
    dyn Fn(
            serde_json::Value,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send>>
        + Send
        + Sync,
>;

/// A request or reply between nodes, on the receiver's `rpc:` channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Pairs a reply with its request.
    id: u64,
    /// The sender's node id (where a request's reply goes).
    from: String,
    /// Whether this is a reply.
    reply: bool,
    body: serde_json::Value,
}

/// The most requests waiting for replies at once.
const MAX_PENDING_CALLS: usize = 10_000;

/// This node's membership in the service. See the module doc.
pub struct Cluster {
    config: ClusterConfig,
    client: redis::Client,
    pub(crate) redis: ConnectionManager,
    /// Requests sent to other nodes, waiting for their replies.
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<serde_json::Value>>>,
    next_call: std::sync::atomic::AtomicU64,
    rpc: Mutex<Option<RpcHandler>>,
    load: LoadFn,
    rooms: Mutex<Option<RoomsFn>>,
    held: Mutex<Held>,
    /// Set once the node has left the service (it is stopping).
    withdrawn: std::sync::atomic::AtomicBool,
    /// Rooms this node placed.
    placed: std::sync::atomic::AtomicU64,
    lost: mpsc::UnboundedSender<LostLease>,
    place: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl Cluster {
    /// Connects to Redis (failing if it cannot be reached now) and
    /// returns the node and the receiver of the leases it loses; call
    /// [`Cluster::run`] to announce it and keep its leases.
    pub async fn connect(
        config: ClusterConfig,
        load: LoadFn,
    ) -> Result<(Arc<Cluster>, mpsc::UnboundedReceiver<LostLease>), ClusterError> {
        config.check()?;
        let client = redis::Client::open(config.redis.as_str())?;
        // Every command answers within the lease's time or counts as
        // failed; reconnection is retried for ever, backing off to a
        // heartbeat.
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.heartbeat))
            .set_response_timeout(Some(config.heartbeat))
            .set_max_delay(config.heartbeat)
            .set_number_of_retries(usize::MAX);
        let redis = client
            .get_connection_manager_with_config(manager_config)
            .await?;
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            config,
            client,
            redis,
            pending: Mutex::new(HashMap::new()),
            next_call: std::sync::atomic::AtomicU64::new(1),
            rpc: Mutex::new(None),
            load,
            rooms: Mutex::new(None),
            held: Mutex::new(Held::default()),
            withdrawn: std::sync::atomic::AtomicBool::new(false),
            placed: std::sync::atomic::AtomicU64::new(0),
            lost,
            place: redis::Script::new(PLACE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        });
        info!(node = %cluster.config.node_id, redis = %cluster.config.redis, "joined the service");
        Ok((cluster, lost_rx))
    }

    /// Carries out other nodes' requests with `handler` (see
    /// [`Cluster::call`]).
    pub fn serve_rpc(&self, handler: RpcHandler) {
        *self.rpc.lock() = Some(handler);
    }

    /// Asks node `node` to carry out `body` (its [`Cluster::serve_rpc`]
    /// handler) and waits for its reply, at most `timeout`.
    pub async fn call(
        &self,
        node: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClusterError> {
        let id = self
            .next_call
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING_CALLS {
                return Err(ClusterError::Rpc(
                    "too many requests to other nodes at once".into(),
                ));
            }
            pending.insert(id, tx);
        }
        let envelope = Envelope {
            id,
            from: self.config.node_id.clone(),
            reply: false,
            body,
        };
        let sent = self.publish(node, &envelope).await;
        let result = match sent {
            Ok(0) => Err(ClusterError::Rpc(format!("node {node} is not listening"))),
            Ok(_) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(ClusterError::Rpc("the reply was lost".into())),
                Err(_) => Err(ClusterError::Rpc(format!(
                    "node {node} did not answer within {} ms",
                    timeout.as_millis()
                ))),
            },
            Err(e) => Err(e),
        };
        self.pending.lock().remove(&id);
        result
    }

    /// Publishes `envelope` on `node`'s channel; how many received it.
    async fn publish(&self, node: &str, envelope: &Envelope) -> Result<i64, ClusterError> {
        let mut c = self.redis.clone();
        let text = serde_json::to_string(envelope).unwrap_or_default();
        Ok(redis::cmd("PUBLISH")
            .arg(self.key(&format!("rpc:{node}")))
            .arg(text)
            .query_async(&mut c)
            .await?)
    }

    /// Listens on this node's channel until `stop`: requests are carried
    /// out (each on a task of its own) and answered, replies reach their
    /// callers. A dropped subscription is made again after a heartbeat.
    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        use futures_util::StreamExt;
        let channel = self.key(&format!("rpc:{}", self.config.node_id));
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                s = subscribed => s,
            };
            match pubsub {
                Ok(pubsub) => {
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            _ = stop.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(msg) = msg else { break };
                        match serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) {
                            Ok(e) => self.clone().received(e),
                            Err(e) => warn!(error = %e, "an unreadable message between nodes"),
                        }
                    }
                    debug!("the subscription to other nodes' requests dropped");
                }
                Err(e) => debug!(error = %e, "subscribing to other nodes' requests"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.heartbeat) => {}
            }
        }
    }

    fn received(self: Arc<Self>, e: Envelope) {
        if e.reply {
            if let Some(tx) = self.pending.lock().remove(&e.id) {
                let _ = tx.send(e.body);
            }
            return;
        }
        let Some(handler) = self.rpc.lock().clone() else {
            return;
        };
        tokio::spawn(async move {
            let body = handler(e.body).await;
            let reply = Envelope {
                id: e.id,
                from: self.config.node_id.clone(),
                reply: true,
                body,
            };
            if let Err(err) = self.publish(&e.from, &reply).await {
                debug!(error = %err, to = %e.from, "a reply to another node was not sent");
            }
        });
    }

    /// Remembers for every node that session `session` was forced out
    /// (`reason`), for `secs`: it may not `resume` anywhere.
    pub async fn remember_kick(&self, session: u64, reason: KickReason, secs: u64) {
        let mut c = self.redis.clone();
        let set: Result<(), _> = redis::cmd("SET")
            .arg(self.key(&format!("kicked:{session:016x}")))
            .arg(reason.as_str())
            .arg("EX")
            .arg(secs)
            .query_async(&mut c)
            .await;
        if let Err(e) = set {
            warn!(error = %e, "a forced exit could not be told to the service");
        }
    }

    /// Why session `session` was forced out, if any node said so.
    pub async fn kicked(&self, session: u64) -> Result<Option<KickReason>, ClusterError> {
        let mut c = self.redis.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.key(&format!("kicked:{session:016x}")))
            .query_async(&mut c)
            .await?;
        Ok(v.and_then(|r| KickReason::ALL.into_iter().find(|k| k.as_str() == r)))
    }

    /// Tells the node which rooms have people in them: a lease of a room
    /// that has been empty for a lease's time is given up each heartbeat.
    pub fn watch_rooms(&self, rooms: RoomsFn) {
        *self.rooms.lock() = Some(rooms);
    }

    /// The node's configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    /// The rooms placed on `node` lately ([`PLACE`]).
    fn recent_key(&self, node: &str) -> String {
        self.key(&format!("placed:{node}"))
    }

    fn room_key(&self, app: SdkAppId, room: &RoomId) -> String {
        match room {
            RoomId::Num(n) => self.key(&format!("room:{}:n:{n}", app.0)),
            RoomId::Str(s) => self.key(&format!("room:{}:s:{s}", app.0)),
        }
    }

    /// Whether the node is in the service: Redis answered within the
    /// lease (past that, other nodes count it as gone).
    pub fn in_service(&self) -> bool {
        self.held
            .lock()
            .last_ok
            .is_some_and(|t| t.elapsed() < self.config.lease)
    }

    /// Rooms this node placed (on any node).
    pub fn placements(&self) -> u64 {
        self.placed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last heartbeat's round trip to Redis.
    pub fn redis_latency(&self) -> Option<Duration> {
        self.held.lock().latency
    }

    /// The rooms this node owns.
    pub fn owned(&self) -> Vec<(SdkAppId, RoomId, u64)> {
        self.held
            .lock()
            .leases
            .iter()
            .map(|((a, r), t)| (*a, r.clone(), *t))
            .collect()
    }

    /// Announces the node and renews its leases every heartbeat until
    /// `stop`; then withdraws the node and releases its leases.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(self.clone().listen(stop.clone()));
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuMeter::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if self.withdrawn.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let t = Instant::now();
            self.release_empty().await;
            match self.heartbeat(cpu.percent()).await {
                Ok(()) => {
                    let mut held = self.held.lock();
                    held.last_ok = Some(Instant::now());
                    held.latency = Some(t.elapsed());
                }
                // Rooms keep running while Redis is out of reach: no node
                // can place anything meanwhile. Once it answers again,
                // each lease is renewed, written back, or found taken
                // (then lost).
                Err(e) => warn!(error = %e, "the service's Redis did not answer the heartbeat"),
            }
        }
        self.withdraw().await;
    }

    /// Gives up the leases of rooms nobody is in (once a lease's time has
    /// passed since they were taken up: a placed room waits for its first
    /// participant that long).
    async fn release_empty(&self) {
        let Some(has) = self.rooms.lock().clone() else {
            return;
        };
        let empty: Vec<(SdkAppId, RoomId)> = {
            let held = self.held.lock();
            held.leases
                .keys()
                .filter(|(a, r)| {
                    !has(*a, r)
                        && held
                            .adopted
                            .get(&(*a, r.clone()))
                            .is_none_or(|t| t.elapsed() >= self.config.lease)
                })
                .cloned()
                .collect()
        };
        for (app, room) in empty {
            debug!(%room, "giving up an empty room's lease");
            self.release(app, &room).await;
        }
    }

    fn lose(&self, app: SdkAppId, room: RoomId) {
        self.held.lock().adopted.remove(&(app, room.clone()));
        if let Some(token) = self.held.lock().leases.remove(&(app, room.clone())) {
            warn!(%room, token, "a room's lease was lost");
            let _ = self.lost.send(LostLease { app, room, token });
        }
    }

    async fn heartbeat(&self, cpu: f64) -> Result<(), ClusterError> {
        let (participants, rooms) = (self.load)();
        let status = NodeStatus {
            node_id: self.config.node_id.clone(),
            advertise: self.config.advertise.clone(),
            participants,
            rooms,
            cpu,
            updated_ms: kaigi_proto::unix_now_ms(),
            recent: 0,
        };
        let lease_ms = self.config.lease.as_millis() as u64;
        let mut c = self.redis.clone();
        let json = serde_json::to_string(&status).unwrap_or_default();
        redis::pipe()
            .hset(self.key("nodes"), &self.config.node_id, json)
            .ignore()
            .pset_ex(
                self.key(&format!("alive:{}", self.config.node_id)),
                1,
                lease_ms,
            )
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        let leases: Vec<_> = self
            .held
            .lock()
            .leases
            .iter()
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        for ((app, room), token) in leases {
            let owner = Owner {
                node_id: self.config.node_id.clone(),
                token,
            };
            let renewed: i64 = self
                .renew
                .key(self.room_key(app, &room))
                .key(self.key("fence"))
                .arg(owner.value())
                .arg(lease_ms)
                .arg(token)
                .invoke_async(&mut c)
                .await?;
            match renewed {
                0 => self.lose(app, room),
                2 => info!(%room, token, "a room's lease written back"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Withdraws the node from the service (it is stopping): its presence
    /// and its leases go at once, so the others need not wait them out,
    /// and a client that reconnects is placed on another node. Once only.
    pub async fn withdraw(&self) {
        if self
            .withdrawn
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let leases: Vec<_> = self.held.lock().leases.drain().collect();
        let mut c = self.redis.clone();
        for ((app, room), token) in leases {
            self.release_key(&mut c, app, &room, token).await;
        }
        let withdrawn = redis::pipe()
            .hdel(self.key("nodes"), &self.config.node_id)
            .del(self.key(&format!("alive:{}", self.config.node_id)))
            .query_async::<()>(&mut c)
            .await;
        if let Err(e) = withdrawn {
            debug!(error = %e, "withdrawing from the service");
        }
        info!(node = %self.config.node_id, "left the service");
    }

    async fn release_key(
        &self,
        c: &mut ConnectionManager,
        app: SdkAppId,
        room: &RoomId,
        token: u64,
    ) {
        let owner = Owner {
            node_id: self.config.node_id.clone(),
            token,
        };
        let released: Result<i64, _> = self
            .release
            .key(self.room_key(app, room))
            .arg(owner.value())
            .invoke_async(c)
            .await;
        if let Err(e) = released {
            debug!(error = %e, %room, "releasing a room's lease");
        }
    }

    /// Where clients reach node `node_id`'s signaling, as it announced.
    pub async fn advertised(&self, node_id: &str) -> Result<Option<String>, ClusterError> {
        let mut c = self.redis.clone();
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.key("nodes"))
            .arg(node_id)
            .query_async(&mut c)
            .await?;
        Ok(v.and_then(|j| serde_json::from_str::<NodeStatus>(&j).ok())
            .map(|n| n.advertise))
    }

    /// The nodes alive now, least loaded first.
    pub async fn live_nodes(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut c = self.redis.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("nodes"))
            .query_async(&mut c)
            .await?;
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = all.keys().collect();
        let alive_keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("alive:{id}")))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(&alive_keys);
        for id in &ids {
            pipe.cmd("ZCARD").arg(self.recent_key(id));
        }
        let (alive, recent): (Vec<Option<u8>>, Vec<u64>) = {
            let mut replies: Vec<redis::Value> = pipe.query_async(&mut c).await?;
            let counts = replies
                .split_off(1)
                .iter()
                .map(|v| redis::from_redis_value(v.clone()).unwrap_or(0))
                .collect();
            let alive = match replies.pop() {
                Some(v) => redis::from_redis_value(v).map_err(redis::RedisError::from)?,
                None => Vec::new(),
            };
            (alive, counts)
        };
        let mut live: Vec<NodeStatus> = ids
            .iter()
            .zip(alive)
            .zip(recent)
            .filter(|((_, a), _)| a.is_some())
            .filter_map(|((id, _), recent)| {
                let mut n: NodeStatus = serde_json::from_str(&all[*id]).ok()?;
                n.recent = recent;
                Some(n)
            })
            .collect();
        live.sort_by(|a, b| {
            load_score(a)
                .total_cmp(&load_score(b))
                .then_with(|| a.node_id.cmp(&b.node_id))
        });
        Ok(live)
    }

    /// Who owns `room` now, if anyone.
    pub async fn owner_of(
        &self,
        app: SdkAppId,
        room: &RoomId,
    ) -> Result<Option<Owner>, ClusterError> {
        let mut c = self.redis.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(self.room_key(app, room))
            .query_async(&mut c)
            .await?;
        Ok(v.as_deref().and_then(Owner::parse))
    }

    /// The room's owner, placing the room first if it has none: on the
    /// least loaded live node, atomically (of any number of nodes placing
    /// one room at once, one placement wins and all see it). A room
    /// placed on this node becomes one of its leases.
    pub async fn place(&self, app: SdkAppId, room: &RoomId) -> Result<Owner, ClusterError> {
        if let Some(owner) = self.owner_of(app, room).await? {
            self.adopt(app, room, &owner);
            return Ok(owner);
        }
        let target = self
            .live_nodes()
            .await?
            .into_iter()
            .next()
            .ok_or(ClusterError::NoNodes)?;
        let mut c = self.redis.clone();
        let v: String = self
            .place
            .key(self.room_key(app, room))
            .key(self.key("fence"))
            .key(self.recent_key(&target.node_id))
            .arg(&target.node_id)
            .arg(self.config.lease.as_millis() as u64)
            .arg((self.config.heartbeat * 2).as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        let owner = Owner::parse(&v).ok_or_else(|| {
            ClusterError::Config(format!("a room's owner in Redis is unreadable: {v:?}"))
        })?;
        info!(%room, node = %owner.node_id, token = owner.token, "room placed");
        self.placed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.adopt(app, room, &owner);
        Ok(owner)
    }

    /// Takes up the lease of a room placed on this node.
    fn adopt(&self, app: SdkAppId, room: &RoomId, owner: &Owner) {
        if owner.node_id == self.config.node_id {
            let mut held = self.held.lock();
            let key = (app, room.clone());
            if held.leases.insert(key.clone(), owner.token) != Some(owner.token) {
                held.adopted.insert(key, Instant::now());
            }
        }
    }

    /// Gives up a room this node owns (it emptied).
    pub async fn release(&self, app: SdkAppId, room: &RoomId) {
        let token = {
            let mut held = self.held.lock();
            held.adopted.remove(&(app, room.clone()));
            held.leases.remove(&(app, room.clone()))
        };
        if let Some(token) = token {
            let mut c = self.redis.clone();
            self.release_key(&mut c, app, room, token).await;
        }
    }
}

/// This process's CPU use between two readings.
struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    fn new() -> Self {
        CpuMeter { last: None }
    }

    /// % of one core since the last call (0 the first time).
    fn percent(&mut self) -> f64 {
        let now = Instant::now();
        let secs = process_cpu_seconds();
        let p = match self.last {
            Some((t, s)) if now > t => (secs - s) / now.duration_since(t).as_secs_f64() * 100.0,
            _ => 0.0,
        };
        self.last = Some((now, secs));
        p.max(0.0)
    }
}

/// CPU seconds (user + system) this process has used.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_checked() {
        let ok = ClusterConfig::new("redis://127.0.0.1:6379", "node-a", "ws://192.0.2.1:7880/ws");
        assert!(ok.check().is_ok());
        for id in ["", "a b", "a/b", &"x".repeat(65)] {
            let c = ClusterConfig::new("redis://h", id, "ws://192.0.2.1/ws");
            assert!(c.check().is_err(), "{id:?}");
        }
        let c = ClusterConfig::new("redis://h", "a", "http://192.0.2.1/ws");
        assert!(c.check().is_err());
        let mut c = ok.clone();
        c.heartbeat = Duration::from_secs(3);
        assert!(c.check().is_err(), "a lease shorter than two heartbeats");
        assert!(generated_node_id().starts_with("node-"));
    }

    #[test]
    fn owners_read_back() {
        let o = Owner {
            node_id: "node-a.1".into(),
            token: 42,
        };
        assert_eq!(Owner::parse(&o.value()), Some(o));
        assert_eq!(Owner::parse("no-token"), None);
        assert_eq!(Owner::parse("a|x"), None);
    }

    #[test]
    fn load_counts_participants_then_cpu() {
        let n = |participants, cpu| NodeStatus {
            node_id: "n".into(),
            advertise: "ws://x".into(),
            participants,
            rooms: 0,
            cpu,
            updated_ms: 0,
            recent: 0,
        };
        assert!(load_score(&n(3, 0.0)) > load_score(&n(2, 5.0)));
        assert!(load_score(&n(2, 50.0)) > load_score(&n(3, 0.0)));
        let placed_lately = NodeStatus {
            recent: 2,
            ..n(0, 0.0)
        };
        assert!(load_score(&placed_lately) > load_score(&n(1, 0.0)));
    }
}
