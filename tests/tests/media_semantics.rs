//! What publishing means to the room: unpublish and forced exits remove
//! streams, audiences cannot publish, and everyone receives everyone.

use std::time::{Duration, Instant};

use kaigi_media::Stamp;
use kaigi_proto::ErrorCode;
use kaigi_sdk::{
    Client, ClientError, ClientEvent, EventStream, LocalStream, Role, SyntheticSource,
};
use kaigi_tests::*;

fn small() -> SyntheticSource {
    SyntheticSource {
        video: Some((320, 240)),
        fps: 30,
        tone_hz: Some(440.0),
        video_bitrate_bps: 300_000,
        simulcast: true,
    }
}

async fn publish(client: &Client) -> LocalStream {
    let s = LocalStream::synthetic(client.user_id(), small()).unwrap();
    within("publish", client.publish(&s)).await.unwrap();
    s
}

/// Waits until `client` decodes a frame of `user`'s stream.
async fn sees_video(client: &Client, events: &mut EventStream, user: &str) {
    if !client
        .remote_streams()
        .iter()
        .any(|s| s.user_id().as_str() == user)
    {
        wait_for(
            events,
            "stream-subscribed",
            |e| matches!(e, ClientEvent::StreamSubscribed { user_id, .. } if user_id.as_str() == user),
        )
        .await;
    }
    let remote = client
        .remote_streams()
        .into_iter()
        .find(|s| s.user_id().as_str() == user)
        .unwrap();
    let mut video = remote.video();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        video.wait_for(|f| f.as_deref().and_then(Stamp::read).is_some()),
    )
    .await;
    if r.is_err() {
        let stats: Vec<String> = client
            .remote_streams()
            .iter()
            .map(|s| {
                format!(
                    "{}: {} frames, {} audio packets",
                    s.user_id(),
                    s.frames_decoded(),
                    s.audio_packets()
                )
            })
            .collect();
        panic!("{} never decoded {user} ({stats:?})", client.user_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_removes_the_stream() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let _stream = publish(&alice).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    within("unpublish", alice.unpublish()).await.unwrap();
    let (e, _) = expect_event(&mut bob_events, "stream-removed").await;
    assert_eq!(
        e,
        ClientEvent::StreamRemoved {
            user_id: "alice".parse().unwrap(),
            stream_type: kaigi_sdk::StreamType::Main,
        }
    );
    assert!(bob.remote_streams().is_empty());
    // Publishing again works.
    let _again = publish(&alice).await;
    sees_video(&bob, &mut bob_events, "alice").await;
}

#[tokio::test]
async fn audience_cannot_publish() {
    let server = TestServer::start().await;
    let (viewer, _) = server.client("viewer");
    viewer.join(room(1), Role::Audience).await.unwrap();
    let stream = LocalStream::synthetic(viewer.user_id(), small()).unwrap();
    match viewer.publish(&stream).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::AudienceCannotPublish),
        other => panic!("{other:?}"),
    }
    let (outsider, _) = server.client("outsider");
    assert_eq!(outsider.publish(&stream).await, Err(ClientError::NotInRoom));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_publishers_each_receive_the_other_three() {
    let server = TestServer::start().await;
    let names = ["p0", "p1", "p2", "p3"];
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for n in names {
        let (c, e) = server.joined(n, &room(4)).await;
        streams.push(publish(&c).await);
        clients.push((c, e));
    }
    for (i, (c, e)) in clients.iter_mut().enumerate() {
        for (j, other) in names.iter().enumerate() {
            if i != j {
                sees_video(c, e, other).await;
            }
        }
        assert_eq!(c.remote_streams().len(), 3, "{}", names[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_publishers_media_stops_at_once() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(9)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(9)).await;
    let _stream = publish(&alice).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    let remote = bob.remote_streams().pop().unwrap();

    server.remove_users(&room(9), &["alice"]).await;
    let removed_at = Instant::now();
    expect_event(&mut bob_events, "stream-removed").await;
    // No frame of alice's is decoded 200 ms after her removal.
    let frames = remote.frames_decoded();
    let mut video = remote.video();
    let late = tokio::time::timeout(Duration::from_millis(400), video.changed()).await;
    assert!(
        late.is_err() || removed_at.elapsed() < Duration::from_millis(200),
        "frames kept coming"
    );
    assert!(remote.frames_decoded() <= frames + 1);
    assert!(bob.remote_streams().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_hears_of_and_receives_existing_streams() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(5)).await;
    let _stream = publish(&alice).await;
    let (late, mut late_events) = server.client("late");
    late.join(room(5), Role::Anchor).await.unwrap();
    let (e, _) = expect_event(&mut late_events, "stream-added").await;
    assert_eq!(
        e,
        ClientEvent::StreamAdded {
            user_id: "alice".parse().unwrap(),
            stream_type: kaigi_sdk::StreamType::Main,
            audio: true,
            video: true
        }
    );
    sees_video(&late, &mut late_events, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_is_announced_and_stops_media_unmute_resumes_it() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(6)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(6)).await;
    let _stream = publish(&alice).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    let remote = bob.remote_streams().pop().unwrap();

    within("mute", alice.mute_video(true)).await.unwrap();
    let audio_at_mute = remote.audio_packets();
    let (e, _) = expect_event(&mut bob_events, "mute-video").await;
    assert_eq!(
        e,
        ClientEvent::MuteVideo {
            user_id: "alice".parse().unwrap()
        }
    );
    let (e, _) = expect_event(&mut bob_events, "stream-updated").await;
    assert_eq!(
        e,
        ClientEvent::StreamUpdated {
            user_id: "alice".parse().unwrap(),
            stream_type: kaigi_sdk::StreamType::Main,
            audio_muted: false,
            video_muted: true,
            video_paused: false,
        }
    );
    // A frame already in flight may still land; after that, nothing.
    let mut video = remote.video();
    let _ = tokio::time::timeout(Duration::from_millis(200), video.changed()).await;
    video.borrow_and_update();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), video.changed())
            .await
            .is_err(),
        "frames kept coming while muted"
    );
    within("unmute", alice.mute_video(false)).await.unwrap();
    expect_event(&mut bob_events, "unmute-video").await;
    within("frames after unmute", video.changed())
        .await
        .unwrap();
    // Audio went on the whole time (0.7 s and more of 20 ms packets).
    assert!(
        remote.audio_packets() >= audio_at_mute + 20,
        "audio stopped with the video"
    );

    // Muting with nothing published is refused.
    match bob.mute_audio(true).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::NotPublishing),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_volume_reports_each_speaker() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(7)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(7)).await;
    let _alice_stream = publish(&alice).await;
    let _bob_stream = publish(&bob).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    bob.enable_audio_volume_evaluation(Some(Duration::from_millis(200)));
    let (e, _) = wait_for(&mut bob_events, "audio-volume with both", |e| {
        matches!(e, ClientEvent::AudioVolume { result } if result.len() == 2 && result.iter().all(|v| v.audio_volume > 0))
    })
    .await;
    let ClientEvent::AudioVolume { result } = e else {
        unreachable!()
    };
    let mut users: Vec<_> = result
        .iter()
        .map(|v| v.user_id.as_str().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    // Alice mutes her audio: her volume drops to 0 for bob.
    within("mute audio", alice.mute_audio(true)).await.unwrap();
    wait_for(&mut bob_events, "alice silent", |e| {
        matches!(e, ClientEvent::AudioVolume { result } if result.iter().any(|v| v.user_id.as_str() == "alice" && v.audio_volume == 0))
    })
    .await;
    bob.enable_audio_volume_evaluation(None);
}

