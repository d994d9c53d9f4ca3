//! UserSig: TRTC's `tls-sig-api-v2` ticket, byte-compatible with Tencent's
//! published libraries.
//!
//! A UserSig is a JSON object (`TLS.ver`, `TLS.identifier`, `TLS.sdkappid`,
//! `TLS.expire`, `TLS.time`, optional `TLS.userbuf`, and `TLS.sig`, an
//! HMAC-SHA256 under the app's secret key), zlib-compressed, base64-encoded,
//! with `+` `/` `=` replaced by `*` `-` `_`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::io::{Read, Write};

use crate::ids::SdkAppId;

/// The longest UserSig accepted, in bytes. Tencent's are about 150–400.
pub const MAX_USERSIG_LEN: usize = 4096;
/// The most a UserSig may inflate to; guards against compression bombs.
const MAX_INFLATED_LEN: usize = 8192;

/// Why a UserSig was refused. Each maps to TRTC's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    /// Not base64, not zlib, not JSON, or missing fields (TRTC 70003).
    #[error("UserSig could not be decoded: {0}")]
    Undecodable(String),
    /// The HMAC does not match: forged, or made with another key (TRTC 70009).
    #[error("UserSig signature verification failed (wrong secret key or tampered)")]
    BadSignature,
    /// `TLS.time + TLS.expire` is in the past (TRTC 70001).
    #[error("UserSig expired at unix time {expired_at}")]
    Expired {
        /// Unix seconds at which it expired.
        expired_at: u64,
    },
    /// Made for another SdkAppId (TRTC 70014).
    #[error("UserSig was made for SdkAppId {found}, not {expected}")]
    WrongSdkAppId {
        /// The app the request is for.
        expected: u32,
        /// The app inside the sig.
        found: u32,
    },
    /// Made for another user id (TRTC 70013).
    #[error("UserSig was made for identifier {found:?}, not {expected:?}")]
    WrongIdentifier {
        /// The identifier the request claims.
        expected: String,
        /// The identifier inside the sig.
        found: String,
    },
}

/// The fields of a decoded UserSig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSigClaims {
    /// `TLS.identifier`: the user id (or `administrator`).
    pub identifier: String,
    /// `TLS.sdkappid`.
    pub sdk_app_id: u32,
    /// `TLS.time`: unix seconds when it was made.
    pub time: u64,
    /// `TLS.expire`: validity in seconds from `time`.
    pub expire: u64,
    /// `TLS.userbuf` as sent (base64), if any.
    pub userbuf: Option<String>,
}

impl UserSigClaims {
    /// Unix seconds after which the sig is expired.
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// A decoded (not yet verified) UserSig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSig {
    /// The signed fields.
    pub claims: UserSigClaims,
    /// `TLS.sig`: the base64 HMAC.
    pub sig: String,
}

fn content_to_sign(c: &UserSigClaims) -> String {
    let mut s = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        c.identifier, c.sdk_app_id, c.time, c.expire
    );
    if let Some(buf) = &c.userbuf {
        s.push_str("TLS.userbuf:");
        s.push_str(buf);
        s.push('\n');
    }
    s
}

fn mac(key: &str, content: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(content.as_bytes());
    m
}

/// Makes a UserSig for `identifier` valid for `expire_secs` from `now`
/// (unix seconds), signed with the app's secret `key`.
///
/// ```
/// use kaigi_proto::{usersig, SdkAppId};
/// let sig = usersig::generate(SdkAppId(1400000000), "secret", "alice", 86400, 1_700_000_000);
/// let claims = usersig::verify(&sig, SdkAppId(1400000000), "secret", "alice", 1_700_000_001).unwrap();
/// assert_eq!(claims.identifier, "alice");
/// ```
pub fn generate(app: SdkAppId, key: &str, identifier: &str, expire_secs: u64, now: u64) -> String {
    generate_with_userbuf(app, key, identifier, expire_secs, now, None)
}

