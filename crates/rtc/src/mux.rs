//! One UDP port and one TCP port for every peer connection of a server.
//!
//! webrtc-rs 0.21 binds a UDP socket and a TCP listener per peer connection
//! (its UDP mux is not implemented), so a server needed every port open.
//! [`MediaPorts`] binds one UDP socket and one TCP listener and hands each
//! peer connection a *virtual* socket and listener in their place, through
//! the runtime seam webrtc-rs already has ([`crate::guard::GuardedRuntime`]
//! wraps every socket a peer connection binds):
//!
//! - **Receiving.** One task reads the UDP port in batches (`recvmmsg`, GRO)
//!   and routes each datagram: a STUN binding request by the local ICE
//!   username fragment in its USERNAME (each server peer connection gets
//!   its own random one), anything else by the source address, which a
//!   connection claims when it sends to it (the ICE agent sends only to
//!   signaled candidates and to addresses that passed a message-integrity
//!   check). The datagram is queued on its connection, whose driver is
//!   woken. Junk from strangers stops at the router.
//! - **Sending** goes straight to the shared socket from each connection's
//!   driver; no task, no copy.
//! - **TCP** (ICE-TCP, RFC 6544): the listener reads each new stream's
//!   first RFC 4571 frame, a STUN binding request, and hands the stream
//!   (that frame replayed first) to the connection its username names.
//!
//! Why this and not driving webrtc-rs's sans-IO core (`rtc`) directly, as
//! str0m-based SFUs do: the `webrtc` crate's driver carries the timers,
//! interceptors (NACK, reports, TWCC), DTLS and track plumbing the SFU and
//! the SDK are built on; replacing it means rewriting the SFU's media
//! path. At the socket seam the cost is one queue hop per *received*
//! datagram, and sends (one per forwarded packet per subscriber, the bulk
//! of an SFU's traffic) cost what they did. BENCHMARKS.md (SFU capacity)
//! has the two measured side by side: the one port costs no more CPU per
//! forwarded packet.
//!
//! The peer connection still binds its own ephemeral socket (webrtc-rs
//! binds before wrapping); that socket is closed at once, and its address
//! stays only as the connection's name for its candidate. The candidates
//! that leave in the SDP name the shared ports instead
//! ([`MediaPorts::advertised`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, RecvMeta, Transmit};

use crate::guard::{count_dropped, count_refused_tcp, DatagramFilter, SentTo};

/// The default media port (UDP and TCP), as LiveKit's.
pub const DEFAULT_MEDIA_PORT: u16 = 7882;

/// Datagrams queued for one peer connection that its driver has not read
/// yet; more are dropped (a driver that far behind is not reading). At
/// 640×480 video that is over a second of packets.
pub const MAX_QUEUED_DATAGRAMS: usize = 512;

/// Receive buffers kept per connection for reuse.
const SPARE_BUFFERS: usize = 16;

/// Messages read from the UDP port in one system call.
const RECV_BATCH: usize = 16;

/// How long a new TCP stream to the media port may take to send its first
/// message (a STUN binding request) before it is closed.
pub const TCP_FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP streams to the media port still waiting for their first message,
/// in all; more are closed as they arrive.
pub const MAX_TCP_PENDING: usize = 256;
/// See [`MAX_TCP_PENDING`]: from one address.
pub const MAX_TCP_PENDING_PER_IP: usize = 8;

/// Streams handed to one connection that it has not accepted yet.
const TCP_HANDOVER_QUEUE: usize = 4;