/// Waits until `remote` has received `n` more audio packets.
async fn hears(remote: &kaigi_sdk::RemoteStream, n: u64) {
    let start = remote.audio_packets();
    within("audio packets", async {
        while remote.audio_packets() < start + n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_subscription_receives_what_was_asked() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(11)).await;
    let mut opts = server.options("bob");
    opts.auto_subscribe = false;
    let bob = Client::new(opts).unwrap();
    let mut bob_events = bob.events();
    bob.join(room(11), Role::Anchor).await.unwrap();
    let alice_id: kaigi_sdk::UserId = "alice".parse().unwrap();
    match bob.subscribe(&alice_id, Default::default()).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::StreamNotFound),
        other => panic!("subscribing to nothing: {other:?}"),
    }
    let _stream = publish(&alice).await;
    expect_event(&mut bob_events, "stream-added").await;

    // Audio only: packets arrive, no picture does.
    let audio_only = kaigi_sdk::SubscribeOptions {
        audio: true,
        video: false,
    };
    within("subscribe audio", bob.subscribe(&alice_id, audio_only))
        .await
        .unwrap();
    let (_, skipped) = expect_event(&mut bob_events, "stream-subscribed").await;
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, ClientEvent::StreamSubscribed { .. })),
        "nothing was received before subscribing"
    );
    let remote = bob.remote_streams().pop().unwrap();
    hears(&remote, 25).await;
    assert_eq!(remote.frames_decoded(), 0, "video arrived unasked");

    // Everything: the picture follows.
    within(
        "subscribe all",
        bob.subscribe(&alice_id, Default::default()),
    )
    .await
    .unwrap();
    sees_video(&bob, &mut bob_events, "alice").await;

    // Unsubscribed: the stream is gone, and nothing more arrives.
    within("unsubscribe", bob.unsubscribe(&alice_id))
        .await
        .unwrap();
    assert!(bob.remote_streams().is_empty());
    let mut video = remote.video();
    video.borrow_and_update();
    let _ = tokio::time::timeout(Duration::from_millis(200), video.changed()).await;
    video.borrow_and_update();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), video.changed())
            .await
            .is_err(),
        "frames kept coming after unsubscribe"
    );
    // And it can be received again.
    within(
        "subscribe again",
        bob.subscribe(&alice_id, Default::default()),
    )
    .await
    .unwrap();
    sees_video(&bob, &mut bob_events, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_role_allows_then_ends_publishing() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = server.joined("alice", &room(12)).await;
    let (viewer, _) = server.client("viewer");
    viewer.join(room(12), Role::Audience).await.unwrap();
    let stream = LocalStream::synthetic(viewer.user_id(), small()).unwrap();
    assert!(viewer.publish(&stream).await.is_err());

    within("to anchor", viewer.switch_role(Role::Anchor))
        .await
        .unwrap();
    let (e, _) = expect_event(&mut alice_events, "peer-role").await;
    assert_eq!(
        e,
        ClientEvent::PeerRole {
            user_id: "viewer".parse().unwrap(),
            role: Role::Anchor
        }
    );
    assert!(alice
        .remote_users()
        .iter()
        .any(|p| p.user_id.as_str() == "viewer" && p.role == Role::Anchor));
    within("publish as anchor", viewer.publish(&stream))
        .await
        .unwrap();
    sees_video(&alice, &mut alice_events, "viewer").await;

    within("to audience", viewer.switch_role(Role::Audience))
        .await
        .unwrap();
    wait_for(
        &mut alice_events,
        "stream-removed",
        |e| matches!(e, ClientEvent::StreamRemoved { user_id, .. } if user_id.as_str() == "viewer"),
    )
    .await;
    assert!(alice.remote_streams().is_empty());
    match viewer.publish(&stream).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::AudienceCannotPublish),
        other => panic!("{other:?}"),
    }
}

