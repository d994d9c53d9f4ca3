//! Local and remote streams, and the client's side of the one peer
//! connection to the server (which always makes the offers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::{
    AudioFrame, Camera, CameraSettings, DeviceError, H264Decoder, H264Encoder, H264Settings,
    Microphone, OpusDecoder, OpusEncoder, SineTone, TestPattern, VideoFrame, OPUS_FRAME_SAMPLES,
    OPUS_SAMPLE_RATE,
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

/// Where a [`LocalStream`]'s video comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoInput {
    /// No video.
    None,
    /// A moving test pattern of this size carrying a frame counter and
    /// capture time.
    TestPattern {
        /// Width (even).
        width: usize,
        /// Height (even).
        height: usize,
    },
    /// A camera: `id` from [`crate::devices::cameras`], or the first one.
    Camera {
        /// The device id.
        id: Option<String>,
        /// Wanted width; the camera gives the closest it has.
        width: u32,
        /// Wanted height.
        height: u32,
    },
}

/// Where a [`LocalStream`]'s audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioInput {
    /// No audio.
    None,
    /// A sine tone at this frequency.
    Tone {
        /// Hz.
        hz: f64,
    },
    /// A microphone: `id` from [`crate::devices::microphones`], or the
    /// first one.
    Microphone {
        /// The device id.
        id: Option<String>,
    },
}

/// What a [`LocalStream`] captures and how it encodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalStreamConfig {
    /// The video source.
    pub video: VideoInput,
    /// The audio source.
    pub audio: AudioInput,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate.
    pub video_bitrate_bps: u32,
}

impl Default for LocalStreamConfig {
    /// The first camera at 640×480, 30 fps, and the first microphone.
    fn default() -> Self {
        LocalStreamConfig {
            video: VideoInput::Camera {
                id: None,
                width: 640,
                height: 480,
            },
            audio: AudioInput::Microphone { id: None },
            fps: 30,
            video_bitrate_bps: 1_000_000,
        }
    }
}

impl From<SyntheticSource> for LocalStreamConfig {
    fn from(s: SyntheticSource) -> Self {
        LocalStreamConfig {
            video: match s.video {
                Some((width, height)) => VideoInput::TestPattern { width, height },
                None => VideoInput::None,
            },
            audio: match s.tone_hz {
                Some(hz) => AudioInput::Tone { hz },
                None => AudioInput::None,
            },
            fps: s.fps,
            video_bitrate_bps: s.video_bitrate_bps,
        }
    }
}

/// Raw frames waiting for the encoder: the newest few, older ones dropped
/// when the encoder falls behind.
const RAW_QUEUE: usize = 2;

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
    config: LocalStreamConfig,
    /// Where captured frames go (to the encoders).
    video_in: mpsc::Sender<VideoFrame>,
    audio_in: mpsc::Sender<AudioFrame>,
    /// The open devices; dropping them releases them.
    camera: Mutex<Option<Camera>>,
    microphone: Mutex<Option<Microphone>>,
    /// Listeners for device failures.
    device_errors: Arc<Mutex<Vec<mpsc::UnboundedSender<DeviceError>>>>,
    /// The newest captured frame, for a local preview.
    preview: watch::Sender<Option<Arc<VideoFrame>>>,
}

/// Media this client captures and can publish: from a camera and a
/// microphone, or from synthetic sources (test pattern, tone).
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

/// A device-failure callback that tells every listener once.
fn report_to(
    listeners: &Arc<Mutex<Vec<mpsc::UnboundedSender<DeviceError>>>>,
) -> impl FnMut(DeviceError) + Send + 'static {
    let listeners = listeners.clone();
    move |e| listeners.lock().retain(|l| l.send(e.clone()).is_ok())
}

impl LocalStream {
    /// Starts synthetic sources for `user` (the stream id others see).
    pub fn synthetic(user: &UserId, source: SyntheticSource) -> Result<Self, ClientError> {
        Self::new(user, source.into())
    }

