//! Malformed, oversized, binary and flooding clients get a typed error and
//! are closed; everyone else keeps being served.

use futures_util::SinkExt;
use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Joins a raw client to `room` as `user`.
async fn raw_in_room(server: &TestServer, user: &str, r: u64) -> RawWs {
    let mut ws = server.raw().await;
    raw_send(&mut ws, raw_join(1, user, r)).await;
    assert_eq!(raw_recv(&mut ws).await.unwrap()["type"], "joined");
    ws
}

/// Sends 1000 frames as fast as possible; true if the server answered with
/// `RATE_LIMITED` before closing.
async fn flood(ws: &mut RawWs, frame: impl Fn(u64) -> Message) -> bool {
    for i in 0..1000u64 {
        if ws.feed(frame(i)).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    within("the rate limit", async {
        loop {
            match raw_recv(ws).await {
                Some(m) if m["name"] == "RATE_LIMITED" => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
}

async fn expect_leave(events: &mut kaigi_sdk::EventStream, user: &str) {
    let (e, _) = wait_for(events, "peer-leave", |e| {
        matches!(e, ClientEvent::PeerLeave { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::PeerLeave {
            user_id: user.parse().unwrap(),
            reason: PeerLeaveReason::Left
        }
    );
}

#[tokio::test]
async fn bad_clients_are_closed_and_others_served() {
    let server = TestServer::start().await;
    let (good, mut good_events) = server.joined("good", &room(1)).await;

    // Malformed JSON.
    let mut ws = raw_in_room(&server, "malformed", 1).await;
    expect_event(&mut good_events, "peer-join").await;
    ws.send(Message::text("{this is not json")).await.unwrap();
    let err = raw_recv(&mut ws).await.unwrap();
    assert_eq!(
        (
            err["type"].as_str(),
            err["name"].as_str(),
            err["code"].as_u64()
        ),
        (Some("error"), Some("INVALID_MESSAGE"), Some(4000))
    );
    assert_eq!(raw_close_code(&mut ws).await, Some(1008));
    expect_leave(&mut good_events, "malformed").await;

    // An unknown message type answers the request id it carried.
    let mut ws = server.raw().await;
    raw_send(&mut ws, json!({"type": "fly", "reqId": 5})).await;
    let err = raw_recv(&mut ws).await.unwrap();
    assert_eq!(
        (err["name"].as_str(), err["reqId"].as_u64()),
        (Some("INVALID_MESSAGE"), Some(5))
    );

    // Oversized: over the 16 KiB message limit, under the frame limit.
    let mut ws = raw_in_room(&server, "oversized", 1).await;
    expect_event(&mut good_events, "peer-join").await;
    raw_send(
        &mut ws,
        json!({"type": "ping", "reqId": 1, "pad": "x".repeat(20_000)}),
    )
    .await;
    assert_eq!(
        raw_recv(&mut ws).await.unwrap()["name"],
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(raw_close_code(&mut ws).await, Some(1009));
    expect_leave(&mut good_events, "oversized").await;

    // Over the frame limit: refused by the WebSocket layer, closed with 1009.
    let mut ws = server.raw().await;
    let huge = "x".repeat(kaigi_proto::signal::MAX_ANSWER_BYTES + 4096);
    let _ = ws.send(Message::text(huge)).await;
    assert_eq!(raw_close_code(&mut ws).await, Some(1009));

    // Binary frames.
    let mut ws = server.raw().await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(raw_recv(&mut ws).await.unwrap()["name"], "INVALID_MESSAGE");
    assert_eq!(raw_close_code(&mut ws).await, Some(1003));

    // Flooding: far more messages than the rate limit allows.
    let mut ws = raw_in_room(&server, "flood", 1).await;
    expect_event(&mut good_events, "peer-join").await;
    let limited = flood(&mut ws, |i| {
        Message::text(json!({"type": "ping", "reqId": i}).to_string())
    })
    .await;
    assert!(limited, "the flood was answered with RATE_LIMITED");
    expect_leave(&mut good_events, "flood").await;

    // A flood of WebSocket ping frames is limited the same way.
    let mut ws = server.raw().await;
    let limited = flood(&mut ws, |_| Message::Ping(vec![0u8; 8].into())).await;
    assert!(limited, "the ping flood was answered with RATE_LIMITED");

    // The good client was served throughout and still is.
    assert_eq!(good.connection_state(), ConnectionState::Connected);
    let (_late, _) = server.joined("late", &room(1)).await;
    expect_event(&mut good_events, "peer-join").await;
    assert_eq!(server.users_in(&room(1)).await.unwrap(), ["good", "late"]);
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [
        ("malformed", 2),
        ("too-large", 1),
        ("websocket", 1),
        ("binary", 1),
        ("rate-limited", 2),
    ] {
        assert!(
            metrics.contains(&format!(
                "kaigi_rejected_connections_total{{reason=\"{reason}\"}} {n}"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn the_admin_identity_cannot_join() {
    let server = TestServer::start().await;
    let mut ws = server.raw().await;
    raw_send(&mut ws, raw_join(1, kaigi_proto::ADMIN_IDENTIFIER, 1)).await;
    let refused = raw_recv(&mut ws).await.unwrap();
    assert_eq!(refused["name"], "INVALID_PARAMETER", "{refused}");
    assert_eq!(refused["reqId"], 1);
    assert_eq!(server.users_in(&room(1)).await, None);
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_even_while_it_pings() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let mut idle = server.raw().await;
    let opened = std::time::Instant::now();
    // Pings (WebSocket and protocol) keep the heartbeat alive, not the
    // connection's claim to a place in a room.
    let closed = tokio::time::timeout(kaigi_server::JOIN_DEADLINE * 2, async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    n += 1;
                    if idle.send(Message::Ping(vec![1].into())).await.is_err() { break None; }
                    if idle.send(Message::text(json!({"type":"ping","reqId":n}).to_string())).await.is_err() { break None; }
                }
                m = futures_util::StreamExt::next(&mut idle) => match m {
                    Some(Ok(Message::Text(t))) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        if v["type"] == "error" { assert_eq!(v["name"], "HEARTBEAT_TIMEOUT", "{v}"); }
                    }
                    Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break None,
                }
            }
        }
    })
    .await
    .expect("closed within twice the join deadline");
    assert_eq!(closed, Some(4000));
    assert!(
        opened.elapsed() >= kaigi_server::JOIN_DEADLINE - std::time::Duration::from_millis(100)
    );
}

#[tokio::test]
async fn an_answer_that_crossed_a_leave_is_ignored() {
    let server = TestServer::start().await;
    let mut ws = raw_in_room(&server, "alice", 1).await;
    raw_send(&mut ws, json!({"type": "leave", "reqId": 2})).await;
    raw_send(&mut ws, json!({"type": "answer", "sdp": "v=0\r\n"})).await;
    raw_send(&mut ws, json!({"type": "ping", "reqId": 3})).await;
    let mut seen = Vec::new();
    loop {
        let msg = raw_recv(&mut ws).await.expect("the connection stays open");
        if msg["type"] == "pong" {
            break;
        }
        seen.push(msg);
    }
    assert!(
        seen.iter().all(|m| m["type"] != "error"),
        "no error for a stale answer: {seen:?}"
    );
    // And it can join again on the same connection.
    raw_send(&mut ws, raw_join(4, "alice", 1)).await;
    let joined = raw_recv(&mut ws).await.expect("joined");
    assert_eq!(joined["type"], "joined", "{joined}");
}
