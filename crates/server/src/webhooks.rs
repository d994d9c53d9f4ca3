//! Room webhooks, as TRTC's Room & Media callbacks (event group 1): room
//! created (101) and dismissed (102), user entered (103), exited (104) and
//! switched role (105), POSTed as TRTC's callback JSON to each URL
//! configured for the room's app, signed as TRTC signs them (`Sign:
//! base64(HMAC-SHA256(key, body))`). `docs/admin-api.md`, "Webhooks".
//!
//! Delivery is at least once and in order per URL (so per room): one
//! worker per URL sends its events one after another; a failed attempt
//! (no `200` within 5 s) is retried at once, then every
//! [`WebhookPolicy::retry`] until [`WebhookPolicy::give_up`] after the
//! first attempt, as TRTC does (10 s, 1 minute). Rooms never wait for a
//! receiver: events queue (at most [`QUEUE`] per URL; past that they are
//! dropped and counted), and `kaigi_webhooks_total{reason}` counts `ok`,
//! `failed` (given up) and `dropped`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use kaigi_proto::{Role, RoomId, SdkAppId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::{Metrics, Reason};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// `kaigi_webhooks_total{reason}`.
type Outcomes = Family<Reason, Counter>;
use crate::registry::{ExitReason, MediaKind, RoomEvent, RoomEventKind};

/// Events waiting per URL before new ones are dropped.
pub const QUEUE: usize = 10_000;
/// How long one attempt may take (TRTC's 5 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an app's room events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// The app whose rooms it hears of.
    pub app: SdkAppId,
    /// `http://…` or `https://…`.
    pub url: String,
    /// The callback key (up to 32 letters and digits, as TRTC's); without
    /// one, requests carry no `Sign`.
    #[serde(default)]
    pub key: Option<String>,
}

impl std::str::FromStr for Webhook {
    type Err = String;
    /// Parses `APP=URL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (app, url) = s
            .split_once('=')
            .ok_or_else(|| format!("expected APP=URL, got {s:?}"))?;
        let app: SdkAppId = app.trim().parse().map_err(|e| format!("{e}: {app:?}"))?;
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("a webhook URL is http:// or https://, not {url:?}"));
        }
        Ok(Webhook {
            app,
            url: url.to_owned(),
            key: None,
        })
    }
}

/// When to retry and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Between attempts after the second (TRTC: 10 s).
    pub retry: Duration,
    /// After the first attempt, no more (TRTC: 1 minute).
    pub give_up: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            retry: Duration::from_secs(10),
            give_up: Duration::from_secs(60),
        }
    }
}

/// One event waiting to be sent.
struct Pending {
    event_info: Value,
    event_type: u32,
}

struct Target {
    app: SdkAppId,
    tx: mpsc::Sender<Pending>,
}

/// The server's webhooks: a queue and a worker per URL.
pub struct Webhooks {
    targets: Vec<Target>,
    unique: AtomicU64,
    outcomes: Outcomes,
}

/// TRTC's role numbers: 20 anchor, 21 audience.
fn role_number(role: Role) -> u32 {
    match role {
        Role::Anchor => 20,
        Role::Audience => 21,
    }
}

/// TRTC's exit reasons (1 left, 2 timeout, 3 removed) and Kaigi's own.
fn exit_reason(r: ExitReason) -> (u32, &'static str) {
    match r {
        ExitReason::Left => (1, "left"),
        ExitReason::Timeout => (2, "timeout"),
        ExitReason::Removed => (3, "removed"),
        ExitReason::Dismissed => (3, "dismissed"),
        ExitReason::Duplicate => (3, "duplicate"),
    }
}

