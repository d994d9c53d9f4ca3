//! Invites: a short code (and a `kaigi://` link holding it with the
//! server's address) that lets its holder obtain, from the server, a UserSig
//! valid only for one room and only until the invite expires. An invite
//! carries no secret of the app; the server keeps what it stands for and can
//! revoke it. See `docs/protocol.md`, "Invites".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::signal::RoomRef;

/// How many characters a code has (without its dashes): 50 random bits.
pub const CODE_LEN: usize = 10;
/// The characters a code is written with (Crockford's base 32, lower case:
/// no i, l, o or u).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// The scheme of invite links.
pub const LINK_SCHEME: &str = "kaigi://";
/// Invites last this long unless the host says otherwise.
pub const DEFAULT_INVITE_SECS: u64 = 24 * 3600;
/// The longest an invite may last.
pub const MAX_INVITE_SECS: u64 = 30 * 24 * 3600;

/// An invite's code, e.g. `k3m-9xq2-7hd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteCode(String);

/// Why a text is not an invite code or link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteParseError {
    /// Not 10 code characters.
    #[error("an invite code has {CODE_LEN} letters and digits, like k3m-9xq2-7hd")]
    BadCode,
    /// A `kaigi://` link that is not an invite link.
    #[error("not an invite link: {0}")]
    BadLink(String),
}

impl InviteCode {
    /// A code from 50 random bits (the low 50 of `bits`).
    pub fn from_bits(bits: u64) -> Self {
        let s = (0..CODE_LEN)
            .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
            .collect();
        InviteCode(s)
    }

    /// The code without dashes, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InviteCode {
    /// Grouped 3-4-3 for reading aloud: `k3m-9xq2-7hd`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        write!(f, "{}-{}-{}", &s[..3], &s[3..7], &s[7..])
    }
}

impl FromStr for InviteCode {
    type Err = InviteParseError;
    /// Accepts any case, with or without dashes and spaces; `i`/`l` read
    /// as 1 and `o` as 0, as Crockford's base 32 does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = String::with_capacity(CODE_LEN);
        for c in s.chars() {
            let c = match c.to_ascii_lowercase() {
                '-' | ' ' => continue,
                'i' | 'l' => '1',
                'o' => '0',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() == CODE_LEN {
                return Err(InviteParseError::BadCode);
            }
            out.push(c);
        }
        if out.len() != CODE_LEN {
            return Err(InviteParseError::BadCode);
        }
        Ok(InviteCode(out))
    }
}

impl Serialize for InviteCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InviteCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a person pastes or opens: a link with the server, or a bare code
/// (for the server the client already uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The server's signaling URL (`ws://…` or `wss://…`), if the text had one.
    pub server: Option<String>,
    /// The code.
    pub code: InviteCode,
}

impl Invite {
    /// The link: `kaigi://invite/CODE?server=URL`.
    pub fn link(server: &str, code: &InviteCode) -> String {
        format!(
            "{LINK_SCHEME}invite/{code}?server={}",
            percent_encode(server)
        )
    }
}