    /// Opens the configured sources for `user` (the stream id others see):
    /// cameras and microphones are opened now, so a missing or busy device
    /// is an error here, not later.
    pub fn new(user: &UserId, config: LocalStreamConfig) -> Result<Self, ClientError> {
        let media = |e: kaigi_media::MediaError| ClientError::Media(e.to_string());
        let instance: u32 = rand::random();
        let has_video = config.video != VideoInput::None;
        let has_audio = config.audio != AudioInput::None;
        if !has_video && !has_audio {
            return Err(ClientError::InvalidOptions(
                "a stream needs audio, video or both".into(),
            ));
        }
        let fps = config.fps.clamp(1, 60);
        let (video_in, video_rx) = mpsc::channel::<VideoFrame>(RAW_QUEUE);
        let (audio_in, audio_rx) = mpsc::channel::<AudioFrame>(RAW_QUEUE * 4);
        let inner = Arc::new(LocalInner {
            video: has_video
                .then(|| kind_track(user.as_str(), RtpCodecKind::Video, instance))
                .transpose()?,
            audio: has_audio
                .then(|| kind_track(user.as_str(), RtpCodecKind::Audio, instance))
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
            config: config.clone(),
            video_in,
            audio_in,
            camera: Mutex::new(None),
            microphone: Mutex::new(None),
            device_errors: Arc::new(Mutex::new(Vec::new())),
            preview: watch::Sender::new(None),
        });
        let stream = LocalStream { inner };
        // Sources first: a device that cannot be opened fails the call.
        match &config.video {
            VideoInput::None => {}
            VideoInput::TestPattern { width, height } => {
                let pattern = TestPattern::new(*width, *height).map_err(media)?;
                stream.run_pattern(pattern, fps);
            }
            VideoInput::Camera { id, .. } => stream.switch_camera(id.as_deref())?,
        }
        match &config.audio {
            AudioInput::None => {}
            AudioInput::Tone { hz } => stream.run_tone(*hz),
            AudioInput::Microphone { id } => stream.switch_microphone(id.as_deref())?,
        }
        if let Some(track) = stream.inner.video.clone() {
            let encoder = H264Encoder::new(H264Settings {
                bitrate_bps: config.video_bitrate_bps,
                fps: fps as f32,
                keyframe_interval: 100_000,
            })
            .map_err(media)?;
            let period = Duration::from_secs_f64(1.0 / f64::from(fps));
            tokio::spawn(encode_video(
                stream.inner.clone(),
                track,
                encoder,
                video_rx,
                period,
            ));
        }
        if let Some(track) = stream.inner.audio.clone() {
            let encoder = OpusEncoder::new(1, 32_000).map_err(media)?;
            tokio::spawn(encode_audio(stream.inner.clone(), track, encoder, audio_rx));
        }
        Ok(stream)
    }

