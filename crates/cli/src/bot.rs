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
    /// Video to publish: `test-pattern` (640x480), `test-pattern:WxH`, or `none`.
    #[arg(long, default_value = "none", value_parser = parse_video)]
    video: VideoArg,
    /// Audio to publish: `tone` (440 Hz), `tone:HZ`, or `none`.
    #[arg(long, default_value = "none", value_parser = parse_audio)]
    audio: AudioArg,
    /// Frames per second of the test pattern.
    #[arg(long, default_value_t = 30)]
    fps: u32,
}

/// `--video`: a test pattern of this size, or none.
#[derive(Debug, Clone, Copy)]
struct VideoArg(Option<(usize, usize)>);

/// `--audio`: a tone at this frequency, or none.
#[derive(Debug, Clone, Copy)]
struct AudioArg(Option<f64>);

fn parse_video(s: &str) -> Result<VideoArg, String> {
    parse_video_size(s).map(VideoArg)
}

fn parse_audio(s: &str) -> Result<AudioArg, String> {
    parse_tone(s).map(AudioArg)
}

fn parse_video_size(s: &str) -> Result<Option<(usize, usize)>, String> {
    match s {
        "none" => Ok(None),
        "test-pattern" => Ok(Some((640, 480))),
        other => {
            let size = other
                .strip_prefix("test-pattern:")
                .ok_or_else(|| format!("expected test-pattern[:WxH] or none, got {other:?}"))?;
            let (w, h) = size
                .split_once('x')
                .ok_or_else(|| format!("expected WxH, got {size:?}"))?;
            let (w, h) = (
                w.parse().map_err(|_| "bad width")?,
                h.parse().map_err(|_| "bad height")?,
            );
            Ok(Some((w, h)))
        }
    }
}

fn parse_tone(s: &str) -> Result<Option<f64>, String> {
    match s {
        "none" => Ok(None),
        "tone" => Ok(Some(440.0)),
        other => other
            .strip_prefix("tone:")
            .and_then(|hz| hz.parse::<f64>().ok())
            .filter(|hz| *hz > 0.0 && *hz < 24_000.0)
            .map(Some)
            .ok_or_else(|| format!("expected tone[:HZ] or none, got {other:?}")),
    }
}

/// What the bot reports about a received stream once a second.
fn stream_report(
    stream: &kaigi_sdk::RemoteStream,
    last: &mut std::collections::HashMap<String, u64>,
) -> serde_json::Value {
    let user = stream.user_id().to_string();
    let frames = stream.frames_decoded();
    let before = last.insert(user.clone(), frames).unwrap_or(0);
    let counter = stream
        .video()
        .borrow()
        .as_deref()
        .and_then(kaigi_media::Stamp::read)
        .map(|s| s.counter);
    json!({
        "event": "stream-stats",
        "userId": user,
        "framesDecoded": frames,
        "fps": frames.saturating_sub(before),
        "lastCounter": counter,
        "audioPackets": stream.audio_packets(),
        "audioLevel": stream.audio_level(),
    })
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
    let _local = if args.video.0.is_some() || args.audio.0.is_some() {
        let source = kaigi_sdk::SyntheticSource {
            video: args.video.0,
            fps: args.fps,
            tone_hz: args.audio.0,
            ..Default::default()
        };
        let stream = kaigi_sdk::LocalStream::synthetic(client.user_id(), source)?;
        match client.publish(&stream).await {
            Ok(()) => line(
                json!({"event": "published", "audio": stream.has_audio(), "video": stream.has_video()}),
            ),
            Err(e) => {
                line(json!({"event": "publish-failed", "name": e.name(), "message": e.to_string()}))
            }
        }
        Some(stream)
    } else {
        None
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut report = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last_frames = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = report.tick() => {
                for stream in client.remote_streams() {
                    line(stream_report(&stream, &mut last_frames));
                }
            }
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