fn quality(e: &ClientEvent) -> Option<(u8, u8, u32)> {
    match e {
        ClientEvent::NetworkQuality {
            uplink_network_quality,
            downlink_network_quality,
            uplink_rtt,
            ..
        } => Some((
            *uplink_network_quality,
            *downlink_network_quality,
            *uplink_rtt,
        )),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_quality_is_reported_and_disconnection_is_graded_6() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.joined("alice", &room(13)).await;
    // Before any media: graded from the signaling round trip.
    let (e, _) = wait_for(&mut alice_events, "network-quality", |e| {
        quality(e).is_some()
    })
    .await;
    assert_eq!(quality(&e).map(|q| (q.0, q.1)), Some((1, 1)), "{e:?}");
    let (bob, mut bob_events) = server.joined("bob", &room(13)).await;
    let _a = publish(&alice).await;
    let _b = publish(&bob).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    // Loopback with media flowing: no loss, RTT of the ICE checks in
    // milliseconds: excellent both ways, twice in a row.
    for _ in 0..2 {
        let (e, _) = wait_for(&mut bob_events, "network-quality", |e| quality(e).is_some()).await;
        let (up, down, rtt) = quality(&e).unwrap();
        assert_eq!((up, down), (1, 1), "{e:?}");
        assert!(rtt < 100, "{e:?}");
    }
    server.stop().await;
    wait_for(&mut bob_events, "network-quality 6", |e| {
        quality(e).is_some_and(|q| q.0 == 6 && q.1 == 6)
    })
    .await;
}

/// Waits (up to [`WAIT`]) until `video` shows a picture of `size`.
async fn decodes_at(
    video: &mut tokio::sync::watch::Receiver<Option<std::sync::Arc<kaigi_media::VideoFrame>>>,
    what: &str,
    size: (usize, usize),
) {
    within(
        what,
        video.wait_for(|f| f.as_ref().map(|f| (f.width, f.height)) == Some(size)),
    )
    .await
    .expect("frames");
}

/// Simulcast on loopback: a 320×240 publisher sends two layers; a
/// subscriber that shows it in a small tile gets the 160×120 layer, and
/// the large one again when the limit is lifted — one stream whose
/// picture changes size, decoded throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tile_gets_the_small_layer() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let stream = publish(&alice).await;
    assert_eq!(stream.layers().len(), 2, "{:?}", stream.layers());
    sees_video(&bob, &mut bob_events, "alice").await;
    let remote = bob.remote_streams().pop().expect("alice's stream");
    let mut video = remote.video();
    decodes_at(&mut video, "the large layer first", (320, 240)).await;
    let alice_id = "alice".parse().unwrap();
    within(
        "set-video-size",
        bob.set_remote_video_size(&alice_id, 160, 120),
    )
    .await
    .unwrap();
    decodes_at(&mut video, "the small layer", (160, 120)).await;
    let before = remote.frames_decoded();
    within("no limit", bob.set_remote_video_size(&alice_id, 0, 0))
        .await
        .unwrap();
    decodes_at(&mut video, "the large layer again", (320, 240)).await;
    assert!(remote.frames_decoded() > before);
}

