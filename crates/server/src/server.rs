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
    let shared = Shared::new(config, media_ports);
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
        .route("/ws", get(signaling::upgrade))
        .route("/api/{action}", any(admin::handle))
        .route(
            "/invite/{code}",
            get(crate::invites::preview).post(crate::invites::redeem),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
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
