//! Typed events, named as TRTC v4's `ClientEvent`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use kaigi_proto::signal::{PeerLeaveReason, StreamType};
use kaigi_proto::{KickReason, Role, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The signaling connection's state, as TRTC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    /// Not in a room.
    Disconnected,
    /// Joining.
    Connecting,
    /// The connection dropped; rejoining by itself.
    Reconnecting,
    /// In the room.
    Connected,
}

/// A kind of device, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A speaker.
    Speaker,
}

impl From<kaigi_media::DeviceKind> for DeviceType {
    fn from(kind: kaigi_media::DeviceKind) -> Self {
        match kind {
            kaigi_media::DeviceKind::Camera => DeviceType::Camera,
            kaigi_media::DeviceKind::Microphone => DeviceType::Microphone,
            kaigi_media::DeviceKind::Speaker => DeviceType::Speaker,
        }
    }
}

/// A device, as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    /// What to open it by.
    pub device_id: String,
    /// A name for people.
    pub label: String,
}

/// Something that happened to a [`crate::Client`]. Serialized as
/// `{"event":"<name>", …}` with TRTC's event names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ClientEvent {
    /// A user entered the room.
    PeerJoin {
        /// Who.
        user_id: UserId,
        /// Their role.
        role: Role,
    },
    /// A user left the room.
    PeerLeave {
        /// Who.
        user_id: UserId,
        /// Why.
        reason: PeerLeaveReason,
    },
    /// A user in the room switched role (`anchor` / `audience`).
    PeerRole {
        /// Who.
        user_id: UserId,
        /// Their new role.
        role: Role,
    },
    /// A user in the room started publishing.
    StreamAdded {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (`"streamType":"sub"` for a shared
        /// screen; left out for `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether it has audio.
        audio: bool,
        /// Whether it has video.
        video: bool,
    },
    /// A user's stream ended.
    StreamRemoved {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (`"streamType":"sub"` for a shared
        /// screen; left out for `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// A stream's mute state changed (for a `main` stream the specific
    /// `mute-*`/`unmute-*` events come first), or the server paused or resumed its video to
    /// this client.
    StreamUpdated {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (`"streamType":"sub"` for a shared
        /// screen; left out for `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether its audio is muted.
        audio_muted: bool,
        /// Whether its video is muted.
        video_muted: bool,
        /// Whether the server paused its video to this client because the
        /// path here cannot carry even its smallest layer (audio goes on;
        /// the video resumes by itself).
        video_paused: bool,
    },
    /// A user muted their audio.
    MuteAudio {
        /// Who.
        user_id: UserId,
    },
    /// A user unmuted their audio.
    UnmuteAudio {
        /// Who.
        user_id: UserId,
    },
    /// A user muted their video.
    MuteVideo {
        /// Who.
        user_id: UserId,
    },
    /// A user unmuted their video.
    UnmuteVideo {
        /// Who.
        user_id: UserId,
    },
    /// Volumes, at the interval set with
    /// `Client::enable_audio_volume_evaluation`.
    AudioVolume {
        /// One entry per user with audio, this client's own included.
        result: Vec<AudioVolumeEntry>,
    },
    /// This client's microphone hears a voice while its audio is muted
    /// (checked with the volumes, at most every 3 s): for a "you are
    /// muted" hint.
    SpeakingWhileMuted {},
    /// Network quality, every 2 s while in a room (and `6` for both when
    /// the connection drops). Grades: 0 unknown, 1 excellent, 2 good,
    /// 3 poor, 4 bad, 5 very bad, 6 disconnected.
    NetworkQuality {
        /// Grade of what this client sends.
        uplink_network_quality: u8,
        /// Grade of what this client receives.
        downlink_network_quality: u8,
        /// Round-trip time to the server, ms.
        #[serde(rename = "uplinkRTT")]
        uplink_rtt: u32,
        /// Loss of what this client sends, percent (the server's reports).
        uplink_loss: u8,
        /// Round-trip time to the server, ms.
        #[serde(rename = "downlinkRTT")]
        downlink_rtt: u32,
        /// Loss of what this client receives, percent.
        downlink_loss: u8,
        /// What media travels over, once connected: `"udp"`, `"tcp"`
        /// (the network blocks UDP; media may lag more) or `"relay"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport: Option<String>,
    },
    /// A user's stream is being received; see `Client::remote_streams`.
    StreamSubscribed {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (`"streamType":"sub"` for a shared
        /// screen; left out for `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// The connection state changed.
    ConnectionStateChanged {
        /// The state before.
        prev_state: ConnectionState,
        /// The state now.
        state: ConnectionState,
    },
    /// This client was forced out of its room. Its state is now
    /// `DISCONNECTED` and it will not rejoin by itself.
    ClientBanned {
        /// Why.
        reason: KickReason,
        /// TRTC's message for the reason.
        message: String,
    },
    /// The server stopped (or resumed) forwarding this client's audio
    /// and/or video (the backend's `SetUserBlocked`): the others see it as
    /// muted until it is unblocked.
    Blocked {
        /// Its audio is blocked.
        audio: bool,
        /// Its video is blocked.
        video: bool,
    },
    /// A chat message from another user in the room (Kaigi's own; sent
    /// with [`crate::Client::send_chat`]).
    Chat {
        /// From whom.
        user_id: UserId,
        /// The text.
        text: String,
        /// When the server took it (ms since the Unix epoch).
        sent_at: u64,
    },
    /// A camera, microphone or speaker was plugged in (`add`), unplugged
    /// (`remove`), or taken into use in place of one that stopped working
    /// (`active`), as TRTC v5's `DEVICE_CHANGED`.
    DeviceChanged {
        /// `camera`, `microphone` or `speaker`.
        #[serde(rename = "type")]
        kind: DeviceType,
        /// What happened.
        action: crate::devices::DeviceAction,
        /// The device.
        device: DeviceRef,
    },
    /// Something failed outside any call (e.g. reconnecting gave up).
    Error {
        /// Numeric code (server codes; 0 for client-side failures).
        code: u32,
        /// Symbolic name, e.g. `RECONNECT_FAILED`.
        name: String,
        /// Human-readable detail.
        message: String,
    },
}

impl ClientEvent {
    /// One event of every kind, with made-up values: for generating the
    /// UI's contract (names and payload fields) and for tests.
    pub fn examples() -> Vec<ClientEvent> {
        let u = || UserId::new("u").expect("a valid user id");
        vec![
            ClientEvent::PeerJoin {
                user_id: u(),
                role: Role::Anchor,
            },
            ClientEvent::PeerLeave {
                user_id: u(),
                reason: PeerLeaveReason::Left,
            },
            ClientEvent::PeerRole {
                user_id: u(),
                role: Role::Audience,
            },
            // A `sub` stream, so the contract shows `streamType`.
            ClientEvent::StreamAdded {
                user_id: u(),
                stream_type: StreamType::Sub,
                audio: true,
                video: true,
            },
            ClientEvent::StreamRemoved {
                user_id: u(),
                stream_type: StreamType::Sub,
            },
            ClientEvent::StreamSubscribed {
                user_id: u(),
                stream_type: StreamType::Sub,
            },
            ClientEvent::StreamUpdated {
                user_id: u(),
                stream_type: StreamType::Sub,
                audio_muted: true,
                video_muted: false,
                video_paused: false,
            },
            ClientEvent::AudioVolume {
                result: vec![AudioVolumeEntry {
                    user_id: u(),
                    audio_volume: 50,
                }],
            },
            ClientEvent::SpeakingWhileMuted {},
            ClientEvent::NetworkQuality {
                uplink_network_quality: 1,
                downlink_network_quality: 1,
                uplink_rtt: 10,
                uplink_loss: 0,
                downlink_rtt: 10,
                downlink_loss: 0,
                transport: Some("udp".into()),
            },
            ClientEvent::MuteAudio { user_id: u() },
            ClientEvent::UnmuteAudio { user_id: u() },
            ClientEvent::MuteVideo { user_id: u() },
            ClientEvent::UnmuteVideo { user_id: u() },
            ClientEvent::ConnectionStateChanged {
                prev_state: ConnectionState::Connecting,
                state: ConnectionState::Connected,
            },
            ClientEvent::ClientBanned {
                reason: KickReason::RemovedByAdmin,
                message: KickReason::RemovedByAdmin.message().into(),
            },
            ClientEvent::Blocked {
                audio: true,
                video: false,
            },
            ClientEvent::Chat {
                user_id: u(),
                text: "hello".into(),
                sent_at: 1,
            },
            ClientEvent::DeviceChanged {
                kind: DeviceType::Microphone,
                action: crate::devices::DeviceAction::Active,
                device: DeviceRef {
                    device_id: "default".into(),
                    label: "default".into(),
                },
            },
            ClientEvent::Error {
                code: 0,
                name: "RECONNECT_FAILED".into(),
                message: "m".into(),
            },
        ]
    }

    /// The TRTC event name (`peer-join`, `client-banned`, …).
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::PeerJoin { .. } => "peer-join",
            ClientEvent::PeerLeave { .. } => "peer-leave",
            ClientEvent::PeerRole { .. } => "peer-role",
            ClientEvent::StreamAdded { .. } => "stream-added",
            ClientEvent::StreamRemoved { .. } => "stream-removed",
            ClientEvent::StreamSubscribed { .. } => "stream-subscribed",
            ClientEvent::StreamUpdated { .. } => "stream-updated",
            ClientEvent::AudioVolume { .. } => "audio-volume",
            ClientEvent::SpeakingWhileMuted {} => "speaking-while-muted",
            ClientEvent::NetworkQuality { .. } => "network-quality",
            ClientEvent::MuteAudio { .. } => "mute-audio",
            ClientEvent::UnmuteAudio { .. } => "unmute-audio",
            ClientEvent::MuteVideo { .. } => "mute-video",
            ClientEvent::UnmuteVideo { .. } => "unmute-video",
            ClientEvent::ConnectionStateChanged { .. } => "connection-state-changed",
            ClientEvent::ClientBanned { .. } => "client-banned",
            ClientEvent::Blocked { .. } => "blocked",
            ClientEvent::Chat { .. } => "chat",
            ClientEvent::DeviceChanged { .. } => "device-changed",
            ClientEvent::Error { .. } => "error",
        }
    }
}

impl ClientEvent {
    /// The `device-changed` event for a device and what happened to it.
    pub fn device_changed(
        action: crate::devices::DeviceAction,
        device: &kaigi_media::DeviceInfo,
    ) -> Self {
        ClientEvent::DeviceChanged {
            kind: device.kind.into(),
            action,
            device: DeviceRef {
                device_id: device.id.clone(),
                label: device.label.clone(),
            },
        }
    }

    /// The `error` event for a failure outside any call.
    pub(crate) fn error(e: &crate::error::ClientError) -> Self {
        ClientEvent::Error {
            code: e.code(),
            name: e.name(),
            message: e.to_string(),
        }
    }

    /// The `network-quality` event for a measurement.
    pub(crate) fn network_quality(q: kaigi_rtc::quality::Quality) -> Self {
        ClientEvent::NetworkQuality {
            uplink_network_quality: q.uplink,
            downlink_network_quality: q.downlink,
            uplink_rtt: q.rtt_ms,
            uplink_loss: q.uplink_loss,
            downlink_rtt: q.rtt_ms,
            downlink_loss: q.downlink_loss,
            transport: q.path.map(|p| p.as_str().to_owned()),
        }
    }
}

/// One user's volume in an `audio-volume` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioVolumeEntry {
    /// Who.
    pub user_id: UserId,
    /// 0 (silence) to 100.
    pub audio_volume: u8,
}

/// A stream of a client's events from the moment it was made; no event is
/// dropped however slowly it is read.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::UnboundedReceiver<ClientEvent>,
}

impl EventStream {
    /// The next event; `None` once the client is dropped.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// An event already waiting, if any.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for EventStream {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn examples_hold_one_event_of_each_kind_named_as_it_serializes() {
        let examples = ClientEvent::examples();
        let names: std::collections::HashSet<_> = examples.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), examples.len(), "one of each");
        for e in &examples {
            // `name()` matches every variant; a new one must be added here
            // too, or the UI's contract would not list it.
            assert_eq!(serde_json::to_value(e).unwrap()["event"], e.name());
        }
        assert_eq!(examples.len(), 20);
    }

    #[test]
    fn wire_shapes() {
        let e = ClientEvent::ConnectionStateChanged {
            prev_state: ConnectionState::Connecting,
            state: ConnectionState::Connected,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"event":"connection-state-changed","prevState":"CONNECTING","state":"CONNECTED"})
        );
        let b = ClientEvent::ClientBanned {
            reason: KickReason::RemovedByAdmin,
            message: KickReason::RemovedByAdmin.message().into(),
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["event"], b.name());
        assert_eq!(v["reason"], "removed-by-admin");
    }
}
