//! RemoveUser (numeric rooms) and RemoveUserByStrRoomId (string rooms).

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_proto::{KickReason, RoomId};
use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::*;
use serde_json::{json, Value};

async fn remove_one_of_three(server: &TestServer, r: RoomId, action: &str, room_json: Value) {
    let (target, mut target_events) = server.joined("target", &r).await;
    let (_a, mut a_events) = server.joined("a", &r).await;
    let (_b, _) = server.joined("b", &r).await;

    let resp = server
        .admin(
            action,
            json!({"RoomId": room_json, "UserIds": ["target", "not-here"]}),
        )
        .await;
    assert!(resp["Response"]["Error"].is_null(), "{resp}");
    assert!(resp["Response"]["RequestId"].as_str().unwrap().len() >= 32);

    let (e, _) = expect_event(&mut target_events, "client-banned").await;
    assert_eq!(
        e,
        ClientEvent::ClientBanned {
            reason: KickReason::RemovedByAdmin,
            message: "client was banned because of you got banned by account admin".into()
        }
    );
    assert_eq!(target.connection_state(), ConnectionState::Disconnected);
    let (e, _) = expect_event(&mut a_events, "peer-leave").await;
    assert_eq!(
        e,
        ClientEvent::PeerLeave {
            user_id: "target".parse().unwrap(),
            reason: PeerLeaveReason::Removed
        }
    );
    assert_eq!(server.users_in(&r).await.unwrap(), ["a", "b"]);
}

#[tokio::test]
async fn remove_user_from_numeric_room() {
    let server = TestServer::start().await;
    remove_one_of_three(&server, room(4001), "RemoveUser", json!(4001)).await;
}

#[tokio::test]
async fn remove_user_by_str_room_id() {
    let server = TestServer::start().await;
    remove_one_of_three(
        &server,
        str_room("team:standup #4"),
        "RemoveUserByStrRoomId",
        json!("team:standup #4"),
    )
    .await;
}

#[tokio::test]
async fn remove_user_errors() {
    let server = TestServer::start().await;
    let (_a, _) = server.joined("a", &room(1)).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    let cases = [
        (
            "RemoveUser",
            json!({"RoomId": 2, "UserIds": ["a"]}),
            "FailedOperation.RoomNotExist",
        ),
        (
            "RemoveUser",
            json!({"UserIds": ["a"]}),
            "MissingParameter.RoomId",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1}),
            "MissingParameter.UserIds",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1, "UserIds": []}),
            "InvalidParameter.UserIds",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1, "UserIds": eleven}),
            "InvalidParameter.UserIds",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1, "UserIds": ["bad id"]}),
            "InvalidParameter.UserIds",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1, "UserIds": "a"}),
            "InvalidParameter.UserIds",
        ),
        (
            "RemoveUser",
            json!({"RoomId": "1", "UserIds": ["a"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 0, "UserIds": ["a"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            "RemoveUser",
            json!({"RoomId": 1.5, "UserIds": ["a"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            "RemoveUserByStrRoomId",
            json!({"RoomId": 1, "UserIds": ["a"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            "RemoveUserByStrRoomId",
            json!({"RoomId": "a/b", "UserIds": ["a"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            "RemoveUserByStrRoomId",
            json!({"RoomId": "1", "UserIds": ["a"]}),
            "FailedOperation.RoomNotExist",
        ),
    ];
    for (action, body, expected) in cases {
        let resp = server.admin(action, body.clone()).await;
        assert_eq!(
            resp["Response"]["Error"]["Code"], expected,
            "{action} {body}: {resp}"
        );
    }
    assert_eq!(
        server.users_in(&room(1)).await.unwrap(),
        ["a"],
        "no failed call changed the room"
    );
}
