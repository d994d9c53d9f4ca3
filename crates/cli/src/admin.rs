//! `kaigi admin …`: TRTC-shaped admin calls.

use std::process::ExitCode;

use anyhow::Context;
use kaigi_proto::{endpoint, RoomId, UserId, ADMIN_IDENTIFIER};
use serde_json::{json, Value};

use crate::{unix_now, AdminCommand, ServerArgs};

/// How long an admin call's UserSig is valid.
const ADMIN_SIG_SECS: u64 = 300;

pub async fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let (server, action, body) = match cmd {
        AdminCommand::RemoveUser { target, users } => {
            let room = target.room.room()?;
            for u in &users {
                UserId::new(u.clone()).with_context(|| format!("--user {u:?}"))?;
            }
            let action = if room.is_str() {
                "RemoveUserByStrRoomId"
            } else {
                "RemoveUser"
            };
            (
                target.server,
                action,
                json!({"RoomId": room_json(&room), "UserIds": users}),
            )
        }
        AdminCommand::DismissRoom { target } => {
            let room = target.room.room()?;
            let action = if room.is_str() {
                "DismissRoomByStrRoomId"
            } else {
                "DismissRoom"
            };
            (target.server, action, json!({"RoomId": room_json(&room)}))
        }
        AdminCommand::DescribeRoom { target } => {
            let room = target.room.room()?;
            (
                target.server,
                "DescribeRoom",
                json!({"RoomId": room_json(&room)}),
            )
        }
        AdminCommand::ListRooms { server } => (server, "ListRooms", json!({})),
    };
    call(&server, action, body).await
}

fn room_json(room: &RoomId) -> Value {
    match room {
        RoomId::Num(n) => json!(n),
        RoomId::Str(s) => json!(s),
    }
}

async fn call(args: &ServerArgs, action: &str, mut body: Value) -> anyhow::Result<ExitCode> {
    let r = args.resolve()?;
    let key = r.key.context("--key is required")?;
    let sig =
        kaigi_proto::usersig::generate(r.app, &key, ADMIN_IDENTIFIER, ADMIN_SIG_SECS, unix_now());
    body["SdkAppId"] = json!(r.app.0);
    let url = endpoint::api_url(&r.server, action)?;
    let response: Value = reqwest::Client::new()
        .post(&url)
        .query(&[
            ("sdkappid", r.app.to_string()),
            ("identifier", ADMIN_IDENTIFIER.to_owned()),
            ("usersig", sig),
            ("random", rand_u32().to_string()),
            ("contenttype", "json".to_owned()),
        ])
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?
        .error_for_status()
        .with_context(|| format!("calling {url}"))?
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    let failed = response.pointer("/Response/Error").is_some();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn rand_u32() -> u32 {
    // TRTC's REST calls carry a random number; uniqueness is all it needs.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}
