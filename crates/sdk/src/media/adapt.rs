//! What the video encoder makes of the connection's send estimate: the
//! picture size, bitrate and frame rate that fit, with hysteresis so the
//! picture does not flap. No I/O and no clock of its own (every instant is
//! handed in), so it is tested as plain values.

use std::time::{Duration, Instant};

/// What the encoder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoPlan {
    /// The picture is scaled down by this (1, 2 or 4) in each direction.
    pub divisor: u32,
    /// The encoder's target, bits per second.
    pub bitrate_bps: u32,
    /// Only every `frame_step`-th frame is encoded (1 or 2; for a screen
    /// up to 4).
    pub frame_step: u32,
}

/// Kept for audio (Opus at 32 kbit/s) and packet headers.
pub(crate) const AUDIO_RESERVE_BPS: f64 = 60_000.0;
/// The share of the estimate the encoder aims at: rate control overshoots,
/// and retransmissions need room.
pub(crate) const VIDEO_SHARE: f64 = 0.85;
/// The lowest video bitrate asked of the encoder.
pub(crate) const MIN_VIDEO_BPS: u32 = 40_000;
/// How long a better plan must stay affordable before the encoder moves
/// up to it (moving down is immediate).
pub(crate) const UP_AFTER: Duration = Duration::from_secs(3);
/// A bitrate change smaller than this share is not worth a new encoder
/// (and the keyframe it starts with).
const BITRATE_STEP: f64 = 0.25;

/// The plan for a send estimate, with the encoder's configured bitrate as
/// the ceiling.
pub(crate) fn plan_for(estimate_bps: f64, configured_bps: u32) -> VideoPlan {
    let budget = (estimate_bps * VIDEO_SHARE - AUDIO_RESERVE_BPS).max(0.0);
    // A smaller picture before a lower frame rate: people read faces and
    // lips from motion more than from detail.
    // Steps relative to the configured bitrate (what the full picture
    // needs): for the default 1 Mbit/s, 550, 200 and 50 kbit/s.
    let configured = f64::from(configured_bps.max(MIN_VIDEO_BPS));
    let (divisor, frame_step) = if budget >= 0.55 * configured {
        (1, 1)
    } else if budget >= 0.2 * configured {
        (2, 1)
    } else if budget >= 0.05 * configured {
        (4, 1)
    } else {
        (4, 2)
    };
    let bitrate_bps = (budget as u32).clamp(MIN_VIDEO_BPS, configured_bps.max(MIN_VIDEO_BPS));
    VideoPlan {
        divisor,
        bitrate_bps,
        frame_step,
    }
}

/// The plan for a shared screen: always the whole picture (text scaled
/// down cannot be read, and changing size costs a keyframe), the bitrate
/// the estimate allows, and fewer frames when even that is thin: a
/// screen's picture changes little from frame to frame, so each frame
/// gets the bits to stay sharp.
pub(crate) fn screen_plan_for(estimate_bps: f64, configured_bps: u32) -> VideoPlan {
    let budget = (estimate_bps * VIDEO_SHARE - AUDIO_RESERVE_BPS).max(0.0);
    let configured = f64::from(configured_bps.max(MIN_VIDEO_BPS));
    let frame_step = if budget >= 0.3 * configured {
        1
    } else if budget >= 0.1 * configured {
        2
    } else {
        4
    };
    VideoPlan {
        divisor: 1,
        bitrate_bps: (budget as u32).clamp(MIN_VIDEO_BPS, configured_bps.max(MIN_VIDEO_BPS)),
        frame_step,
    }
}

/// The encoder's plan over time.
/// Down at once, up only after the better choice has been affordable for
/// [`UP_AFTER`]: the rule both adaptations follow.
#[derive(Debug, Default)]
struct UpAfter {
    /// Since when a better choice than the current one has been affordable.
    better_since: Option<Instant>,
}

