//! The client's session as a state machine without I/O, shaped like the
//! server's registry: it takes the server's messages, the app's commands,
//! the outcomes of what it asked for (an answer made, a rejoin attempt's
//! result, link counters) and the time; it returns what to do — messages to
//! send, events to emit, replies to commands, media actions, a rejoin to
//! attempt — and says when it next needs waking ([`Machine::poll_timeout`]).
//! `session.rs` feeds it and carries its outputs out; nothing here awaits,
//! reads a clock or touches a socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kaigi_proto::signal::{
    ClientMessage, Joined, PeerLeaveReason, ServerMessage, StreamType, VideoSize,
};
use kaigi_proto::{ErrorCode, KickReason, Role, RoomId, UserId};
use kaigi_rtc::quality::{assess, grade, LinkCounters, Quality};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use crate::error::ClientError;
use crate::events::{ClientEvent, ConnectionState};

/// The join's request id; later requests count up from it.
pub(crate) const JOIN_REQ_ID: u64 = 1;

/// How often `network-quality` is reported.
pub(crate) const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

/// Names a remote stream: whose, and which of theirs.
pub(crate) type StreamKey = (UserId, StreamType);

/// A request waiting for the server's reply.
#[derive(Debug)]
struct Waiting<T> {
    req_id: u64,
    token: Option<Token>,
    deadline: Instant,
    what: T,
}

/// The live connection's heartbeat and quality state.
#[derive(Debug)]
struct Link {
    interval: Duration,
    dead_after: Duration,
    next_ping: Instant,
    last_heard: Instant,
    next_quality: Instant,
    ping: Option<(u64, Instant)>,
    signaling_rtt: Option<f64>,
    counters: LinkCounters,
}

