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
    /// frame, lets `settle` pass, and measures over `window`. `Err` (the
    /// receiver's panic) when no picture arrived.
    pub fn measure_call(
        &self,
        server: std::net::SocketAddr,
        publisher: &Ns,
        receiver: &Ns,
        r: u64,
        settle: std::time::Duration,
        window: std::time::Duration,
    ) -> std::thread::Result<CallRates> {
        use kaigi_sdk::{ClientEvent, LocalStream, SyntheticSource};
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let publishing = self.spawn_in(publisher, move || async move {
            let server = crate::TestServer::remote(server);
            let (alice, _) = server.joined("alice", &crate::room(r)).await;
            let stream = LocalStream::synthetic(alice.user_id(), SyntheticSource::default())
                .expect("a 640×480 test pattern");
            crate::within("publish", alice.publish(&stream))
                .await
                .expect("published");
            let _ = done_rx.await;
            let _ = crate::within("alice leaves", alice.leave()).await;
        });
        let receiving = self.spawn_in(receiver, move || async move {
            let server = crate::TestServer::remote(server);
            let (bob, mut events) = server.joined("bob", &crate::room(r)).await;
            crate::frames_arrive(&bob, "alice", 1).await;
            let remote = bob
                .remote_streams()
                .into_iter()
                .find(|s| s.user_id().as_str() == "alice")
                .expect("alice's stream");
            // Measurement windows, not waits for something to happen.
            tokio::time::sleep(settle).await;
            let (frames, audio, start) = (
                remote.frames_decoded(),
                remote.audio_packets(),
                std::time::Instant::now(),
            );
            tokio::time::sleep(window).await;
            let secs = start.elapsed().as_secs_f64();
            let fps = (remote.frames_decoded() - frames) as f64 / secs;
            let audio_per_sec = (remote.audio_packets() - audio) as f64 / secs;
            let (quality, _) =
                crate::wait_for(&mut events, "network-quality with a transport", |e| {
                    matches!(
                        e,
                        ClientEvent::NetworkQuality {
                            transport: Some(_),
                            ..
                        }
                    )
                })
                .await;
            let transport = match quality {
                ClientEvent::NetworkQuality { transport, .. } => transport.unwrap_or_default(),
                _ => String::new(),
            };
            let _ = crate::within("bob leaves", bob.leave()).await;
            CallRates {
                fps,
                audio_per_sec,
                transport,
            }
        });
        let received = receiving.join();
        drop(done_tx);
        publishing.join().expect("the publisher");
        received
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
