//! Error codes carried by signaling `error` messages.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::usersig::UserSigError;

/// Every error the server reports over signaling. UserSig failures use
/// TRTC's account error numbers; the rest are Kaigi's own (4000–5999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The UserSig has expired (TRTC 70001).
    UsersigExpired,
    /// The UserSig could not be decoded (TRTC 70003).
    UsersigUndecodable,
    /// The UserSig's signature does not match (TRTC 70009).
    UsersigBadSignature,
    /// The UserSig was made for another userId (TRTC 70013).
    UsersigWrongUser,
    /// The UserSig was made for another SdkAppId (TRTC 70014).
    UsersigWrongApp,
    /// The server has no such SdkAppId (TRTC 70020).
    UnknownSdkAppId,
    /// The message is not valid JSON or not a known message.
    InvalidMessage,
    /// The message is larger than the server accepts.
    MessageTooLarge,
    /// The client sent messages faster than allowed.
    RateLimited,
    /// A field has an invalid value (user id, room id, role, …).
    InvalidParameter,
    /// The request needs the session to be in a room.
    NotInRoom,
    /// The session is already in a room; leave first.
    AlreadyInRoom,
    /// A resumed session had been forced out; it must not rejoin by itself.
    SessionBanned,
    /// Nothing was heard from the client within the heartbeat timeout.
    HeartbeatTimeout,
    /// The server is shutting down; reconnect later.
    ServerShuttingDown,
    /// The client asked for a protocol version the server does not speak.
    UnsupportedProtocol,
    /// An `audience` may not publish.
    AudienceCannotPublish,
    /// The session is already publishing.
    AlreadyPublishing,
    /// Setting up the media connection failed.
    MediaFailed,
    /// The request needs a published stream.
    NotPublishing,
    /// The named user is not publishing in this room.
    StreamNotFound,
    /// The UserSig carries a room grant (a privateMapKey, as an invite's
    /// UserSig does) that does not admit this user into this room now, or
    /// the invite it came from was revoked (TRTC -100006).
    RoomNotGranted,
    /// The room lives on another node of the service: join there (the
    /// error's `redirect`; protocol 5).
    RoomElsewhere,
    /// The room moved to another node of the service (its node lost it):
    /// reconnect and join again, as after a dropped connection.
    RoomMoved,
    /// The server failed; not the client's fault.
    Internal,
    /// The service cannot place the room now (its Redis is out of reach):
    /// try again shortly.
    ServiceUnavailable,
}

impl ErrorCode {
    /// Every code, in the order of their numbers.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::UsersigExpired,
        ErrorCode::UsersigUndecodable,
        ErrorCode::UsersigBadSignature,
        ErrorCode::UsersigWrongUser,
        ErrorCode::UsersigWrongApp,
        ErrorCode::UnknownSdkAppId,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::InvalidParameter,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::SessionBanned,
        ErrorCode::HeartbeatTimeout,
        ErrorCode::ServerShuttingDown,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::AudienceCannotPublish,
        ErrorCode::AlreadyPublishing,
        ErrorCode::MediaFailed,
        ErrorCode::NotPublishing,
        ErrorCode::StreamNotFound,
        ErrorCode::RoomNotGranted,
        ErrorCode::RoomElsewhere,
        ErrorCode::RoomMoved,
        ErrorCode::Internal,
        ErrorCode::ServiceUnavailable,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::UsersigExpired => 70001,
            ErrorCode::UsersigUndecodable => 70003,
            ErrorCode::UsersigBadSignature => 70009,
            ErrorCode::UsersigWrongUser => 70013,
            ErrorCode::UsersigWrongApp => 70014,
            ErrorCode::UnknownSdkAppId => 70020,
            ErrorCode::InvalidMessage => 4000,
            ErrorCode::MessageTooLarge => 4001,
            ErrorCode::RateLimited => 4002,
            ErrorCode::InvalidParameter => 4003,
            ErrorCode::NotInRoom => 4004,
            ErrorCode::AlreadyInRoom => 4005,
            ErrorCode::SessionBanned => 4006,
            ErrorCode::HeartbeatTimeout => 4007,
            ErrorCode::ServerShuttingDown => 4008,
            ErrorCode::UnsupportedProtocol => 4009,
            ErrorCode::AudienceCannotPublish => 4010,
            ErrorCode::AlreadyPublishing => 4011,
            ErrorCode::MediaFailed => 4012,
            ErrorCode::NotPublishing => 4013,
            ErrorCode::StreamNotFound => 4014,
            ErrorCode::RoomNotGranted => 4015,
            ErrorCode::RoomElsewhere => 4016,
            ErrorCode::RoomMoved => 4017,
            ErrorCode::Internal => 5000,
            ErrorCode::ServiceUnavailable => 5001,
        }
    }

    /// Whether this error is about authentication: retrying with the same
    /// credentials cannot succeed.
    pub fn is_auth(self) -> bool {
        matches!(
            self,
            ErrorCode::UsersigExpired
                | ErrorCode::UsersigUndecodable
                | ErrorCode::UsersigBadSignature
                | ErrorCode::UsersigWrongUser
                | ErrorCode::UsersigWrongApp
                | ErrorCode::UnknownSdkAppId
                | ErrorCode::RoomNotGranted
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name, e.g. USERSIG_EXPIRED.
        let v = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(v.as_str().unwrap_or("UNKNOWN"))
    }
}

impl From<&UserSigError> for ErrorCode {
    fn from(e: &UserSigError) -> Self {
        match e {
            UserSigError::Undecodable(_) => ErrorCode::UsersigUndecodable,
            UserSigError::BadSignature => ErrorCode::UsersigBadSignature,
            UserSigError::Expired { .. } => ErrorCode::UsersigExpired,
            UserSigError::WrongSdkAppId { .. } => ErrorCode::UsersigWrongApp,
            UserSigError::WrongIdentifier { .. } => ErrorCode::UsersigWrongUser,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once() {
        // `code()` matches every variant: a new one fails to compile there,
        // and its number is missing here until it is listed.
        let mut numbers: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        let names: std::collections::HashSet<String> =
            ErrorCode::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn names_and_codes() {
        assert_eq!(ErrorCode::UsersigExpired.to_string(), "USERSIG_EXPIRED");
        assert_eq!(ErrorCode::UsersigExpired.code(), 70001);
        assert_eq!(ErrorCode::AlreadyInRoom.to_string(), "ALREADY_IN_ROOM");
    }
}