impl Link {
    fn new(joined: &Joined, now: Instant) -> Self {
        Link {
            interval: Duration::from_millis(joined.heartbeat_interval_ms.max(100)),
            dead_after: Duration::from_millis(joined.heartbeat_timeout_ms.max(1000)),
            // The first ping goes out at once: it measures the round trip.
            next_ping: now,
            last_heard: now,
            next_quality: now + QUALITY_INTERVAL,
            ping: None,
            signaling_rtt: None,
            counters: LinkCounters::default(),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Connected(Link),
    /// `leave` sent; waiting for `left` until the deadline.
    Leaving {
        req_id: u64,
        token: Option<Token>,
        deadline: Instant,
    },
    /// The connection dropped: waiting to attempt (or attempting) a rejoin.
    Reconnecting {
        started: Instant,
        backoff: Duration,
        attempt: u32,
        /// When the next attempt starts; `None` while one is under way.
        next_attempt: Option<Instant>,
    },
    Ended,
}

/// The session state machine. See the module doc.
#[derive(Debug)]
pub(crate) struct Machine {
    settings: Settings,
    room: RoomId,
    session_id: String,
    status: Status,
    phase: Phase,
    req_id: u64,
    /// Publishes waiting for `published`, by stream type.
    publish: BTreeMap<StreamType, Waiting<()>>,
    unpublish: BTreeMap<StreamType, Waiting<()>>,
    requests: Vec<Waiting<Request>>,
    /// What is published (asked again after a rejoin).
    published: BTreeMap<StreamType, Publishing>,
    /// Each remote stream's (audio muted, video muted).
    mutes: HashMap<StreamKey, (bool, bool)>,
    /// Streams whose video the server paused for this client.
    paused: HashSet<StreamKey>,
    /// Streams subscribed by request (asked again after a rejoin).
    subscribed: HashMap<StreamKey, (bool, bool)>,
    /// The sizes videos are shown at (told again after a rejoin).
    video_sizes: HashMap<StreamKey, VideoSize>,
    rng: StdRng,
    out: Vec<Output>,
}

impl Machine {
    /// A session just joined (`joined`) to `room`; `seed` drives the
    /// reconnect jitter.
    pub fn new(settings: Settings, room: RoomId, joined: &Joined, now: Instant, seed: u64) -> Self {
        Machine {
            settings,
            status: Status {
                state: ConnectionState::Connected,
                room: Some((room.clone(), joined.role)),
                peers: peers_of(joined),
            },
            room,
            session_id: joined.session_id.clone(),
            phase: Phase::Connected(Link::new(joined, now)),
            req_id: JOIN_REQ_ID,
            publish: BTreeMap::new(),
            unpublish: BTreeMap::new(),
            requests: Vec::new(),
            published: BTreeMap::new(),
            mutes: HashMap::new(),
            paused: HashSet::new(),
            subscribed: HashMap::new(),
            video_sizes: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            out: Vec::new(),
        }
    }

    /// The status now.
    #[cfg(test)]
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// When the machine next needs [`Machine::timeout`]; `None`: only on
    /// an input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self
            .publish
            .values()
            .map(|w| w.deadline)
            .chain(self.unpublish.values().map(|w| w.deadline))
            .chain(self.requests.iter().map(|w| w.deadline));
        match &self.phase {
            Phase::Connected(l) => [l.next_ping, l.last_heard + l.dead_after, l.next_quality]
                .into_iter()
                .chain(requests)
                .min(),
            Phase::Leaving { deadline, .. } => Some(*deadline),
            Phase::Reconnecting { next_attempt, .. } => *next_attempt,
            Phase::Ended => None,
        }
    }

    // ---- inputs ----

    /// An app's command; `token` names its reply (`None`: nobody waits).
    pub fn command(&mut self, cmd: Command, token: Option<Token>, now: Instant) -> Vec<Output> {
        match (&self.phase, cmd) {
            (Phase::Connected(_), Command::Leave) => self.start_leave(token, now),
            (Phase::Connected(_), Command::Publish(what)) => {
                let stream_type = what.stream_type;
                if self.publish.contains_key(&stream_type) {
                    self.reply(
                        token,
                        Err(ClientError::Server {
                            code: ErrorCode::AlreadyPublishing,
                            message: "a publish is in progress".into(),
                        }),
                    );
                } else {
                    let req_id = self.next_req_id();
                    self.media(MediaAction::Publish(stream_type));
                    self.send(what.message(req_id));
                    self.published.insert(stream_type, what);
                    let w = self.waiting(req_id, token, now, ());
                    self.publish.insert(stream_type, w);
                }
            }
            (Phase::Connected(_), Command::Unpublish(stream_type)) => {
                let req_id = self.next_req_id();
                self.published.remove(&stream_type);
                self.media(MediaAction::Unpublish(stream_type));
                self.send(ClientMessage::Unpublish {
                    req_id,
                    stream_type,
                });
                let w = self.waiting(req_id, token, now, ());
                if let Some(earlier) = self.unpublish.insert(stream_type, w) {
                    // The server answers in order: the earlier one is done.
                    self.reply(earlier.token, Ok(()));
                }
            }
            (Phase::Connected(_), Command::Request(request)) => {
                let req_id = self.next_req_id();
                if let Request::Mute { audio, video } = &request {
                    self.media(MediaAction::SetMuted {
                        audio: *audio,
                        video: *video,
                    });
                }
                self.send(request.message(req_id));
                let w = self.waiting(req_id, token, now, request);
                self.requests.push(w);
            }
            (Phase::Reconnecting { next_attempt, .. }, Command::Leave) => {
                if next_attempt.is_none() {
                    self.out.push(Output::CancelRejoin);
                }
                self.media(MediaAction::CloseAll);
                self.set_state(ConnectionState::Disconnected);
                self.reply(token, Ok(()));
                self.end();
            }
            (Phase::Ended, Command::Leave) => self.reply(token, Ok(())),
            // Nothing to send them on (reconnecting, leaving, ended).
            _ => self.reply(token, Err(ClientError::ConnectionLost)),
        }
        self.take()
    }

    /// A message from the server.
    pub fn server(&mut self, msg: ServerMessage, now: Instant) -> Vec<Output> {
        match &mut self.phase {
            Phase::Connected(link) => {
                link.last_heard = now;
                self.connected_message(msg, now);
            }
            Phase::Leaving { req_id, token, .. } => match msg {
                ServerMessage::Left { req_id: r } if r == *req_id => {
                    let token = *token;
                    self.finish_leave(token, Ok(()));
                }
                // Forced out while leaving: out either way.
                ServerMessage::ClientBanned { .. } => {
                    let token = *token;
                    self.finish_leave(token, Ok(()));
                }
                _ => {}
            },
            Phase::Reconnecting { .. } | Phase::Ended => {}
        }
        self.take()
    }

    /// The signaling connection closed or a write to it failed.
    pub fn connection_lost(&mut self, now: Instant) -> Vec<Output> {
        match &self.phase {
            Phase::Connected(_) => self.lost(now),
            // The connection is gone, and with it our place in the room.
            Phase::Leaving { token, .. } => {
                let token = *token;
                self.finish_leave(token, Ok(()));
            }
            Phase::Reconnecting { .. } | Phase::Ended => {}
        }
        self.take()
    }

    /// The time is `now`: heartbeats, deadlines, reconnect attempts.
    pub fn timeout(&mut self, now: Instant) -> Vec<Output> {
        self.expire_requests(now);
        match &mut self.phase {
            Phase::Connected(link) => {
                if now >= link.last_heard + link.dead_after {
                    warn!("nothing heard from the server; reconnecting");
                    self.lost(now);
                    return self.take();
                }
                if now >= link.next_ping {
                    link.next_ping = now + link.interval;
                    self.req_id += 1;
                    let req_id = self.req_id;
                    if let Phase::Connected(link) = &mut self.phase {
                        link.ping = Some((req_id, now));
                    }
                    self.send(ClientMessage::Ping { req_id });
                }
                if let Phase::Connected(link) = &mut self.phase {
                    if now >= link.next_quality {
                        link.next_quality = now + QUALITY_INTERVAL;
                        self.media(MediaAction::MeasureLink);
                    }
                }
            }
            Phase::Leaving {
                token, deadline, ..
            } if now >= *deadline => {
                let token = *token;
                let ms = self.settings.leave_timeout.as_millis() as u64;
                self.finish_leave(token, Err(ClientError::Timeout(ms)));
            }
            Phase::Reconnecting {
                next_attempt: Some(at),
                attempt,
                ..
            } if now >= *at => {
                *attempt += 1;
                self.phase_attempt_started();
                let role = self.status.room.as_ref().map_or(Role::Anchor, |(_, r)| *r);
                self.out.push(Output::Rejoin {
                    resume: self.session_id.clone(),
                    role,
                });
            }
            _ => {}
        }
        self.take()
    }

    /// The answer to the server's offer is made (or failed).
    pub fn answered(&mut self, answer: Result<String, ClientError>) -> Vec<Output> {
        if matches!(self.phase, Phase::Connected(_)) {
            match answer {
                Ok(sdp) => self.send(ClientMessage::Answer { sdp }),
                Err(e) => {
                    warn!(error = %e, "answering the server's offer failed");
                    self.emit(ClientEvent::error(&e));
                }
            }
        }
        self.take()
    }

    /// The link counters [`MediaAction::MeasureLink`] asked for.
    pub fn link(&mut self, mut counters: LinkCounters) -> Vec<Output> {
        if let Phase::Connected(link) = &mut self.phase {
            if counters.rtt_ms().is_none() {
                // No media yet: the signaling round trip stands in.
                counters.ice_rtt_ms = link.signaling_rtt;
            }
            counters.video_paused = !self.paused.is_empty();
            let quality = assess(&link.counters, &counters);
            link.counters = counters;
            self.emit(ClientEvent::network_quality(quality));
        }
        self.take()
    }

    /// The first track of `user`'s stream of `stream_type` arrived.
    pub fn subscribed(&mut self, user: UserId, stream_type: StreamType) -> Vec<Output> {
        if matches!(self.phase, Phase::Connected(_)) {
            self.emit(ClientEvent::StreamSubscribed {
                user_id: user,
                stream_type,
            });
        }
        self.take()
    }

    /// The rejoin attempt succeeded; `republish` holds the kinds of the
    /// streams the I/O loop still has to publish again.
    pub fn rejoined(
        &mut self,
        joined: &Joined,
        republish: Vec<Publishing>,
        now: Instant,
    ) -> Vec<Output> {
        let Phase::Reconnecting { attempt, .. } = self.phase else {
            return self.take();
        };
        info!(attempt, "rejoined");
        self.phase = Phase::Connected(Link::new(joined, now));
        self.session_id = joined.session_id.clone();
        self.req_id = JOIN_REQ_ID;
        // Who came and went while we were away.
        let now_peers = peers_of(joined);
        let before = std::mem::replace(&mut self.status.peers, now_peers.clone());
        self.status.room = Some((self.room.clone(), joined.role));
        self.push_status();
        for user in before.keys().filter(|u| !now_peers.contains_key(*u)) {
            self.emit(ClientEvent::PeerLeave {
                user_id: user.clone(),
                reason: PeerLeaveReason::Left,
            });
        }
        for (user, role) in now_peers.iter().filter(|(u, _)| !before.contains_key(*u)) {
            self.emit(ClientEvent::PeerJoin {
                user_id: user.clone(),
                role: *role,
            });
        }
        self.set_state(ConnectionState::Connected);
        // Streams subscribed by request are asked for again.
        let mut again: Vec<_> = self.subscribed.clone().into_iter().collect();
        again.sort_by(|a, b| a.0.cmp(&b.0));
        for ((user, stream_type), (audio, video)) in again {
            let req_id = self.next_req_id();
            let request = Request::Subscribe {
                user,
                stream_type,
                audio,
                video,
            };
            self.send(request.message(req_id));
        }
        let mut sizes: Vec<_> = self.video_sizes.clone().into_iter().collect();
        sizes.sort_by(|a, b| a.0.cmp(&b.0));
        for ((user, stream_type), size) in sizes {
            let req_id = self.next_req_id();
            let request = Request::SetVideoSize {
                user,
                stream_type,
                size,
            };
            self.send(request.message(req_id));
        }
        self.published.clear();
        if !republish.is_empty() {
            self.media(MediaAction::Republish);
        }
        for what in republish {
            let req_id = self.next_req_id();
            self.send(what.message(req_id));
            let w = self.waiting(req_id, None, now, ());
            self.publish.insert(what.stream_type, w);
            self.published.insert(what.stream_type, what);
        }
        self.take()
    }

    /// The rejoin attempt failed with `error`.
    pub fn rejoin_failed(&mut self, error: ClientError, now: Instant) -> Vec<Output> {
        let Phase::Reconnecting {
            started,
            backoff,
            attempt,
            ..
        } = self.phase
        else {
            return self.take();
        };
        match error {
            ClientError::Banned(reason) => {
                self.media(MediaAction::CloseAll);
                self.banned(reason, reason.message().to_owned());
            }
            e if !e.is_retryable()
                || now.duration_since(started) >= self.settings.reconnect.give_up_after =>
            {
                warn!(error = %e, "reconnecting failed; giving up");
                self.set_state(ConnectionState::Disconnected);
                self.emit(ClientEvent::Error {
                    code: 0,
                    name: "RECONNECT_FAILED".into(),
                    message: format!("could not rejoin the room: {e}"),
                });
                self.end();
            }
            e => {
                debug!(attempt, error = %e, "rejoin failed; retrying");
                let backoff = (backoff * 2).min(self.settings.reconnect.max_backoff);
                let at = now + self.jitter(backoff);
                self.phase = Phase::Reconnecting {
                    started,
                    backoff,
                    attempt,
                    next_attempt: Some(at),
                };
            }
        }
        self.take()
    }

    fn start_leave(&mut self, token: Option<Token>, now: Instant) {
        // Leave stops all media and closes the published stream's sources.
        self.fail_all();
        self.media(MediaAction::CloseAll);
        let req_id = self.next_req_id();
        self.send(ClientMessage::Leave { req_id });
        self.phase = Phase::Leaving {
            req_id,
            token,
            deadline: now + self.settings.leave_timeout,
        };
    }

    fn finish_leave(&mut self, token: Option<Token>, result: Result<(), ClientError>) {
        self.out.push(Output::Close);
        self.set_state(ConnectionState::Disconnected);
        info!("left");
        self.reply(token, result);
        self.end();
    }

    fn lost(&mut self, now: Instant) {
        self.set_state(ConnectionState::Reconnecting);
        self.emit(ClientEvent::network_quality(Quality {
            uplink: grade::DISCONNECTED,
            downlink: grade::DISCONNECTED,
            ..Quality::default()
        }));
        self.fail_all();
        // The server's side of the media is gone with the session; what
        // was published is published again after rejoining.
        self.media(MediaAction::Reset);
        let backoff = self.settings.reconnect.initial_backoff;
        let at = now + self.jitter(backoff);
        self.phase = Phase::Reconnecting {
            started: now,
            backoff,
            attempt: 0,
            next_attempt: Some(at),
        };
    }

    fn banned(&mut self, reason: KickReason, message: String) {
        info!(%reason, "forced out");
        // The state is already DISCONNECTED when the app handles the event.
        let changed = self.status.transition(ConnectionState::Disconnected);
        self.push_status();
        self.emit(ClientEvent::ClientBanned { reason, message });
        if let Some(event) = changed {
            self.emit(event);
        }
        self.out.push(Output::Close);
        self.end();
    }

    fn phase_attempt_started(&mut self) {
        if let Phase::Reconnecting { next_attempt, .. } = &mut self.phase {
            *next_attempt = None;
        }
    }

    fn end(&mut self) {
        self.phase = Phase::Ended;
        self.out.push(Output::Done);
    }

    // ---- requests ----

    fn next_req_id(&mut self) -> u64 {
        self.req_id += 1;
        self.req_id
    }

    fn waiting<T>(&self, req_id: u64, token: Option<Token>, now: Instant, what: T) -> Waiting<T> {
        Waiting {
            req_id,
            token,
            deadline: now + self.settings.request_timeout,
            what,
        }
    }

    /// The stream type of the publish `req_id` answers, if it is one.
    fn publish_of(&self, req_id: u64) -> Option<StreamType> {
        self.publish
            .iter()
            .find(|(_, w)| w.req_id == req_id)
            .map(|(t, _)| *t)
    }

    fn has_request(&self, req_id: u64) -> bool {
        self.requests.iter().any(|w| w.req_id == req_id)
    }

    fn take_request(&mut self, req_id: u64) -> Option<Waiting<Request>> {
        let i = self.requests.iter().position(|w| w.req_id == req_id)?;
        Some(self.requests.swap_remove(i))
    }

    /// Fails everything outstanding (the connection dropped, or ended).
    fn fail_all(&mut self) {
        let tokens: Vec<_> = std::mem::take(&mut self.publish)
            .into_values()
            .map(|w| w.token)
            .chain(
                std::mem::take(&mut self.unpublish)
                    .into_values()
                    .map(|w| w.token),
            )
            .chain(self.requests.drain(..).map(|w| w.token))
            .collect();
        for t in tokens {
            self.reply(t, Err(ClientError::ConnectionLost));
        }
    }

    /// Answers requests past their deadline with a timeout. A publish that
    /// timed out is withdrawn, so the server and this side agree.
    fn expire_requests(&mut self, now: Instant) {
        let ms = self.settings.request_timeout.as_millis() as u64;
        let late: Vec<StreamType> = self
            .publish
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(t, _)| *t)
            .collect();
        for stream_type in late {
            if let Some(w) = self.publish.remove(&stream_type) {
                self.reply(w.token, Err(ClientError::Timeout(ms)));
                self.published.remove(&stream_type);
                self.media(MediaAction::Unpublish(stream_type));
                let req_id = self.next_req_id();
                self.send(ClientMessage::Unpublish {
                    req_id,
                    stream_type,
                });
            }
        }
        let late: Vec<StreamType> = self
            .unpublish
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(t, _)| *t)
            .collect();
        for stream_type in late {
            if let Some(w) = self.unpublish.remove(&stream_type) {
                self.reply(w.token, Err(ClientError::Timeout(ms)));
            }
        }
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|w| now >= w.deadline);
        self.requests = waiting;
        for w in late {
            self.reply(w.token, Err(ClientError::Timeout(ms)));
        }
    }

    // ---- outputs ----

    fn send(&mut self, msg: ClientMessage) {
        self.out.push(Output::Send(msg));
    }

    fn emit(&mut self, event: ClientEvent) {
        self.out.push(Output::Emit(event));
    }

    fn media(&mut self, action: MediaAction) {
        self.out.push(Output::Media(action));
    }

    fn reply(&mut self, token: Option<Token>, result: Result<(), ClientError>) {
        if let Some(t) = token {
            self.out.push(Output::Reply(t, result));
        }
    }

    fn push_status(&mut self) {
        self.out.push(Output::Status(self.status.clone()));
    }

    /// Moves to `state`, emitting `connection-state-changed` if it changed.
    fn set_state(&mut self, state: ConnectionState) {
        let changed = self.status.transition(state);
        self.push_status();
        if let Some(event) = changed {
            self.emit(event);
        }
    }

    /// `d` spread by ±20 %: many clients reconnecting to a restarted
    /// server do not arrive together.
    fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(self.rng.random_range(0.8..1.2))
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

fn peers_of(joined: &Joined) -> BTreeMap<UserId, Role> {
    joined
        .users
        .iter()
        .map(|p| (p.user_id.clone(), p.role))
        .collect()
}

mod room;
mod types;

pub(crate) use types::*;

#[cfg(test)]
mod tests;
