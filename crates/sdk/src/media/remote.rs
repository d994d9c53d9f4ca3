//! A stream received from another user: its tracks decoded to frames and
//! played audio, with packet and loss counters.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use kaigi_media::{H264Decoder, OpusDecoder, VideoFrame};
use kaigi_proto::signal::StreamType;
use kaigi_proto::UserId;
use kaigi_rtc::RtpCodecKind;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

use super::frames::{is_keyframe, FrameAssembler};
use super::jitter::{AudioStats, JitterBuffer, Playout, FRAME};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

struct RemoteInner {
    user: UserId,
    stream_type: StreamType,
    video: watch::Sender<Option<Arc<VideoFrame>>>,
    frames_decoded: AtomicU64,
    audio_level: AtomicU8,
    audio_packets: AtomicU64,
    /// When the last audio packet arrived (µs since the Unix epoch).
    audio_at: AtomicU64,
    closed: CancellationToken,
    /// Where decoded audio is played, when the app chose a speaker.
    audio_out: AudioOut,
    /// Whether video is decoded (false: packets are only counted).
    decode: bool,
    /// RTP packets received, and expected by their sequence numbers.
    rtp_received: AtomicU64,
    rtp_expected: AtomicU64,
    /// What audio playout did so far.
    audio_stats: Mutex<AudioStats>,
}

/// Counts a track's packets against its sequence numbers.
#[derive(Debug, Default)]
struct SeqCounter {
    first: Option<u64>,
    highest: u64,
}

impl SeqCounter {
    /// `seq` extended to 64 bits: the candidate nearest the highest seen
    /// (the first starts one cycle up, so an earlier one stays positive).
    fn extended(&self, seq: u16) -> u64 {
        if self.first.is_none() {
            return 0x1_0000 + u64::from(seq);
        }
        let cycle = self.highest & !0xffff;
        [cycle.wrapping_sub(0x1_0000), cycle, cycle + 0x1_0000]
            .into_iter()
            .map(|c| c.wrapping_add(u64::from(seq)))
            .min_by_key(|e| e.abs_diff(self.highest))
            .unwrap_or(self.highest)
    }

    /// Counts `seq` in; how far the highest sequence number grew.
    fn push(&mut self, seq: u16) -> u64 {
        let ext = self.extended(seq);
        let Some(first) = self.first else {
            self.first = Some(ext);
            self.highest = ext;
            return 1;
        };
        if ext > self.highest && ext >= first {
            let grew = ext - self.highest;
            self.highest = ext;
            grew
        } else {
            0
        }
    }
}

impl RemoteInner {
    /// This stream's source id in the speaker's mixer.
    fn mix_id(&self) -> u64 {
        self as *const RemoteInner as u64
    }

    /// Decodes (recovers, conceals) one frame of audio and plays it.
    fn play(&self, opus: &mut OpusDecoder, what: Playout) {
        let frame = match what {
            Playout::Decode(packet) => opus.decode(&packet),
            Playout::Fec(next) => opus.decode_fec(&next),
            Playout::Conceal => opus.decode(&[]),
            Playout::Silence => return,
        };
        match frame {
            Ok(frame) => {
                self.audio_level.store(frame.volume(), Ordering::Relaxed);
                if let Some(mixer) = self.audio_out.lock().as_ref() {
                    mixer.push(self.mix_id(), &frame);
                }
            }
            Err(e) => debug!(user = %self.user, error = %e, "undecodable audio"),
        }
    }
}

/// The speaker's mixer, when the app plays remote audio.
pub(crate) type AudioOut = Arc<Mutex<Option<kaigi_media::Mixer>>>;

/// After this long without audio packets (muted, or gone) a stream is silent.
const SILENT_AFTER_US: u64 = 300_000;

/// Another user's stream, received and decoded.
#[derive(Clone)]
pub struct RemoteStream {
    inner: Arc<RemoteInner>,
}

impl RemoteStream {
    pub(super) fn new(
        user: UserId,
        stream_type: StreamType,
        audio_out: AudioOut,
        decode: bool,
    ) -> Self {
        RemoteStream {
            inner: Arc::new(RemoteInner {
                user,
                stream_type,
                video: watch::Sender::new(None),
                frames_decoded: AtomicU64::new(0),
                audio_level: AtomicU8::new(0),
                audio_packets: AtomicU64::new(0),
                audio_at: AtomicU64::new(0),
                closed: CancellationToken::new(),
                audio_out,
                decode,
                rtp_received: AtomicU64::new(0),
                rtp_expected: AtomicU64::new(0),
                audio_stats: Mutex::new(AudioStats::default()),
            }),
        }
    }

    /// Whose stream.
    pub fn user_id(&self) -> &UserId {
        &self.inner.user
    }

    /// Which of the user's streams: `main` (camera and microphone) or
    /// `sub` (a shared screen).
    pub fn stream_type(&self) -> StreamType {
        self.inner.stream_type
    }

    /// The newest decoded video frame, as it changes.
    pub fn video(&self) -> watch::Receiver<Option<Arc<VideoFrame>>> {
        self.inner.video.subscribe()
    }

