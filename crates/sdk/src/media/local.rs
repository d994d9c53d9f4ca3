//! The stream this client publishes: its sources (camera, microphone, or
//! a synthetic pattern and tone), encoders and the tracks they feed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::screen::{ScreenTarget, X11Screen};
use kaigi_media::{
    AudioFrame, AudioProcessing, AudioProcessor, Camera, CameraSettings, Content, DeviceError,
    H264Encoder, H264Settings, Microphone, OpusEncoder, SineTone, TestPattern, VideoFrame,
    OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE,
};
use kaigi_proto::signal::{VideoSize, MAX_LAYERS};
use kaigi_proto::UserId;
use kaigi_rtc::{is_keyframe_request, track, RtpCodecKind};
use rtc::media::Sample;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::Track;

use super::adapt::{Adaptation, LayerAdaptation};
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
    /// Video bitrate (of the largest simulcast layer).
    pub video_bitrate_bps: u32,
    /// Whether the video is sent in simulcast layers (see
    /// [`LocalStreamConfig::simulcast`]).
    pub simulcast: bool,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        SyntheticSource {
            video: Some((640, 480)),
            fps: 30,
            tone_hz: Some(440.0),
            video_bitrate_bps: 1_000_000,
            simulcast: true,
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
    /// An X11 screen or one of its windows, scaled to fit 1920×1080, encoded
    /// with the screen tuning (one layer; its bitrate follows the estimate).
    Screen {
        /// The X display (`:0`); none: `$DISPLAY`.
        display: Option<String>,
        /// One window's X id; none: the whole screen.
        window: Option<u32>,
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
    /// Video bitrate (of the largest simulcast layer).
    pub video_bitrate_bps: u32,
    /// Whether the video is sent in up to three simulcast layers (full,
    /// half and quarter size, each down to 160×90), so the server can
    /// send each subscriber the one its connection and its window fit.
    pub simulcast: bool,
    /// What processing a microphone's audio gets before it is encoded
    /// (echo cancellation against what this client plays, noise
    /// suppression, gain control; all on by default). Synthetic audio
    /// gets none.
    pub audio_processing: AudioProcessing,
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
            simulcast: true,
            audio_processing: AudioProcessing::default(),
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
            simulcast: s.simulcast,
            audio_processing: AudioProcessing::NONE,
        }
    }
}

/// Raw frames waiting for the encoder: the newest few, older ones dropped
/// when the encoder falls behind.
const RAW_QUEUE: usize = 2;
/// The Opus encoder's bitrate (speech, mono).
const AUDIO_BITRATE_BPS: u32 = 32_000;

/// Video waiting longer than this in the pacer makes the encoder skip
/// frames until it drains.
const MAX_PACER_DELAY: Duration = Duration::from_millis(150);

/// The smallest simulcast layer's least width and height.
const MIN_LAYER: (u32, u32) = (160, 90);

/// The simulcast layers for video of `width`×`height`, largest first: the
/// full size, then halves while they are at least [`MIN_LAYER`], at most
/// [`MAX_LAYERS`].
pub fn layer_sizes(width: u32, height: u32) -> Vec<VideoSize> {
    let mut sizes = vec![VideoSize::new(width, height)];
    while sizes.len() < MAX_LAYERS {
        let last = sizes[sizes.len() - 1];
        let next = VideoSize::new((last.width / 2) & !1, (last.height / 2) & !1);
        if next.width < MIN_LAYER.0 || next.height < MIN_LAYER.1 {
            break;
        }
        sizes.push(next);
    }
    sizes
}

/// One encoding of the video: its size, the track it is sent on, and
/// what the connection says about that track.
struct VideoLayer {
    /// Its size (0 by 0: the capture's, when not simulcast).
    size: VideoSize,
    track: Arc<TrackLocalStaticSample>,
    /// The track's id, to find it among the connection's senders.
    id: String,
    /// The negotiated payload type (0: not sending).
    pt: AtomicU8,
    /// A keyframe was asked for.
    keyframe: AtomicBool,
    listening: AtomicBool,
    /// The server says a subscriber needs it (every layer is, until the
    /// server says otherwise: `video-layers`).
    needed: AtomicBool,
    /// Frames sent on it.
    frames: AtomicU64,
}

