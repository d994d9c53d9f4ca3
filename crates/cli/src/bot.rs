//! `kaigi bot`: a headless participant printing one JSON line per event.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kaigi_proto::signal::RoomRef;
use kaigi_proto::{Role, UserId};
use kaigi_sdk::{Client, ClientEvent, ClientOptions, ConnectionState};
use serde_json::json;

use crate::{unix_now, RoomArgs, ServerArgs};

/// `kaigi bot` arguments.
#[derive(Debug, Args)]
pub struct BotArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A ready UserSig instead of --key.
    #[arg(long, conflicts_with = "key")]
    user_sig: Option<String>,
    /// The bot's user id.
    #[arg(long)]
    user: String,
    #[command(flatten)]
    room: RoomArgs,
    /// anchor or audience.
    #[arg(long, default_value = "anchor")]
    role: Role,
}

fn line(value: serde_json::Value) {
    println!("{value}");
}

pub async fn run(args: BotArgs) -> anyhow::Result<ExitCode> {
    let r = args.server.resolve()?;
    let user = UserId::new(args.user.clone()).context("--user")?;
    let room = args.room.room()?;
    let sig = match (args.user_sig, r.key) {
        (Some(sig), _) => sig,
        (None, Some(key)) => {
            kaigi_proto::usersig::generate(r.app, &key, user.as_str(), 86400, unix_now())
        }
        (None, None) => anyhow::bail!("give --key or --user-sig"),
    };
    let client = Client::new(ClientOptions::new(r.server, r.app, user, sig))?;
    let mut events = client.events();
    let joined = match client.join(room.clone(), args.role).await {
        Ok(j) => j,
        Err(e) => {
            line(json!({"event": "join-failed", "name": e.name(), "message": e.to_string()}));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut joined_line = json!({
        "event": "joined",
        "userId": client.user_id(),
        "role": joined.role,
        "sessionId": joined.session_id,
        "users": joined.users,
    });
    if let (Some(obj), Ok(room)) = (
        joined_line.as_object_mut(),
        serde_json::to_value(RoomRef::from(&joined.room)),
    ) {
        if let Some(room) = room.as_object() {
            obj.extend(room.clone());
        }
    }
    line(joined_line);
    // The join's own state changes were emitted before this point.
    while events.try_recv().is_some() {}
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => {
                let result = client.leave().await;
                line(json!({"event": "client-left", "ok": result.is_ok()}));
                return Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            event = events.recv() => {
                let Some(event) = event else { return Ok(ExitCode::FAILURE) };
                line(serde_json::to_value(&event)?);
                match event {
                    ClientEvent::ClientBanned { .. } => return Ok(ExitCode::SUCCESS),
                    ClientEvent::ConnectionStateChanged { state: ConnectionState::Disconnected, .. } => {
                        // Disconnected without a ban: reconnecting gave up.
                        return Ok(ExitCode::FAILURE);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
