//! The common harness for Kaigi's end-to-end suites: a real server on
//! 127.0.0.1 with an ephemeral port, SDK clients, raw WebSocket clients,
//! admin calls, and event waits with timeouts (never sleeps).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kaigi_proto::admin::{read_response, AdminError, DescribedRoom, Request};
use kaigi_proto::{usersig, Role, RoomId, SdkAppId, UserId, ADMIN_IDENTIFIER};
use kaigi_sdk::{Client, ClientEvent, ClientOptions, EventStream, ReconnectPolicy};
use kaigi_server::{AppCredential, Config, ServerHandle};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The test application.
pub const APP: SdkAppId = SdkAppId(1_400_000_001);
/// Its secret key.
pub const KEY: &str = "kaigi-test-secret";
/// A second application on the same server.
pub const OTHER_APP: SdkAppId = SdkAppId(1_400_000_002);
/// Its secret key.
pub const OTHER_KEY: &str = "kaigi-other-secret";
/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A raw signaling connection.
pub type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Unix seconds now.
pub use kaigi_proto::unix_now as now;

/// A UserSig for `user` of the test app, valid for a day.
pub fn sig(user: &str) -> String {
    usersig::generate(APP, KEY, user, 86_400, now())
}

/// A numeric room.
pub fn room(n: u64) -> RoomId {
    RoomId::num(n).unwrap()
}

/// A string room.
pub fn str_room(s: &str) -> RoomId {
    RoomId::str(s).unwrap()
}

/// A server started for one test.
pub struct TestServer {
    handle: Option<ServerHandle>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A valid admin query string for the test app (a fresh 5-minute sig).
pub fn admin_query() -> String {
    let admin_sig = usersig::generate(APP, KEY, ADMIN_IDENTIFIER, 300, now());
    format!(
        "sdkappid={}&identifier={ADMIN_IDENTIFIER}&usersig={admin_sig}&random=1&contenttype=json",
        APP.0
    )
}

/// The config every test server starts from.
pub fn test_config(listen: SocketAddr) -> Config {
    Config::new(
        listen,
        vec![
            AppCredential {
                id: APP,
                key: KEY.into(),
            },
            AppCredential {
                id: OTHER_APP,
                key: OTHER_KEY.into(),
            },
        ],
    )
}

/// Logs to stderr when `RUST_LOG` asks (e.g. `kaigi_server=debug`).
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

impl TestServer {
    /// Starts a server with the test apps.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `edit` adjusts the config.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        logs();
        let mut config = test_config("127.0.0.1:0".parse().unwrap());
        edit(&mut config);
        let handle = kaigi_server::start(config).await.expect("server starts");
        TestServer {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    /// Starts a server on a given address (to restart on the same port).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let handle = kaigi_server::start(test_config(addr))
            .await
            .expect("server restarts");
        TestServer {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    /// A handle on a server running elsewhere (another process) at `addr`,
    /// with the test apps. Only the address-based helpers work.
    pub fn remote(addr: SocketAddr) -> Self {
        TestServer { handle: None, addr }
    }

    /// The running server.
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    /// Its membership in a service of several nodes (it must be in one).
    pub fn cluster(&self) -> std::sync::Arc<kaigi_server::cluster::Cluster> {
        self.handle()
            .shared()
            .cluster
            .get()
            .expect("in a service")
            .clone()
    }

    /// `ws://ADDR`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Options for `user` with a valid UserSig and quick reconnects.
    pub fn options(&self, user: &str) -> ClientOptions {
        let mut o = ClientOptions::new(self.url(), APP, UserId::new(user).unwrap(), sig(user));
        o.reconnect = ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            give_up_after: Duration::from_secs(20),
        };
        o
    }

    /// A client for `user` and its event stream.
    pub fn client(&self, user: &str) -> (Client, EventStream) {
        let c = Client::new(self.options(user)).unwrap();
        let e = c.events();
        (c, e)
    }

    /// A client for `user` that has joined `room` as an anchor.
    pub async fn joined(&self, user: &str, room: &RoomId) -> (Client, EventStream) {
        let (c, mut e) = self.client(user);
        c.join(room.clone(), Role::Anchor).await.expect("join");
        drain(&mut e);
        (c, e)
    }

    /// [`TestServer::joined`] with owned arguments, for `join_all`.
    pub async fn joined_owned(&self, user: String, room: RoomId) -> (Client, EventStream) {
        self.joined(&user, &room).await
    }

    /// Calls the admin API with a valid administrator UserSig.
    pub async fn admin(&self, action: &str, mut body: Value) -> Value {
        if body.get("SdkAppId").is_none() {
            body["SdkAppId"] = json!(APP.0);
        }
        self.admin_raw("POST", action, &admin_query(), body.to_string())
            .await
    }

    /// Calls the admin API with a given method, query string and body.
    pub async fn admin_raw(&self, method: &str, action: &str, query: &str, body: String) -> Value {
        let url = format!("http://{}/api/{action}?{query}", self.addr);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = reqwest::Client::new()
            .request(method, url)
            .body(body)
            .send()
            .await
            .expect("admin call");
        assert_eq!(resp.status(), 200, "admin answers 200 with a JSON body");
        resp.json().await.expect("admin JSON")
    }

    /// Calls the admin API with a typed request: the answer's fields, or
    /// its error.
    pub async fn request(&self, request: &Request) -> Result<Map<String, Value>, AdminError> {
        let body = request.body(APP).to_string();
        let answer = self
            .admin_raw("POST", request.action().name(), &admin_query(), body)
            .await;
        read_response(&answer).cloned()
    }

    /// Removes `users` from `room` (`RemoveUser` or its string twin).
    pub async fn remove_users(&self, room: &RoomId, users: &[&str]) {
        let users = users.iter().map(|u| UserId::new(*u).unwrap()).collect();
        let room = room.clone();
        self.request(&Request::RemoveUser { room, users })
            .await
            .expect("RemoveUser");
    }

    /// Dismisses `room` (`DismissRoom` or its string twin).
    pub async fn dismiss(&self, room: &RoomId) {
        let room = room.clone();
        self.request(&Request::DismissRoom { room })
            .await
            .expect("DismissRoom");
    }

    /// `DescribeRoom`'s user ids, or `None` when the room does not exist.
    pub async fn users_in(&self, room: &RoomId) -> Option<Vec<String>> {
        let room = room.clone();
        match self.request(&Request::DescribeRoom { room }).await {
            Ok(fields) => {
                let described: DescribedRoom =
                    serde_json::from_value(Value::Object(fields)).expect("DescribeRoom's answer");
                Some(
                    described
                        .users
                        .into_iter()
                        .map(|u| u.user_id.to_string())
                        .collect(),
                )
            }
            Err(e) => {
                assert_eq!(e.code, "FailedOperation.RoomNotExist", "{e}");
                None
            }
        }
    }

    /// Opens a raw signaling WebSocket.
    pub async fn raw(&self) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("ws connect");
        ws
    }

