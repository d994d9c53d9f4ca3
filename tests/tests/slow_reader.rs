//! A client that stops reading is dropped, never kept as a ghost: writes to
//! it are bounded, so its heartbeat timeout and the too-slow rule still
//! run, and the server still shuts down promptly.

use std::time::{Duration, Instant};

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::ClientEvent;
use kaigi_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped() {
    let mut server = TestServer::start_with(|c| {
        c.heartbeat_timeout = Duration::from_secs(30);
        // The churn below is one connection's, far over the usual limit.
        c.rate_limit = kaigi_server::RateLimit {
            per_sec: 100_000,
            burst: 100_000,
        };
    })
    .await;
    let (_watcher, mut watcher_events) = server.joined("watcher", &room(1)).await;
    let mut stuck = tiny_window_ws(server.addr).await;
    raw_send(&mut stuck, raw_join(1, "stuck", 1)).await;
    assert_eq!(raw_recv(&mut stuck).await.unwrap()["type"], "joined");
    // From here on `stuck` neither reads nor writes.

    // Thousands of room events for it: another user joins and leaves.
    let churn = Churn::start(server.raw().await, 1);
    let started = Instant::now();

    // It is gone: too slow, or at the latest after its heartbeat timeout.
    let (left, _) = wait_for(
        &mut watcher_events,
        "peer-leave of stuck",
        |e| matches!(e, ClientEvent::PeerLeave { user_id, .. } if user_id.as_str() == "stuck"),
    )
    .await;
    let ClientEvent::PeerLeave { reason, .. } = left else {
        unreachable!()
    };
    assert!(
        matches!(reason, PeerLeaveReason::Left | PeerLeaveReason::Timeout),
        "{reason:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "dropped {:?} after the churn started",
        started.elapsed()
    );
    let churn = churn.stop().await;
    assert_eq!(server.users_in(&room(1)).await.unwrap(), ["watcher"]);
    let dropped = server.handle().shared().metrics.encode();
    assert!(
        dropped.contains("reason=\"too-slow\"") || dropped.contains("too-slow"),
        "counted as too slow:\n{dropped}"
    );

    // And the server stops promptly although `stuck` never closes.
    let stopping = Instant::now();
    drop(churn);
    within("shutdown", server.stop()).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    drop(stuck);
}