/// The signature TRTC puts in `Sign`: base64 of HMAC-SHA256 of the body.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Webhooks {
    /// Starts a worker per configured URL, until `stop`.
    pub fn start(
        hooks: &[Webhook],
        policy: WebhookPolicy,
        outcomes: Outcomes,
        stop: CancellationToken,
    ) -> Self {
        if hooks.is_empty() {
            return Webhooks {
                targets: Vec::new(),
                unique: AtomicU64::new(0),
                outcomes,
            };
        }
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
        let targets = hooks
            .iter()
            .map(|h| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    h.clone(),
                    rx,
                    http.clone(),
                    policy,
                    outcomes.clone(),
                    stop.clone(),
                ));
                Target { app: h.app, tx }
            })
            .collect();
        Webhooks {
            targets,
            unique: AtomicU64::new(kaigi_proto::unix_now_ms()),
            outcomes,
        }
    }

    /// Queues `events` for their apps' URLs; never waits.
    pub fn emit(&self, events: Vec<RoomEvent>) {
        if self.targets.is_empty() {
            return;
        }
        for event in events {
            let now_ms = kaigi_proto::unix_now_ms();
            let (event_type, mut info) = self.event_info(&event, now_ms);
            if let Value::Object(m) = &mut info {
                m.insert(
                    "UniqueId".into(),
                    json!(self.unique.fetch_add(1, Ordering::Relaxed)),
                );
            }
            for t in self.targets.iter().filter(|t| t.app == event.app) {
                let pending = Pending {
                    event_info: info.clone(),
                    event_type,
                };
                if t.tx.try_send(pending).is_err() {
                    Metrics::count(&self.outcomes, "dropped");
                }
            }
        }
    }

    fn event_info(&self, event: &RoomEvent, now_ms: u64) -> (u32, Value) {
        let (room, room_type) = match &event.room {
            RoomId::Num(n) => (json!(n), 0),
            RoomId::Str(s) => (json!(s), 1),
        };
        let mut info = json!({
            "RoomId": room,
            "RoomIdType": room_type,
            "EventTs": now_ms / 1000,
            "EventMsTs": now_ms,
        });
        let m = info.as_object_mut().expect("an object");
        let event_type = match &event.kind {
            RoomEventKind::Created => 101,
            RoomEventKind::Dismissed => 102,
            RoomEventKind::Entered { user, role } => {
                m.insert("UserId".into(), json!(user.as_str()));
                m.insert("Role".into(), json!(role_number(*role)));
                m.insert("Reason".into(), json!(1));
                103
            }
            RoomEventKind::Exited { user, reason } => {
                let (trtc, kaigi) = exit_reason(*reason);
                m.insert("UserId".into(), json!(user.as_str()));
                m.insert("Reason".into(), json!(trtc));
                m.insert("KaigiReason".into(), json!(kaigi));
                104
            }
            RoomEventKind::RoleSwitched { user, role } => {
                m.insert("UserId".into(), json!(user.as_str()));
                m.insert("Role".into(), json!(role_number(*role)));
                105
            }
            RoomEventKind::Media { user, kind, on } => {
                m.insert("UserId".into(), json!(user.as_str()));
                let start = match kind {
                    MediaKind::Video => 201,
                    MediaKind::Audio => 203,
                    MediaKind::Aux => 205,
                };
                start + u32::from(!on)
            }
        };
        (event_type, info)
    }
}

/// Sends one URL's events in order until `stop`.
async fn deliver(
    hook: Webhook,
    mut rx: mpsc::Receiver<Pending>,
    http: reqwest::Client,
    policy: WebhookPolicy,
    outcomes: Outcomes,
    stop: CancellationToken,
) {
    loop {
        let p = tokio::select! {
            _ = stop.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let first = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let body = json!({
                // TRTC's groups: 1 room events (1xx), 2 media events (2xx).
                "EventGroupId": p.event_type / 100,
                "EventType": p.event_type,
                "CallbackTs": kaigi_proto::unix_now_ms(),
                "EventInfo": p.event_info,
            })
            .to_string();
            let mut req = http
                .post(&hook.url)
                .header("Content-Type", "application/json")
                .header("SdkAppId", hook.app.to_string());
            if let Some(key) = &hook.key {
                req = req.header("Sign", sign(key, body.as_bytes()));
            }
            let ok = matches!(req.body(body).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
            if ok {
                Metrics::count(&outcomes, "ok");
                debug!(url = %hook.url, event = p.event_type, attempt, "webhook delivered");
                break;
            }
            // Again at once, then every `retry`, until `give_up`.
            let wait = if attempt == 1 {
                Duration::ZERO
            } else {
                policy.retry
            };
            if first.elapsed() + wait > policy.give_up {
                Metrics::count(&outcomes, "failed");
                warn!(url = %hook.url, event = p.event_type, attempt, "webhook given up");
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_signatures_are_trtcs() {
        let w: Webhook = "1400000000=http://192.0.2.1:8080/trtc".parse().unwrap();
        assert_eq!(w.app, SdkAppId(1400000000));
        assert_eq!(w.url, "http://192.0.2.1:8080/trtc");
        for bad in ["http://x", "1=ftp://x", "x=http://y"] {
            assert!(bad.parse::<Webhook>().is_err(), "{bad}");
        }
        // base64(HMAC-SHA256("key", "body")), as TRTC's samples compute it.
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
