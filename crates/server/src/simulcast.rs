//! Simulcast in the SFU: which layer of a publisher's video each
//! subscriber receives, and how the layers' packets become one stream.
//!
//! A publisher sends up to three layers of its video (largest first), each
//! a track of its own. Every subscriber gets one video track; what goes on
//! it is one layer at a time, chosen by [`allocate`] from the subscriber's
//! send estimate (the server's GCC over that subscriber's feedback) and the
//! size the subscriber shows the video at. A change of layer takes effect
//! at the new layer's next keyframe ([`VideoOutput::forward`]), and the
//! packets are renumbered (sequence numbers and timestamps continue), so
//! the subscriber's decoder sees one stream whose picture changes size.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaigi_proto::signal::VideoSize;
use parking_lot::Mutex;
use rtc::rtp;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use tracing::debug;

use crate::registry::SessionId;

/// A layer with no packet for this long is not being sent (the publisher
/// dropped it for its own uplink, or its video is muted).
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// A layer no subscriber shows large enough to need is turned off at the
/// publisher only after this long unneeded (a tile resized or a view
/// switched back and forth does not restart its encoder each time); one
/// needed again is turned on at once.
pub const LAYER_UNNEEDED_FOR: Duration = Duration::from_secs(5);
/// How often a layer's rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// A layer's rate is never taken as less than this: a still picture sends
/// little until it moves.
const MIN_LAYER_BPS: f64 = 30_000.0;
/// What a layer is taken to send per pixel of its size each second before
/// it is measured (0.1 bit per pixel at 30 fps).
const GUESS_BITS_PER_PIXEL: f64 = 3.0;
/// The share of a subscriber's estimate that its video layers may take
/// (the pacer's headroom and retransmissions need the rest).
pub const VIDEO_SHARE: f64 = 0.9;
/// What each received audio track is counted as (Opus at 32 kbit/s, 50
/// packets a second with their headers).
pub const AUDIO_BPS: f64 = 50_000.0;
/// Moving up needs this much more room than the layer's rate…
pub const UP_MARGIN: f64 = 1.2;
/// …for this long.
pub const UP_AFTER: Duration = Duration::from_secs(2);
/// A keyframe asked of a layer's publisher and not yet arrived is not
/// asked again sooner than this.
pub const KEYFRAME_GAP: Duration = Duration::from_millis(500);
/// A keyframe asked for a switch is asked again after this.
const KEYFRAME_AGAIN: Duration = Duration::from_millis(600);
/// A trial releases video at this multiple of what the tried layers and
/// audio take.
const PROBE_ROOM: f64 = 1.15;
/// How long a trial of a larger layer may take to show it fits.
pub const TRIAL_FOR: Duration = Duration::from_secs(6);
/// How long after a failed trial the layer it started from is kept.
const TRIAL_GRACE: Duration = Duration::from_secs(2);
/// How long the tried layer must go on fitting for the trial to succeed.
const TRIAL_CONFIRM: Duration = Duration::from_secs(3);
/// The wait before the first trial, and after one that succeeded.
const TRIAL_BACKOFF: Duration = Duration::from_secs(3);
/// The longest wait between trials (after failures, doubling up to it).
const TRIAL_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A trial fails when the estimate falls below this share of where it
/// started…
const TRIAL_FALL: f64 = 0.85;
/// …or video waits this long in the pacer, or the far end reports this
/// share of packets lost.
const TRIAL_QUEUE: Duration = Duration::from_millis(250);
const TRIAL_LOSS: f64 = 0.05;
/// A trial fails when the bottleneck's queue grows by this much: the
/// layer does not fit, and the queue is filling towards loss (where the
/// audio in it would go too).
const TRIAL_NET_QUEUE: Duration = Duration::from_millis(30);
/// A layer a trial confirmed must last this long for the trial to count
/// as a success (and the backoff to reset).
const TRIAL_LASTS: Duration = Duration::from_secs(20);
/// No trial starts on a path losing more than this.
const TRIAL_LOSS_BEFORE: f64 = 0.1;

/// Trials of larger layers for one subscriber, one at a time.
///
/// The estimate is held to what the path has been shown to carry (see
/// `kaigi_rtc::estimate`), so a subscriber that receives a small layer,
/// or none, never has an estimate that fits the next one: the next layer
/// is tried. While it is sent (paced at a little over the estimate), the
/// far end acknowledges more and the estimate may grow; if it holds up
/// until the layer fits, the layer stays, and if the estimate falls or
/// video queues up in the pacer, the subscriber goes back to what it had
/// and waits longer before the next trial.
#[derive(Debug)]
pub struct Trials {
    /// The trial under way.
    active: Option<Trial>,
    /// After a failed trial, the output (by address) goes back to the
    /// layer it had, no lower (the trial's own loss, not the path, brought
    /// the estimate down) and no higher, until then.
    grace: Option<(usize, Option<usize>, Instant)>,
    /// After a failed trial, the output (by address) gets nothing as
    /// large as the layer tried until the next trial may start: the
    /// estimate, raised by what the trial sent, would otherwise choose it
    /// again at once.
    ceiling: Option<(usize, usize, Instant)>,
    /// The output (by address) and layer the last successful trial
    /// confirmed, and when.
    confirmed: Option<(usize, usize, Instant)>,
    next_at: Option<Instant>,
    backoff: Duration,
}

impl Default for Trials {
    fn default() -> Self {
        Trials {
            active: None,
            grace: None,
            ceiling: None,
            confirmed: None,
            next_at: None,
            backoff: TRIAL_BACKOFF,
        }
    }
}

impl Trials {
    fn failed(&mut self, now: Instant) {
        self.backoff = (self.backoff * 2).min(TRIAL_BACKOFF_MAX);
        self.next_at = Some(now + self.backoff);
        if let Some(t) = self.active.take() {
            self.grace = Some((t.output, t.had, now + TRIAL_GRACE));
            self.ceiling = Some((t.output, t.layer, now + self.backoff));
        }
    }

