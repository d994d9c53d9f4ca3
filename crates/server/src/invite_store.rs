//! The service's invites, in Redis: a node in a service keeps invites
//! there rather than in its memory, so an invite made at one node is looked
//! up, redeemed and revoked at any of them (`crate::invites` chooses).
//!
//! Keys (under the service's prefix):
//! - `invite:{code}`: a hash (`app`, `room`, `created`, `expires`,
//!   `revoked`, `redeemed`) that expires [`EXPIRED_KEPT_SECS`] after the
//!   invite does;
//! - `invites:{app}`: a sorted set of the app's codes, scored by when each
//!   is forgotten (what bounds an app's invites);
//! - `issued:{sig}`: the code a redeemed UserSig (its `TLS.sig`) came
//!   from, for as long as its invite is kept.
//!
//! Creating, revoking and redeeming are each one Lua script, so two nodes
//! redeeming one invite at once count two UserSigs and never pass the
//! invite's limit.
//!
//! [`EXPIRED_KEPT_SECS`]: crate::invites::EXPIRED_KEPT_SECS

use std::collections::HashMap;

use kaigi_proto::admin::CreatedInvite;
use kaigi_proto::invite::InviteCode;
use kaigi_proto::{RoomId, SdkAppId};
use tracing::info;

use crate::cluster::{Cluster, ClusterError};
use crate::invites::{InviteError, InviteRecord, MAX_INVITES_PER_APP, MAX_REDEEMS_PER_INVITE};

/// KEYS: the invite, the app's set. ARGV: now, the most per app, the code,
/// when it is forgotten, then the hash's fields and values. -1 when the app
/// has as many as it may, 0 when the code is taken, 1 when made.
const CREATE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[2], last[2])
return 1";

/// KEYS: the invite. ARGV: the app. 1 if the app had it (now revoked).
const REVOKE: &str = r"
if redis.call('HGET', KEYS[1], 'app') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1";

/// KEYS: the invite, the UserSig's `issued:` key. ARGV: now, the most
/// UserSigs per invite, the code, when it is forgotten. `OK` when counted,
/// else why not.
const TAKE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'expires', 'revoked', 'redeemed')
if not f[1] then return 'NotFound' end
if f[2] == '1' then return 'Revoked' end
if tonumber(ARGV[1]) > tonumber(f[1]) then return 'Expired:' .. f[1] end
if tonumber(f[3]) >= tonumber(ARGV[2]) then return 'UsedUp' end
redis.call('HINCRBY', KEYS[1], 'redeemed', 1)
redis.call('SET', KEYS[2], ARGV[3], 'EXAT', ARGV[4])
return 'OK'";

/// KEYS: the UserSig's `issued:` key. ARGV: the invites' key prefix. 1 if
/// its invite was revoked.
const ISSUED_REVOKED: &str = r"
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
if redis.call('HGET', ARGV[1] .. code, 'revoked') == '1' then return 1 end
return 0";

/// A room as the hash holds it: `n:{number}` or `s:{string}`.
fn room_field(room: &RoomId) -> String {
    match room {
        RoomId::Num(n) => format!("n:{n}"),
        RoomId::Str(s) => format!("s:{s}"),
    }
}

fn parse_room(v: &str) -> Option<RoomId> {
    match v.split_once(':')? {
        ("n", n) => n.parse().ok().and_then(|n| RoomId::num(n).ok()),
        ("s", s) => RoomId::str(s).ok(),
        _ => None,
    }
}

/// An invite's hash read back (`None` if it is gone or unreadable).
fn parse_record(h: &HashMap<String, String>) -> Option<InviteRecord> {
    let num = |k: &str| h.get(k)?.parse::<u64>().ok();
    Some(InviteRecord {
        app: SdkAppId(h.get("app")?.parse().ok()?),
        room: parse_room(h.get("room")?)?,
        created_at: num("created")?,
        expires_at: num("expires")?,
        revoked: h.get("revoked").is_some_and(|v| v == "1"),
        redeemed: num("redeemed")?,
    })
}

impl Cluster {
    fn invite_key(&self, code: &InviteCode) -> String {
        self.key(&format!("invite:{code}"))
    }

