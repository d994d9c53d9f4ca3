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
        AdminCommand::SetUserBlocked {
            target,
            user,
            audio,
            video,
        } => {
            let user = UserId::new(user.clone()).with_context(|| format!("--user {user:?}"))?;
            let room = target.room.room()?;
            let request = Request::SetUserBlocked {
                room,
                user,
                audio,
                video,
            };
            (target.server, request)
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
        AdminCommand::CreateInvite { target, expire } => {
            let room = target.room.room()?;
            let request = Request::CreateInvite {
                room,
                expire_secs: expire,
            };
            (target.server, request)
        }
        AdminCommand::RevokeInvite { server, code } => {
            let code = code.parse().context("--code")?;
            (server, Request::RevokeInvite { code })
        }
        AdminCommand::ListInvites { server } => (server, Request::ListInvites { room: None }),
    };
    call(&server, &request).await
}

async fn call(args: &ServerArgs, request: &Request) -> anyhow::Result<ExitCode> {
    let r = args.resolve()?;
    let body = request.body(r.app);
    let mut http = reqwest::Client::builder();
    if let Some(path) = &r.ca {
        let pem = std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca {}: not PEM certificates", path.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build().context("the HTTP client")?;
    let (url, post) = match (&args.secret_id, &args.secret_key) {
        (Some(id), Some(secret)) => {
            // Cloud API 3.0: the action in a header, the request signed.
            let (url, host) = endpoint::cloud_api_url(&r.server)?;
            let bytes = serde_json::to_vec(&body)?;
            let mut post = http.post(&url);
            for (name, value) in kaigi_proto::tc3::sign_post(
                id,
                secret,
                &host,
                request.action().name(),
                None,
                unix_now(),
                &bytes,
            ) {
                if name != "Host" {
                    post = post.header(name, value);
                }
            }
            (url, post.body(bytes))
        }
        _ => {
            let key = r.key.context("--key is required")?;
            let sig = kaigi_proto::usersig::generate(
                r.app,
                &key,
                ADMIN_IDENTIFIER,
                ADMIN_SIG_SECS,
                unix_now(),
            );
            let url = endpoint::api_url(&r.server, request.action().name())?;
            let post = http
                .post(&url)
                .query(&[
                    ("sdkappid", r.app.to_string()),
                    ("identifier", ADMIN_IDENTIFIER.to_owned()),
                    ("usersig", sig),
                    ("random", rand_u32().to_string()),
                    ("contenttype", "json".to_owned()),
                ])
                .json(&body);
            (url, post)
        }
    };
    let response: Value = post
        .send()
        .await
        .map_err(|e| call_error(e, &url))?
        .error_for_status()
        .map_err(|e| call_error(e, &url))?
        .json()
        .await
        .map_err(|e| call_error(e, &url))?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    let failed = read_response(&response).is_err();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A failed call, without the query string (it carries the UserSig), and
/// with what to do when the server's certificate is not trusted.
fn call_error(e: reqwest::Error, url: &str) -> anyhow::Error {
    let e = e.without_url();
    let mut text = format!("{url}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if text.contains("certificate") {
        text.push_str(" (a server with a private CA needs --ca FILE)");
    }
    anyhow::Error::msg(text)
}

fn rand_u32() -> u32 {
    // TRTC's REST calls carry a random number; uniqueness is all it needs.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}
