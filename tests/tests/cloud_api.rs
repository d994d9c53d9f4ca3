//! The admin API as Tencent Cloud API 3.0 (`POST /`, TC3-HMAC-SHA256),
//! driven by Tencent's official SDK for Python
//! (`tests/interop/tencentcloud_sdk.py`, unchanged client code): users
//! removed and rooms dismissed as through `/api/…`, and every refusal in
//! Tencent Cloud's codes (a wrong key, an unknown SecretId, an app the key
//! may not touch, an app the server does not have, a stale timestamp, too
//! many calls).

use std::time::Duration;

use kaigi_proto::KickReason;
use kaigi_sdk::ClientEvent;
use kaigi_server::config::CloudApiKey;
use kaigi_tests::*;
use serde_json::{json, Value};

const SECRET_ID: &str = "AKIDkaigiTestSecretId0000000000000000";
const SECRET_KEY: &str = "kaigiTestSecretKey00000000000000";
/// A key pair that may act on the other app only.
const NARROW_ID: &str = "AKIDkaigiNarrow";
const NARROW_KEY: &str = "narrowSecretKey";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.cloud_api_keys = vec![
            CloudApiKey {
                secret_id: SECRET_ID.into(),
                secret_key: SECRET_KEY.into(),
                apps: vec![],
            },
            CloudApiKey {
                secret_id: NARROW_ID.into(),
                secret_key: NARROW_KEY.into(),
                apps: vec![OTHER_APP],
            },
        ]
    })
    .await
}