    fn succeeded(&mut self, now: Instant) {
        if let Some(t) = self.active.take() {
            self.confirmed = Some((t.output, t.layer, now));
        }
        // The backoff is kept until the layer has lasted (see
        // `TRIAL_LASTS`): a layer that only just fits would otherwise be
        // tried, kept, lost and tried again every few seconds.
        self.next_at = Some(now + TRIAL_BACKOFF);
    }

    /// The output (by address) left `layer` for a smaller one at `now`:
    /// if a trial had confirmed that layer only lately, it did not fit
    /// after all, and counts as a failed trial.
    fn left(&mut self, output: usize, layer: usize, now: Instant) {
        let recent = self.confirmed.is_some_and(|(o, l, at)| {
            o == output && l == layer && now.saturating_duration_since(at) < TRIAL_LASTS
        });
        if recent {
            self.confirmed = None;
            self.backoff = (self.backoff * 2).min(TRIAL_BACKOFF_MAX);
            self.next_at = Some(now + self.backoff);
            self.ceiling = Some((output, layer, now + self.backoff));
        }
    }

    /// Forgets a confirmation that has lasted, resetting the backoff.
    fn settle(&mut self, now: Instant) {
        if self
            .confirmed
            .is_some_and(|(.., at)| now.saturating_duration_since(at) >= TRIAL_LASTS)
        {
            self.confirmed = None;
            self.backoff = TRIAL_BACKOFF;
        }
    }

    /// The rate to release video at while a trial is under way (what
    /// the tried layers and the audio take, with some room), so the path
    /// gets to show whether it carries them.
    pub fn probe_bps(&self) -> Option<f64> {
        self.active.map(|a| a.probe)
    }
}

/// A trial under way.
#[derive(Debug, Clone, Copy)]
struct Trial {
    /// The output tried (by address).
    output: usize,
    /// The layer it had.
    had: Option<usize>,
    /// The layer tried.
    layer: usize,
    /// When it started, and the estimate then.
    since: Instant,
    estimate: f64,
    /// The loss before it (a lossy path's own loss is no failure).
    loss: f64,
    /// The bottleneck's queue before it.
    queue: Duration,
    /// The rate video is released at meanwhile.
    probe: f64,
    /// Since when the layer has fitted the estimate (with the margin).
    fits_since: Option<Instant>,
}

/// What a subscriber's connection says about the path: its estimate
/// (`None`: none yet) and how long video waits in its pacer.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    /// Bits per second.
    pub estimate_bps: Option<f64>,
    /// The pacer's queue delay.
    pub queue_delay: Duration,
    /// The share of packets lost over the last second.
    pub loss: f64,
    /// The queue building at the path's bottleneck (see
    /// `SendBudget::network_queue`).
    pub network_queue: Duration,
}

/// One layer of a publication's video as it arrives.
#[derive(Debug)]
pub struct Layer {
    /// Its picture size, as the publisher declared it.
    pub size: VideoSize,
    base: Instant,
    /// Bits per second, smoothed.
    rate_bps: AtomicU64,
    /// When its last packet came, in microseconds since `base` plus one
    /// (0: never).
    last_us: AtomicU64,
    /// When a keyframe of it was asked of the publisher and has not
    /// arrived yet, likewise (0: none outstanding).
    keyframe_us: AtomicU64,
}

impl Layer {
    /// A layer of `size` that has sent nothing yet.
    pub fn new(size: VideoSize) -> Self {
        Layer {
            size,
            base: Instant::now(),
            rate_bps: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            keyframe_us: AtomicU64::new(0),
        }
    }

    /// Whether a keyframe may be asked of the publisher at `now`: not while
    /// one asked less than [`KEYFRAME_GAP`] ago has not arrived (it is on
    /// its way and serves every subscriber waiting: all that join or lose
    /// a frame meanwhile ask, and each keyframe asked for is several
    /// frames' worth of bits on every subscriber's link). Once it has
    /// arrived ([`Layer::keyframe_arrived`]) the next ask goes at once: a
    /// subscriber joining just after it must not wait out a gap.
    /// Records the ask when it may.
    pub fn may_ask_keyframe(&self, now: Instant) -> bool {
        let us = now.saturating_duration_since(self.base).as_micros() as u64 + 1;
        let last = self.keyframe_us.load(Ordering::Relaxed);
        if last != 0 && us.saturating_sub(last) < KEYFRAME_GAP.as_micros() as u64 {
            return false;
        }
        self.keyframe_us
            .compare_exchange(last, us, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// A keyframe of this layer arrived from the publisher: the ask it
    /// answered is no longer outstanding.
    pub fn keyframe_arrived(&self) {
        self.keyframe_us.store(0, Ordering::Relaxed);
    }

    /// Whether packets are arriving on it.
    pub fn live(&self, now: Instant) -> bool {
        match self.last_us.load(Ordering::Relaxed) {
            0 => false,
            us => {
                let at = self.base + Duration::from_micros(us - 1);
                now.saturating_duration_since(at) < LAYER_IDLE
            }
        }
    }

    /// Its rate, bits per second (at least [`MIN_LAYER_BPS`]); before it
    /// is measured, what a picture of its size takes at 30 fps.
    pub fn rate_bps(&self) -> f64 {
        let measured = self.rate_bps.load(Ordering::Relaxed) as f64;
        let guess = f64::from(self.size.width) * f64::from(self.size.height) * GUESS_BITS_PER_PIXEL;
        if measured > 0.0 { measured } else { guess }.max(MIN_LAYER_BPS)
    }
}

/// Measures a layer's rate from the packets its forwarding task sees.
#[derive(Debug)]
pub struct RateMeter {
    since: Instant,
    bytes: usize,
}

impl RateMeter {
    /// A meter starting now.
    pub fn new(now: Instant) -> Self {
        RateMeter {
            since: now,
            bytes: 0,
        }
    }

    /// Counts a packet of `bytes` for `layer`.
    pub fn count(&mut self, layer: &Layer, bytes: usize, now: Instant) {
        self.bytes += bytes;
        let us = now.saturating_duration_since(layer.base).as_micros() as u64 + 1;
        layer.last_us.store(us, Ordering::Relaxed);
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= RATE_WINDOW {
            let bps = self.bytes as f64 * 8.0 / elapsed.as_secs_f64();
            let old = layer.rate_bps.load(Ordering::Relaxed) as f64;
            let smoothed = if old == 0.0 {
                bps
            } else {
                0.6 * old + 0.4 * bps
            };
            layer.rate_bps.store(smoothed as u64, Ordering::Relaxed);
            self.since = now;
            self.bytes = 0;
        }
    }
}

/// Whether an H.264 RTP payload (RFC 6184) starts a picture a decoder can
/// begin at: it carries a sequence parameter set (which the keyframes the
/// SDK and browsers send begin with) or begins an IDR slice.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        5 | 7 => true,
        // STAP-A: 2-byte sizes, each followed by a NAL unit.
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(&nal) = rest.get(2) else {
                    return false;
                };
                if matches!(nal & 0x1f, 5 | 7) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        // FU-A: the start of a fragmented IDR slice.
        28 => payload
            .get(1)
            .is_some_and(|&h| h & 0x80 != 0 && h & 0x1f == 5),
        _ => false,
    }
}

