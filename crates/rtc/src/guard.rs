//! A gate in front of every media socket: datagrams from strangers never
//! reach the WebRTC stack.
//!
//! webrtc-rs hands every non-STUN datagram that reaches a connected peer's
//! socket to DTLS/SRTP whatever its source address, and its SRTP context
//! creates per-SSRC state (replay window, rollover counter) *before* it
//! authenticates a packet. So RTP-shaped junk with a new SSRC in every
//! datagram, from anywhere, grew memory by ~200 bytes a datagram for the
//! life of the connection. The gate fixes both halves:
//!
//! - **Only STUN from strangers.** A non-STUN datagram is admitted only
//!   from an address this socket has sent to. The ICE agent sends only to
//!   the peer's signaled candidates and to addresses that passed a
//!   message-integrity check, so a stranger cannot become a peer without
//!   the ICE password. STUN itself is always admitted: ICE authenticates it
//!   and keeps no state for a message that fails.
//! - **A bounded number of SSRCs per socket.** Even from a peer's address
//!   (a spoofed source, or a hostile peer), RTP and RTCP with more distinct
//!   SSRCs than [`MAX_SSRCS`] are dropped, so per-SSRC state stays bounded.
//!
//! [`DatagramFilter`] is the decision (no I/O, unit-tested); [`GuardedRuntime`]
//! applies it to every UDP socket webrtc-rs wraps.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::mux::MediaPorts;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    Transmit,
};

/// Addresses a socket remembers having sent to (the peer's candidates it
/// checks, and the one it settles on); the oldest is forgotten first.
pub const MAX_PEER_ADDRS: usize = 32;

/// Distinct RTP/RTCP SSRCs admitted per socket. A session's connection
/// carries at most a few hundred (two per live m-line, plus RTCP senders).
pub const MAX_SSRCS: usize = 1024;

/// Batches of nothing but junk read in one poll before yielding.
const JUNK_BATCHES_PER_POLL: usize = 64;

/// TCP streams a media listener (ICE-TCP, passive) keeps open at once, in
/// all and from one address. A client needs one or two; connections beyond
/// are closed as they arrive, so junk cannot take the descriptors.
pub const MAX_TCP_STREAMS: usize = 16;
/// See [`MAX_TCP_STREAMS`].
pub const MAX_TCP_STREAMS_PER_IP: usize = 4;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static REFUSED_TCP: AtomicU64 = AtomicU64::new(0);

/// TCP connections to media listeners closed at once (over the caps).
pub fn refused_tcp_streams() -> u64 {
    REFUSED_TCP.load(Ordering::Relaxed)
}

/// Datagrams dropped by every gate in this process so far.
pub fn dropped_datagrams() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

pub(crate) fn count_dropped(n: u64) {
    DROPPED.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn count_refused_tcp() {
    REFUSED_TCP.fetch_add(1, Ordering::Relaxed);
}

/// What [`DatagramFilter::sent_to`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentTo {
    /// The address was already known.
    Known,
    /// A new address, which pushed out `evicted` (the oldest) if the list
    /// was full.
    New {
        /// The address forgotten to make room.
        evicted: Option<SocketAddr>,
    },
}

/// A media TCP listener that keeps at most [`MAX_TCP_STREAMS`] streams
/// (and [`MAX_TCP_STREAMS_PER_IP`] per address) open.
#[derive(Debug)]
struct GuardedTcpListener {
    inner: Arc<dyn AsyncTcpListener>,
    /// The peer addresses of the streams open now.
    open: Arc<Mutex<Vec<std::net::IpAddr>>>,
}

