//! Invites: codes that let their holders obtain a UserSig for one room until
//! the invite expires, without the app's key (`docs/protocol.md`, "Invites").
//!
//! The admin API makes, lists and revokes them (`CreateInvite`,
//! `ListInvites`, `RevokeInvite`); anyone may look one up
//! (`GET /invite/{code}`) or redeem it (`POST /invite/{code}`). A redeemed
//! UserSig carries a room grant (TRTC's privateMapKey layout), so it enters
//! only that room; the server remembers which invite gave it, so a revoked
//! invite's UserSigs stop admitting anyone. Invites live in the server's
//! memory: they end with the process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kaigi_proto::admin::{CreatedInvite, ListedInvite};
use kaigi_proto::grant::{self, Privileges};
use kaigi_proto::invite::{
    InviteCode, InviteErrorBody, InviteErrorDetail, InvitePreview, RedeemRequest, RedeemedInvite,
};
use kaigi_proto::signal::RoomRef;
use kaigi_proto::{RoomId, SdkAppId, UserId, ADMIN_IDENTIFIER};
use parking_lot::Mutex;
use tracing::info;

use crate::config::RateLimit;
use crate::state::{unix_now, Shared};

/// At most this many invites per app (live, revoked or recently expired).
pub const MAX_INVITES_PER_APP: usize = 1000;
/// At most this many UserSigs per invite.
pub const MAX_REDEEMS_PER_INVITE: u64 = 1000;
/// An expired invite is still reported as expired (not unknown) this long.
pub const EXPIRED_KEPT_SECS: u64 = 24 * 3600;
/// How often one address may look up or redeem invites: 5 a second, 20 at
/// once (50-bit codes cannot be guessed at that pace).
pub const LOOKUP_RATE: RateLimit = RateLimit {
    per_sec: 5,
    burst: 20,
};
/// The most addresses whose lookup rate is tracked at once.
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Why an invite could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// No such code.
    #[error("there is no such invite")]
    NotFound,
    /// It expired.
    #[error("the invite expired at unix time {0}")]
    Expired(u64),
    /// The host revoked it.
    #[error("the invite was revoked")]
    Revoked,
    /// Someone by that name is in the room.
    #[error("someone named {0} is already in the room; choose another name")]
    NameTaken(String),
    /// It gave out as many UserSigs as it may.
    #[error("the invite was used {MAX_REDEEMS_PER_INVITE} times, its limit")]
    UsedUp,
    /// A bad name or code.
    #[error("{0}")]
    Invalid(String),
    /// Too many lookups from this address.
    #[error("too many invite lookups; try again in a second")]
    RateLimited,
    /// The app has as many invites as it may.
    #[error("the app has {MAX_INVITES_PER_APP} invites; revoke some or let them expire")]
    TooMany,
}

impl InviteError {
    /// The wire code and HTTP status.
    pub fn code(&self) -> (&'static str, StatusCode) {
        match self {
            InviteError::NotFound => ("INVITE_NOT_FOUND", StatusCode::NOT_FOUND),
            InviteError::Expired(_) => ("INVITE_EXPIRED", StatusCode::GONE),
            InviteError::Revoked => ("INVITE_REVOKED", StatusCode::GONE),
            InviteError::NameTaken(_) => ("NAME_TAKEN", StatusCode::CONFLICT),
            InviteError::UsedUp => ("INVITE_USED_UP", StatusCode::GONE),
            InviteError::Invalid(_) => ("INVALID_PARAMETER", StatusCode::BAD_REQUEST),
            InviteError::RateLimited => ("RATE_LIMITED", StatusCode::TOO_MANY_REQUESTS),
            InviteError::TooMany => ("LIMIT_EXCEEDED", StatusCode::CONFLICT),
        }
    }
}

