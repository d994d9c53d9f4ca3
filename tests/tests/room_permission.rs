//! Room permission (TRTC's `privateMapKey`): an app set to require it lets
//! a user into a room only with a ticket from its backend for that user,
//! that room and that time. A user removed with `RemoveUser` cannot walk
//! back in once the backend stops issuing their ticket, while others
//! still can; apps without the setting are unaffected.

use std::time::Duration;

use kaigi_proto::grant::{generate_private_map_key, Privileges};
use kaigi_proto::{ErrorCode, KickReason, RoomId};
use kaigi_sdk::{Client, ClientError, ClientEvent, EventStream, Role};
use kaigi_tests::*;

/// What the app's backend gives a user it lets into `room`.
fn ticket(user: &str, room: &RoomId, secs: u64) -> String {
    generate_private_map_key(APP, KEY, user, room, Privileges::ALL, secs, now())
}

fn client(server: &TestServer, user: &str, ticket: Option<String>) -> (Client, EventStream) {
    let mut o = server.options(user);
    o.private_map_key = ticket;
    let c = Client::new(o).unwrap();
    let e = c.events();
    (c, e)
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) {
    match r {
        Err(ClientError::Auth { code, message }) => {
            assert_eq!(code, ErrorCode::RoomNotGranted, "{what}: {message}")
        }
        other => panic!("{what}: expected ROOM_NOT_GRANTED, got {other:?}"),
    }
}

#[tokio::test]
async fn a_removed_user_stays_out_once_the_backend_stops_issuing_their_ticket() {
    let server = TestServer::start_with(|c| c.require_room_grant = vec![APP]).await;
    let r = room(1);
    // No ticket, a ticket for another room, a ticket signed with another
    // key: refused.
    let (plain, _) = client(&server, "alice", None);
    refused(plain.join(r.clone(), Role::Anchor).await, "no ticket");
    let (elsewhere, _) = client(&server, "alice", Some(ticket("alice", &room(2), 600)));
    refused(
        elsewhere.join(r.clone(), Role::Anchor).await,
        "another room's",
    );
    let forged =
        generate_private_map_key(APP, "not-the-key", "alice", &r, Privileges::ALL, 600, now());
    let (forger, _) = client(&server, "alice", Some(forged));
    refused(
        forger.join(r.clone(), Role::Anchor).await,
        "a forged ticket",
    );
    let (borrowed, _) = client(&server, "mallory", Some(ticket("alice", &r, 600)));
    refused(
        borrowed.join(r.clone(), Role::Anchor).await,
        "someone else's ticket",
    );

    // With their tickets, alice (a short one) and bob enter.
    let (alice, mut alice_events) = client(&server, "alice", Some(ticket("alice", &r, 2)));
    within("alice enters", alice.join(r.clone(), Role::Anchor))
        .await
        .expect("alice's ticket admits her");
    let (bob, _) = client(&server, "bob", Some(ticket("bob", &r, 600)));
    within("bob enters", bob.join(r.clone(), Role::Anchor))
        .await
        .expect("bob's ticket admits him");

    // The backend removes alice and issues her no more tickets.
    server.remove_users(&r, &["alice"]).await;
    let (e, _) = expect_event(&mut alice_events, "client-banned").await;
    assert!(matches!(
        e,
        ClientEvent::ClientBanned {
            reason: KickReason::RemovedByAdmin,
            ..
        }
    ));
    let (again, _) = client(&server, "alice", None);
    refused(
        again.join(r.clone(), Role::Anchor).await,
        "alice without a ticket",
    );
    // Her last ticket runs out (a clock condition, checked every 100 ms).
    let old = ticket("alice", &r, 2);
    within("alice's ticket to expire", async {
        loop {
            let (c, _) = client(&server, "alice", Some(old.clone()));
            match c.join(r.clone(), Role::Anchor).await {
                Err(ClientError::Auth {
                    code: ErrorCode::RoomNotGranted,
                    ..
                }) => return,
                Ok(_) => {
                    // Still valid: she is in again; out she goes again.
                    server.remove_users(&r, &["alice"]).await;
                }
                Err(e) => panic!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Others still can.
    let (carol, _) = client(&server, "carol", Some(ticket("carol", &r, 600)));
    within("carol enters", carol.join(r.clone(), Role::Anchor))
        .await
        .expect("carol's ticket admits her");
    let mut users = server.users_in(&r).await.unwrap();
    users.sort();
    assert_eq!(users, ["bob", "carol"]);
    drop(bob);

    // An app without the setting takes plain UserSigs as before.
    let mut o = server.options("dave");
    o.sdk_app_id = OTHER_APP;
    o.user_sig = kaigi_proto::usersig::generate(OTHER_APP, OTHER_KEY, "dave", 600, now());
    let dave = Client::new(o).unwrap();
    within("dave enters", dave.join(r.clone(), Role::Anchor))
        .await
        .expect("no ticket needed for the other app");
}
