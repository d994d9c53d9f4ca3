//! Video frames put together from RTP packets: a frame is complete when
//! every packet from the one after the previous frame's end up to the one
//! with the marker bit has arrived, and it is handed on at that moment
//! (not when the next frame's first packet shows up). A hole that a
//! retransmission does not fill within [`MAX_HOLE_WAIT`] is given up on:
//! the frames it breaks are dropped, and the caller is told to ask for a
//! keyframe. A frame whose last packet never comes (the sender moved on: a
//! packet with a new timestamp follows it without a gap, as when the
//! server switches simulcast layers) is dropped the same way. Packets
//! without payload (padding the server sends to probe the path) only fill
//! their place in the numbering. Sans-IO: instants are handed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a missing packet is waited for (a NACK and its
/// retransmission) before the frames behind it go on without it.
pub(crate) const MAX_HOLE_WAIT: Duration = Duration::from_millis(250);
/// Packets held at most (several frames of the largest keyframes).
const MAX_HELD: usize = 1024;

/// A frame's packets, in order.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The RTP payloads.
    pub payloads: Vec<Bytes>,
    /// Whether frames before it were given up on (so it may reference a
    /// picture the decoder never had).
    pub after_loss: bool,
}

#[derive(Debug)]
struct Held {
    marker: bool,
    timestamp: u32,
    payload: Bytes,
}

/// Puts frames together from packets numbered by extended (64-bit)
/// sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct FrameAssembler {
    held: BTreeMap<u64, Held>,
    /// The sequence number the next frame starts at.
    next: Option<u64>,
    /// Since when the packet at `next`'s position has been missing while
    /// later ones are here.
    hole_since: Option<Instant>,
    /// Frames were dropped since the last one handed on.
    lost: bool,
}

impl FrameAssembler {
    /// Takes a packet. Late copies of packets already handed on or given
    /// up on are ignored.
    pub fn push(&mut self, seq: u64, timestamp: u32, marker: bool, payload: Bytes) {
        match self.next {
            Some(next) if seq < next => return,
            None => self.next = Some(seq),
            _ => {}
        }
        self.held.insert(
            seq,
            Held {
                marker,
                timestamp,
                payload,
            },
        );
        while self.held.len() > MAX_HELD {
            // Bounded whatever arrives: the oldest go, and with them the
            // frame they were part of.
            if let Some((&first, _)) = self.held.first_key_value() {
                self.skip_past(first);
            }
        }
    }

    /// The next complete frame, if there is one at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Frame> {
        loop {
            let next = self.next?;
            // Padding between frames only fills its number.
            if self.held.get(&next).is_some_and(|h| h.payload.is_empty()) {
                self.held.remove(&next);
                self.next = Some(next + 1);
                continue;
            }
            // The run from `next`: complete at a marker, broken by a hole
            // (a packet still missing) before one, or cut short by the next
            // frame (a new timestamp with no gap).
            let mut end = None;
            let mut cut = None;
            let mut timestamp = None;
            for (expected, (&seq, held)) in (next..).zip(self.held.range(next..)) {
                if seq != expected {
                    break;
                }
                if !held.payload.is_empty() {
                    let ts = *timestamp.get_or_insert(held.timestamp);
                    if ts != held.timestamp {
                        cut = Some(seq);
                        break;
                    }
                }
                if held.marker {
                    end = Some(seq);
                    break;
                }
            }
            if let Some(cut) = cut {
                self.skip_past(cut - 1);
                continue;
            }
            if let Some(end) = end {
                self.hole_since = None;
                let payloads = (next..=end)
                    .filter_map(|s| self.held.remove(&s).map(|h| h.payload))
                    .filter(|p| !p.is_empty())
                    .collect();
                self.next = Some(end + 1);
                return Some(Frame {
                    payloads,
                    after_loss: std::mem::take(&mut self.lost),
                });
            }
            // A hole, or the rest of the frame not here yet: wait for it,
            // unless it has been too long.
            let &last = self.held.keys().next_back()?;
            let run_end = (next..)
                .zip(self.held.range(next..))
                .take_while(|(e, (&s, _))| *e == s)
                .count() as u64;
            if next + run_end > last {
                // No hole: the frame's last packets are simply yet to come.
                self.hole_since = None;
                return None;
            }
            let since = *self.hole_since.get_or_insert(now);
            if now.saturating_duration_since(since) < MAX_HOLE_WAIT {
                return None;
            }
            self.hole_since = None;
            // Give up on the frame the hole is in: everything up to the
            // first marker after the hole (if that has not come either, up
            // to the first packet held after it, which then starts a new
            // frame).
            let hole = next + run_end;
            let after = self
                .held
                .range(hole..)
                .find(|(_, h)| h.marker)
                .map(|(&s, _)| s);
            match after {
                Some(end) => self.skip_past(end),
                None => {
                    let first = *self.held.range(hole..).next()?.0;
                    let keep = self.held.split_off(&first);
                    self.held = keep;
                    self.next = Some(first);
                    self.lost = true;
                }
            }
        }
    }

    /// Drops everything up to and including `seq`; the next frame starts
    /// after it.
    fn skip_past(&mut self, seq: u64) {
        let keep = self.held.split_off(&(seq + 1));
        self.held = keep;
        self.next = Some(seq + 1);
        self.hole_since = None;
        self.lost = true;
    }
}

