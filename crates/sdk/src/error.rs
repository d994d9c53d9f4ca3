//! The SDK's error type.

use kaigi_proto::{ErrorCode, KickReason};

/// Why a [`crate::Client`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The options are invalid (e.g. a bad server URL).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The server refused the credentials (UserSig or SdkAppId); retrying
    /// with the same ones cannot succeed.
    #[error("authentication failed ({code}): {message}")]
    Auth {
        /// Which check failed.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
    /// The room id, user id or role was refused.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// `join` while already in (or entering) a room.
    #[error("already in a room; leave first")]
    AlreadyInRoom,
    /// The server did not answer in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// No connection to the server could be made.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server's TLS certificate is not trusted (or TLS failed):
    /// retrying cannot help; trust its CA (`ca_file`) or fix the server.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The connection dropped before the request was answered.
    #[error("the connection to the server was lost")]
    ConnectionLost,
    /// A resumed session had been forced out.
    #[error("forced out of the room ({0})")]
    Banned(KickReason),
    /// The call needs the client to be in a room.
    #[error("not in a room")]
    NotInRoom,
    /// Media could not be set up (codec, device, peer connection).
    #[error("media: {0}")]
    Media(String),
    /// A camera, microphone or speaker could not be used.
    #[error(transparent)]
    Device(#[from] kaigi_media::DeviceError),
    /// An invite could not be used (`INVITE_NOT_FOUND`, `INVITE_EXPIRED`,
    /// `INVITE_REVOKED`, `INVITE_USED_UP`, `NAME_TAKEN`, `RATE_LIMITED`,
    /// `INVALID_PARAMETER`, `SERVICE_UNAVAILABLE`).
    #[error("invite refused ({code}): {message}")]
    Invite {
        /// The server's code.
        code: String,
        /// The server's detail.
        message: String,
    },
    /// Any other error the server reported.
    #[error("server error ({code}): {message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
}

impl ClientError {
    /// The numeric code an `error` event carries: the server's code where
    /// there is one (`MEDIA_FAILED` for media), 0 for other client-side
    /// failures.
    pub fn code(&self) -> u32 {
        match self {
            ClientError::Auth { code, .. } | ClientError::Server { code, .. } => code.code(),
            ClientError::Media(_) => ErrorCode::MediaFailed.code(),
            _ => 0,
        }
    }

    /// Whether a retry (as reconnect does) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout(_)
                | ClientError::Unreachable(_)
                | ClientError::ConnectionLost
                | ClientError::Server {
                    code: ErrorCode::ServerShuttingDown
                        | ErrorCode::Internal
                        | ErrorCode::RateLimited
                        | ErrorCode::RoomMoved
                        | ErrorCode::ServiceUnavailable,
                    ..
                }
        )
    }

    /// A stable name, as used in `error` events.
    pub fn name(&self) -> String {
        match self {
            ClientError::InvalidOptions(_) => "INVALID_OPTIONS".into(),
            ClientError::Auth { code, .. } | ClientError::Server { code, .. } => code.to_string(),
            ClientError::InvalidParameter(_) => "INVALID_PARAMETER".into(),
            ClientError::AlreadyInRoom => "ALREADY_IN_ROOM".into(),
            ClientError::Timeout(_) => "TIMEOUT".into(),
            ClientError::Unreachable(_) => "SERVER_UNREACHABLE".into(),
            ClientError::Tls(_) => "TLS_FAILED".into(),
            ClientError::ConnectionLost => "CONNECTION_LOST".into(),
            ClientError::Banned(_) => "SESSION_BANNED".into(),
            ClientError::NotInRoom => "NOT_IN_ROOM".into(),
            ClientError::Media(_) => "MEDIA_FAILED".into(),
            ClientError::Invite { code, .. } => code.clone(),
            ClientError::Device(kaigi_media::DeviceError::NotFound { .. }) => {
                "DEVICE_NOT_FOUND".into()
            }
            ClientError::Device(kaigi_media::DeviceError::NoDevice(_)) => "NO_DEVICE".into(),
            ClientError::Device(kaigi_media::DeviceError::Open { .. }) => {
                "DEVICE_UNAVAILABLE".into()
            }
            ClientError::Device(kaigi_media::DeviceError::Lost { .. }) => "DEVICE_LOST".into(),
        }
    }
}
