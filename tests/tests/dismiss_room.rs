//! DismissRoom and DismissRoomByStrRoomId: everyone banned, the room gone.

use futures_util::StreamExt;
use kaigi_proto::{KickReason, RoomId};
use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;
use serde_json::{json, Value};

const USERS: usize = 60;

async fn dismiss_everyone(server: &TestServer, r: RoomId, action: &str, room_json: Value) {
    let joins = (0..USERS).map(|i| server.joined_owned(format!("user{i}"), r.clone()));
    let (clients, streams): (Vec<_>, Vec<_>) = futures_util::future::join_all(joins)
        .await
        .into_iter()
        .unzip();
    assert_eq!(server.users_in(&r).await.unwrap().len(), USERS);
    // A bystander in another room must not be touched.
    let (bystander, _) = server.joined("bystander", &room(999)).await;

    let resp = server.admin(action, json!({"RoomId": room_json})).await;
    assert!(resp["Response"]["Error"].is_null(), "{resp}");

    let mut all = futures_util::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |e| (i, e)).boxed()),
    );
    let mut banned = [false; USERS];
    within("every user banned", async {
        while !banned.iter().all(|b| *b) {
            let (i, e) = all.next().await.unwrap();
            match e {
                ClientEvent::ClientBanned { reason, message } => {
                    assert_eq!(reason, KickReason::RoomDismissed);
                    assert_eq!(message, KickReason::RoomDismissed.message());
                    banned[i] = true;
                }
                ClientEvent::PeerLeave { .. } => panic!("a dismissal is not a series of leaves"),
                _ => {}
            }
        }
    })
    .await;
    assert!(clients
        .iter()
        .all(|c| c.connection_state() == ConnectionState::Disconnected));
    assert_eq!(server.users_in(&r).await, None, "the room is gone");
    let list = server.admin("ListRooms", json!({})).await;
    assert_eq!(list["Response"]["Total"], 1, "{list}");
    assert_eq!(bystander.connection_state(), ConnectionState::Connected);
    // Dismissing again: the room does not exist.
    let again = server.admin(action, json!({"RoomId": room_json})).await;
    assert_eq!(
        again["Response"]["Error"]["Code"],
        "FailedOperation.RoomNotExist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dismiss_numeric_room_of_sixty() {
    let server = TestServer::start().await;
    dismiss_everyone(&server, room(5001), "DismissRoom", json!(5001)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dismiss_string_room_of_sixty() {
    let server = TestServer::start().await;
    dismiss_everyone(
        &server,
        str_room("all-hands"),
        "DismissRoomByStrRoomId",
        json!("all-hands"),
    )
    .await;
}
