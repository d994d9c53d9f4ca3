//! `kaigi admin …`: TRTC-shaped admin calls.

use std::process::ExitCode;

use anyhow::Context;
use kaigi_proto::admin::{read_response, Request, LIST_LIMIT};
use kaigi_proto::{endpoint, UserId, ADMIN_IDENTIFIER};
use serde_json::Value;

use crate::{unix_now, AdminCommand, ServerArgs};

/// How long an admin call's UserSig is valid.
const ADMIN_SIG_SECS: u64 = 300;

pub async fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let (server, request) = match cmd {
        AdminCommand::RemoveUser { target, users } => {
            let users = users
                .iter()
                .map(|u| UserId::new(u.clone()).with_context(|| format!("--user {u:?}")))
                .collect::<anyhow::Result<_>>()?;
            let room = target.room.room()?;
            (target.server, Request::RemoveUser { room, users })
        }
        AdminCommand::DismissRoom { target } => {
            let room = target.room.room()?;
            (target.server, Request::DismissRoom { room })
        }
        AdminCommand::DescribeRoom { target } => {
            let room = target.room.room()?;
            (target.server, Request::DescribeRoom { room })
        }
        AdminCommand::ListRooms { server } => (
            server,
            Request::ListRooms {
                offset: 0,
                limit: LIST_LIMIT,
            },
        ),
    };
    call(&server, &request).await
}

async fn call(args: &ServerArgs, request: &Request) -> anyhow::Result<ExitCode> {
    let r = args.resolve()?;
    let key = r.key.context("--key is required")?;
    let sig =
        kaigi_proto::usersig::generate(r.app, &key, ADMIN_IDENTIFIER, ADMIN_SIG_SECS, unix_now());
    let body = request.body(r.app);
    let url = endpoint::api_url(&r.server, request.action().name())?;
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
    let failed = read_response(&response).is_err();
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
