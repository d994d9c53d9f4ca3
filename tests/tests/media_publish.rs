//! A test pattern published by one client is decoded by another, through
//! the real server's SFU over real WebRTC on 127.0.0.1.

use std::time::{Duration, Instant};

use kaigi_media::Stamp;
use kaigi_sdk::{ClientEvent, LocalStream, SyntheticSource};
use kaigi_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_is_decoded_by_a_subscriber_at_full_rate() {
    let server = TestServer::start().await;
    let r = room(1);
    let (alice, _) = server.joined("alice", &r).await;
    let (bob, mut bob_events) = server.joined("bob", &r).await;

    let stream = LocalStream::synthetic(alice.user_id(), SyntheticSource::default()).unwrap();
    within("publish", alice.publish(&stream)).await.unwrap();

    let (added, _) = expect_event(&mut bob_events, "stream-added").await;
    assert_eq!(
        added,
        ClientEvent::StreamAdded {
            user_id: "alice".parse().unwrap(),
            stream_type: kaigi_sdk::StreamType::Main,
            audio: true,
            video: true
        }
    );
    expect_event(&mut bob_events, "stream-subscribed").await;
    let remote = bob
        .remote_streams()
        .into_iter()
        .find(|s| s.user_id().as_str() == "alice")
        .expect("alice's stream");

    // Read stamps from decoded frames for 2 s after the first one.
    let mut video = remote.video();
    let mut counters = Vec::new();
    let mut first_at = None;
    within("decoded frames", async {
        loop {
            video.changed().await.unwrap();
            let frame = video.borrow_and_update().clone();
            if let Some(stamp) = frame.as_deref().and_then(Stamp::read) {
                counters.push(stamp.counter);
                let t = *first_at.get_or_insert_with(Instant::now);
                if t.elapsed() >= Duration::from_secs(2) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        counters.windows(2).all(|w| w[1] > w[0]),
        "counters increase: {counters:?}"
    );
    let span = counters.last().unwrap() - counters.first().unwrap();
    let fps = counters.len() as f64 / 2.0;
    assert!(
        fps >= 25.0,
        "{fps} fps received ({} frames, counter span {span})",
        counters.len()
    );
    assert!(
        remote.audio_packets() > 50,
        "audio arrives: {} packets",
        remote.audio_packets()
    );
    assert!(remote.audio_level() > 0, "the tone is heard");
}
