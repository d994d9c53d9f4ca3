//! After the server restarts, clients reconnect with backoff and rejoin the
//! same room; left and banned clients never do.

use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;

fn state_is(s: ConnectionState) -> impl Fn(&ClientEvent) -> bool {
    move |e| matches!(e, ClientEvent::ConnectionStateChanged { state, .. } if *state == s)
}

#[tokio::test]
async fn clients_rejoin_after_server_restart() {
    let mut server = TestServer::start().await;
    let addr = server.addr;
    let r = room(9001);
    let (alice, mut alice_events) = server.joined("alice", &r).await;
    let (bob, mut bob_events) = server.joined("bob", &r).await;
    expect_event(&mut alice_events, "peer-join").await;

    server.stop().await;
    wait_for(
        &mut alice_events,
        "RECONNECTING",
        state_is(ConnectionState::Reconnecting),
    )
    .await;
    wait_for(
        &mut bob_events,
        "RECONNECTING",
        state_is(ConnectionState::Reconnecting),
    )
    .await;
    assert_eq!(
        alice.room(),
        Some(r.clone()),
        "still in the room while reconnecting"
    );

    let server = TestServer::start_on(addr).await;
    let (_, before) = wait_for(
        &mut alice_events,
        "CONNECTED",
        state_is(ConnectionState::Connected),
    )
    .await;
    assert!(before
        .iter()
        .all(|e| !matches!(e, ClientEvent::ClientBanned { .. })));
    wait_for(
        &mut bob_events,
        "CONNECTED",
        state_is(ConnectionState::Connected),
    )
    .await;
    let mut users = server.users_in(&r).await.unwrap();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
    assert_eq!(bob.connection_state(), ConnectionState::Connected);
    // Whichever rejoined second was announced to the first; each ends
    // knowing the other.
    for (client, events, other) in [
        (&alice, &mut alice_events, "bob"),
        (&bob, &mut bob_events, "alice"),
    ] {
        if !client
            .remote_users()
            .iter()
            .any(|p| p.user_id.as_str() == other)
        {
            wait_for(
                events,
                "the other's peer-join",
                |e| matches!(e, ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == other),
            )
            .await;
        }
        assert_eq!(client.remote_users().len(), 1);
    }

    // Events flow again on the new server.
    let (_carol, _) = server.joined("carol", &r).await;
    wait_for(
        &mut alice_events,
        "carol",
        |e| matches!(e, ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == "carol"),
    )
    .await;
}

#[tokio::test]
async fn left_and_banned_clients_never_reconnect() {
    let mut server = TestServer::start().await;
    let addr = server.addr;
    let r = room(9002);
    let (watcher, mut watcher_events) = server.joined("watcher", &r).await;
    let (leaver, _) = server.joined("leaver", &r).await;
    let (banned, mut banned_events) = server.joined("banned", &r).await;

    leaver.leave().await.unwrap();
    server.remove_users(&room(9002), &["banned"]).await;
    expect_event(&mut banned_events, "client-banned").await;
    server.wait_sessions(1).await;

    server.stop().await;
    wait_for(
        &mut watcher_events,
        "RECONNECTING",
        state_is(ConnectionState::Reconnecting),
    )
    .await;
    let server = TestServer::start_on(addr).await;
    wait_for(
        &mut watcher_events,
        "CONNECTED",
        state_is(ConnectionState::Connected),
    )
    .await;
    assert_eq!(watcher.connection_state(), ConnectionState::Connected);

    // Only the watcher came back; a barrier join shows nobody else did.
    let (_z, _) = server.joined("z", &r).await;
    assert_eq!(server.users_in(&r).await.unwrap(), ["watcher", "z"]);
    server.wait_sessions(2).await;
    assert_eq!(leaver.connection_state(), ConnectionState::Disconnected);
    assert_eq!(banned.connection_state(), ConnectionState::Disconnected);
    assert!(drain(&mut banned_events).iter().all(|e| !matches!(
        e,
        ClientEvent::ConnectionStateChanged {
            state: ConnectionState::Reconnecting,
            ..
        }
    )));
}

#[tokio::test]
async fn leave_while_reconnecting_stops_for_good() {
    let mut server = TestServer::start().await;
    let (alice, mut events) = server.joined("alice", &room(1)).await;
    server.stop().await;
    wait_for(
        &mut events,
        "RECONNECTING",
        state_is(ConnectionState::Reconnecting),
    )
    .await;
    alice.leave().await.unwrap();
    assert_eq!(alice.connection_state(), ConnectionState::Disconnected);
    let (_, before) = wait_for(
        &mut events,
        "DISCONNECTED",
        state_is(ConnectionState::Disconnected),
    )
    .await;
    assert!(before.iter().all(|e| !matches!(
        e,
        ClientEvent::ConnectionStateChanged {
            state: ConnectionState::Connected,
            ..
        }
    )));
}
