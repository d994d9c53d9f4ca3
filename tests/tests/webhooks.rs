//! Room webhooks as TRTC's room callbacks: a receiver in the test gets
//! room created, user entered (with role), role switched, user exited
//! (left, removed, duplicate, dismissed) and room dismissed, in order, in
//! TRTC's JSON with TRTC's `Sign`; a receiver that fails at first gets
//! every event after retries, in order; a dead one costs the server
//! nothing but its queue and the `failed` count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use kaigi_server::webhooks::{sign, Webhook, WebhookPolicy};
use kaigi_tests::*;
use serde_json::Value;
use tokio::sync::mpsc;

const CALLBACK_KEY: &str = "kaigiCallbackKey01";

/// A receiver on loopback: every request's headers and JSON body, in
/// arrival order; it answers 500 to its first `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let app = axum::Router::new().route(
        "/trtc",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            let failures = failures.clone();
            async move {
                let failing = failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let v: Value = serde_json::from_slice(&body).unwrap();
                if failing {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let sign_ok = headers
                    .get("Sign")
                    .map(|s| s.to_str().unwrap() == sign(CALLBACK_KEY, &body));
                let mut headers = headers;
                headers.insert(
                    "x-sign-ok",
                    if sign_ok == Some(true) { "yes" } else { "no" }
                        .parse()
                        .unwrap(),
                );
                let _ = tx.send((headers, v));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/trtc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The next `n` events: (EventType, UserId, Role or Reason, KaigiReason).
async fn next(
    rx: &mut mpsc::UnboundedReceiver<(HeaderMap, Value)>,
    n: usize,
) -> Vec<(u64, String, u64, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (headers, v) = within("a webhook", rx.recv()).await.unwrap();
        assert_eq!(headers["x-sign-ok"], "yes", "Sign is TRTC's");
        assert_eq!(headers["SdkAppId"], APP.0.to_string());
        let t = v["EventType"].as_u64().unwrap();
        assert_eq!(v["EventGroupId"], t / 100, "1 room events, 2 media events");
        assert!(v["CallbackTs"].as_u64().unwrap() >= v["EventInfo"]["EventMsTs"].as_u64().unwrap());
        let info = &v["EventInfo"];
        let detail = match t {
            103 | 105 => info["Role"].as_u64().unwrap(),
            104 => info["Reason"].as_u64().unwrap(),
            _ => 0,
        };
        out.push((
            t,
            info["UserId"].as_str().unwrap_or("").to_owned(),
            detail,
            info["KaigiReason"].as_str().unwrap_or("").to_owned(),
        ));
    }
    out
}

fn ev(t: u64, user: &str, detail: u64, kaigi: &str) -> (u64, String, u64, String) {
    (t, user.to_owned(), detail, kaigi.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_reach_the_backend_in_order_signed_and_retried() {
    let (good, mut got) = receiver(0).await;
    let (flaky, mut flaky_got) = receiver(2).await;
    // A receiver that is gone: a port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/trtc", l.local_addr().unwrap())
    };
    let hook = |url: &str| Webhook {
        app: APP,
        url: url.to_owned(),
        key: Some(CALLBACK_KEY.into()),
    };
    let server = TestServer::start_with(|c| {
        c.webhooks = vec![hook(&good), hook(&flaky), hook(&dead)];
        c.webhook_policy = WebhookPolicy {
            retry: Duration::from_millis(100),
            give_up: Duration::from_millis(500),
        };
    })
    .await;

    let r = room(1);
    let (alice, _) = server.joined("alice", &r).await;
    let (bob, _) = server.client("bob");
    bob.join(r.clone(), kaigi_sdk::Role::Audience)
        .await
        .unwrap();
    bob.switch_role(kaigi_sdk::Role::Anchor).await.unwrap();
    alice.leave().await.unwrap();
    server.remove_users(&r, &["bob"]).await;
    let expected_one = vec![
        ev(101, "", 0, ""),
        ev(103, "alice", 20, ""),
        ev(103, "bob", 21, ""),
        ev(105, "bob", 20, ""),
        ev(104, "alice", 1, "left"),
        ev(104, "bob", 3, "removed"),
        ev(102, "", 0, ""),
    ];
    assert_eq!(next(&mut got, 7).await, expected_one);

    // A second client with carol's id takes her place; the room is then
    // dismissed.
    let s = str_room("standup");
    let (_first, _) = server.joined("carol", &s).await;
    let (_second, _) = server.joined("carol", &s).await;
    server.dismiss(&s).await;
    let expected_two = vec![
        ev(101, "", 0, ""),
        ev(103, "carol", 20, ""),
        ev(104, "carol", 3, "duplicate"),
        ev(103, "carol", 20, ""),
        ev(104, "carol", 3, "dismissed"),
        ev(102, "", 0, ""),
    ];
    assert_eq!(next(&mut got, 6).await, expected_two);

    // The receiver that failed twice got everything after the retries, in
    // the same order.
    let all: Vec<_> = expected_one.into_iter().chain(expected_two).collect();
    assert_eq!(next(&mut flaky_got, all.len()).await, all);

    // Every event counted delivered twice (the counter follows each
    // answer); the dead receiver's given up and counted; the server served
    // on meanwhile.
    within("the webhook counts", async {
        loop {
            let text = reqwest::get(format!("http://{}/metrics", server.handle().local_addr()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains("kaigi_webhooks_total{reason=\"ok\"} 26")
                && text.contains("kaigi_webhooks_total{reason=\"failed\"}")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// TRTC's media events (group 2): sending video (201/202), audio
/// (203/204) and a shared screen (205/206) starts and stops with publish,
/// mute and unpublish; leaving says only 104 (it implies the stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_events_follow_publish_mute_and_unpublish() {
    let (url, mut got) = receiver(0).await;
    let server = TestServer::start_with(|c| {
        c.webhooks = vec![Webhook {
            app: APP,
            url: url.clone(),
            key: Some(CALLBACK_KEY.into()),
        }];
    })
    .await;
    let r = room(7);
    let (alice, _) = server.joined("alice", &r).await;
    assert_eq!(
        next(&mut got, 2).await,
        [ev(101, "", 0, ""), ev(103, "alice", 20, "")]
    );
    let synthetic = |video: bool, audio: bool| {
        kaigi_sdk::LocalStream::synthetic(
            alice.user_id(),
            kaigi_sdk::SyntheticSource {
                video: video.then_some((320, 240)),
                tone_hz: audio.then_some(440.0),
                ..kaigi_sdk::SyntheticSource::default()
            },
        )
        .unwrap()
    };
    let main = synthetic(true, true);
    within("publish", alice.publish(&main)).await.unwrap();
    assert_eq!(
        next(&mut got, 2).await,
        [ev(201, "alice", 0, ""), ev(203, "alice", 0, "")]
    );
    within("mute video", alice.mute_video(true)).await.unwrap();
    within("unmute video", alice.mute_video(false))
        .await
        .unwrap();
    within("mute audio", alice.mute_audio(true)).await.unwrap();
    assert_eq!(
        next(&mut got, 3).await,
        [
            ev(202, "alice", 0, ""),
            ev(201, "alice", 0, ""),
            ev(204, "alice", 0, "")
        ]
    );
    let screen = synthetic(true, false);
    within("share", alice.publish_screen(&screen))
        .await
        .unwrap();
    within("stop sharing", alice.unpublish_screen())
        .await
        .unwrap();
    assert_eq!(
        next(&mut got, 2).await,
        [ev(205, "alice", 0, ""), ev(206, "alice", 0, "")]
    );
    within("leave", alice.leave()).await.unwrap();
    assert_eq!(
        next(&mut got, 2).await,
        [ev(104, "alice", 1, "left"), ev(102, "", 0, "")],
        "leaving says 104 only, no 202"
    );
}
