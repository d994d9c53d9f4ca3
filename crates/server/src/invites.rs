//! Invites: codes that let their holders obtain a UserSig for one room until
//! the invite expires, without the app's key (`docs/protocol.md`, "Invites").
//!
//! The admin API makes, lists and revokes them (`CreateInvite`,
//! `ListInvites`, `RevokeInvite`); anyone may look one up
//! (`GET /invite/{code}`) or redeem it (`POST /invite/{code}`). A redeemed
//! UserSig carries a room grant (TRTC's privateMapKey layout), so it enters
//! only that room; the server remembers which invite gave it, so a revoked
//! invite's UserSigs stop admitting anyone.
//!
//! A single node keeps its invites in memory (they end with the process);
//! a node in a service keeps them in the service's Redis
//! ([`crate::cluster`]), so an invite made at one node is looked up,
//! redeemed and revoked at any. The functions at the end of this module
//! ([`create`], [`revoke`], [`list`], [`preview_code`], [`redeem_code`],
//! [`revoked`]) choose the store.

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
    /// The service's Redis (or the room's node) could not be asked.
    #[error("the service cannot look up invites now: {0}")]
    Unavailable(String),
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
            InviteError::Unavailable(_) => ("SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
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

/// One invite, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// The app whose room it opens.
    pub app: SdkAppId,
    /// The room.
    pub room: RoomId,
    /// When it was made (Unix seconds).
    pub created_at: u64,
    /// When it stops giving UserSigs (Unix seconds).
    pub expires_at: u64,
    /// Whether the host revoked it.
    pub revoked: bool,
    /// How many UserSigs it gave.
    pub redeemed: u64,
}

impl InviteRecord {
    /// A new invite to `room` of `app` lasting `expire_secs` from `now`.
    pub fn new(app: SdkAppId, room: RoomId, expire_secs: u64, now: u64) -> Self {
        InviteRecord {
            app,
            room,
            created_at: now,
            expires_at: now.saturating_add(expire_secs),
            revoked: false,
            redeemed: 0,
        }
    }

    /// Until when it is kept (reported as expired rather than unknown).
    pub fn kept_until(&self) -> u64 {
        self.expires_at.saturating_add(EXPIRED_KEPT_SECS)
    }

    /// Whether it may give a UserSig at `now`, and if not why.
    pub fn usable(&self, now: u64) -> Result<(), InviteError> {
        if self.revoked {
            return Err(InviteError::Revoked);
        }
        if now > self.expires_at {
            return Err(InviteError::Expired(self.expires_at));
        }
        if self.redeemed >= MAX_REDEEMS_PER_INVITE {
            return Err(InviteError::UsedUp);
        }
        Ok(())
    }

    /// As `ListInvites` shows it.
    pub fn listed(&self, code: &InviteCode) -> ListedInvite {
        ListedInvite {
            code: code.clone(),
            room: (&self.room).into(),
            create_time: self.created_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
            redeemed: self.redeemed,
        }
    }

    /// As `CreateInvite` answers it.
    pub fn created(&self, code: &InviteCode) -> CreatedInvite {
        CreatedInvite {
            code: code.clone(),
            room: (&self.room).into(),
            expires_at: self.expires_at,
        }
    }

    /// As `GET /invite/{code}` answers it.
    pub fn preview(&self, code: &InviteCode) -> InvitePreview {
        InvitePreview {
            code: code.clone(),
            sdk_app_id: self.app.0,
            room: RoomRef::from(&self.room),
            expires_at: self.expires_at,
        }
    }
}

