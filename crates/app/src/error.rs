//! The one error type that crosses IPC: `{code, message}`, with `code`
//! one of [`AppErrorCode`]'s names.

use kaigi_proto::ErrorCode;
use kaigi_sdk::{ClientError, DeviceError};
use serde::Serialize;

/// Declares [`AppErrorCode`] with the app's and the SDK's own codes, and
/// [`AppErrorCode::OWN`] listing them: one list, so none can be left out.
macro_rules! app_error_codes {
    ($($(#[doc = $doc:literal])* $code:ident,)*) => {
        /// Every code the UI can be given, by the app, the SDK or the
        /// server. The UI has words for each in every language (checked by
        /// a test through the generated `ui/contract.js`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum AppErrorCode {
            $($(#[doc = $doc])* $code,)*
            /// A code of the server's (`USERSIG_EXPIRED`, `SESSION_BANNED`, …).
            #[serde(untagged)]
            Server(ErrorCode),
        }

        impl AppErrorCode {
            /// The app's and the SDK's own codes (not the server's).
            pub const OWN: &'static [AppErrorCode] = &[$(AppErrorCode::$code),*];
        }
    };
}

app_error_codes! {
    /// A form field or argument was not acceptable.
    InvalidParameter,
    /// Already in a room.
    AlreadyInRoom,
    /// Not in a room.
    NotInRoom,
    /// No camera or microphone is open.
    NoLocalStream,
    /// The frame server could not start.
    FrameServerFailed,
    /// The embedded room server could not start.
    ServerStartFailed,
    /// No such frame view.
    UnknownView,
    /// Too many frame views are open.
    TooManyViews,
    /// Reconnecting gave up (an `error` event).
    ReconnectFailed,
    /// The client's options are invalid (e.g. a bad server address).
    InvalidOptions,
    /// The server did not answer in time.
    Timeout,
    /// The server could not be reached.
    ServerUnreachable,
    /// The server's TLS certificate is not trusted, or TLS failed.
    TlsFailed,
    /// The connection to the server was lost.
    ConnectionLost,
    /// Video or sound could not be set up.
    MediaFailed,
    /// No such device is connected.
    NoDevice,
    /// The chosen device is no longer connected.
    DeviceNotFound,
    /// The device is busy or could not be opened.
    DeviceUnavailable,
    /// A device stopped working.
    DeviceLost,
    /// Only the host (the app whose embedded server holds the room) may do that.
    NotHost,
    /// The text is not an invite link or code.
    InvalidInvite,
    /// The server has no such invite.
    InviteNotFound,
    /// The invite has expired.
    InviteExpired,
    /// The host revoked the invite.
    InviteRevoked,
    /// The invite has been used as many times as it may.
    InviteUsedUp,
    /// Someone by that name is in the room already.
    NameTaken,
    /// The screen or window cannot be captured (no X display, the window
    /// closed, a Wayland session without X).
    ShareFailed,
    /// The screen is being shared already (stop first).
    AlreadySharing,
}

impl AppErrorCode {
    /// Every code, the server's included.
    pub fn all() -> Vec<AppErrorCode> {
        let server = ErrorCode::ALL
            .into_iter()
            .map(AppErrorCode::from)
            .filter(|c| matches!(c, AppErrorCode::Server(_)));
        Self::OWN.iter().copied().chain(server).collect()
    }

    /// The name the UI sees, e.g. `NOT_IN_ROOM`.
    pub fn as_str(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl From<ErrorCode> for AppErrorCode {
    /// The server's code; the ones the app has too are the app's.
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidParameter => AppErrorCode::InvalidParameter,
            ErrorCode::AlreadyInRoom => AppErrorCode::AlreadyInRoom,
            ErrorCode::NotInRoom => AppErrorCode::NotInRoom,
            ErrorCode::MediaFailed => AppErrorCode::MediaFailed,
            code => AppErrorCode::Server(code),
        }
    }
}

impl std::fmt::Display for AppErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// An error the UI shows: a stable `code` to choose words by, and the
/// detail in English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    /// What kind of failure.
    pub code: AppErrorCode,
    /// What happened.
    pub message: String,
}

impl AppError {
    /// An error with this code.
    pub fn new(code: AppErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
        }
    }

    /// A form field was not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(AppErrorCode::InvalidParameter, message)
    }
}