    /// Stores a new invite under a fresh code.
    pub async fn create_invite(
        &self,
        record: InviteRecord,
        now: u64,
    ) -> Result<Result<CreatedInvite, InviteError>, ClusterError> {
        let script = redis::Script::new(CREATE);
        let mut c = self.redis.clone();
        // A code already in use (one in 2^50) is drawn again.
        for _ in 0..4 {
            let code = InviteCode::from_bits(rand::random::<u64>());
            let made: i64 = script
                .key(self.invite_key(&code))
                .key(self.key(&format!("invites:{}", record.app.0)))
                .arg(now)
                .arg(MAX_INVITES_PER_APP)
                .arg(code.to_string())
                .arg(record.kept_until())
                .arg("app")
                .arg(record.app.0)
                .arg("room")
                .arg(room_field(&record.room))
                .arg("created")
                .arg(record.created_at)
                .arg("expires")
                .arg(record.expires_at)
                .arg("revoked")
                .arg("0")
                .arg("redeemed")
                .arg(0)
                .invoke_async(&mut c)
                .await?;
            match made {
                1 => {
                    info!(app = %record.app, room = %record.room, %code, expires_at = record.expires_at, "invite created");
                    return Ok(Ok(record.created(&code)));
                }
                -1 => return Ok(Err(InviteError::TooMany)),
                _ => continue,
            }
        }
        Err(ClusterError::Rpc("no free invite code was drawn".into()))
    }

    /// Revokes `app`'s invite `code`; whether the app had it.
    pub async fn revoke_invite(
        &self,
        app: SdkAppId,
        code: &InviteCode,
    ) -> Result<bool, ClusterError> {
        let mut c = self.redis.clone();
        let done: i64 = redis::Script::new(REVOKE)
            .key(self.invite_key(code))
            .arg(app.0)
            .invoke_async(&mut c)
            .await?;
        if done == 1 {
            info!(%app, %code, "invite revoked");
        }
        Ok(done == 1)
    }

    /// Invite `code`, if it is kept.
    pub async fn invite(&self, code: &InviteCode) -> Result<Option<InviteRecord>, ClusterError> {
        let mut c = self.redis.clone();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.invite_key(code))
            .query_async(&mut c)
            .await?;
        Ok(parse_record(&h))
    }

    /// `app`'s invites that are kept at `now`.
    pub async fn invites_of(
        &self,
        app: SdkAppId,
        now: u64,
    ) -> Result<Vec<(InviteCode, InviteRecord)>, ClusterError> {
        let mut c = self.redis.clone();
        let codes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key(&format!("invites:{}", app.0)))
            .arg(now)
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        let codes: Vec<InviteCode> = codes.iter().filter_map(|c| c.parse().ok()).collect();
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for code in &codes {
            pipe.cmd("HGETALL").arg(self.invite_key(code));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        Ok(codes
            .into_iter()
            .zip(hashes)
            .filter_map(|(code, h)| Some((code, parse_record(&h)?)))
            .filter(|(_, r)| r.app == app)
            .collect())
    }

    /// Counts a UserSig (`TLS.sig` `tls_sig`) given through `code`, if the
    /// invite may still give one; remembers where it came from until
    /// `kept_until`.
    pub async fn take_invite(
        &self,
        code: &InviteCode,
        tls_sig: &str,
        now: u64,
        kept_until: u64,
    ) -> Result<Result<(), InviteError>, ClusterError> {
        let mut c = self.redis.clone();
        let answer: String = redis::Script::new(TAKE)
            .key(self.invite_key(code))
            .key(self.key(&format!("issued:{tls_sig}")))
            .arg(now)
            .arg(MAX_REDEEMS_PER_INVITE)
            .arg(code.to_string())
            .arg(kept_until)
            .invoke_async(&mut c)
            .await?;
        Ok(match answer.as_str() {
            "OK" => Ok(()),
            "Revoked" => Err(InviteError::Revoked),
            "UsedUp" => Err(InviteError::UsedUp),
            a => match a.strip_prefix("Expired:").and_then(|t| t.parse().ok()) {
                Some(at) => Err(InviteError::Expired(at)),
                None => Err(InviteError::NotFound),
            },
        })
    }

    /// Whether a UserSig whose `TLS.sig` is `tls_sig` came from an invite
    /// that was revoked since.
    pub async fn issued_revoked(&self, tls_sig: &str) -> Result<bool, ClusterError> {
        let mut c = self.redis.clone();
        let revoked: i64 = redis::Script::new(ISSUED_REVOKED)
            .key(self.key(&format!("issued:{tls_sig}")))
            .arg(self.key("invite:"))
            .invoke_async(&mut c)
            .await?;
        Ok(revoked == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_records_read_back() {
        for room in [RoomId::Num(7), RoomId::str("a:b").unwrap()] {
            assert_eq!(parse_room(&room_field(&room)), Some(room));
        }
        assert_eq!(parse_room("x:1"), None);
        let h: HashMap<String, String> = [
            ("app", "1400000000"),
            ("room", "n:7"),
            ("created", "10"),
            ("expires", "70"),
            ("revoked", "1"),
            ("redeemed", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = parse_record(&h).unwrap();
        assert_eq!(
            (r.app, r.room, r.expires_at, r.revoked, r.redeemed),
            (SdkAppId(1400000000), RoomId::Num(7), 70, true, 3)
        );
        assert_eq!(parse_record(&HashMap::new()), None);
    }
}
