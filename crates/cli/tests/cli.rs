//! The real `kaigi` binary against a real server on 127.0.0.1.

use std::process::Stdio;
use std::time::Duration;

use kaigi_proto::{usersig, KickReason, SdkAppId};
use kaigi_server::{AppCredential, Config, ServerHandle};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const APP: SdkAppId = SdkAppId(1_400_000_009);
const KEY: &str = "cli-test-secret";
const WAIT: Duration = Duration::from_secs(15);

/// A Cloud API key pair the test server accepts.
const SECRET_ID: &str = "AKIDkaigiCliTest";
const SECRET_KEY: &str = "cliTestSecretKey";

async fn server() -> ServerHandle {
    let mut cfg = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![AppCredential {
            id: APP,
            key: KEY.into(),
        }],
    );
    cfg.cloud_api_keys = vec![kaigi_server::config::CloudApiKey {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.into(),
        apps: vec![],
    }];
    kaigi_server::start(cfg).await.unwrap()
}

fn kaigi() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaigi"));
    // Never read a developer's real dev-app file.
    c.env("KAIGI_DEV_APP", "/nonexistent/kaigi-dev-app.json");
    c.kill_on_drop(true);
    c
}

struct Bot {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// `--server`, `--app` and `--key` for the test server and app.
fn server_args(server: &ServerHandle) -> [String; 6] {
    [
        "--server".into(),
        format!("ws://{}", server.local_addr()),
        "--app".into(),
        APP.to_string(),
        "--key".into(),
        KEY.into(),
    ]
}

/// `kaigi bot` for `user` on `server` in `room`, its stdout piped.
fn bot_command(server: &ServerHandle, user: &str, room: &[&str]) -> Command {
    let mut c = kaigi();
    c.arg("bot")
        .args(server_args(server))
        .args(["--user", user])
        .args(room)
        .stdout(Stdio::piped());
    c
}

impl Bot {
    async fn start(server: &ServerHandle, user: &str, room: &[&str]) -> Bot {
        let mut child = bot_command(server, user, room).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut bot = Bot { child, lines };
        let first = bot.next().await;
        assert_eq!(first["event"], "joined", "{first}");
        bot
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    async fn until(&mut self, event: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["event"] == event {
                return v;
            }
        }
    }

