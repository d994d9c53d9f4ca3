//! Audio-first pacing, and the send budget it shares with the encoder.
//!
//! The connection's congestion controller (GCC over transport-wide
//! feedback) estimates what the path carries. The pacer here releases
//! video at a little more than that estimate, so a keyframe leaves as a
//! smooth run of packets instead of one burst that overflows a thin
//! link's queue, and it never holds audio or RTCP: they go out the moment
//! they are written, and what they take is charged to the budget video
//! is released from. (The pacer webrtc-rs ships is one FIFO for every
//! packet, so on a thin link audio waited behind seconds of queued video.)
//!
//! What the pacer knows is published in a [`SendBudget`] that the owner
//! of the connection reads: the estimate, for the encoder to follow, and
//! how long video has been waiting, for the encoder to skip frames rather
//! than queue them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Pacer, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;

/// Video is released at this multiple of the estimate: enough headroom
/// that the pacer adds no steady delay to an encoder hitting its target,
/// little enough that a keyframe is spread over a few frame intervals.
pub const PACING_FACTOR: f64 = 1.25;
/// The pacer's rate before any estimate exists, in bits per second.
pub const INITIAL_PACING_BPS: f64 = 1_500_000.0;
/// Video packets held at most; later ones are refused (the encoder skips
/// frames long before this, see [`SendBudget::queue_delay`]).
pub const VIDEO_QUEUE_LIMIT: usize = 2048;
/// Video that has waited this long is of no use to anyone: the queue is
/// dropped, retransmissions of what it held are refused, and the encoder
/// is asked for a keyframe (see [`SendBudget::flushes`]).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(500);
/// A burst (a keyframe, above all a screen's) is released faster than
/// the pacing rate when that is what it takes for its first packet to
/// leave within [`MAX_QUEUE_DELAY`], up to this multiple of the pacing
/// rate: the path's own queue absorbs a short burst, where dropping the
/// keyframe would only bring another as large (libwebrtc's pacer drains
/// its queue against a time limit the same way).
pub const MAX_DRAIN_FACTOR: f64 = 4.0;
/// The least time a drain is planned over.
const DRAIN_OVER_AT_LEAST: Duration = Duration::from_millis(50);
/// What a packet costs on the wire beyond its RTP bytes: the SRTP tag,
/// UDP, IP and link headers. It matters most for audio's small packets.
pub const PACKET_OVERHEAD_BYTES: usize = 48;
/// How long retransmissions of dropped video are refused.
/// Retransmissions are not sent while the path's bottleneck queues more
/// than this (see [`SendBudget::network_queue`]).
pub const RESEND_QUEUE_LIMIT: Duration = Duration::from_millis(80);
const REFUSE_FOR: Duration = Duration::from_secs(3);
/// Bits released at once: a few packets, so the pacer wakes every few
/// milliseconds rather than for every packet.
const BURST_BITS: f64 = 8.0 * 1200.0 * 4.0;
/// The shortest wait between two releases.
const MIN_WAKE: Duration = Duration::from_micros(500);

/// What a connection's pacer and congestion controller know, for the
/// encoder that feeds it. Cheap to read from any thread.
#[derive(Debug)]
pub struct SendBudget {
    base: Instant,
    /// The estimate, bits per second (0: none yet).
    estimate_bps: AtomicU64,
    /// Bytes of video waiting in the pacer.
    queued_bytes: AtomicU64,
    /// When the oldest waiting video packet was written, in microseconds
    /// since `base` plus one (0: nothing waits).
    oldest_us: AtomicU64,
    /// Video packets refused because the queue was full.
    refused: AtomicU64,
    /// Times the queue was dropped because it had waited too long.
    flushes: AtomicU64,
    /// Bytes of video written again (retransmissions).
    resent_bytes: AtomicU64,
    /// See [`SendBudget::network_queue`].
    network_queue_us: AtomicU64,
    /// See [`SendBudget::constrained`].
    constrained: std::sync::atomic::AtomicBool,
    /// The least rate video is released at while the sender probes the
    /// path (0: not probing), bits per second.
    probe_bps: AtomicU64,
    /// The share of packets lost over the last second, in millionths.
    loss_ppm: AtomicU64,
}

