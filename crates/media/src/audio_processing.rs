//! The microphone's audio processing, before Opus: WebRTC's echo canceller
//! AEC3 (the far end being what this side plays; it finds the playout to
//! capture delay itself and can be told the device layers' estimate), its
//! noise suppressor, a high-pass filter, automatic gain control and its
//! RNN voice activity detector — the `aec3` crate's Rust port of WebRTC's
//! audio processing module. 48 kHz mono, in 10 ms frames; callers hand over
//! any number of samples and get back as many (up to one frame later).

use aec3::api::config::EchoCanceller3Config;
use aec3::audio_processing::agc2::cpu_features::get_available_cpu_features;
use aec3::audio_processing::agc2::vad_wrapper::VoiceActivityDetectorWrapper;
use aec3::audio_processing::ns::ns_config::{NsConfig, SuppressionLevel};
use aec3::graph::NodeControlState;
use aec3::nodes::audio::AudioFormat;
use aec3::pipelines::linear::{self, LinearPipeline};

use crate::MediaError;

/// Which parts of the processing run. All on by default; synthetic
/// sources skip processing altogether.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioProcessing {
    /// Removes what the speaker plays from what the microphone hears.
    pub echo_cancellation: bool,
    /// Removes steady background noise (fans, hum).
    pub noise_suppression: bool,
    /// Brings a quiet or loud voice to a steady level without clipping.
    pub auto_gain: bool,
}

impl Default for AudioProcessing {
    fn default() -> Self {
        AudioProcessing {
            echo_cancellation: true,
            noise_suppression: true,
            auto_gain: true,
        }
    }
}

impl AudioProcessing {
    /// Nothing but the high-pass filter and voice detection.
    pub const NONE: AudioProcessing = AudioProcessing {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: false,
    };
}

/// The level automatic gain control aims a voice's peaks at, dB below
/// full scale.
pub const TARGET_LEVEL_DBFS: i32 = 3;
/// The most gain automatic gain control applies, dB.
pub const MAX_GAIN_DB: f64 = 40.0;
/// How fast its gain rises, dB a second (it falls at once where a peak
/// would clip).
const GAIN_RISE_DB_PER_S: f64 = 10.0;
/// How fast the speech level it tracks falls back after a loud peak, dB a
/// second.
const LEVEL_DECAY_DB_PER_S: f64 = 3.0;
/// Output samples are kept below this (a hard limit short of clipping).
const LIMIT: f32 = 0.95;

/// Adaptive digital gain: tracks the peak level of voiced frames and moves
/// its gain so they reach the target, never applying more than
/// [`MAX_GAIN_DB`] nor letting a sample pass [`LIMIT`]; frames without
/// voice keep the gain (noise is not pumped up).
#[derive(Debug, Clone)]
struct AutoGain {
    /// The tracked speech peak level, dBFS (`None` before the first voice).
    level_db: Option<f64>,
    gain_db: f64,
}

impl AutoGain {
    fn new() -> Self {
        AutoGain {
            level_db: None,
            gain_db: 0.0,
        }
    }

    /// Applies the gain to one 10 ms frame; `voice` says whether it holds
    /// speech.
    fn process(&mut self, frame: &mut [f32], voice: bool) {
        let frame_s = frame.len() as f64 / 48_000.0;
        let peak = frame.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if voice && peak > 0.0 {
            let peak_db = 20.0 * f64::from(peak).log10();
            let decayed = self
                .level_db
                .map_or(peak_db, |l| l - LEVEL_DECAY_DB_PER_S * frame_s);
            self.level_db = Some(decayed.max(peak_db));
        }
        let before = self.gain_db;
        if let Some(level) = self.level_db {
            let wanted = (-f64::from(TARGET_LEVEL_DBFS) - level).clamp(0.0, MAX_GAIN_DB);
            self.gain_db = if wanted > self.gain_db {
                (self.gain_db + GAIN_RISE_DB_PER_S * frame_s).min(wanted)
            } else {
                wanted
            };
        }
        // Never past the limit: the gain falls at once where it would.
        let headroom_db = 20.0 * f64::from(LIMIT / peak.max(1e-9)).log10();
        self.gain_db = self.gain_db.min(headroom_db).max(0.0);
        let (from, to) = (
            db_to_gain(before.min(self.gain_db)),
            db_to_gain(self.gain_db),
        );
        let n = frame.len() as f32;
        for (i, v) in frame.iter_mut().enumerate() {
            let g = from + (to - from) * (i as f32 + 1.0) / n;
            *v = (*v * g).clamp(-LIMIT, LIMIT);
        }
    }
}

fn db_to_gain(db: f64) -> f32 {
    10f64.powf(db / 20.0) as f32
}
/// Samples in one 10 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 480;

/// A voice is present where the detector's probability passes this.
const VOICE_PROBABILITY: f32 = 0.5;

/// A running instance of the processing for one microphone.
pub struct AudioProcessor {
    pipeline: LinearPipeline,
    vad: VoiceActivityDetectorWrapper,
    settings: AudioProcessing,
    near: Vec<f32>,
    far: Vec<f32>,
    out: Vec<f32>,
    scaled: Vec<f32>,
    voice: bool,
    gain: AutoGain,
}

impl std::fmt::Debug for AudioProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProcessor")
            .field("settings", &self.settings)
            .field("voice", &self.voice)
            .finish()
    }
}