/// Runs `calls` through the official SDK; one outcome per call.
async fn sdk(server: &TestServer, calls: Value) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/tencentcloud_sdk.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--endpoint", &server.url().replacen("ws://", "", 1)])
        .args(["--calls", &calls.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK's calls end within 60 s")
        .expect("python3 with tencentcloud-sdk-python-trtc (scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn call(action: &str, params: Value) -> Value {
    json!({"secretId": SECRET_ID, "secretKey": SECRET_KEY, "action": action, "params": params})
}

fn banned_reason(e: &ClientEvent) -> Option<KickReason> {
    match e {
        ClientEvent::ClientBanned { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn the_official_sdk_removes_users_and_dismisses_rooms() {
    let server = server().await;
    let (_alice, mut alice_events) = server.joined("alice", &room(1)).await;
    let (_bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let (_carol, mut carol_events) = server.joined("carol", &str_room("daily")).await;
    let (_dave, mut dave_events) = server.joined("dave", &str_room("daily")).await;
    let (_eve, mut eve_events) = server.joined("eve", &room(5)).await;
    let app = APP.0;
    let out = sdk(
        &server,
        json!([
            call(
                "RemoveUser",
                json!({"SdkAppId": app, "RoomId": 1, "UserIds": ["alice"]})
            ),
            call(
                "RemoveUserByStrRoomId",
                json!({"SdkAppId": app, "RoomId": "daily", "UserIds": ["carol"]})
            ),
            call("DismissRoom", json!({"SdkAppId": app, "RoomId": 1})),
            call(
                "DismissRoomByStrRoomId",
                json!({"SdkAppId": app, "RoomId": "daily"})
            ),
            call(
                "SetUserBlocked",
                json!({"SdkAppId": app, "RoomId": 5, "UserId": "eve", "IsMute": 2})
            ),
        ]),
    )
    .await;
    for o in &out {
        assert!(o["ok"].is_string(), "{out:?}");
    }
    for (events, reason) in [
        (&mut alice_events, KickReason::RemovedByAdmin),
        (&mut carol_events, KickReason::RemovedByAdmin),
        (&mut bob_events, KickReason::RoomDismissed),
        (&mut dave_events, KickReason::RoomDismissed),
    ] {
        let (e, _) = expect_event(events, "client-banned").await;
        assert_eq!(banned_reason(&e), Some(reason));
    }
    let (e, _) = expect_event(&mut eve_events, "blocked").await;
    assert_eq!(
        e,
        ClientEvent::Blocked {
            audio: true,
            video: false
        }
    );
    assert!(server.users_in(&room(1)).await.is_none());
    assert!(server.users_in(&str_room("daily")).await.is_none());
}

#[tokio::test]
async fn refusals_are_tencent_clouds() {
    let server = server().await;
    let (_alice, mut alice_events) = server.joined("alice", &room(2)).await;
    let remove = json!({"SdkAppId": APP.0, "RoomId": 2, "UserIds": ["alice"]});
    let with = |id: &str, key: &str, action: &str, params: &Value| json!({"secretId": id, "secretKey": key, "action": action, "params": params});
    let out = sdk(
        &server,
        json!([
            with(SECRET_ID, "a-wrong-key", "RemoveUser", &remove),
            with("AKIDnobody", SECRET_KEY, "RemoveUser", &remove),
            with(NARROW_ID, NARROW_KEY, "RemoveUser", &remove),
            call(
                "RemoveUser",
                json!({"SdkAppId": 1400999999, "RoomId": 2, "UserIds": ["alice"]})
            ),
            call(
                "RemoveUser",
                json!({"SdkAppId": APP.0, "RoomId": 0, "UserIds": ["alice"]})
            ),
            call(
                "RemoveUser",
                json!({"SdkAppId": APP.0, "RoomId": 3, "UserIds": ["alice"]})
            ),
        ]),
    )
    .await;
    let codes: Vec<&str> = out
        .iter()
        .map(|o| o["error"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.UnauthorizedOperation",
            "FailedOperation.SdkAppIdNotExist",
            "InvalidParameterValue.RoomId",
            "FailedOperation.RoomNotExist",
        ],
        "{out:?}"
    );
    // Nobody was removed by any of them.
    assert!(drain(&mut alice_events)
        .iter()
        .all(|e| banned_reason(e).is_none()));
    assert_eq!(server.users_in(&room(2)).await.unwrap(), ["alice"]);
}

/// A request signed here (`kaigi_proto::tc3`, as the SDKs sign) at
/// `timestamp`, sent with `reqwest`.
async fn signed_post(server: &TestServer, action: &str, body: &Value, timestamp: u64) -> Value {
    let host = server.url().replacen("ws://", "", 1);
    let bytes = body.to_string().into_bytes();
    let headers = kaigi_proto::tc3::sign_post(
        SECRET_ID,
        SECRET_KEY,
        &host,
        action,
        Some("ap-guangzhou"),
        timestamp,
        &bytes,
    );
    let mut req = reqwest::Client::new().post(format!("http://{host}/"));
    for (k, v) in headers {
        if k != "Host" {
            req = req.header(k, v);
        }
    }
    req.body(bytes).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn stale_requests_and_floods_are_refused() {
    let server = server().await;
    let body = json!({"SdkAppId": APP.0, "RoomId": 9});
    // Signed six minutes ago (or ahead): expired.
    for skew in [-360i64, 360] {
        let at = now().saturating_add_signed(skew);
        let r = signed_post(&server, "DismissRoom", &body, at).await;
        assert_eq!(
            r["Response"]["Error"]["Code"], "AuthFailure.SignatureExpire",
            "{r}"
        );
    }
    // An unknown action, a version this server does not serve.
    let r = signed_post(&server, "NoSuchAction", &body, now()).await;
    assert_eq!(r["Response"]["Error"]["Code"], "InvalidAction", "{r}");
    // TRTC's 20 calls a second per app and action: of 30 at once, 20 are
    // served (the room does not exist) and the rest refused; another
    // action is not affected.
    let calls = (0..30).map(|_| signed_post(&server, "DismissRoom", &body, now()));
    let answers = futures_util::future::join_all(calls).await;
    let limited = answers
        .iter()
        .filter(|r| r["Response"]["Error"]["Code"] == "RequestLimitExceeded")
        .count();
    assert!((10..=11).contains(&limited), "{limited} of 30 limited");
    let r = signed_post(
        &server,
        "RemoveUser",
        &json!({"SdkAppId": APP.0, "RoomId": 9, "UserIds": ["x"]}),
        now(),
    )
    .await;
    assert_eq!(
        r["Response"]["Error"]["Code"], "FailedOperation.RoomNotExist",
        "{r}"
    );
}
