//! Network quality from a peer connection's statistics: packet loss and
//! round-trip time per direction, graded on TRTC's 0–6 scale.

use std::time::Instant;

use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::statistics::report::RTCStatsReportEntry;
use rtc::statistics::StatsSelector;
use webrtc::peer_connection::PeerConnection;

/// TRTC's network quality grades.
pub mod grade {
    /// Not known (nothing measured yet).
    pub const UNKNOWN: u8 = 0;
    /// Excellent.
    pub const EXCELLENT: u8 = 1;
    /// Good.
    pub const GOOD: u8 = 2;
    /// Poor.
    pub const POOR: u8 = 3;
    /// Bad.
    pub const BAD: u8 = 4;
    /// Very bad.
    pub const VERY_BAD: u8 = 5;
    /// Disconnected.
    pub const DISCONNECTED: u8 = 6;
}

/// Grades a direction from its loss (0.0–1.0) and round-trip time: the
/// worse of the two decides.
pub fn grade(loss: f64, rtt_ms: f64) -> u8 {
    const LOSS: [f64; 4] = [0.01, 0.03, 0.08, 0.15];
    const RTT: [f64; 4] = [100.0, 200.0, 400.0, 800.0];
    let by = |v: f64, limits: [f64; 4]| {
        limits.iter().position(|l| v < *l).unwrap_or(limits.len()) as u8 + grade::EXCELLENT
    };
    by(loss.max(0.0), LOSS).max(by(rtt_ms.max(0.0), RTT))
}

/// Grades what a sender's path carries against what it would send on a
/// clean link (its congestion controller's estimate over its configured
/// bitrate): a path that fits half of it still looks fine, one that fits a
/// tenth shows a small picture.
pub fn capacity_grade(estimate_bps: f64, wanted_bps: f64) -> u8 {
    if wanted_bps <= 0.0 {
        return grade::EXCELLENT;
    }
    const SHARE: [f64; 4] = [0.6, 0.3, 0.12, 0.05];
    let share = estimate_bps / wanted_bps;
    SHARE
        .iter()
        .position(|l| share >= *l)
        .unwrap_or(SHARE.len()) as u8
        + grade::EXCELLENT
}

/// Cumulative counters read from one statistics report, and what this
/// side's congestion control and the server say about its paths.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkCounters {
    /// Packets received on inbound streams.
    pub received: u64,
    /// Packets lost on inbound streams (by sequence-number gaps).
    pub lost: u64,
    /// The worst loss fraction the other side reported for what we send
    /// (RTCP receiver reports), if we send and it reported.
    pub uplink_loss: Option<f64>,
    /// Round-trip time from RTCP reports on what we send, in ms.
    pub report_rtt_ms: Option<f64>,
    /// Round-trip time of the ICE pair's latest check, in ms.
    pub ice_rtt_ms: Option<f64>,
    /// What the selected ICE pair carries media over.
    pub path: Option<MediaPath>,
    /// The send-side congestion controller's estimate of what the uplink
    /// carries, bit/s, while publishing.
    pub send_estimate_bps: Option<f64>,
    /// What this side would send on a clean link (its configured video
    /// and audio bitrates), bit/s, while publishing.
    pub send_wanted_bps: Option<f64>,
    /// The share of sent packets the far end's transport-wide feedback
    /// reported lost over the last second, while publishing.
    pub send_loss: Option<f64>,
    /// Whether the server paused some stream's video for this side
    /// (its downlink cannot carry the smallest layer).
    pub video_paused: bool,
}

/// What media travels over: the selected ICE pair's local candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// UDP, straight to the server: the normal case.
    Udp,
    /// TCP to the server's media port (the network blocks UDP).
    Tcp,
    /// Through a TURN relay.
    Relay,
}

impl MediaPath {
    /// `"udp"`, `"tcp"` or `"relay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaPath::Udp => "udp",
            MediaPath::Tcp => "tcp",
            MediaPath::Relay => "relay",
        }
    }
}

impl LinkCounters {
    /// The best round-trip time estimate, in ms.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.report_rtt_ms.or(self.ice_rtt_ms)
    }
}

/// Reads the loss and RTT counters of a peer connection.
pub async fn link_counters(pc: &dyn PeerConnection) -> LinkCounters {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let mut c = LinkCounters::default();
    let mut selected_local = None;
    let mut locals = std::collections::HashMap::new();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::InboundRtp(s) => {
                let r = &s.received_rtp_stream_stats;
                c.received += r.packets_received;
                c.lost += r.packets_lost.max(0) as u64;
            }
            RTCStatsReportEntry::RemoteInboundRtp(s) => {
                c.uplink_loss = Some(c.uplink_loss.unwrap_or(0.0).max(s.fraction_lost));
                if s.round_trip_time_measurements > 0 {
                    let rtt = s.round_trip_time * 1000.0;
                    c.report_rtt_ms = Some(c.report_rtt_ms.unwrap_or(0.0).max(rtt));
                }
            }
            RTCStatsReportEntry::IceCandidatePair(p) if p.nominated => {
                if p.current_round_trip_time > 0.0 {
                    c.ice_rtt_ms = Some(p.current_round_trip_time * 1000.0);
                }
                selected_local = Some(p.local_candidate_id.clone());
            }
            RTCStatsReportEntry::LocalCandidate(l) => {
                let path = if l.candidate_type == RTCIceCandidateType::Relay {
                    MediaPath::Relay
                } else if l.protocol.eq_ignore_ascii_case("tcp") {
                    MediaPath::Tcp
                } else {
                    MediaPath::Udp
                };
                // A pair names its candidate by the ICE agent's id; the
                // candidate's own entry prefixes it.
                let id = l.stats.id.strip_prefix("RTCLocalIceCandidate_");
                locals.insert(id.unwrap_or(&l.stats.id).to_owned(), path);
            }
            _ => {}
        }
    }
    c.path = selected_local.and_then(|id| locals.get(&id).copied());
    c
}