impl Default for SendBudget {
    fn default() -> Self {
        SendBudget {
            base: Instant::now(),
            estimate_bps: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            oldest_us: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            resent_bytes: AtomicU64::new(0),
            probe_bps: AtomicU64::new(0),
            loss_ppm: AtomicU64::new(0),
            network_queue_us: AtomicU64::new(0),
            constrained: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl SendBudget {
    /// The congestion controller's estimate of what the path carries from
    /// this side, in bits per second; `None` before its first feedback.
    pub fn estimate_bps(&self) -> Option<f64> {
        match self.estimate_bps.load(Ordering::Relaxed) {
            0 => None,
            bps => Some(bps as f64),
        }
    }

    /// How long the oldest video packet waiting in the pacer has waited
    /// at `now` (zero when none waits).
    pub fn queue_delay(&self, now: Instant) -> Duration {
        match self.oldest_us.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            us => now.saturating_duration_since(self.base + Duration::from_micros(us - 1)),
        }
    }

    /// Bytes of video waiting in the pacer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Video packets the pacer refused because its queue was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many times the pacer dropped its queue of video that had
    /// waited too long: when this changes, the encoder must send a
    /// keyframe (the receiver cannot decode past the hole).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Bytes of video written again: retransmissions asked for by the
    /// receiver.
    pub fn resent_bytes(&self) -> u64 {
        self.resent_bytes.load(Ordering::Relaxed)
    }

    /// Releases video at `bps` at least (`None`: at the estimate's pace
    /// again), while the sender finds out whether the path carries more
    /// than the estimate says: what it sends then is acknowledged, and
    /// the estimate may follow.
    pub fn set_probe(&self, bps: Option<f64>) {
        let v = bps.map_or(0, |b| b.max(1.0) as u64);
        self.probe_bps.store(v, Ordering::Relaxed);
    }

    /// The probing rate in force, if any.
    pub fn probe_bps(&self) -> Option<f64> {
        match self.probe_bps.load(Ordering::Relaxed) {
            0 => None,
            bps => Some(bps as f64),
        }
    }

    /// The share (0 to 1) of the packets sent that the far end's feedback
    /// reported lost over the last second.
    pub fn loss(&self) -> f64 {
        self.loss_ppm.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// How much longer the latest packets took to reach the far end than
    /// the fastest of the last ten seconds did: the queue building at the
    /// path's bottleneck (a router's buffer) before it overflows.
    pub fn network_queue(&self) -> Duration {
        Duration::from_micros(self.network_queue_us.load(Ordering::Relaxed))
    }

    /// Whether the path has shown a limit: loss, or a deep queue at its
    /// bottleneck. Until it has, the estimate only says what has been
    /// sent so far (it leads that), not what the path carries.
    pub fn constrained(&self) -> bool {
        self.constrained.load(Ordering::Relaxed)
    }

    pub(crate) fn set_constrained(&self) {
        self.constrained.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_network_queue(&self, d: Duration) {
        self.network_queue_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_loss(&self, share: f64) {
        self.loss_ppm
            .store((share.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn set_estimate(&self, bps: f64) {
        self.estimate_bps
            .store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    fn set_queue(&self, queue: &VecDeque<(TaggedPacket, usize)>, bytes: u64) {
        self.queued_bytes.store(bytes, Ordering::Relaxed);
        let oldest = queue.front().map_or(0, |(p, _)| {
            p.now.saturating_duration_since(self.base).as_micros() as u64 + 1
        });
        self.oldest_us.store(oldest, Ordering::Relaxed);
    }
}

/// The pacer interceptor: audio and RTCP pass at once, video is released
/// at [`PACING_FACTOR`] times the congestion controller's estimate. It
/// belongs in `Slot::Pacer` (application-ward of the congestion
/// controller, which announces its estimate on the read leg).
pub struct AudioFirstPacer {
    budget: Arc<SendBudget>,
    bucket: Pacer,
    audio: HashSet<u32>,
    /// Video waiting, with its size on the wire.
    queue: VecDeque<(TaggedPacket, usize)>,
    /// The SSRC and sequence number of each packet waiting: a
    /// retransmission of one of them is refused (the receiver asked again
    /// because the first copy has not left yet).
    waiting: HashSet<(u32, u16)>,
    /// The highest sequence number written, per video SSRC (what is not
    /// above it is a retransmission).
    highest: HashMap<u32, u16>,
    queued_bytes: u64,
    /// The latest instant handed in.
    now: Option<Instant>,
    /// Per SSRC, the sequence numbers dropped in the last flush (lowest,
    /// highest) and until when their retransmissions are refused.
    dropped: HashMap<u32, (u16, u16, Instant)>,
    read: VecDeque<TaggedPacket>,
    /// Ready to go on toward the wire.
    write: VecDeque<TaggedPacket>,
    /// The estimate and probing rate the bucket's rate was set from.
    paced_from: (f64, Option<f64>),
    /// The pacing rate from them, bits per second.
    base_rate: f64,
    /// The rate the bucket releases at now (above `base_rate` while a
    /// burst drains).
    rate: f64,
}

impl AudioFirstPacer {
    /// A pacer publishing what it knows in `budget`.
    pub fn new(budget: Arc<SendBudget>) -> Self {
        AudioFirstPacer {
            budget,
            bucket: Pacer::new(INITIAL_PACING_BPS).with_burst_bits(BURST_BITS),
            audio: HashSet::new(),
            queue: VecDeque::new(),
            waiting: HashSet::new(),
            highest: HashMap::new(),
            queued_bytes: 0,
            now: None,
            dropped: HashMap::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
            paced_from: (INITIAL_PACING_BPS / PACING_FACTOR, None),
            base_rate: INITIAL_PACING_BPS,
            rate: INITIAL_PACING_BPS,
        }
    }

    /// Sets the release rate from the estimate and the probing rate.
    fn pace(&mut self, estimate_bps: f64) {
        let probe = self.budget.probe_bps();
        if self.paced_from == (estimate_bps, probe) {
            return;
        }
        self.paced_from = (estimate_bps, probe);
        self.base_rate = (estimate_bps * PACING_FACTOR).max(probe.unwrap_or(0.0));
        self.rate = self.base_rate;
        self.bucket.set_target_bitrate(self.base_rate);
    }

    /// Raises the release rate while what is queued could not otherwise
    /// leave before its head has waited [`MAX_QUEUE_DELAY`] (see
    /// [`MAX_DRAIN_FACTOR`]); back to the pacing rate once it can.
    fn drain(&mut self, now: Instant) {
        let needed = self.queue.front().map_or(0.0, |(p, _)| {
            // Aimed a fifth short of the limit: releases come in bursts.
            let left = (MAX_QUEUE_DELAY * 4 / 5)
                .saturating_sub(now.saturating_duration_since(p.now))
                .max(DRAIN_OVER_AT_LEAST);
            (self.queued_bytes * 8) as f64 / left.as_secs_f64()
        });
        let rate = self
            .base_rate
            .max(needed.min(self.base_rate * MAX_DRAIN_FACTOR));
        // Small changes are not worth re-pacing for.
        if (rate - self.rate).abs() > self.rate * 0.1
            || (rate == self.base_rate && self.rate != rate)
        {
            self.rate = rate;
            self.bucket.set_target_bitrate(rate);
        }
    }

    /// Drops the queue if its head has waited too long.
    fn flush_if_stale(&mut self, now: Instant) {
        let stale = self
            .queue
            .front()
            .is_some_and(|(p, _)| now.saturating_duration_since(p.now) > MAX_QUEUE_DELAY);
        if !stale {
            return;
        }
        self.dropped.clear();
        self.waiting.clear();
        for (packet, _) in self.queue.drain(..) {
            if let Packet::Rtp(rtp) = &packet.message.packet {
                // The lowest and highest numbers dropped, in sequence
                // order: a retransmission of an older packet may be
                // queued behind newer ones.
                let seq = rtp.header.sequence_number;
                let entry =
                    self.dropped
                        .entry(rtp.header.ssrc)
                        .or_insert((seq, seq, now + REFUSE_FOR));
                if (seq.wrapping_sub(entry.0) as i16) < 0 {
                    entry.0 = seq;
                }
                if (seq.wrapping_sub(entry.1) as i16) > 0 {
                    entry.1 = seq;
                }
            }
        }
        tracing::debug!(
            bytes = self.queued_bytes,
            estimate = ?self.budget.estimate_bps(),
            "video waited too long in the pacer: dropped"
        );
        self.queued_bytes = 0;
        self.budget.flushes.fetch_add(1, Ordering::Relaxed);
        self.budget.set_queue(&self.queue, 0);
    }

    /// Whether `seq` of `ssrc` was dropped in the last flush (and is
    /// therefore a retransmission to refuse).
    fn was_dropped(&self, ssrc: u32, seq: u16, now: Instant) -> bool {
        self.dropped.get(&ssrc).is_some_and(|(lo, hi, until)| {
            now < *until && seq.wrapping_sub(*lo) <= hi.wrapping_sub(*lo)
        })
    }

    /// Releases what the budget allows at `now`.
    fn release(&mut self, now: Instant) {
        self.now = Some(now);
        self.flush_if_stale(now);
        self.drain(now);
        self.bucket.refill(now);
        let before = self.queue.len();
        while let Some((_, size)) = self.queue.front() {
            let bits = (*size * 8) as f64;
            if !self.bucket.can_release(bits) {
                break;
            }
            let Some((mut packet, size)) = self.queue.pop_front() else {
                break;
            };
            self.bucket.consume(bits);
            self.queued_bytes -= size as u64;
            if let Packet::Rtp(rtp) = &packet.message.packet {
                self.waiting
                    .remove(&(rtp.header.ssrc, rtp.header.sequence_number));
            }
            // It leaves now: the send history wire-ward must record the
            // release, not the write, or this wait counts as network delay.
            packet.now = now;
            self.write.push_back(packet);
        }
        if self.queue.len() != before {
            self.budget.set_queue(&self.queue, self.queued_bytes);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AudioFirstPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // The congestion controller (wire-ward) hangs a new estimate on
        // the feedback that produced it.
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            let bps = *bits_per_second;
            self.budget.set_estimate(bps);
            self.pace(bps);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtp(rtp) = &msg.message.packet else {
            self.write.push_back(msg);
            return Ok(());
        };
        let size = rtp.marshal_size() + PACKET_OVERHEAD_BYTES;
        self.pace(self.paced_from.0);
        self.bucket.refill(msg.now);
        if self.audio.contains(&rtp.header.ssrc) {
            // Audio goes now, and video waits for what it took.
            self.bucket.consume((size * 8) as f64);
            self.write.push_back(msg);
            return Ok(());
        }
        let id = (rtp.header.ssrc, rtp.header.sequence_number);
        match self.highest.get_mut(&id.0) {
            Some(h) if id.1.wrapping_sub(*h) as i16 <= 0 => {
                if self.budget.network_queue() > RESEND_QUEUE_LIMIT {
                    // The bottleneck is queueing: a resend would arrive
                    // late and push the queue (and the audio in it)
                    // towards loss.
                    self.budget.refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                self.budget
                    .resent_bytes
                    .fetch_add(size as u64, Ordering::Relaxed);
            }
            Some(h) => *h = id.1,
            None => {
                self.highest.insert(id.0, id.1);
            }
        }
        if self.was_dropped(id.0, id.1, msg.now) || !self.waiting.insert(id) {
            return Ok(());
        }
        if self.queue.len() >= VIDEO_QUEUE_LIMIT {
            self.waiting.remove(&id);
            self.budget.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let now = msg.now;
        self.queue.push_back((msg, size));
        self.queued_bytes += size as u64;
        self.budget.set_queue(&self.queue, self.queued_bytes);
        self.release(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.release(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let (_, size) = self.queue.front()?;
        let at = self.bucket.releasable_at((*size * 8) as f64)?;
        // Always ahead of the last wake-up, however the arithmetic rounds,
        // so the connection never spins on a deadline already past.
        Some(match self.now {
            Some(now) => at.max(now + MIN_WAKE),
            None => at,
        })
    }
}

impl Interceptor for AudioFirstPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            self.audio.insert(info.ssrc);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.audio.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp::{Header, Packet as RtpPacket};

    const AUDIO: u32 = 1;
    const VIDEO: u32 = 2;

    fn pacer() -> (AudioFirstPacer, Arc<SendBudget>) {
        let budget = Arc::new(SendBudget::default());
        let mut p = AudioFirstPacer::new(budget.clone());
        p.bind_local_stream(&StreamInfo {
            ssrc: AUDIO,
            mime_type: "audio/opus".into(),
            ..Default::default()
        });
        p.bind_local_stream(&StreamInfo {
            ssrc: VIDEO,
            mime_type: "video/H264".into(),
            ..Default::default()
        });
        (p, budget)
    }

    fn rtp(ssrc: u32, seq: u16, len: usize, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(RtpPacket {
                header: Header {
                    ssrc,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0u8; len].into(),
            })),
        }
    }

    fn estimate(bps: f64, now: Instant) -> TaggedPacket {
        let mut msg = TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtcp(Vec::new())),
        };
        msg.message.add(Attribute::TargetBitrateChanged {
            bits_per_second: bps,
        });
        msg
    }

    fn drain(p: &mut AudioFirstPacer) -> Vec<u32> {
        std::iter::from_fn(|| p.poll_write())
            .map(|m| match m.message.packet {
                Packet::Rtp(r) => r.header.ssrc,
                _ => 0,
            })
            .collect()
    }

    /// Audio written behind a backlog of video leaves at once.
    #[test]
    fn audio_passes_queued_video() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(200_000.0, t0)).unwrap();
        assert_eq!(budget.estimate_bps(), Some(200_000.0));
        for seq in 0..40 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        let first = drain(&mut p);
        assert!(
            first.len() < 10,
            "a burst, not the backlog: {}",
            first.len()
        );
        p.handle_write(rtp(AUDIO, 0, 100, t0)).unwrap();
        assert_eq!(drain(&mut p), vec![AUDIO]);
        assert!(budget.queued_bytes() > 30 * 1100);
        let waited = budget.queue_delay(t0 + Duration::from_millis(50));
        assert!(waited.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1));
    }

    /// Video leaves at the pacing rate, and all of it leaves.
    #[test]
    fn video_is_released_at_the_pacing_rate() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(400_000.0, t0)).unwrap();
        let _ = drain(&mut p);
        // 25 packets of ~1160 bytes on the wire is ~232 kbit: ~0.45 s at
        // 500 kbit/s (the burst goes at once).
        for seq in 0..25 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        let mut sent = drain(&mut p).len();
        let mut now = t0;
        let mut steps = 0;
        while let Some(at) = p.poll_timeout() {
            assert!(at > now, "the deadline advances");
            now = at;
            p.handle_timeout(now).unwrap();
            sent += drain(&mut p).len();
            steps += 1;
            assert!(steps < 1000);
        }
        assert_eq!(sent, 25);
        let took = now.duration_since(t0).as_secs_f64();
        assert!((0.38..0.47).contains(&took), "took {took:.2} s");
        assert_eq!(budget.flushes(), 0);
        assert_eq!(budget.queued_bytes(), 0);
        assert_eq!(budget.queue_delay(now), Duration::ZERO);
    }

    /// A keyframe larger than the pacing rate carries in the queue's time
    /// limit drains faster and arrives whole; a burst beyond even the
    /// drain's limit is still dropped (next test).
    #[test]
    fn a_large_keyframe_drains_within_the_limit_instead_of_being_dropped() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(800_000.0, t0)).unwrap();
        let _ = drain(&mut p);
        // 120 packets of ~1160 bytes on the wire (~1.1 Mbit): 1.1 s at the
        // pacing rate of 1 Mbit/s, more than the limit.
        for seq in 0..120 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        let mut sent = drain(&mut p).len();
        let mut now = t0;
        for _ in 0..10_000 {
            let Some(at) = p.poll_timeout() else { break };
            now = at;
            p.handle_timeout(now).unwrap();
            sent += drain(&mut p).len();
        }
        assert_eq!(sent, 120, "all of it left");
        assert_eq!(budget.flushes(), 0, "nothing was dropped");
        let took = now.duration_since(t0);
        assert!(took <= MAX_QUEUE_DELAY, "took {took:?}");
        // Once drained, the pacing rate again.
        assert_eq!(p.rate, p.base_rate);
    }

    /// Video that waited too long is dropped, once, and its
    /// retransmissions are refused; later video goes on.
    #[test]
    fn stale_video_is_dropped_with_its_retransmissions() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(100_000.0, t0)).unwrap();
        for seq in 0..200 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        let _ = drain(&mut p);
        // A retransmission of a packet still waiting: not queued twice.
        let queued = budget.queued_bytes();
        p.handle_write(rtp(VIDEO, 100, 1100, t0)).unwrap();
        assert_eq!(budget.queued_bytes(), queued);
        let later = t0 + MAX_QUEUE_DELAY + Duration::from_millis(10);
        p.handle_timeout(later).unwrap();
        let _ = drain(&mut p);
        assert_eq!(budget.flushes(), 1);
        assert_eq!(budget.queued_bytes(), 0);
        // A NACK for a dropped packet: refused.
        p.handle_write(rtp(VIDEO, 150, 1100, later)).unwrap();
        assert!(drain(&mut p).is_empty());
        assert_eq!(budget.queued_bytes(), 0);
        // The next frame: sent.
        p.handle_write(rtp(VIDEO, 200, 1100, later)).unwrap();
        assert_eq!(drain(&mut p), vec![VIDEO]);
    }

