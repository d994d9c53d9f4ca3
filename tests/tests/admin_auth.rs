//! Admin calls with missing or bad authentication change nothing.

use kaigi_proto::{usersig, ADMIN_IDENTIFIER};
use kaigi_sdk::ConnectionState;
use kaigi_tests::*;
use serde_json::json;

fn query(app: u32, identifier: &str, sig: &str) -> String {
    format!("sdkappid={app}&identifier={identifier}&usersig={sig}&random=7&contenttype=json")
}

#[tokio::test]
async fn bad_admin_auth_changes_nothing() {
    let server = TestServer::start().await;
    let r = room(8001);
    let (alice, mut alice_events) = server.joined("alice", &r).await;
    let good = usersig::generate(APP, KEY, ADMIN_IDENTIFIER, 300, now());
    let body = json!({"SdkAppId": APP.0, "RoomId": 8001}).to_string();
    let cases: Vec<(String, &str, String)> = vec![
        (
            String::new(),
            "POST",
            "AuthFailure.InvalidAuthorization".into(),
        ),
        (
            format!("sdkappid={}&identifier={ADMIN_IDENTIFIER}", APP.0),
            "POST",
            "AuthFailure.InvalidAuthorization".into(),
        ),
        (
            query(
                APP.0,
                "alice",
                &usersig::generate(APP, KEY, "alice", 300, now()),
            ),
            "POST",
            "AuthFailure.UnauthorizedOperation".into(),
        ),
        (
            query(
                APP.0,
                ADMIN_IDENTIFIER,
                &usersig::generate(APP, "forged", ADMIN_IDENTIFIER, 300, now()),
            ),
            "POST",
            "AuthFailure.SignatureFailure".into(),
        ),
        (
            query(
                APP.0,
                ADMIN_IDENTIFIER,
                &usersig::generate(APP, KEY, ADMIN_IDENTIFIER, 10, now() - 100),
            ),
            "POST",
            "AuthFailure.SignatureExpire".into(),
        ),
        (
            query(APP.0, ADMIN_IDENTIFIER, "garbage"),
            "POST",
            "AuthFailure.SignatureFailure".into(),
        ),
        // A valid admin sig of another app cannot touch this app's rooms.
        (
            query(
                OTHER_APP.0,
                ADMIN_IDENTIFIER,
                &usersig::generate(OTHER_APP, OTHER_KEY, ADMIN_IDENTIFIER, 300, now()),
            ),
            "POST",
            "UnauthorizedOperation.SdkAppId".into(),
        ),
        (
            query(
                42,
                ADMIN_IDENTIFIER,
                &usersig::generate(kaigi_proto::SdkAppId(42), KEY, ADMIN_IDENTIFIER, 300, now()),
            ),
            "POST",
            "FailedOperation.SdkAppIdNotExist".into(),
        ),
        (
            query(APP.0, ADMIN_IDENTIFIER, &good),
            "GET",
            "UnsupportedOperation".into(),
        ),
    ];
    for (q, method, expected) in cases {
        for action in ["DismissRoom", "RemoveUser"] {
            let mut b: serde_json::Value = serde_json::from_str(&body).unwrap();
            b["UserIds"] = json!(["alice"]);
            let resp = server.admin_raw(method, action, &q, b.to_string()).await;
            assert_eq!(
                resp["Response"]["Error"]["Code"],
                expected.as_str(),
                "{action} {q}: {resp}"
            );
            assert!(resp["Response"]["RequestId"].is_string());
        }
    }
    // Other malformed calls with good auth.
    let q = query(APP.0, ADMIN_IDENTIFIER, &good);
    let cases = [
        ("NoSuchAction", body.clone(), "InvalidAction"),
        // Not UTF-8 once decoded: still TRTC's JSON, not a bare 400.
        ("%ff%fe%00", body.clone(), "InvalidAction"),
        (
            "DismissRoom",
            "{not json".to_owned(),
            "InvalidParameter.BodyParamsError",
        ),
        (
            "DismissRoom",
            "[1]".to_owned(),
            "InvalidParameter.BodyParamsError",
        ),
        // An empty body is not a JSON object.
        (
            "DismissRoom",
            String::new(),
            "InvalidParameter.BodyParamsError",
        ),
        (
            "DismissRoom",
            json!({"RoomId": 8001}).to_string(),
            "MissingParameter.SdkAppId",
        ),
        (
            "DismissRoom",
            json!({"SdkAppId": OTHER_APP.0, "RoomId": 8001}).to_string(),
            "UnauthorizedOperation.SdkAppId",
        ),
        (
            "DismissRoom",
            "x".repeat(70_000),
            "RequestSizeLimitExceeded",
        ),
    ];
    for (action, b, expected) in cases {
        let resp = server.admin_raw("POST", action, &q, b).await;
        assert_eq!(
            resp["Response"]["Error"]["Code"], expected,
            "{action}: {resp}"
        );
    }

    // A malformed chunked body is a bad body, not a large one.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST /api/DismissRoom?{q} HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(
        "the answer",
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("\"InvalidParameter\"") && !answer.contains("RequestSizeLimitExceeded"),
        "{answer}"
    );
    // The Content-Type is not checked: a JSON body is read as JSON.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/DescribeRoom?{q}", server.addr))
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(resp["Response"]["Total"], 1, "{resp}");

    // Nothing changed: alice is still there and was told nothing.
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
    assert_eq!(server.users_in(&r).await.unwrap(), ["alice"]);
    let (_bob, _) = server.joined("bob", &r).await;
    let (_, before) = expect_event(&mut alice_events, "peer-join").await;
    assert!(before.is_empty(), "{before:?}");

    // And the same call with good auth works.
    let resp = server.admin_raw("POST", "DismissRoom", &q, body).await;
    assert!(resp["Response"]["Error"].is_null(), "{resp}");
    expect_event(&mut alice_events, "client-banned").await;
}
