//! The one error type that crosses IPC: `{code, message}`.

use kaigi_sdk::ClientError;
use serde::Serialize;

/// An error the UI shows: a stable `code` to choose words by, and the
/// detail in English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    /// A stable name (`NOT_IN_ROOM`, `USERSIG_EXPIRED`, `DEVICE_NOT_FOUND`, …).
    pub code: String,
    /// What happened.
    pub message: String,
}

impl AppError {
    /// An error with this code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        AppError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A form field was not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("INVALID_PARAMETER", message)
    }
}

impl From<ClientError> for AppError {
    fn from(e: ClientError) -> Self {
        AppError {
            code: e.name(),
            message: e.to_string(),
        }
    }
}

impl From<crate::frames::ViewError> for AppError {
    fn from(e: crate::frames::ViewError) -> Self {
        use crate::frames::ViewError;
        let code = match e {
            ViewError::Unknown(_) => "UNKNOWN_VIEW",
            ViewError::TooMany => "TOO_MANY_VIEWS",
        };
        AppError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaigi_proto::ErrorCode;

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