impl IntoResponse for InviteError {
    fn into_response(self) -> Response {
        let (code, status) = self.code();
        let body = InviteErrorBody {
            error: InviteErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

#[derive(Debug, Clone)]
struct Invite {
    app: SdkAppId,
    room: RoomId,
    created_at: u64,
    expires_at: u64,
    revoked: bool,
    redeemed: u64,
}

#[derive(Default)]
struct Inner {
    invites: HashMap<InviteCode, Invite>,
    /// `TLS.sig` of every UserSig given out → the invite it came from.
    issued: HashMap<String, InviteCode>,
    /// Lookup buckets per address.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// The server's invites.
#[derive(Default)]
pub struct Invites {
    inner: Mutex<Inner>,
}

impl Inner {
    /// Forgets invites (and their UserSigs) long expired.
    fn purge(&mut self, now: u64) {
        let before = self.invites.len();
        self.invites
            .retain(|_, i| now <= i.expires_at.saturating_add(EXPIRED_KEPT_SECS));
        if self.invites.len() != before {
            let invites = &self.invites;
            self.issued.retain(|_, code| invites.contains_key(code));
        }
    }

    fn usable(&self, code: &InviteCode, now: u64) -> Result<&Invite, InviteError> {
        let invite = self.invites.get(code).ok_or(InviteError::NotFound)?;
        if invite.revoked {
            return Err(InviteError::Revoked);
        }
        if now > invite.expires_at {
            return Err(InviteError::Expired(invite.expires_at));
        }
        Ok(invite)
    }
}

impl Invites {
    /// Makes an invite to `room` of `app` lasting `expire_secs` from `now`.
    pub fn create(
        &self,
        app: SdkAppId,
        room: RoomId,
        expire_secs: u64,
        now: u64,
    ) -> Result<CreatedInvite, InviteError> {
        let mut inner = self.inner.lock();
        inner.purge(now);
        if inner.invites.values().filter(|i| i.app == app).count() >= MAX_INVITES_PER_APP {
            return Err(InviteError::TooMany);
        }
        let code = loop {
            let code = InviteCode::from_bits(rand::random::<u64>());
            if !inner.invites.contains_key(&code) {
                break code;
            }
        };
        let expires_at = now.saturating_add(expire_secs);
        inner.invites.insert(
            code.clone(),
            Invite {
                app,
                room: room.clone(),
                created_at: now,
                expires_at,
                revoked: false,
                redeemed: 0,
            },
        );
        info!(%app, %room, %code, expires_at, "invite created");
        Ok(CreatedInvite {
            code,
            room: (&room).into(),
            expires_at,
        })
    }

    /// Revokes `app`'s invite `code`: it gives out no more UserSigs, and
    /// those it gave admit no one. Returns whether there was one.
    pub fn revoke(&self, app: SdkAppId, code: &InviteCode, now: u64) -> bool {
        let mut inner = self.inner.lock();
        inner.purge(now);
        match inner.invites.get_mut(code) {
            Some(i) if i.app == app => {
                i.revoked = true;
                info!(%app, %code, "invite revoked");
                true
            }
            _ => false,
        }
    }

    /// `app`'s invites (of `room` if given), oldest first.
    pub fn list(&self, app: SdkAppId, room: Option<&RoomId>, now: u64) -> Vec<ListedInvite> {
        let mut inner = self.inner.lock();
        inner.purge(now);
        let mut v: Vec<ListedInvite> = inner
            .invites
            .iter()
            .filter(|(_, i)| i.app == app && room.is_none_or(|r| *r == i.room))
            .map(|(code, i)| ListedInvite {
                code: code.clone(),
                room: (&i.room).into(),
                create_time: i.created_at,
                expires_at: i.expires_at,
                revoked: i.revoked,
                redeemed: i.redeemed,
            })
            .collect();
        v.sort_by(|a, b| (a.create_time, &a.code).cmp(&(b.create_time, &b.code)));
        v
    }

    /// What `code` is for.
    pub fn preview(&self, code: &InviteCode, now: u64) -> Result<InvitePreview, InviteError> {
        let mut inner = self.inner.lock();
        inner.purge(now);
        let i = inner.usable(code, now)?;
        Ok(InvitePreview {
            code: code.clone(),
            sdk_app_id: i.app.0,
            room: RoomRef::from(&i.room),
            expires_at: i.expires_at,
        })
    }

    /// Gives `user` a UserSig that enters `code`'s room until it expires,
    /// signed with the app's `key` (looked up by `key_of`). `in_room` says
    /// whether someone by that name is in the room now.
    pub fn redeem(
        &self,
        code: &InviteCode,
        user: &str,
        now: u64,
        key_of: impl Fn(SdkAppId) -> Option<String>,
        in_room: impl Fn(SdkAppId, &RoomId, &UserId) -> bool,
    ) -> Result<RedeemedInvite, InviteError> {
        let user = UserId::new(user.trim()).map_err(|e| InviteError::Invalid(e.to_string()))?;
        if user.as_str() == ADMIN_IDENTIFIER {
            return Err(InviteError::Invalid(format!(
                "{ADMIN_IDENTIFIER} is the admin identity and cannot join rooms"
            )));
        }
        let mut inner = self.inner.lock();
        inner.purge(now);
        let invite = inner.usable(code, now)?.clone();
        if invite.redeemed >= MAX_REDEEMS_PER_INVITE {
            return Err(InviteError::UsedUp);
        }
        // An invite must not let its holder push someone out of the room by
        // taking their name (TRTC's duplicate rule: the newest wins).
        if in_room(invite.app, &invite.room, &user) {
            return Err(InviteError::NameTaken(user.to_string()));
        }
        let key = key_of(invite.app).ok_or(InviteError::NotFound)?;
        let expire = invite.expires_at.saturating_sub(now).max(1);
        let user_sig = grant::generate_private_map_key(
            invite.app,
            &key,
            user.as_str(),
            &invite.room,
            Privileges::ALL,
            expire,
            now,
        );
        let tls_sig = kaigi_proto::usersig::decode(&user_sig)
            .map(|s| s.sig)
            .map_err(|e| InviteError::Invalid(e.to_string()))?;
        inner.issued.insert(tls_sig, code.clone());
        if let Some(i) = inner.invites.get_mut(code) {
            i.redeemed += 1;
        }
        info!(app = %invite.app, room = %invite.room, %user, %code, "invite redeemed");
        Ok(RedeemedInvite {
            sdk_app_id: invite.app.0,
            user_id: user.to_string(),
            user_sig,
            room: RoomRef::from(&invite.room),
            expires_at: now.saturating_add(expire),
        })
    }

    /// Whether a UserSig whose `TLS.sig` is `tls_sig` came from an invite
    /// that was revoked since.
    pub fn is_revoked(&self, tls_sig: &str) -> bool {
        let inner = self.inner.lock();
        inner
            .issued
            .get(tls_sig)
            .and_then(|code| inner.invites.get(code))
            .is_some_and(|i| i.revoked)
    }

    /// Takes one lookup from `ip`'s bucket ([`LOOKUP_RATE`]).
    pub fn allow_lookup(&self, ip: IpAddr) -> bool {
        let mut inner = self.inner.lock();
        if inner.buckets.len() >= MAX_TRACKED_ADDRESSES && !inner.buckets.contains_key(&ip) {
            // Bounded: forget buckets that have filled up again.
            let full = Instant::now();
            inner.buckets.retain(|_, (_, last)| {
                full.duration_since(*last).as_secs_f64() * f64::from(LOOKUP_RATE.per_sec)
                    < f64::from(LOOKUP_RATE.burst)
            });
            if inner.buckets.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let now = Instant::now();
        let (tokens, last) = inner
            .buckets
            .entry(ip)
            .or_insert((f64::from(LOOKUP_RATE.burst), now));
        let refill = now.duration_since(*last).as_secs_f64() * f64::from(LOOKUP_RATE.per_sec);
        *tokens = (*tokens + refill).min(f64::from(LOOKUP_RATE.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn parse_code(code: &str) -> Result<InviteCode, InviteError> {
    code.parse()
        .map_err(|e: kaigi_proto::invite::InviteParseError| InviteError::Invalid(e.to_string()))
}

/// `GET /invite/{code}`: what the invite is for.
pub async fn preview(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
) -> Result<Json<InvitePreview>, InviteError> {
    if !shared.invites.allow_lookup(peer.ip()) {
        return Err(InviteError::RateLimited);
    }
    let code = parse_code(&code)?;
    Ok(Json(shared.invites.preview(&code, unix_now())?))
}

/// `POST /invite/{code}` with `{"userId":…}`: a UserSig for that room.
pub async fn redeem(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RedeemedInvite>, InviteError> {
    if !shared.invites.allow_lookup(peer.ip()) {
        return Err(InviteError::RateLimited);
    }
    let code = parse_code(&code)?;
    let req: RedeemRequest = serde_json::from_slice(&body)
        .map_err(|e| InviteError::Invalid(format!("the body must be {{\"userId\":\"…\"}}: {e}")))?;
    let redeemed = shared.invites.redeem(
        &code,
        &req.user_id,
        unix_now(),
        |app| shared.app_keys.get(&app).cloned(),
        |app, room, user| {
            shared.read(|reg| {
                reg.room(app, room)
                    .is_some_and(|r| r.participants().iter().any(|(u, _)| *u == user))
            })
        },
    )?;
    Ok(Json(redeemed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: SdkAppId = SdkAppId(1400000000);

    fn key_of(app: SdkAppId) -> Option<String> {
        (app == APP).then(|| "secret".to_owned())
    }

    #[test]
    fn an_invite_gives_room_bound_sigs_until_revoked_or_expired() {
        let invites = Invites::default();
        let room = RoomId::Num(7);
        let made = invites.create(APP, room.clone(), 60, 1_000).unwrap();
        let code = made.code;
        assert_eq!(invites.preview(&code, 1_001).unwrap().expires_at, 1_060);
        let got = invites
            .redeem(&code, "bob", 1_010, key_of, |_, _, _| false)
            .unwrap();
        assert_eq!(got.expires_at, 1_060);
        let claims =
            kaigi_proto::usersig::verify(&got.user_sig, APP, "secret", "bob", 1_011).unwrap();
        let g = grant::from_claims(&claims).unwrap();
        assert!(g.admits(APP, "bob", &room, 1_060));
        assert!(!g.admits(APP, "bob", &RoomId::Num(8), 1_011));
        assert_eq!(
            invites.redeem(&code, "carol", 1_010, key_of, |_, _, u| u.as_str()
                == "carol"),
            Err(InviteError::NameTaken("carol".into()))
        );
        assert!(matches!(
            invites.redeem(&code, "administrator", 1_010, key_of, |_, _, _| false),
            Err(InviteError::Invalid(_))
        ));
        let tls_sig = kaigi_proto::usersig::decode(&got.user_sig).unwrap().sig;
        assert!(!invites.is_revoked(&tls_sig));
        assert!(invites.revoke(APP, &code, 1_020));
        assert!(invites.is_revoked(&tls_sig));
        assert_eq!(invites.preview(&code, 1_021), Err(InviteError::Revoked));
        assert_eq!(
            invites.redeem(&code, "dave", 1_021, key_of, |_, _, _| false),
            Err(InviteError::Revoked)
        );
        // Another app cannot revoke it; an expired one says so, then is gone.
        let other = invites.create(APP, room, 60, 1_000).unwrap().code;
        assert!(!invites.revoke(SdkAppId(1), &other, 1_001));
        assert_eq!(
            invites.preview(&other, 1_061),
            Err(InviteError::Expired(1_060))
        );
        assert_eq!(
            invites.preview(&other, 1_061 + EXPIRED_KEPT_SECS),
            Err(InviteError::NotFound)
        );
        assert!(invites
            .list(APP, None, 1_061 + EXPIRED_KEPT_SECS)
            .is_empty());
        assert!(!invites.is_revoked(&tls_sig), "forgotten with its invite");
    }

    #[test]
    fn invites_are_bounded_per_app() {
        let invites = Invites::default();
        for _ in 0..MAX_INVITES_PER_APP {
            invites.create(APP, RoomId::Num(1), 60, 0).unwrap();
        }
        assert_eq!(
            invites.create(APP, RoomId::Num(1), 60, 0),
            Err(InviteError::TooMany)
        );
        assert!(invites.create(SdkAppId(2), RoomId::Num(1), 60, 0).is_ok());
        assert_eq!(invites.list(APP, None, 0).len(), MAX_INVITES_PER_APP);
        assert_eq!(invites.list(APP, Some(&RoomId::Num(2)), 0).len(), 0);
    }

    #[test]
    fn lookups_are_rate_limited_per_address() {
        let invites = Invites::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..100).filter(|_| invites.allow_lookup(a)).count();
        assert!((20..=22).contains(&allowed), "{allowed}");
        assert!(invites.allow_lookup(b));
    }
}