impl From<&ClientError> for AppErrorCode {
    fn from(e: &ClientError) -> Self {
        use AppErrorCode as C;
        match e {
            ClientError::InvalidOptions(_) => C::InvalidOptions,
            ClientError::Auth { code, .. } | ClientError::Server { code, .. } => (*code).into(),
            ClientError::InvalidParameter(_) => C::InvalidParameter,
            ClientError::AlreadyInRoom => C::AlreadyInRoom,
            ClientError::Timeout(_) => C::Timeout,
            ClientError::Unreachable(_) => C::ServerUnreachable,
            ClientError::Tls(_) => C::TlsFailed,
            ClientError::ConnectionLost => C::ConnectionLost,
            ClientError::Banned(_) => C::Server(ErrorCode::SessionBanned),
            ClientError::NotInRoom => C::NotInRoom,
            ClientError::Media(_) => C::MediaFailed,
            ClientError::Invite { code, .. } => match code.as_str() {
                "INVITE_NOT_FOUND" => C::InviteNotFound,
                "INVITE_EXPIRED" => C::InviteExpired,
                "INVITE_REVOKED" => C::InviteRevoked,
                "INVITE_USED_UP" => C::InviteUsedUp,
                "NAME_TAKEN" => C::NameTaken,
                "RATE_LIMITED" => C::Server(ErrorCode::RateLimited),
                "SERVICE_UNAVAILABLE" => C::Server(ErrorCode::ServiceUnavailable),
                _ => C::InvalidParameter,
            },
            ClientError::Device(DeviceError::NotFound { .. }) => C::DeviceNotFound,
            ClientError::Device(DeviceError::NoDevice(_)) => C::NoDevice,
            ClientError::Device(DeviceError::Open { .. }) => C::DeviceUnavailable,
            ClientError::Device(DeviceError::Lost { .. }) => C::DeviceLost,
        }
    }
}

impl From<ClientError> for AppError {
    fn from(e: ClientError) -> Self {
        AppError {
            code: (&e).into(),
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "ipc-transports")]
impl From<crate::ipc_views::ViewError> for AppError {
    fn from(e: crate::ipc_views::ViewError) -> Self {
        use crate::ipc_views::ViewError;
        let code = match e {
            ViewError::Unknown(_) => AppErrorCode::UnknownView,
            ViewError::TooMany => AppErrorCode::TooManyViews,
        };
        AppError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_error_name_is_its_app_code() {
        use kaigi_sdk::KickReason;
        let errors = [
            ClientError::InvalidOptions("x".into()),
            ClientError::Timeout(1),
            ClientError::Unreachable("x".into()),
            ClientError::Tls("x".into()),
            ClientError::ConnectionLost,
            ClientError::Banned(KickReason::RoomDismissed),
            ClientError::NotInRoom,
            ClientError::AlreadyInRoom,
            ClientError::Media("x".into()),
            ClientError::InvalidParameter("x".into()),
            ClientError::Device(DeviceError::NoDevice(kaigi_sdk::DeviceKind::Camera)),
        ];
        for e in errors {
            assert_eq!(AppErrorCode::from(&e).as_str(), e.name(), "{e:?}");
        }
        let all = AppErrorCode::all();
        let names: std::collections::HashSet<String> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len(), "each code has its own name");
        assert!(names.contains("USERSIG_EXPIRED") && names.contains("NO_LOCAL_STREAM"));
    }

    #[test]
    fn the_ui_gets_code_and_message() {
        let e = AppError::from(ClientError::Auth {
            code: ErrorCode::UsersigExpired,
            message: "expired at 1".into(),
        });
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"code": "USERSIG_EXPIRED",
                "message": "authentication failed (USERSIG_EXPIRED): expired at 1"})
        );
        assert_eq!(
            serde_json::to_value(AppError::from(ClientError::NotInRoom)).unwrap(),
            serde_json::json!({"code": "NOT_IN_ROOM", "message": "not in a room"})
        );
    }
}