#[derive(Default)]
struct Inner {
    invites: HashMap<InviteCode, InviteRecord>,
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
        self.invites.retain(|_, i| now <= i.kept_until());
        if self.invites.len() != before {
            let invites = &self.invites;
            self.issued.retain(|_, code| invites.contains_key(code));
        }
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
        let record = InviteRecord::new(app, room, expire_secs, now);
        info!(%app, room = %record.room, %code, expires_at = record.expires_at, "invite created");
        let created = record.created(&code);
        inner.invites.insert(code, record);
        Ok(created)
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
            .map(|(code, i)| i.listed(code))
            .collect();
        sort_listed(&mut v);
        v
    }

    /// Invite `code`, if it is kept.
    pub fn get(&self, code: &InviteCode, now: u64) -> Option<InviteRecord> {
        let mut inner = self.inner.lock();
        inner.purge(now);
        inner.invites.get(code).cloned()
    }

    /// Counts a UserSig (`TLS.sig` `tls_sig`) given through `code`, if
    /// the invite may still give one.
    pub fn take(&self, code: &InviteCode, tls_sig: &str, now: u64) -> Result<(), InviteError> {
        let mut inner = self.inner.lock();
        inner.purge(now);
        let invite = inner.invites.get_mut(code).ok_or(InviteError::NotFound)?;
        invite.usable(now)?;
        invite.redeemed += 1;
        inner.issued.insert(tls_sig.to_owned(), code.clone());
        Ok(())
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

/// Sorts `ListInvites`' answer: oldest first.
pub fn sort_listed(v: &mut [ListedInvite]) {
    v.sort_by(|a, b| (a.create_time, &a.code).cmp(&(b.create_time, &b.code)));
}

fn unavailable(e: crate::cluster::ClusterError) -> InviteError {
    InviteError::Unavailable(e.to_string())
}

/// Makes an invite (`CreateInvite`), in the service's store.
pub async fn create(
    shared: &Shared,
    app: SdkAppId,
    room: RoomId,
    expire_secs: u64,
) -> Result<CreatedInvite, InviteError> {
    let now = unix_now();
    match shared.cluster.get() {
        Some(c) => c
            .create_invite(InviteRecord::new(app, room, expire_secs, now), now)
            .await
            .map_err(unavailable)?,
        None => shared.invites.create(app, room, expire_secs, now),
    }
}

/// Revokes an invite (`RevokeInvite`); whether `app` had it.
pub async fn revoke(
    shared: &Shared,
    app: SdkAppId,
    code: &InviteCode,
) -> Result<bool, InviteError> {
    match shared.cluster.get() {
        Some(c) => c.revoke_invite(app, code).await.map_err(unavailable),
        None => Ok(shared.invites.revoke(app, code, unix_now())),
    }
}

/// `app`'s invites (`ListInvites`), of `room` if given, oldest first.
pub async fn list(
    shared: &Shared,
    app: SdkAppId,
    room: Option<&RoomId>,
) -> Result<Vec<ListedInvite>, InviteError> {
    let now = unix_now();
    match shared.cluster.get() {
        Some(c) => {
            let mut v: Vec<ListedInvite> = c
                .invites_of(app, now)
                .await
                .map_err(unavailable)?
                .into_iter()
                .filter(|(_, i)| room.is_none_or(|r| *r == i.room))
                .map(|(code, i)| i.listed(&code))
                .collect();
            sort_listed(&mut v);
            Ok(v)
        }
        None => Ok(shared.invites.list(app, room, now)),
    }
}

async fn get(shared: &Shared, code: &InviteCode, now: u64) -> Result<InviteRecord, InviteError> {
    let found = match shared.cluster.get() {
        Some(c) => c.invite(code).await.map_err(unavailable)?,
        None => shared.invites.get(code, now),
    };
    found.ok_or(InviteError::NotFound)
}

/// What `code` is for.
pub async fn preview_code(
    shared: &Shared,
    code: &InviteCode,
) -> Result<InvitePreview, InviteError> {
    let now = unix_now();
    let invite = get(shared, code, now).await?;
    invite.usable(now)?;
    Ok(invite.preview(code))
}

/// Gives `user` a UserSig that enters `code`'s room until the invite
/// expires, signed with the app's key, unless someone by that name is in
/// the room (asked of the room's node).
pub async fn redeem_code(
    shared: &Shared,
    code: &InviteCode,
    user: &str,
) -> Result<RedeemedInvite, InviteError> {
    let user = UserId::new(user.trim()).map_err(|e| InviteError::Invalid(e.to_string()))?;
    if user.as_str() == ADMIN_IDENTIFIER {
        return Err(InviteError::Invalid(format!(
            "{ADMIN_IDENTIFIER} is the admin identity and cannot join rooms"
        )));
    }
    let now = unix_now();
    let invite = get(shared, code, now).await?;
    invite.usable(now)?;
    // An invite must not let its holder push someone out of the room by
    // taking their name (TRTC's duplicate rule: the newest wins).
    let users = crate::admin::room_users(shared, invite.app, &invite.room)
        .await
        .map_err(|e| InviteError::Unavailable(e.message))?;
    if users.contains(&user) {
        return Err(InviteError::NameTaken(user.to_string()));
    }
    let key = shared
        .app_keys
        .get(&invite.app)
        .ok_or(InviteError::NotFound)?;
    let expire = invite.expires_at.saturating_sub(now).max(1);
    let user_sig = grant::generate_private_map_key(
        invite.app,
        key,
        user.as_str(),
        &invite.room,
        Privileges::ALL,
        expire,
        now,
    );
    let tls_sig = kaigi_proto::usersig::decode(&user_sig)
        .map(|s| s.sig)
        .map_err(|e| InviteError::Invalid(e.to_string()))?;
    match shared.cluster.get() {
        Some(c) => c
            .take_invite(code, &tls_sig, now, invite.kept_until())
            .await
            .map_err(unavailable)??,
        None => shared.invites.take(code, &tls_sig, now)?,
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
pub async fn revoked(shared: &Shared, tls_sig: &str) -> Result<bool, InviteError> {
    match shared.cluster.get() {
        Some(c) => c.issued_revoked(tls_sig).await.map_err(unavailable),
        None => Ok(shared.invites.is_revoked(tls_sig)),
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
    Ok(Json(preview_code(&shared, &code).await?))
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
    Ok(Json(redeem_code(&shared, &code, &req.user_id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: SdkAppId = SdkAppId(1400000000);

    #[test]
    fn an_invite_counts_its_sigs_until_revoked_or_expired() {
        let invites = Invites::default();
        let room = RoomId::Num(7);
        let code = invites.create(APP, room.clone(), 60, 1_000).unwrap().code;
        let got = invites.get(&code, 1_001).unwrap();
        assert_eq!((got.room.clone(), got.expires_at), (room.clone(), 1_060));
        assert_eq!(got.usable(1_001), Ok(()));
        assert_eq!(got.preview(&code).expires_at, 1_060);
        invites.take(&code, "sig-1", 1_010).unwrap();
        assert_eq!(invites.get(&code, 1_010).unwrap().redeemed, 1);
        assert!(!invites.is_revoked("sig-1"));
        assert!(!invites.revoke(SdkAppId(1), &code, 1_020), "another app's");
        assert!(invites.revoke(APP, &code, 1_020));
        assert!(invites.is_revoked("sig-1"));
        assert!(!invites.is_revoked("sig-2"), "not given by an invite");
        assert_eq!(
            invites.get(&code, 1_021).unwrap().usable(1_021),
            Err(InviteError::Revoked)
        );
        assert_eq!(
            invites.take(&code, "sig-2", 1_021),
            Err(InviteError::Revoked)
        );
        // An expired one says so, then is gone with its UserSigs.
        let other = invites.create(APP, room, 60, 1_000).unwrap().code;
        assert_eq!(
            invites.get(&other, 1_061).unwrap().usable(1_061),
            Err(InviteError::Expired(1_060))
        );
        assert_eq!(invites.get(&other, 1_061 + EXPIRED_KEPT_SECS), None);
        assert!(invites
            .list(APP, None, 1_061 + EXPIRED_KEPT_SECS)
            .is_empty());
        assert!(!invites.is_revoked("sig-1"), "forgotten with its invite");
    }

    #[test]
    fn an_invite_gives_at_most_its_limit() {
        let invites = Invites::default();
        let code = invites.create(APP, RoomId::Num(1), 60, 0).unwrap().code;
        for i in 0..MAX_REDEEMS_PER_INVITE {
            invites.take(&code, &format!("sig-{i}"), 1).unwrap();
        }
        assert_eq!(invites.take(&code, "one-more", 1), Err(InviteError::UsedUp));
        assert_eq!(
            invites.get(&code, 1).unwrap().redeemed,
            MAX_REDEEMS_PER_INVITE
        );
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