    /// Video frames decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.inner.frames_decoded.load(Ordering::Relaxed)
    }

    /// The current audio volume, 0–100 (0 when no audio has arrived for
    /// 300 ms: muted or gone).
    pub fn audio_level(&self) -> u8 {
        let at = self.inner.audio_at.load(Ordering::Relaxed);
        if kaigi_media::unix_micros().saturating_sub(at) > SILENT_AFTER_US {
            return 0;
        }
        self.inner.audio_level.load(Ordering::Relaxed)
    }

    /// RTP packets (audio and video) received so far.
    pub fn packets_received(&self) -> u64 {
        self.inner.rtp_received.load(Ordering::Relaxed)
    }

    /// RTP packets lost so far: expected by sequence number, not received.
    pub fn packets_lost(&self) -> u64 {
        self.inner
            .rtp_expected
            .load(Ordering::Relaxed)
            .saturating_sub(self.packets_received())
    }

    /// Audio packets received so far.
    pub fn audio_packets(&self) -> u64 {
        self.inner.audio_packets.load(Ordering::Relaxed)
    }

    /// What this stream's audio playout did so far: frames played,
    /// recovered from FEC, concealed, late and dropped, and the jitter
    /// buffer's current delay.
    pub fn audio_stats(&self) -> AudioStats {
        *self.inner.audio_stats.lock()
    }

    pub(super) fn attach(&self, remote: Arc<dyn TrackRemote>, kind: RtpCodecKind) {
        let me = self.inner.clone();
        tokio::spawn(async move {
            let mut frames = FrameAssembler::default();
            // After a frame was given up on, only a keyframe is decoded:
            // the frames between reference a picture the decoder lacks.
            let mut awaiting_keyframe = false;
            // Each track has the decoder of its own kind only: an H.264
            // decoder holds megabytes from the start.
            let mut h264 = None;
            if kind == RtpCodecKind::Video && me.decode {
                match H264Decoder::new() {
                    Ok(d) => h264 = Some(d),
                    Err(e) => return warn!(error = %e, "no H.264 decoder"),
                }
            }
            let mut opus = None;
            if kind == RtpCodecKind::Audio {
                match OpusDecoder::new(2) {
                    Ok(d) => opus = Some(d),
                    Err(e) => return warn!(error = %e, "no Opus decoder"),
                }
            }
            let media_ssrc = remote.ssrcs().await.first().copied().unwrap_or_default();
            // Until a picture decodes, ask for a keyframe (at most every
            // 300 ms): one sent before this subscription existed is lost.
            let mut need_keyframe = kind == RtpCodecKind::Video && me.decode;
            let mut last_pli: Option<Instant> = None;
            let mut seq = SeqCounter::default();
            // Audio plays from a jitter buffer on a 20 ms clock.
            let mut jitter = JitterBuffer::new(Instant::now());
            let mut playout = (kind == RtpCodecKind::Audio).then(|| tokio::time::interval(FRAME));
            loop {
                let tick = async {
                    match playout.as_mut() {
                        Some(clock) => clock.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let evt = tokio::select! {
                    _ = me.closed.cancelled() => break,
                    _ = tick => {
                        if let Some(opus) = opus.as_mut() {
                            me.play(opus, jitter.pop(Instant::now()));
                        }
                        *me.audio_stats.lock() = jitter.stats();
                        continue;
                    }
                    evt = remote.poll() => evt,
                };
                let packet = match evt {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => p,
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => continue,
                };
                me.rtp_received.fetch_add(1, Ordering::Relaxed);
                let ext = seq.extended(packet.header.sequence_number);
                me.rtp_expected
                    .fetch_add(seq.push(packet.header.sequence_number), Ordering::Relaxed);
                if kind == RtpCodecKind::Audio {
                    me.audio_packets.fetch_add(1, Ordering::Relaxed);
                    me.audio_at
                        .store(kaigi_media::unix_micros(), Ordering::Relaxed);
                    jitter.push(ext, packet.payload, Instant::now());
                    continue;
                }
                let Some(h264) = h264.as_mut() else {
                    continue; // not decoded (`decode` off)
                };
                frames.push(
                    ext,
                    packet.header.timestamp,
                    packet.header.marker,
                    packet.payload,
                );
                while let Some(frame) = frames.pop(Instant::now()) {
                    if frame.after_loss {
                        debug!(user = %me.user, "frames lost");
                        need_keyframe = true;
                        awaiting_keyframe = true;
                    }
                    let mut depacketizer = H264Packet::default();
                    let mut unit = Vec::new();
                    for payload in &frame.payloads {
                        if let Ok(b) = depacketizer.depacketize(payload) {
                            unit.extend_from_slice(&b);
                        }
                    }
                    if unit.is_empty() || (awaiting_keyframe && !is_keyframe(&unit)) {
                        continue;
                    }
                    match h264.decode(&unit) {
                        Ok(Some(frame)) => {
                            need_keyframe = false;
                            awaiting_keyframe = false;
                            me.frames_decoded.fetch_add(1, Ordering::Relaxed);
                            me.video.send_replace(Some(Arc::new(frame)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            debug!(user = %me.user, error = %e, "undecodable frame");
                            need_keyframe = true;
                            awaiting_keyframe = true;
                        }
                    }
                }
                if need_keyframe
                    && last_pli.is_none_or(|t| t.elapsed() >= Duration::from_millis(300))
                {
                    last_pli = Some(Instant::now());
                    debug!(user = %me.user, "asking for a keyframe");
                    let _ = remote.write_rtcp(vec![kaigi_rtc::pli(media_ssrc)]).await;
                }
            }
            debug!(user = %me.user, "remote track ended");
        });
    }

    pub(super) fn close(&self) {
        self.inner.closed.cancel();
        if let Some(mixer) = self.inner.audio_out.lock().as_ref() {
            mixer.remove(self.inner.mix_id());
        }
    }
}

#[cfg(test)]
mod seq_tests {
    use super::SeqCounter;

    #[test]
    fn counts_gaps_across_the_wrap_and_ignores_reordering() {
        let mut c = SeqCounter::default();
        let mut expected = 0;
        for s in [65530u16, 65531, 65533, 65535, 0, 3, 2, 4] {
            expected += c.push(s);
        }
        // 65530..=4 is 11 sequence numbers; 8 arrived (one reordered).
        assert_eq!(expected, 11);
    }
}