/// As [`generate`], with `TLS.userbuf` (signed with the rest), as Tencent's
/// `GenUserSigWithBuf`: a room grant ([`crate::grant`]) travels this way.
pub fn generate_with_userbuf(
    app: SdkAppId,
    key: &str,
    identifier: &str,
    expire_secs: u64,
    now: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let claims = UserSigClaims {
        identifier: identifier.to_owned(),
        sdk_app_id: app.0,
        time: now,
        expire: expire_secs,
        userbuf: userbuf.map(|b| B64.encode(b)),
    };
    let sig = B64.encode(mac(key, &content_to_sign(&claims)).finalize().into_bytes());
    // Same field order and separators as Tencent's reference implementation.
    let userbuf = match &claims.userbuf {
        Some(b) => format!(", \"TLS.userbuf\": {}", Value::String(b.clone())),
        None => String::new(),
    };
    let json = format!(
        "{{\"TLS.ver\": \"2.0\", \"TLS.identifier\": {}, \"TLS.sdkappid\": {}, \"TLS.expire\": {}, \"TLS.time\": {}{userbuf}, \"TLS.sig\": {}}}",
        Value::String(claims.identifier),
        claims.sdk_app_id,
        claims.expire,
        claims.time,
        Value::String(sig),
    );
    let mut z = ZlibEncoder::new(Vec::with_capacity(json.len()), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(json.as_bytes());
    let compressed = z.finish().unwrap_or_default();
    escape(&B64.encode(compressed))
}

fn escape(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

fn field_u64(obj: &serde_json::Map<String, Value>, name: &str) -> Result<u64, UserSigError> {
    // Tencent's libraries write numbers; some ports write numeric strings.
    match obj.get(name) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| UserSigError::Undecodable(format!("{name} missing or not a number")))
}

fn field_str(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, UserSigError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(UserSigError::Undecodable(format!(
            "{name} missing or not a string"
        ))),
    }
}

/// Decodes a UserSig without checking its signature.
pub fn decode(sig: &str) -> Result<UserSig, UserSigError> {
    if sig.is_empty() {
        return Err(UserSigError::Undecodable("empty".into()));
    }
    if sig.len() > MAX_USERSIG_LEN {
        return Err(UserSigError::Undecodable(format!(
            "longer than {MAX_USERSIG_LEN} bytes"
        )));
    }
    let compressed = B64
        .decode(unescape(sig.trim()))
        .map_err(|e| UserSigError::Undecodable(format!("not base64: {e}")))?;
    let mut json = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_INFLATED_LEN as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| UserSigError::Undecodable(format!("not zlib: {e}")))?;
    if json.len() > MAX_INFLATED_LEN {
        return Err(UserSigError::Undecodable("inflates too large".into()));
    }
    let value: Value = serde_json::from_slice(&json)
        .map_err(|e| UserSigError::Undecodable(format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| UserSigError::Undecodable("not a JSON object".into()))?;
    match obj.get("TLS.ver") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return Err(UserSigError::Undecodable("TLS.ver is not \"2.0\"".into())),
    }
    let sdk_app_id = u32::try_from(field_u64(obj, "TLS.sdkappid")?)
        .map_err(|_| UserSigError::Undecodable("TLS.sdkappid out of range".into()))?;
    let claims = UserSigClaims {
        identifier: field_str(obj, "TLS.identifier")?,
        sdk_app_id,
        time: field_u64(obj, "TLS.time")?,
        expire: field_u64(obj, "TLS.expire")?,
        userbuf: match obj.get("TLS.userbuf") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(UserSigError::Undecodable("TLS.userbuf not a string".into())),
        },
    };
    Ok(UserSig {
        claims,
        sig: field_str(obj, "TLS.sig")?,
    })
}