/// What one subscriber's video track carries now.
#[derive(Debug, Default)]
struct Switch {
    /// The layer forwarded now (`None`: none, before the first keyframe or
    /// while paused).
    current: Option<usize>,
    /// The layer wanted (`None`: paused).
    target: Option<usize>,
    /// Added to the current layer's sequence numbers and timestamps.
    seq_offset: u16,
    ts_offset: u32,
    /// The last packet sent: its number, timestamp, when, and whether it
    /// ended a frame.
    last: Option<(u16, u32, Instant, bool)>,
    /// When a keyframe was last asked for a switch.
    asked: Option<Instant>,
    /// Since when a better layer than the target has fitted.
    better_since: Option<Instant>,
    /// Whether the subscriber was told its video is paused.
    told_paused: bool,
}

/// One subscriber's copy of a publication's video.
pub struct VideoOutput {
    /// The subscribing session.
    pub subscriber: SessionId,
    /// The track it is sent on.
    pub track: Arc<TrackLocalStaticRTP>,
    /// The track's SSRC.
    pub ssrc: u32,
    switch: Mutex<Switch>,
    /// The largest layer (index) the subscriber shows this video large
    /// enough to need (see [`cap`]); 0, every layer, until it says.
    cap: AtomicUsize,
}

impl VideoOutput {
    /// An output that will start at `target`.
    pub fn new(
        subscriber: SessionId,
        track: Arc<TrackLocalStaticRTP>,
        ssrc: u32,
        target: usize,
    ) -> Self {
        VideoOutput {
            subscriber,
            track,
            ssrc,
            switch: Mutex::new(Switch {
                target: Some(target),
                ..Switch::default()
            }),
            cap: AtomicUsize::new(0),
        }
    }

    /// The largest layer the subscriber needs (index, largest first).
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// Records the largest layer the subscriber needs.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// The layer forwarded now, or else the one being switched to (where
    /// a subscriber's keyframe request goes).
    pub fn layer(&self) -> Option<usize> {
        let s = self.switch.lock();
        s.current.or(s.target)
    }

    /// Whether the subscriber was told this video is paused.
    pub fn told_paused(&self) -> bool {
        self.switch.lock().told_paused
    }

    /// The layer wanted (`None`: paused).
    pub fn target(&self) -> Option<usize> {
        self.switch.lock().target
    }

    /// What of `packet`, arriving on `layer` at `now`, goes to this
    /// subscriber: the packet renumbered into its stream, or nothing.
    pub fn forward(&self, layer: usize, packet: &rtp::Packet, now: Instant) -> Option<rtp::Packet> {
        let mut s = self.switch.lock();
        if s.current != Some(layer) {
            if s.target != Some(layer) || !starts_keyframe(&packet.payload) {
                return None;
            }
            // Switch here: the new layer's numbers continue the stream.
            let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
            match s.last {
                Some((last_seq, last_ts, at, _)) => {
                    let ticks = (now.saturating_duration_since(at).as_micros() * 9 / 100).max(1);
                    s.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
                    s.ts_offset = last_ts.wrapping_add(ticks as u32).wrapping_sub(ts);
                }
                None => {
                    s.seq_offset = 0;
                    s.ts_offset = 0;
                }
            }
            debug!(from = ?s.current, to = layer, subscriber = self.subscriber, "layer switched");
            s.current = Some(layer);
            s.asked = None;
        } else if s.target.is_none() && s.last.is_none_or(|l| l.3) {
            // Paused, at the end of a frame.
            s.current = None;
            return None;
        }
        let seq = packet.header.sequence_number.wrapping_add(s.seq_offset);
        let ts = packet.header.timestamp.wrapping_add(s.ts_offset);
        if s.last
            .is_none_or(|(last, ..)| (seq.wrapping_sub(last) as i16) > 0)
        {
            s.last = Some((seq, ts, now, packet.header.marker));
        }
        drop(s);
        let mut p = packet.clone();
        p.header.ssrc = self.ssrc;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        // The publisher's header extensions are numbered for its
        // connection, not the subscriber's (where the same id may name
        // another extension): none is forwarded, and the subscriber's
        // connection adds its own (transport-wide sequence numbers).
        p.header.extension = false;
        p.header.extension_profile = 0;
        p.header.extensions.clear();
        p.header.extensions_padding = 0;
        Some(p)
    }

