//! Accepting HTTP connections with limits: how many connections in all and
//! per client IP, how long a client may take to send a request's headers
//! (an idle keep-alive connection included), and what happens when the
//! process runs out of file descriptors.
//!
//! A connection over a cap is accepted and answered at once with a
//! complete HTTP response (`503` over the total, `429` over the per-IP
//! cap, both with `Retry-After`) and closed, so the listen queue never
//! fills with connections nobody will serve and a client learns why.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::state::Shared;

/// How long a client may take to send a request's headers, and how long an
/// idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// File descriptors kept back from connections: media sockets, the
/// listener, logs, the runtime.
pub const FD_RESERVE: usize = 256;
/// File descriptors a connection may need: its TCP socket and, once in a
/// room, its media connection's UDP socket.
pub const FDS_PER_CONNECTION: usize = 2;
/// How long the accept loop waits after the process ran out of file
/// descriptors before it accepts again.
/// How long an HTTP request in progress may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);

const TOO_MANY_TOTAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 30\r\nConnection: close\r\n\r\nthe server is at its capacity\n";
const TOO_MANY_FROM_IP: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 39\r\nConnection: close\r\n\r\ntoo many connections from your address\n";

/// The connection limits a listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all (HTTP and WebSocket).
    pub total: usize,
    /// Open connections from one IP address; 0 for no cap.
    pub per_ip: usize,
}

/// Raises this process's open-file limit to its hard limit and returns the
/// soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The total connection cap the open-file limit allows.
pub fn connections_for_fd_limit(nofile: u64) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    (nofile.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION).max(1)
}

/// Open connections, in all and per IP.
#[derive(Debug, Default)]
struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in the counts, given back when the last holder
/// drops it: the HTTP connection's task and, once upgraded, the WebSocket
/// session (which takes a clone from the request's extensions).
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Slot>);

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnectionSlot").field(&self.0.ip).finish()
    }
}

struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.counts.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

impl Counts {
    fn take(self: &Arc<Self>, ip: IpAddr, limits: ConnectionLimits) -> Result<Slot, Refusal> {
        let mut per_ip = self.per_ip.lock();
        if self.total.load(Ordering::Relaxed) >= limits.total {
            return Err(Refusal::Total);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if limits.per_ip > 0 && *n >= limits.per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open HTTP
/// requests finish (upgraded WebSockets end through their sessions).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let metrics = &shared.metrics;
    let shutdown = shared.shutdown.clone();
    let counts = Arc::new(Counts::default());
    let connections = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    let mut last_exhausted_log: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or memory): joined clients
                    // keep working; new ones wait in the listen queue.
                    Metrics::count(&metrics.rejected, "fd-exhausted");
                    if last_exhausted_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!(error = %e, "cannot accept connections");
                        last_exhausted_log = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(EXHAUSTED_BACKOFF) => continue,
                    }
                }
            },
        };
        let slot = match counts.take(peer.ip(), limits) {
            Ok(slot) => ConnectionSlot(Arc::new(slot)),
            Err(refusal) => {
                let (reason, response) = match refusal {
                    Refusal::Total => ("at-capacity", TOO_MANY_TOTAL),
                    Refusal::PerIp => ("per-ip-cap", TOO_MANY_FROM_IP),
                };
                Metrics::count(&metrics.rejected, reason);
                debug!(%peer, reason, "connection refused");
                // A fresh socket's send buffer is empty: this never blocks.
                let _ = tcp.try_write(response);
                continue;
            }
        };
        configure(&tcp);
        let router = router.clone();
        let request_slot = slot.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(request_slot.clone());
                let mut router = router.clone();
                async move {
                    use tower_service::Service;
                    router.call(req).await
                }
            });
        let shutdown = shutdown.clone();
        let http = http.clone();
        let tls = tls.clone();
        let counted = shared.clone();
        connections.spawn(async move {
            // TLS first, within the header deadline (a client that never
            // finishes its handshake holds a slot no longer than one that
            // never sends its headers).
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            Metrics::count(&counted.metrics.rejected, "tls-handshake");
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            Metrics::count(&counted.metrics.rejected, "tls-handshake");
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = http
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Plain HTTP requests get a moment to finish; WebSocket sessions close
    // themselves on the same token.
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    Ok(())
}

/// A connection's byte stream: plain TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Per-connection errors `accept` reports that say nothing about the
/// listener (the peer gave up before we took it).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Socket options for an accepted connection.
fn configure(tcp: &TcpStream) {
    // Signaling messages are small and latency-bound: never let Nagle's
    // algorithm hold one back waiting for an ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY");
    }
    // Autotuning lets one socket buffer megabytes for a client that does
    // not read; messages are small, so a fixed buffer bounds the memory and
    // lets the session notice such a client in time.
    if let Err(e) =
        socket2::SockRef::from(tcp).set_send_buffer_size(crate::server::SEND_BUFFER_BYTES)
    {
        debug!(error = %e, "SO_SNDBUF");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn caps_count_per_ip_and_in_all_and_free_on_drop() {
        let counts = Arc::new(Counts::default());
        let limits = ConnectionLimits {
            total: 3,
            per_ip: 2,
        };
        let a1 = counts.take(ip(1), limits).unwrap();
        let a1 = ConnectionSlot(Arc::new(a1));
        let a1_session = a1.clone();
        drop(a1);
        assert_eq!(
            counts.total.load(Ordering::Relaxed),
            1,
            "the session holds it"
        );
        let a1 = a1_session;
        let _a2 = counts.take(ip(1), limits).unwrap();
        assert_eq!(counts.take(ip(1), limits).err(), Some(Refusal::PerIp));
        let _b1 = counts.take(ip(2), limits).unwrap();
        assert_eq!(counts.take(ip(3), limits).err(), Some(Refusal::Total));
        drop(a1);
        let _a3 = counts.take(ip(1), limits).unwrap();
        assert_eq!(counts.total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn no_per_ip_cap_when_zero_and_empty_entries_go() {
        let counts = Arc::new(Counts::default());
        let limits = ConnectionLimits {
            total: 100,
            per_ip: 0,
        };
        let slots: Vec<_> = (0..50)
            .map(|_| counts.take(ip(1), limits).unwrap())
            .collect();
        drop(slots);
        assert!(counts.per_ip.lock().is_empty());
        assert_eq!(counts.total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_fd_limit_sets_the_total() {
        assert_eq!(connections_for_fd_limit(1024), (1024 - FD_RESERVE) / 2);
        assert_eq!(connections_for_fd_limit(10), 1);
    }

    #[test]
    fn refusals_are_whole_http_responses() {
        for r in [TOO_MANY_TOTAL, TOO_MANY_FROM_IP] {
            let text = std::str::from_utf8(r).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{head}");
        }
    }
}
