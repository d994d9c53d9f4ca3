//! `kaigi bot`: a headless participant printing one JSON line per event.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kaigi_proto::signal::RoomRef;
use kaigi_proto::{Role, UserId};
use kaigi_sdk::{
    AudioInput, Client, ClientEvent, ClientOptions, ConnectionState, LocalStream,
    LocalStreamConfig, VideoInput,
};
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
    /// Join through an invite: a `kaigi://invite/…` link, or a code (with
    /// --server); no key, UserSig or room is needed.
    #[arg(long, conflicts_with_all = ["key", "user_sig", "room", "str_room"])]
    invite: Option<String>,
    /// A room permission ticket (TRTC's privateMapKey, e.g. from `kaigi
    /// usersig --grant-room`), for a server that requires one.
    #[arg(long, conflicts_with = "invite")]
    private_map_key: Option<String>,
    /// The bot's user id.
    #[arg(long)]
    user: String,
    #[command(flatten)]
    room: RoomArgs,
    /// anchor or audience.
    #[arg(long, default_value = "anchor")]
    role: Role,
    /// Video to publish: `test-pattern` (640x480), `test-pattern:WxH`,
    /// `camera` (the first), `camera:ID` (see `kaigi devices`), `screen`
    /// (the X display of $DISPLAY; with `--fps 10`, say), `screen:DISPLAY`,
    /// or `none`.
    #[arg(long, default_value = "none", value_parser = parse_video)]
    video: VideoInput,
    /// Audio to publish: `tone` (440 Hz), `tone:HZ`, `mic` (the first),
    /// `mic:ID`, or `none`.
    #[arg(long, default_value = "none", value_parser = parse_audio)]
    audio: AudioInput,
    /// Frames per second of the video.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Play what the others say on this speaker (`default`: the first).
    #[arg(long)]
    speaker: Option<String>,
    /// The largest picture (WxH) to receive of each video: the server
    /// sends no larger simulcast layer.
    #[arg(long, value_parser = size)]
    max_size: Option<(usize, usize)>,
    /// Send the video as one layer instead of simulcast layers.
    #[arg(long)]
    no_simulcast: bool,
    /// The microphone's processing.
    #[command(flatten)]
    processing: crate::audio::ProcessingFlags,
    /// Say this in the room's chat once joined (repeatable); what the
    /// others say is printed as `{"event":"chat",…}`.
    #[arg(long)]
    say: Vec<String>,
    /// Share an X display (default: $DISPLAY) as the `sub` stream, beside
    /// what --video and --audio publish; sent at --share-fps.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "DISPLAY")]
    share_screen: Option<String>,
    /// Frames per second of the shared screen (1 to 30).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=30))]
    share_fps: u32,
}

fn size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("expected WxH, got {s:?}"))?;
    let (w, h): (usize, usize) = (
        w.parse().map_err(|_| "bad width")?,
        h.parse().map_err(|_| "bad height")?,
    );
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 || w > 4096 || h > 4096 {
        return Err(format!("{w}x{h}: width and height must be even, 2–4096"));
    }
    Ok((w, h))
}

fn parse_video(s: &str) -> Result<VideoInput, String> {
    match s {
        "none" => Ok(VideoInput::None),
        "test-pattern" => Ok(VideoInput::TestPattern {
            width: 640,
            height: 480,
        }),
        "camera" => Ok(VideoInput::Camera {
            id: None,
            width: 640,
            height: 480,
        }),
        "screen" => Ok(VideoInput::Screen {
            display: None,
            window: None,
        }),
        other => {
            if let Some(wh) = other.strip_prefix("test-pattern:") {
                let (width, height) = size(wh)?;
                Ok(VideoInput::TestPattern { width, height })
            } else if let Some(display) = other.strip_prefix("screen:").filter(|d| !d.is_empty()) {
                Ok(VideoInput::Screen {
                    display: Some(display.to_owned()),
                    window: None,
                })
            } else if let Some(id) = other.strip_prefix("camera:").filter(|i| !i.is_empty()) {
                Ok(VideoInput::Camera {
                    id: Some(id.to_owned()),
                    width: 640,
                    height: 480,
                })
            } else {
                Err(format!(
                    "expected test-pattern[:WxH], camera[:ID], screen[:DISPLAY] or none, got {other:?}"
                ))
            }
        }
    }
}

