//! Kaigi's shared vocabulary: validated ids, roles, UserSig, the signaling
//! messages, error codes and kick reasons. Pure data and functions, no I/O,
//! so the server, the SDK, the CLI and third-party tools agree byte for byte.

#![forbid(unsafe_code)]

pub mod admin;
pub mod devapp;
pub mod endpoint;
pub mod error;
pub mod grant;
pub mod ids;
pub mod invite;
pub mod kick;
pub mod signal;
pub mod tc3;
pub mod usersig;

pub use error::ErrorCode;
pub use ids::{IdError, Role, RoomId, SdkAppId, UserId};
pub use kick::KickReason;
pub use usersig::{UserSig, UserSigClaims, UserSigError};

/// The version of the signaling protocol described in `docs/protocol.md`:
/// the newest, which this crate's clients speak.
pub const PROTOCOL_VERSION: u32 = 7;
/// The oldest protocol version the server still serves.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The identifier whose UserSig authorizes admin API calls (as TRTC's server
/// REST APIs).
pub const ADMIN_IDENTIFIER: &str = "administrator";

/// Unix seconds now: the one wall clock of the project. Everything that
/// decides by time (UserSig expiry, the registry) takes it as an input.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now (0 before 1970).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The default log filter for Kaigi's binaries: `level` for Kaigi itself,
/// errors only from the WebRTC stack (whose warnings are routine, e.g. about
/// packets sent before DTLS completes). `KAIGI_LOG` replaces it.
pub fn log_filter(level: &str) -> String {
    format!("{level},rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error,rtc_sctp=error,rtc_interceptor=error,webrtc=error")
}
