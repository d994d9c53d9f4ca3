//! Screen sharing as a user's second stream (`sub`), end to end on a real
//! server with real WebRTC: a user sends camera and screen at once and
//! another receives both as separate streams (the screen pixel-exact
//! enough: PSNR ≥ 30 dB at 1280×720 from a picture drawn on Xvfb);
//! stopping the share ends only the `sub` stream; a forced exit ends both;
//! a client of protocol 3 or earlier never hears of `sub` streams and may
//! not name one.

use kaigi_media::screen::bgrx_to_i420;
use kaigi_sdk::{
    AudioInput, ClientEvent, LocalStream, LocalStreamConfig, RemoteStream, StreamType, VideoInput,
};
use kaigi_tests::xvfb::{draw, picture, psnr, screen_stream, Xvfb};
use kaigi_tests::{expect_event, raw_join, raw_recv, raw_send, wait_for, within, TestServer};
use serde_json::json;

fn remote(client: &kaigi_sdk::Client, user: &str, t: StreamType) -> Option<RemoteStream> {
    client
        .remote_streams()
        .into_iter()
        .find(|s| s.user_id().as_str() == user && s.stream_type() == t)
}

/// Waits for a decoded picture of `size` at least `min_db` from `want`'s
/// luma; returns its PSNR.
async fn sharp_picture(
    remote: &RemoteStream,
    size: (usize, usize),
    want: &[u8],
    min_db: f64,
) -> f64 {
    let mut video = remote.video();
    within("a sharp shared screen", async {
        loop {
            video.changed().await.expect("the stream goes on");
            let Some(f) = video.borrow_and_update().clone() else {
                continue;
            };
            if (f.width, f.height) == size {
                let db = psnr(f.y(), want);
                if db >= min_db {
                    return db;
                }
            }
        }
    })
    .await
}

fn is_stream_event(e: &ClientEvent, name: &str, user: &str, t: StreamType) -> bool {
    e.name() == name
        && match e {
            ClientEvent::StreamAdded {
                user_id,
                stream_type,
                ..
            }
            | ClientEvent::StreamRemoved {
                user_id,
                stream_type,
            }
            | ClientEvent::StreamSubscribed {
                user_id,
                stream_type,
            } => user_id.as_str() == user && *stream_type == t,
            _ => false,
        }
}

