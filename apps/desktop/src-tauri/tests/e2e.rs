//! The real app binary in a real window under Xvfb, driven over WebDriver
//! (tauri-driver + WebKitWebDriver) as a person would: join through the
//! form on the embedded server and see a bot's video; leave; rejoin; and
//! each forced exit — a bot with the same name, `kaigi admin remove-user`,
//! `kaigi admin dismiss-room` — shows the kicked-out dialog with its
//! reason, whose OK returns to the join screen. Each step saves a
//! screenshot under `target/e2e-screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROOM: &str = "e2e-standup";
const NAME: &str = "alice";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the process (and waits) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Driver {
    http: reqwest::Client,
    base: String,
    session: String,
    shots: PathBuf,
}

impl Driver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let v: Value = resp.json().await.expect("WebDriver JSON");
        if v["value"].get("error").is_some() {
            panic!("{path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits (up to 20 s) until `script` returns true.
    async fn until(&self, what: &str, script: &str) {
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

    async fn element(&self, css: &str) -> String {
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
    async fn act(&self, id: &str, action: &str, body: Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/{action}"),
            Some(body),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.act(&id, "click", json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.act(&id, "clear", json!({})).await;
        self.act(&id, "value", json!({"text": text})).await;
    }

    async fn shot(&self, name: &str) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        if let Some(b64) = v.as_str() {
            use base64::Engine;
            if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
                let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
            }
        }
    }

    async fn join(&self) {
        self.until("the join screen", "return !document.getElementById('join-screen').hidden && !document.getElementById('join').disabled").await;
        self.type_into("#name", NAME).await;
        self.type_into("#room", ROOM).await;
        self.click("#join").await;
        self.until(
            "the room",
            "return !document.getElementById('room-screen').hidden",
        )
        .await;
    }

    /// Waits for the kicked-out dialog, checks its words, clicks OK.
    async fn kicked(&self, reason: &str, words: &str, shot: &str) {
        self.until(
            &format!("the {reason} dialog"),
            &format!("const d = document.getElementById('kicked'); return d.open && d.dataset.reason === '{reason}'"),
        )
        .await;
        let text = self
            .js("return document.getElementById('kicked-reason').textContent")
            .await;
        assert!(
            text.as_str().is_some_and(|t| t.contains(words)),
            "{reason}: {text}"
        );
        self.shot(shot).await;
        self.click("#kicked-ok").await;
        self.until(
            "the join screen after OK",
            "return !document.getElementById('join-screen').hidden",
        )
        .await;
    }
}

fn kaigi_cli(bin_dir: &Path) -> PathBuf {
    let cli = bin_dir.join("kaigi");
    assert!(
        cli.exists(),
        "{} is missing: `cargo test --workspace` builds it (or `cargo build -p kaigi-cli`)",
        cli.display()
    );
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_joins_sees_a_bot_leaves_and_is_forced_out_three_ways() {
    let app = PathBuf::from(env!("CARGO_BIN_EXE_kaigi-desktop"));
    let bin_dir = app.parent().unwrap().to_path_buf();
    let cli = kaigi_cli(&bin_dir);
    let work = std::env::temp_dir().join(format!("kaigi-e2e-{}", std::process::id()));
    let shots = bin_dir.join("e2e-screenshots");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&shots).unwrap();
    let dev_app = work.join("dev-app.json");
    let envs = [
        ("KAIGI_DEV_APP", dev_app.to_str().unwrap().to_owned()),
        ("KAIGI_LISTEN", "127.0.0.1:0".to_owned()),
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1".to_owned()),
        ("NO_AT_BRIDGE", "1".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        (
            "XDG_CONFIG_HOME",
            work.join("config").to_str().unwrap().to_owned(),
        ),
        (
            "XDG_DATA_HOME",
            work.join("data").to_str().unwrap().to_owned(),
        ),
    ];
    let (port, native) = (free_port(), free_port());
    let _driver = Proc(
        Command::new("xvfb-run")
            .args(["-a", "-s", "-screen 0 1280x800x24", "tauri-driver"])
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .envs(envs.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xvfb-run and tauri-driver (scripts/setup installs them)"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let caps = json!({"capabilities": {"alwaysMatch": {"tauri:options": {"application": app}}}});
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
    let d = Driver {
        http,
        base,
        session,
        shots,
    };
    let cli_cmd = |args: &[&str]| {
        let mut c = Command::new(&cli);
        c.args(args).envs(envs.iter().cloned());
        c
    };

    // 1. Join through the form (the embedded server), see the local preview.
    d.join().await;
    d.until(
        "the local tile playing",
        "return Number(document.querySelector('#tile-local canvas').dataset.frames || 0) > 10",
    )
    .await;
    d.shot("01-joined").await;
    let server = d
        .js("return document.getElementById('server-address').textContent")
        .await;
    assert!(
        server
            .as_str()
            .is_some_and(|s| s.starts_with("ws://127.0.0.1:")),
        "{server}"
    );

    // 2. A bot joins and publishes: its tile plays at ≥ 25 fps.
    let bot = Proc(
        cli_cmd(&[
            "bot",
            "--user",
            "bot",
            "--str-room",
            ROOM,
            "--video",
            "test-pattern:640x360",
            "--audio",
            "tone",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    d.until(
        "the bot's tile at 25 fps",
        "const c = document.querySelector('.tile[data-user=\"bot\"] canvas'); return !!c && Number(c.dataset.frames || 0) > 60 && Number(c.dataset.fps || 0) >= 25",
    )
    .await;
    d.shot("02-bot-video").await;
    drop(bot);

    // 3. Leave → the join screen; then rejoin.
    d.click("#leave").await;
    d.until(
        "the join screen after leave",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;
    d.shot("03-left").await;
    d.join().await;
    d.shot("04-rejoined").await;

    // 4. The same name joins elsewhere → dialog (duplicate).
    let dup = Proc(
        cli_cmd(&["bot", "--user", NAME, "--str-room", ROOM])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    d.kicked("duplicate-user-id", "same name", "05-kicked-duplicate")
        .await;
    drop(dup);

    // 5. Removed by the administrator.
    d.join().await;
    let out = cli_cmd(&["admin", "remove-user", "--str-room", ROOM, "--user", NAME])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.kicked(
        "removed-by-admin",
        "administrator removed you",
        "06-kicked-removed",
    )
    .await;

    // 6. The room is dismissed.
    d.join().await;
    let out = cli_cmd(&["admin", "dismiss-room", "--str-room", ROOM])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.kicked("room-dismissed", "room was closed", "07-kicked-dismissed")
        .await;

    let _ = d.call(reqwest::Method::DELETE, "", None).await;
    let _ = std::fs::remove_dir_all(&work);
}
