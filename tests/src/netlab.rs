//! Test hosts made of network namespaces: switches (a bridge in a
//! namespace of its own), hosts attached to them with TEST-NET addresses,
//! NAT routers (nftables masquerade) and rules such as "drop all UDP". The
//! lab gives no namespace a route out of it, and removes every namespace it
//! made when dropped (also when a test fails). Code runs inside a host
//! through [`Lab::spawn_in`]: a thread that enters the namespace and runs
//! its own tokio runtime, so every socket it opens lives there.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `scripts/setup`
//! installs them. Without them a lab fails with a message saying so.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};

/// A set of namespaces, removed together.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    veths: usize,
}

/// One side of a router: the switch it attaches to and its address there.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The switch.
    pub switch: &'a Ns,
    /// The router's address on it, e.g. `203.0.113.1/24`.
    pub cidr: &'a str,
}

/// The name of a namespace in a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns(pub String);

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e} (scripts/setup installs iproute2 and nftables)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("not permitted") {
            " (network-namespace tests need root)"
        } else {
            ""
        };
        Err(format!(
            "{program} {}: {}{hint}",
            args.join(" "),
            err.trim()
        ))
    }
}

impl Lab {
    /// An empty lab; `tag` (a few letters) names its namespaces.
    pub fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("kg{}{tag}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            veths: 0,
        }
    }

    fn ip(&self, args: &[&str]) {
        run("ip", args, None).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A new namespace with its loopback up (and nothing else).
    pub fn namespace(&mut self, name: &str) -> Ns {
        let full = format!("{}-{name}", self.prefix);
        // A leftover of a killed run of the same process id.
        let _ = run("ip", &["netns", "del", &full], None);
        self.ip(&["netns", "add", &full]);
        self.namespaces.push(full.clone());
        self.ip(&["-n", &full, "link", "set", "lo", "up"]);
        Ns(full)
    }

    /// A switch: a namespace holding a bridge that hosts attach to.
    pub fn switch(&mut self, name: &str) -> Ns {
        let ns = self.namespace(name);
        self.ip(&["-n", &ns.0, "link", "add", "br0", "type", "bridge"]);
        self.ip(&["-n", &ns.0, "link", "set", "br0", "up"]);
        ns
    }

    /// Connects `host` to `switch` with a new interface holding `cidr`
    /// (e.g. `203.0.113.10/24`); returns the interface's name in `host`.
    pub fn attach(&mut self, host: &Ns, switch: &Ns, cidr: &str) -> String {
        self.veths += 1;
        let inside = format!("eth{}", self.veths);
        let outside = format!("p{}", self.veths);
        self.ip(&[
            "link", "add", &inside, "netns", &host.0, "type", "veth", "peer", "name", &outside,
            "netns", &switch.0,
        ]);
        self.ip(&["-n", &switch.0, "link", "set", &outside, "master", "br0"]);
        self.ip(&["-n", &switch.0, "link", "set", &outside, "up"]);
        self.ip(&["-n", &host.0, "addr", "add", cidr, "dev", &inside]);
        self.ip(&["-n", &host.0, "link", "set", &inside, "up"]);
        inside
    }

    /// Routes `host`'s traffic for other networks through `via` (an
    /// address inside the lab).
    pub fn default_route(&self, host: &Ns, via: &str) {
        self.ip(&["-n", &host.0, "route", "add", "default", "via", via]);
    }

    /// Loads an nftables ruleset into `host`.
    pub fn nft(&self, host: &Ns, ruleset: &str) {
        run(
            "ip",
            &["netns", "exec", &host.0, "nft", "-f", "-"],
            Some(ruleset),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A call from `publisher` to `receiver` (each in its namespace), in
    /// room `r` of the server at `server`: the publisher sends the 640×480
    /// test pattern at 30 fps and a tone; the receiver waits for its first
    /// frame, lets `settle` pass, and measures over `window`. `Err` when no
    /// picture arrived.
    pub fn measure_call(
        &self,
        server: std::net::SocketAddr,
        publisher: &Ns,
        receiver: &Ns,
        r: u64,
        settle: std::time::Duration,
        window: std::time::Duration,
    ) -> Result<CallRates, String> {
        let _alice = self.publish(publisher, server, r, "alice");
        let bob = self.watch(receiver, server, r, "bob", "alice");
        bob.first_frame()?;
        bob.skip(settle);
        let got = bob.measure(window);
        let transport = bob.transport(crate::WAIT)?;
        Ok(CallRates {
            fps: got.fps,
            audio_per_sec: got.audio_per_sec,
            transport,
        })
    }

    /// `user` joins room `r` of the server at `server` from `ns` and
    /// publishes the 640×480 test pattern (in simulcast layers) at 30 fps
    /// and a tone, reporting a [`Sample`] every 250 ms, until the returned
    /// party is dropped.
    pub fn publish(&self, ns: &Ns, server: std::net::SocketAddr, r: u64, user: &str) -> Party {
        self.party(ns, server, r, user, true, None)
    }

    /// `user` joins room `r` of the server at `server` from `ns` and
    /// watches `of`'s stream, reporting a [`Sample`] every 250 ms until the
    /// returned party is dropped.
    pub fn watch(
        &self,
        ns: &Ns,
        server: std::net::SocketAddr,
        r: u64,
        user: &str,
        of: &str,
    ) -> Party {
        self.party(ns, server, r, user, false, Some(of.to_owned()))
    }

    fn party(
        &self,
        ns: &Ns,
        server: std::net::SocketAddr,
        r: u64,
        user: &str,
        publish: bool,
        of: Option<String>,
    ) -> Party {
        use kaigi_sdk::{ClientEvent, LocalStream, SyntheticSource};
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, samples) = std::sync::mpsc::channel();
        let user = user.to_owned();
        let thread = self.spawn_in(ns, move || async move {
            let server = crate::TestServer::remote(server);
            let (client, mut events) = server.joined(&user, &crate::room(r)).await;
            let _stream = if publish {
                let stream = LocalStream::synthetic(client.user_id(), SyntheticSource::default())
                    .expect("a 640×480 test pattern");
                crate::within("publish", client.publish(&stream))
                    .await
                    .expect("published");
                Some(stream)
            } else {
                None
            };
            let of = of.unwrap_or_default();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            let (mut paused, mut paused_events) = (false, 0);
            let (mut transport, mut quality) = (None, None);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                    event = events.recv() => {
                        match event {
                            Some(ClientEvent::StreamUpdated { user_id, video_paused, .. })
                                if user_id.as_str() == of =>
                            {
                                paused_events += usize::from(video_paused && !paused);
                                paused = video_paused;
                            }
                            Some(ClientEvent::NetworkQuality {
                                transport: t,
                                uplink_network_quality: up,
                                downlink_network_quality: down,
                                ..
                            }) => {
                                transport = t.or(transport);
                                quality = Some((up, down));
                            }
                            Some(_) => {}
                            None => break,
                        }
                        continue;
                    }
                }
                let remote = client
                    .remote_streams()
                    .into_iter()
                    .find(|s| s.user_id().as_str() == of);
                let (frames, audio, size, played) =
                    remote.map_or((0, 0, None, Default::default()), |s| {
                        let size = s.video().borrow().as_ref().map(|f| (f.width, f.height));
                        (s.frames_decoded(), s.audio_packets(), size, s.audio_stats())
                    });
                let sample = Sample {
                    at: std::time::Instant::now(),
                    frames,
                    audio,
                    played,
                    size,
                    paused,
                    paused_events,
                    transport: transport.clone(),
                    quality,
                };
                if tx.send(sample).is_err() {
                    break;
                }
            }
            let _ = crate::within("the party leaves", client.leave()).await;
        });
        Party {
            stop: Some(stop),
            thread: Some(thread),
            samples,
        }
    }

    /// Removes a cap [`Lab::cap`] put on.
    pub fn uncap(&self, host: &Ns, iface: &str, switch: &Ns, down: bool) {
        let (ns, dev) = if down {
            (&switch.0, iface.replacen("eth", "p", 1))
        } else {
            (&host.0, iface.to_owned())
        };
        self.ip(&[
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", &dev, "root",
        ]);
    }

    /// Caps what `host` receives (`down`) or sends (`up`) over `iface` (an
    /// interface [`Lab::attach`] made to `switch`) at `kbit` kbit/s, with a
    /// token bucket (`tc tbf`) whose queue holds up to 200 ms, as a home
    /// router's does.
    pub fn cap(&self, host: &Ns, iface: &str, switch: &Ns, down: bool, kbit: u32) {
        // The veth's other end, in the switch, sends what the host receives.
        let (ns, dev) = if down {
            (&switch.0, iface.replacen("eth", "p", 1))
        } else {
            (&host.0, iface.to_owned())
        };
        let rate = format!("{kbit}kbit");
        self.ip(&[
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", &dev, "root", "tbf", "rate", &rate,
            "burst", "4kb", "latency", "200ms",
        ]);
    }

    /// Drops `percent` % of the UDP and TCP packets `host` receives, at
    /// random (nftables `numgen`).
    pub fn random_loss(&self, host: &Ns, percent: u32) {
        self.nft(
            host,
            &format!(
                "table inet loss {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 meta l4proto {{ udp, tcp }} numgen random mod 100 < {percent} drop\n  }}\n}}\n"
            ),
        );
    }

    /// A NAT router between `lan` and `public`: forwards, and masquerades
    /// what leaves on the public side. Returns the router's namespace.
    pub fn nat_router(&mut self, name: &str, public: Side, lan: Side) -> Ns {
        let router = self.namespace(name);
        let wan = self.attach(&router, public.switch, public.cidr);
        self.attach(&router, lan.switch, lan.cidr);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &router.0,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.nft(
            &router,
            &format!(
                "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    \
                 oifname \"{wan}\" masquerade\n  }}\n}}\n"
            ),
        );
        router
    }

    /// A 1:1 NAT router (a cloud VM's public IP): `external` on the public
    /// side is `internal` on the LAN, both ways. Returns the router's
    /// namespace.
    pub fn one_to_one_router(
        &mut self,
        name: &str,
        public: Side,
        lan: Side,
        external: &str,
        internal: &str,
    ) -> Ns {
        let router = self.nat_router(name, public, lan);
        // The router answers for the external address on the public side.
        let wan = format!("eth{}", self.veths - 1);
        self.ip(&[
            "-n",
            &router.0,
            "addr",
            "add",
            &format!("{external}/32"),
            "dev",
            &wan,
        ]);
        self.nft(
            &router,
            &format!(
                "table ip onetoone {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    \
                 ip daddr {external} dnat to {internal}\n  }}\n  chain post {{\n    \
                 type nat hook postrouting priority 90;\n    ip saddr {internal} snat to {external}\n  }}\n}}\n"
            ),
        );
        router
    }

    /// Runs `task` inside `ns`: on a thread that enters the namespace and
    /// runs it on a runtime of its own (every socket it opens, and every
    /// thread that runtime starts, is in the namespace).
    pub fn spawn_in<T, F, Fut>(&self, ns: &Ns, task: F) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let path = format!("/var/run/netns/{}", ns.0);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e} (needs root)"));
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(task())
        })
    }

    /// Starts a test server in `ns`, configured by `edit`; it serves until
    /// the returned sender is dropped. Its signaling address.
    pub fn server(
        &self,
        ns: &Ns,
        edit: impl FnOnce(&mut kaigi_server::Config) + Send + 'static,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.spawn_in(ns, move || async move {
            let mut server = crate::TestServer::start_with(edit).await;
            let _ = addr_tx.send(server.addr);
            let _ = stop_rx.await;
            server.stop().await;
        });
        let addr = addr_rx
            .recv_timeout(crate::WAIT)
            .expect("the server starts in its namespace");
        (addr, stop_tx)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace removes its interfaces (and their peers).
        for ns in self.namespaces.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &ns], None);
        }
    }
}

