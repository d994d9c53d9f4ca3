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
        if let Some(b) = &self.budget {
            if !self.reported.is_empty() {
                b.set_loss(self.lost as f64 / self.reported.len() as f64);
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
        self.target = if gcc < self.target {
            gcc
        } else {
            match self.acked_rate(now) {
                Some(acked) => gcc.min(self.target.max(acked * LEAD_FACTOR + LEAD_BPS)),
                // Nothing shown yet: held where it starts.
                None => self.target,
            }
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
}
