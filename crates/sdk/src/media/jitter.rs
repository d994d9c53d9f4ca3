//! The receive side of audio: an adaptive jitter buffer. Packets arrive
//! when the network delivers them; a 20 ms playout clock takes one frame
//! at a time, after a delay that covers how much the arrivals spread
//! (their transit times' 95th percentile above the fastest, over the last
//! two seconds). A frame that did not arrive is recovered from the next
//! packet's in-band FEC when it carries some, else concealed (Opus PLC);
//! when nothing is buffered the clock conceals for up to 100 ms (a late
//! packet still plays) before the stream counts as stopped. A buffer
//! that grew past its delay drops its oldest frame to catch up.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::opus_codec::can_carry_fec;

/// One Opus frame's duration, and the playout clock's period.
pub(crate) const FRAME: Duration = Duration::from_millis(20);
/// The least playout delay.
const MIN_DELAY: Duration = FRAME;
/// The most playout delay (and what the spread is clamped to).
const MAX_DELAY: Duration = Duration::from_millis(300);
/// Arrivals the spread is measured over (two seconds of frames).
const SPREAD_WINDOW: usize = 100;
/// Added to the measured spread: the playout clock's own jitter.
const MARGIN: Duration = Duration::from_millis(10);
/// Frames buffered beyond the delay before the oldest is dropped.
const SLACK_FRAMES: u64 = 3;
/// The most packets held (one second); more and the oldest go.
const MAX_PACKETS: usize = 50;
/// Frames concealed with nothing buffered before the stream counts as
/// stopped (muted, or gone): 100 ms.
const MAX_EXPAND: u32 = 5;
/// A sequence number this far past the next one restarts the buffer (the
/// sender restarted).
const JUMP: u64 = 500;

/// What the playout clock does for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Playout {
    /// Decode this packet.
    Decode(Bytes),
    /// The frame is lost but the next packet (this one) arrived and can
    /// carry FEC: decode its FEC data.
    Fec(Bytes),
    /// Conceal the frame (Opus PLC).
    Conceal,
    /// Nothing to play (not started, or stopped).
    Silence,
}

/// What a stream's audio playout did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Frames played from packets that arrived in time.
    pub played: u64,
    /// Lost frames recovered from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Frames concealed: lost with no FEC to recover them, or not there
    /// yet when their time came.
    pub concealed: u64,
    /// Packets that arrived after their frame's time (not played).
    pub late: u64,
    /// Frames dropped to bring a grown buffer back to its delay.
    pub dropped: u64,
    /// The current playout delay, ms.
    pub delay_ms: u32,
}

