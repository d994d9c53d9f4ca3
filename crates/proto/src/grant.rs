//! Room grants: TRTC's room permission ticket (`privateMapKey`), a UserSig
//! whose `TLS.userbuf` names the one room its holder may enter, until when,
//! and with which privileges.
//!
//! The userbuf's layout is Tencent's (`tls-sig-api-v2`'s
//! `genPrivateMapKey`), all integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version: 0 numeric room, 1 string room |
//! | 2 | length of the user id, then the user id |
//! | 4 | SdkAppId |
//! | 4 | numeric room id (0 for a string room) |
//! | 4 | expiry, Unix seconds |
//! | 4 | privilege bits ([`Privileges`]) |
//! | 4 | account type (0) |
//! | 2 | (version 1 only) length of the string room id, then the room id |
//!
//! A UserSig whose userbuf decodes as a grant enters only the granted room,
//! only before the grant's expiry, only with [`Privileges::ENTER`].

use crate::ids::{RoomId, SdkAppId};
use crate::usersig;

/// A grant's privilege bits, as TRTC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Privileges(pub u32);

impl Privileges {
    /// May create the room.
    pub const CREATE: u32 = 0x01;
    /// May enter the room.
    pub const ENTER: u32 = 0x02;
    /// May send audio.
    pub const SEND_AUDIO: u32 = 0x04;
    /// May receive audio.
    pub const RECV_AUDIO: u32 = 0x08;
    /// May send video.
    pub const SEND_VIDEO: u32 = 0x10;
    /// May receive video.
    pub const RECV_VIDEO: u32 = 0x20;
    /// May send the sub (screen) stream.
    pub const SEND_SUB: u32 = 0x40;
    /// May receive the sub (screen) stream.
    pub const RECV_SUB: u32 = 0x80;
    /// Everything (255).
    pub const ALL: Privileges = Privileges(0xff);

