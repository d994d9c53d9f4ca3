//! A real Redis server for tests (Debian's `redis-server`, started by the
//! test on a free loopback port, nothing saved to disk), which can be
//! stopped and started again on the same port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `redis-server` of its own, ended when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port; returns once it accepts connections.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = RedisServer { child: None, port };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (at once: as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on its port, empty; returns once it accepts
    /// connections (it says so on its log).
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        let mut out = BufReader::new(child.stdout.take().expect("its log")).lines();
        let mut log = Vec::new();
        while let Some(line) = out.next() {
            let line = line.unwrap_or_default();
            if line.contains("Ready to accept connections") {
                // The rest of its log is read and dropped, so it never
                // blocks on a full pipe.
                std::thread::spawn(move || out.for_each(drop));
                self.child = Some(child);
                return;
            }
            log.push(line);
            if log.len() >= 200 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start: {log:#?}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
