//! Invites: the admin API makes one; anyone holding its code gets, with a
//! name only, a UserSig that enters that room and no other, until the
//! invite expires or is revoked; the endpoint refuses junk and guessing.

use std::time::Duration;

use kaigi_proto::admin::Request;
use kaigi_proto::invite::{Invite, InviteCode};
use kaigi_proto::ErrorCode;
use kaigi_sdk::invite::{preview, redeem};
use kaigi_sdk::{Client, ClientError, ClientEvent, ReconnectPolicy, Role};
use kaigi_tests::*;
use serde_json::json;

async fn create(server: &TestServer, room: &kaigi_proto::RoomId, secs: u64) -> InviteCode {
    let made = server
        .request(&Request::CreateInvite {
            room: room.clone(),
            expire_secs: secs,
        })
        .await
        .expect("CreateInvite");
    made["Code"].as_str().unwrap().parse().unwrap()
}

fn invitee(
    server: &TestServer,
    got: &kaigi_sdk::invite::Redeemed,
) -> (Client, kaigi_sdk::EventStream) {
    let mut o = got.client_options(&server.url()).unwrap();
    o.reconnect = ReconnectPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        give_up_after: Duration::from_secs(5),
    };
    let c = Client::new(o).unwrap();
    let e = c.events();
    (c, e)
}