    async fn exit_code(mut self) -> i32 {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits in time")
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

async fn admin(server: &ServerHandle, args: &[&str]) -> (i32, Value) {
    let out = kaigi()
        .arg("admin")
        .args(args)
        .args(server_args(server))
        .output()
        .await
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
}

/// `kaigi usersig` for `user` of the test app, with `extra` arguments.
async fn usersig_for(user: &str, extra: &[&str]) -> String {
    let out = kaigi()
        .args([
            "usersig",
            "--app",
            &APP.to_string(),
            "--key",
            KEY,
            "--user",
            user,
        ])
        .args(extra)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn usersig_command_makes_a_valid_sig() {
    let now = kaigi_proto::unix_now();
    let sig = usersig_for("alice", &["--expire", "600"]).await;
    let claims = usersig::verify(&sig, APP, KEY, "alice", now).unwrap();
    assert_eq!(claims.expire, 600);
    let bad = kaigi()
        .args(["usersig", "--app", "1", "--key", "k", "--user", "no spaces"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    // A room permission ticket (privateMapKey) for one room.
    let ticket = usersig_for("alice", &["--expire", "600", "--grant-str-room", "daily"]).await;
    let claims = usersig::verify(&ticket, APP, KEY, "alice", now).unwrap();
    let grant = kaigi_proto::grant::from_claims(&claims).expect("a room grant");
    let daily = kaigi_proto::RoomId::str("daily").unwrap();
    assert!(grant.admits(APP, "alice", &daily, now + 1));
    assert!(!grant.admits(APP, "alice", &kaigi_proto::RoomId::num(1).unwrap(), now + 1));
    // Without --expire: an admin sig is short-lived, a user's is not.
    for (user, expire) in [("administrator", 300), ("alice", 180 * 86400)] {
        let sig = usersig_for(user, &[]).await;
        let claims = usersig::verify(&sig, APP, KEY, user, now).unwrap();
        assert_eq!(claims.expire, expire, "{user}");
    }
}

#[tokio::test]
async fn bots_are_removed_and_dismissed_by_admin_commands() {
    let server = server().await;
    let mut alice = Bot::start(&server, "alice", &["--room", "42"]).await;
    let mut bob = Bot::start(&server, "bob", &["--room", "42"]).await;
    let join = alice.until("peer-join").await;
    assert_eq!(join["userId"], "bob");

    let (code, desc) = admin(&server, &["describe-room", "--room", "42"]).await;
    assert_eq!(code, 0);
    assert_eq!(desc["Response"]["Total"], 2);

    // Blocked (audio), then unblocked: bob is told each time.
    for (flags, told) in [(&["--audio"][..], (true, false)), (&[][..], (false, false))] {
        let args = [
            &["set-user-blocked", "--room", "42", "--user", "bob"][..],
            flags,
        ]
        .concat();
        let (code, resp) = admin(&server, &args).await;
        assert_eq!(code, 0, "{resp}");
        let blocked = bob.until("blocked").await;
        assert_eq!(
            (blocked["audio"].as_bool(), blocked["video"].as_bool()),
            (Some(told.0), Some(told.1)),
            "{blocked}"
        );
    }

    let (code, resp) = admin(&server, &["remove-user", "--room", "42", "--user", "bob"]).await;
    assert_eq!(code, 0, "{resp}");
    let banned = bob.until("client-banned").await;
    assert_eq!(banned["reason"], "removed-by-admin");
    assert_eq!(banned["message"], KickReason::RemovedByAdmin.message());
    assert_eq!(bob.exit_code().await, 0);
    assert_eq!(alice.until("peer-leave").await["reason"], "removed");

    let (code, _) = admin(&server, &["dismiss-room", "--room", "42"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        alice.until("client-banned").await["reason"],
        "room-dismissed"
    );
    assert_eq!(alice.exit_code().await, 0);

    // An error response prints the JSON and exits non-zero.
    let (code, resp) = admin(&server, &["dismiss-room", "--room", "42"]).await;
    assert_ne!(code, 0);
    assert_eq!(
        resp["Response"]["Error"]["Code"],
        "FailedOperation.RoomNotExist"
    );
    let (code, resp) = admin(&server, &["list-rooms"]).await;
    assert_eq!((code, resp["Response"]["Total"].as_u64()), (0, Some(0)));
}

#[tokio::test]
async fn admin_calls_signed_as_cloud_api() {
    let server = server().await;
    let mut dave = Bot::start(&server, "dave", &["--room", "43"]).await;
    let signed = |secret: &'static str| {
        [
            "--server".to_owned(),
            format!("ws://{}", server.local_addr()),
            "--app".into(),
            APP.to_string(),
            "--secret-id".into(),
            SECRET_ID.into(),
            "--secret-key".into(),
            secret.into(),
        ]
    };
    let run = |args: [String; 8]| async move {
        let out = kaigi()
            .args(["admin", "dismiss-room", "--room", "43"])
            .args(args)
            .output()
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), json)
    };
    let (code, resp) = run(signed("not-the-key")).await;
    assert_ne!(code, 0);
    assert_eq!(
        resp["Response"]["Error"]["Code"],
        "AuthFailure.SignatureFailure"
    );
    let (code, resp) = run(signed(SECRET_KEY)).await;
    assert_eq!(code, 0, "{resp}");
    assert_eq!(
        dave.until("client-banned").await["reason"],
        "room-dismissed"
    );
}

#[tokio::test]
async fn string_rooms_and_duplicate_bots() {
    let server = server().await;
    let mut first = Bot::start(&server, "carol", &["--str-room", "daily sync"]).await;
    let _second = Bot::start(&server, "carol", &["--str-room", "daily sync"]).await;
    let banned = first.until("client-banned").await;
    assert_eq!(banned["reason"], "duplicate-user-id");
    assert_eq!(first.exit_code().await, 0);
    let (code, desc) = admin(&server, &["describe-room", "--str-room", "daily sync"]).await;
    assert_eq!(code, 0);
    assert_eq!(desc["Response"]["RoomIdType"], 1);
    assert_eq!(desc["Response"]["Users"][0]["UserId"], "carol");
    let (code, _) = admin(
        &server,
        &["remove-user", "--str-room", "daily sync", "--user", "carol"],
    )
    .await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn interrupted_bot_leaves_cleanly() {
    let server = server().await;
    let mut watcher = Bot::start(&server, "watcher", &["--room", "7"]).await;
    let mut bot = Bot::start(&server, "leaver", &["--room", "7"]).await;
    watcher.until("peer-join").await;
    let pid = bot.child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let left = bot.until("client-left").await;
    assert_eq!(left["ok"], true);
    assert_eq!(bot.exit_code().await, 0);
    let leave = watcher.until("peer-leave").await;
    assert_eq!(
        (leave["userId"].as_str(), leave["reason"].as_str()),
        (Some("leaver"), Some("left"))
    );
}

#[tokio::test]
async fn bot_join_failure_is_reported() {
    let server = server().await;
    let out = kaigi()
        .args([
            "bot",
            "--server",
            &format!("http://{}", server.local_addr()),
            "--app",
            &APP.to_string(),
            "--user-sig",
            "forged",
            "--user",
            "x",
            "--room",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["event"], "join-failed");
    assert_eq!(line["name"], "USERSIG_UNDECODABLE");
}

#[tokio::test]
async fn bots_publish_and_report_what_they_receive() {
    let server = server().await;
    let mut alice = Bot::start(
        &server,
        "alice",
        &[
            "--room",
            "8",
            "--video",
            "test-pattern:320x240",
            "--audio",
            "tone:1000",
        ],
    )
    .await;
    let published = alice.until("published").await;
    assert_eq!(
        (published["audio"].as_bool(), published["video"].as_bool()),
        (Some(true), Some(true))
    );
    let mut bob = Bot::start(&server, "bob", &["--room", "8"]).await;
    assert_eq!(bob.until("stream-added").await["userId"], "alice");
    // Reports come once a second; wait for one that shows steady video.
    let mut counters = Vec::new();
    let report = loop {
        let r = bob.until("stream-stats").await;
        if let Some(c) = r["lastCounter"].as_u64() {
            counters.push(c);
        }
        if r["fps"].as_u64().unwrap_or(0) >= 20 && counters.len() >= 2 {
            break r;
        }
        assert!(counters.len() < 10, "no steady video: {r}");
    };
    assert_eq!(report["userId"], "alice");
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
    assert!(report["audioPackets"].as_u64().unwrap() > 0);
    // Bad media flags are refused before joining.
    let out = kaigi()
        .args([
            "bot",
            "--server",
            "ws://127.0.0.1:1",
            "--app",
            "1",
            "--key",
            "k",
            "--user",
            "x",
            "--room",
            "1",
            "--video",
            "webcam",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("test-pattern"));
}

#[tokio::test]
async fn a_bot_whose_output_is_closed_leaves_quietly() {
    let server = server().await;
    let mut child = bot_command(&server, "piped", &["--room", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(first.unwrap().contains("joined"));
    // As `| head -1` does: the reader goes away.
    drop(lines);
    // The next event makes the bot write; it finds stdout closed.
    let other = Bot::start(&server, "other", &["--room", "5"]).await;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the bot exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(other);
}

#[tokio::test]
async fn a_bot_shares_an_x_display_as_its_sub_stream() {
    let x = kaigi_tests::xvfb::Xvfb::start(640, 360);
    let pic = kaigi_tests::xvfb::picture(640, 360);
    kaigi_tests::xvfb::draw(&x.display, &pic, 640, 360, 0);
    let server = server().await;
    let mut alice = Bot::start(
        &server,
        "alice",
        &[
            "--room",
            "9",
            "--video",
            "test-pattern:320x240",
            "--share-screen",
            &x.display,
            "--share-fps",
            "10",
        ],
    )
    .await;
    assert_eq!(alice.until("published").await["video"], true);
    assert_eq!(alice.until("screen-shared").await["fps"], 10);
    let mut bob = Bot::start(&server, "bob", &["--room", "9"]).await;
    // Both of alice's streams are reported, the screen's as `sub` at the
    // display's size.
    let (mut main, mut sub) = (None, None);
    for _ in 0..20 {
        let r = bob.until("stream-stats").await;
        assert_eq!(r["userId"], "alice", "{r}");
        match r.get("streamType") {
            None if r["framesDecoded"].as_u64() > Some(0) => main = Some(r),
            Some(t) if t == "sub" && r["size"] == "640x360" => sub = Some(r),
            _ => {}
        }
        if main.is_some() && sub.is_some() {
            break;
        }
    }
    let sub = sub.expect("the shared screen reported as sub");
    assert!(sub["framesDecoded"].as_u64().unwrap() > 0, "{sub}");
    assert!(main.is_some(), "the camera reported as main");
    // A display that does not exist is reported, and the bot stays in.
    let mut carol = Bot::start(
        &server,
        "carol",
        &["--room", "9", "--share-screen", ":4093"],
    )
    .await;
    let failed = carol.until("share-failed").await;
    assert!(
        failed["message"].as_str().unwrap().contains(":4093"),
        "{failed}"
    );
    assert_eq!(bob.until("peer-join").await["userId"], "carol");
}
