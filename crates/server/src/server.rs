//! Starting and stopping a server: one HTTP listener for signaling
//! (`/ws`), the admin API (`/api/<Action>`), `/healthz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use crate::state::Shared;
use crate::{admin, signaling};

/// The kernel send buffer of each accepted connection.
pub const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serve: JoinHandle<std::io::Result<()>>,
}

/// Binds `config.listen` and serves until [`ServerHandle::shutdown`].
pub async fn start(config: Config) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // Signaling messages are small and latency-bound: never let Nagle's
    // algorithm hold one back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        // Autotuning lets one socket buffer megabytes for a client that
        // does not read; messages are small, so a fixed buffer bounds the
        // memory and lets the session notice such a client in time.
        if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(SEND_BUFFER_BYTES) {
            tracing::debug!(error = %e, "SO_SNDBUF");
        }
    });
    let shared = Shared::new(config);
    let router = router(shared.clone());
    let token = shared.shutdown.clone();
    let serve = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    });
    info!(%addr, apps = shared.config.apps.len(), "kaigi-server listening");
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
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