/// Largest first message a TCP stream may send (a binding request is about
/// a hundred bytes).
const MAX_FIRST_MESSAGE: usize = 1500;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The shared media ports of a server: one UDP socket and one TCP listener
/// that every peer connection built with [`crate::Transport::Shared`]
/// uses. Dropping it stops both.
pub struct MediaPorts {
    udp: Arc<UdpMux>,
    tcp: Arc<TcpMux>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for MediaPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPorts")
            .field("udp", &self.udp.addr)
            .field("tcp", &self.tcp.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MediaPorts {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The kernel receive buffer asked for on the shared UDP socket: it takes
/// every connection's packets.
const UDP_RECV_BUFFER_BYTES: usize = 4 << 20;

impl MediaPorts {
    /// Binds UDP `udp_port` and TCP `tcp_port` (the same number as UDP when
    /// `None`) on `ip` and starts serving them. Port 0 takes a free port
    /// (the same number for both when it can). Must run in a tokio runtime.
    pub fn bind(ip: IpAddr, udp_port: u16, tcp_port: Option<u16>) -> io::Result<Arc<Self>> {
        let (udp, tcp) = bind_pair(ip, udp_port, tcp_port)?;
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RECV_BUFFER_BYTES);
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.local_addr()?;
        let runtime = webrtc::runtime::default_runtime()
            .ok_or_else(|| io::Error::other("no async runtime"))?;
        let socket = runtime.wrap_udp_socket(udp)?;
        let listener = runtime.wrap_tcp_listener(tcp)?;
        let waiters = Arc::new(SendWaiters::default());
        let udp = Arc::new(UdpMux {
            socket,
            addr: udp_addr,
            routes: Mutex::new(Routes::default()),
            send_waker: Waker::from(waiters.clone()),
            send_waiters: waiters,
        });
        let tcp = Arc::new(TcpMux {
            addr: tcp_addr,
            routes: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        });
        let tasks = vec![
            tokio::spawn(receive(udp.clone())),
            tokio::spawn(accept(tcp.clone(), listener)),
        ];
        tracing::info!(udp = %udp_addr, tcp = %tcp_addr, "media ports open");
        Ok(Arc::new(MediaPorts { udp, tcp, tasks }))
    }

    /// The UDP port's address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp.addr
    }

    /// The TCP port's address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp.addr
    }

    /// Peer connections with a socket on these ports now.
    pub fn connections(&self) -> usize {
        self.udp.routes.lock().by_ufrag.len()
    }

    /// A fresh ICE username fragment and password for a new connection,
    /// the fragment not in use on these ports.
    pub(crate) fn credentials(&self) -> (String, String) {
        loop {
            let ufrag = random_ice_chars(16);
            if !self.udp.routes.lock().by_ufrag.contains_key(&ufrag) {
                return (ufrag, random_ice_chars(32));
            }
        }
    }

    /// A virtual UDP socket for the connection whose ICE username fragment
    /// is `ufrag`; `key` is the address it knows its candidate by.
    pub(crate) fn udp_socket(&self, ufrag: &str, key: SocketAddr) -> Arc<dyn AsyncUdpSocket> {
        let endpoint = Arc::new(Endpoint {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            key,
            state: Mutex::new(EndpointState::default()),
        });
        self.udp
            .routes
            .lock()
            .by_ufrag
            .entry(ufrag.to_owned())
            .or_default()
            .push(endpoint.clone());
        // A connection on a wildcard port binds one socket per interface;
        // each sends from its own interface's address.
        let src_ip =
            (self.udp.addr.ip().is_unspecified() && !key.ip().is_unspecified()).then_some(key.ip());
        Arc::new(MuxedSocket {
            src_ip,
            mux: self.udp.clone(),
            endpoint,
            ufrag: ufrag.to_owned(),
            key,
        })
    }

    /// A virtual TCP listener for the connection whose ICE username
    /// fragment is `ufrag`; its streams report `key` as their local address.
    pub(crate) fn tcp_listener(&self, ufrag: &str, key: SocketAddr) -> Arc<dyn AsyncTcpListener> {
        let (tx, rx) = tokio::sync::mpsc::channel(TCP_HANDOVER_QUEUE);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.tcp
            .routes
            .lock()
            .entry(ufrag.to_owned())
            .or_default()
            .push(TcpRoute { id, key, tx });
        Arc::new(MuxedListener {
            mux: self.tcp.clone(),
            id,
            ufrag: ufrag.to_owned(),
            key,
            streams: tokio::sync::Mutex::new(rx),
        })
    }

