//! The microphone's audio processing on synthetic signals (no devices): a
//! far-end talker played into a room (an echo path: delay, attenuation,
//! reflections) and heard by the microphone, with or without a near-end
//! talker and noise.

use kaigi_media::audio_processing::{FRAME_SAMPLES, TARGET_LEVEL_DBFS};
use kaigi_media::{AudioProcessing, AudioProcessor, SpeechLike};

const RATE: u32 = 48_000;

/// Mean power in dB (full scale = 0 dB for a full-scale square wave).
fn power_db(x: &[f32]) -> f64 {
    let p = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * p.max(1e-20).log10()
}

/// What a microphone hears of `far` in a room: after `delay_ms`, at
/// `gain`, with a few decaying reflections.
fn echo_of(far: &[f32], delay_ms: usize, gain: f32) -> Vec<f32> {
    let d = delay_ms * RATE as usize / 1000;
    // Reflections: (extra delay in ms, relative gain).
    let taps: [(usize, f32); 4] = [(0, 1.0), (3, 0.5), (11, 0.3), (23, 0.15)];
    let mut out = vec![0.0f32; far.len()];
    for (extra, g) in taps {
        let at = d + extra * RATE as usize / 1000;
        for i in at..far.len() {
            out[i] += far[i - at] * g * gain;
        }
    }
    out
}

/// Runs `mic` through a processor that is told `far` was played, in 10 ms
/// steps, as a call would.
fn process(settings: AudioProcessing, far: &[f32], mic: &[f32]) -> Vec<f32> {
    let mut p = AudioProcessor::new(settings).expect("a processor");
    let mut out = Vec::with_capacity(mic.len());
    for (f, m) in far.chunks(FRAME_SAMPLES).zip(mic.chunks(FRAME_SAMPLES)) {
        p.far(f);
        p.near(m, &mut out);
    }
    out
}

fn secs(s: f64) -> usize {
    (s * f64::from(RATE)) as usize
}

/// Echo return loss enhancement over `window` of the output.
fn erle(mic: &[f32], out: &[f32], window: std::ops::Range<usize>) -> f64 {
    power_db(&mic[window.clone()]) - power_db(&out[window])
}

const AEC_ONLY: AudioProcessing = AudioProcessing {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
};

/// The echo of a far-end talker is cancelled by ≥ 25 dB once converged
/// (within 2 s), for echo delays from 40 to 120 ms.
#[test]
fn echo_is_cancelled_by_25_db_after_2_s() {
    for delay in [40, 80, 120] {
        let far = SpeechLike::new(120.0, 3.0, RATE).samples(secs(6.0));
        let mic = echo_of(&far, delay, 0.5);
        let out = process(AEC_ONLY, &far, &mic);
        let e = erle(&mic, &out, secs(2.0)..secs(6.0));
        assert!(e >= 25.0, "{delay} ms echo path: ERLE {e:.1} dB (≥ 25)");
        let none = process(AudioProcessing::NONE, &far, &mic);
        assert!(
            erle(&mic, &none, secs(2.0)..secs(6.0)).abs() < 3.0,
            "without echo cancellation the echo stays"
        );
    }
}

/// White noise, deterministic.
fn noise(n: usize, level: f32) -> Vec<f32> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * level
        })
        .collect()
}

/// Speech-to-noise ratio of a signal whose speech is `talk` (a clean copy
/// marks where the syllables are): power where the talker is loud over
/// power where it is silent.
fn snr_db(x: &[f32], talk: &[f32]) -> f64 {
    let frames: Vec<(f64, f64)> = x
        .chunks(FRAME_SAMPLES)
        .zip(talk.chunks(FRAME_SAMPLES))
        .map(|(a, t)| (power_db(a), power_db(t)))
        .collect();
    let loud: Vec<f64> = frames.iter().filter(|f| f.1 > -30.0).map(|f| f.0).collect();
    let quiet: Vec<f64> = frames.iter().filter(|f| f.1 < -60.0).map(|f| f.0).collect();
    let mean_db = |v: &[f64]| {
        10.0 * (v.iter().map(|d| 10f64.powf(d / 10.0)).sum::<f64>() / v.len().max(1) as f64).log10()
    };
    mean_db(&loud) - mean_db(&quiet)
}

/// Noise suppression raises the speech-to-noise ratio in steady noise by
/// ≥ 10 dB.
#[test]
fn noise_suppression_raises_snr_by_10_db() {
    let talk = SpeechLike::new(150.0, 2.0, RATE).samples(secs(8.0));
    let mic: Vec<f32> = talk
        .iter()
        .zip(noise(talk.len(), 0.05))
        .map(|(a, b)| a + b)
        .collect();
    let ns = AudioProcessing {
        echo_cancellation: false,
        noise_suppression: true,
        auto_gain: false,
    };
    let out = process(ns, &vec![0.0; mic.len()], &mic);
    // Skip the suppressor's first seconds (it learns the noise); output is
    // a frame late.
    let w = secs(3.0)..secs(8.0) - FRAME_SAMPLES;
    let before = snr_db(&mic[w.clone()], &talk[w.clone()]);
    let after = snr_db(
        &out[w.start + FRAME_SAMPLES..w.end + FRAME_SAMPLES],
        &talk[w.clone()],
    );
    assert!(
        after - before >= 10.0,
        "SNR {before:.1} dB → {after:.1} dB (≥ +10)"
    );
}

/// A quiet talker (−40 dBFS) is brought to within 6 dB of the gain
/// control's target, without clipping; a loud one is not clipped.
#[test]
fn auto_gain_brings_a_quiet_talker_to_its_target_without_clipping() {
    let agc = AudioProcessing {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: true,
    };
    let talk = SpeechLike::new(150.0, 2.0, RATE).samples(secs(10.0));
    let peak_db =
        |x: &[f32]| 20.0 * f64::from(x.iter().fold(0.0f32, |m, v| m.max(v.abs()))).log10();
    let target = -f64::from(TARGET_LEVEL_DBFS);
    for level in [-40.0, -25.0] {
        let scale = 10f64.powf((level - peak_db(&talk)) / 20.0) as f32;
        let mic: Vec<f32> = talk.iter().map(|v| v * scale).collect();
        let out = process(agc, &vec![0.0; mic.len()], &mic);
        // Each second of the last four peaks near the target.
        for s in 6..10 {
            let p = peak_db(&out[secs(s as f64)..secs(s as f64 + 1.0)]);
            assert!(
                (p - target).abs() <= 6.0,
                "a {level} dBFS talker peaks at {p:.1} dBFS in second {s} (target {target})"
            );
        }
        assert!(out.iter().all(|v| v.abs() < 1.0), "clipped");
    }
    // A talker at full scale is limited, not clipped.
    let loud: Vec<f32> = talk.iter().map(|v| (v * 2.5).clamp(-1.0, 1.0)).collect();
    let out = process(agc, &vec![0.0; loud.len()], &loud);
    assert!(out.iter().all(|v| v.abs() < 0.96));
}