/// Reads a raw connection's messages up to the reply to a ping.
async fn raw_until_pong(ws: &mut kaigi_tests::RawWs, req_id: u64) -> Vec<serde_json::Value> {
    raw_send(ws, json!({"type": "ping", "reqId": req_id})).await;
    let mut seen = Vec::new();
    loop {
        let m = raw_recv(ws).await.expect("the connection stays open");
        if m["type"] == "pong" && m["reqId"] == req_id {
            return seen;
        }
        seen.push(m);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn camera_and_screen_at_once_then_stop_sharing_then_a_forced_exit() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w as u32, h as u32);
    let pic = picture(w, h);
    draw(&x.display, &pic, w, h, 0);
    let want = bgrx_to_i420(&pic, w, h).unwrap();

    let server = TestServer::start().await;
    let room = kaigi_tests::room(62);
    let (alice, mut alice_events) = server.joined("alice", &room).await;
    let (bob, mut bob_events) = server.joined("bob", &room).await;
    // A client of protocol 1 (no `protocol` in its join).
    let mut old = server.raw().await;
    raw_send(&mut old, raw_join(1, "old", 62)).await;
    assert_eq!(raw_recv(&mut old).await.unwrap()["type"], "joined");

    // Camera and screen from one user, asked for at once (the server
    // negotiates one after the other).
    let camera = LocalStream::synthetic(
        alice.user_id(),
        kaigi_sdk::SyntheticSource {
            video: Some((320, 240)),
            ..Default::default()
        },
    )
    .unwrap();
    let screen = screen_stream(alice.user_id(), &x.display);
    let (cam_published, screen_published) = within("publish both", async {
        tokio::join!(alice.publish(&camera), alice.publish_screen(&screen))
    })
    .await;
    cam_published.expect("the camera is published");
    screen_published.expect("the screen is published beside the camera");
    // Both arrive, in either order.
    let mut subscribed = Vec::new();
    within("both streams subscribed", async {
        while subscribed.len() < 2 {
            if let ClientEvent::StreamSubscribed {
                user_id,
                stream_type,
            } = bob_events.recv().await.expect("events")
            {
                assert_eq!(user_id.as_str(), "alice");
                subscribed.push(stream_type);
            }
        }
    })
    .await;
    subscribed.sort();
    assert_eq!(subscribed, StreamType::ALL);
    let shared = remote(&bob, "alice", StreamType::Sub).expect("alice's screen");
    let db = sharp_picture(&shared, (w, h), want.y(), 30.0).await;
    eprintln!("the shared screen at the receiver: {db:.1} dB");
    let cam = remote(&bob, "alice", StreamType::Main).expect("alice's camera");
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
    let cam_frame = cam.video().borrow().clone().expect("a camera frame");
    // The camera's 4:3 pattern (or one of its smaller simulcast layers),
    // not the 16:9 screen.
    assert!(
        cam_frame.width <= 320 && cam_frame.width * 3 == cam_frame.height * 4,
        "the camera is its own stream: {}x{}",
        cam_frame.width,
        cam_frame.height
    );

    // The old client heard of the camera only, and may not name a screen.
    let seen = raw_until_pong(&mut old, 100).await;
    let added: Vec<_> = seen
        .iter()
        .filter(|m| m["type"] == "stream-added")
        .collect();
    assert_eq!(added.len(), 1, "{seen:?}");
    assert_eq!(added[0]["userId"], "alice");
    assert!(
        seen.iter().all(|m| m.get("streamType").is_none()),
        "{seen:?}"
    );
    raw_send(
        &mut old,
        json!({"type":"subscribe","reqId":101,"userId":"alice","streamType":"sub"}),
    )
    .await;
    let refused = loop {
        let m = raw_recv(&mut old).await.unwrap();
        if m["reqId"] == 101 {
            break m;
        }
    };
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["name"], "INVALID_MESSAGE", "{refused}");

    // Stop sharing: the screen's stream ends, the camera goes on.
    within("unpublish the screen", alice.unpublish_screen())
        .await
        .unwrap();
    let (_, before) = wait_for(&mut bob_events, "the screen removed", |e| {
        is_stream_event(e, "stream-removed", "alice", StreamType::Sub)
    })
    .await;
    assert!(
        !before.iter().any(|e| e.name() == "stream-removed"),
        "{before:?}"
    );
    assert!(remote(&bob, "alice", StreamType::Sub).is_none());
    assert!(screen.is_closed(), "the screen's capture ended");
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
    let after_stop = kaigi_tests::drain(&mut bob_events);
    assert!(
        !after_stop.iter().any(|e| e.name() == "stream-removed"),
        "{after_stop:?}"
    );

    // Sharing again works; then a forced exit ends both streams.
    let screen = screen_stream(alice.user_id(), &x.display);
    within("publish the screen again", alice.publish_screen(&screen))
        .await
        .unwrap();
    wait_for(&mut bob_events, "the screen again", |e| {
        is_stream_event(e, "stream-subscribed", "alice", StreamType::Sub)
    })
    .await;
    server.remove_users(&room, &["alice"]).await;
    let mut removed = Vec::new();
    within("both streams removed", async {
        while removed.len() < 2 {
            match bob_events.recv().await.expect("events") {
                ClientEvent::StreamRemoved {
                    user_id,
                    stream_type,
                } if user_id.as_str() == "alice" => removed.push(stream_type),
                _ => {}
            }
        }
    })
    .await;
    removed.sort();
    assert_eq!(removed, vec![StreamType::Main, StreamType::Sub]);
    expect_event(&mut bob_events, "peer-leave").await;
    assert!(bob.remote_streams().is_empty());
    // The forced exit closed what alice published: her devices are free.
    expect_event(&mut alice_events, "client-banned").await;
    assert!(camera.is_closed() && screen.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_window_that_closes_ends_the_share_and_only_it() {
    let x = Xvfb::start(1280, 720);
    let win = kaigi_tests::xvfb::window(&x.display, "Slides", (0, 0, 640, 360), 0x2060c0);
    let server = TestServer::start().await;
    let room = kaigi_tests::room(63);
    let (alice, _alice_events) = server.joined("alice", &room).await;
    let (bob, mut bob_events) = server.joined("bob", &room).await;
    let camera = kaigi_tests::publish_pattern(&alice).await;
    let shared = LocalStream::new(
        alice.user_id(),
        LocalStreamConfig {
            video: VideoInput::Screen {
                display: Some(x.display.clone()),
                window: Some(win.id),
            },
            audio: AudioInput::None,
            fps: 10,
            simulcast: false,
            ..Default::default()
        },
    )
    .expect("the window opens");
    within("publish the window", alice.publish_screen(&shared))
        .await
        .unwrap();
    wait_for(&mut bob_events, "the window subscribed", |e| {
        is_stream_event(e, "stream-subscribed", "alice", StreamType::Sub)
    })
    .await;
    // The window closes: its stream closes; the app ends the share.
    drop(win);
    within("the stream to close", shared.closed()).await;
    within("unpublish", alice.unpublish_screen()).await.unwrap();
    let (_, before) = wait_for(&mut bob_events, "the window's stream removed", |e| {
        is_stream_event(e, "stream-removed", "alice", StreamType::Sub)
    })
    .await;
    assert!(!before.iter().any(|e| e.name() == "stream-removed"));
    assert!(!camera.is_closed(), "the camera goes on");
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
}