/// Whether an Annex B access unit holds an IDR picture or a sequence
/// parameter set (what a decoder can start from).
pub(crate) fn is_keyframe(annex_b: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            let nal = annex_b[i + 3] & 0x1f;
            if nal == 5 || nal == 7 {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    /// A frame goes as soon as its marker packet is in.
    #[test]
    fn a_frame_completes_on_its_marker() {
        let mut a = FrameAssembler::default();
        let t = Instant::now();
        a.push(10, 0, false, p(1));
        a.push(11, 0, false, p(2));
        assert!(a.pop(t).is_none());
        a.push(12, 0, true, p(3));
        let f = a.pop(t).expect("complete");
        assert_eq!(f.payloads, vec![p(1), p(2), p(3)]);
        assert!(!f.after_loss);
        assert!(a.pop(t).is_none());
    }

    /// Out of order and a retransmission in time: the frame is whole.
    #[test]
    fn a_hole_filled_in_time_loses_nothing() {
        let mut a = FrameAssembler::default();
        let t = Instant::now();
        a.push(1, 0, true, p(1));
        assert!(a.pop(t).is_some());
        a.push(3, 0, true, p(3));
        a.push(4, 0, true, p(4));
        assert!(a.pop(t).is_none(), "2 is missing");
        a.push(2, 0, false, p(2));
        let f = a.pop(t + Duration::from_millis(100)).expect("whole");
        assert_eq!(f.payloads, vec![p(2), p(3)]);
        assert_eq!(a.pop(t).expect("next").payloads, vec![p(4)]);
    }

    /// A hole never filled: the broken frame is dropped after the wait,
    /// the next one goes marked, a late copy is ignored.
    #[test]
    fn a_hole_not_filled_is_given_up() {
        let mut a = FrameAssembler::default();
        let t = Instant::now();
        a.push(1, 0, true, p(1));
        assert!(a.pop(t).is_some());
        // Frame 2..=3 lost its first packet; frame 4..=5 is whole.
        a.push(3, 0, true, p(3));
        a.push(4, 0, false, p(4));
        a.push(5, 0, true, p(5));
        assert!(a.pop(t).is_none());
        assert!(a.pop(t + MAX_HOLE_WAIT / 2).is_none());
        let f = a.pop(t + MAX_HOLE_WAIT).expect("the next frame");
        assert_eq!(f.payloads, vec![p(4), p(5)]);
        assert!(f.after_loss);
        a.push(2, 0, false, p(2));
        assert!(a.pop(t + MAX_HOLE_WAIT * 2).is_none(), "too late");
    }

    /// A hole inside a frame (its first packet here, a middle one not) is
    /// given up on too.
    #[test]
    fn a_hole_inside_a_frame_is_given_up() {
        let mut a = FrameAssembler::default();
        let t = Instant::now();
        a.push(1, 0, false, p(1));
        a.push(3, 0, true, p(3));
        a.push(4, 0, true, p(4));
        assert!(a.pop(t).is_none());
        let f = a.pop(t + MAX_HOLE_WAIT).expect("the next frame");
        assert_eq!(f.payloads, vec![p(4)]);
        assert!(f.after_loss);
    }

    /// Whatever arrives, what is held stays bounded.
    #[test]
    fn held_packets_are_bounded() {
        let mut a = FrameAssembler::default();
        for s in 0..5000u64 {
            // Never a marker: nothing ever completes.
            a.push(s * 2, 0, false, p(0));
        }
        assert!(a.held.len() <= MAX_HELD);
    }

    #[test]
    fn keyframes_are_recognised() {
        assert!(is_keyframe(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x65, 9]));
        assert!(!is_keyframe(&[0, 0, 0, 1, 0x41, 1, 2]));
        assert!(!is_keyframe(&[]));
    }

    /// A layer switch: the old layer's frame never ends, the new layer's
    /// keyframe follows it without a gap.
    #[test]
    fn a_frame_cut_short_by_the_next_is_dropped() {
        let t = Instant::now();
        let mut a = FrameAssembler::default();
        a.push(1, 100, true, p(1));
        assert_eq!(a.pop(t).unwrap().payloads, vec![p(1)]);
        a.push(2, 200, false, p(2));
        a.push(3, 200, false, p(3));
        assert!(a.pop(t).is_none(), "waits for the rest of the frame");
        a.push(4, 300, false, p(4));
        a.push(5, 300, true, p(5));
        let f = a.pop(t).expect("the next frame, at once");
        assert_eq!(f.payloads, vec![p(4), p(5)]);
        assert!(f.after_loss);
    }

    #[test]
    fn padding_only_fills_its_number() {
        let t = Instant::now();
        let mut a = FrameAssembler::default();
        a.push(1, 100, true, p(1));
        a.push(2, 100, false, Bytes::new());
        a.push(3, 100, false, Bytes::new());
        a.push(4, 200, true, p(4));
        assert_eq!(a.pop(t).unwrap().payloads, vec![p(1)]);
        let f = a.pop(t).expect("the frame after the padding");
        assert_eq!(f.payloads, vec![p(4)]);
        assert!(!f.after_loss);
    }
}