impl UpAfter {
    /// Whether to move to what is wanted at `now`, given that it is
    /// `worse` or `better` than the current choice.
    fn take(&mut self, worse: bool, better: bool, now: Instant) -> bool {
        if worse || !better {
            self.better_since = None;
            return worse;
        }
        let since = *self.better_since.get_or_insert(now);
        let held = now.duration_since(since) >= UP_AFTER;
        if held {
            self.better_since = None;
        }
        held
    }
}

#[derive(Debug)]
pub(crate) struct Adaptation {
    configured_bps: u32,
    current: VideoPlan,
    up: UpAfter,
    /// The plan for an estimate: [`plan_for`], or [`screen_plan_for`].
    plan: fn(f64, u32) -> VideoPlan,
}

impl Adaptation {
    /// Starts at the configured bitrate and full size.
    pub fn new(configured_bps: u32) -> Self {
        Self::with_plan(configured_bps, plan_for)
    }

    /// For a shared screen: the size never changes (see
    /// [`screen_plan_for`]).
    pub fn for_screen(configured_bps: u32) -> Self {
        Self::with_plan(configured_bps, screen_plan_for)
    }

    fn with_plan(configured_bps: u32, plan: fn(f64, u32) -> VideoPlan) -> Self {
        Adaptation {
            plan,
            configured_bps,
            current: VideoPlan {
                divisor: 1,
                bitrate_bps: configured_bps,
                frame_step: 1,
            },
            up: UpAfter::default(),
        }
    }

    /// The plan in force.
    pub fn current(&self) -> VideoPlan {
        self.current
    }

    /// Takes the estimate at `now` (`None`: no estimate yet); the new plan
    /// when the encoder must change.
    pub fn update(&mut self, estimate_bps: Option<f64>, now: Instant) -> Option<VideoPlan> {
        let wanted = (self.plan)(estimate_bps?, self.configured_bps);
        let cur = self.current;
        let worse = wanted.divisor > cur.divisor
            || wanted.frame_step > cur.frame_step
            || f64::from(wanted.bitrate_bps) < f64::from(cur.bitrate_bps) * (1.0 - BITRATE_STEP);
        let better = wanted.divisor < cur.divisor
            || wanted.frame_step < cur.frame_step
            || f64::from(wanted.bitrate_bps) > f64::from(cur.bitrate_bps) * (1.0 + BITRATE_STEP);
        if !self.up.take(worse, better, now) {
            return None;
        }
        self.current = wanted;
        Some(wanted)
    }
}

/// The share of the top layer's bitrate each simulcast layer is sent at,
/// largest first (each has a quarter of the pixels of the one before;
/// small pictures need more bits per pixel).
const LAYER_SHARES: [f64; 3] = [1.0, 0.3, 0.07];
/// A layer is sent only with at least this share of its bitrate.
const LAYER_MIN_SHARE: f64 = 0.4;

/// What each simulcast layer (largest first) sends for a send estimate:
/// its bitrate, or `None` when it is off. Layers are filled from the
/// smallest up, each first to its minimum, then the rest from the
/// smallest up to each one's full bitrate: the smallest is always sent
/// (at [`MIN_VIDEO_BPS`] at least), so every subscriber has a picture.
pub(crate) fn layer_rates(estimate_bps: f64, top_bps: u32, layers: usize) -> Vec<Option<u32>> {
    let mut left = (estimate_bps * VIDEO_SHARE - AUDIO_RESERVE_BPS).max(0.0);
    let full: Vec<f64> = (0..layers)
        .map(|i| (f64::from(top_bps) * LAYER_SHARES[i.min(2)]).max(f64::from(MIN_VIDEO_BPS)))
        .collect();
    let mut rates: Vec<Option<f64>> = vec![None; layers];
    for i in (0..layers).rev() {
        let min = (full[i] * LAYER_MIN_SHARE).max(f64::from(MIN_VIDEO_BPS));
        if i + 1 == layers {
            let r = left.min(min).max(f64::from(MIN_VIDEO_BPS));
            left -= r.min(left);
            rates[i] = Some(r);
        } else if min <= left {
            left -= min;
            rates[i] = Some(min);
        } else {
            break;
        }
    }
    for i in (0..layers).rev() {
        if let Some(r) = rates[i].as_mut() {
            let more = (full[i] - *r).max(0.0).min(left);
            *r += more;
            left -= more;
        }
    }
    rates.into_iter().map(|r| r.map(|r| r as u32)).collect()
}

