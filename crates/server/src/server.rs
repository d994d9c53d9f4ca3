//! Starting and stopping a server: one HTTP listener for signaling
//! (`/ws`), the admin API (`/api/<Action>`), `/healthz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use crate::state::Shared;
use crate::{admin, listener, signaling};

/// The kernel send buffer of each accepted connection.
pub const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serve: JoinHandle<std::io::Result<()>>,
}

/// Binds `config.listen` and serves until [`ServerHandle::shutdown`].
///
/// Raises the process's open-file limit to its hard limit first, and caps
/// connections so that the descriptors never run out under joined clients
/// (see [`listener`]).
pub async fn start(config: Config) -> std::io::Result<ServerHandle> {
    let nofile = listener::raise_fd_limit();
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let limits = listener::ConnectionLimits {
        total: config
            .max_connections
            .unwrap_or_else(|| listener::connections_for_fd_limit(nofile)),
        per_ip: config.max_connections_per_ip,
    };
    let tls = match &config.tls {
        Some(files) => Some(
            crate::tls::acceptor(&files.cert, &files.key)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let media_ports =
        kaigi_rtc::MediaPorts::bind(config.media_ip(), config.media_port, config.media_tcp_port)?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let cluster_config = config.cluster.clone();
    let shared = Shared::new(config, media_ports);
    if let Some(c) = cluster_config {
        join_service(&shared, c, scheme, addr).await?;
    }
    let router = router(shared.clone());
    let serve = tokio::spawn(listener::serve(
        listener,
        router,
        limits,
        tls,
        shared.clone(),
    ));
    info!(
        %addr,
        media_udp = %shared.media_ports.udp_addr(),
        media_tcp = %shared.media_ports.tcp_addr(),
        apps = shared.config.apps.len(),
        max_connections = limits.total,
        max_connections_per_ip = limits.per_ip,
        "kaigi-server listening"
    );
    Ok(ServerHandle {
        addr,
        shared,
        serve,
    })
}

/// The HTTP routes over shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", any(crate::cloudapi::handle))
        .route("/ws", get(signaling::upgrade))
        .route("/api/{action}", any(admin::handle))
        .route(
            "/invite/{code}",
            get(crate::invites::preview).post(crate::invites::redeem),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// `ok` for a single node; in a service, whether this node is in it (its
/// Redis answers), as JSON, with 503 when it is not.
async fn healthz(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(cluster) = shared.cluster.get() else {
        return "ok\n".into_response();
    };
    let in_service = cluster.in_service();
    let (_, participants) = shared.read(|r| r.counts());
    let body = serde_json::json!({
        "node": cluster.node_id(),
        "advertise": cluster.config().advertise,
        "inService": in_service,
        "rooms": cluster.owned().len(),
        "participants": participants,
        "redisLatencyMs": cluster.redis_latency().map(|d| d.as_secs_f64() * 1000.0),
    });
    let status = if in_service {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Joins the service of several nodes on Redis: announces this node,
/// reports its load, gives up empty rooms, and moves the people of a room
/// whose lease it lost (they reconnect to the room's new node).
async fn join_service(
    shared: &Arc<Shared>,
    mut config: crate::cluster::ClusterConfig,
    scheme: &str,
    addr: SocketAddr,
) -> std::io::Result<()> {
    if config.node_id.is_empty() {
        config.node_id = crate::cluster::generated_node_id();
    }
    if config.advertise.is_empty() {
        if addr.ip().is_unspecified() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "listening on a wildcard address: give --advertise (where clients reach this node)",
            ));
        }
        config.advertise = format!("{scheme}://{addr}/ws");
    }
    let load_from = Arc::downgrade(shared);
    let load: crate::cluster::LoadFn = Arc::new(move || {
        load_from
            .upgrade()
            .map(|s| {
                let (rooms, participants) = s.read(|r| r.counts());
                (participants as u64, rooms as u64)
            })
            .unwrap_or_default()
    });
    let redis = config.redis.clone();
    let (cluster, mut lost) = crate::cluster::Cluster::connect(config, load)
        .await
        .map_err(|e| std::io::Error::other(format!("joining the service on {redis}: {e}")))?;
    let rooms_from = Arc::downgrade(shared);
    cluster.watch_rooms(Arc::new(move |app, room| {
        rooms_from
            .upgrade()
            .is_some_and(|s| s.read(|r| r.room(app, room).is_some()))
    }));
    let served = Arc::downgrade(shared);
    cluster.serve_rpc(Arc::new(move |body| {
        let shared = served.upgrade();
        Box::pin(async move {
            match shared {
                Some(s) => crate::admin::serve_routed(s, body).await,
                None => {
                    serde_json::json!({"error": {"code": "InternalError", "message": "stopping"}})
                }
            }
        })
    }));
    let _ = shared.cluster.set(cluster.clone());
    tokio::spawn(cluster.run(shared.shutdown.clone()));
    let moves = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(l) = lost.recv().await {
            let Some(shared) = moves.upgrade() else { break };
            let sessions = shared.sessions_in(l.app, &l.room);
            tracing::warn!(room = %l.room, people = sessions.len(), "the room's lease was lost: moving its people");
            for s in sessions {
                shared.move_session(s);
            }
        }
    });
    Ok(())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    if let Some(c) = shared.cluster.get() {
        let m = &shared.metrics;
        m.in_service.set(i64::from(c.in_service()));
        m.redis_latency_us.set(
            c.redis_latency()
                .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        );
        m.placements
            .inner()
            .store(c.placements(), std::sync::atomic::Ordering::Relaxed);
    }
    let on_ports = shared.media_ports.connections();
    shared
        .metrics
        .media_connections
        .set(i64::try_from(on_ports).unwrap_or(i64::MAX));
    shared.metrics.encode()
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The signaling URL, `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The base URL, `http://ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's shared state (for tests and embedding).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, tells every client the server is going away
    /// (close code 1012), and waits up to 5 s for every session to end.
    pub async fn shutdown(self) {
        // In a service, the rooms are handed back first: the clients told
        // to reconnect then find them placed anew on another node.
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.withdraw().await;
        }
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.serve.await;
            self.shared.tasks.wait().await;
        })
        .await;
        info!("kaigi-server stopped");
    }

    /// Waits until the server stops by itself (it only stops on shutdown).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.serve.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