    /// Whether every bit of `bits` is granted.
    pub fn allows(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// What a grant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomGrant {
    /// The user it is for.
    pub user: String,
    /// The app.
    pub sdk_app_id: SdkAppId,
    /// The one room it lets its holder enter.
    pub room: RoomId,
    /// Unix seconds after which it no longer admits anyone.
    pub expires_at: u64,
    /// What its holder may do there.
    pub privileges: Privileges,
}

/// Why a userbuf is not a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a room grant: {0}")]
pub struct NotAGrant(&'static str);

impl RoomGrant {
    /// The userbuf bytes, in Tencent's layout.
    pub fn encode(&self) -> Vec<u8> {
        let (version, num, text) = match &self.room {
            RoomId::Num(n) => (0u8, *n, ""),
            RoomId::Str(s) => (1u8, 0, s.as_str()),
        };
        let mut b = Vec::with_capacity(27 + self.user.len() + text.len());
        b.push(version);
        b.extend_from_slice(&(self.user.len() as u16).to_be_bytes());
        b.extend_from_slice(self.user.as_bytes());
        b.extend_from_slice(&self.sdk_app_id.0.to_be_bytes());
        b.extend_from_slice(&num.to_be_bytes());
        b.extend_from_slice(&(self.expires_at.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        b.extend_from_slice(&self.privileges.0.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        if version == 1 {
            b.extend_from_slice(&(text.len() as u16).to_be_bytes());
            b.extend_from_slice(text.as_bytes());
        }
        b
    }

    /// Reads a userbuf; anything that is not exactly a grant (another use
    /// of the userbuf, a truncated one, trailing bytes) is refused.
    pub fn decode(b: &[u8]) -> Result<RoomGrant, NotAGrant> {
        let mut r = Reader(b);
        let version = r.u8()?;
        if version > 1 {
            return Err(NotAGrant("unknown version"));
        }
        let len = usize::from(r.u16()?);
        let user = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| NotAGrant("user"))?;
        let sdk_app_id = SdkAppId(r.u32()?);
        let num = r.u32()?;
        let expires_at = u64::from(r.u32()?);
        let privileges = Privileges(r.u32()?);
        let _account_type = r.u32()?;
        let room = if version == 1 {
            let len = usize::from(r.u16()?);
            let s = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| NotAGrant("room"))?;
            RoomId::str(s).map_err(|_| NotAGrant("room"))?
        } else {
            RoomId::num(u64::from(num)).map_err(|_| NotAGrant("room"))?
        };
        if !r.0.is_empty() {
            return Err(NotAGrant("trailing bytes"));
        }
        Ok(RoomGrant {
            user,
            sdk_app_id,
            room,
            expires_at,
            privileges,
        })
    }

    /// Whether it admits `user` of `app` into `room` at `now`.
    pub fn admits(&self, app: SdkAppId, user: &str, room: &RoomId, now: u64) -> bool {
        self.sdk_app_id == app
            && self.user == user
            && &self.room == room
            && now <= self.expires_at
            && self.privileges.allows(Privileges::ENTER)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotAGrant> {
        if self.0.len() < n {
            return Err(NotAGrant("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, NotAGrant> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, NotAGrant> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, NotAGrant> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Makes a privateMapKey: a UserSig for `user` carrying a grant of `room`
/// with `privileges`, valid `expire_secs` from `now` (Tencent's
/// `GenPrivateMapKey` / `GenPrivateMapKeyWithStringRoomID`).
pub fn generate_private_map_key(
    app: SdkAppId,
    key: &str,
    user: &str,
    room: &RoomId,
    privileges: Privileges,
    expire_secs: u64,
    now: u64,
) -> String {
    let grant = RoomGrant {
        user: user.to_owned(),
        sdk_app_id: app,
        room: room.clone(),
        expires_at: now.saturating_add(expire_secs),
        privileges,
    };
    usersig::generate_with_userbuf(app, key, user, expire_secs, now, Some(&grant.encode()))
}

/// The grant a verified UserSig's claims carry, if its userbuf is one.
pub fn from_claims(claims: &usersig::UserSigClaims) -> Option<RoomGrant> {
    use base64::Engine;
    let b64 = claims.userbuf.as_deref()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    RoomGrant::decode(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: SdkAppId = SdkAppId(1400000000);

    #[test]
    fn numeric_layout_is_tencents() {
        let g = RoomGrant {
            user: "xiaojun".into(),
            sdk_app_id: APP,
            room: RoomId::Num(10000),
            expires_at: 0x0102_0304,
            privileges: Privileges::ALL,
        };
        let b = g.encode();
        let mut want = vec![0u8, 0, 7];
        want.extend_from_slice(b"xiaojun");
        want.extend_from_slice(&1400000000u32.to_be_bytes());
        want.extend_from_slice(&10000u32.to_be_bytes());
        want.extend_from_slice(&[1, 2, 3, 4]);
        want.extend_from_slice(&[0, 0, 0, 255]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(b, want);
        assert_eq!(RoomGrant::decode(&b), Ok(g));
    }

    #[test]
    fn string_rooms_roundtrip_and_junk_is_refused() {
        let g = RoomGrant {
            user: "alice".into(),
            sdk_app_id: APP,
            room: RoomId::Str("team-sync".into()),
            expires_at: 2_000_000_000,
            privileges: Privileges(Privileges::ENTER | Privileges::RECV_AUDIO),
        };
        let b = g.encode();
        assert_eq!(b[0], 1);
        assert_eq!(RoomGrant::decode(&b), Ok(g));
        for cut in 0..b.len() {
            assert!(RoomGrant::decode(&b[..cut]).is_err(), "{cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(RoomGrant::decode(&long).is_err());
        assert!(RoomGrant::decode(b"abc").is_err());
    }

    #[test]
    fn a_private_map_key_admits_only_its_room_until_it_expires() {
        let room = RoomId::Num(42);
        let sig = generate_private_map_key(APP, KEY, "bob", &room, Privileges::ALL, 600, 1_000);
        let claims = usersig::verify(&sig, APP, KEY, "bob", 1_001).unwrap();
        let grant = from_claims(&claims).unwrap();
        assert!(grant.admits(APP, "bob", &room, 1_600));
        assert!(!grant.admits(APP, "bob", &room, 1_601));
        assert!(!grant.admits(APP, "bob", &RoomId::Num(43), 1_001));
        assert!(!grant.admits(APP, "eve", &room, 1_001));
        let watch_only = Privileges(Privileges::RECV_AUDIO | Privileges::RECV_VIDEO);
        let sig = generate_private_map_key(APP, KEY, "bob", &room, watch_only, 600, 1_000);
        let claims = usersig::verify(&sig, APP, KEY, "bob", 1_001).unwrap();
        assert!(!from_claims(&claims)
            .unwrap()
            .admits(APP, "bob", &room, 1_001));
        // A plain UserSig carries no grant.
        let plain = usersig::generate(APP, KEY, "bob", 600, 1_000);
        let claims = usersig::verify(&plain, APP, KEY, "bob", 1_001).unwrap();
        assert_eq!(from_claims(&claims), None);
    }
}