    /// Waits until exactly `n` signaling sessions are open on the server.
    pub async fn wait_sessions(&self, n: usize) {
        let mut rx = self.handle().shared().watch_sessions();
        within(&format!("{n} open sessions"), rx.wait_for(|c| *c == n))
            .await
            .expect("server running");
    }

    /// Stops the server and waits until its sessions are gone.
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shared().shutdown.cancel();
        }
    }
}

/// Throws away events already received.
pub fn drain(events: &mut EventStream) -> Vec<ClientEvent> {
    let mut v = Vec::new();
    while let Some(e) = events.try_recv() {
        v.push(e);
    }
    v
}

/// Publishes a 320×240 test pattern and a tone from `client`; the stream
/// is returned so it stays open.
pub async fn publish_pattern(client: &Client) -> kaigi_sdk::LocalStream {
    let stream = kaigi_sdk::LocalStream::synthetic(
        client.user_id(),
        kaigi_sdk::SyntheticSource {
            video: Some((320, 240)),
            ..Default::default()
        },
    )
    .expect("a synthetic stream");
    within("publish", client.publish(&stream))
        .await
        .expect("the stream is published");
    stream
}

/// Waits until `user`'s `main` stream at `client` decodes at least
/// `frames` more frames.
pub async fn frames_arrive(client: &kaigi_sdk::Client, user: &str, frames: u64) {
    stream_frames_arrive(client, user, kaigi_sdk::StreamType::Main, frames).await
}

