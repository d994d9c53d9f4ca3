//! What a client is made with: the server, the user, timeouts and the
//! reconnect policy.

use std::time::Duration;

use kaigi_proto::{SdkAppId, UserId};

/// How the client rejoins after its signaling connection drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Wait before the first attempt.
    pub initial_backoff: Duration,
    /// The longest wait between attempts (the wait doubles up to this).
    pub max_backoff: Duration,
    /// Give up (state `DISCONNECTED`, an `error` event) after this long.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// What a [`crate::Client`] needs to know.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The server: `ws://HOST:PORT` (`wss://`, `http://`, `https://` work too).
    pub server_url: String,
    /// The application.
    pub sdk_app_id: SdkAppId,
    /// This user.
    pub user_id: UserId,
    /// This user's UserSig.
    pub user_sig: String,
    /// A room permission ticket (TRTC's `privateMapKey`) from the app's
    /// backend, for servers that require one (`docs/protocol.md`, *Room
    /// grants*); `None` by default.
    pub private_map_key: Option<String>,
    /// How long `join` (connect + join) may take.
    pub join_timeout: Duration,
    /// How long `leave` waits for the server's confirmation.
    pub leave_timeout: Duration,
    /// How long a request (publish, mute, subscribe, …) waits for the
    /// server's reply before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// Rejoining after a dropped connection.
    pub reconnect: ReconnectPolicy,
    /// Receive every stream in the room without asking (the default, as
    /// TRTC). When false, call [`crate::Client::subscribe`] after `stream-added`.
    pub auto_subscribe: bool,
    /// A PEM file of extra certificate authorities to trust for `wss://`
    /// (a private CA), besides the public ones (Mozilla's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Decode received video (the default). Tools that only relay or
    /// measure (load generators) turn it off: packets are still counted.
    pub decode: bool,
}

impl ClientOptions {
    /// Options with default timeouts and reconnect policy.
    pub fn new(
        server_url: impl Into<String>,
        sdk_app_id: SdkAppId,
        user_id: UserId,
        user_sig: impl Into<String>,
    ) -> Self {
        ClientOptions {
            server_url: server_url.into(),
            sdk_app_id,
            user_id,
            user_sig: user_sig.into(),
            private_map_key: None,
            join_timeout: Duration::from_secs(10),
            leave_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            auto_subscribe: true,
            ca_file: None,
            decode: true,
        }
    }
}