fn parse_audio(s: &str) -> Result<AudioInput, String> {
    match s {
        "none" => Ok(AudioInput::None),
        "tone" => Ok(AudioInput::Tone { hz: 440.0 }),
        "mic" => Ok(AudioInput::Microphone { id: None }),
        other => {
            if let Some(id) = other.strip_prefix("mic:").filter(|i| !i.is_empty()) {
                return Ok(AudioInput::Microphone {
                    id: Some(id.to_owned()),
                });
            }
            other
                .strip_prefix("tone:")
                .and_then(|hz| hz.parse::<f64>().ok())
                .filter(|hz| *hz > 0.0 && *hz < 24_000.0)
                .map(|hz| AudioInput::Tone { hz })
                .ok_or_else(|| format!("expected tone[:HZ], mic[:ID] or none, got {other:?}"))
        }
    }
}

/// What the bot reports about a received stream once a second.
fn stream_report(
    stream: &kaigi_sdk::RemoteStream,
    last: &mut std::collections::HashMap<String, u64>,
) -> serde_json::Value {
    let user = stream.user_id().to_string();
    let stream_type = stream.stream_type();
    let frames = stream.frames_decoded();
    let key = kaigi_proto::signal::stream_name(stream.user_id(), stream_type);
    let before = last.insert(key, frames).unwrap_or(0);
    let size = stream
        .video()
        .borrow()
        .as_deref()
        .map(|f| format!("{}x{}", f.width, f.height));
    let counter = stream
        .video()
        .borrow()
        .as_deref()
        .and_then(kaigi_media::Stamp::read)
        .map(|s| s.counter);
    let mut report = json!({
        "event": "stream-stats",
        "userId": user,
        "framesDecoded": frames,
        "size": size,
        "fps": frames.saturating_sub(before),
        "lastCounter": counter,
        "audioPackets": stream.audio_packets(),
        "audioLevel": stream.audio_level(),
    });
    if let (false, Some(obj)) = (stream_type.is_main(), report.as_object_mut()) {
        obj.insert("streamType".into(), json!(stream_type));
    }
    report
}