/// WebRTC's AEC3 tuning, leaning a little towards keeping the near-end
/// talker through double talk: the linear filter is trusted for up to
/// 9 dB of echo removal below 2 kHz and 3 dB above (4 and 1.5 by default),
/// near-end dominance is entered after 3 blocks (12 ms) rather than 12 and
/// left only when echo is 10× stronger, and a path with no echo at all
/// (headphones) is recognised within seconds by the HMM detector rather
/// than after 40 s of far-end talk.
fn echo_canceller_config() -> EchoCanceller3Config {
    let mut config = EchoCanceller3Config::default();
    config.erle.max_l = 8.0;
    config.erle.max_h = 2.0;
    let nearend = &mut config.suppressor.dominant_nearend_detection;
    nearend.trigger_threshold = 3;
    nearend.enr_exit_threshold = 30.0;
    config.transparent_mode.use_hmm = true;
    // While the near end dominates: a shorter reverb tail, higher bands
    // let through sooner and gains that recover a little faster, so a
    // talker interrupting the far end keeps its words (double-talk
    // correlation 0.87 → 0.91 at no cost below 25 dB of echo removal).
    config.ep_strength.nearend_len = 0.3;
    let nearend = &mut config.suppressor.nearend_tuning;
    nearend.mask_hf.enr_transparent = 0.2;
    nearend.mask_hf.enr_suppress = 0.6;
    nearend.max_inc_factor = 2.2;
    config
}

fn graph_error(e: impl std::fmt::Debug) -> MediaError {
    MediaError::Invalid(format!("audio processing: {e:?}"))
}

impl AudioProcessor {
    /// A processor doing what `settings` say.
    pub fn new(settings: AudioProcessing) -> Result<Self, MediaError> {
        let format = AudioFormat::ten_ms(48_000, 1);
        let pipeline = linear::builder(format, format)
            .aec3_config(echo_canceller_config())
            // WebRTC's "high" level: −18 dB of noise.
            .noise_suppression_config(NsConfig {
                target_level: SuppressionLevel::K18dB,
                ..NsConfig::default()
            })
            .enable_gain_controller2(false)
            .build()
            .map_err(graph_error)?;
        let mut processor = AudioProcessor {
            pipeline,
            vad: VoiceActivityDetectorWrapper::new(get_available_cpu_features(), 48_000),
            settings,
            near: Vec::with_capacity(FRAME_SAMPLES),
            far: Vec::with_capacity(FRAME_SAMPLES),
            out: vec![0.0; FRAME_SAMPLES],
            scaled: vec![0.0; FRAME_SAMPLES],
            voice: false,
            gain: AutoGain::new(),
        };
        processor.set(settings);
        Ok(processor)
    }

    /// What it does.
    pub fn settings(&self) -> AudioProcessing {
        self.settings
    }

    /// Changes what it does, mid-stream (a part switched back on adapts
    /// afresh).
    pub fn set(&mut self, settings: AudioProcessing) {
        let state = |on: bool| {
            if on {
                NodeControlState::Active
            } else {
                NodeControlState::Bypassed
            }
        };
        let handles = *self.pipeline.handles();
        let mut apply = |node, on: bool, was: bool| {
            if on && !was {
                let _ = self.pipeline.reset_node(node);
            }
            if let Err(e) = self.pipeline.set_node_state(node, state(on)) {
                tracing::warn!(error = ?e, "audio processing: a part could not be switched");
            }
        };
        let first = self.near.capacity() == 0;
        apply(
            handles.aec3.node_id(),
            settings.echo_cancellation,
            self.settings.echo_cancellation && !first,
        );
        if let Some(ns) = handles.noise_suppression {
            apply(
                ns.node_id(),
                settings.noise_suppression,
                self.settings.noise_suppression && !first,
            );
        }
        self.settings = settings;
    }

    /// Tells the echo canceller how long audio takes from being handed to
    /// the speaker to being heard by the microphone, as the device layers
    /// report it (it refines the estimate itself).
    pub fn set_stream_delay(&mut self, delay_ms: u32) {
        let delay = i32::try_from(delay_ms).unwrap_or(i32::MAX).min(500);
        if let Err(e) = self.pipeline.set_delay_ms(delay) {
            tracing::debug!(error = ?e, "audio processing: delay not taken");
        }
    }

    /// What is played to the speaker (48 kHz mono, −1..1): the echo to
    /// cancel. Hand it over as it is played.
    pub fn far(&mut self, samples: &[f32]) {
        for &s in samples {
            self.far.push(s);
            if self.far.len() == FRAME_SAMPLES {
                // The render side is only analysed; errors leave it out.
                if let Err(e) = self.pipeline.handle_render_frame(&self.far) {
                    tracing::debug!(error = ?e, "a render frame was not analysed");
                }
                self.far.clear();
            }
        }
    }

    /// What the microphone heard (48 kHz mono, −1..1), processed into
    /// `out` (appended; whole 10 ms frames, so up to a frame later).
    pub fn near(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        for &s in samples {
            self.near.push(s);
            if self.near.len() == FRAME_SAMPLES {
                match self
                    .pipeline
                    .process_capture_frame(&self.near, &mut self.out)
                {
                    Ok(true) => {}
                    // Unprocessed rather than lost.
                    Ok(false) | Err(_) => {
                        tracing::debug!("a capture frame was not processed");
                        self.out.copy_from_slice(&self.near);
                    }
                }
                for (d, s) in self.scaled.iter_mut().zip(&self.out) {
                    *d = s * 32_768.0;
                }
                self.voice = self.vad.analyze(&[&self.scaled]) > VOICE_PROBABILITY;
                if self.settings.auto_gain {
                    self.gain.process(&mut self.out, self.voice);
                }
                out.extend_from_slice(&self.out);
                self.near.clear();
            }
        }
    }

    /// Whether the latest processed frame held a voice.
    pub fn voice(&self) -> bool {
        self.voice
    }
}