/// Frames sent on `stream`'s (largest, smallest) layer over the last
/// second, once `ok` holds for them, sampled every 250 ms for up to
/// `limit`; panics with the last figures otherwise.
async fn layers_become(
    stream: &LocalStream,
    what: &str,
    limit: Duration,
    ok: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let deadline = Instant::now() + limit;
    let mut samples = std::collections::VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let sent = stream.layer_frames_sent();
        samples.push_back((sent[0], sent[sent.len() - 1]));
        if samples.len() > 5 {
            samples.pop_front();
        }
        if samples.len() == 5 {
            let (a, b) = (samples[0], samples[4]);
            let moved = (b.0 - a.0, b.1 - a.1);
            if ok(moved.0, moved.1) {
                return moved;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: frames sent per layer over the last second {moved:?}"
            );
        }
    }
}

/// A publisher encodes only the layers some subscriber needs (protocol
/// 7's `video-layers`): a subscriber showing the video small lets the
/// large layer stop (after the server's 5 s of hysteresis); lifting the
/// limit brings it back at once, starting with a keyframe the subscriber
/// decodes; with nobody receiving, only the smallest layer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_nobody_needs_is_not_encoded_until_someone_does() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let stream = publish(&alice).await;
    sees_video(&bob, &mut bob_events, "alice").await;
    let remote = bob.remote_streams().pop().expect("alice's stream");
    let mut video = remote.video();
    layers_become(&stream, "both layers sent", WAIT, |large, small| {
        large >= 10 && small >= 10
    })
    .await;
    let alice_id = "alice".parse().unwrap();
    within(
        "set-video-size",
        bob.set_remote_video_size(&alice_id, 160, 120),
    )
    .await
    .unwrap();
    // The large layer stands still while the small one goes on (within
    // the 5 s of hysteresis and a margin).
    let only_small = |what: &'static str| {
        layers_become(&stream, what, Duration::from_secs(12), |large, small| {
            large == 0 && small >= 10
        })
    };
    let asked = Instant::now();
    only_small("the large layer stopped").await;
    assert!(
        asked.elapsed() >= Duration::from_secs(4),
        "stopped only after the hysteresis, not {:?}",
        asked.elapsed()
    );
    decodes_at(&mut video, "the small layer decoded", (160, 120)).await;
    within("no limit", bob.set_remote_video_size(&alice_id, 0, 0))
        .await
        .unwrap();
    layers_become(&stream, "the large layer back", WAIT, |large, _| {
        large >= 10
    })
    .await;
    decodes_at(&mut video, "the large layer decoded again", (320, 240)).await;
    within("bob leaves", bob.leave()).await.unwrap();
    only_small("nobody receives: the smallest layer only").await;
}

/// A server held to protocol 6 (an older server, or one kept there while
/// a service's nodes are upgraded) refuses the SDK's newest version; the
/// SDK joins again with 6, and the call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_the_previous_protocol_is_joined_with_it() {
    let server = TestServer::start_with(|c| c.max_protocol = 6).await;
    let mut raw = server.raw().await;
    raw_send(
        &mut raw,
        serde_json::json!({"type": "join", "reqId": 1, "sdkAppId": APP.0, "userId": "old",
                           "userSig": sig("old"), "roomId": 1,
                           "protocol": kaigi_proto::PROTOCOL_VERSION}),
    )
    .await;
    let refused = within("the refusal", raw_recv(&mut raw)).await;
    assert_eq!(
        refused.as_ref().map(|r| r["name"].clone()),
        Some("UNSUPPORTED_PROTOCOL".into()),
        "{refused:?}"
    );
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, _) = server.joined("bob", &room(1)).await;
    let _stream = publish(&alice).await;
    frames_arrive(&bob, "alice", 5).await;
}