impl FromStr for Invite {
    type Err = InviteParseError;
    /// A link (`kaigi://invite/CODE?server=URL`) or a bare code; surrounding
    /// white space is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some(rest) = strip_prefix_ignore_case(s, LINK_SCHEME) else {
            return Ok(Invite {
                server: None,
                code: s.parse()?,
            });
        };
        let bad = || InviteParseError::BadLink(s.chars().take(100).collect());
        let rest = strip_prefix_ignore_case(rest, "invite/").ok_or_else(bad)?;
        let (code, query) = rest.split_once('?').unwrap_or((rest, ""));
        let code = code.trim_end_matches('/').parse()?;
        let mut server = None;
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("server=") {
                let url = percent_decode(v).ok_or_else(bad)?;
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    return Err(bad());
                }
                server = Some(url);
            }
        }
        Ok(Invite { server, code })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/[]@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /invite/{code}`: what an invite is for, without redeeming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvitePreview {
    /// The code.
    pub code: InviteCode,
    /// The app.
    pub sdk_app_id: u32,
    /// The room.
    #[serde(flatten)]
    pub room: RoomRef,
    /// Unix seconds after which it admits no one.
    pub expires_at: u64,
}

/// `POST /invite/{code}`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeemRequest {
    /// The name to join as.
    pub user_id: String,
}

/// `POST /invite/{code}`'s answer: what `join` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeemedInvite {
    /// The app.
    pub sdk_app_id: u32,
    /// The name granted.
    pub user_id: String,
    /// A UserSig for `user_id` whose `TLS.userbuf` grants only this room
    /// until `expires_at` (a privateMapKey; see [`crate::grant`]).
    pub user_sig: String,
    /// The room.
    #[serde(flatten)]
    pub room: RoomRef,
    /// Unix seconds: the invite's (and the UserSig's) end.
    pub expires_at: u64,
}

/// An invite endpoint's refusal: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteErrorBody {
    /// The error.
    pub error: InviteErrorDetail,
}

/// The code and message of [`InviteErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InviteErrorDetail {
    /// `INVITE_NOT_FOUND`, `INVITE_EXPIRED`, `INVITE_REVOKED`,
    /// `INVITE_USED_UP`, `NAME_TAKEN`, `INVALID_PARAMETER`, `RATE_LIMITED`,
    /// `SERVICE_UNAVAILABLE`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_however_they_are_typed() {
        let c = InviteCode::from_bits(0x3_ffff_ffff_ffff);
        assert_eq!(c.as_str().len(), CODE_LEN);
        let shown = c.to_string();
        assert_eq!(shown.len(), CODE_LEN + 2);
        assert_eq!(shown.parse::<InviteCode>(), Ok(c.clone()));
        assert_eq!(shown.to_uppercase().parse::<InviteCode>(), Ok(c.clone()));
        assert_eq!(c.as_str().parse::<InviteCode>(), Ok(c));
        let c = InviteCode::from_bits(0);
        assert_eq!(c.to_string(), "000-0000-000");
        assert_eq!("OOO-oooo-ooo".parse::<InviteCode>(), Ok(c));
        assert_eq!(
            "IIL-1111-111".parse::<InviteCode>().unwrap().as_str(),
            "1111111111"
        );
        for bad in [
            "",
            "abc",
            "k3m-9xq2-7hdx",
            "k3m-9xq2-7h!",
            "k3m-9xq2-7hú",
            "uuuuuuuuuu",
        ] {
            assert_eq!(
                bad.parse::<InviteCode>(),
                Err(InviteParseError::BadCode),
                "{bad}"
            );
        }
    }

    #[test]
    fn links_carry_the_server_and_the_code() {
        let code = InviteCode::from_bits(123_456_789);
        let link = Invite::link("ws://192.0.2.10:7880", &code);
        assert_eq!(
            link,
            format!("kaigi://invite/{code}?server=ws://192.0.2.10:7880")
        );
        let parsed: Invite = format!("  {link}\n").parse().unwrap();
        assert_eq!(parsed.server.as_deref(), Some("ws://192.0.2.10:7880"));
        assert_eq!(parsed.code, code);
        let odd = Invite::link("wss://example.test/a b?x&y", &code);
        let back: Invite = odd.parse().unwrap();
        assert_eq!(back.server.as_deref(), Some("wss://example.test/a b?x&y"));
        let bare: Invite = code.to_string().parse().unwrap();
        assert_eq!(bare, Invite { server: None, code });
        for bad in [
            "kaigi://join/abc",
            "kaigi://invite/000-0000-000?server=http://x",
            "kaigi://invite/000-0000-000?server=%zz",
            "kaigi://invite/nope",
        ] {
            assert!(bad.parse::<Invite>().is_err(), "{bad}");
        }
    }
}
