//! The numeric room 123 and the string room "123" are different rooms.

use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;
use serde_json::json;

#[tokio::test]
async fn numeric_and_string_123_are_apart() {
    let server = TestServer::start().await;
    let (num_a, mut num_a_events) = server.joined("a", &room(123)).await;
    let (str_a, mut str_a_events) = server.joined("a", &str_room("123")).await;
    // Same userId in both: no duplicate ban, since the rooms differ.
    let (_num_b, _) = server.joined("b", &room(123)).await;
    let (_, before) = expect_event(&mut num_a_events, "peer-join").await;
    assert!(before.is_empty());
    assert_eq!(server.users_in(&room(123)).await.unwrap(), ["a", "b"]);
    assert_eq!(server.users_in(&str_room("123")).await.unwrap(), ["a"]);

    // Removing "b" from the string room finds nobody; from the numeric one it works.
    server
        .admin(
            "RemoveUserByStrRoomId",
            json!({"RoomId": "123", "UserIds": ["b"]}),
        )
        .await;
    assert_eq!(server.users_in(&room(123)).await.unwrap(), ["a", "b"]);

    // Dismissing the numeric room leaves the string room alone.
    server.dismiss(&room(123)).await;
    expect_event(&mut num_a_events, "client-banned").await;
    assert_eq!(num_a.connection_state(), ConnectionState::Disconnected);
    assert_eq!(str_a.connection_state(), ConnectionState::Connected);
    assert_eq!(server.users_in(&str_room("123")).await.unwrap(), ["a"]);
    // The string room's member saw nothing of it.
    let (_c, _) = server.joined("c", &str_room("123")).await;
    let (_, before) = expect_event(&mut str_a_events, "peer-join").await;
    assert!(before.is_empty(), "{before:?}");

    let rooms = server.admin("ListRooms", json!({})).await;
    assert_eq!(
        rooms["Response"]["Rooms"],
        json!([{"RoomId":"123","RoomIdType":1,"UserCount":2,"CreateTime":rooms["Response"]["Rooms"][0]["CreateTime"]}])
    );
}

#[tokio::test]
async fn apps_are_apart() {
    let server = TestServer::start().await;
    let (_a, mut a_events) = server.joined("a", &room(1)).await;
    // The same room number in another app is another room.
    let mut opts = server.options("b");
    opts.sdk_app_id = OTHER_APP;
    opts.user_sig = kaigi_proto::usersig::generate(OTHER_APP, OTHER_KEY, "b", 3600, now());
    let b = kaigi_sdk::Client::new(opts).unwrap();
    let info = b.join(room(1), kaigi_sdk::Role::Anchor).await.unwrap();
    assert!(info.users.is_empty());
    let (_c, _) = server.joined("c", &room(1)).await;
    let (e, before) = expect_event(&mut a_events, "peer-join").await;
    assert!(before.is_empty());
    assert!(matches!(e, ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == "c"));
}