/// A party in a call, running in a namespace ([`Lab::publish`],
/// [`Lab::watch`]); dropping it makes it leave.
pub struct Party {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    samples: std::sync::mpsc::Receiver<Sample>,
}

/// What a watcher saw of the stream it watches, at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When.
    pub at: std::time::Instant,
    /// Frames decoded so far.
    pub frames: u64,
    /// Audio packets received so far.
    pub audio: u64,
    /// What audio playout did so far.
    pub played: kaigi_sdk::AudioStats,
    /// The latest decoded picture's size.
    pub size: Option<(usize, usize)>,
    /// Whether the server says the stream's video is paused for this
    /// watcher (`stream-updated` `videoPaused`).
    pub paused: bool,
    /// How many times it has been paused.
    pub paused_events: usize,
    /// What media travels over, once `network-quality` said.
    pub transport: Option<String>,
    /// The latest `network-quality` grades: (uplink, downlink).
    pub quality: Option<(u8, u8)>,
}

/// A watcher's rates over a window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Decoded frames per second.
    pub fps: f64,
    /// Audio packets per second.
    pub audio_per_sec: f64,
    /// Audio frames played per second from packets, FEC or concealment
    /// (50 is a gapless playout).
    pub audio_out_per_sec: f64,
    /// Of those, recovered from FEC or concealed, per second.
    pub audio_repaired_per_sec: f64,
    /// The picture size at the window's end.
    pub size: Option<(usize, usize)>,
    /// Whether video was paused at some point in the window.
    pub paused: bool,
    /// The worst `network-quality` grades in the window: (uplink,
    /// downlink).
    pub worst_quality: Option<(u8, u8)>,
}