    /// Sets the layer wanted; whether a keyframe of it should be asked
    /// for now (a switch is pending and was not asked lately).
    fn retarget(&self, target: Option<usize>, now: Instant) -> bool {
        let mut s = self.switch.lock();
        let changed = s.target != target;
        s.target = target;
        if let (Some(current), Some(t)) = (s.current, target) {
            if t > current {
                // Down to a smaller layer: the larger one does not fit, so
                // it stops now rather than at the smaller one's keyframe
                // (a moment's freeze instead of a congested link).
                s.current = None;
            }
        }
        match target {
            Some(t) if s.current != Some(t) => {
                let due = changed
                    || s.asked
                        .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_AGAIN);
                if due {
                    s.asked = Some(now);
                }
                due
            }
            _ => false,
        }
    }
}

/// One video a subscriber receives, as [`allocate`] sees it.
pub struct Candidate<'a> {
    /// The publication's layers, largest first.
    pub layers: &'a [Layer],
    /// The largest size the subscriber shows it at.
    pub limit: VideoSize,
    /// Its output.
    pub output: &'a VideoOutput,
}

/// What changed for one video in an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Its index among the candidates.
    pub index: usize,
    /// A keyframe of this layer is wanted (a switch to it is pending).
    pub keyframe: Option<usize>,
    /// The subscriber should be told the video is paused (`true`) or
    /// flows again (`false`).
    pub paused: Option<bool>,
}

/// The largest of `layers` (largest first) a video shown at `limit`
/// needs: the largest that fits in it, or the smallest when none does.
pub fn cap(layers: &[Layer], limit: VideoSize) -> usize {
    layers
        .iter()
        .position(|l| l.size.fits_in(limit))
        .unwrap_or(layers.len().saturating_sub(1))
}

/// Which layers a publisher sends while subscribers need at most
/// `needed` (the index of the largest any needs; `None`: nobody
/// receives the video), as `video-layers` tells it: every layer from
/// `needed` down, and the smallest always (a new subscriber's first
/// picture comes from a layer already arriving).
pub fn active_layers(layers: usize, needed: Option<usize>) -> Vec<bool> {
    let top = needed.unwrap_or(usize::MAX).min(layers.saturating_sub(1));
    (0..layers).map(|i| i >= top).collect()
}

/// When to tell a publisher a new set of layers: more at once, fewer
/// only once they have been unneeded for [`LAYER_UNNEEDED_FOR`].
#[derive(Debug, Default)]
pub struct LayerDemand {
    /// The largest layer told to be on (index; every one at the start, as
    /// a publisher starts).
    told: usize,
    /// Since when fewer layers have been needed than told.
    fewer_since: Option<Instant>,
}

impl LayerDemand {
    /// Takes the largest layer needed now (index); the largest to tell the
    /// publisher to send when that changes.
    pub fn update(&mut self, needed: usize, now: Instant) -> Option<usize> {
        if needed < self.told {
            self.fewer_since = None;
            self.told = needed;
            return Some(needed);
        }
        if needed == self.told {
            self.fewer_since = None;
            return None;
        }
        let since = *self.fewer_since.get_or_insert(now);
        if now.saturating_duration_since(since) < LAYER_UNNEEDED_FOR {
            return None;
        }
        self.fewer_since = None;
        self.told = needed;
        Some(needed)
    }
}

/// Layers usable for one candidate, smallest first: live ones no larger
/// than the size shown (the largest layer that fits, and every smaller).
fn usable(c: &Candidate<'_>, now: Instant) -> Vec<usize> {
    let cap = cap(c.layers, c.limit);
    (cap..c.layers.len())
        .rev()
        .filter(|&i| c.layers[i].live(now))
        .collect()
}

