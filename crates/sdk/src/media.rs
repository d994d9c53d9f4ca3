//! Local and remote streams, and the client's side of the one peer
//! connection to the server (which always makes the offers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::{
    H264Decoder, H264Encoder, H264Settings, OpusDecoder, OpusEncoder, SineTone, TestPattern,
    VideoFrame, OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE,
};
use kaigi_proto::UserId;
use kaigi_rtc::{
    build_peer, event_handler, is_keyframe_request, set_local_and_gather, track, Gathering,
    PeerEvent, RtpCodecKind,
};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::error::ClientError;

/// What a synthetic [`LocalStream`] produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSource {
    /// A moving test pattern of this size (carrying a frame counter and
    /// capture time), or no video.
    pub video: Option<(usize, usize)>,
    /// Frames per second of the pattern.
    pub fps: u32,
    /// A sine tone at this frequency, or no audio.
    pub tone_hz: Option<f64>,
    /// Video bitrate.
    pub video_bitrate_bps: u32,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        SyntheticSource {
            video: Some((640, 480)),
            fps: 30,
            tone_hz: Some(440.0),
            video_bitrate_bps: 1_000_000,
        }
    }
}

struct LocalInner {
    video: Option<Arc<TrackLocalStaticSample>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    video_pt: AtomicU8,
    audio_pt: AtomicU8,
    keyframe: AtomicBool,
    listening: AtomicBool,
    audio_level: AtomicU8,
    video_muted: AtomicBool,
    audio_muted: AtomicBool,
    frames_sent: AtomicU64,
    closed: CancellationToken,
}

/// Media this client captures and can publish: here, synthetic sources
/// (cameras and microphones come with the device layer).
#[derive(Clone)]
pub struct LocalStream {
    inner: Arc<LocalInner>,
}

fn kind_track(
    user: &str,
    kind: RtpCodecKind,
    instance: u32,
) -> Result<Arc<TrackLocalStaticSample>, ClientError> {
    let name = if kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    };
    // Unique per stream: a peer connection ignores a second track whose id
    // it has already seen, so a republished stream needs new ids.
    let id = format!("{user}-{name}-{instance:x}");
    TrackLocalStaticSample::new(Instant::now(), track(user, &id, kind))
        .map(Arc::new)
        .map_err(|e| ClientError::Media(e.to_string()))
}

