//! The real app binary in a real window under Xvfb, driven over WebDriver
//! (tauri-driver + WebKitWebDriver) as a person would: join through the
//! form on the embedded server; switch a sound setting; see a bot's
//! video; leave; rejoin; and each forced exit — a bot with the same
//! name, `kaigi admin remove-user`, `kaigi admin dismiss-room` — shows
//! the kicked-out dialog with its reason, whose OK returns to the join
//! screen; then a server of one's own (the advanced fields) goes away and
//! comes back: the reconnecting banner shows and goes. Each step saves a
//! screenshot under `target/e2e-screenshots/`.

mod driver;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use driver::{Driver, Proc};
use serde_json::json;

const ROOM: &str = "e2e-standup";
const NAME: &str = "alice";

/// Waits for the kicked-out dialog, checks its words, clicks OK.
async fn kicked(d: &Driver, reason: &str, words: &str, shot: &str) {
    d.until(
        &format!("the {reason} dialog"),
        &format!("const d = document.getElementById('kicked'); return d.open && d.dataset.reason === '{reason}'"),
    )
    .await;
    let text = d
        .js("return document.getElementById('kicked-reason').textContent")
        .await;
    assert!(
        text.as_str().is_some_and(|t| t.contains(words)),
        "{reason}: {text}"
    );
    d.shot(shot).await;
    d.click("#kicked-ok").await;
    d.until(
        "the join screen after OK",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;
}

/// Waits (up to 20 s) until something accepts connections on `addr`.
async fn wait_listening(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
    let dev_app = work.join("dev-app.json");
    let envs: [(&str, String); 7] = [
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
    let (_driver, d) = Driver::launch(&app, &envs, shots).await;
    let cli_cmd = |args: &[&str]| {
        let mut c = Command::new(&cli);
        c.args(args).envs(envs.iter().cloned());
        c
    };

    // 1. Join through the form (the embedded server), see the local preview.
    d.join(NAME, ROOM).await;
    d.until(
        "the local tile playing",
        "return Number(document.querySelector('#tile-local canvas').dataset.frames || 0) > 10",
    )
    .await;
    d.shot("01-joined").await;
    d.until(
        "the microphone's level on the toolbar's meter",
        "return parseFloat(document.querySelector('#room-level > span').style.width) > 0",
    )
    .await;

    // The sound settings: all on, one switched off, remembered.
    d.click("#settings-open").await;
    d.until(
        "the settings dialog with everything on",
        "return document.getElementById('settings').open && ['echo-cancellation', 'noise-suppression', 'auto-gain'].every((id) => document.getElementById(id).checked)",
    )
    .await;
    d.click("#echo-cancellation").await;
    d.shot("01-settings").await;
    d.click("#settings-done").await;
    d.until(
        "echo cancellation off and remembered",
        "return !document.getElementById('settings').open && JSON.parse(localStorage.getItem('kaigi.audio')).echoCancellation === false",
    )
    .await;
    d.click("#settings-open").await;
    d.click("#echo-cancellation").await;
    d.click("#settings-done").await;
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
    d.join(NAME, ROOM).await;
    d.shot("04-rejoined").await;

    // An admin call through the CLI, which must succeed.
    let admin = |args: &[&str]| {
        let out = cli_cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };

    // 4. The same name joins elsewhere → dialog (duplicate).
    let dup = Proc(
        cli_cmd(&["bot", "--user", NAME, "--str-room", ROOM])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    kicked(&d, "duplicate-user-id", "same name", "05-kicked-duplicate").await;
    drop(dup);

    // 5. Removed by the administrator.
    d.join(NAME, ROOM).await;
    admin(&["admin", "remove-user", "--str-room", ROOM, "--user", NAME]);
    kicked(
        &d,
        "removed-by-admin",
        "administrator removed you",
        "06-kicked-removed",
    )
    .await;

    // 6. The room is dismissed.
    d.join(NAME, ROOM).await;
    admin(&["admin", "dismiss-room", "--str-room", ROOM]);
    kicked(
        &d,
        "room-dismissed",
        "room was closed",
        "07-kicked-dismissed",
    )
    .await;

    // 7. A server of one's own, through the advanced fields; it goes away
    //    (the reconnecting banner) and comes back on the same address.
    let server_bin = bin_dir.join("kaigi-server");
    let port = driver::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (app_id, key) = (1_400_000_777u32, "e2e-own-server-key");
    let start_server = || {
        Proc(
            Command::new(&server_bin)
                .args(["--listen", &listen, "--media-port", "0"])
                .args(["--app", &format!("{app_id}:{key}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kaigi-server (`cargo test --workspace` builds it)"),
        )
    };
    let own = start_server();
    wait_listening(&listen).await;
    let user_sig = kaigi_proto::usersig::generate(
        kaigi_proto::SdkAppId(app_id),
        key,
        NAME,
        3600,
        kaigi_proto::unix_now(),
    );
    d.click("details summary").await;
    d.type_into("#server", &format!("ws://{listen}")).await;
    d.type_into("#sdkAppId", &app_id.to_string()).await;
    d.type_into("#userSig", &user_sig).await;
    d.join(NAME, ROOM).await;
    let hosted = d
        .js("return document.getElementById('hosted').hidden")
        .await;
    assert_eq!(
        hosted,
        json!(true),
        "no hosted-room box for a server of one's own"
    );
    drop(own);
    d.until(
        "the reconnecting banner",
        "return !document.getElementById('banner').hidden && document.getElementById('badge').classList.contains('RECONNECTING')",
    )
    .await;
    d.shot("08-reconnecting").await;
    let _own = start_server();
    d.until(
        "the banner gone after the server came back",
        "return document.getElementById('banner').hidden && document.getElementById('badge').classList.contains('CONNECTED')",
    )
    .await;
    d.until(
        "network quality reported again after the reconnect",
        "const q = document.getElementById('quality').textContent; return !/disconnected|unknown/.test(q)",
    )
    .await;
    d.shot("09-reconnected").await;
    d.click("#leave").await;
    d.until(
        "the join screen after leaving the own server",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;

    d.quit().await;
    let _ = std::fs::remove_dir_all(&work);
}
