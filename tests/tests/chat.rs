//! Chat (protocol 3): a message reaches everyone else in the room and
//! nobody outside it; the server checks its size and rate; clients of
//! protocol 1 and 2 never see one.

use std::time::{Duration, Instant};

use kaigi_proto::signal::MAX_CHAT_CHARS;
use kaigi_sdk::{ClientError, ClientEvent};
use kaigi_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_message_reaches_the_others_in_the_room_and_nobody_else() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = server.joined("alice", &room(31)).await;
    let (_bob, mut bob_events) = server.joined("bob", &room(31)).await;
    let (_carol, mut carol_events) = server.joined("carol", &room(31)).await;
    let (_dave, mut dave_events) = server.joined("dave", &room(32)).await;

    within(
        "alice's message",
        alice.send_chat("hello, 世界\nsecond line"),
    )
    .await
    .expect("sent");
    for events in [&mut bob_events, &mut carol_events] {
        let (e, _) = expect_event(events, "chat").await;
        let ClientEvent::Chat {
            user_id,
            text,
            sent_at,
        } = e
        else {
            unreachable!()
        };
        assert_eq!(user_id.as_str(), "alice");
        assert_eq!(text, "hello, 世界\nsecond line");
        assert!(sent_at.abs_diff(kaigi_proto::unix_now_ms()) < 10_000);
    }
    // Alice's own message is not sent back to her; another room hears
    // nothing. (A message sent after it arrives after it, on both.)
    let (_bob2, mut later_events) = server.joined("erin", &room(31)).await;
    within("a second message", alice.send_chat("second"))
        .await
        .unwrap();
    let (e, before) = expect_event(&mut later_events, "chat").await;
    assert!(matches!(e, ClientEvent::Chat { ref text, .. } if text == "second"));
    assert!(
        !before.iter().any(|e| e.name() == "chat"),
        "who joins later does not get earlier messages"
    );
    expect_event(&mut bob_events, "chat").await;
    assert!(!drain(&mut alice_events).iter().any(|e| e.name() == "chat"));
    assert!(!drain(&mut dave_events).iter().any(|e| e.name() == "chat"));
}

#[tokio::test]
async fn size_and_rate_are_limited_and_the_connection_stays() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.joined("alice", &room(33)).await;
    let (_bob, mut bob_events) = server.joined("bob", &room(33)).await;

    // The SDK refuses what the server would.
    let long = "x".repeat(MAX_CHAT_CHARS + 1);
    let e = alice.send_chat(&long).await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidParameter(_)), "{e:?}");
    assert!(matches!(
        alice.send_chat("  \n ").await,
        Err(ClientError::InvalidParameter(_))
    ));

    // The server checks for itself (a raw client that skips the checks).
    let mut raw = server.raw().await;
    raw_send(&mut raw, with_protocol(raw_join(1, "raw", 33), 3)).await;
    raw_reply(&mut raw, "joined").await;
    raw_send(
        &mut raw,
        json!({"type":"chat","reqId":2,"text": "y".repeat(MAX_CHAT_CHARS + 1)}),
    )
    .await;
    let reply = reply_to(&mut raw, 2).await;
    assert_eq!(reply["name"], "INVALID_PARAMETER", "{reply}");
    raw_send(
        &mut raw,
        json!({"type":"chat","reqId":3,"text":"bell \u{7}"}),
    )
    .await;
    assert_eq!(reply_to(&mut raw, 3).await["name"], "INVALID_PARAMETER");

    // Ten at once go; then no more than five a second, refused, not
    // dropped; the connection stays and sends again once allowed.
    let mut refused = 0;
    for i in 0..20u64 {
        raw_send(
            &mut raw,
            json!({"type":"chat","reqId":10 + i,"text":format!("m{i}")}),
        )
        .await;
        let reply = reply_to(&mut raw, 10 + i).await;
        match reply["type"].as_str() {
            Some("chat-sent") => {}
            Some("error") => {
                assert_eq!(reply["name"], "RATE_LIMITED", "{reply}");
                refused += 1;
            }
            _ => panic!("{reply}"),
        }
    }
    assert!((5..=10).contains(&refused), "{refused} of 20 refused");
    let mut got = 0;
    while got < 20 - refused {
        let (e, _) = expect_event(&mut bob_events, "chat").await;
        assert!(matches!(e, ClientEvent::Chat { ref user_id, .. } if user_id.as_str() == "raw"));
        got += 1;
    }
    // Tokens come back: within 2 s a message goes again (bounded retries).
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut req = 100;
    loop {
        raw_send(&mut raw, json!({"type":"chat","reqId":req,"text":"again"})).await;
        if reply_to(&mut raw, req).await["type"] == "chat-sent" {
            break;
        }
        assert!(Instant::now() < deadline, "never allowed again");
        req += 1;
        // Waiting for the rate limit's tokens to come back, not syncing.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn clients_of_protocol_2_never_see_a_chat_and_cannot_send_one() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.joined("alice", &room(34)).await;
    let mut old = server.raw().await;
    raw_send(&mut old, with_protocol(raw_join(1, "old", 34), 2)).await;
    raw_reply(&mut old, "joined").await;
    within("a chat", alice.send_chat("hi")).await.unwrap();
    // The next thing the old client gets is the pong to a later ping: no
    // chat in between.
    raw_send(&mut old, json!({"type":"chat","reqId":2,"text":"hi"})).await;
    let reply = reply_to(&mut old, 2).await;
    assert_eq!(reply["name"], "INVALID_MESSAGE", "{reply}");
    raw_send(&mut old, json!({"type":"ping","reqId":3})).await;
    loop {
        let m = within("the pong", raw_recv(&mut old)).await.expect("open");
        assert_ne!(m["type"], "chat", "a protocol-2 client got {m}");
        if m["type"] == "pong" {
            break;
        }
    }
}

/// `join` with a protocol version.
fn with_protocol(mut join: serde_json::Value, protocol: u32) -> serde_json::Value {
    join["protocol"] = json!(protocol);
    join
}

/// The reply to request `req_id`, past room events.
async fn reply_to(ws: &mut RawWs, req_id: u64) -> serde_json::Value {
    loop {
        let m = within("a reply", raw_recv(ws)).await.expect("open");
        if m["reqId"] == json!(req_id) {
            return m;
        }
    }
}
