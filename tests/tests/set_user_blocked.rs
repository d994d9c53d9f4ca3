//! `SetUserBlocked` / `SetUserBlockedByStrRoomId` (TRTC's server-side
//! block): the server stops forwarding a user's audio, video or both; the
//! others see the blocked kinds as muted and the user is told; unblocking
//! resumes both (video with a fresh keyframe). Refusals in TRTC's codes.

use std::time::Duration;

use kaigi_sdk::{Client, ClientEvent};
use kaigi_tests::*;
use serde_json::json;

/// `user`'s audio packets and decoded frames at `at`.
fn counts(at: &Client, user: &str) -> (u64, u64) {
    at.remote_streams()
        .iter()
        .filter(|s| s.user_id().as_str() == user)
        .fold((0, 0), |(a, f), s| {
            (a + s.audio_packets(), f + s.frames_decoded())
        })
}

/// What arrives of `user` at `at` over half a second (a measurement
/// window, not a wait for an event).
async fn arriving(at: &Client, user: &str) -> (u64, u64) {
    let before = counts(at, user);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counts(at, user);
    (after.0 - before.0, after.1 - before.1)
}

/// Until `user`'s audio and video both arrive at `at` again.
async fn both_flow(at: &Client, user: &str) {
    within("audio and video flowing", async {
        loop {
            let (audio, frames) = arriving(at, user).await;
            if audio > 5 && frames > 3 {
                return;
            }
        }
    })
    .await
}

async fn block(server: &TestServer, action: &str, body: serde_json::Value) -> serde_json::Value {
    let mut body = body;
    body["SdkAppId"] = json!(APP.0);
    server.admin(action, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_users_media_stops_for_everyone_until_unblocked() {
    let server = TestServer::start().await;
    let r = room(1);
    let (alice, mut alice_events) = server.joined("alice", &r).await;
    let (bob, mut bob_events) = server.joined("bob", &r).await;
    let _stream = publish_pattern(&alice).await;
    expect_event(&mut bob_events, "stream-subscribed").await;
    both_flow(&bob, "alice").await;

    // Video blocked: bob hears of it as a mute, alice is told; her audio
    // still arrives, her video does not.
    let r1 = block(
        &server,
        "SetUserBlocked",
        json!({"RoomId": 1, "UserId": "alice", "IsMute": 3}),
    )
    .await;
    assert!(r1["Response"]["Error"].is_null(), "{r1}");
    expect_event(&mut bob_events, "mute-video").await;
    let (e, _) = expect_event(&mut alice_events, "blocked").await;
    assert_eq!(
        e,
        ClientEvent::Blocked {
            audio: false,
            video: true
        }
    );
    arriving(&bob, "alice").await; // packets in flight
    let (audio, frames) = arriving(&bob, "alice").await;
    assert!(audio > 5 && frames == 0, "audio {audio}, frames {frames}");

    // Both blocked: nothing arrives.
    block(
        &server,
        "SetUserBlocked",
        json!({"RoomId": 1, "UserId": "alice", "IsMute": 1}),
    )
    .await;
    expect_event(&mut bob_events, "mute-audio").await;
    arriving(&bob, "alice").await;
    assert_eq!(arriving(&bob, "alice").await, (0, 0));

    // A newcomer (here a client of the protocol, raw) sees her stream as
    // muted.
    let mut ws = server.raw().await;
    raw_send(&mut ws, raw_join(1, "carol", 1)).await;
    let added = within("carol's stream-added", async {
        loop {
            let m = raw_recv(&mut ws).await.expect("a message");
            if m["type"] == "stream-added" {
                return m;
            }
        }
    })
    .await;
    assert_eq!(
        (added["audioMuted"].as_bool(), added["videoMuted"].as_bool()),
        (Some(true), Some(true)),
        "{added}"
    );

    // Unblocked: both flow again (video from a new keyframe), all see it.
    block(
        &server,
        "SetUserBlocked",
        json!({"RoomId": 1, "UserId": "alice", "IsMute": 0}),
    )
    .await;
    expect_event(&mut bob_events, "unmute-audio").await;
    let (e, _) = expect_event(&mut alice_events, "blocked").await;
    assert_eq!(
        e,
        ClientEvent::Blocked {
            audio: true,
            video: true
        }
    );
    let (e, _) = expect_event(&mut alice_events, "blocked").await;
    assert_eq!(
        e,
        ClientEvent::Blocked {
            audio: false,
            video: false
        }
    );
    both_flow(&bob, "alice").await;

    // Refusals: a missing room, a user not in it, a bad IsMute, the
    // string-room twin's own field name.
    let (dave, _) = server.joined("dave", &str_room("daily")).await;
    let cases = [
        (
            "SetUserBlocked",
            json!({"RoomId": 2, "UserId": "alice", "IsMute": 1}),
            "FailedOperation.RoomNotExist",
        ),
        (
            "SetUserBlocked",
            json!({"RoomId": 1, "UserId": "zed", "IsMute": 1}),
            "FailedOperation.UserNotInRoom",
        ),
        (
            "SetUserBlocked",
            json!({"RoomId": 1, "UserId": "alice", "IsMute": 4}),
            "InvalidParameterValue.IsMute",
        ),
        (
            "SetUserBlocked",
            json!({"RoomId": 1, "UserId": "alice"}),
            "MissingParameter.IsMute",
        ),
        // The string-room twin names its room `StrRoomId`, as TRTC's.
        (
            "SetUserBlockedByStrRoomId",
            json!({"RoomId": "x", "UserId": "alice", "IsMute": 1}),
            "MissingParameter.StrRoomId",
        ),
        (
            "SetUserBlockedByStrRoomId",
            json!({"StrRoomId": "daily", "UserId": "dave", "IsMute": 2}),
            "ok",
        ),
    ];
    for (action, body, code) in cases {
        let answer = block(&server, action, body.clone()).await;
        let got = answer["Response"]["Error"]["Code"].as_str().unwrap_or("ok");
        assert_eq!(got, code, "{action} {body}");
    }
    drop(dave);
}