/// Waits until `user`'s stream of `stream_type` at `client` decodes at
/// least `frames` more frames.
pub async fn stream_frames_arrive(
    client: &kaigi_sdk::Client,
    user: &str,
    stream_type: kaigi_sdk::StreamType,
    frames: u64,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut start = None;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let got = client
            .remote_streams()
            .into_iter()
            .find(|s| s.user_id().as_str() == user && s.stream_type() == stream_type)
            .map(|s| (s.frames_decoded(), s.packets_received(), s.audio_packets()));
        match (got, start) {
            (Some((n, _, _)), None) => start = Some(n),
            (Some((n, _, _)), Some(s)) if n >= s + frames => return,
            _ => {}
        }
        last = got;
        // Polling a counter, not synchronizing: the frames come at their own pace.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "{frames} frames of {user}'s {stream_type} stream did not arrive: \
         (frames, packets, audio packets) = {last:?}"
    );
}

/// The UDP sockets this process has open, by inode, with the IPv4 address
/// each is bound to (`None` for IPv6 ones).
pub fn udp_socket_addrs() -> std::collections::HashMap<u64, Option<SocketAddr>> {
    let mut udp = std::collections::HashMap::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(inode) = fields.get(9).and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            // "0100007F:1F90": the address in host byte order, the port in hex.
            let addr = fields.get(1).and_then(|a| {
                let (ip, port) = a.split_once(':')?;
                let ip = u32::from_str_radix(ip, 16).ok()?;
                let port = u16::from_str_radix(port, 16).ok()?;
                (a.len() == 13)
                    .then(|| SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(ip)), port)))
            });
            udp.insert(inode, addr);
        }
    }
    let mut mine = std::collections::HashMap::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<u64>().ok())
            {
                if let Some(addr) = udp.get(&inode) {
                    mine.insert(inode, *addr);
                }
            }
        }
    }
    mine
}

/// Inodes of the UDP sockets this process has open.
pub fn udp_sockets() -> std::collections::HashSet<u64> {
    udp_socket_addrs().into_keys().collect()
}

/// Reads up to the reply of type `kind`, past room events.
pub async fn raw_reply(ws: &mut RawWs, kind: &str) {
    loop {
        let m = raw_recv(ws).await.expect("open");
        if m.get("reqId").is_some() {
            assert_eq!(m["type"], kind, "{m}");
            return;
        }
    }
}

/// A raw signaling connection whose receive buffer is as small as the
/// kernel allows, so the server's writes back up after a few kilobytes.
pub async fn tiny_window_ws(addr: SocketAddr) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    let tcp = socket.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .expect("handshake");
    ws
}

/// Awaits `fut` or fails the test after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits for the first event matching `pred`, returning it and every event
/// seen before it.
pub async fn wait_for(
    events: &mut EventStream,
    what: &str,
    pred: impl Fn(&ClientEvent) -> bool,
) -> (ClientEvent, Vec<ClientEvent>) {
    let mut before = Vec::new();
    within(what, async {
        loop {
            let e = events.recv().await.expect("event stream open");
            if pred(&e) {
                return (e, before);
            }
            before.push(e);
        }
    })
    .await
}

/// A user who joins and leaves `room` over and over on one raw connection
/// (a long user id makes each room event as large as events get), so the
/// others get thousands of events. Bounded in count; [`Churn::stop`] ends
/// it early and hands back the connection.
pub struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<RawWs>,
}

impl Churn {
    /// The churning user's id.
    pub const USER: &'static str = "churner-with-a-long-user-id-0032";

    /// Starts churning `room` on `ws`.
    pub fn start(mut ws: RawWs, room: u64) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            for i in 0..50_000u64 {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                raw_send(&mut ws, raw_join(i * 2, Self::USER, room)).await;
                raw_reply(&mut ws, "joined").await;
                raw_send(&mut ws, json!({"type": "leave", "reqId": i * 2 + 1})).await;
                raw_reply(&mut ws, "left").await;
            }
            ws
        });
        Churn { stop, task }
    }

    /// Stops, and returns the connection once the loop has ended.
    pub async fn stop(self) -> RawWs {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        within("the churn to stop", self.task)
            .await
            .expect("the churn task")
    }
}

/// Waits (within the test deadline) for the next event named `name`
/// (`peer-join`, `client-banned`, …): it, and the events before it.
pub async fn expect_event(events: &mut EventStream, name: &str) -> (ClientEvent, Vec<ClientEvent>) {
    wait_for(events, name, |e| e.name() == name).await
}

