//! Validated identifiers: application, user and room ids, and roles.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A user id must be 1–32 bytes.
    #[error("userId must be 1-32 characters long, got {0}")]
    UserIdLength(usize),
    /// A user id may hold only `A-Z a-z 0-9 _ -`.
    #[error("userId may contain only A-Z, a-z, 0-9, '_' and '-'")]
    UserIdCharset,
    /// A numeric room id must be in `1..=4294967294`.
    #[error("roomId must be a number from 1 to 4294967294")]
    RoomIdRange,
    /// A string room id must be 1–64 bytes.
    #[error("strRoomId must be 1-64 characters long, got {0}")]
    StrRoomIdLength(usize),
    /// A string room id may hold only TRTC's allowed characters.
    #[error("strRoomId may contain only A-Z, a-z, 0-9, space and !#$%&()+-:;<=.>?@[]^_{{}}|~,")]
    StrRoomIdCharset,
    /// A SdkAppId must be a positive number.
    #[error("SdkAppId must be a positive number")]
    SdkAppId,
}

/// A TRTC application id. Each has a secret key on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SdkAppId(pub u32);

impl fmt::Display for SdkAppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SdkAppId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(SdkAppId(n)),
            _ => Err(IdError::SdkAppId),
        }
    }
}

/// A user id: 1–32 bytes of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Validates `s` as a user id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() || s.len() > 32 {
            return Err(IdError::UserIdLength(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(IdError::UserIdCharset);
        }
        Ok(UserId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        UserId::new(s)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::new(s).map_err(serde::de::Error::custom)
    }
}

/// Characters TRTC allows in a string room id besides ASCII letters and digits.
const STR_ROOM_PUNCT: &[u8] = b" !#$%&()+-:;<=.>?@[]^_{}|~,";

/// The largest numeric room id (TRTC's limit).
pub const MAX_NUMERIC_ROOM_ID: u32 = 4_294_967_294;

/// A room: numeric (`1..=4294967294`) or a string room id (`strRoomId`).
///
/// The numeric room `123` and the string room `"123"` are different rooms.
/// On the wire a room appears as `"roomId": 123` or `"strRoomId": "123"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomId {
    /// A numeric room id.
    Num(u32),
    /// A string room id.
    Str(String),
}

impl RoomId {
    /// Validates a numeric room id.
    pub fn num(n: u64) -> Result<Self, IdError> {
        if n == 0 || n > u64::from(MAX_NUMERIC_ROOM_ID) {
            return Err(IdError::RoomIdRange);
        }
        Ok(RoomId::Num(n as u32))
    }

    /// Validates a string room id.
    pub fn str(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() || s.len() > 64 {
            return Err(IdError::StrRoomIdLength(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || STR_ROOM_PUNCT.contains(&b))
        {
            return Err(IdError::StrRoomIdCharset);
        }
        Ok(RoomId::Str(s))
    }

    /// Whether this is a string room id.
    pub fn is_str(&self) -> bool {
        matches!(self, RoomId::Str(_))
    }
}

impl fmt::Display for RoomId {
    /// Numeric rooms print as the number, string rooms quoted, so the two
    /// never look alike in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomId::Num(n) => write!(f, "{n}"),
            RoomId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// What a participant may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May publish audio and video.
    #[default]
    Anchor,
    /// May only watch and listen.
    Audience,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Anchor => "anchor",
            Role::Audience => "audience",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "anchor" => Ok(Role::Anchor),
            "audience" => Ok(Role::Audience),
            other => Err(format!(
                "unknown role {other:?} (expected anchor or audience)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_bounds() {
        assert!(UserId::new("a").is_ok());
        assert!(UserId::new("A-z_09").is_ok());
        assert!(UserId::new("x".repeat(32)).is_ok());
        assert_eq!(UserId::new(""), Err(IdError::UserIdLength(0)));
        assert_eq!(UserId::new("x".repeat(33)), Err(IdError::UserIdLength(33)));
        assert_eq!(UserId::new("a b"), Err(IdError::UserIdCharset));
        assert_eq!(UserId::new("é"), Err(IdError::UserIdCharset));
    }

    #[test]
    fn numeric_room_bounds() {
        assert_eq!(RoomId::num(0), Err(IdError::RoomIdRange));
        assert_eq!(RoomId::num(1), Ok(RoomId::Num(1)));
        assert_eq!(RoomId::num(4_294_967_294), Ok(RoomId::Num(4_294_967_294)));
        assert_eq!(RoomId::num(4_294_967_295), Err(IdError::RoomIdRange));
    }

    #[test]
    fn string_room_charset() {
        assert!(RoomId::str("room 1!#$%&()+-:;<=.>?@[]^_{}|~,").is_ok());
        assert!(RoomId::str("x".repeat(64)).is_ok());
        assert_eq!(RoomId::str(""), Err(IdError::StrRoomIdLength(0)));
        assert_eq!(
            RoomId::str("x".repeat(65)),
            Err(IdError::StrRoomIdLength(65))
        );
        assert_eq!(RoomId::str("a/b"), Err(IdError::StrRoomIdCharset));
        assert_eq!(RoomId::str("a\"b"), Err(IdError::StrRoomIdCharset));
        assert_eq!(RoomId::str("ü"), Err(IdError::StrRoomIdCharset));
    }

    #[test]
    fn number_and_string_rooms_differ() {
        assert_ne!(RoomId::num(123).unwrap(), RoomId::str("123").unwrap());
        assert_eq!(RoomId::num(123).unwrap().to_string(), "123");
        assert_eq!(RoomId::str("123").unwrap().to_string(), "\"123\"");
    }
}
