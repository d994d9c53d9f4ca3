//! Join and leave with peer events and connection states.

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::{ClientError, ClientEvent, ConnectionState, Role};
use kaigi_tests::*;

#[tokio::test]
async fn join_and_leave_with_peer_events() {
    let server = TestServer::start().await;
    let r = room(1001);
    let (alice, mut alice_events) = server.client("alice");
    let info = alice.join(r.clone(), Role::Anchor).await.unwrap();
    assert!(info.users.is_empty());
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
    let states: Vec<_> = drain(&mut alice_events)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionStateChanged { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [ConnectionState::Connecting, ConnectionState::Connected]
    );

    let (bob, mut bob_events) = server.client("bob");
    let info = bob.join(r.clone(), Role::Audience).await.unwrap();
    assert_eq!(info.users.len(), 1);
    assert_eq!(info.users[0].user_id.as_str(), "alice");
    let (e, _) = expect_event(&mut alice_events, "peer-join").await;
    assert_eq!(
        e,
        ClientEvent::PeerJoin {
            user_id: "bob".parse().unwrap(),
            role: Role::Audience
        }
    );
    assert_eq!(alice.remote_users().len(), 1);
    assert_eq!(server.users_in(&r).await.unwrap(), ["alice", "bob"]);

    bob.leave().await.unwrap();
    assert_eq!(bob.connection_state(), ConnectionState::Disconnected);
    let (e, _) = expect_event(&mut alice_events, "peer-leave").await;
    assert_eq!(
        e,
        ClientEvent::PeerLeave {
            user_id: "bob".parse().unwrap(),
            reason: PeerLeaveReason::Left
        }
    );
    assert!(alice.remote_users().is_empty());
    let (_, before) = wait_for(&mut bob_events, "bob disconnected", |e| {
        matches!(
            e,
            ClientEvent::ConnectionStateChanged {
                state: ConnectionState::Disconnected,
                ..
            }
        )
    })
    .await;
    assert!(!before
        .iter()
        .any(|e| matches!(e, ClientEvent::ClientBanned { .. })));

    // Leaving again, or when never joined, does nothing.
    bob.leave().await.unwrap();
    let (carol, _) = server.client("carol");
    carol.leave().await.unwrap();

    // Rejoining after leave works.
    bob.join(r.clone(), Role::Anchor).await.unwrap();
    assert_eq!(server.users_in(&r).await.unwrap(), ["alice", "bob"]);

    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
    assert_eq!(
        server.users_in(&r).await,
        None,
        "the last leave removes the room"
    );
}

#[tokio::test]
async fn join_twice_is_refused_and_bad_rooms_are_typed() {
    let server = TestServer::start().await;
    let (alice, _) = server.joined("alice", &room(5)).await;
    assert_eq!(
        alice.join(room(6), Role::Anchor).await,
        Err(ClientError::AlreadyInRoom)
    );
    assert_eq!(alice.room(), Some(room(5)));

    // A raw client sees the server's own checks on ids.
    let mut ws = server.raw().await;
    let mut bad = raw_join(1, "dave", 1);
    bad["roomId"] = serde_json::json!(4_294_967_295u64);
    raw_send(&mut ws, bad).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(reply["name"], "INVALID_PARAMETER");
    assert_eq!(reply["reqId"], 1);
    let mut bad = raw_join(2, "dave", 1);
    bad["userId"] = serde_json::json!("no spaces allowed");
    raw_send(&mut ws, bad).await;
    assert_eq!(
        raw_recv(&mut ws).await.unwrap()["name"],
        "INVALID_PARAMETER"
    );
    let mut bad = raw_join(3, "dave", 1);
    bad["strRoomId"] = serde_json::json!("x".repeat(65));
    bad.as_object_mut().unwrap().remove("roomId");
    raw_send(&mut ws, bad).await;
    assert_eq!(
        raw_recv(&mut ws).await.unwrap()["name"],
        "INVALID_PARAMETER"
    );
    // The connection is still usable after refused requests.
    raw_send(&mut ws, raw_join(4, "dave", 1)).await;
    assert_eq!(raw_recv(&mut ws).await.unwrap()["type"], "joined");
}

#[tokio::test]
async fn unreachable_server_and_timeout_are_typed() {
    // A port nobody listens on: bind one, then free it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut opts = TestServer::start().await.options("alice");
    opts.server_url = format!("ws://{addr}");
    let c = kaigi_sdk::Client::new(opts).unwrap();
    assert!(matches!(
        c.join(room(1), Role::Anchor).await,
        Err(ClientError::Unreachable(_))
    ));
    assert_eq!(c.connection_state(), ConnectionState::Disconnected);

    // A listener that accepts TCP but never answers the WebSocket handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = TestServer::start().await.options("alice");
    opts.server_url = format!("ws://{}", silent.local_addr().unwrap());
    opts.join_timeout = std::time::Duration::from_millis(300);
    let c = kaigi_sdk::Client::new(opts).unwrap();
    assert_eq!(
        c.join(room(1), Role::Anchor).await,
        Err(ClientError::Timeout(300))
    );

    let mut opts = TestServer::start().await.options("alice");
    opts.server_url = "127.0.0.1:1".into();
    assert!(matches!(
        kaigi_sdk::Client::new(opts),
        Err(ClientError::InvalidOptions(_))
    ));
}
