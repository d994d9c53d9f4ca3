//! Interoperability: aiortc, a WebRTC implementation Kaigi shares no code
//! with (Python, from PyPI), joins a room speaking only what
//! `docs/protocol.md` says. It publishes H.264 and Opus that a Kaigi SDK
//! client decodes, decodes what the Kaigi client publishes, and is forced
//! out by the admin API like any client.

use std::process::Stdio;
use std::time::Duration;

use kaigi_sdk::ClientEvent;
use kaigi_tests::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(server: &TestServer, user: &str, room: u64) -> Peer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aiortc_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--url", &format!("{}/ws", server.url())])
            .args(["--sdk-app-id", &APP.0.to_string()])
            .args(["--user", user, "--user-sig", &sig(user)])
            .args(["--room", &room.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiortc (scripts/setup installs it)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, lines }
    }

    /// The next line of the peer's output that satisfies `f`.
    async fn wait(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let lines = &mut self.lines;
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["event"] == "error" {
                    panic!("aiortc peer: {line}");
                }
                if f(&v) {
                    return Some(v);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(v)) => v,
            Ok(None) => panic!("the aiortc peer exited before {what}"),
            Err(_) => panic!("the aiortc peer did not report {what} within 20 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_receives_and_is_forced_out() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = server.joined("alice", &room(21)).await;
    let _stream = publish_pattern(&alice).await;

    let mut peer = Peer::start(&server, "py", 21);
    peer.wait("joined", |v| v["event"] == "joined").await;
    peer.wait("published", |v| v["event"] == "published").await;

    // Kaigi decodes aiortc's H.264 and Opus.
    wait_for(
        &mut alice_events,
        "py's stream",
        |e| matches!(e, ClientEvent::StreamSubscribed { user_id, .. } if user_id.as_str() == "py"),
    )
    .await;
    let remote = alice
        .remote_streams()
        .into_iter()
        .find(|s| s.user_id().as_str() == "py")
        .unwrap();
    let mut video = remote.video();
    let first = remote.frames_decoded();
    within(
        "20 frames of py's video",
        video.wait_for(|f| {
            f.as_ref()
                .is_some_and(|f| f.width == 320 && f.height == 240)
                && remote.frames_decoded() >= first + 20
        }),
    )
    .await
    .unwrap();
    within("py's audio", async {
        while remote.audio_packets() < 25 || remote.audio_level() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // aiortc decodes Kaigi's.
    let v = peer
        .wait("30 video frames", |v| {
            v["event"] == "received" && v["kind"] == "video" && v["frames"].as_u64() >= Some(30)
        })
        .await;
    assert_eq!(v["size"], json!([320, 240]));
    peer.wait("audio frames", |v| {
        v["event"] == "received" && v["kind"] == "audio" && v["frames"].as_u64() >= Some(25)
    })
    .await;

    // Forced out by the admin API: aiortc reads client-banned.
    server.remove_users(&room(21), &["py"]).await;
    let v = peer
        .wait("client-banned", |v| v["event"] == "client-banned")
        .await;
    assert_eq!(v["reason"], "removed-by-admin");
    wait_for(
        &mut alice_events,
        "py's stream removed",
        |e| matches!(e, ClientEvent::StreamRemoved { user_id, .. } if user_id.as_str() == "py"),
    )
    .await;
    let status = within("aiortc exits", peer.child.wait()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_leaves_cleanly() {
    let server = TestServer::start().await;
    let (_alice, mut alice_events) = server.joined("alice", &room(22)).await;
    let mut peer = Peer::start(&server, "py", 22);
    peer.wait("published", |v| v["event"] == "published").await;
    wait_for(
        &mut alice_events,
        "py's stream",
        |e| matches!(e, ClientEvent::StreamAdded { user_id, .. } if user_id.as_str() == "py"),
    )
    .await;
    // Closing stdin makes it send `leave` and wait for `left`.
    drop(peer.child.stdin.take());
    peer.wait("left", |v| v["event"] == "left").await;
    wait_for(
        &mut alice_events,
        "py left",
        |e| matches!(e, ClientEvent::PeerLeave { user_id, .. } if user_id.as_str() == "py"),
    )
    .await;
    let status = within("aiortc exits", peer.child.wait()).await.unwrap();
    assert!(status.success());
}
