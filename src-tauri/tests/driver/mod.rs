//! A WebDriver client for the app under Xvfb (tauri-driver +
//! WebKitWebDriver), shared by the end-to-end test and the tile benchmark.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process, killed and waited for when dropped (on success or on
/// a failed assertion). One started in its own process group (as
/// [`Driver::launch`] starts `xvfb-run`) takes its whole group with it —
/// Xvfb, tauri-driver, WebKitWebDriver and the app.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        for signal in ["-TERM", "-KILL"] {
            let sent = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !sent {
                break; // not a group leader, or the group is gone
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Driver {
    http: reqwest::Client,
    base: String,
    session: String,
    shots: PathBuf,
}

impl Driver {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e:?}"));
        let v: Value = resp.json().await.expect("WebDriver JSON");
        if v["value"].get("error").is_some() {
            panic!("{path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits (up to 20 s) until `script` returns true.
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                self.shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!("the window never showed: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .expect("an element id")
            .to_owned()
    }

    /// POSTs `action` (`click`, `clear`, `value`) to element `id`.
    pub async fn act(&self, id: &str, action: &str, body: Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/{action}"),
            Some(body),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.act(&id, "click", json!({})).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.act(&id, "clear", json!({})).await;
        self.act(&id, "value", json!({"text": text})).await;
    }

    pub async fn shot(&self, name: &str) {
        // WebKitWebDriver takes a screenshot at the page's next
        // presentation update and waits for one: on a page where nothing
        // changes (a dialog over a stopped call) it waits forever. A pixel
        // in the corner changes colour for the next two seconds, so there
        // is one.
        self.js("const p = document.createElement('div'); p.style.cssText = 'position:fixed;right:0;bottom:0;width:1px;height:1px;z-index:2147483647;pointer-events:none'; let k = 0; const t = setInterval(() => { p.style.background = (k++ % 2) ? '#000' : '#010101'; if (k > 120) { clearInterval(t); p.remove(); } }, 16); (document.querySelector('dialog[open]') || document.body).append(p); return true").await;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        if let Some(b64) = v.as_str() {
            use base64::Engine;
            if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
                let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
            }
        }
    }

    /// Launches `app` in a window under Xvfb (tauri-driver +
    /// WebKitWebDriver) with `envs`, and opens a WebDriver session on it.
    /// The returned process ends the driver, the app and Xvfb when dropped.
    pub async fn launch(app: &Path, envs: &[(&str, String)], shots: PathBuf) -> (Proc, Driver) {
        let (port, native) = (free_port(), free_port());
        let driver = Proc(
            Command::new("xvfb-run")
                .args(["-a", "-s", "-screen 0 1280x800x24", "tauri-driver"])
                .args([
                    "--port",
                    &port.to_string(),
                    "--native-port",
                    &native.to_string(),
                ])
                .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("xvfb-run and tauri-driver (scripts/setup installs them)"),
        );
        // No WebDriver call may hang the test.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let caps =
            json!({"capabilities": {"alwaysMatch": {"tauri:options": {"application": app}}}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            if let Ok(r) = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
            {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = v["value"]["sessionId"].as_str() {
                    break id.to_owned();
                }
                panic!("no WebDriver session: {v}");
            }
            assert!(Instant::now() < deadline, "tauri-driver did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        std::fs::create_dir_all(&shots).expect("the screenshot folder");
        (
            driver,
            Driver {
                http,
                base,
                session,
                shots,
            },
        )
    }

    /// Joins `room` as `name` through the form (the embedded server) and
    /// waits for the room view.
    pub async fn join(&self, name: &str, room: &str) {
        self.until("the join screen", "return !document.getElementById('join-screen').hidden && !document.getElementById('join').disabled").await;
        self.type_into("#name", name).await;
        self.type_into("#room", room).await;
        self.click("#join").await;
        self.until(
            "the room",
            "return !document.getElementById('room-screen').hidden",
        )
        .await;
    }

    /// Resizes the window to `width` × `height` and waits until the page
    /// has that size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
        self.until(
            &format!("a {width}x{height} window"),
            &format!("return Math.abs(window.outerWidth - {width}) <= 2 && Math.abs(window.outerHeight - {height}) <= 40"),
        )
        .await;
    }

    /// Ends the WebDriver session (the app exits).
    pub async fn quit(&self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}

/// The app's processes under `root` (the driver's process group): pid and
/// kind (`app`, `web`, `network`, `xvfb`), with their CPU ticks.
pub fn app_processes(root: u32) -> Vec<(u32, &'static str, u64)> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid … utime(14) stime(15)
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        procs.push((pid, num(1) as u32, comm, num(11) + num(12)));
    }
    let parent: HashMap<u32, u32> = procs.iter().map(|p| (p.0, p.1)).collect();
    let under = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parent.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    let mut out = Vec::new();
    for (pid, _, comm, ticks) in procs {
        if !under(pid) {
            continue;
        }
        let kind = match comm.as_str() {
            "kaigi-desktop" => "app",
            c if c.starts_with("WebKitWebProc") => "web",
            c if c.starts_with("WebKitNetwork") => "network",
            "Xvfb" => "xvfb",
            _ => continue,
        };
        out.push((pid, kind, ticks));
    }
    out
}
