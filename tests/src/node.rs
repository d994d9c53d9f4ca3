//! A `kaigi-server` process as one node of a service (the real binary,
//! which `cargo test --workspace` builds), for tests that kill nodes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running node; killed when dropped.
pub struct NodeProcess {
    child: Option<Child>,
    /// Its signaling listener.
    pub addr: SocketAddr,
    /// Its node id.
    pub id: String,
}

/// The `kaigi-server` binary beside this test binary.
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the target folder");
    let bin = dir.join("kaigi-server");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` builds it (or `cargo build -p kaigi-server`)",
        bin.display()
    );
    bin
}

impl NodeProcess {
    /// Starts node `id` of the service on `redis` with the test app, on
    /// free ports; returns once it listens.
    pub fn start(redis: &str, id: &str) -> NodeProcess {
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--media-port", "0"])
            .arg("--app")
            .arg(format!("{}:{}", crate::APP.0, crate::KEY))
            .args(["--redis", redis, "--node-id", id])
            .env("KAIGI_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kaigi-server");
        let mut lines = BufReader::new(child.stdout.take().expect("its output")).lines();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(url) = line.strip_prefix("Kaigi server listening on ws://") {
                let addr = url.trim().parse().expect("its address");
                // The rest of its output is read and dropped.
                std::thread::spawn(move || lines.for_each(drop));
                return NodeProcess {
                    child: Some(child),
                    addr,
                    id: id.to_owned(),
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {id} did not start");
    }

    /// Kills it at once (SIGKILL): nothing is handed over.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks it to stop (SIGTERM) and waits until it has.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