    /// `sdp` as clients must see it: every host candidate names these ports
    /// (UDP, or TCP for a passive TCP candidate) at `external` when given
    /// (a 1:1 NAT), else at its own address (the interface's, when the
    /// ports are bound to a wildcard). A candidate that would repeat one
    /// already in its section is left out.
    pub fn advertised(&self, external: Option<IpAddr>, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len() + 64);
        let mut seen: Vec<String> = Vec::new();
        for line in sdp.split_inclusive('\n') {
            if line.starts_with("m=") {
                seen.clear();
            }
            match line
                .strip_prefix("a=candidate:")
                .and_then(|c| self.rewrite_candidate(external, c))
            {
                Some((rewritten, names)) => {
                    if !seen.contains(&names) {
                        out.push_str("a=candidate:");
                        out.push_str(&rewritten);
                        seen.push(names);
                    }
                }
                None => out.push_str(line),
            }
        }
        out
    }

    /// One candidate (after `a=candidate:`) with its address and port
    /// replaced and what it names (transport, address, port, TCP type), or
    /// `None` to keep it as it is.
    fn rewrite_candidate(
        &self,
        external: Option<IpAddr>,
        candidate: &str,
    ) -> Option<(String, String)> {
        let body = candidate.trim_end_matches(['\r', '\n']);
        let ending = &candidate[body.len()..];
        let mut fields: Vec<&str> = body.split(' ').collect();
        // foundation component transport priority address port typ host ...
        if fields.len() < 8 || fields[6] != "typ" || fields[7] != "host" {
            return None;
        }
        let transport = fields[2].to_ascii_lowercase();
        let passive = body.contains("tcptype passive");
        let port = match transport.as_str() {
            "udp" => self.udp.addr.port().to_string(),
            "tcp" if passive => self.tcp.addr.port().to_string(),
            // An active TCP candidate's port is a placeholder.
            "tcp" => fields[5].to_owned(),
            _ => return None,
        };
        let ip = match external {
            Some(ip) => ip.to_string(),
            None if self.udp.addr.ip().is_unspecified() => fields[4].to_owned(),
            None => self.udp.addr.ip().to_string(),
        };
        fields[4] = &ip;
        fields[5] = &port;
        let names = format!("{transport} {ip} {port} {passive}");
        Some((format!("{}{ending}", fields.join(" ")), names))
    }
}

