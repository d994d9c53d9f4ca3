//! A client that goes silent is removed after the heartbeat timeout.

use std::time::Duration;

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;

#[tokio::test]
async fn silent_client_is_removed_after_timeout() {
    let server = TestServer::start_with(|c| c.heartbeat_timeout = Duration::from_secs(1)).await;
    // The SDK client pings (every 250 ms here) and stays.
    let (sdk, mut sdk_events) = server.joined("pinger", &room(1)).await;

    let mut silent = server.raw().await;
    raw_send(&mut silent, raw_join(1, "silent", 1)).await;
    let joined = raw_recv(&mut silent).await.unwrap();
    assert_eq!(joined["heartbeatTimeoutMs"], 1000);
    assert_eq!(joined["heartbeatIntervalMs"], 250);
    let started = std::time::Instant::now();

    let (e, _) = expect_event(&mut sdk_events, "peer-leave").await;
    assert_eq!(
        e,
        ClientEvent::PeerLeave {
            user_id: "silent".parse().unwrap(),
            reason: PeerLeaveReason::Timeout
        }
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    let notice = raw_recv(&mut silent).await;
    // The peer-join of nobody else precedes; the timeout notice is last.
    assert_eq!(notice.unwrap()["name"], "HEARTBEAT_TIMEOUT");
    assert_eq!(raw_close_code(&mut silent).await, Some(4000));

    assert_eq!(
        sdk.connection_state(),
        ConnectionState::Connected,
        "pinging keeps a client in"
    );
    assert_eq!(server.users_in(&room(1)).await.unwrap(), ["pinger"]);
}