/// Set once stdout is gone (e.g. `kaigi bot … | head -3` ended).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints one JSON line; a closed stdout is noted, never a panic.
fn line(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether nobody reads the bot's output any more.
fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Trades `--invite` for a UserSig; prints `invite-failed` when refused.
async fn redeem(
    text: &str,
    server: Option<String>,
    user: &UserId,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Option<(ClientOptions, kaigi_proto::RoomId)>> {
    let invite: kaigi_proto::invite::Invite = text.parse().context("--invite")?;
    let Some(server) = invite.server.clone().or(server) else {
        anyhow::bail!("--invite: a bare code needs --server (or give the whole link)");
    };
    match kaigi_sdk::invite::redeem(&server, &invite.code, user.as_str(), ca).await {
        Ok(got) => Ok(Some((got.client_options(&server)?, got.room()?))),
        Err(e) => {
            line(json!({"event": "invite-failed", "name": e.name(), "message": e.to_string()}));
            Ok(None)
        }
    }
}

pub async fn run(args: BotArgs) -> anyhow::Result<ExitCode> {
    let user = UserId::new(args.user.clone()).context("--user")?;
    let (mut options, room) = match &args.invite {
        Some(text) => {
            let ca = args.server.ca.clone();
            match redeem(text, args.server.server.clone(), &user, ca.as_deref()).await? {
                Some(got) => got,
                None => return Ok(ExitCode::FAILURE),
            }
        }
        None => {
            let r = args.server.resolve()?;
            let room = args.room.room()?;
            let sig = match (args.user_sig.clone(), r.key) {
                (Some(sig), _) => sig,
                (None, Some(key)) => {
                    kaigi_proto::usersig::generate(r.app, &key, user.as_str(), 86400, unix_now())
                }
                (None, None) => anyhow::bail!("give --key or --user-sig"),
            };
            (ClientOptions::new(r.server, r.app, user, sig), room)
        }
    };
    options.ca_file = args.server.ca.clone();
    options.private_map_key = args.private_map_key.clone();
    let client = Client::new(options)?;
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
    if let Some(speaker) = &args.speaker {
        let id = Some(speaker.as_str()).filter(|s| *s != "default");
        match client.set_audio_output(id) {
            Ok(()) => line(json!({"event": "playing", "speaker": client.audio_output()})),
            Err(e) => line(json!({"event": "error", "name": e.name(), "message": e.to_string()})),
        }
    }
    let _local = if args.video != VideoInput::None || args.audio != AudioInput::None {
        let config = LocalStreamConfig {
            video: args.video.clone(),
            audio: args.audio.clone(),
            fps: args.fps,
            simulcast: !args.no_simulcast,
            audio_processing: args.processing.settings(),
            ..Default::default()
        };
        let stream = match LocalStream::new(client.user_id(), config) {
            Ok(s) => s,
            Err(e) => {
                line(json!({"event": "error", "name": e.name(), "message": e.to_string()}));
                let _ = client.leave().await;
                return Ok(ExitCode::FAILURE);
            }
        };
        match client.publish(&stream).await {
            Ok(()) => line(
                json!({"event": "published", "audio": stream.has_audio(), "video": stream.has_video(),
                       "camera": stream.camera_id(), "microphone": stream.microphone_id()}),
            ),
            Err(e) => {
                line(json!({"event": "publish-failed", "name": e.name(), "message": e.to_string()}))
            }
        }
        Some(stream)
    } else {
        None
    };
    let _screen = match &args.share_screen {
        Some(display) => share_screen(&client, display, args.share_fps).await,
        None => None,
    };
    for text in &args.say {
        match client.send_chat(text).await {
            Ok(()) => line(json!({"event": "chat-sent", "text": text})),
            Err(e) => {
                line(json!({"event": "chat-failed", "name": e.name(), "message": e.to_string()}))
            }
        }
    }
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut report = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last_frames = std::collections::HashMap::new();
    loop {
        if stdout_closed() {
            // Whoever read the events is gone: leave cleanly and quietly.
            let left = client.leave().await;
            return Ok(if left.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
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
                    ClientEvent::StreamAdded { user_id, .. } => {
                        if let Some((w, h)) = args.max_size {
                            if let Err(e) = client.set_remote_video_size(&user_id, w as u32, h as u32).await {
                                line(json!({"event": "error", "name": e.name(), "message": e.to_string()}));
                            }
                        }
                    }
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

/// Publishes X display `display` (empty: $DISPLAY) as the `sub` stream;
/// prints `screen-shared` or `share-failed`.
async fn share_screen(client: &Client, display: &str, fps: u32) -> Option<LocalStream> {
    let config = LocalStreamConfig {
        video: VideoInput::Screen {
            display: Some(display.to_owned()).filter(|d| !d.is_empty()),
            window: None,
        },
        audio: AudioInput::None,
        fps,
        simulcast: false,
        ..Default::default()
    };
    let failed = |e: kaigi_sdk::ClientError| {
        line(json!({"event": "share-failed", "name": e.name(), "message": e.to_string()}));
        None
    };
    let stream = match LocalStream::new(client.user_id(), config) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    match client.publish_screen(&stream).await {
        Ok(()) => {
            line(json!({"event": "screen-shared", "fps": fps}));
            Some(stream)
        }
        Err(e) => {
            stream.close();
            failed(e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            parse_video("test-pattern:320x240"),
            Ok(VideoInput::TestPattern {
                width: 320,
                height: 240
            })
        );
        assert!(matches!(
            parse_video("camera:/dev/video2"),
            Ok(VideoInput::Camera { id: Some(id), .. }) if id == "/dev/video2"
        ));
        assert!(parse_video("test-pattern:321x240").is_err());
        assert!(parse_video("camera:").is_err());
        assert!(parse_video("webcam").is_err());
        assert_eq!(
            parse_audio("tone:1000"),
            Ok(AudioInput::Tone { hz: 1000.0 })
        );
        assert_eq!(
            parse_audio("mic:hw:1"),
            Ok(AudioInput::Microphone {
                id: Some("hw:1".into())
            })
        );
        assert_eq!(parse_audio("mic"), Ok(AudioInput::Microphone { id: None }));
        assert!(parse_audio("tone:-5").is_err());
    }
}
