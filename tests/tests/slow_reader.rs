//! A client that stops reading is dropped, never kept as a ghost: writes to
//! it are bounded, so its heartbeat timeout and the too-slow rule still
//! run, and the server still shuts down promptly.

use std::time::{Duration, Instant};

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::ClientEvent;
use kaigi_tests::*;

/// A flag that tells a background loop to stop.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

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

    // Thousands of room events for it: another user joins and leaves
    // (a long user id makes each event as large as events get).
    const CHURNER: &str = "churner-with-a-long-user-id-0032";
    let mut churn = server.raw().await;
    let stop = stop_flag();
    let churning = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Bounded in count; ends early once the test has its answer.
            for i in 0..50_000u64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                raw_send(&mut churn, raw_join(i * 2, CHURNER, 1)).await;
                raw_reply(&mut churn, "joined").await;
                raw_send(
                    &mut churn,
                    serde_json::json!({"type":"leave","reqId":i * 2 + 1}),
                )
                .await;
                raw_reply(&mut churn, "left").await;
            }
            churn
        })
    };
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churn = within("the churn to stop", churning).await.expect("churn");
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