fn bind_pair(
    ip: IpAddr,
    udp_port: u16,
    tcp_port: Option<u16>,
) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let named = |proto: &str, port: u16, e: io::Error| {
        io::Error::new(e.kind(), format!("media port {ip}:{port}/{proto}: {e}"))
    };
    // With port 0, look for a number free for both.
    let attempts = if udp_port == 0 && tcp_port.is_none() {
        32
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp =
            std::net::UdpSocket::bind((ip, udp_port)).map_err(|e| named("udp", udp_port, e))?;
        let port = tcp_port.unwrap_or(udp.local_addr()?.port());
        match std::net::TcpListener::bind((ip, port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(named("tcp", port, e)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no media port")))
}

/// `n` random ICE characters (RFC 8445 ice-char: ALPHA / DIGIT / "+" / "/").
fn random_ice_chars(n: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// The local username fragment a STUN binding request is for: the part of
/// its USERNAME before `:` (RFC 8445 7.2.2: "RFRAG:LFRAG", the receiver's
/// first). `None` for anything else.
pub(crate) fn binding_request_ufrag(d: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const USERNAME: u16 = 0x0006;
    if d.len() < 20 || d[0] != 0x00 || d[1] != 0x01 || d[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    let body = d.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let size = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + size)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + size.div_ceil(4) * 4;
    }
    None
}

// ---------------------------------------------------------------- UDP

#[derive(Default)]
struct Routes {
    /// A connection's sockets, by its ICE username fragment: one, or one
    /// per interface when the port is bound to a wildcard address.
    by_ufrag: HashMap<String, Vec<Arc<Endpoint>>>,
    by_addr: HashMap<SocketAddr, Arc<Endpoint>>,
}

impl Routes {
    /// The socket a datagram from `from` to `to` (when known) goes to.
    fn find(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        to: Option<IpAddr>,
    ) -> Option<&Arc<Endpoint>> {
        binding_request_ufrag(datagram)
            .and_then(|u| self.by_ufrag.get(u))
            .and_then(|sockets| {
                sockets
                    .iter()
                    .find(|e| Some(e.key.ip()) == to)
                    .or_else(|| sockets.first())
            })
            .or_else(|| self.by_addr.get(&from))
    }
}

struct UdpMux {
    socket: Arc<dyn AsyncUdpSocket>,
    addr: SocketAddr,
    routes: Mutex<Routes>,
    /// Wakes every sender that found the socket full (a tokio socket
    /// remembers only the last waker).
    send_waker: Waker,
    send_waiters: Arc<SendWaiters>,
}

/// The drivers waiting for the shared socket to take a datagram.
#[derive(Default)]
struct SendWaiters(Mutex<Vec<Waker>>);

impl Wake for SendWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting = std::mem::take(&mut *self.0.lock());
        for waker in waiting {
            waker.wake();
        }
    }
}

impl UdpMux {
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let mut shared = Context::from_waker(&self.send_waker);
        match self.socket.poll_send(&mut shared, transmit) {
            Poll::Pending => {
                {
                    let mut waiting = self.send_waiters.0.lock();
                    if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                        waiting.push(cx.waker().clone());
                    }
                }
                // It may have turned writable between the two: try again,
                // so that wake-up is not lost.
                self.socket.poll_send(&mut shared, transmit)
            }
            ready => ready,
        }
    }

    /// Routes one datagram to its connection, or drops it.
    fn dispatch(&self, from: SocketAddr, to: Option<IpAddr>, datagram: &[u8]) {
        let waker = {
            let routes = self.routes.lock();
            match routes.find(datagram, from, to) {
                Some(e) => e.deliver(from, datagram),
                None => Err(()),
            }
        };
        match waker {
            Ok(Some(waker)) => waker.wake(),
            Ok(None) => {}
            Err(()) => count_dropped(1),
        }
    }

    fn claim(&self, endpoint: &Arc<Endpoint>, to: SocketAddr, evicted: Option<SocketAddr>) {
        let mut routes = self.routes.lock();
        if let Some(old) = evicted {
            if routes
                .by_addr
                .get(&old)
                .is_some_and(|e| e.id == endpoint.id)
            {
                routes.by_addr.remove(&old);
            }
        }
        routes.by_addr.insert(to, endpoint.clone());
    }

    fn forget(&self, endpoint: &Endpoint, ufrag: &str) {
        let peers = endpoint.state.lock().filter.peers().to_vec();
        let mut routes = self.routes.lock();
        if let Some(sockets) = routes.by_ufrag.get_mut(ufrag) {
            sockets.retain(|e| e.id != endpoint.id);
            if sockets.is_empty() {
                routes.by_ufrag.remove(ufrag);
            }
        }
        for peer in peers {
            if routes
                .by_addr
                .get(&peer)
                .is_some_and(|e| e.id == endpoint.id)
            {
                routes.by_addr.remove(&peer);
            }
        }
    }
}