/// An adaptive jitter buffer for 20 ms audio frames, ordered by extended
/// RTP sequence number.
#[derive(Debug)]
pub(crate) struct JitterBuffer {
    /// Buffered packets by sequence number, with their arrival.
    packets: BTreeMap<u64, (Bytes, Instant)>,
    /// The sequence number the clock plays next, once started.
    next: Option<u64>,
    /// The lowest sequence number still playable: one past the last
    /// played (kept while stopped, so a straggler does not restart it).
    floor: Option<u64>,
    /// Frames concealed in a row with nothing buffered.
    expanding: u32,
    /// Recent transit times, ms (arrival minus the frame's place in the
    /// stream; only their spread matters).
    transits: VecDeque<f64>,
    origin: Instant,
    delay: Duration,
    stats: AudioStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub(crate) fn new(now: Instant) -> Self {
        JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            floor: None,
            expanding: 0,
            transits: VecDeque::with_capacity(SPREAD_WINDOW),
            origin: now,
            delay: MIN_DELAY,
            stats: AudioStats {
                delay_ms: MIN_DELAY.as_millis() as u32,
                ..AudioStats::default()
            },
        }
    }

    /// What playout did so far.
    pub(crate) fn stats(&self) -> AudioStats {
        self.stats
    }

    /// A packet with extended sequence number `seq` arrived at `now`.
    pub(crate) fn push(&mut self, seq: u64, payload: Bytes, now: Instant) {
        if payload.is_empty() {
            return;
        }
        self.measure(seq, now);
        if let Some(floor) = self.next.or(self.floor) {
            if seq.abs_diff(floor) > JUMP {
                // The sender restarted its numbering.
                self.packets.clear();
                self.next = None;
                self.floor = None;
            } else if seq < floor {
                self.stats.late += 1;
                return;
            }
        }
        self.packets.entry(seq).or_insert((payload, now));
        while self.packets.len() > MAX_PACKETS {
            if let Some((oldest, _)) = self.packets.pop_first() {
                self.stats.dropped += 1;
                if self.next.is_some_and(|n| n <= oldest) {
                    self.advance(oldest + 1);
                }
            }
        }
    }

    /// Updates the delay from this arrival's transit time.
    fn measure(&mut self, seq: u64, now: Instant) {
        let arrival_ms = now.duration_since(self.origin).as_secs_f64() * 1e3;
        let transit = arrival_ms - seq as f64 * FRAME.as_secs_f64() * 1e3;
        if self.transits.len() == SPREAD_WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        let mut sorted: Vec<f64> = self.transits.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted[(sorted.len() - 1) * 95 / 100];
        let spread = Duration::from_secs_f64(((p95 - sorted[0]) / 1e3).max(0.0));
        self.delay = (spread + MARGIN).clamp(MIN_DELAY, MAX_DELAY);
        self.stats.delay_ms = self.delay.as_millis() as u32;
    }

    /// The clock's next frame, at `now`.
    pub(crate) fn pop(&mut self, now: Instant) -> Playout {
        let n = match self.next {
            Some(n) => n,
            None => {
                // Start once the first packet has waited out the delay.
                let Some((&first, (_, at))) = self.packets.first_key_value() else {
                    return Playout::Silence;
                };
                if now.duration_since(*at) < self.delay {
                    return Playout::Silence;
                }
                self.advance(first);
                first
            }
        };
        let n = self.catch_up(n);
        if let Some((packet, _)) = self.packets.remove(&n) {
            self.advance(n + 1);
            self.expanding = 0;
            self.stats.played += 1;
            return Playout::Decode(packet);
        }
        if let Some(packet) = self.packets.get(&(n + 1)).map(|(p, _)| p.clone()) {
            self.advance(n + 1);
            self.expanding = 0;
            if can_carry_fec(&packet) {
                self.stats.fec_recovered += 1;
                return Playout::Fec(packet);
            }
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        if !self.packets.is_empty() {
            // Lost, and what follows it is further on.
            self.advance(n + 1);
            self.expanding = 0;
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        if self.expanding < MAX_EXPAND {
            // Not there yet: conceal in its place without giving up on it.
            self.expanding += 1;
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        self.next = None;
        self.expanding = 0;
        Playout::Silence
    }

    /// Moves the clock on to `n`.
    fn advance(&mut self, n: u64) {
        self.next = Some(n);
        self.floor = Some(n);
    }

    /// Drops the oldest frame when more than the delay (and some slack)
    /// is buffered; the sequence number to play.
    fn catch_up(&mut self, n: u64) -> u64 {
        let Some(&last) = self.packets.keys().next_back() else {
            return n;
        };
        let depth = last.saturating_sub(n) + 1;
        let allowed = (self.delay.as_millis() / FRAME.as_millis()) as u64 + SLACK_FRAMES;
        if depth > allowed && self.packets.remove(&n).is_some() {
            self.stats.dropped += 1;
            self.advance(n + 1);
            return n + 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SILK packet (TOC configuration 1) with `seq` as its body.
    fn silk(seq: u64) -> Bytes {
        Bytes::from(vec![1 << 3, seq as u8])
    }

    /// A CELT packet (TOC configuration 16).
    fn celt(seq: u64) -> Bytes {
        Bytes::from(vec![16 << 3, seq as u8])
    }

    /// Runs the clock for `frames` ticks from `t`, returning what it played.
    fn tick(jb: &mut JitterBuffer, t: &mut Instant, frames: usize) -> Vec<Playout> {
        (0..frames)
            .map(|_| {
                *t += FRAME;
                jb.pop(*t)
            })
            .collect()
    }

    #[test]
    fn steady_packets_play_in_order_after_the_least_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0);
        let mut played = Vec::new();
        for i in 0..50u64 {
            let t = t0 + FRAME * i as u32;
            jb.push(100 + i, silk(i), t);
            played.push(jb.pop(t + Duration::from_millis(10)));
        }
        assert_eq!(jb.stats().delay_ms, 20);
        let decoded: Vec<_> = played
            .iter()
            .filter_map(|p| match p {
                Playout::Decode(b) => Some(b[1]),
                _ => None,
            })
            .collect();
        // The first waits out the delay; then one a tick, in order.
        assert_eq!(decoded.len(), 49);
        assert!(decoded.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn a_lost_frame_is_recovered_from_the_next_packets_fec_or_concealed() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0);
        let at = |i: u32| t0 + FRAME * i;
        jb.push(0, silk(0), at(0));
        jb.push(1, silk(1), at(1));
        let mut t = at(0);
        let got = tick(&mut jb, &mut t, 2);
        assert_eq!(got, [Playout::Decode(silk(0)), Playout::Decode(silk(1))]);
        // 2 is lost; 3 carries its FEC.
        jb.push(3, silk(3), at(3));
        let got = tick(&mut jb, &mut t, 2);
        assert_eq!(got, [Playout::Fec(silk(3)), Playout::Decode(silk(3))]);
        // 5 is lost; 6, a CELT packet, carries no FEC: 5 is concealed.
        jb.push(4, silk(4), at(4));
        jb.push(6, celt(6), at(6));
        let got = tick(&mut jb, &mut t, 3);
        assert_eq!(
            got,
            [
                Playout::Decode(silk(4)),
                Playout::Conceal,
                Playout::Decode(celt(6))
            ]
        );
        let s = jb.stats();
        assert_eq!((s.fec_recovered, s.concealed, s.played), (1, 1, 5));
    }

    #[test]
    fn jittery_arrivals_raise_the_delay_and_late_packets_still_play() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0);
        // Every fifth packet is 80 ms late.
        for i in 0..100u64 {
            let late = if i % 5 == 0 { 80 } else { 0 };
            jb.push(
                i,
                silk(i),
                t0 + FRAME * i as u32 + Duration::from_millis(late),
            );
        }
        let d = jb.stats().delay_ms;
        assert!((80..=100).contains(&d), "delay {d} ms");
    }

    #[test]
    fn an_underrun_conceals_then_resumes_with_the_late_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0);
        jb.push(0, silk(0), t0);
        let mut t = t0;
        assert_eq!(tick(&mut jb, &mut t, 1), [Playout::Decode(silk(0))]);
        assert_eq!(
            tick(&mut jb, &mut t, 2),
            [Playout::Conceal, Playout::Conceal]
        );
        jb.push(1, silk(1), t);
        assert_eq!(tick(&mut jb, &mut t, 1), [Playout::Decode(silk(1))]);
        // Nothing more: 100 ms of concealment, then silence.
        let got = tick(&mut jb, &mut t, 7);
        assert_eq!(got.iter().filter(|p| **p == Playout::Conceal).count(), 5);
        assert_eq!(got[5..], [Playout::Silence, Playout::Silence]);
        // A packet older than what played is late.
        jb.push(1, silk(1), t);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_grown_buffer_drops_its_oldest_frames_back_to_the_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0);
        // A burst of 20 frames at once (a stall released).
        for i in 0..20u64 {
            jb.push(i, silk(i), t0 + FRAME * i as u32);
        }
        for i in 20..40u64 {
            jb.push(i, silk(i), t0 + FRAME * 40);
        }
        let mut t = t0 + FRAME * 40;
        let got = tick(&mut jb, &mut t, 10);
        assert!(got.iter().all(|p| matches!(p, Playout::Decode(_))));
        assert!(jb.stats().dropped > 0, "{:?}", jb.stats());
        // Memory is bounded however far the sender runs ahead.
        for i in 40..1000u64 {
            jb.push(i, silk(i), t);
        }
        assert!(jb.packets.len() <= MAX_PACKETS);
    }
}
