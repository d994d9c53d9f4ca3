//! The send estimate: GCC (delay and loss), held to what the path has
//! been shown to carry.
//!
//! GCC's increase does not look at what is actually sent: while the
//! encoder sends less than the estimate (it follows it a step at a time,
//! and waits before stepping up), the estimate climbs far above the
//! path's capacity, and the next step up of the encoder overshoots it by
//! that much, losing packets until GCC backs off. So, as libwebrtc does,
//! the estimate is held to a multiple of the rate the far end
//! acknowledges: it leads the sending rate, far enough for the encoder to
//! step up, never so far that the step floods the path. It is only held
//! on the way up: sending little (a still picture) does not lower it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

use crate::pacing::SendBudget;

/// The estimate may lead the acknowledged rate by this factor…
pub const LEAD_FACTOR: f64 = 1.5;
/// …plus this, in bits per second.
pub const LEAD_BPS: f64 = 50_000.0;
/// The window the acknowledged rate is measured over.
const ACKED_WINDOW: Duration = Duration::from_millis(1000);
/// Loss over the window above this share while the bottleneck queues
/// more than [`CONGESTED_QUEUE`] is congestion: the estimate drops to what
/// arrives at once (GCC's own loss and delay reactions take seconds to
/// come down from a high estimate).
const CONGESTED_LOSS: f64 = 0.1;
/// See [`CONGESTED_LOSS`]: a path that drops packets at random loses as
/// much, but builds no queue.
const CONGESTED_QUEUE: Duration = Duration::from_millis(40);
/// A bottleneck queue standing above this means more is sent than the
/// path carries, even with no loss yet (a deep router buffer): the
/// estimate drops below what arrives, so the queue drains and audio
/// waits in it no longer.
const STANDING_QUEUE: Duration = Duration::from_millis(100);
/// See [`STANDING_QUEUE`]: the share of the acknowledged rate kept.
const STANDING_SHARE: f64 = 0.9;
/// Loss over the window above this, or a bottleneck queue above
/// [`LIMIT_QUEUE`], shows the path's limit (see `SendBudget::constrained`).
const LIMIT_LOSS: f64 = 0.02;
/// See [`LIMIT_LOSS`].
const LIMIT_QUEUE: Duration = Duration::from_millis(150);
/// Reports needed in the window before its loss counts.
const LOSS_MIN_REPORTS: usize = 20;
/// The fastest one-way delay over this long is the path's own (no queue).
const BASE_DELAY_WINDOW: Duration = Duration::from_secs(10);
/// The queue now: the fastest packet's extra delay over this long.
const QUEUE_WINDOW: Duration = Duration::from_millis(100);

/// GCC held to [`LEAD_FACTOR`] times the acknowledged rate.
pub struct LeadingGcc {
    gcc: Gcc,
    min: f64,
    /// Arrived packets: when the report about them came, and their size.
    acked: VecDeque<(Instant, usize)>,
    acked_bytes: usize,
    /// When the first report came (the window is not full before).
    since: Option<Instant>,
    target: f64,
    /// Reported packets over the window: when, and whether they arrived.
    reported: VecDeque<(Instant, bool)>,
    lost: usize,
    /// Where the loss over the window is published.
    budget: Option<Arc<SendBudget>>,
    /// After a cut for congestion, no rise before this.
    held_until: Option<Instant>,
    /// One-way delays (receiver's clock minus ours, seconds; only their
    /// differences matter), by departure: the window's minimum is the
    /// path without a queue.
    delays: MinWindow,
    /// The same over [`QUEUE_WINDOW`]: the queue's level now.
    recent: MinWindow,
    origin: Option<Instant>,
}

/// The minimum of values over a sliding window of time (a monotonic
/// deque: amortized O(1) a value).
#[derive(Debug, Default)]
struct MinWindow {
    values: VecDeque<(Instant, f64)>,
}

impl MinWindow {
    fn push(&mut self, at: Instant, v: f64, window: Duration) {
        while self.values.back().is_some_and(|&(_, b)| b >= v) {
            self.values.pop_back();
        }
        self.values.push_back((at, v));
        while self
            .values
            .front()
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) > window)
        {
            self.values.pop_front();
        }
    }

    fn min(&self) -> Option<f64> {
        self.values.front().map(|&(_, v)| v)
    }
}