/// Checks `cond` every 100 ms until it holds (at most [`WAIT`]): for
/// conditions of the clock (an expiry, a refilled rate bucket), which no
/// event announces.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, cond: impl Fn() -> F) {
    within(what, async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if cond().await {
                return;
            }
        }
    })
    .await
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>, code: &str) {
    match r {
        Err(ClientError::Invite { code: c, .. }) => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_invite_lets_a_name_in_to_its_room_and_no_other() {
    let server = TestServer::start().await;
    let (_host, mut host_events) = server.joined("host", &room(41)).await;
    let code = create(&server, &room(41), 600).await;

    let seen = preview(&server.url(), &code, None).await.expect("preview");
    assert_eq!(seen.room.room().unwrap(), room(41));
    assert_eq!(seen.sdk_app_id, APP.0);
    assert!(seen.expires_at.abs_diff(now() + 600) <= 2);

    // The link carries the server; the name is all the invitee gives.
    let link = Invite::link(&server.url(), &code);
    let parsed: Invite = link.parse().unwrap();
    let got = redeem(
        parsed.server.as_deref().unwrap(),
        &parsed.code,
        "guest",
        None,
    )
    .await
    .expect("redeem");
    assert_eq!(got.room().unwrap(), room(41));
    let (guest, _guest_events) = invitee(&server, &got);
    within("the guest joins", guest.join(room(41), Role::Anchor))
        .await
        .expect("join through the invite");
    let (e, _) = expect_event(&mut host_events, "peer-join").await;
    assert!(matches!(e, ClientEvent::PeerJoin { ref user_id, .. } if user_id.as_str() == "guest"));
    guest.leave().await.unwrap();

    // Its UserSig enters only that room (another numeric room, a string
    // room, nothing else).
    let (other, _) = invitee(&server, &got);
    for wrong in [room(42), str_room("41")] {
        match within("a join elsewhere", other.join(wrong.clone(), Role::Anchor)).await {
            Err(ClientError::Auth { code, message }) => {
                assert_eq!(code, ErrorCode::RoomNotGranted, "{message}")
            }
            r => panic!("{wrong}: {r:?}"),
        }
    }
    // A name already in the room cannot be taken through an invite (it
    // would push the host out).
    refused(
        redeem(&server.url(), &code, "host", None).await,
        "NAME_TAKEN",
    );
    assert_eq!(server.users_in(&room(41)).await.unwrap(), vec!["host"]);
    refused(
        redeem(&server.url(), &code, "administrator", None).await,
        "INVALID_PARAMETER",
    );
    refused(
        redeem(&server.url(), &code, "bad name!", None).await,
        "INVALID_PARAMETER",
    );

    // Listed, with how often it was used.
    let listed = server
        .request(&Request::ListInvites { room: None })
        .await
        .unwrap();
    let invites = listed["Invites"].as_array().unwrap();
    assert_eq!(invites.len(), 1);
    assert_eq!(invites[0]["Code"], json!(code.to_string()));
    assert_eq!(invites[0]["RoomId"], json!(41));
    assert_eq!(invites[0]["Redeemed"], json!(1));
    assert_eq!(invites[0]["Revoked"], json!(false));
}

#[tokio::test]
async fn a_revoked_invite_admits_no_one_not_even_with_the_usersig_it_gave() {
    let server = TestServer::start().await;
    let code = create(&server, &str_room("standup"), 600).await;
    let early = redeem(&server.url(), &code, "early", None).await.unwrap();
    let (inside, _) = invitee(&server, &early);
    inside
        .join(str_room("standup"), Role::Anchor)
        .await
        .unwrap();

    server
        .request(&Request::RevokeInvite { code: code.clone() })
        .await
        .expect("RevokeInvite");
    refused(preview(&server.url(), &code, None).await, "INVITE_REVOKED");
    refused(
        redeem(&server.url(), &code, "late", None).await,
        "INVITE_REVOKED",
    );
    // Who came in stays until they leave; the UserSig does not work again.
    assert_eq!(
        server.users_in(&str_room("standup")).await.unwrap(),
        vec!["early"]
    );
    inside.leave().await.unwrap();
    let (again, _) = invitee(&server, &early);
    match again.join(str_room("standup"), Role::Anchor).await {
        Err(ClientError::Auth { code, .. }) => assert_eq!(code, ErrorCode::RoomNotGranted),
        r => panic!("{r:?}"),
    }
    // Revoking twice, or an unknown code, says there is no such invite.
    let unknown = InviteCode::from_bits(12345);
    let e = server
        .request(&Request::RevokeInvite { code: unknown })
        .await
        .unwrap_err();
    assert_eq!(e.code, "FailedOperation.InviteNotExist");
}

#[tokio::test]
async fn expired_unknown_and_malformed_invites_are_refused_clearly() {
    let server = TestServer::start().await;
    let code = create(&server, &room(43), 1).await;
    let got = redeem(&server.url(), &code, "quick", None).await.unwrap();
    assert!(got.0.expires_at <= now() + 1);
    let end = got.0.expires_at;
    eventually("the invite to expire", || async { now() > end }).await;
    refused(
        redeem(&server.url(), &code, "slow", None).await,
        "INVITE_EXPIRED",
    );
    let (c, _) = invitee(&server, &got);
    match c.join(room(43), Role::Anchor).await {
        Err(ClientError::Auth { code, .. }) => assert_eq!(code, ErrorCode::UsersigExpired),
        r => panic!("{r:?}"),
    }
    refused(
        preview(&server.url(), &InviteCode::from_bits(1), None).await,
        "INVITE_NOT_FOUND",
    );

    // Raw HTTP: a bad code, a bad body; each answers JSON with a code.
    let http = reqwest::Client::new();
    let base = format!("http://{}/invite", server.addr);
    for (method, path, body, status, want) in [
        ("GET", "not-a-code", "", 400, "INVALID_PARAMETER"),
        ("POST", &code.to_string(), "{", 400, "INVALID_PARAMETER"),
        (
            "POST",
            &code.to_string(),
            "{\"userId\":7}",
            400,
            "INVALID_PARAMETER",
        ),
    ] {
        let r = http
            .request(method.parse().unwrap(), format!("{base}/{path}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path} {body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], json!(want), "{v}");
    }
    // Admin checks: the length is bounded, the code well formed.
    let too_long = server
        .admin(
            "CreateInvite",
            json!({"RoomId": 43, "ExpireSeconds": 31 * 86400}),
        )
        .await;
    assert_eq!(
        too_long["Response"]["Error"]["Code"],
        json!("InvalidParameter.ExpireSeconds")
    );
    let bad = server.admin("RevokeInvite", json!({"Code": "??"})).await;
    assert_eq!(
        bad["Response"]["Error"]["Code"],
        json!("InvalidParameter.Code")
    );
}

#[tokio::test]
async fn guessing_codes_is_rate_limited_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let code = create(&server, &room(44), 600).await;
    let mut limited = false;
    for bits in 0..40u64 {
        match preview(&server.url(), &InviteCode::from_bits(bits * 7919), None).await {
            Err(ClientError::Invite { code, .. }) if code == "RATE_LIMITED" => {
                limited = true;
                break;
            }
            Err(ClientError::Invite { code, .. }) => assert_eq!(code, "INVITE_NOT_FOUND"),
            r => panic!("{r:?}"),
        }
    }
    assert!(limited, "40 guesses at once are refused before the end");
    // Others (signaling, the admin API) are unaffected.
    let (_c, _) = server.joined("member", &room(44)).await;
    assert!(server
        .request(&Request::ListInvites {
            room: Some(room(44))
        })
        .await
        .is_ok());
    // And the limit refills: the real code works a moment later.
    eventually("the lookup bucket to refill", || async {
        preview(&server.url(), &code, None).await.is_ok()
    })
    .await;
}
