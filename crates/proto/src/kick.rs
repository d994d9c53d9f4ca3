//! Why a client was forced out of its room, with TRTC's message texts.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The reason carried by `client-banned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KickReason {
    /// Another client joined the same room with the same userId; the newest
    /// wins. TRTC v5 calls this `kick`.
    DuplicateUserId,
    /// `RemoveUser` / `RemoveUserByStrRoomId`. TRTC v5: `banned`.
    RemovedByAdmin,
    /// `DismissRoom` / `DismissRoomByStrRoomId`. TRTC v5: `room_disband`.
    RoomDismissed,
}

impl KickReason {
    /// Every reason, for exhaustive tests and docs.
    pub const ALL: [KickReason; 3] = [
        KickReason::DuplicateUserId,
        KickReason::RemovedByAdmin,
        KickReason::RoomDismissed,
    ];

    /// The message TRTC's SDK gives with this reason.
    pub fn message(self) -> &'static str {
        match self {
            KickReason::DuplicateUserId => {
                "client was banned because of duplicated userId joining the room."
            }
            KickReason::RemovedByAdmin => {
                "client was banned because of you got banned by account admin"
            }
            KickReason::RoomDismissed => {
                "client was banned because of the room has been disbanded by the admin."
            }
        }
    }

    /// The wire name (`duplicate-user-id`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KickReason::DuplicateUserId => "duplicate-user-id",
            KickReason::RemovedByAdmin => "removed-by-admin",
            KickReason::RoomDismissed => "room-dismissed",
        }
    }

    /// The `reason` TRTC's Web SDK (4.14 and later) gives `client-banned`
    /// for the same cause: `kick`, `banned`, `room-disband`. Protocol 6
    /// sends it as `reason` (`docs/protocol.md`).
    pub fn trtc_reason(self) -> &'static str {
        match self {
            KickReason::DuplicateUserId => "kick",
            KickReason::RemovedByAdmin => "banned",
            KickReason::RoomDismissed => "room-disband",
        }
    }

    /// The reason named `s`, Kaigi's name (`removed-by-admin`) or TRTC's
    /// (`banned`).
    pub fn parse(s: &str) -> Option<KickReason> {
        KickReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.trtc_reason() == s)
    }

    /// The name TRTC Web SDK v5 uses for the same reason.
    pub fn trtc_v5_name(self) -> &'static str {
        match self {
            KickReason::DuplicateUserId => "kick",
            KickReason::RemovedByAdmin => "banned",
            KickReason::RoomDismissed => "room_disband",
        }
    }
}

impl fmt::Display for KickReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_as_str() {
        for r in KickReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(
            KickReason::DuplicateUserId.message(),
            "client was banned because of duplicated userId joining the room."
        );
        for r in KickReason::ALL {
            assert_eq!(KickReason::parse(r.as_str()), Some(r));
            assert_eq!(KickReason::parse(r.trtc_reason()), Some(r));
        }
        assert_eq!(KickReason::parse("left"), None);
    }
}