struct LocalInner {
    /// The video's layers, largest first (one without simulcast; none
    /// without video).
    video: Vec<Arc<VideoLayer>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    audio_pt: AtomicU8,
    audio_level: AtomicU8,
    video_muted: AtomicBool,
    audio_muted: AtomicBool,
    frames_sent: AtomicU64,
    /// The send estimate and pacer queue of the connection it is sent on.
    budget: Mutex<Arc<kaigi_rtc::SendBudget>>,
    /// The part of the send estimate this stream may take (f64 bits): all
    /// of it, unless another stream is sent beside it.
    estimate_share: AtomicU64,
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
    /// What this client plays (the speaker's mixer): the echo to cancel.
    played: Mutex<Option<super::AudioOut>>,
    /// Whether the microphone hears a voice now (also while muted).
    voice: AtomicBool,
    /// The microphone's processing now (`processing_bits`).
    processing: AtomicU8,
}

/// `AudioProcessing` packed into one byte, to switch it from any thread.
fn processing_bits(p: AudioProcessing) -> u8 {
    u8::from(p.echo_cancellation) | u8::from(p.noise_suppression) << 1 | u8::from(p.auto_gain) << 2
}

fn processing_from_bits(b: u8) -> AudioProcessing {
    AudioProcessing {
        echo_cancellation: b & 1 != 0,
        noise_suppression: b & 2 != 0,
        auto_gain: b & 4 != 0,
    }
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
    id: &str,
) -> Result<Arc<TrackLocalStaticSample>, ClientError> {
    TrackLocalStaticSample::new(Instant::now(), track(user, id, kind))
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
        let sizes = match &config.video {
            VideoInput::None => Vec::new(),
            _ if !config.simulcast => vec![VideoSize::default()],
            VideoInput::TestPattern { width, height } => layer_sizes(*width as u32, *height as u32),
            VideoInput::Camera { width, height, .. } => layer_sizes(*width, *height),
            // A screen is one layer: its text needs every pixel.
            VideoInput::Screen { .. } => vec![VideoSize::default()],
        };
        // Track ids are unique per stream: a peer connection ignores a
        // second track whose id it has already seen, so a republished
        // stream needs new ids.
        let video = sizes
            .into_iter()
            .enumerate()
            .map(|(i, size)| {
                let id = format!("{user}-video-{instance:x}-{i}");
                Ok(Arc::new(VideoLayer {
                    size,
                    track: kind_track(user.as_str(), RtpCodecKind::Video, &id)?,
                    id,
                    pt: AtomicU8::new(0),
                    keyframe: AtomicBool::new(false),
                    needed: AtomicBool::new(true),
                    frames: AtomicU64::new(0),
                    listening: AtomicBool::new(false),
                }))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let inner = Arc::new(LocalInner {
            video,
            audio: has_audio
                .then(|| {
                    let id = format!("{user}-audio-{instance:x}");
                    kind_track(user.as_str(), RtpCodecKind::Audio, &id)
                })
                .transpose()?,
            audio_pt: AtomicU8::new(0),
            audio_level: AtomicU8::new(0),
            video_muted: AtomicBool::new(false),
            audio_muted: AtomicBool::new(false),
            frames_sent: AtomicU64::new(0),
            budget: Mutex::new(Arc::default()),
            estimate_share: AtomicU64::new(1.0f64.to_bits()),
            closed: CancellationToken::new(),
            config: config.clone(),
            video_in,
            audio_in,
            camera: Mutex::new(None),
            microphone: Mutex::new(None),
            device_errors: Arc::new(Mutex::new(Vec::new())),
            preview: watch::Sender::new(None),
            played: Mutex::new(None),
            voice: AtomicBool::new(false),
            processing: AtomicU8::new(processing_bits(config.audio_processing)),
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
            VideoInput::Screen { display, window } => {
                let target = window.map_or(ScreenTarget::Screen, ScreenTarget::Window);
                let screen = X11Screen::open(display.as_deref(), target).map_err(media)?;
                stream.run_screen(screen, fps)?;
            }
        }
        match &config.audio {
            AudioInput::None => {}
            AudioInput::Tone { hz } => stream.run_tone(*hz),
            AudioInput::Microphone { id } => stream.switch_microphone(id.as_deref())?,
        }
        if !stream.inner.video.is_empty() {
            let settings = H264Settings {
                bitrate_bps: config.video_bitrate_bps,
                fps: fps as f32,
                keyframe_interval: 100_000,
                content: match config.video {
                    VideoInput::Screen { .. } => Content::Screen,
                    _ => Content::Camera,
                },
            };
            // Opened now: an encoder that cannot start fails the call.
            let encoders = stream
                .inner
                .video
                .iter()
                .map(|_| H264Encoder::new(settings).map(Some))
                .collect::<Result<Vec<_>, _>>()
                .map_err(media)?;
            let period = Duration::from_secs_f64(1.0 / f64::from(fps));
            tokio::spawn(encode_video(
                stream.inner.clone(),
                settings,
                encoders,
                video_rx,
                period,
            ));
        }
        if let Some(track) = stream.inner.audio.clone() {
            let encoder = OpusEncoder::new(1, AUDIO_BITRATE_BPS as i32).map_err(media)?;
            let audio_rx = match config.audio {
                // A microphone's audio is processed on a thread of its own
                // (real-time work, off the runtime) on its way to the
                // encoder.
                AudioInput::Microphone { .. } => {
                    let (processed_tx, processed_rx) = mpsc::channel(RAW_QUEUE * 4);
                    let me = stream.inner.clone();
                    std::thread::Builder::new()
                        .name("kaigi-audio-processing".into())
                        .spawn(move || process_microphone(&me, audio_rx, &processed_tx))
                        .map_err(|e| ClientError::Media(format!("audio processing thread: {e}")))?;
                    processed_rx
                }
                _ => audio_rx,
            };
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

    /// Grabs the screen `fps` times a second on a thread of its own (X
    /// calls block) until the stream closes; a screen or window that goes
    /// away (the window closed, the display ended) closes the stream.
    fn run_screen(&self, mut screen: X11Screen, fps: u32) -> Result<(), ClientError> {
        let me = self.inner.clone();
        let period = Duration::from_secs_f64(1.0 / f64::from(fps));
        std::thread::Builder::new()
            .name("kaigi-screen".into())
            .spawn(move || {
                let mut next = std::time::Instant::now();
                while !me.closed.is_cancelled() {
                    match screen.grab() {
                        Ok(frame) => {
                            let _ = me.video_in.try_send(frame);
                        }
                        Err(e) => {
                            warn!(error = %e, "the screen can no longer be captured");
                            me.closed.cancel();
                            break;
                        }
                    }
                    // Paces the grabs (a frame period), not a wait for an event.
                    next += period;
                    let now = std::time::Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
            .map_err(|e| ClientError::Media(format!("screen capture thread: {e}")))?;
        Ok(())
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
        for layer in &self.inner.video {
            layer.keyframe.store(true, Ordering::SeqCst);
        }
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
    /// happen. The failed source stops; switch to another device to go on
    /// (a [`crate::Client`] does that for the stream it publishes).
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

    /// Whether its microphone hears a voice now, after processing (also
    /// while audio is muted: for a "you are muted" hint). Always false
    /// for synthetic audio.
    pub fn voice_active(&self) -> bool {
        self.inner.voice.load(Ordering::Relaxed)
    }

    /// Takes what this client plays as the echo to cancel.
    pub(super) fn hear_played(&self, played: super::AudioOut) {
        *self.inner.played.lock() = Some(played);
    }

    /// Whether it has video.
    pub fn has_video(&self) -> bool {
        !self.inner.video.is_empty()
    }

    /// What it sends on a clean link, bit/s: the configured video bitrate
    /// (its top layer) and the audio's.
    pub(crate) fn wanted_bps(&self) -> f64 {
        let video = if self.has_video() {
            f64::from(self.inner.config.video_bitrate_bps)
        } else {
            0.0
        };
        let audio = if self.has_audio() {
            f64::from(AUDIO_BITRATE_BPS)
        } else {
            0.0
        };
        video + audio
    }

    /// The video's simulcast layers, largest first; empty when it is sent
    /// as one layer.
    pub fn layers(&self) -> Vec<VideoSize> {
        if self.inner.video.len() < 2 {
            return Vec::new();
        }
        self.inner.video.iter().map(|l| l.size).collect()
    }

    /// The captured audio's volume, 0–100 (0 while muted).
    pub fn audio_level(&self) -> u8 {
        self.inner.audio_level.load(Ordering::Relaxed)
    }

    /// Video frames sent so far.
    pub fn frames_sent(&self) -> u64 {
        self.inner.frames_sent.load(Ordering::Relaxed)
    }

    /// Frames sent so far on each simulcast layer, largest first (one
    /// entry without simulcast). A layer the server says nobody needs
    /// is not encoded, and its count stands still.
    pub fn layer_frames_sent(&self) -> Vec<u64> {
        self.inner
            .video
            .iter()
            .map(|l| l.frames.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops or resumes sending video.
    pub fn set_video_muted(&self, muted: bool) {
        self.inner.video_muted.store(muted, Ordering::SeqCst);
        if !muted {
            for layer in &self.inner.video {
                layer.keyframe.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Stops or resumes sending audio.
    pub fn set_audio_muted(&self, muted: bool) {
        self.inner.audio_muted.store(muted, Ordering::SeqCst);
    }

    /// Whether its audio is muted.
    pub fn audio_muted(&self) -> bool {
        self.inner.audio_muted.load(Ordering::SeqCst)
    }

    /// Switches parts of the microphone's processing on or off while it
    /// runs (a part switched on adapts afresh, within a second or two).
    /// Synthetic sources are never processed.
    pub fn set_audio_processing(&self, processing: AudioProcessing) {
        self.inner
            .processing
            .store(processing_bits(processing), Ordering::Relaxed);
    }

    /// What the microphone's processing does now.
    pub fn audio_processing(&self) -> AudioProcessing {
        processing_from_bits(self.inner.processing.load(Ordering::Relaxed))
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

    /// Whether the stream is closed (see [`LocalStream::closed`]).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves once the stream is closed: by [`LocalStream::close`], a
    /// leave or a forced exit, or (for a shared screen) its window or
    /// display going away.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Whether any device is still open (false after `close`).
    pub fn holds_devices(&self) -> bool {
        self.inner.camera.lock().is_some() || self.inner.microphone.lock().is_some()
    }

    /// Acts on keyframe requests (subscribers' PLIs relayed by the server)
    /// once the video tracks are bound to a connection: polling an unbound
    /// track ends at once.
    pub(super) fn listen_for_keyframe_requests(&self) {
        for layer in &self.inner.video {
            if layer.listening.swap(true, Ordering::SeqCst) {
                continue;
            }
            let layer = layer.clone();
            let closed = self.inner.closed.clone();
            tokio::spawn(async move {
                loop {
                    let evt = tokio::select! {
                        _ = closed.cancelled() => break,
                        evt = layer.track.poll() => evt,
                    };
                    match evt {
                        Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                                layer.keyframe.store(true, Ordering::SeqCst);
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                layer.listening.store(false, Ordering::SeqCst);
            });
        }
    }

    /// Starts sending the track `track_id` with the negotiated payload
    /// type `pt` (video starts with a keyframe; every layer is sent until
    /// the server says which are needed).
    pub(super) fn send_as(&self, track_id: &str, pt: u8) {
        if let Some(layer) = self.inner.video.iter().find(|l| l.id == track_id) {
            layer.pt.store(pt, Ordering::SeqCst);
            layer.needed.store(true, Ordering::SeqCst);
            layer.keyframe.store(true, Ordering::SeqCst);
        } else if self.inner.audio.is_some() {
            self.inner.audio_pt.store(pt, Ordering::SeqCst);
        }
    }

    /// Encodes and sends only the `active` simulcast layers (largest
    /// first; `video-layers`): the others are not encoded at all. A layer
    /// turned on again starts with a keyframe. The smallest layer is
    /// always sent, and so is a stream without simulcast.
    pub(super) fn send_layers(&self, active: &[bool]) {
        let layers = &self.inner.video;
        if layers.len() < 2 {
            return;
        }
        for (i, layer) in layers.iter().enumerate() {
            let on = i + 1 == layers.len() || active.get(i).copied().unwrap_or(true);
            if on && !layer.needed.swap(true, Ordering::SeqCst) {
                layer.keyframe.store(true, Ordering::SeqCst);
            } else if !on {
                layer.needed.store(false, Ordering::SeqCst);
            }
        }
        debug!(?active, "layers to send");
    }

    /// Follows the send estimate and pacer queue of the connection it is
    /// sent on: the video encoder's picture, bitrate and frame rate fit it.
    pub(super) fn follow(&self, budget: Arc<kaigi_rtc::SendBudget>) {
        *self.inner.budget.lock() = budget;
    }

    /// Takes only `share` (0 to 1) of the send estimate: another stream
    /// is sent on the same connection.
    pub(super) fn set_estimate_share(&self, share: f64) {
        self.inner
            .estimate_share
            .store(share.clamp(0.05, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Stops sending (no payload type); the sources keep running.
    pub(super) fn stop_sending(&self) {
        for layer in &self.inner.video {
            layer.pt.store(0, Ordering::SeqCst);
        }
        self.inner.audio_pt.store(0, Ordering::SeqCst);
    }

    /// The tracks to attach, video layers first (largest first), then
    /// audio: the order of the server's receive-only m-lines of each kind.
    pub(super) fn tracks(&self) -> Vec<Arc<TrackLocalStaticSample>> {
        self.inner
            .video
            .iter()
            .map(|l| l.track.clone())
            .chain(self.inner.audio.iter().cloned())
            .collect()
    }
}

/// One layer's encoder state in the video task.
struct LayerEncoder {
    layer: Arc<VideoLayer>,
    ssrc: u32,
    /// `None` while the layer is off.
    encoder: Option<H264Encoder>,
    /// Capture time since its last frame sent: the next one's duration.
    since_sent: Duration,
}

/// Encodes captured video into each layer and sends what is negotiated,
/// while video is not muted. One layer follows the send estimate down
/// the ladder of [`Adaptation`] (size, bitrate, frame rate); simulcast
/// layers go off from the largest down and their bitrates follow
/// [`LayerAdaptation`].
async fn encode_video(
    me: Arc<LocalInner>,
    settings: H264Settings,
    encoders: Vec<Option<H264Encoder>>,
    mut frames: mpsc::Receiver<VideoFrame>,
    period: Duration,
) {
    let mut layers = Vec::new();
    for (layer, encoder) in me.video.iter().zip(encoders) {
        layers.push(LayerEncoder {
            ssrc: layer
                .track
                .ssrcs()
                .await
                .first()
                .copied()
                .unwrap_or_default(),
            layer: layer.clone(),
            encoder,
            since_sent: Duration::ZERO,
        });
    }
    let simulcast = layers.len() > 1;
    let mut adaptation = match settings.content {
        kaigi_media::Content::Screen => Adaptation::for_screen(settings.bitrate_bps),
        kaigi_media::Content::Camera => Adaptation::new(settings.bitrate_bps),
    };
    let mut simulcast_plan = LayerAdaptation::new(settings.bitrate_bps, layers.len());
    if simulcast {
        // Each layer at its own bitrate.
        for (l, rate) in layers.iter_mut().zip(simulcast_plan.current()) {
            l.encoder = rate.and_then(|bitrate_bps| {
                H264Encoder::new(H264Settings {
                    bitrate_bps,
                    ..settings
                })
                .ok()
            });
        }
    }
    let mut counter = 0u64;
    // The pacer's flushes seen: after one, the receivers need a keyframe.
    let mut flushes = 0u64;
    loop {
        let frame = tokio::select! {
            _ = me.closed.cancelled() => break,
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
        counter += 1;
        for l in &mut layers {
            l.since_sent += period;
        }
        let frame = Arc::new(frame);
        if me.preview.receiver_count() > 0 {
            me.preview.send_replace(Some(frame.clone()));
        }
        if me.video_muted.load(Ordering::SeqCst)
            || layers
                .iter()
                .all(|l| l.layer.pt.load(Ordering::SeqCst) == 0)
        {
            for l in &mut layers {
                l.since_sent = Duration::ZERO;
            }
            continue;
        }
        let budget = me.budget.lock().clone();
        let now = Instant::now();
        // The picture, bitrate and frame rate follow the send estimate.
        let share = f64::from_bits(me.estimate_share.load(Ordering::Relaxed));
        let estimate = budget.estimate_bps().map(|e| e * share);
        let mut frame_step = 1;
        if simulcast {
            if let Some(rates) = simulcast_plan.update(estimate, now) {
                debug!(?rates, ?estimate, "layers follow the send estimate");
                for (l, rate) in layers.iter_mut().zip(rates) {
                    l.encoder = rate.and_then(|bitrate_bps| {
                        H264Encoder::new(H264Settings {
                            bitrate_bps,
                            ..settings
                        })
                        .map_err(|e| warn!(error = %e, "the encoder could not change"))
                        .ok()
                    });
                }
            }
        } else {
            if let Some(plan) = adaptation.update(estimate, now) {
                debug!(?plan, ?estimate, "video follows the send estimate");
                match H264Encoder::new(H264Settings {
                    bitrate_bps: plan.bitrate_bps,
                    ..settings
                }) {
                    Ok(e) => layers[0].encoder = Some(e),
                    Err(e) => warn!(error = %e, "the encoder could not change"),
                }
            }
            frame_step = adaptation.current().frame_step;
        }
        if counter.is_multiple_of(30) {
            debug!(
                ?estimate,
                queued = budget.queued_bytes(),
                delay = ?budget.queue_delay(now),
                resent = budget.resent_bytes(),
                flushes = budget.flushes(),
                sent = me.frames_sent.load(Ordering::Relaxed),
                "send budget"
            );
        }
        if !counter.is_multiple_of(u64::from(frame_step)) {
            continue;
        }
        // Video the path has not taken yet is not joined by more: the
        // frame is skipped (a later one carries the picture on).
        if budget.queue_delay(now) > MAX_PACER_DELAY {
            continue;
        }
        let flushed = budget.flushes() != flushes;
        flushes = budget.flushes();
        let divisor = adaptation.current().divisor as usize;
        let mut sent = false;
        // Each simulcast layer is scaled from the layer above it (made
        // from this frame) when that is at least twice its size, else from
        // the captured frame: less work, and for layers that halve each other (the
        // default ladder) the very bytes scaling the full frame gives.
        let mut source: Option<VideoFrame> = None;
        for l in &mut layers {
            let pt = l.layer.pt.load(Ordering::SeqCst);
            let needed = l.layer.needed.load(Ordering::Relaxed);
            let Some(encoder) = l.encoder.as_mut().filter(|_| pt != 0 && needed) else {
                continue;
            };
            if l.layer.keyframe.swap(false, Ordering::SeqCst) || flushed {
                debug!(flushed, size = ?l.layer.size, "keyframe");
                encoder.request_keyframe();
            }
            let scaled = if simulcast {
                let (w, h) = (l.layer.size.width as usize, l.layer.size.height as usize);
                let from = source
                    .as_ref()
                    .filter(|s| s.width >= 2 * w && s.height >= 2 * h)
                    .unwrap_or(&frame);
                from.scaled_to_fit(w, h)
            } else if divisor > 1 {
                frame.scaled_to_fit(frame.width / divisor, frame.height / divisor)
            } else {
                None
            };
            let picture = scaled.as_ref().unwrap_or(&frame);
            match encoder.encode(picture) {
                Ok(Some(e)) => {
                    let sample = Sample {
                        data: Bytes::from(e.data),
                        duration: std::mem::take(&mut l.since_sent),
                        ..Sample::new(Instant::now())
                    };
                    let written = l
                        .layer
                        .track
                        .sample_writer(l.ssrc, pt)
                        .write_sample(&sample)
                        .await
                        .is_ok();
                    if written {
                        l.layer.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    sent |= written;
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "encoding failed"),
            }
            if simulcast && scaled.is_some() {
                source = scaled;
            }
        }
        if sent {
            me.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The echo delay the devices report is passed on when it moved this much
/// (not on every jitter).
const DELAY_REPORT_STEP_MS: u64 = 20;

/// Runs a microphone's audio processing (against what this client plays)
/// on the calling thread until either channel closes: raw 20 ms frames in,
/// processed 20 ms frames out; keeps voice activity up to date and follows
/// `set_audio_processing`.
fn process_microphone(
    me: &LocalInner,
    mut frames: mpsc::Receiver<AudioFrame>,
    out: &mpsc::Sender<AudioFrame>,
) {
    let mut settings = me.processing.load(Ordering::Relaxed);
    let mut processor = match AudioProcessor::new(processing_from_bits(settings)) {
        Ok(p) => Some(p),
        Err(e) => {
            // Never expected; the microphone goes on unprocessed.
            tracing::error!(error = %e, "audio processing unavailable");
            None
        }
    };
    let (mut far, mut near, mut processed) = (Vec::new(), Vec::new(), Vec::new());
    let mut reported_ms = 0;
    while let Some(frame) = frames.blocking_recv() {
        let Some(p) = processor.as_mut() else {
            if out.blocking_send(frame).is_err() {
                break;
            }
            continue;
        };
        let now = me.processing.load(Ordering::Relaxed);
        if now != settings {
            settings = now;
            p.set(processing_from_bits(now));
        }
        let mixer = me.played.lock().as_ref().and_then(|o| o.lock().clone());
        if let Some(m) = mixer {
            far.clear();
            m.take_played(&mut far);
            p.far(&far);
            // What is played now is heard after the speaker's latency; this
            // frame was captured a while ago: together, the echo's delay as
            // the devices report it (the canceller refines it).
            let capture = kaigi_media::unix_micros().saturating_sub(frame.captured_us);
            let delay_ms = (m.output_latency().as_micros() as u64 + capture) / 1000;
            if delay_ms.abs_diff(reported_ms) >= DELAY_REPORT_STEP_MS {
                reported_ms = delay_ms;
                p.set_stream_delay(u32::try_from(delay_ms).unwrap_or(u32::MAX));
            }
        }
        near.clear();
        near.extend(frame.samples.iter().map(|s| f32::from(*s) / 32768.0));
        p.near(&near, &mut processed);
        me.voice.store(p.voice(), Ordering::Relaxed);
        // Processing works in 10 ms steps: a 20 ms frame is ready when two
        // are.
        while processed.len() >= OPUS_FRAME_SAMPLES {
            let samples = processed
                .drain(..OPUS_FRAME_SAMPLES)
                .map(|v| (v * 32767.0).clamp(-32768.0, 32767.0) as i16)
                .collect();
            let done = AudioFrame {
                sample_rate: frame.sample_rate,
                channels: 1,
                samples,
                captured_us: frame.captured_us,
            };
            if out.blocking_send(done).is_err() {
                return;
            }
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
        let muted = me.audio_muted.load(Ordering::SeqCst);
        let pt = me.audio_pt.load(Ordering::SeqCst);
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
