//! Duplicate userId: the newest session wins, the earlier one is banned with
//! TRTC's message, and the others see no leave or join.

use kaigi_proto::KickReason;
use kaigi_sdk::{ClientEvent, ConnectionState, Role};
use kaigi_tests::*;
use serde_json::json;

#[tokio::test]
async fn earlier_session_is_banned_and_later_stays() {
    let server = TestServer::start().await;
    let r = room(2001);
    let (first, mut first_events) = server.joined("alice", &r).await;
    let (_watcher, mut watcher_events) = server.joined("watcher", &r).await;
    expect_event(&mut first_events, "peer-join").await;

    let (second, mut second_events) = server.client("alice");
    let info = second.join(r.clone(), Role::Anchor).await.unwrap();
    assert_eq!(
        info.users.len(),
        1,
        "the newcomer sees the watcher, not its old self"
    );

    let (banned, _) = expect_event(&mut first_events, "client-banned").await;
    assert_eq!(
        banned,
        ClientEvent::ClientBanned {
            reason: KickReason::DuplicateUserId,
            message: "client was banned because of duplicated userId joining the room.".into(),
        }
    );
    assert_eq!(first.connection_state(), ConnectionState::Disconnected);
    assert_eq!(first.room(), None);
    let (e, _) = expect_event(&mut first_events, "connection-state-changed").await;
    assert_eq!(
        e,
        ClientEvent::ConnectionStateChanged {
            prev_state: ConnectionState::Connected,
            state: ConnectionState::Disconnected
        }
    );

    // A barrier: a third user joins; everything the watcher saw before it
    // must hold no leave or join of alice.
    let (_zed, _) = server.joined("zed", &r).await;
    let (_, before) = wait_for(
        &mut watcher_events,
        "peer-join zed",
        |e| matches!(e, ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == "zed"),
    )
    .await;
    assert!(before.is_empty(), "the watcher saw {before:?}");

    assert_eq!(second.connection_state(), ConnectionState::Connected);
    assert!(drain(&mut second_events)
        .iter()
        .all(|e| !matches!(e, ClientEvent::ClientBanned { .. })));
    assert_eq!(
        server.users_in(&r).await.unwrap(),
        ["watcher", "alice", "zed"]
    );

    // The banned client's leave is a no-op and does not disturb the new one.
    first.leave().await.unwrap();
    assert_eq!(server.users_in(&r).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_banned_session_cannot_resume() {
    let server = TestServer::start().await;
    let mut old = server.raw().await;
    raw_send(&mut old, raw_join(1, "alice", 7)).await;
    let joined = raw_recv(&mut old).await.unwrap();
    let session = joined["sessionId"].as_str().unwrap().to_owned();

    let mut new = server.raw().await;
    raw_send(&mut new, raw_join(1, "alice", 7)).await;
    assert_eq!(raw_recv(&mut new).await.unwrap()["type"], "joined");
    let banned = raw_recv(&mut old).await.unwrap();
    assert_eq!(
        banned,
        json!({"type":"client-banned","reason":"duplicate-user-id","message":KickReason::DuplicateUserId.message()})
    );
    assert_eq!(raw_close_code(&mut old).await, Some(1000));

    // The old session, reconnecting with `resume`, is told it was banned.
    let mut again = server.raw().await;
    let mut join = raw_join(1, "alice", 7);
    join["resume"] = json!(session);
    raw_send(&mut again, join).await;
    let reply = raw_recv(&mut again).await.unwrap();
    assert_eq!(reply["name"], "SESSION_BANNED");
    assert_eq!(reply["kickReason"], "duplicate-user-id");
    assert_eq!(server.users_in(&room(7)).await.unwrap(), ["alice"]);
}
