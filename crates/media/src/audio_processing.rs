//! The microphone's audio processing, before Opus: acoustic echo
//! cancellation (the far end being what this side plays), noise
//! suppression, automatic gain control, a high-pass filter and voice
//! activity detection — WebRTC's audio processing module, built from its
//! bundled source. 48 kHz mono, in 10 ms frames; callers hand over any
//! number of samples and get back as many (up to one frame later).

use webrtc_audio_processing as apm;

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

    fn config(self) -> apm::Config {
        apm::Config {
            echo_cancellation: self.echo_cancellation.then_some(apm::EchoCancellation {
                suppression_level: apm::EchoCancellationSuppressionLevel::Moderate,
                // Robust to the playout-to-capture delay, which the module
                // estimates itself (device layers report it unreliably).
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: None,
            }),
            // The module's own gain control adds ~11 dB at most: too
            // little for a quiet microphone. `AutoGain` below does it.
            gain_control: None,
            noise_suppression: self.noise_suppression.then_some(apm::NoiseSuppression {
                suppression_level: apm::NoiseSuppressionLevel::High,
            }),
            voice_detection: Some(apm::VoiceDetection {
                detection_likelihood: apm::VoiceDetectionLikelihood::Moderate,
            }),
            enable_transient_suppressor: false,
            enable_high_pass_filter: true,
        }
    }
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

/// A running instance of the processing for one microphone.
pub struct AudioProcessor {
    processor: apm::Processor,
    settings: AudioProcessing,
    near: Vec<f32>,
    far: Vec<f32>,
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

impl AudioProcessor {
    /// A processor doing what `settings` say.
    pub fn new(settings: AudioProcessing) -> Result<Self, MediaError> {
        let mut processor = apm::Processor::new(&apm::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..Default::default()
        })
        .map_err(|e| MediaError::Invalid(format!("audio processing: {e:?}")))?;
        processor.set_config(settings.config());
        Ok(AudioProcessor {
            processor,
            settings,
            near: Vec::with_capacity(FRAME_SAMPLES),
            far: Vec::with_capacity(FRAME_SAMPLES),
            voice: false,
            gain: AutoGain::new(),
        })
    }

    /// What it does.
    pub fn settings(&self) -> AudioProcessing {
        self.settings
    }

    /// Changes what it does, mid-stream.
    pub fn set(&mut self, settings: AudioProcessing) {
        self.settings = settings;
        self.processor.set_config(settings.config());
    }

    /// What is played to the speaker (48 kHz mono, −1..1): the echo to
    /// cancel. Hand it over as it is played.
    pub fn far(&mut self, samples: &[f32]) {
        for &s in samples {
            self.far.push(s);
            if self.far.len() == FRAME_SAMPLES {
                // The render side is only analysed; errors leave it out.
                let _ = self.processor.process_render_frame(&mut self.far);
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
                if self
                    .processor
                    .process_capture_frame(&mut self.near)
                    .is_err()
                {
                    // Unprocessed rather than lost.
                    tracing::debug!("a capture frame was not processed");
                }
                self.voice = self.processor.get_stats().has_voice.unwrap_or(false);
                if self.settings.auto_gain {
                    self.gain.process(&mut self.near, self.voice);
                }
                out.extend_from_slice(&self.near);
                self.near.clear();
            }
        }
    }

    /// Whether the latest processed frame held a voice.
    pub fn voice(&self) -> bool {
        self.voice
    }

    /// Tells the module the output is muted (it keeps adapting, and its
    /// gain control does not chase silence).
    pub fn set_muted(&self, muted: bool) {
        self.processor.set_output_will_be_muted(muted);
    }
}