/// Sends a JSON message on a raw connection.
pub async fn raw_send(ws: &mut RawWs, v: Value) {
    ws.send(Message::text(v.to_string()))
        .await
        .expect("raw send");
}

/// The next text message on a raw connection as JSON, or `None` when closed
/// (the close frame's code returned separately by [`raw_close_code`]).
pub async fn raw_recv(ws: &mut RawWs) -> Option<Value> {
    within("a raw message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
}

/// Reads until the server closes, returning the close code it sent.
pub async fn raw_close_code(ws: &mut RawWs) -> Option<u16> {
    within("the server to close", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
}

/// A raw join message for the test app.
pub fn raw_join(req_id: u64, user: &str, room: u64) -> Value {
    json!({"type":"join","reqId":req_id,"sdkAppId":APP.0,"userId":user,"userSig":sig(user),"roomId":room})
}

/// Helpers for the benchmark binaries.
pub mod balancer;
pub mod netlab;
pub mod node;
pub mod redis;
pub mod xvfb;

pub mod bench {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    /// Latencies summed up: the median, the 99th percentile and the
    /// slowest, in ms, of `n`.
    pub struct Stats {
        /// The median, ms.
        pub p50: f64,
        /// The 99th percentile, ms.
        pub p99: f64,
        /// The slowest, ms.
        pub max: f64,
        /// How many.
        pub n: usize,
    }

    /// Kick latency: `n` users join room `r` through `entry`, one at a
    /// time, and each is removed with `RemoveUser` sent to `via`; the time
    /// from the request until the user's `client-banned`.
    pub async fn kick_latencies(
        entry: &super::TestServer,
        via: &super::TestServer,
        r: u64,
        n: usize,
    ) -> Stats {
        use super::{room, APP};
        use kaigi_sdk::ClientEvent;
        let http = reqwest::Client::new();
        let url = format!(
            "http://{}/api/RemoveUser?{}",
            via.addr,
            super::admin_query()
        );
        let _watcher = entry.joined("watcher", &room(r)).await;
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let user = format!("k{i}");
            let (_c, mut events) = entry.joined(&user, &room(r)).await;
            let body =
                serde_json::json!({"SdkAppId": APP.0, "RoomId": r, "UserIds": [user]}).to_string();
            let t = std::time::Instant::now();
            let call = http.post(&url).body(body).send();
            let banned = async {
                loop {
                    if let Some(ClientEvent::ClientBanned { .. }) = events.recv().await {
                        return t.elapsed();
                    }
                }
            };
            let (resp, elapsed) = tokio::join!(call, banned);
            resp.expect("RemoveUser answered");
            v.push(elapsed);
        }
        stats(v)
    }

    /// The [`Stats`] of some latencies (at least one).
    pub fn stats(mut v: Vec<Duration>) -> Stats {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| ms(v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]);
        Stats {
            p50: at(0.50),
            p99: at(0.99),
            max: ms(*v.last().expect("at least one")),
            n: v.len(),
        }
    }

    use super::test_config;

    const SERVE_ENV: &str = "KAIGI_BENCH_SERVE";
    /// The child server's listen address (default: a free loopback port).
    pub const LISTEN_ENV: &str = "KAIGI_BENCH_LISTEN";
    /// The child server's heartbeat timeout in seconds (default: 600).
    pub const HEARTBEAT_ENV: &str = "KAIGI_BENCH_HEARTBEAT";
    /// The child server's per-IP connection cap (default: the server's).
    pub const PER_IP_ENV: &str = "KAIGI_BENCH_PER_IP";
    /// Set: the child server has no practical rate limit (for churn).
    pub const FAST_ENV: &str = "KAIGI_BENCH_FAST";
    /// Set: admin calls are not limited to TRTC's 20 a second per action
    /// (for latency benches that call one action back to back).
    pub const ADMIN_UNLIMITED_ENV: &str = "KAIGI_BENCH_ADMIN_UNLIMITED";
    /// Set to a Redis URL: the child server is a node of the service on it
    /// (its id from [`NODE_ENV`]).
    pub const REDIS_ENV: &str = "KAIGI_BENCH_REDIS";
    /// The child node's id (with [`REDIS_ENV`]).
    pub const NODE_ENV: &str = "KAIGI_BENCH_NODE";

    /// A benchmark binary's `main`: in the child process, serve; otherwise
    /// run `bench` (told whether `--quick` was given) on a multi-threaded
    /// runtime.
    pub fn main<F: std::future::Future<Output = ()>>(bench: impl FnOnce(bool) -> F) {
        if serve_child_if_asked() {
            return;
        }
        let quick = std::env::args().any(|a| a == "--quick");
        crate::logs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(bench(quick));
    }

    /// In a benchmark's child process, runs the server and returns true;
    /// otherwise returns false at once.
    pub fn serve_child_if_asked() -> bool {
        if std::env::var_os(SERVE_ENV).is_none() {
            return false;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let env = |k: &str| std::env::var(k).ok();
            let listen = env(LISTEN_ENV).unwrap_or_else(|| "127.0.0.1:0".into());
            let mut cfg = test_config(listen.parse().expect("addr"));
            cfg.heartbeat_timeout = Duration::from_secs(
                env(HEARTBEAT_ENV)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(600),
            );
            if let Some(n) = env(PER_IP_ENV).and_then(|s| s.parse().ok()) {
                cfg.max_connections_per_ip = n;
            }
            if env(ADMIN_UNLIMITED_ENV).is_some() {
                cfg.admin_rate_limit = kaigi_server::RateLimit {
                    per_sec: 1_000_000,
                    burst: 1_000_000,
                };
            }
            if let Some(redis) = env(REDIS_ENV) {
                let id = env(NODE_ENV).unwrap_or_else(kaigi_server::cluster::generated_node_id);
                cfg.cluster = Some(kaigi_server::cluster::ClusterConfig::new(&redis, &id, ""));
            }
            if env(FAST_ENV).is_some() {
                cfg.rate_limit = kaigi_server::RateLimit {
                    per_sec: 1_000_000,
                    burst: 1_000_000,
                };
            }
            let h = kaigi_server::start(cfg).await.expect("server starts");
            println!("{}", h.local_addr());
            // Serve until the parent closes our stdin.
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            })
            .await;
            h.shutdown().await;
        });
        true
    }

    /// A process's CPU seconds so far (user + system) and resident KiB,
    /// from /proc.
    pub fn proc_stats(pid: u32) -> (f64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The fields after the command name (which is in parentheses).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // USER_HZ on Linux.
        ((field(11) + field(12)) / 100.0, rss)
    }

    /// The machine, for the record: (date, cores, CPU model).
    pub fn machine() -> (String, usize, String) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        (date, cores, cpu)
    }

    /// Writes `body` as the section `name` of BENCHMARKS.md (between
    /// `<!-- name:start -->` and `<!-- name:end -->`), and `json` to
    /// `bench-results/<name>.json`.
    pub fn write_results(name: &str, body: &str, json: &serde_json::Value) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let _ = std::fs::create_dir_all(root.join("bench-results"));
        let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
        let _ = std::fs::write(
            root.join(format!("bench-results/{name}.json")),
            pretty + "\n",
        );
        let (start, end) = (
            format!("<!-- {name}:start -->"),
            format!("<!-- {name}:end -->"),
        );
        let section = format!("{start}\n{body}{end}");
        let path = root.join("BENCHMARKS.md");
        let old =
            std::fs::read_to_string(&path).unwrap_or_else(|_| "# Kaigi benchmarks\n\n".into());
        let new = match (old.find(&start), old.find(&end)) {
            (Some(a), Some(b)) => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
            _ => format!("{old}\n{section}\n"),
        };
        let _ = std::fs::write(&path, new);
    }

    /// A server in a child process (the benchmark binary itself, re-run),
    /// so the server's CPU and memory are its own. Ends when dropped.
    pub struct ChildServer {
        /// The child process.
        pub child: std::process::Child,
        /// Where it listens.
        pub addr: std::net::SocketAddr,
    }

    impl ChildServer {
        /// Starts it and waits for its address.
        pub fn start() -> Self {
            Self::start_with(&[])
        }

        /// Starts it with settings (`LISTEN_ENV` and the others) and waits
        /// for its address.
        pub fn start_with(settings: &[(&str, String)]) -> Self {
            let mut child = Command::new(std::env::current_exe().expect("own path"))
                .env(SERVE_ENV, "1")
                .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("child server starts");
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped stdout");
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("address line");
            ChildServer {
                addr: line.trim().parse().expect("an address"),
                child,
            }
        }

        /// Stops it.
        pub fn stop(mut self) {
            drop(self.child.stdin.take());
            let _ = self.child.wait();
        }
    }
}