/// Each simulcast layer's bitrate over time: down (or off) at once, up
/// (or on) only after [`UP_AFTER`].
#[derive(Debug)]
pub(crate) struct LayerAdaptation {
    top_bps: u32,
    current: Vec<Option<u32>>,
    up: UpAfter,
}

impl LayerAdaptation {
    /// Starts with every layer at its full bitrate.
    pub fn new(top_bps: u32, layers: usize) -> Self {
        LayerAdaptation {
            top_bps,
            current: layer_rates(f64::INFINITY, top_bps, layers),
            up: UpAfter::default(),
        }
    }

    /// The bitrates in force, largest layer first (`None`: off).
    pub fn current(&self) -> &[Option<u32>] {
        &self.current
    }

    /// Takes the estimate at `now` (`None`: none yet); the new bitrates
    /// when they must change.
    pub fn update(&mut self, estimate_bps: Option<f64>, now: Instant) -> Option<Vec<Option<u32>>> {
        let wanted = layer_rates(estimate_bps?, self.top_bps, self.current.len());
        let step = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) => f64::from(b) - f64::from(a) * (1.0 + BITRATE_STEP),
            (None, Some(_)) => 1.0,
            _ => -1.0,
        };
        let worse = self
            .current
            .iter()
            .zip(&wanted)
            .any(|(&c, &w)| match (c, w) {
                (Some(_), None) => true,
                (Some(c), Some(w)) => f64::from(w) < f64::from(c) * (1.0 - BITRATE_STEP),
                _ => false,
            });
        let better = self
            .current
            .iter()
            .zip(&wanted)
            .any(|(&c, &w)| step(c, w) > 0.0);
        if !self.up.take(worse, better, now) {
            return None;
        }
        self.current = wanted.clone();
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_keeps_its_size_and_drops_frames_instead() {
        let t0 = Instant::now();
        let mut a = Adaptation::for_screen(2_000_000);
        for (estimate, step) in [
            (3_000_000.0, 1),
            (800_000.0, 1),
            (400_000.0, 2),
            (150_000.0, 4),
        ] {
            let plan = screen_plan_for(estimate, 2_000_000);
            assert_eq!((plan.divisor, plan.frame_step), (1, step), "{estimate}");
            assert!(plan.bitrate_bps <= 2_000_000 && plan.bitrate_bps >= MIN_VIDEO_BPS);
        }
        // Down at once, and never smaller than the whole picture.
        let down = a.update(Some(150_000.0), t0).expect("down at once");
        assert_eq!((down.divisor, down.frame_step), (1, 4));
        assert!(a.update(Some(3_000_000.0), t0).is_none(), "up only later");
        let up = a
            .update(Some(3_000_000.0), t0 + UP_AFTER)
            .expect("up after holding");
        assert_eq!((up.divisor, up.frame_step), (1, 1));
    }

    #[test]
    fn the_picture_shrinks_with_the_estimate() {
        let full = plan_for(1_100_000.0, 1_000_000);
        assert_eq!((full.divisor, full.frame_step), (1, 1));
        assert!(
            full.bitrate_bps <= 1_000_000,
            "the configured bitrate is the ceiling"
        );
        let half = plan_for(400_000.0, 1_000_000);
        assert_eq!((half.divisor, half.frame_step), (2, 1));
        assert!(f64::from(half.bitrate_bps) + AUDIO_RESERVE_BPS <= 400_000.0);
        let quarter = plan_for(250_000.0, 1_000_000);
        assert_eq!((quarter.divisor, quarter.frame_step), (4, 1));
        let least = plan_for(60_000.0, 1_000_000);
        assert_eq!((least.divisor, least.frame_step), (4, 2));
        assert_eq!(least.bitrate_bps, MIN_VIDEO_BPS);
    }

    #[test]
    fn down_at_once_up_only_after_it_holds() {
        let t0 = Instant::now();
        let mut a = Adaptation::new(1_000_000);
        assert_eq!(a.update(None, t0), None, "no estimate, no change");
        assert_eq!(a.update(Some(1_100_000.0), t0), None, "full fits");
        let down = a.update(Some(250_000.0), t0).expect("down at once");
        assert_eq!(down.divisor, 4);
        // The link frees: up only after UP_AFTER of it.
        assert_eq!(
            a.update(Some(1_100_000.0), t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            a.update(Some(1_100_000.0), t0 + Duration::from_secs(3)),
            None
        );
        let up = a
            .update(Some(1_100_000.0), t0 + Duration::from_secs(4))
            .expect("up after it held");
        assert_eq!(up.divisor, 1);
        // A dip resets the wait.
        a.update(Some(250_000.0), t0 + Duration::from_secs(5));
        a.update(Some(1_100_000.0), t0 + Duration::from_secs(6));
        a.update(Some(250_000.0), t0 + Duration::from_secs(7));
        assert_eq!(
            a.update(Some(1_100_000.0), t0 + Duration::from_secs(9)),
            None
        );
        assert_eq!(a.current().divisor, 4);
    }

    #[test]
    fn small_wobbles_keep_the_encoder() {
        let t0 = Instant::now();
        let mut a = Adaptation::new(1_000_000);
        a.update(Some(500_000.0), t0).expect("to half size");
        let kept = a.current();
        for (i, e) in [480_000.0, 520_000.0, 470_000.0].into_iter().enumerate() {
            assert_eq!(
                a.update(Some(e), t0 + Duration::from_secs(i as u64 + 5)),
                None
            );
        }
        assert_eq!(a.current(), kept);
    }

    #[test]
    fn layers_fill_from_the_smallest_up() {
        // Plenty: every layer at its full bitrate.
        assert_eq!(
            layer_rates(5_000_000.0, 800_000, 3),
            vec![Some(800_000), Some(240_000), Some(56_000)]
        );
        // 250 kbit/s: the two small layers, the smallest full.
        let thin = layer_rates(250_000.0, 800_000, 3);
        assert_eq!(thin[0], None, "{thin:?}");
        assert!(thin[1].is_some_and(|r| r >= 96_000), "{thin:?}");
        assert!(thin[2].is_some_and(|r| r >= 40_000), "{thin:?}");
        // Almost nothing: the smallest alone, at the floor.
        assert_eq!(
            layer_rates(50_000.0, 800_000, 3),
            vec![None, None, Some(MIN_VIDEO_BPS)]
        );
        // Never more than there is room for, once the smallest is paid.
        for e in [150_000.0, 400_000.0, 700_000.0, 1_200_000.0] {
            let sum: u32 = layer_rates(e, 800_000, 3).iter().flatten().sum();
            let room = (e * VIDEO_SHARE - AUDIO_RESERVE_BPS).max(f64::from(MIN_VIDEO_BPS));
            assert!(f64::from(sum) <= room + 1.0, "{e}: {sum}");
        }
    }

    #[test]
    fn layers_go_off_at_once_and_on_after_it_holds() {
        let t0 = Instant::now();
        let mut a = LayerAdaptation::new(800_000, 3);
        let down = a.update(Some(250_000.0), t0).expect("off at once");
        assert_eq!(down[0], None);
        assert_eq!(
            a.update(Some(5_000_000.0), t0 + Duration::from_secs(1)),
            None
        );
        let up = a
            .update(Some(5_000_000.0), t0 + Duration::from_secs(5))
            .expect("on after it held");
        assert_eq!(up, vec![Some(800_000), Some(240_000), Some(56_000)]);
    }
}