impl AsyncTcpListener for GuardedTcpListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>>
    {
        Box::pin(async move {
            loop {
                let (stream, from) = self.inner.accept().await?;
                {
                    let mut open = self.open.lock();
                    let same = open.iter().filter(|ip| **ip == from.ip()).count();
                    if open.len() < MAX_TCP_STREAMS && same < MAX_TCP_STREAMS_PER_IP {
                        open.push(from.ip());
                        let guarded = GuardedTcpStream {
                            inner: stream,
                            ip: from.ip(),
                            open: self.open.clone(),
                        };
                        return Ok((Arc::new(guarded) as Arc<dyn AsyncTcpStream>, from));
                    }
                }
                // Over the caps: closed as the last handle goes.
                count_refused_tcp();
                drop(stream);
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream counted by its listener until it is dropped.
#[derive(Debug)]
struct GuardedTcpStream {
    inner: Arc<dyn AsyncTcpStream>,
    ip: std::net::IpAddr,
    open: Arc<Mutex<Vec<std::net::IpAddr>>>,
}

impl Drop for GuardedTcpStream {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(i) = open.iter().position(|ip| *ip == self.ip) {
            open.swap_remove(i);
        }
    }
}

impl AsyncTcpStream for GuardedTcpStream {
    fn read<'a, 'b>(
        &'a self,
        buf: &'b mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        self.inner.read(buf)
    }

    fn write_all<'a, 'b>(
        &'a self,
        buf: &'b [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        self.inner.write_all(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

/// What a socket admits: STUN from anyone; anything else only from an
/// address it has sent to, with a bounded set of SSRCs.
#[derive(Debug, Default)]
pub struct DatagramFilter {
    peers: Vec<SocketAddr>,
    ssrcs: HashSet<u32>,
}

impl DatagramFilter {
    /// Notes that the socket sends to `to`.
    pub fn sent_to(&mut self, to: SocketAddr) -> SentTo {
        if self.peers.last() == Some(&to) {
            return SentTo::Known;
        }
        if let Some(i) = self.peers.iter().position(|p| *p == to) {
            // Most recent last, so the hot path above is one comparison.
            let p = self.peers.remove(i);
            self.peers.push(p);
            return SentTo::Known;
        }
        let evicted = (self.peers.len() == MAX_PEER_ADDRS).then(|| self.peers.remove(0));
        self.peers.push(to);
        SentTo::New { evicted }
    }

    /// The addresses it admits non-STUN datagrams from, oldest first.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Whether one datagram from `from` may go on to the WebRTC stack.
    pub fn admit(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        let Some(&first) = datagram.first() else {
            return false;
        };
        // RFC 7983: 0–3 is STUN.
        if first <= 3 {
            return true;
        }
        if !self.peers.contains(&from) {
            return false;
        }
        // 128–191 is RTP or RTCP; the SSRC is at 8 (RTP) or 4 (RTCP's sender).
        if (128..=191).contains(&first) {
            let rtcp = datagram.len() >= 4 && (192..=223).contains(&datagram[1]);
            let at = if rtcp { 4 } else { 8 };
            let Some(ssrc) = datagram.get(at..at + 4) else {
                return false;
            };
            let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
            if !self.ssrcs.contains(&ssrc) {
                if self.ssrcs.len() >= MAX_SSRCS {
                    return false;
                }
                self.ssrcs.insert(ssrc);
            }
        }
        true
    }

    /// Whether a received message (one datagram, or several coalesced by
    /// GRO at `stride` bytes) may go on; all of its datagrams must pass.
    fn admit_message(&mut self, from: SocketAddr, message: &[u8], stride: usize) -> bool {
        let stride = stride.max(1);
        message.chunks(stride).all(|d| self.admit(from, d))
    }
}

/// webrtc-rs's default runtime, with every UDP socket behind a
/// [`DatagramFilter`]: the connection's own, or its virtual socket on a
/// server's shared [`MediaPorts`].
#[derive(Debug)]
pub struct GuardedRuntime {
    inner: Arc<dyn Runtime>,
    /// The shared ports and the connection's ICE username fragment.
    shared: Option<(Arc<MediaPorts>, String)>,
}

impl GuardedRuntime {
    /// Wraps webrtc-rs's default runtime (tokio); sockets are the
    /// connection's own.
    pub fn new() -> io::Result<Self> {
        let inner = webrtc::runtime::default_runtime()
            .ok_or_else(|| io::Error::other("no async runtime"))?;
        Ok(GuardedRuntime {
            inner,
            shared: None,
        })
    }

    /// Like [`GuardedRuntime::new`], but the connection (whose ICE username
    /// fragment is `ufrag`) gets virtual sockets on `ports` instead of its own.
    pub fn shared(ports: Arc<MediaPorts>, ufrag: String) -> io::Result<Self> {
        let mut runtime = Self::new()?;
        runtime.shared = Some((ports, ufrag));
        Ok(runtime)
    }
}

impl Runtime for GuardedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if let Some((ports, ufrag)) = &self.shared {
            // The connection's own socket closes here; its address stays
            // as the connection's name for its candidate.
            return Ok(ports.udp_socket(ufrag, socket.local_addr()?));
        }
        Ok(Arc::new(GuardedSocket {
            inner: self.inner.wrap_udp_socket(socket)?,
            filter: Mutex::new(DatagramFilter::default()),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let inner = match &self.shared {
            Some((ports, ufrag)) => ports.tcp_listener(ufrag, listener.local_addr()?),
            None => self.inner.wrap_tcp_listener(listener)?,
        };
        Ok(Arc::new(GuardedTcpListener {
            inner,
            open: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "kaigi-guarded"
    }
}

/// A UDP socket whose receive side drops what its filter refuses.
struct GuardedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    filter: Mutex<DatagramFilter>,
}

impl fmt::Debug for GuardedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl GuardedSocket {
    fn filter(&self) -> parking_lot::MutexGuard<'_, DatagramFilter> {
        // The filter holds no invariant a panic elsewhere could break.
        self.filter.lock()
    }
}

impl AsyncUdpSocket for GuardedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let _ = self.filter().sent_to(transmit.destination);
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..JUNK_BATCHES_PER_POLL {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            {
                let mut filter = self.filter();
                for i in 0..n {
                    let m = meta[i];
                    if !filter.admit_message(m.addr, &bufs[i][..m.len], m.stride) {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if kept != i {
                        let (head, tail) = bufs.split_at_mut(i);
                        head[kept][..m.len].copy_from_slice(&tail[0][..m.len]);
                        meta[kept] = m;
                    }
                    kept += 1;
                }
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // All of it was junk: read on (the inner socket registers the
            // waker when nothing more is queued).
        }
        // A flood of junk: give the rest of the reactor a turn, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut d = vec![0x80, 102, 0, 1, 0, 0, 0, 0];
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0; 20]);
        d
    }

    fn rtcp(ssrc: u32) -> Vec<u8> {
        let mut d = vec![0x80, 200, 0, 6];
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0; 24]);
        d
    }

    #[test]
    fn stun_is_admitted_from_anyone() {
        let mut f = DatagramFilter::default();
        assert!(f.admit(addr(1), &[0x00, 0x01, 0, 0]));
        assert!(f.admit(addr(2), &[0x01, 0x01, 0, 0]));
    }

    #[test]
    fn anything_else_only_from_an_address_it_sent_to() {
        let mut f = DatagramFilter::default();
        let dtls = [22u8, 0xfe, 0xfd, 0];
        assert!(!f.admit(addr(1), &rtp(7)));
        assert!(!f.admit(addr(1), &dtls));
        assert!(!f.admit(addr(1), &[]));
        f.sent_to(addr(1));
        assert!(f.admit(addr(1), &rtp(7)));
        assert!(f.admit(addr(1), &rtcp(8)));
        assert!(f.admit(addr(1), &dtls));
        assert!(!f.admit(addr(2), &rtp(7)), "another port is someone else");
    }

    #[test]
    fn the_oldest_address_is_forgotten_first() {
        let mut f = DatagramFilter::default();
        for p in 0..MAX_PEER_ADDRS as u16 {
            f.sent_to(addr(p));
        }
        // Sending to the first again makes it the most recent.
        f.sent_to(addr(0));
        f.sent_to(addr(1000));
        assert!(f.admit(addr(0), &rtp(1)));
        assert!(!f.admit(addr(1), &rtp(1)), "the oldest went");
        assert!(f.admit(addr(1000), &rtp(1)));
    }

    #[test]
    fn ssrcs_are_bounded_per_socket() {
        let mut f = DatagramFilter::default();
        f.sent_to(addr(1));
        for ssrc in 0..MAX_SSRCS as u32 / 2 {
            assert!(f.admit(addr(1), &rtp(ssrc)));
            assert!(f.admit(addr(1), &rtcp(ssrc + 1_000_000)));
        }
        assert!(
            !f.admit(addr(1), &rtp(5_000_000)),
            "a new SSRC past the cap"
        );
        assert!(!f.admit(addr(1), &rtcp(5_000_001)));
        assert!(f.admit(addr(1), &rtp(3)), "known SSRCs still pass");
        assert!(!f.admit(addr(1), &[0x80, 102, 0]), "too short for an SSRC");
    }

    #[test]
    fn a_coalesced_message_passes_only_whole() {
        let mut f = DatagramFilter::default();
        f.sent_to(addr(1));
        let one = rtp(1);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(f.admit_message(addr(1), &two, one.len()));
        assert!(!f.admit_message(addr(2), &two, one.len()));
    }
}