/// Verifies a UserSig for `identifier` of app `app` with its secret `key` at
/// unix time `now`.
///
/// Checks, in order: it decodes; it names this app; it names this
/// identifier; its signature matches; it has not expired. A forged sig is
/// reported as [`UserSigError::BadSignature`] even when also expired.
pub fn verify(
    sig: &str,
    app: SdkAppId,
    key: &str,
    identifier: &str,
    now: u64,
) -> Result<UserSigClaims, UserSigError> {
    let UserSig { claims, sig } = decode(sig)?;
    if claims.sdk_app_id != app.0 {
        return Err(UserSigError::WrongSdkAppId {
            expected: app.0,
            found: claims.sdk_app_id,
        });
    }
    if claims.identifier != identifier {
        return Err(UserSigError::WrongIdentifier {
            expected: identifier.to_owned(),
            found: claims.identifier,
        });
    }
    let given = B64.decode(sig).map_err(|_| UserSigError::BadSignature)?;
    mac(key, &content_to_sign(&claims))
        .verify_slice(&given)
        .map_err(|_| UserSigError::BadSignature)?;
    if now > claims.expires_at() {
        return Err(UserSigError::Expired {
            expired_at: claims.expires_at(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: SdkAppId = SdkAppId(1400000000);

    #[test]
    fn roundtrip() {
        let s = generate(APP, KEY, "xiaojun", 180 * 86400, 1_600_000_000);
        let c = verify(&s, APP, KEY, "xiaojun", 1_600_000_100).unwrap();
        assert_eq!(c.time, 1_600_000_000);
        assert_eq!(c.expire, 180 * 86400);
        assert!(!s.contains(['+', '/', '=']));
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let s = generate(APP, KEY, "alice", 60, 1_000);
        assert_eq!(
            verify(&s, APP, KEY, "alice", 1_061),
            Err(UserSigError::Expired { expired_at: 1_060 })
        );
        assert_eq!(
            verify(&s, APP, "other", "alice", 1_001),
            Err(UserSigError::BadSignature)
        );
        assert!(matches!(
            verify(&s, SdkAppId(1), KEY, "alice", 1_001),
            Err(UserSigError::WrongSdkAppId {
                expected: 1,
                found: 1400000000
            })
        ));
        assert!(matches!(
            verify(&s, APP, KEY, "bob", 1_001),
            Err(UserSigError::WrongIdentifier { .. })
        ));
        for junk in [
            "",
            "!!!",
            "eJw_",
            &"A".repeat(5000),
            "eJyrVkrLz1eyUkpKLFKqBQAd-QS2",
        ] {
            assert!(
                matches!(
                    verify(junk, APP, KEY, "alice", 0),
                    Err(UserSigError::Undecodable(_))
                ),
                "{junk}"
            );
        }
        // Forged and expired: the forgery is what is reported.
        assert_eq!(
            verify(&s, APP, "other", "alice", 5_000),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn tampered_claims_fail_signature() {
        let UserSig { mut claims, sig } = decode(&generate(APP, KEY, "alice", 60, 1_000)).unwrap();
        claims.expire = 1_000_000;
        let json = serde_json::json!({
            "TLS.ver": "2.0", "TLS.identifier": claims.identifier, "TLS.sdkappid": claims.sdk_app_id,
            "TLS.expire": claims.expire, "TLS.time": claims.time, "TLS.sig": sig,
        });
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(json.to_string().as_bytes()).unwrap();
        let forged = escape(&B64.encode(z.finish().unwrap()));
        assert_eq!(
            verify(&forged, APP, KEY, "alice", 2_000),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn compression_bomb_is_refused() {
        let big = format!(
            "{{\"TLS.ver\": \"2.0\", \"pad\": \"{}\"}}",
            "a".repeat(100_000)
        );
        let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(big.as_bytes()).unwrap();
        let sig = escape(&B64.encode(z.finish().unwrap()));
        assert!(sig.len() < MAX_USERSIG_LEN);
        assert_eq!(
            decode(&sig),
            Err(UserSigError::Undecodable("inflates too large".into()))
        );
    }
}