    /// A retransmission of an older packet queued behind newer ones
    /// widens the refused range to it, not to every number there is.
    #[test]
    fn a_flush_refuses_only_what_it_dropped() {
        let (mut p, _) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(100_000.0, t0)).unwrap();
        for seq in 100..200 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        p.handle_write(rtp(VIDEO, 95, 1100, t0)).unwrap();
        let _ = drain(&mut p);
        let later = t0 + MAX_QUEUE_DELAY + Duration::from_millis(10);
        p.handle_timeout(later).unwrap();
        let _ = drain(&mut p);
        p.handle_write(rtp(VIDEO, 97, 1100, later)).unwrap();
        assert!(drain(&mut p).is_empty(), "inside the dropped range");
        p.handle_write(rtp(VIDEO, 200, 1100, later)).unwrap();
        assert_eq!(drain(&mut p), vec![VIDEO], "after it: sent");
    }

    /// The queue is bounded.
    #[test]
    fn a_full_queue_refuses_video() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        for seq in 0..(VIDEO_QUEUE_LIMIT as u16 + 100) {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        assert!(budget.refused() >= 90, "{}", budget.refused());
        assert!(p.queue.len() <= VIDEO_QUEUE_LIMIT);
    }

    /// While the bottleneck queues, retransmissions are not sent; when it
    /// drains they are again.
    #[test]
    fn resends_wait_out_a_queueing_bottleneck() {
        let (mut p, budget) = pacer();
        let t0 = Instant::now();
        p.handle_read(estimate(10_000_000.0, t0)).unwrap();
        for seq in 0..10 {
            p.handle_write(rtp(VIDEO, seq, 1100, t0)).unwrap();
        }
        let mut sent = drain(&mut p).len();
        let mut t1 = t0;
        for _ in 0..50 {
            t1 += Duration::from_millis(20);
            p.handle_timeout(t1).unwrap();
            sent += drain(&mut p).len();
        }
        assert_eq!(sent, 10);
        budget.set_network_queue(RESEND_QUEUE_LIMIT + Duration::from_millis(50));
        p.handle_write(rtp(VIDEO, 3, 1100, t1)).unwrap();
        assert!(drain(&mut p).is_empty(), "a resend into a queue");
        p.handle_write(rtp(VIDEO, 10, 1100, t1)).unwrap();
        assert_eq!(drain(&mut p), vec![VIDEO], "new video still goes");
        budget.set_network_queue(Duration::from_millis(5));
        p.handle_write(rtp(VIDEO, 4, 1100, t1)).unwrap();
        assert_eq!(drain(&mut p), vec![VIDEO], "a resend once it drained");
    }
}