/// One network-quality measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quality {
    /// Grade of what this side sends (0–6).
    pub uplink: u8,
    /// Grade of what this side receives (0–6).
    pub downlink: u8,
    /// Round-trip time, ms.
    pub rtt_ms: u32,
    /// Loss of what this side sends, percent.
    pub uplink_loss: u8,
    /// Loss of what this side receives over the interval, percent.
    pub downlink_loss: u8,
    /// What media travels over, once known.
    pub path: Option<MediaPath>,
}

/// Grades the interval between two readings. A direction that carried no
/// packets and has no report is graded by RTT alone; with no RTT either,
/// it is `UNKNOWN`.
pub fn assess(before: &LinkCounters, now: &LinkCounters) -> Quality {
    let Some(rtt) = now.rtt_ms() else {
        return Quality::default();
    };
    let received = now.received.saturating_sub(before.received);
    let lost = now.lost.saturating_sub(before.lost);
    let down_loss = if received + lost > 0 {
        lost as f64 / (received + lost) as f64
    } else {
        0.0
    };
    let up_loss = now
        .uplink_loss
        .unwrap_or(0.0)
        .max(now.send_loss.unwrap_or(0.0));
    let percent = |f: f64| (f * 100.0).round().clamp(0.0, 100.0) as u8;
    let capacity = match (now.send_estimate_bps, now.send_wanted_bps) {
        (Some(estimate), Some(wanted)) => capacity_grade(estimate, wanted),
        _ => grade::EXCELLENT,
    };
    let paused = if now.video_paused {
        grade::BAD
    } else {
        grade::EXCELLENT
    };
    Quality {
        uplink: grade(up_loss, rtt).max(capacity),
        downlink: grade(down_loss, rtt).max(paused),
        rtt_ms: rtt.round() as u32,
        uplink_loss: percent(up_loss),
        downlink_loss: percent(down_loss),
        path: now.path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_follow_the_worse_of_loss_and_rtt() {
        assert_eq!(grade(0.0, 1.0), grade::EXCELLENT);
        assert_eq!(grade(0.02, 1.0), grade::GOOD);
        assert_eq!(grade(0.0, 150.0), grade::GOOD);
        assert_eq!(grade(0.05, 150.0), grade::POOR);
        assert_eq!(grade(0.10, 10.0), grade::BAD);
        assert_eq!(grade(0.5, 10.0), grade::VERY_BAD);
        assert_eq!(grade(0.0, 5000.0), grade::VERY_BAD);
    }

    #[test]
    fn assess_uses_the_interval_not_the_total() {
        let before = LinkCounters {
            received: 1000,
            lost: 500,
            ice_rtt_ms: Some(2.0),
            ..Default::default()
        };
        let now = LinkCounters {
            received: 1995,
            lost: 504,
            ice_rtt_ms: Some(2.0),
            ..Default::default()
        };
        let q = assess(&before, &now);
        assert_eq!((q.downlink, q.downlink_loss), (grade::EXCELLENT, 0));
        assert_eq!(q.uplink, grade::EXCELLENT);
        let lossy = LinkCounters {
            received: 2905,
            lost: 604,
            uplink_loss: Some(0.2),
            report_rtt_ms: Some(300.0),
            ice_rtt_ms: Some(2.0),
            path: Some(MediaPath::Tcp),
            ..Default::default()
        };
        let q = assess(&now, &lossy);
        assert_eq!((q.downlink, q.downlink_loss), (grade::BAD, 10));
        assert_eq!(
            (q.uplink, q.uplink_loss, q.rtt_ms),
            (grade::VERY_BAD, 20, 300)
        );
        assert_eq!(q.path, Some(MediaPath::Tcp));
        assert_eq!(
            assess(&before, &LinkCounters::default()),
            Quality::default()
        );
    }

    #[test]
    fn a_thin_uplink_and_paused_video_lower_the_grades() {
        let clean = LinkCounters {
            ice_rtt_ms: Some(2.0),
            send_wanted_bps: Some(1_500_000.0),
            send_estimate_bps: Some(2_000_000.0),
            ..Default::default()
        };
        let q = assess(&clean, &clean);
        assert_eq!((q.uplink, q.downlink), (grade::EXCELLENT, grade::EXCELLENT));
        // 250 kbit/s of 1.5 Mbit/s: a small picture.
        let thin = LinkCounters {
            send_estimate_bps: Some(250_000.0),
            ..clean
        };
        assert_eq!(assess(&clean, &thin).uplink, grade::POOR);
        let thinner = LinkCounters {
            send_estimate_bps: Some(50_000.0),
            send_loss: Some(0.02),
            ..clean
        };
        let q = assess(&clean, &thinner);
        assert_eq!((q.uplink, q.uplink_loss), (grade::VERY_BAD, 2));
        let paused = LinkCounters {
            video_paused: true,
            ..clean
        };
        let q = assess(&clean, &paused);
        assert_eq!((q.uplink, q.downlink), (grade::EXCELLENT, grade::BAD));
    }
}
