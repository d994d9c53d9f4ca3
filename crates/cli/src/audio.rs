//! `kaigi audio-process`: the microphone's audio processing on recordings,
//! the same pipeline a call runs (48 kHz mono, 10 ms frames), for anyone
//! to reproduce an audio problem from files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use kaigi_media::audio_device::Resampler;
use kaigi_media::audio_processing::FRAME_SAMPLES;
use kaigi_media::{AudioProcessing, AudioProcessor, OPUS_SAMPLE_RATE};

/// `kaigi audio-process` options.
#[derive(Debug, Args)]
pub struct AudioProcessArgs {
    /// What the speaker played (the far end), WAV.
    #[arg(long, value_name = "FAR.wav")]
    far: PathBuf,
    /// What the microphone heard, WAV.
    #[arg(long, value_name = "MIC.wav")]
    mic: PathBuf,
    /// Where to write the processed microphone, WAV (16-bit, mono, at the
    /// microphone's rate).
    #[arg(long, value_name = "OUT.wav")]
    out: PathBuf,
    #[command(flatten)]
    processing: ProcessingFlags,
}

/// Switches for the microphone's processing (`kaigi audio-process`,
/// `kaigi bot`).
#[derive(Debug, Clone, Copy, Args)]
pub struct ProcessingFlags {
    /// No echo cancellation.
    #[arg(long)]
    no_aec: bool,
    /// No noise suppression.
    #[arg(long)]
    no_ns: bool,
    /// No automatic gain control.
    #[arg(long)]
    no_agc: bool,
}

impl ProcessingFlags {
    /// What the flags leave on.
    pub fn settings(self) -> AudioProcessing {
        AudioProcessing {
            echo_cancellation: !self.no_aec,
            noise_suppression: !self.no_ns,
            auto_gain: !self.no_agc,
        }
    }
}

/// A WAV file as mono samples in −1..1, and its rate.
fn read_mono(path: &Path) -> anyhow::Result<(Vec<f32>, u32)> {
    let reader =
        hound::WavReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("decoding {}", path.display()))?,
        hound::SampleFormat::Int => {
            if !(8..=32).contains(&spec.bits_per_sample) {
                bail!("{}: {}-bit samples", path.display(), spec.bits_per_sample);
            }
            let full = (1i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 / full))
                .collect::<Result<_, _>>()
                .with_context(|| format!("decoding {}", path.display()))?
        }
    };
    let mono = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// `samples` at `from` Hz converted to `to` Hz, `len` samples long.
fn resample(samples: &[f32], from: u32, to: u32, len: usize) -> Vec<f32> {
    let mut r = Resampler::new(from, to);
    let mut out = Vec::with_capacity(len + 1024);
    r.process(samples, &mut out);
    // Flush what the converter holds back.
    r.process(&vec![0.0; from as usize / 10], &mut out);
    out.resize(len, 0.0);
    out
}

fn level_db(x: &[f32]) -> f64 {
    let p = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    (10.0 * p.max(1e-12).log10() * 10.0).round() / 10.0
}

/// Runs the pipeline on the files; prints a JSON summary.
pub fn run(args: &AudioProcessArgs) -> anyhow::Result<ExitCode> {
    let (far, far_rate) = read_mono(&args.far)?;
    let (mic, mic_rate) = read_mono(&args.mic)?;
    if far_rate == 0 || mic_rate == 0 {
        bail!("a WAV file with a sample rate of 0");
    }
    let rate = OPUS_SAMPLE_RATE;
    let len = (mic.len() as u64 * u64::from(rate) / u64::from(mic_rate)) as usize;
    let mic48 = resample(&mic, mic_rate, rate, len);
    // The far end lines up with the microphone from the start; a shorter
    // one is silence after its end.
    let far48 = resample(&far, far_rate, rate, len);
    let settings = args.processing.settings();
    let mut apm = AudioProcessor::new(settings)?;
    let mut out48 = Vec::with_capacity(len + FRAME_SAMPLES);
    let mut voiced = 0usize;
    for (f, m) in far48.chunks(FRAME_SAMPLES).zip(mic48.chunks(FRAME_SAMPLES)) {
        apm.far(f);
        let before = out48.len();
        apm.near(m, &mut out48);
        voiced += usize::from(out48.len() > before && apm.voice());
    }
    // The processor works in whole frames: the last partial one is kept
    // as it was heard.
    let processed = out48.len();
    out48.extend_from_slice(&mic48[processed.min(len)..]);
    let out = resample(&out48, rate, mic_rate, mic.len());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: mic_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&args.out, spec)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for v in &out {
        writer.write_sample((v.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    writer
        .finalize()
        .with_context(|| format!("writing {}", args.out.display()))?;
    let frames = len / FRAME_SAMPLES;
    println!(
        "{}",
        serde_json::json!({
            "sampleRate": mic_rate,
            "seconds": mic.len() as f64 / f64::from(mic_rate),
            "micLevelDb": level_db(&mic),
            "outLevelDb": level_db(&out),
            "voicedShare": voiced as f64 / frames.max(1) as f64,
            "echoCancellation": settings.echo_cancellation,
            "noiseSuppression": settings.noise_suppression,
            "autoGain": settings.auto_gain,
        })
    );
    Ok(ExitCode::SUCCESS)
}
