//! A session's media connection does not grow with its history: ended
//! publications and subscriptions leave m-lines behind, and the server
//! replaces the connection before they add up, so a subscriber survives
//! any number of others' publish/unpublish cycles and a room holds many
//! publishers. Cycling leaves no task behind on either side.

use kaigi_sdk::{ClientEvent, ConnectionState, LocalStream, SyntheticSource};
use kaigi_tests::*;

/// The 25-publisher room runs alone (its 25 encoders and the watcher's 25
/// decoders take a 2-core machine's CPU); the other tests share. Starved
/// of CPU, every client's delay-based estimate sees queues, and the SFU
/// rightly pauses video on such a path: a test beside it then waited for
/// frames that a fair share of the machine would have carried.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A small, cheap stream: 320×112 at 10 fps and a tone.
fn small_stream(client: &kaigi_sdk::Client) -> LocalStream {
    LocalStream::synthetic(
        client.user_id(),
        SyntheticSource {
            video: Some((320, 112)),
            fps: 10,
            video_bitrate_bps: 100_000,
            simulcast: true,
            ..Default::default()
        },
    )
    .expect("a synthetic stream")
}

/// A server whose per-connection rate limit the cycles cannot reach: they
/// run faster than a person could click, which is not what these tests
/// are about.
async fn fast_server() -> TestServer {
    TestServer::start_with(|c| {
        c.rate_limit = kaigi_server::RateLimit {
            per_sec: 10_000,
            burst: 10_000,
        }
    })
    .await
}

/// `n` publish/unpublish cycles of `stream` by `client`, each answered.
async fn cycle(client: &kaigi_sdk::Client, stream: &LocalStream, n: usize) {
    for i in 0..n {
        within("publish", client.publish(stream))
            .await
            .unwrap_or_else(|e| panic!("publish {i} failed: {e}"));
        within("unpublish", client.unpublish())
            .await
            .unwrap_or_else(|e| panic!("unpublish {i} failed: {e}"));
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Whether any event says the connection dropped.
fn dropped(events: &[ClientEvent]) -> Option<&ClientEvent> {
    events.iter().find(|e| {
        matches!(
            e,
            ClientEvent::ConnectionStateChanged {
                state: ConnectionState::Reconnecting | ConnectionState::Disconnected,
                ..
            } | ClientEvent::Error { .. }
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_unpublish_cycles_never_disturb_a_subscriber() {
    let _shared = MACHINE.read().await;
    const CYCLES: usize = 200;
    let server = fast_server().await;
    let r = room(1);
    let (watcher, mut watcher_events) = server.joined("watcher", &r).await;
    let (steady, _) = server.joined("steady", &r).await;
    let _steady_stream = small_stream(&steady);
    within("steady publishes", steady.publish(&_steady_stream))
        .await
        .expect("steady publishes");
    frames_arrive(&watcher, "steady", 5).await;

    let (cycler, mut cycler_events) = server.joined("cycler", &r).await;
    let stream = small_stream(&cycler);
    cycle(&cycler, &stream, CYCLES).await;
    let seen = drain(&mut watcher_events);
    assert!(dropped(&seen).is_none(), "watcher: {:?}", dropped(&seen));
    let seen = drain(&mut cycler_events);
    assert!(dropped(&seen).is_none(), "cycler: {:?}", dropped(&seen));
    // Everyone's media still flows: the watcher gets steady's video, and a
    // last publication of the cycler's reaches it too.
    frames_arrive(&watcher, "steady", 5).await;
    within("publish", cycler.publish(&stream))
        .await
        .expect("a last publish");
    frames_arrive(&watcher, "cycler", 5).await;
    assert_eq!(watcher.connection_state(), ConnectionState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_with_nothing_else_live_leak_no_task_and_break_no_connection() {
    let _shared = MACHINE.read().await;
    const WARM: usize = 20;
    const CYCLES: usize = 100;
    let server = fast_server().await;
    let r = room(4);
    // The watcher receives nothing but the cycler: when its worn
    // connection is due for replacement, nothing on it is live.
    let (watcher, mut watcher_events) = server.joined("watcher", &r).await;
    let (cycler, mut cycler_events) = server.joined("cycler", &r).await;
    let stream = small_stream(&cycler);
    cycle(&cycler, &stream, WARM).await;
    let tasks_before = alive_tasks();
    cycle(&cycler, &stream, CYCLES).await;
    let tasks_after = alive_tasks();
    let seen = drain(&mut watcher_events);
    assert!(dropped(&seen).is_none(), "watcher: {:?}", dropped(&seen));
    let seen = drain(&mut cycler_events);
    assert!(dropped(&seen).is_none(), "cycler: {:?}", dropped(&seen));
    // Tasks of the connection in use come and go (a few per connection,
    // which is replaced every few cycles); one per cycle would be a leak.
    assert!(
        tasks_after < tasks_before + CYCLES / 4,
        "tasks grew with publish cycles: {tasks_before} → {tasks_after}"
    );
    within("publish", cycler.publish(&stream))
        .await
        .expect("a last publish");
    frames_arrive(&watcher, "cycler", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_25_publishers_holds() {
    let _alone = MACHINE.write().await;
    const PUBLISHERS: usize = 25;
    let server = TestServer::start().await;
    let r = room(2);
    let (watcher, mut watcher_events) = server.joined("watcher", &r).await;
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        let mut options = server.options(&format!("p{i}"));
        // Publishers only send: the watcher receives all of them.
        options.auto_subscribe = false;
        let client = kaigi_sdk::Client::new(options).expect("client");
        let events = client.events();
        within("join", client.join(r.clone(), kaigi_sdk::Role::Anchor))
            .await
            .expect("join");
        let stream = small_stream(&client);
        within("publish", client.publish(&stream))
            .await
            .unwrap_or_else(|e| panic!("publisher {i}: {e}"));
        publishers.push((client, events, stream));
    }
    for i in 0..PUBLISHERS {
        frames_arrive(&watcher, &format!("p{i}"), 3).await;
    }
    let seen = drain(&mut watcher_events);
    assert!(dropped(&seen).is_none(), "watcher: {:?}", dropped(&seen));
    for (i, (_, events, _)) in publishers.iter_mut().enumerate() {
        let seen = drain(events);
        assert!(dropped(&seen).is_none(), "p{i}: {:?}", dropped(&seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_second_publish_leaves_the_first_untouched() {
    let _shared = MACHINE.read().await;
    let server = TestServer::start().await;
    let r = room(3);
    let (alice, _) = server.joined("alice", &r).await;
    let first = small_stream(&alice);
    within("publish", alice.publish(&first))
        .await
        .expect("first publish");
    let second = small_stream(&alice);
    let refused = within("second publish", alice.publish(&second)).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("already publishing")),
        "{refused:?}"
    );
    // Someone who joins later still receives the first publication.
    let (bob, _) = server.joined("bob", &r).await;
    frames_arrive(&bob, "alice", 5).await;
}
