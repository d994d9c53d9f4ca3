//! `kaigi`: make UserSigs, call the admin API, and run headless bots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kaigi_proto::devapp::{dev_app_path, DevApp, DEV_APP_ENV};
use kaigi_proto::{RoomId, SdkAppId, UserId};
use tracing_subscriber::EnvFilter;

mod admin;
mod audio;
mod bot;

/// Kaigi's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "kaigi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a UserSig (TRTC tls-sig-api-v2) for a user.
    Usersig {
        /// The SdkAppId [default: the dev server's].
        #[arg(long)]
        app: Option<SdkAppId>,
        /// The app's secret key [default: the dev server's].
        #[arg(long)]
        key: Option<String>,
        /// The user id (or `administrator` for admin calls).
        #[arg(long)]
        user: String,
        /// Validity in seconds [default: 180 days for a user; 5 minutes
        /// for `administrator`, whose UserSig authorizes admin calls].
        #[arg(long)]
        expire: Option<u64>,
        /// Make a room permission ticket (TRTC's privateMapKey) for this
        /// room instead: give it to `kaigi bot --private-map-key` (or a
        /// client's join) on a server that requires grants.
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Call the server's admin API and print its JSON response.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Join a room and print one JSON line per event until forced out or Ctrl-C.
    Bot(Box<bot::BotArgs>),
    /// List this machine's cameras, microphones and speakers as JSON.
    Devices,
    /// Run the microphone's audio processing (echo cancellation, noise
    /// suppression, gain control) on recordings: what was played (FAR) and
    /// what the microphone heard (MIC), WAV at any rate, mono or stereo;
    /// writes OUT at the microphone's rate and prints levels as JSON.
    AudioProcess(audio::AudioProcessArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Remove users from a room (RemoveUser / RemoveUserByStrRoomId).
    RemoveUser {
        #[command(flatten)]
        target: AdminTarget,
        /// A user to remove; repeat for several (at most 10).
        #[arg(long = "user", required = true)]
        users: Vec<String>,
    },
    /// Close a room, forcing everyone out (DismissRoom / DismissRoomByStrRoomId).
    DismissRoom {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Stop (or resume) forwarding a user's audio and/or video to the
    /// others (SetUserBlocked / SetUserBlockedByStrRoomId); with neither
    /// --audio nor --video, unblock.
    SetUserBlocked {
        #[command(flatten)]
        target: AdminTarget,
        /// The user.
        #[arg(long)]
        user: String,
        /// Block the user's audio.
        #[arg(long)]
        audio: bool,
        /// Block the user's video.
        #[arg(long)]
        video: bool,
    },
    /// List the users in a room (DescribeRoom).
    DescribeRoom {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List the app's rooms (ListRooms).
    ListRooms {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make an invite to a room (CreateInvite): prints its code; the link
    /// is `kaigi://invite/CODE?server=URL`.
    CreateInvite {
        #[command(flatten)]
        target: AdminTarget,
        /// How long it admits people, in seconds (at most 30 days).
        #[arg(long, default_value_t = kaigi_proto::invite::DEFAULT_INVITE_SECS)]
        expire: u64,
    },
    /// Revoke an invite (RevokeInvite): nobody enters with it any more.
    RevokeInvite {
        #[command(flatten)]
        server: ServerArgs,
        /// The invite's code.
        #[arg(long)]
        code: String,
    },
    /// List the app's invites (ListInvites).
    ListInvites {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Which server and app, with defaults from the dev server's saved app.
#[derive(Debug, Clone, Args)]
struct ServerArgs {
    /// The server, as ws://HOST:PORT (http://, wss://, https:// work too)
    /// [default: the dev server's].
    #[arg(long)]
    server: Option<String>,
    /// The SdkAppId [default: the dev server's].
    #[arg(long)]
    app: Option<SdkAppId>,
    /// The app's secret key [default: the dev server's].
    #[arg(long)]
    key: Option<String>,
    /// A PEM file of certificate authorities to trust for wss:// and
    /// https:// besides the public ones (a server with a private CA).
    #[arg(long, env = "KAIGI_CA")]
    ca: Option<PathBuf>,
    /// Admin calls: sign them as Tencent Cloud API 3.0 (TC3-HMAC-SHA256)
    /// with this SecretId, one the server has (--cloud-api-key), instead of
    /// an administrator UserSig.
    #[arg(long, env = "KAIGI_SECRET_ID", requires = "secret_key")]
    secret_id: Option<String>,
    /// The SecretKey of --secret-id.
    #[arg(long, env = "KAIGI_SECRET_KEY", requires = "secret_id")]
    secret_key: Option<String>,
}

/// `--grant-room N` or `--grant-str-room S` (optional).
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
struct GrantArgs {
    /// The numeric room the ticket grants.
    #[arg(long)]
    grant_room: Option<u64>,
    /// The string room the ticket grants.
    #[arg(long)]
    grant_str_room: Option<String>,
}

impl GrantArgs {
    fn room(&self) -> anyhow::Result<Option<kaigi_proto::RoomId>> {
        Ok(match (self.grant_room, &self.grant_str_room) {
            (Some(n), _) => Some(kaigi_proto::RoomId::num(n).context("--grant-room")?),
            (None, Some(s)) => {
                Some(kaigi_proto::RoomId::str(s.clone()).context("--grant-str-room")?)
            }
            (None, None) => None,
        })
    }
}

/// A server plus a room.
#[derive(Debug, Clone, Args)]
struct AdminTarget {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    room: RoomArgs,
}

/// `--room N` or `--str-room S` (one is required where a room is; checked
/// when read, so that `bot --invite` needs neither).
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct RoomArgs {
    /// A numeric room id (1–4294967294).
    #[arg(long)]
    room: Option<u64>,
    /// A string room id.
    #[arg(long)]
    str_room: Option<String>,
}

impl RoomArgs {
    /// The validated room.
    pub fn room(&self) -> anyhow::Result<RoomId> {
        Ok(match (&self.room, &self.str_room) {
            (Some(n), _) => RoomId::num(*n)?,
            (None, Some(s)) => RoomId::str(s.clone())?,
            (None, None) => bail!("give --room N or --str-room S"),
        })
    }
}

/// Server, app and key after applying the dev-app defaults.
pub struct Resolved {
    /// The server address.
    pub server: String,
    /// The app.
    pub app: SdkAppId,
    /// The secret key, if known.
    pub key: Option<String>,
    /// Extra certificate authorities (PEM) to trust.
    pub ca: Option<PathBuf>,
}

fn load_dev_app() -> Option<DevApp> {
    let path = dev_app_path(std::env::var_os(DEV_APP_ENV), dirs::config_dir())?;
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

impl ServerArgs {
    /// Fills what was not given from the dev server's saved app.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let dev = if self.server.is_none() || self.app.is_none() || self.key.is_none() {
            load_dev_app()
        } else {
            None
        };
        let server = match self
            .server
            .clone()
            .or_else(|| dev.as_ref().and_then(|d| d.server.clone()))
        {
            Some(s) => s,
            None => bail!("--server is required (no dev server has saved its address)"),
        };
        let app = match (self.app, dev.as_ref()) {
            (Some(a), _) => a,
            (None, Some(d)) => d.sdk_app_id,
            (None, None) => bail!("--app is required (no dev server has saved its app)"),
        };
        // The dev key only belongs with the dev app.
        let key = self
            .key
            .clone()
            .or_else(|| dev.filter(|d| d.sdk_app_id == app).map(|d| d.secret_key));
        Ok(Resolved {
            server,
            app,
            key,
            ca: self.ca.clone(),
        })
    }
}

use kaigi_proto::unix_now;

/// A user's UserSig lasts as long as TRTC's examples make them; an
/// administrator's authorizes admin calls, so it is short-lived.
fn default_expire(user: &str) -> u64 {
    if user == kaigi_proto::ADMIN_IDENTIFIER {
        300
    } else {
        180 * 86400
    }
}

fn usersig(
    app: Option<SdkAppId>,
    key: Option<String>,
    user: &str,
    expire: u64,
    grant: Option<kaigi_proto::RoomId>,
) -> anyhow::Result<String> {
    if user != kaigi_proto::ADMIN_IDENTIFIER {
        UserId::new(user).context("--user")?;
    }
    let dev = if app.is_none() || key.is_none() {
        load_dev_app()
    } else {
        None
    };
    let app = app
        .or(dev.as_ref().map(|d| d.sdk_app_id))
        .context("--app is required (no dev server has saved its app)")?;
    let key = key
        .or(dev.filter(|d| d.sdk_app_id == app).map(|d| d.secret_key))
        .context("--key is required")?;
    if let Some(room) = grant {
        return Ok(kaigi_proto::grant::generate_private_map_key(
            app,
            &key,
            user,
            &room,
            kaigi_proto::grant::Privileges::ALL,
            expire,
            unix_now(),
        ));
    }
    Ok(kaigi_proto::usersig::generate(
        app,
        &key,
        user,
        expire,
        unix_now(),
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_env("KAIGI_LOG")
                .unwrap_or_else(|_| EnvFilter::new(kaigi_proto::log_filter("warn"))),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Usersig {
            app,
            key,
            user,
            expire,
            grant,
        } => grant
            .room()
            .and_then(|room| {
                usersig(
                    app,
                    key,
                    &user,
                    expire.unwrap_or_else(|| default_expire(&user)),
                    room,
                )
            })
            .map(|s| {
                println!("{s}");
                ExitCode::SUCCESS
            }),
        Command::Admin(cmd) => admin::run(cmd).await,
        Command::Bot(args) => bot::run(*args).await,
        Command::AudioProcess(args) => audio::run(&args),
        Command::Devices => {
            let list = |d: Vec<kaigi_sdk::DeviceInfo>| {
                d.into_iter()
                    .map(|d| serde_json::json!({"id": d.id, "label": d.label}))
                    .collect::<Vec<_>>()
            };
            println!(
                "{}",
                serde_json::json!({
                    "cameras": list(kaigi_sdk::devices::cameras()),
                    "microphones": list(kaigi_sdk::devices::microphones()),
                    "speakers": list(kaigi_sdk::devices::speakers()),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaigi: {e:#}");
            ExitCode::from(2)
        }
    }
}