impl LeadingGcc {
    /// An estimator starting at `initial`, held within `min..=max`.
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        LeadingGcc {
            gcc: Gcc::new(initial, min, max),
            min,
            acked: VecDeque::new(),
            acked_bytes: 0,
            since: None,
            target: initial.clamp(min, max),
            reported: VecDeque::new(),
            lost: 0,
            budget: None,
            held_until: None,
            delays: MinWindow::default(),
            recent: MinWindow::default(),
            origin: None,
        }
    }

    /// Publishes the share of packets lost over the last second in
    /// `budget` (see [`SendBudget::loss`]).
    pub fn publishing_loss(mut self, budget: Arc<SendBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Leads from `target` instead of the initial GCC figure: GCC starts
    /// high (so it does not limit until the path shows congestion) and
    /// the estimate from `target`, growing with what is acknowledged.
    pub fn leading_from(mut self, target: f64) -> Self {
        self.target = target.clamp(self.min, self.gcc.target_bitrate().max(self.min));
        self
    }

    /// The bottleneck's queue now: the latest packets' delay over the
    /// fastest of the last ten seconds.
    fn network_queue(&self) -> Option<Duration> {
        let (base, now) = (self.delays.min()?, self.recent.min()?);
        Some(Duration::from_secs_f64((now - base).max(0.0)))
    }

    /// What the far end acknowledged over the last window, bits per
    /// second; `None` before a full window.
    fn acked_rate(&self, now: Instant) -> Option<f64> {
        let since = self.since?;
        if now.saturating_duration_since(since) < ACKED_WINDOW {
            return None;
        }
        Some(self.acked_bytes as f64 * 8.0 / ACKED_WINDOW.as_secs_f64())
    }
}