impl Party {
    /// The next sample, waiting up to `timeout`.
    fn next(&self, timeout: std::time::Duration) -> Option<Sample> {
        self.samples.recv_timeout(timeout).ok()
    }

    /// The first sample that satisfies `pred` within `timeout`; `Err` with
    /// the last sample seen when none did.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample, String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = None;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.next(left) {
                Some(s) if pred(&s) => return Ok(s),
                Some(s) => last = Some(s),
                None => break,
            }
        }
        Err(format!(
            "{what}: not within {timeout:?} (last seen: {last:?})"
        ))
    }

    /// Waits for the first decoded frame.
    pub fn first_frame(&self) -> Result<Sample, String> {
        self.wait_until("a first frame", crate::WAIT, |s| s.frames > 0)
    }

    /// Lets `d` of the call pass (samples in it are not measured).
    pub fn skip(&self, d: std::time::Duration) {
        let end = std::time::Instant::now() + d;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            if self.next(left).is_none() {
                break;
            }
        }
    }

    /// Rates over the next `window` of the call.
    pub fn measure(&self, window: std::time::Duration) -> Window {
        // The window starts now: samples queued before are stale.
        let mut first = self.next(crate::WAIT).expect("the watcher reports");
        while let Ok(s) = self.samples.try_recv() {
            first = s;
        }
        let end = first.at + window;
        let (mut last, mut paused) = (first.clone(), first.paused);
        let mut worst = first.quality;
        let worse = |a: Option<(u8, u8)>, b: Option<(u8, u8)>| match (a, b) {
            (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.next(left + std::time::Duration::from_millis(300)) {
                Some(s) => {
                    paused |= s.paused || s.paused_events > first.paused_events;
                    worst = worse(worst, s.quality);
                    let done = s.at >= end;
                    last = s;
                    if done {
                        break;
                    }
                }
                None => break,
            }
        }
        let secs = (last.at - first.at).as_secs_f64().max(1e-3);
        let repaired = |p: &kaigi_sdk::AudioStats| p.fec_recovered + p.concealed;
        let out = |p: &kaigi_sdk::AudioStats| p.played + repaired(p);
        Window {
            fps: (last.frames - first.frames) as f64 / secs,
            audio_per_sec: (last.audio - first.audio) as f64 / secs,
            audio_out_per_sec: (out(&last.played) - out(&first.played)) as f64 / secs,
            audio_repaired_per_sec: (repaired(&last.played) - repaired(&first.played)) as f64
                / secs,
            size: last.size,
            paused,
            worst_quality: worst,
        }
    }

    /// What media travels over, once `network-quality` says (within `timeout`).
    pub fn transport(&self, timeout: std::time::Duration) -> Result<String, String> {
        self.wait_until("network-quality with a transport", timeout, |s| {
            s.transport.is_some()
        })
        .map(|s| s.transport.unwrap_or_default())
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the receiver of [`Lab::measure_call`] got.
#[derive(Debug, Clone)]
pub struct CallRates {
    /// Decoded frames per second.
    pub fps: f64,
    /// Opus packets received per second (50 is all of them).
    pub audio_per_sec: f64,
    /// What media went over (`udp`, `tcp`), as `network-quality` says.
    pub transport: String,
}

/// A public switch (203.0.113.0/24) with a server host at `server` (a CIDR
/// on it), and a LAN (198.18.0.0/24) behind a NAT router at 203.0.113.1 and
/// 198.18.0.1: (the lab, the public switch, the LAN switch, the server's
/// namespace).
pub fn nat_lab(tag: &str, server: &str) -> (Lab, Ns, Ns, Ns) {
    let mut lab = Lab::new(tag);
    let public = lab.switch("pub");
    let server_ns = lab.namespace("srv");
    lab.attach(&server_ns, &public, server);
    let lan = lab.switch("lan");
    lab.nat_router(
        "nat",
        Side {
            switch: &public,
            cidr: "203.0.113.1/24",
        },
        Side {
            switch: &lan,
            cidr: "198.18.0.1/24",
        },
    );
    (lab, public, lan, server_ns)
}

/// Three hosts on one switch (203.0.113.0/24): a server at .10, a
/// publisher at .20 and a subscriber at .30, for tests that impair one
/// party's link (the interfaces are for [`Lab::cap`]).
pub struct Trio {
    /// The lab; dropping it removes everything.
    pub lab: Lab,
    /// The switch.
    pub switch: Ns,
    /// The server's host.
    pub server: Ns,
    /// The publisher's host and its interface.
    pub publisher: (Ns, String),
    /// The subscriber's host and its interface.
    pub subscriber: (Ns, String),
}

impl Trio {
    /// Builds it under `tag`.
    pub fn new(tag: &str) -> Trio {
        let mut lab = Lab::new(tag);
        let switch = lab.switch("sw");
        let server = lab.namespace("srv");
        lab.attach(&server, &switch, "203.0.113.10/24");
        let pub_ns = lab.namespace("pub");
        let pub_if = lab.attach(&pub_ns, &switch, "203.0.113.20/24");
        let sub_ns = lab.namespace("sub");
        let sub_if = lab.attach(&sub_ns, &switch, "203.0.113.30/24");
        Trio {
            lab,
            switch,
            server,
            publisher: (pub_ns, pub_if),
            subscriber: (sub_ns, sub_if),
        }
    }

    /// Starts the server on 203.0.113.10:7880 (media on 7882); it serves
    /// until the returned sender is dropped.
    pub fn start_server(&self) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        self.lab.server(&self.server, |c| {
            c.listen = "203.0.113.10:7880".parse().unwrap();
            c.media_port = 7882;
        })
    }
}
