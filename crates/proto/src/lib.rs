//! Kaigi's shared vocabulary: validated ids, roles, UserSig, the signaling
//! messages, error codes and kick reasons. Pure data and functions, no I/O,
//! so the server, the SDK, the CLI and third-party tools agree byte for byte.

#![forbid(unsafe_code)]

pub mod devapp;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod kick;
pub mod signal;
pub mod usersig;

pub use error::ErrorCode;
pub use ids::{IdError, Role, RoomId, SdkAppId, UserId};
pub use kick::KickReason;
pub use usersig::{UserSig, UserSigClaims, UserSigError};

/// The version of the signaling protocol described in `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The identifier whose UserSig authorizes admin API calls (as TRTC's server
/// REST APIs).
pub const ADMIN_IDENTIFIER: &str = "administrator";