impl LocalStream {
    /// Starts synthetic sources for `user` (the stream id others see).
    pub fn synthetic(user: &UserId, source: SyntheticSource) -> Result<Self, ClientError> {
        let media = |e: kaigi_media::MediaError| ClientError::Media(e.to_string());
        let instance: u32 = rand::random();
        let inner = Arc::new(LocalInner {
            video: source
                .video
                .map(|_| kind_track(user.as_str(), RtpCodecKind::Video, instance))
                .transpose()?,
            audio: source
                .tone_hz
                .map(|_| kind_track(user.as_str(), RtpCodecKind::Audio, instance))
                .transpose()?,
            video_pt: AtomicU8::new(0),
            audio_pt: AtomicU8::new(0),
            keyframe: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            audio_level: AtomicU8::new(0),
            video_muted: AtomicBool::new(false),
            audio_muted: AtomicBool::new(false),
            frames_sent: AtomicU64::new(0),
            closed: CancellationToken::new(),
        });
        if let (Some((w, h)), Some(track)) = (source.video, inner.video.clone()) {
            let mut pattern = TestPattern::new(w, h).map_err(media)?;
            let mut encoder = H264Encoder::new(H264Settings {
                bitrate_bps: source.video_bitrate_bps,
                fps: source.fps as f32,
                keyframe_interval: 100_000,
            })
            .map_err(media)?;
            let me = inner.clone();
            let period = Duration::from_secs_f64(1.0 / f64::from(source.fps.max(1)));
            tokio::spawn(async move {
                let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = me.closed.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let pt = me.video_pt.load(Ordering::SeqCst);
                    let frame = pattern.next_frame();
                    if pt == 0 || me.video_muted.load(Ordering::SeqCst) {
                        continue;
                    }
                    if me.keyframe.swap(false, Ordering::SeqCst) {
                        encoder.request_keyframe();
                    }
                    match encoder.encode(&frame) {
                        Ok(Some(e)) => {
                            let sample = Sample {
                                data: Bytes::from(e.data),
                                duration: period,
                                ..Sample::new(Instant::now())
                            };
                            if track
                                .sample_writer(ssrc, pt)
                                .write_sample(&sample)
                                .await
                                .is_ok()
                            {
                                me.frames_sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "encoding failed"),
                    }
                }
            });
        }
        if let (Some(hz), Some(track)) = (source.tone_hz, inner.audio.clone()) {
            let mut tone = SineTone::new(hz, OPUS_SAMPLE_RATE);
            let mut encoder = OpusEncoder::new(1, 32_000).map_err(media)?;
            let me = inner.clone();
            tokio::spawn(async move {
                let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = me.closed.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let frame = tone.frame(OPUS_FRAME_SAMPLES, kaigi_media::unix_micros());
                    let pt = me.audio_pt.load(Ordering::SeqCst);
                    let muted = me.audio_muted.load(Ordering::SeqCst);
                    me.audio_level
                        .store(if muted { 0 } else { frame.volume() }, Ordering::Relaxed);
                    if pt == 0 || muted {
                        continue;
                    }
                    if let Ok(packet) = encoder.encode(&frame) {
                        let sample = Sample {
                            data: Bytes::from(packet),
                            duration: Duration::from_millis(20),
                            ..Sample::new(Instant::now())
                        };
                        let _ = track.sample_writer(ssrc, pt).write_sample(&sample).await;
                    }
                }
            });
        }
        Ok(LocalStream { inner })
    }

    /// Whether it has audio.
    pub fn has_audio(&self) -> bool {
        self.inner.audio.is_some()
    }

    /// Whether it has video.
    pub fn has_video(&self) -> bool {
        self.inner.video.is_some()
    }

    /// The captured audio's volume, 0–100 (0 while muted).
    pub fn audio_level(&self) -> u8 {
        self.inner.audio_level.load(Ordering::Relaxed)
    }

    /// Video frames sent so far.
    pub fn frames_sent(&self) -> u64 {
        self.inner.frames_sent.load(Ordering::Relaxed)
    }

    /// Stops or resumes sending video.
    pub fn set_video_muted(&self, muted: bool) {
        self.inner.video_muted.store(muted, Ordering::SeqCst);
        if !muted {
            self.inner.keyframe.store(true, Ordering::SeqCst);
        }
    }

    /// Stops or resumes sending audio.
    pub fn set_audio_muted(&self, muted: bool) {
        self.inner.audio_muted.store(muted, Ordering::SeqCst);
    }

    /// Stops the sources and releases them.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Acts on keyframe requests (subscribers' PLIs relayed by the server)
    /// once the video track is bound to a connection: polling an unbound
    /// track ends at once.
    fn listen_for_keyframe_requests(&self) {
        let Some(track) = self.inner.video.clone() else {
            return;
        };
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.inner.clone();
        tokio::spawn(async move {
            loop {
                let evt = tokio::select! {
                    _ = me.closed.cancelled() => break,
                    evt = track.poll() => evt,
                };
                match evt {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                            me.keyframe.store(true, Ordering::SeqCst);
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            me.listening.store(false, Ordering::SeqCst);
        });
    }

    fn tracks(&self) -> Vec<Arc<TrackLocalStaticSample>> {
        self.inner
            .video
            .iter()
            .chain(self.inner.audio.iter())
            .cloned()
            .collect()
    }
}

struct RemoteInner {
    user: UserId,
    video: watch::Sender<Option<Arc<VideoFrame>>>,
    frames_decoded: AtomicU64,
    audio_level: AtomicU8,
    audio_packets: AtomicU64,
    /// When the last audio packet arrived (µs since the Unix epoch).
    audio_at: AtomicU64,
    closed: CancellationToken,
}

/// After this long without audio packets (muted, or gone) a stream is silent.
const SILENT_AFTER_US: u64 = 300_000;

/// Another user's stream, received and decoded.
#[derive(Clone)]
pub struct RemoteStream {
    inner: Arc<RemoteInner>,
}

impl RemoteStream {
    fn new(user: UserId) -> Self {
        RemoteStream {
            inner: Arc::new(RemoteInner {
                user,
                video: watch::Sender::new(None),
                frames_decoded: AtomicU64::new(0),
                audio_level: AtomicU8::new(0),
                audio_packets: AtomicU64::new(0),
                audio_at: AtomicU64::new(0),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Whose stream.
    pub fn user_id(&self) -> &UserId {
        &self.inner.user
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

    /// Audio packets received so far.
    pub fn audio_packets(&self) -> u64 {
        self.inner.audio_packets.load(Ordering::Relaxed)
    }

    fn attach(&self, remote: Arc<dyn TrackRemote>, kind: RtpCodecKind) {
        let me = self.inner.clone();
        tokio::spawn(async move {
            let mut builder =
                SampleBuilder::new(128, H264Packet::default(), kaigi_rtc::VIDEO_CLOCK_RATE);
            let mut h264 = match H264Decoder::new() {
                Ok(d) => d,
                Err(e) => return warn!(error = %e, "no H.264 decoder"),
            };
            let mut opus = match OpusDecoder::new(2) {
                Ok(d) => d,
                Err(e) => return warn!(error = %e, "no Opus decoder"),
            };
            let media_ssrc = remote.ssrcs().await.first().copied().unwrap_or_default();
            // Until a picture decodes, ask for a keyframe (at most every
            // 300 ms): one sent before this subscription existed is lost.
            let mut need_keyframe = kind == RtpCodecKind::Video;
            let mut last_pli: Option<Instant> = None;
            loop {
                let evt = tokio::select! {
                    _ = me.closed.cancelled() => break,
                    evt = remote.poll() => evt,
                };
                let packet = match evt {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => p,
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => continue,
                };
                if kind == RtpCodecKind::Audio {
                    me.audio_packets.fetch_add(1, Ordering::Relaxed);
                    me.audio_at
                        .store(kaigi_media::unix_micros(), Ordering::Relaxed);
                    if let Ok(frame) = opus.decode(&packet.payload) {
                        me.audio_level.store(frame.volume(), Ordering::Relaxed);
                    }
                    continue;
                }
                builder.push(Instant::now(), packet);
                while let Some(sample) = builder.pop(Instant::now()) {
                    match h264.decode(&sample.data) {
                        Ok(Some(frame)) => {
                            need_keyframe = false;
                            me.frames_decoded.fetch_add(1, Ordering::Relaxed);
                            me.video.send_replace(Some(Arc::new(frame)));
                        }
                        Ok(None) => {}
                        Err(_) => need_keyframe = true,
                    }
                }
                if need_keyframe
                    && last_pli.is_none_or(|t| t.elapsed() >= Duration::from_millis(300))
                {
                    last_pli = Some(Instant::now());
                    let _ = remote.write_rtcp(vec![kaigi_rtc::pli(media_ssrc)]).await;
                }
            }
            debug!(user = %me.user, "remote track ended");
        });
    }

    fn close(&self) {
        self.inner.closed.cancel();
    }
}

/// The client's peer connection, remote streams and publication.
pub(crate) struct MediaSession {
    bind: IpAddr,
    pc: Option<Box<dyn PeerConnection>>,
    events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    gathering: Arc<Gathering>,
    /// A stream to attach at the next offer.
    pending: Option<LocalStream>,
    published: Option<LocalStream>,
    remotes: Arc<Mutex<HashMap<UserId, RemoteStream>>>,
}

/// What a track arriving meant.
pub(crate) enum Arrived {
    /// The first track of this user's stream.
    Subscribed(UserId),
    /// Another track of a stream already subscribed.
    More,
}

impl MediaSession {
    pub fn new(bind: IpAddr, remotes: Arc<Mutex<HashMap<UserId, RemoteStream>>>) -> Self {
        MediaSession {
            bind,
            pc: None,
            events: None,
            gathering: Arc::new(Gathering::default()),
            pending: None,
            published: None,
            remotes,
        }
    }

    /// Attaches `stream` at the next offer.
    pub fn publish(&mut self, stream: LocalStream) {
        self.pending = Some(stream);
    }

    /// Stops sending the published stream (it keeps running until closed).
    pub fn unpublish(&mut self) {
        self.pending = None;
        if let Some(s) = self.published.take() {
            s.inner.video_pt.store(0, Ordering::SeqCst);
            s.inner.audio_pt.store(0, Ordering::SeqCst);
        }
    }

    /// The published stream, if any.
    pub fn published(&self) -> Option<&LocalStream> {
        self.published.as_ref()
    }

    /// Applies mute flags to the published stream.
    pub fn set_muted(&self, audio: Option<bool>, video: Option<bool>) {
        if let Some(stream) = &self.published {
            if let Some(a) = audio {
                stream.set_audio_muted(a);
            }
            if let Some(v) = video {
                stream.set_video_muted(v);
            }
        }
    }

    /// Answers the server's offer; `carries_publish` says it is the offer
    /// for the pending publish.
    pub async fn answer(
        &mut self,
        sdp: String,
        carries_publish: bool,
    ) -> Result<String, ClientError> {
        let err = |e: webrtc::error::Error| ClientError::Media(e.to_string());
        if self.pc.is_none() {
            let (handler, events, gathering) = event_handler();
            let pc = build_peer(self.bind, handler)
                .await
                .map_err(|e| ClientError::Media(e.to_string()))?;
            self.pc = Some(Box::new(pc));
            self.events = Some(events);
            self.gathering = gathering;
        }
        let pc = self
            .pc
            .as_ref()
            .ok_or_else(|| ClientError::Media("no peer connection".into()))?;
        if let Some(stream) = self.pending.take_if(|_| carries_publish) {
            // Send-only transceivers without a mid, added before the offer
            // is applied, are what its new receive-only m-lines bind to;
            // `add_track` could take a subscription's transceiver instead.
            for t in stream.tracks() {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                };
                pc.add_transceiver_from_track(t.clone() as Arc<dyn TrackLocal>, Some(init))
                    .await
                    .map_err(err)?;
            }
            self.published = Some(stream);
        }
        let offer = RTCSessionDescription::offer(sdp).map_err(err)?;
        pc.set_remote_description(offer).await.map_err(err)?;
        let answer = pc.create_answer(None).await.map_err(err)?;
        set_local_and_gather(pc.as_ref(), answer, &self.gathering)
            .await
            .map_err(|e| ClientError::Media(e.to_string()))
    }

    /// After `published`: starts the sources sending with the negotiated
    /// payload types.
    pub async fn start_sending(&mut self) {
        let (Some(pc), Some(stream)) = (&self.pc, &self.published) else {
            return;
        };
        for sender in pc.get_senders().await {
            let kind = sender.track().kind().await;
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            let Some(pt) = params.rtp_parameters.codecs.first().map(|c| c.payload_type) else {
                continue;
            };
            if kind == RtpCodecKind::Audio {
                stream.inner.audio_pt.store(pt, Ordering::SeqCst);
            } else {
                stream.inner.video_pt.store(pt, Ordering::SeqCst);
                stream.inner.keyframe.store(true, Ordering::SeqCst);
            }
        }
        stream.listen_for_keyframe_requests();
    }

    /// The next track the server sends; never, before a connection exists.
    pub async fn next_track(&mut self) -> Arc<dyn TrackRemote> {
        match self.events.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(PeerEvent::Track(t)) => t,
                Some(PeerEvent::Failed) => std::future::pending().await,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Decodes a track the server sent; the stream id names its user.
    pub async fn on_track(&mut self, remote: Arc<dyn TrackRemote>) -> Option<Arrived> {
        let user = UserId::new(remote.stream_id().await).ok()?;
        let kind = remote.kind().await;
        let mut remotes = self.remotes.lock().ok()?;
        let (stream, first) = match remotes.get(&user) {
            Some(s) => (s.clone(), false),
            None => {
                let s = RemoteStream::new(user.clone());
                remotes.insert(user.clone(), s.clone());
                (s, true)
            }
        };
        stream.attach(remote, kind);
        Some(if first {
            Arrived::Subscribed(user)
        } else {
            Arrived::More
        })
    }

    /// The connection's loss and RTT counters; `None` before it exists.
    pub async fn link_counters(&self) -> Option<kaigi_rtc::quality::LinkCounters> {
        match &self.pc {
            Some(pc) => Some(kaigi_rtc::quality::link_counters(pc.as_ref()).await),
            None => None,
        }
    }

    /// Forgets a user's stream.
    pub fn stream_removed(&mut self, user: &UserId) {
        if let Some(s) = self.remotes.lock().ok().and_then(|mut r| r.remove(user)) {
            s.close();
        }
    }

    /// Closes the connection and every remote stream; the published local
    /// stream is returned so it can be published again after a reconnect.
    pub async fn close(mut self) -> Option<LocalStream> {
        if let Ok(mut r) = self.remotes.lock() {
            for (_, s) in r.drain() {
                s.close();
            }
        }
        if let Some(pc) = self.pc.take() {
            let _ = pc.close().await;
        }
        self.published.take().or(self.pending.take())
    }
}
