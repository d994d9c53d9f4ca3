//! What the UI is told, as Tauri events: the SDK's events as they are
//! (`peer-join`, `client-banned`, `network-quality`, …) plus the app's own
//! (`client-left`, `local-stream-closed`, `local-audio-level`). Each serializes to one JSON
//! object whose `event` field is its name.

use std::sync::Arc;

use kaigi_sdk::ClientEvent;
use serde::Serialize;

/// An event for the UI.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UiEvent {
    /// An SDK event, unchanged.
    Client(ClientEvent),
    /// One of the app's own.
    App(AppEvent),
}

/// The app's own events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum AppEvent {
    /// A leave completed: the client is out of the room and its local
    /// streams are closed.
    ClientLeft {},
    /// The local stream was closed (leave, forced exit, stop_preview):
    /// the camera and microphone are released.
    LocalStreamClosed {},
    /// The own microphone's level after processing, 0–100 (0 while
    /// muted), ten times a second while a microphone is open: the level
    /// meter's.
    LocalAudioLevel {
        /// 0–100 (as `audio-volume`'s `audioVolume`).
        level: u8,
    },
    /// An invite link was opened (a `kaigi://` link given to the app, e.g.
    /// from a browser): the join screen takes it.
    InviteOpened {
        /// The link.
        link: String,
    },
    /// Sharing started (`start_share` succeeded): the UI shows the
    /// "You are sharing" bar.
    ShareStarted {
        /// What is shared: `screen` or `window:ID`.
        source: String,
    },
    /// Sharing ended: stopped, the call ended, or the shared window closed.
    ShareStopped {},
}

impl UiEvent {
    /// One event of every kind the UI is sent (for its generated contract).
    pub fn examples() -> Vec<UiEvent> {
        ClientEvent::examples()
            .into_iter()
            .map(UiEvent::Client)
            .chain([
                UiEvent::App(AppEvent::ClientLeft {}),
                UiEvent::App(AppEvent::LocalStreamClosed {}),
                UiEvent::App(AppEvent::LocalAudioLevel { level: 42 }),
                UiEvent::App(AppEvent::InviteOpened {
                    link: "kaigi://invite/k3m-9xq2-7hd?server=ws://192.0.2.10:7880".into(),
                }),
                UiEvent::App(AppEvent::ShareStarted {
                    source: "window:4194305".into(),
                }),
                UiEvent::App(AppEvent::ShareStopped {}),
            ])
            .collect()
    }

    /// The event's name, which the UI listens for.
    pub fn name(&self) -> &'static str {
        match self {
            UiEvent::Client(e) => e.name(),
            UiEvent::App(AppEvent::ClientLeft {}) => "client-left",
            UiEvent::App(AppEvent::LocalStreamClosed {}) => "local-stream-closed",
            UiEvent::App(AppEvent::LocalAudioLevel { .. }) => "local-audio-level",
            UiEvent::App(AppEvent::InviteOpened { .. }) => "invite-opened",
            UiEvent::App(AppEvent::ShareStarted { .. }) => "share-started",
            UiEvent::App(AppEvent::ShareStopped {}) => "share-stopped",
        }
    }
}

/// Delivers events to the UI (the Tauri shell emits them to the window;
/// tests collect them).
pub type Emitter = Arc<dyn Fn(UiEvent) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use kaigi_sdk::KickReason;
    use serde_json::json;

    #[test]
    fn payloads_the_ui_reads() {
        let banned = UiEvent::Client(ClientEvent::ClientBanned {
            reason: KickReason::RemovedByAdmin,
            message: KickReason::RemovedByAdmin.message().into(),
        });
        assert_eq!(banned.name(), "client-banned");
        assert_eq!(
            serde_json::to_value(&banned).unwrap(),
            json!({"event": "client-banned", "reason": "removed-by-admin",
                   "message": KickReason::RemovedByAdmin.message()})
        );
        let left = UiEvent::App(AppEvent::ClientLeft {});
        assert_eq!(left.name(), "client-left");
        assert_eq!(
            serde_json::to_value(&left).unwrap(),
            json!({"event": "client-left"})
        );
        let level = UiEvent::App(AppEvent::LocalAudioLevel { level: 7 });
        assert_eq!(level.name(), "local-audio-level");
        assert_eq!(
            serde_json::to_value(&level).unwrap(),
            json!({"event": "local-audio-level", "level": 7})
        );
        let quality = UiEvent::Client(ClientEvent::NetworkQuality {
            uplink_network_quality: 1,
            downlink_network_quality: 2,
            uplink_rtt: 3,
            uplink_loss: 0,
            downlink_rtt: 3,
            downlink_loss: 1,
            transport: Some("tcp".into()),
        });
        assert_eq!(
            serde_json::to_value(&quality).unwrap(),
            json!({"event": "network-quality", "uplinkNetworkQuality": 1,
                   "downlinkNetworkQuality": 2, "uplinkRTT": 3, "uplinkLoss": 0,
                   "downlinkRTT": 3, "downlinkLoss": 1, "transport": "tcp"})
        );
    }
}
