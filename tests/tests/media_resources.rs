//! After leave and after a forced exit, the media connections are closed
//! and their UDP sockets are gone (checked in /proc, not assumed).

use std::collections::HashSet;

use kaigi_sdk::{ClientEvent, LocalStream, SyntheticSource};
use kaigi_tests::*;
use serde_json::json;

/// Inodes of the UDP sockets this process has open.
fn udp_sockets() -> HashSet<u64> {
    let mut udp: HashSet<u64> = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9).and_then(|i| i.parse().ok()) {
                udp.insert(inode);
            }
        }
    }
    let mut mine = HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<u64>().ok())
            {
                if udp.contains(&inode) {
                    mine.insert(inode);
                }
            }
        }
    }
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_kick_free_every_media_socket() {
    let server = TestServer::start().await;
    let before = udp_sockets();
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let stream = LocalStream::synthetic(
        alice.user_id(),
        SyntheticSource {
            video: Some((320, 240)),
            ..Default::default()
        },
    )
    .unwrap();
    within("publish", alice.publish(&stream)).await.unwrap();
    wait_for(&mut bob_events, "stream-subscribed", |e| {
        matches!(e, ClientEvent::StreamSubscribed { .. })
    })
    .await;
    let during = udp_sockets();
    assert!(
        during.len() >= before.len() + 4,
        "four peer connections hold UDP sockets: {} → {}",
        before.len(),
        during.len()
    );

    // Bob is removed by an administrator; Alice leaves.
    server
        .admin("RemoveUser", json!({"RoomId": 1, "UserIds": ["bob"]}))
        .await;
    wait_for(&mut bob_events, "ban", |e| {
        matches!(e, ClientEvent::ClientBanned { .. })
    })
    .await;
    within("leave", alice.leave()).await.unwrap();
    stream.close();
    // Every server session has ended, media torn down first.
    server.wait_sessions(0).await;
    drop(bob);
    let after = udp_sockets();
    let leaked: Vec<_> = after.difference(&before).collect();
    assert!(
        leaked.is_empty(),
        "UDP sockets still open after leave and kick: {leaked:?}"
    );
}