/// Reads the UDP port until the ports are dropped.
async fn receive(mux: Arc<UdpMux>) {
    let gro = mux.socket.max_gro_segments().clamp(1, 64);
    let len = if gro > 1 { gro * 1500 } else { 2000 };
    let mut storage: Box<[Vec<u8>; RECV_BATCH]> = Box::new(std::array::from_fn(|_| vec![0; len]));
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    loop {
        let received = poll_fn(|cx| {
            let mut bufs = storage.each_mut().map(|b| IoSliceMut::new(b));
            mux.socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await;
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                // An ICMP error for an earlier send, or a descriptor
                // shortage: neither stops the port.
                tracing::debug!(error = %e, "media port receive");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
        };
        for (buf, m) in storage.iter().zip(meta.iter()).take(n) {
            let stride = if m.stride == 0 { m.len } else { m.stride };
            for datagram in buf[..m.len].chunks(stride.max(1)) {
                mux.dispatch(m.addr, m.dst_ip, datagram);
            }
        }
    }
}

/// The receive side of one connection's virtual socket.
struct Endpoint {
    id: u64,
    /// The address its connection knows its candidate by.
    key: SocketAddr,
    state: Mutex<EndpointState>,
}

#[derive(Default)]
struct EndpointState {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    waker: Option<Waker>,
    filter: DatagramFilter,
}

impl Endpoint {
    /// Queues a datagram; the driver's waker to wake, or `Err` when it was
    /// refused.
    fn deliver(&self, from: SocketAddr, datagram: &[u8]) -> Result<Option<Waker>, ()> {
        let mut st = self.state.lock();
        if st.queue.len() >= MAX_QUEUED_DATAGRAMS || !st.filter.admit(from, datagram) {
            return Err(());
        }
        let mut buf = st.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(datagram);
        st.queue.push_back((from, buf));
        Ok(st.waker.take())
    }
}

/// A peer connection's socket on the shared UDP port.
struct MuxedSocket {
    mux: Arc<UdpMux>,
    endpoint: Arc<Endpoint>,
    ufrag: String,
    key: SocketAddr,
    /// The source address to send from, on a wildcard port.
    src_ip: Option<IpAddr>,
}

impl fmt::Debug for MuxedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxedSocket")
            .field("port", &self.mux.addr)
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

impl Drop for MuxedSocket {
    fn drop(&mut self) {
        self.mux.forget(&self.endpoint, &self.ufrag);
    }
}

impl AsyncUdpSocket for MuxedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let sent = self
            .endpoint
            .state
            .lock()
            .filter
            .sent_to(transmit.destination);
        if let SentTo::New { evicted } = sent {
            self.mux
                .claim(&self.endpoint, transmit.destination, evicted);
        }
        match self.src_ip {
            Some(ip) => {
                let from_interface = Transmit {
                    src_ip: Some(ip),
                    ..transmit.clone()
                };
                self.mux.poll_send(cx, &from_interface)
            }
            None => self.mux.poll_send(cx, transmit),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.endpoint.state.lock();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = st.queue.pop_front() else {
                break;
            };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = len;
            m.stride = len;
            m.ecn = None;
            m.dst_ip = None;
            meta[n] = m;
            if st.spare.len() < SPARE_BUFFERS {
                st.spare.push(data);
            }
            n += 1;
        }
        if n == 0 {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn max_gso_segments(&self) -> usize {
        self.mux.socket.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        1
    }
}

// ---------------------------------------------------------------- TCP

type Handover = (Arc<dyn AsyncTcpStream>, SocketAddr);

struct TcpRoute {
    id: u64,
    key: SocketAddr,
    tx: tokio::sync::mpsc::Sender<Handover>,
}

struct TcpMux {
    addr: SocketAddr,
    /// A connection's listeners by its ICE username fragment (one per
    /// interface on a wildcard port).
    routes: Mutex<HashMap<String, Vec<TcpRoute>>>,
    /// Streams waiting for their first message, by source address.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

/// One pending stream counted until dropped.
struct Pending {
    mux: Arc<TcpMux>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.mux.pending.lock();
        if let Some(n) = pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

impl TcpMux {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let mut pending = self.pending.lock();
        let total: usize = pending.values().sum();
        let from_ip = pending.get(&ip).copied().unwrap_or(0);
        if total >= MAX_TCP_PENDING || from_ip >= MAX_TCP_PENDING_PER_IP {
            return None;
        }
        *pending.entry(ip).or_insert(0) += 1;
        Some(Pending {
            mux: self.clone(),
            ip,
        })
    }

    /// Hands a stream whose first bytes are `read` to the connection its
    /// binding request names.
    fn hand_over(&self, stream: Arc<dyn AsyncTcpStream>, from: SocketAddr, read: Vec<u8>) -> bool {
        let Some(ufrag) = read.get(2..).and_then(binding_request_ufrag) else {
            return false;
        };
        let to = stream.local_addr().ok().map(|a| a.ip());
        let routes = self.routes.lock();
        let Some(route) = routes.get(ufrag).and_then(|listeners| {
            listeners
                .iter()
                .find(|r| Some(r.key.ip()) == to)
                .or_else(|| listeners.first())
        }) else {
            return false;
        };
        let stream = PrefixedStream {
            inner: stream,
            read: Mutex::new(read),
            local: route.key,
        };
        route.tx.try_send((Arc::new(stream), from)).is_ok()
    }
}

/// Accepts on the TCP port until the ports are dropped.
async fn accept(mux: Arc<TcpMux>, listener: Arc<dyn AsyncTcpListener>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: back off a little.
                tracing::debug!(error = %e, "media port accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(pending) = mux.admit(from.ip()) else {
            count_refused_tcp();
            continue;
        };
        tokio::spawn(async move {
            let first = tokio::time::timeout(TCP_FIRST_MESSAGE_TIMEOUT, first_message(&*stream));
            let handed = match first.await {
                Ok(Ok(read)) => pending.mux.hand_over(stream, from, read),
                _ => false,
            };
            if !handed {
                count_refused_tcp();
            }
        });
    }
}

/// Reads a stream until its first RFC 4571 frame is whole; every byte
/// read so far.
async fn first_message(stream: &dyn AsyncTcpStream) -> io::Result<Vec<u8>> {
    let mut read = vec![0u8; 2 + MAX_FIRST_MESSAGE];
    let mut filled = 0;
    loop {
        if filled >= 2 {
            let need = 2 + usize::from(u16::from_be_bytes([read[0], read[1]]));
            if need > read.len() || need < 2 + 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a STUN message",
                ));
            }
            if filled >= need {
                read.truncate(filled);
                return Ok(read);
            }
        }
        let n = stream.read(&mut read[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
}

/// A connection's listener on the shared TCP port.
struct MuxedListener {
    mux: Arc<TcpMux>,
    id: u64,
    ufrag: String,
    key: SocketAddr,
    streams: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Handover>>,
}

impl fmt::Debug for MuxedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxedListener")
            .field("port", &self.mux.addr)
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

impl Drop for MuxedListener {
    fn drop(&mut self) {
        let mut routes = self.mux.routes.lock();
        if let Some(listeners) = routes.get_mut(&self.ufrag) {
            listeners.retain(|r| r.id != self.id);
            if listeners.is_empty() {
                routes.remove(&self.ufrag);
            }
        }
    }
}

impl AsyncTcpListener for MuxedListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>>
    {
        Box::pin(async move {
            match self.streams.lock().await.recv().await {
                Some(handed) => Ok(handed),
                // Nothing more will come; an error would be retried at once.
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }
}

/// A stream whose first bytes were read by the router: they are read
/// again first.
struct PrefixedStream {
    inner: Arc<dyn AsyncTcpStream>,
    read: Mutex<Vec<u8>>,
    local: SocketAddr,
}

impl fmt::Debug for PrefixedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncTcpStream for PrefixedStream {
    fn read<'a, 'b>(
        &'a self,
        buf: &'b mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            {
                let mut read = self.read.lock();
                if !read.is_empty() {
                    let n = buf.len().min(read.len());
                    buf[..n].copy_from_slice(&read[..n]);
                    read.drain(..n);
                    return Ok(n);
                }
            }
            self.inner.read(buf).await
        })
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
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with USERNAME `name` (and a trailing attribute).
    fn binding_request(name: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(name.len() as u16).to_be_bytes());
        attrs.extend_from_slice(name.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        attrs.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn a_binding_request_names_its_receiver_first() {
        assert_eq!(
            binding_request_ufrag(&binding_request("serverfrag:clientfrag")),
            Some("serverfrag")
        );
        assert_eq!(binding_request_ufrag(&binding_request("abc")), Some("abc"));
    }

    #[test]
    fn anything_else_names_no_one() {
        let mut response = binding_request("a:b");
        response[0] = 0x01; // a success response
        assert_eq!(binding_request_ufrag(&response), None);
        let mut truncated = binding_request("serverfrag:clientfrag");
        truncated.truncate(30);
        assert_eq!(binding_request_ufrag(&truncated), None);
        let mut no_magic = binding_request("a:b");
        no_magic[4] = 0;
        assert_eq!(binding_request_ufrag(&no_magic), None);
        assert_eq!(binding_request_ufrag(&[0x80, 102, 0, 1]), None);
        assert_eq!(binding_request_ufrag(&binding_request(":b")), None);
        // An attribute that claims more than the message holds.
        let mut lying = binding_request("a:b");
        lying[22] = 0xff;
        assert_eq!(binding_request_ufrag(&lying), None);
    }

    #[tokio::test]
    async fn candidates_name_the_shared_ports() {
        let ports = MediaPorts::bind("127.0.0.1".parse().unwrap(), 0, None).unwrap();
        let (udp, tcp) = (ports.udp_addr().port(), ports.tcp_addr().port());
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n\
            a=candidate:2 1 tcp 1671430143 127.0.0.1 40002 typ host tcptype passive\r\n\
            a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
            a=candidate:4 1 udp 1694498815 198.51.100.7 40003 typ srflx raddr 0.0.0.0 rport 0\r\n";
        let out = ports.advertised(Some("203.0.113.50".parse().unwrap()), sdp);
        assert_eq!(
            out,
            format!(
                "v=0\r\n\
            a=candidate:1 1 udp 2130706431 203.0.113.50 {udp} typ host\r\n\
            a=candidate:2 1 tcp 1671430143 203.0.113.50 {tcp} typ host tcptype passive\r\n\
            a=candidate:3 1 tcp 1671430143 203.0.113.50 9 typ host tcptype active\r\n\
            a=candidate:4 1 udp 1694498815 198.51.100.7 40003 typ srflx raddr 0.0.0.0 rport 0\r\n"
            )
        );
        let plain = ports.advertised(None, sdp);
        assert!(plain.contains(&format!("127.0.0.1 {udp} typ host")));
    }

    #[tokio::test]
    async fn port_zero_finds_one_number_for_both() {
        let ports = MediaPorts::bind("127.0.0.1".parse().unwrap(), 0, None).unwrap();
        assert_eq!(ports.udp_addr().port(), ports.tcp_addr().port());
        let taken = ports.udp_addr().port();
        let err = MediaPorts::bind("127.0.0.1".parse().unwrap(), taken, None).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("media port 127.0.0.1:{taken}/udp")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn routes_go_with_their_socket() {
        let ports = MediaPorts::bind("127.0.0.1".parse().unwrap(), 0, None).unwrap();
        let key: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let socket = ports.udp_socket("frag", key);
        let _listener = ports.tcp_listener("frag", key);
        assert_eq!(ports.connections(), 1);
        drop(socket);
        assert_eq!(ports.connections(), 0);
        assert!(ports.udp.routes.lock().by_addr.is_empty());
    }
}
