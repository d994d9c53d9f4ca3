//! Each bad UserSig is refused with its own code, and nothing joins.

use kaigi_proto::{usersig, ErrorCode, SdkAppId, UserId};
use kaigi_sdk::{Client, ClientError, ConnectionState, Role};
use kaigi_tests::*;

async fn refused(server: &TestServer, app: SdkAppId, user: &str, sig: String) -> ClientError {
    let mut opts = server.options(user);
    opts.sdk_app_id = app;
    opts.user_id = UserId::new(user).unwrap();
    opts.user_sig = sig;
    let c = Client::new(opts).unwrap();
    let err = c.join(room(77), Role::Anchor).await.unwrap_err();
    assert_eq!(c.connection_state(), ConnectionState::Disconnected);
    err
}

fn auth_code(e: ClientError) -> ErrorCode {
    match e {
        ClientError::Auth { code, .. } => code,
        other => panic!("not an auth error: {other:?}"),
    }
}

#[tokio::test]
async fn each_bad_usersig_has_its_own_code() {
    let server = TestServer::start().await;
    let cases = [
        (
            APP,
            "alice",
            usersig::generate(APP, KEY, "alice", 60, now() - 3600),
            ErrorCode::UsersigExpired,
            70001,
        ),
        (
            APP,
            "alice",
            usersig::generate(APP, "forged-key", "alice", 3600, now()),
            ErrorCode::UsersigBadSignature,
            70009,
        ),
        (
            APP,
            "alice",
            usersig::generate(OTHER_APP, OTHER_KEY, "alice", 3600, now()),
            ErrorCode::UsersigWrongApp,
            70014,
        ),
        (
            APP,
            "alice",
            usersig::generate(APP, KEY, "mallory", 3600, now()),
            ErrorCode::UsersigWrongUser,
            70013,
        ),
        (
            APP,
            "alice",
            "not-a-usersig".to_owned(),
            ErrorCode::UsersigUndecodable,
            70003,
        ),
        (
            APP,
            "alice",
            String::new(),
            ErrorCode::UsersigUndecodable,
            70003,
        ),
        (
            SdkAppId(42),
            "alice",
            usersig::generate(SdkAppId(42), KEY, "alice", 3600, now()),
            ErrorCode::UnknownSdkAppId,
            70020,
        ),
    ];
    for (app, user, sig, expected, number) in cases {
        let code = auth_code(refused(&server, app, user, sig).await);
        assert_eq!(code, expected);
        assert_eq!(code.code(), number);
    }
    assert_eq!(server.users_in(&room(77)).await, None, "nobody got in");
}

#[tokio::test]
async fn refusal_is_answered_on_the_wire_with_code_and_name() {
    let server = TestServer::start().await;
    let mut ws = server.raw().await;
    let mut join = raw_join(9, "alice", 1);
    join["userSig"] = serde_json::json!(usersig::generate(APP, KEY, "alice", 1, now() - 100));
    raw_send(&mut ws, join).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["reqId"], 9);
    assert_eq!(reply["code"], 70001);
    assert_eq!(reply["name"], "USERSIG_EXPIRED");
    // An auth failure does not close the connection: a good join still works.
    raw_send(&mut ws, raw_join(10, "alice", 1)).await;
    assert_eq!(raw_recv(&mut ws).await.unwrap()["type"], "joined");
}