    fn run_pattern(&self, mut pattern: TestPattern, fps: u32) {
        let me = self.inner.clone();
        let period = Duration::from_secs_f64(1.0 / f64::from(fps));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = me.closed.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // The counter advances whether or not anyone takes the frame.
                let _ = me.video_in.try_send(pattern.next_frame());
            }
        });
    }

    fn run_tone(&self, hz: f64) {
        let me = self.inner.clone();
        let mut tone = SineTone::new(hz, OPUS_SAMPLE_RATE);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = me.closed.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let frame = tone.frame(OPUS_FRAME_SAMPLES, kaigi_media::unix_micros());
                let _ = me.audio_in.try_send(frame);
            }
        });
    }

    /// Switches to camera `id` (or the first one) without interrupting the
    /// stream: the new camera is opened before the old one is released, so
    /// on failure the old one keeps going. Only for camera streams.
    pub fn switch_camera(&self, id: Option<&str>) -> Result<(), ClientError> {
        let VideoInput::Camera { width, height, .. } = &self.inner.config.video else {
            return Err(ClientError::InvalidOptions(
                "this stream's video does not come from a camera".into(),
            ));
        };
        if self.is_closed() {
            return Err(ClientError::InvalidOptions("the stream is closed".into()));
        }
        let settings = CameraSettings {
            width: *width,
            height: *height,
            fps: self.inner.config.fps.clamp(1, 60),
        };
        let tx = self.inner.video_in.clone();
        let camera = Camera::open(
            id,
            settings,
            move |f| {
                let _ = tx.try_send(f);
            },
            report_to(&self.inner.device_errors),
        )?;
        let old = self.inner.camera.lock().replace(camera);
        drop(old);
        self.inner.keyframe.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Switches to microphone `id` (or the first one); see
    /// [`LocalStream::switch_camera`]. Only for microphone streams.
    pub fn switch_microphone(&self, id: Option<&str>) -> Result<(), ClientError> {
        if !matches!(self.inner.config.audio, AudioInput::Microphone { .. }) {
            return Err(ClientError::InvalidOptions(
                "this stream's audio does not come from a microphone".into(),
            ));
        }
        if self.is_closed() {
            return Err(ClientError::InvalidOptions("the stream is closed".into()));
        }
        let tx = self.inner.audio_in.clone();
        let mic = Microphone::open(
            id,
            move |f| {
                let _ = tx.try_send(f);
            },
            report_to(&self.inner.device_errors),
        )?;
        let old = self.inner.microphone.lock().replace(mic);
        drop(old);
        Ok(())
    }

    /// Device failures (a camera or microphone unplugged mid-call), as they
    /// happen. The failed source stops; switch to another device to go on.
    pub fn device_errors(&self) -> mpsc::UnboundedReceiver<DeviceError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listeners = self.inner.device_errors.lock();
        // Listeners that went away are forgotten here too, not only when
        // an error is next reported.
        listeners.retain(|l| !l.is_closed());
        listeners.push(tx);
        rx
    }

    /// Whether `other` is a handle to this same stream.
    pub fn same_as(&self, other: &LocalStream) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The newest captured video frame, as it changes (a local preview);
    /// captured whether or not the stream is published or muted.
    pub fn video(&self) -> watch::Receiver<Option<Arc<VideoFrame>>> {
        self.inner.preview.subscribe()
    }

    /// What the stream was made with.
    pub fn config(&self) -> &LocalStreamConfig {
        &self.inner.config
    }

    /// The open camera's id, if the video comes from one.
    pub fn camera_id(&self) -> Option<String> {
        self.inner.camera.lock().as_ref().map(|c| c.id().to_owned())
    }

    /// The open microphone's id, if the audio comes from one.
    pub fn microphone_id(&self) -> Option<String> {
        self.inner
            .microphone
            .lock()
            .as_ref()
            .map(|m| m.name().to_owned())
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

    /// Stops the sources and releases the devices (the camera light goes
    /// off before this returns).
    pub fn close(&self) {
        self.inner.closed.cancel();
        drop(self.inner.camera.lock().take());
        drop(self.inner.microphone.lock().take());
    }

    /// Cancelled when the stream closes.
    pub(crate) fn closed_token(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Whether any device is still open (false after `close`).
    pub fn holds_devices(&self) -> bool {
        self.inner.camera.lock().is_some() || self.inner.microphone.lock().is_some()
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

/// Encodes captured video and sends it while a payload type is negotiated
/// and video is not muted.
async fn encode_video(
    me: Arc<LocalInner>,
    track: Arc<TrackLocalStaticSample>,
    mut encoder: H264Encoder,
    mut frames: mpsc::Receiver<VideoFrame>,
    period: Duration,
) {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
    loop {
        let frame = tokio::select! {
            _ = me.closed.cancelled() => break,
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
        let frame = Arc::new(frame);
        if me.preview.receiver_count() > 0 {
            me.preview.send_replace(Some(frame.clone()));
        }
        let pt = me.video_pt.load(Ordering::SeqCst);
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
}

/// Encodes captured audio (20 ms frames) and sends it while a payload type
/// is negotiated and audio is not muted; keeps the level up to date.
async fn encode_audio(
    me: Arc<LocalInner>,
    track: Arc<TrackLocalStaticSample>,
    mut encoder: OpusEncoder,
    mut frames: mpsc::Receiver<AudioFrame>,
) {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
    loop {
        let frame = tokio::select! {
            _ = me.closed.cancelled() => break,
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
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
    /// Where decoded audio is played, when the app chose a speaker.
    audio_out: AudioOut,
    /// Whether video is decoded (false: packets are only counted).
    decode: bool,
    /// RTP packets received, and expected by their sequence numbers.
    rtp_received: AtomicU64,
    rtp_expected: AtomicU64,
}

/// Counts a track's packets against its sequence numbers.
#[derive(Debug, Default)]
struct SeqCounter {
    first: Option<u64>,
    highest: u64,
}

impl SeqCounter {
    /// Notes `seq`; returns how much the expected count grew.
    fn push(&mut self, seq: u16) -> u64 {
        let Some(first) = self.first else {
            self.first = Some(u64::from(seq));
            self.highest = u64::from(seq);
            return 1;
        };
        // Extend to 64 bits: the candidate nearest the highest seen.
        let cycle = self.highest & !0xffff;
        let ext = [cycle.wrapping_sub(0x1_0000), cycle, cycle + 0x1_0000]
            .into_iter()
            .map(|c| c.wrapping_add(u64::from(seq)))
            .min_by_key(|e| e.abs_diff(self.highest))
            .unwrap_or(self.highest);
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
    fn new(user: UserId, audio_out: AudioOut, decode: bool) -> Self {
        RemoteStream {
            inner: Arc::new(RemoteInner {
                user,
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
            let mut need_keyframe = kind == RtpCodecKind::Video && me.decode;
            let mut last_pli: Option<Instant> = None;
            let mut seq = SeqCounter::default();
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
                me.rtp_received.fetch_add(1, Ordering::Relaxed);
                me.rtp_expected
                    .fetch_add(seq.push(packet.header.sequence_number), Ordering::Relaxed);
                if kind == RtpCodecKind::Audio {
                    me.audio_packets.fetch_add(1, Ordering::Relaxed);
                    me.audio_at
                        .store(kaigi_media::unix_micros(), Ordering::Relaxed);
                    if let Ok(frame) = opus.decode(&packet.payload) {
                        me.audio_level.store(frame.volume(), Ordering::Relaxed);
                        if let Some(mixer) = me.audio_out.lock().as_ref() {
                            mixer.push(me.mix_id(), &frame);
                        }
                    }
                    continue;
                }
                if !me.decode {
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
        if let Some(mixer) = self.inner.audio_out.lock().as_ref() {
            mixer.remove(self.inner.mix_id());
        }
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
    audio_out: AudioOut,
    /// Whether received video is decoded.
    pub decode: bool,
}

/// What a track arriving meant.
pub(crate) enum Arrived {
    /// The first track of this user's stream.
    Subscribed(UserId),
    /// Another track of a stream already subscribed.
    More,
}

impl MediaSession {
    pub fn new(
        bind: IpAddr,
        remotes: Arc<Mutex<HashMap<UserId, RemoteStream>>>,
        audio_out: AudioOut,
    ) -> Self {
        MediaSession {
            bind,
            pc: None,
            events: None,
            gathering: Arc::new(Gathering::default()),
            pending: None,
            published: None,
            remotes,
            audio_out,
            decode: true,
        }
    }

    /// Attaches `stream` at the next offer.
    pub fn publish(&mut self, stream: LocalStream) {
        self.pending = Some(stream);
    }

    /// Forgets a publish the server refused; what is published stays.
    pub fn cancel_publish(&mut self) {
        self.pending = None;
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
    /// for the pending publish, `new_connection` that it replaces the
    /// current connection (the published stream moves to the new one).
    pub async fn answer(
        &mut self,
        sdp: String,
        carries_publish: bool,
        new_connection: bool,
    ) -> Result<String, ClientError> {
        let err = |e: webrtc::error::Error| ClientError::Media(e.to_string());
        let mut moved = false;
        if new_connection {
            // Closed first: a local track is bound to one connection at a
            // time. Remote streams stay; their new tracks attach to them.
            if let Some(pc) = self.pc.take() {
                kaigi_rtc::close_peer(pc.as_ref()).await;
            }
            self.events = None;
            if let Some(stream) = self.published.take() {
                self.pending = Some(stream);
                moved = true;
            }
        }
        let carries_publish = carries_publish || moved;
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
        let sdp = set_local_and_gather(pc.as_ref(), answer, &self.gathering)
            .await
            .map_err(|e| ClientError::Media(e.to_string()))?;
        if moved {
            // No `published` follows a replacement: send at once.
            self.start_sending().await;
        }
        Ok(sdp)
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
        let mut remotes = self.remotes.lock();
        let (stream, first) = match remotes.get(&user) {
            Some(s) => (s.clone(), false),
            None => {
                let s = RemoteStream::new(user.clone(), self.audio_out.clone(), self.decode);
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
        let removed = self.remotes.lock().remove(user);
        if let Some(s) = removed {
            s.close();
        }
    }

    /// Closes the connection and every remote stream; the published local
    /// stream is returned so it can be published again after a reconnect.
    pub async fn close(mut self) -> Option<LocalStream> {
        let streams: Vec<_> = self.remotes.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.close();
        }
        if let Some(pc) = self.pc.take() {
            kaigi_rtc::close_peer(pc.as_ref()).await;
        }
        self.published.take().or(self.pending.take())
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