/// Gives each video the largest usable layer, smallest first for all of
/// them, within `room` bits per second; `None` where not even the
/// smallest fits.
fn share(cands: &[Candidate<'_>], usable: &[Vec<usize>], room: f64) -> Vec<Option<usize>> {
    let mut left = room;
    // Position in each candidate's usable list.
    let mut at: Vec<Option<usize>> = vec![None; cands.len()];
    for (i, u) in usable.iter().enumerate() {
        if let Some(&l) = u.first() {
            let r = cands[i].layers[l].rate_bps();
            if r <= left {
                left -= r;
                at[i] = Some(0);
            }
        }
    }
    // Up one step at a time, round the videos, while it fits.
    loop {
        let mut moved = false;
        for (i, u) in usable.iter().enumerate() {
            let Some(pos) = at[i] else { continue };
            let Some(&next) = u.get(pos + 1) else {
                continue;
            };
            let layers = cands[i].layers;
            let more = layers[next].rate_bps() - layers[u[pos]].rate_bps();
            if more <= left {
                left -= more;
                at[i] = Some(pos + 1);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    at.iter()
        .zip(usable)
        .map(|(p, u)| p.map(|p| u[p]))
        .collect()
}

/// Ranks a choice: paused lowest, then smaller layers (higher indices).
fn rank(choice: Option<usize>) -> i64 {
    match choice {
        None => -1,
        Some(i) => 1000 - i as i64,
    }
}

/// Chooses the layer of every video one subscriber receives, from its
/// path (no estimate yet: the largest usable) after `audio` tracks are
/// served. Down at once; up only when the better layer has fitted with
/// [`UP_MARGIN`] for [`UP_AFTER`], or by a trial (see [`Trials`]). A video
/// with no live layer (its publisher sends none) keeps what it had.
pub fn allocate(
    cands: &[Candidate<'_>],
    path: Path,
    audio: usize,
    trials: &mut Trials,
    now: Instant,
) -> Vec<Change> {
    let estimate_bps = path.estimate_bps;
    let usable: Vec<Vec<usize>> = cands.iter().map(|c| usable(c, now)).collect();
    let (fits, fits_up) = match estimate_bps {
        Some(e) => {
            let room = (e * VIDEO_SHARE - audio as f64 * AUDIO_BPS).max(0.0);
            (
                share(cands, &usable, room),
                share(cands, &usable, room / UP_MARGIN),
            )
        }
        None => {
            let top: Vec<Option<usize>> = usable.iter().map(|u| u.last().copied()).collect();
            (top.clone(), top)
        }
    };
    let key = |c: &Candidate<'_>| std::ptr::from_ref(c.output) as usize;
    // The trial under way: over when the estimate fell, video queues,
    // it took too long, or the layer now fits by itself.
    let mut trying = None;
    if let Some(mut t) = trials.active {
        let layer = t.layer;
        match cands.iter().position(|c| key(c) == t.output) {
            None => trials.failed(now),
            Some(i) => {
                let fell = estimate_bps.is_some_and(|e| e < t.estimate * TRIAL_FALL)
                    || path.queue_delay > TRIAL_QUEUE
                    || path.loss > t.loss + TRIAL_LOSS
                    || path.network_queue > t.queue + TRIAL_NET_QUEUE;
                // It must go on fitting for a while: the estimate may
                // run ahead of the path before the loss shows.
                t.fits_since = match rank(fits_up[i]) >= rank(Some(layer)) {
                    true => Some(t.fits_since.unwrap_or(now)),
                    false => None,
                };
                trials.active = Some(t);
                let held = t
                    .fits_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= TRIAL_CONFIRM);
                if held && !fell {
                    trials.succeeded(now);
                } else if fell || now.saturating_duration_since(t.since) >= TRIAL_FOR {
                    debug!(layer, fell, "the trial of a larger layer failed");
                    trials.failed(now);
                } else {
                    trying = Some((i, layer));
                }
            }
        }
    }
    // A new trial: the video furthest below what it could show, one step
    // up, when the path is quiet.
    let due = trials.next_at.is_none_or(|at| now >= at);
    // Random loss up to [`TRIAL_LOSS_BEFORE`] does not keep a path from
    // trying (a trial fails on loss beyond what the path had).
    let quiet = path.queue_delay < TRIAL_QUEUE / 4
        && path.loss < TRIAL_LOSS_BEFORE
        && path.network_queue < TRIAL_NET_QUEUE / 2;
    if trying.is_none() && due && quiet {
        if let Some(e) = estimate_bps {
            let wanting = (0..cands.len())
                .filter(|&i| {
                    let target = cands[i].output.target();
                    usable[i]
                        .last()
                        .is_some_and(|&best| rank(Some(best)) > rank(target))
                        && rank(fits[i]) >= rank(target)
                        && rank(fits_up[i]) <= rank(target)
                })
                .min_by_key(|&i| rank(cands[i].output.target()));
            if let Some(i) = wanting {
                let target = cands[i].output.target();
                let next = usable[i]
                    .iter()
                    .copied()
                    .find(|&l| rank(Some(l)) > rank(target));
                if let Some(next) = next {
                    // What everything takes with the tried layer.
                    let layers = cands[i].layers;
                    let rate: f64 = (0..cands.len())
                        .filter_map(|j| match j == i {
                            true => Some(layers[next].rate_bps()),
                            false => cands[j]
                                .output
                                .target()
                                .map(|l| cands[j].layers[l].rate_bps()),
                        })
                        .sum::<f64>()
                        + audio as f64 * AUDIO_BPS;
                    let probe = rate * PROBE_ROOM;
                    debug!(layer = next, estimate = e, probe, "trying a larger layer");
                    trials.active = Some(Trial {
                        output: key(&cands[i]),
                        had: target,
                        layer: next,
                        since: now,
                        estimate: e,
                        loss: path.loss,
                        queue: path.network_queue,
                        probe,
                        fits_since: None,
                    });
                    trying = Some((i, next));
                }
            }
        }
    }
    trials.grace = trials.grace.filter(|g| now < g.2);
    trials.ceiling = trials.ceiling.filter(|c| now < c.2);
    trials.settle(now);
    let mut changes = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if usable[i].is_empty() {
            continue;
        }
        let grace = trials
            .grace
            .filter(|g| g.0 == key(c))
            .map(|g| g.1)
            .filter(|l| l.is_none_or(|l| c.layers[l].live(now)));
        let ceiling = trials.ceiling.filter(|g| g.0 == key(c)).map(|g| g.1);
        let out = c.output;
        let mut s = out.switch.lock();
        let had = s.target;
        let chosen = if let Some((_, layer)) = trying.filter(|&(t, _)| t == i) {
            s.better_since = None;
            Some(layer)
        } else if let Some(back) = grace {
            s.better_since = None;
            back
        } else if rank(fits[i]) < rank(had) {
            s.better_since = None;
            fits[i]
        } else if rank(fits_up[i]) > rank(had) {
            let since = *s.better_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_AFTER {
                s.better_since = None;
                fits_up[i]
            } else {
                had
            }
        } else {
            s.better_since = None;
            had
        };
        let chosen = match ceiling {
            Some(failed) if rank(chosen) >= rank(Some(failed)) => {
                // The largest usable layer below the one that failed.
                let below = usable[i].iter().copied().rfind(|&l| l > failed);
                if rank(fits[i]) < rank(below) {
                    fits[i]
                } else {
                    below
                }
            }
            _ => chosen,
        };
        // A target that stopped arriving is replaced even without room.
        let chosen = match chosen {
            Some(l) if !c.layers[l].live(now) => fits[i],
            other => other,
        };
        let paused = chosen.is_none();
        let tell = (paused != s.told_paused).then(|| {
            s.told_paused = paused;
            paused
        });
        drop(s);
        if let Some(h) = had.filter(|_| rank(chosen) < rank(had)) {
            trials.left(key(c), h, now);
        }
        let keyframe = out.retarget(chosen, now).then_some(chosen).flatten();
        if keyframe.is_some() || tell.is_some() {
            changes.push(Change {
                index: i,
                keyframe,
                paused: tell,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::Header;

    fn layers(now: Instant, rates: &[u64]) -> Vec<Layer> {
        let sizes = [
            VideoSize::new(640, 480),
            VideoSize::new(320, 240),
            VideoSize::new(160, 120),
        ];
        rates
            .iter()
            .zip(sizes)
            .map(|(&r, size)| {
                let l = Layer::new(size);
                l.rate_bps.store(r, Ordering::Relaxed);
                let us = now.saturating_duration_since(l.base).as_micros() as u64 + 1;
                l.last_us.store(us, Ordering::Relaxed);
                l
            })
            .collect()
    }

    /// `allocate` with no trial due.
    fn no_trials(
        cands: &[Candidate<'_>],
        estimate_bps: Option<f64>,
        audio: usize,
        now: Instant,
    ) -> Vec<Change> {
        let mut trials = Trials {
            next_at: Some(now + Duration::from_secs(3600)),
            ..Trials::default()
        };
        let path = Path {
            estimate_bps,
            queue_delay: Duration::ZERO,
            loss: 0.0,
            network_queue: Duration::ZERO,
        };
        allocate(cands, path, audio, &mut trials, now)
    }

    /// A paused video is tried again when the path is quiet; the trial
    /// ends when the estimate falls, and the next waits longer.
    #[test]
    fn a_larger_layer_is_tried_and_given_up_when_the_estimate_falls() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let out = output(0);
        let c = one_video(&l, &out);
        let mut trials = Trials::default();
        let path = |e: f64| estimate_path(e, 0);
        // 120 kbit/s (audio alone is acknowledged): paused at first…
        trials.next_at = Some(now + Duration::from_secs(1));
        allocate(&c, path(120_000.0), 1, &mut trials, now);
        assert_eq!(out.target(), None);
        // …then the smallest layer is tried.
        let t1 = now + Duration::from_secs(1);
        touch(&l, t1);
        let ch = allocate(&c, path(120_000.0), 1, &mut trials, t1);
        assert_eq!(out.target(), Some(2));
        assert_eq!(ch[0].paused, Some(false));
        // The estimate grows while it is sent: the layer fits, and once
        // it has for a while, it stays.
        let t2 = t1 + Duration::from_secs(1);
        touch(&l, t2);
        allocate(&c, path(200_000.0), 1, &mut trials, t2);
        assert!(trials.active.is_some(), "not yet confirmed");
        let t2 = t2 + TRIAL_CONFIRM;
        touch(&l, t2);
        allocate(&c, path(200_000.0), 1, &mut trials, t2);
        assert_eq!(out.target(), Some(2));
        assert!(trials.active.is_none(), "the trial succeeded");
        // The next trial (the middle layer) makes the estimate fall: back.
        let t3 = t2 + TRIAL_BACKOFF;
        touch(&l, t3);
        allocate(&c, path(200_000.0), 1, &mut trials, t3);
        assert_eq!(out.target(), Some(1));
        let t4 = t3 + Duration::from_millis(500);
        touch(&l, t4);
        allocate(&c, path(150_000.0), 1, &mut trials, t4);
        assert_eq!(out.target(), Some(2));
        assert!(trials
            .next_at
            .is_some_and(|at| at >= t4 + TRIAL_BACKOFF * 2));
    }

    /// A trial that fills the bottleneck's queue fails at once; the
    /// estimate it raised does not bring the failed layer straight back
    /// (only the next trial may).
    #[test]
    fn a_failed_trial_is_not_undone_by_the_estimate_it_raised() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let out = output(2);
        let c = one_video(&l, &out);
        let mut trials = Trials::default();
        let path = estimate_path;
        let t1 = now + TRIAL_BACKOFF;
        trials.next_at = Some(t1);
        touch(&l, now);
        allocate(&c, path(250_000.0, 0), 1, &mut trials, now);
        assert_eq!(out.target(), Some(2));
        // The middle layer is tried…
        touch(&l, t1);
        allocate(&c, path(250_000.0, 0), 1, &mut trials, t1);
        assert_eq!(out.target(), Some(1));
        // …the queue builds: back to the small layer.
        let t2 = t1 + Duration::from_millis(250);
        touch(&l, t2);
        allocate(&c, path(420_000.0, 90), 1, &mut trials, t2);
        assert_eq!(out.target(), Some(2));
        // The estimate the trial raised would fit the middle layer, but it
        // is not chosen again until the next trial.
        let mut t = t2;
        while t < t2 + TRIAL_BACKOFF * 2 - Duration::from_millis(300) {
            t += Duration::from_millis(250);
            touch(&l, t);
            allocate(&c, path(600_000.0, 0), 1, &mut trials, t);
            assert_eq!(out.target(), Some(2), "{:?} after the failure", t - t2);
        }
    }

    /// A layer a trial confirmed but the path then could not keep is a
    /// failed trial after all: not chosen again before the next trial,
    /// which waits longer.
    #[test]
    fn a_confirmed_layer_lost_soon_after_counts_as_failed() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let out = output(2);
        let c = one_video(&l, &out);
        let mut trials = Trials::default();
        let path = |e: f64| estimate_path(e, 0);
        let t1 = now + TRIAL_BACKOFF;
        trials.next_at = Some(t1);
        touch(&l, now);
        allocate(&c, path(250_000.0), 1, &mut trials, now);
        touch(&l, t1);
        allocate(&c, path(250_000.0), 1, &mut trials, t1);
        assert_eq!(out.target(), Some(1), "tried");
        // The estimate grows with it: confirmed.
        let mut t = t1;
        for _ in 0..(TRIAL_CONFIRM.as_millis() / 250 + 2) {
            t += Duration::from_millis(250);
            touch(&l, t);
            allocate(&c, path(420_000.0), 1, &mut trials, t);
        }
        assert!(trials.active.is_none() && out.target() == Some(1), "kept");
        // Then it falls: down, and the layer is off limits for a while.
        t += Duration::from_secs(2);
        touch(&l, t);
        allocate(&c, path(200_000.0), 1, &mut trials, t);
        assert_eq!(out.target(), Some(2));
        let fell = t;
        while t < fell + TRIAL_BACKOFF * 2 - Duration::from_millis(300) {
            t += Duration::from_millis(250);
            touch(&l, t);
            allocate(&c, path(600_000.0), 1, &mut trials, t);
            assert_eq!(out.target(), Some(2), "{:?} after", t - fell);
        }
    }

    /// A path with estimate `e` whose bottleneck queues `queue_ms`.
    fn estimate_path(e: f64, queue_ms: u64) -> Path {
        Path {
            estimate_bps: Some(e),
            queue_delay: Duration::ZERO,
            loss: 0.0,
            network_queue: Duration::from_millis(queue_ms),
        }
    }

    /// One video of `layers`, shown at any size, on `out`.
    fn one_video<'a>(layers: &'a [Layer], out: &'a VideoOutput) -> [Candidate<'a>; 1] {
        [Candidate {
            layers,
            limit: VideoSize::default(),
            output: out,
        }]
    }

    /// Packets of every layer arrived at `t`.
    fn touch(layers: &[Layer], t: Instant) {
        for l in layers {
            let us = t.saturating_duration_since(l.base).as_micros() as u64 + 1;
            l.last_us.store(us, Ordering::Relaxed);
        }
    }

    fn output(target: usize) -> VideoOutput {
        let track = Arc::new(TrackLocalStaticRTP::new(kaigi_rtc::track(
            "a",
            "a-video",
            kaigi_rtc::RtpCodecKind::Video,
        )));
        VideoOutput::new(1, track, 7, target)
    }

    fn packet(seq: u16, ts: u32, marker: bool, payload: &'static [u8]) -> rtp::Packet {
        rtp::Packet {
            header: Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ssrc: 99,
                ..Header::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x00];

    #[test]
    fn keyframes_are_recognised_in_every_packetization() {
        assert!(starts_keyframe(SPS));
        assert!(starts_keyframe(&[0x65, 0x88]));
        // STAP-A with SPS and PPS.
        assert!(starts_keyframe(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]));
        // FU-A start of an IDR slice; a middle fragment is not a start.
        assert!(starts_keyframe(&[0x7c, 0x85, 1]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 1]));
        assert!(!starts_keyframe(SLICE));
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x41, 0x9a]));
        assert!(!starts_keyframe(&[]));
        // A truncated STAP-A is read without panicking.
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x41]));
    }

    /// A switch waits for the new layer's keyframe; the stream's numbers
    /// continue across it.
    #[test]
    fn a_switch_happens_at_a_keyframe_and_numbers_continue() {
        let now = Instant::now();
        let out = output(0);
        assert!(out
            .forward(0, &packet(100, 9000, false, SLICE), now)
            .is_none());
        let p = out
            .forward(0, &packet(101, 9000, true, SPS), now)
            .map(|p| p.header);
        let p = p.expect("starts at a keyframe");
        assert_eq!((p.sequence_number, p.timestamp, p.ssrc), (101, 9000, 7));
        let p = out
            .forward(0, &packet(102, 12000, true, SLICE), now)
            .unwrap();
        assert_eq!(p.header.sequence_number, 102);
        out.retarget(Some(2), now);
        // Down: layer 0 (which does not fit) stops at once; nothing goes
        // until layer 2's keyframe.
        assert!(out
            .forward(0, &packet(103, 15000, true, SLICE), now)
            .is_none());
        assert!(out.forward(2, &packet(5000, 7, true, SLICE), now).is_none());
        let later = now + Duration::from_millis(33);
        let p = out
            .forward(2, &packet(5001, 10, false, SPS), later)
            .unwrap();
        assert_eq!(p.header.sequence_number, 103);
        assert_eq!(p.header.timestamp, 12000 + 2970);
        let p = out
            .forward(2, &packet(5002, 10, true, SLICE), later)
            .unwrap();
        assert_eq!((p.header.sequence_number, p.header.timestamp), (104, 14970));
        assert!(out
            .forward(0, &packet(104, 18000, true, SLICE), later)
            .is_none());
        // Up: layer 2 goes on until layer 0's keyframe.
        out.retarget(Some(0), later);
        assert!(out
            .forward(2, &packet(5003, 20, true, SLICE), later)
            .is_some());
        assert!(out
            .forward(0, &packet(105, 21000, true, SLICE), later)
            .is_none());
        assert!(out
            .forward(0, &packet(106, 24000, true, SPS), later)
            .is_some());
        assert_eq!(out.layer(), Some(0));
    }

    #[test]
    fn pausing_waits_for_the_end_of_a_frame() {
        let now = Instant::now();
        let out = output(0);
        out.forward(0, &packet(1, 0, false, SPS), now).unwrap();
        out.retarget(None, now);
        assert!(out.forward(0, &packet(2, 0, true, SLICE), now).is_some());
        assert!(out.forward(0, &packet(3, 3000, true, SLICE), now).is_none());
        assert_eq!(out.layer(), None);
    }

    #[test]
    fn the_estimate_picks_the_layers() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let out = output(0);
        let cand = |limit| Candidate {
            layers: &l,
            limit,
            output: &out,
        };
        let all = VideoSize::default();
        // No estimate yet: the largest.
        no_trials(&[cand(all)], None, 1, now);
        assert_eq!(out.target(), Some(0));
        // 250 kbit/s with one audio track: the smallest only.
        let c = no_trials(&[cand(all)], Some(250_000.0), 1, now);
        assert_eq!(out.target(), Some(2));
        assert_eq!(c[0].keyframe, Some(2));
        // 100 kbit/s: paused, and told so once.
        let c = no_trials(&[cand(all)], Some(100_000.0), 1, now);
        assert_eq!((out.target(), c[0].paused), (None, Some(true)));
        assert!(no_trials(&[cand(all)], Some(100_000.0), 1, now).is_empty());
        // Room again: up only after it has lasted.
        let t1 = now + Duration::from_secs(1);
        assert!(no_trials(&[cand(all)], Some(2_000_000.0), 1, t1).is_empty());
        let t2 = t1 + UP_AFTER;
        touch(&l, t2);
        let c = no_trials(&[cand(all)], Some(2_000_000.0), 1, t2);
        assert_eq!((out.target(), c[0].paused), (Some(0), Some(false)));
        // A small tile never pulls the large layer.
        let t3 = t2 + Duration::from_secs(1);
        touch(&l, t3);
        no_trials(&[cand(VideoSize::new(320, 240))], Some(2_000_000.0), 1, t3);
        assert_eq!(out.target(), Some(1));
    }

    #[test]
    fn two_videos_share_the_estimate() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let (a, b) = (output(0), output(0));
        let cands = [
            Candidate {
                layers: &l,
                limit: VideoSize::default(),
                output: &a,
            },
            Candidate {
                layers: &l,
                limit: VideoSize::default(),
                output: &b,
            },
        ];
        // 700 kbit/s: both on the middle layer rather than one large.
        no_trials(&cands, Some(700_000.0), 2, now);
        assert_eq!((a.target(), b.target()), (Some(1), Some(1)));
    }

    #[test]
    fn a_layer_that_stops_is_left() {
        let now = Instant::now();
        let l = layers(now, &[800_000, 250_000, 80_000]);
        let out = output(0);
        let later = now + LAYER_IDLE + Duration::from_millis(10);
        // Only the smallest still arrives.
        let us = later.saturating_duration_since(l[2].base).as_micros() as u64 + 1;
        l[2].last_us.store(us, Ordering::Relaxed);
        let c = Candidate {
            layers: &l,
            limit: VideoSize::default(),
            output: &out,
        };
        no_trials(&[c], Some(5_000_000.0), 1, later);
        assert_eq!(out.target(), Some(2));
    }

    #[test]
    fn the_layers_sent_are_those_someone_needs_and_the_smallest() {
        assert_eq!(active_layers(3, Some(0)), [true, true, true]);
        assert_eq!(active_layers(3, Some(1)), [false, true, true]);
        assert_eq!(active_layers(3, Some(2)), [false, false, true]);
        assert_eq!(active_layers(3, None), [false, false, true]);
        assert_eq!(active_layers(2, Some(7)), [false, true]);
        let l = [
            Layer::new(VideoSize::new(640, 480)),
            Layer::new(VideoSize::new(320, 240)),
            Layer::new(VideoSize::new(160, 120)),
        ];
        assert_eq!(cap(&l, VideoSize::default()), 0);
        assert_eq!(cap(&l, VideoSize::new(352, 198)), 2, "320×240 is too tall");
        assert_eq!(cap(&l, VideoSize::new(352, 264)), 1);
        assert_eq!(
            cap(&l, VideoSize::new(100, 100)),
            2,
            "none fits: the smallest"
        );
    }

    #[test]
    fn more_layers_are_told_at_once_fewer_after_a_while() {
        let t0 = Instant::now();
        let mut d = LayerDemand::default();
        assert_eq!(d.update(0, t0), None, "every layer is sent at the start");
        assert_eq!(d.update(2, t0), None);
        assert_eq!(d.update(2, t0 + LAYER_UNNEEDED_FOR / 2), None);
        assert_eq!(d.update(2, t0 + LAYER_UNNEEDED_FOR), Some(2));
        assert_eq!(d.update(2, t0 + LAYER_UNNEEDED_FOR * 2), None);
        // Needed again: at once.
        let t1 = t0 + LAYER_UNNEEDED_FOR * 3;
        assert_eq!(d.update(0, t1), Some(0));
        // Unneeded for a moment only: nothing told, and the wait starts
        // again.
        assert_eq!(d.update(1, t1), None);
        assert_eq!(d.update(0, t1 + LAYER_UNNEEDED_FOR / 2), None);
        assert_eq!(d.update(1, t1 + LAYER_UNNEEDED_FOR), None);
        assert_eq!(d.update(1, t1 + LAYER_UNNEEDED_FOR * 2), Some(1));
    }

    #[test]
    fn an_outstanding_keyframe_is_asked_again_only_after_the_gap() {
        let l = Layer::new(VideoSize::new(320, 240));
        let t0 = Instant::now();
        assert!(l.may_ask_keyframe(t0));
        assert!(!l.may_ask_keyframe(t0 + Duration::from_millis(100)));
        assert!(!l.may_ask_keyframe(t0 + KEYFRAME_GAP - Duration::from_millis(1)));
        assert!(l.may_ask_keyframe(t0 + KEYFRAME_GAP));
        assert!(!l.may_ask_keyframe(t0 + KEYFRAME_GAP + Duration::from_millis(10)));
    }

    #[test]
    fn once_the_keyframe_arrived_the_next_ask_goes_at_once() {
        // A subscriber joining just after another one's keyframe came: its
        // ask is not held back (it was, until the gap ended: a first frame
        // 750 ms after join instead of 60).
        let l = Layer::new(VideoSize::new(320, 240));
        let t0 = Instant::now();
        assert!(l.may_ask_keyframe(t0));
        l.keyframe_arrived();
        assert!(l.may_ask_keyframe(t0 + Duration::from_millis(60)));
        assert!(!l.may_ask_keyframe(t0 + Duration::from_millis(80)));
    }
}
