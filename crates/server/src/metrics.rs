//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason.
    pub reason: String,
}

/// An admin call's action and result code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminCall {
    /// `RemoveUser`, `DismissRoom`, …
    pub action: String,
    /// `ok` or the error code.
    pub result: String,
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Open signaling connections.
    pub connections: Gauge,
    /// Rooms that exist.
    pub rooms: Gauge,
    /// Users in rooms.
    pub participants: Gauge,
    /// Successful joins.
    pub joins: Counter,
    /// Refused joins, by error name.
    pub join_failures: Family<Reason, Counter>,
    /// Forced exits, by kick reason.
    pub kicks: Family<Reason, Counter>,
    /// Connections closed for a fault, by reason.
    pub rejected: Family<Reason, Counter>,
    /// Admin API calls.
    pub admin_calls: Family<AdminCall, Counter>,
    /// Datagrams the media sockets' gate dropped (see `kaigi_rtc::guard`).
    junk_datagrams: Counter,
    /// TCP streams to the media port closed unheard (see `kaigi_rtc::mux`).
    refused_media_tcp: Counter,
    /// Peer connections on the media ports.
    pub media_connections: Gauge,
    /// In a service: admin calls carried out by the room's node, by action.
    pub routed: Family<Reason, Counter>,
    /// Webhook events by outcome: `ok`, `failed` (given up), `dropped`
    /// (the queue was full).
    pub webhooks: Family<Reason, Counter>,
    /// In a service: joins sent to the room's node (`ROOM_ELSEWHERE`).
    pub redirected: Counter,
    /// In a service: rooms this node placed (on any node).
    pub placements: Counter,
    /// In a service: the last heartbeat's round trip to Redis, µs (-1:
    /// no answer yet).
    pub redis_latency_us: Gauge,
    /// In a service: whether this node is in it (1) or its Redis is out of
    /// reach (0).
    pub in_service: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kaigi");
        let m = Metrics {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            participants: Gauge::default(),
            joins: Counter::default(),
            join_failures: Family::default(),
            kicks: Family::default(),
            rejected: Family::default(),
            admin_calls: Family::default(),
            junk_datagrams: Counter::default(),
            refused_media_tcp: Counter::default(),
            media_connections: Gauge::default(),
            routed: Family::default(),
            webhooks: Family::default(),
            redirected: Counter::default(),
            placements: Counter::default(),
            redis_latency_us: Gauge::default(),
            in_service: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open signaling connections",
            m.connections.clone(),
        );
        registry.register("rooms", "Rooms that exist", m.rooms.clone());
        registry.register("participants", "Users in rooms", m.participants.clone());
        registry.register("joins", "Successful joins", m.joins.clone());
        registry.register(
            "join_failures",
            "Refused joins by error",
            m.join_failures.clone(),
        );
        registry.register("kicks", "Forced exits by reason", m.kicks.clone());
        registry.register(
            "rejected_connections",
            "Connections closed for a fault",
            m.rejected.clone(),
        );
        registry.register(
            "admin_calls",
            "Admin API calls by action and result",
            m.admin_calls.clone(),
        );
        registry.register(
            "media_datagrams_dropped",
            "Datagrams at media ports dropped before WebRTC: non-STUN from an address the socket never sent to, or past its SSRC bound",
            m.junk_datagrams.clone(),
        );
        registry.register(
            "media_tcp_refused",
            "TCP streams to the media port closed unheard: over the caps, or no binding request for a connection within 5 s",
            m.refused_media_tcp.clone(),
        );
        registry.register(
            "media_connections",
            "Peer connections on the media ports",
            m.media_connections.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook events by outcome: ok, failed (given up after retrying), dropped (queue full)",
            m.webhooks.clone(),
        );
        registry.register(
            "routed_admin_calls",
            "Admin calls carried out by the room's node (several nodes), by action",
            m.routed.clone(),
        );
        registry.register(
            "redirected_joins",
            "Joins sent to the room's node (several nodes)",
            m.redirected.clone(),
        );
        registry.register(
            "placements",
            "Rooms this node placed (several nodes)",
            m.placements.clone(),
        );
        registry.register(
            "redis_latency_us",
            "The last heartbeat's round trip to Redis in microseconds (several nodes)",
            m.redis_latency_us.clone(),
        );
        registry.register(
            "in_service",
            "Whether this node is in its service: 1, or 0 while its Redis is out of reach (several nodes)",
            m.in_service.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts `n` under `family` with `reason`.
    pub fn count(family: &Family<Reason, Counter>, reason: &str) {
        family
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        // The gate counts process-wide; catch the counter up.
        for (counter, now) in [
            (&self.junk_datagrams, kaigi_rtc::guard::dropped_datagrams()),
            (
                &self.refused_media_tcp,
                kaigi_rtc::guard::refused_tcp_streams(),
            ),
        ] {
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