impl BandwidthEstimator for LeadingGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        self.since.get_or_insert(now);
        for r in reports.iter().filter(|r| r.arrived) {
            self.acked.push_back((now, r.size));
            self.acked_bytes += r.size;
        }
        for r in reports {
            self.reported.push_back((now, r.arrived));
            self.lost += usize::from(!r.arrived);
        }
        while let Some(&(at, arrived)) = self.reported.front() {
            if now.saturating_duration_since(at) < ACKED_WINDOW {
                break;
            }
            self.reported.pop_front();
            self.lost -= usize::from(!arrived);
        }
        for r in reports {
            let Some(arrival) = r.arrival else { continue };
            let origin = *self.origin.get_or_insert(r.departure);
            let sent = r.departure.saturating_duration_since(origin).as_secs_f64();
            let d = arrival.as_secs_f64() - sent;
            self.delays.push(r.departure, d, BASE_DELAY_WINDOW);
            self.recent.push(r.departure, d, QUEUE_WINDOW);
        }
        if let Some(b) = &self.budget {
            if !self.reported.is_empty() {
                b.set_loss(self.lost as f64 / self.reported.len() as f64);
            }
            let queue = self.network_queue();
            if let Some(q) = queue {
                b.set_network_queue(q);
            }
            let lossy = self.reported.len() >= LOSS_MIN_REPORTS
                && self.lost as f64 / self.reported.len() as f64 > LIMIT_LOSS;
            if lossy || queue.is_some_and(|q| q > LIMIT_QUEUE) {
                b.set_constrained();
            }
        }
        while let Some(&(at, size)) = self.acked.front() {
            if now.saturating_duration_since(at) < ACKED_WINDOW {
                break;
            }
            self.acked.pop_front();
            self.acked_bytes -= size;
        }
        // Down whenever GCC goes down (congestion); up no further than
        // the lead over what arrives. Sending less than the estimate (a
        // still picture, a muted camera) does not lower it.
        let gcc = self.gcc.target_bitrate();
        let acked = self.acked_rate(now);
        let loss = (self.reported.len() >= LOSS_MIN_REPORTS)
            .then(|| self.lost as f64 / self.reported.len() as f64);
        let held = self.held_until.is_some_and(|t| now < t);
        let queue = self.network_queue().unwrap_or_default();
        self.target = match (acked, loss) {
            (Some(acked), Some(loss)) if loss > CONGESTED_LOSS && queue > CONGESTED_QUEUE => {
                // Congestion: down to what arrives, and held there a while.
                self.held_until = Some(now + ACKED_WINDOW);
                gcc.min(acked).min(self.target)
            }
            (Some(acked), _) if queue > STANDING_QUEUE && !held => {
                // A standing queue: below what arrives, until it drains.
                self.held_until = Some(now + ACKED_WINDOW);
                gcc.min(acked * STANDING_SHARE).min(self.target)
            }
            _ if gcc < self.target => gcc,
            _ if held => self.target,
            (Some(acked), _) => gcc.min(self.target.max(acked * LEAD_FACTOR + LEAD_BPS)),
            // Nothing shown yet: held where it starts.
            (None, _) => self.target,
        }
        .max(self.min);
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    fn reports(from: u64, n: u64, size: usize, t: Instant) -> Vec<PacketReport> {
        (from..from + n)
            .map(|id| PacketReport {
                ssrc: 1,
                id,
                rtp_sequence_number: id as u16,
                is_twcc: true,
                twcc_sequence_number: id as u16,
                size,
                arrived: true,
                departure: t,
                arrival: Some(Duration::from_millis(id)),
                ecn: Ecn::default(),
            })
            .collect()
    }

    /// Sending 100 kbit/s on a quiet path: the estimate leads that, it
    /// does not run off to GCC's own figure.
    #[test]
    fn the_estimate_leads_what_is_sent() {
        let mut e = LeadingGcc::new(150_000.0, 50_000.0, 2_500_000.0);
        let t0 = Instant::now();
        let mut id = 0;
        // 100 kbit/s: 12.5 kB a second, reported every 100 ms.
        for step in 0..50u64 {
            let t = t0 + Duration::from_millis(step * 100);
            e.on_reports(t, &reports(id, 5, 250, t));
            id += 5;
        }
        let target = e.target_bitrate();
        let most = 100_000.0 * LEAD_FACTOR + LEAD_BPS;
        assert!(target <= most * 1.05, "{target}");
        assert!(target >= 150_000.0, "{target}");
    }

    /// Sending less than the estimate does not lower it.
    #[test]
    fn sending_little_keeps_the_estimate() {
        let mut e = LeadingGcc::new(800_000.0, 50_000.0, 2_500_000.0);
        let t0 = Instant::now();
        for step in 0..50u64 {
            let t = t0 + Duration::from_millis(step * 100);
            e.on_reports(t, &reports(step * 5, 5, 250, t));
        }
        assert!(e.target_bitrate() >= 800_000.0, "{}", e.target_bitrate());
    }

    /// A cap appears under a high estimate: the bottleneck's queue fills,
    /// then half of what is sent is lost. The estimate drops to what
    /// arrives at once; random loss with no queue does not cut it.
    #[test]
    fn congestion_loss_drops_the_estimate_to_what_arrives() {
        let mut e = LeadingGcc::new(3_000_000.0, 50_000.0, 3_000_000.0).leading_from(1_000_000.0);
        let t0 = Instant::now();
        // 25 packets every 100 ms (~300 kbit/s), arriving 20 ms after
        // they left plus `queue` ms; every other one lost when `lossy`.
        let batch = |step: u64, queue: u64, lossy: bool| -> Vec<PacketReport> {
            let t = t0 + Duration::from_millis(step * 100);
            let mut r = reports(step * 25, 25, 150, t);
            for (i, p) in r.iter_mut().enumerate() {
                p.arrived = !lossy || i % 2 == 0;
                p.arrival = Some(Duration::from_millis(step * 100 + 20 + queue));
            }
            r
        };
        for step in 0..10u64 {
            e.on_reports(
                t0 + Duration::from_millis(step * 100 + 50),
                &batch(step, 0, false),
            );
        }
        assert!(e.target_bitrate() >= 1_000_000.0);
        let mut cut_at = None;
        for step in 10..20u64 {
            e.on_reports(
                t0 + Duration::from_millis(step * 100 + 50),
                &batch(step, 200, true),
            );
            if cut_at.is_none() && e.target_bitrate() < 400_000.0 {
                cut_at = Some(step);
            }
        }
        let cut_at = cut_at.expect("the estimate fell to what arrives");
        assert!(cut_at <= 13, "cut after {} ms of loss", (cut_at - 9) * 100);

        // 12 % random loss and no queue: no cut of its own (GCC's loss
        // reaction alone decides).
        let mut e = LeadingGcc::new(400_000.0, 50_000.0, 3_000_000.0);
        let mut gcc = Gcc::new(400_000.0, 50_000.0, 3_000_000.0);
        for step in 0..30u64 {
            let t = t0 + Duration::from_millis(step * 100);
            let mut r = reports(step * 40, 40, 150, t);
            for (i, p) in r.iter_mut().enumerate() {
                p.arrived = i % 8 != 0;
            }
            e.on_reports(t, &r);
            gcc.on_reports(t, &r);
            assert!(
                e.target_bitrate() >= gcc.target_bitrate().min(400_000.0) * 0.99,
                "{} against GCC's {}",
                e.target_bitrate(),
                gcc.target_bitrate()
            );
        }
    }

    /// The queue at the path's bottleneck shows as delay over the fastest
    /// seen, and goes when the queue drains.
    #[test]
    fn the_network_queue_is_the_delay_over_the_fastest() {
        let budget = Arc::new(SendBudget::default());
        let mut e =
            LeadingGcc::new(500_000.0, 50_000.0, 3_000_000.0).publishing_loss(budget.clone());
        let t0 = Instant::now();
        // A packet every 10 ms; reported in batches of 10. The far end's
        // clock is 5 s ahead; the path takes 20 ms, plus `queue(i)`.
        let run = |e: &mut LeadingGcc, from: u64, to: u64, queue: &dyn Fn(u64) -> u64| {
            for batch in (from..to).step_by(10) {
                let r: Vec<PacketReport> = (batch..batch + 10)
                    .map(|i| {
                        let mut p =
                            reports(i, 1, 200, t0 + Duration::from_millis(i * 10))[0].clone();
                        p.arrival = Some(Duration::from_millis(5_000 + i * 10 + 20 + queue(i)));
                        p
                    })
                    .collect();
                e.on_reports(t0 + Duration::from_millis((batch + 10) * 10 + 20), &r);
            }
        };
        run(&mut e, 0, 200, &|_| 0);
        assert!(budget.network_queue() < Duration::from_millis(2));
        // The queue builds by 1 ms a packet to 150 ms.
        run(&mut e, 200, 350, &|i| i - 200);
        let q = budget.network_queue();
        assert!(
            (Duration::from_millis(135)..=Duration::from_millis(150)).contains(&q),
            "{q:?}"
        );
        run(&mut e, 350, 400, &|_| 0);
        assert!(budget.network_queue() < Duration::from_millis(2));
    }

    /// A queue that stands (a deep buffer filled, no loss yet) brings the
    /// estimate below what arrives.
    #[test]
    fn a_standing_queue_brings_the_estimate_below_what_arrives() {
        let mut e = LeadingGcc::new(3_000_000.0, 50_000.0, 3_000_000.0).leading_from(1_000_000.0);
        let t0 = Instant::now();
        // 25 packets of 150 bytes every 100 ms: 300 kbit/s arrives.
        for step in 0..40u64 {
            let t = t0 + Duration::from_millis(step * 100);
            let queue = if step < 10 { 0 } else { 150 };
            let mut r = reports(step * 25, 25, 150, t);
            for p in r.iter_mut() {
                p.arrival = Some(Duration::from_millis(step * 100 + 20 + queue));
            }
            e.on_reports(t + Duration::from_millis(50), &r);
            if step == 9 {
                assert!(e.target_bitrate() >= 1_000_000.0);
            }
        }
        let target = e.target_bitrate();
        assert!(target <= 300_000.0 * STANDING_SHARE * 1.01, "{target}");
    }

    /// A path is constrained once it loses packets (or queues deeply);
    /// a clean one is not.
    #[test]
    fn loss_shows_the_paths_limit() {
        let budget = Arc::new(SendBudget::default());
        let mut e =
            LeadingGcc::new(500_000.0, 50_000.0, 3_000_000.0).publishing_loss(budget.clone());
        let t0 = Instant::now();
        for step in 0..20u64 {
            let t = t0 + Duration::from_millis(step * 100);
            e.on_reports(t, &reports(step * 25, 25, 150, t));
        }
        assert!(!budget.constrained());
        for step in 20..30u64 {
            let t = t0 + Duration::from_millis(step * 100);
            let mut r = reports(step * 25, 25, 150, t);
            for (i, p) in r.iter_mut().enumerate() {
                p.arrived = i % 10 != 0;
            }
            e.on_reports(t, &r);
        }
        assert!(budget.constrained());
    }
}
