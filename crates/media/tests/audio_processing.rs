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
/// `gain`, through the room's impulse response (a direct path, a few early
/// reflections and a diffuse tail of reflections every 2 ms, decaying by
/// 60 dB in 300 ms).
fn echo_of(far: &[f32], delay_ms: usize, gain: f32) -> Vec<f32> {
    let mut rir: Vec<(usize, f32)> = vec![(0, 1.0), (ms(3), 0.5), (ms(11), -0.3), (ms(23), 0.15)];
    let tail = noise(150, 0.2);
    for (i, n) in tail.iter().enumerate().skip(3) {
        let at = ms(2 * i);
        rir.push((at, n * 10f32.powf(-3.0 * at as f32 / ms(300) as f32)));
    }
    let d = ms(delay_ms);
    let mut out = vec![0.0f32; far.len()];
    for (k, h) in rir {
        for (o, f) in out[d + k..].iter_mut().zip(far) {
            *o += f * h * gain;
        }
    }
    out
}

/// Samples in `n` milliseconds.
fn ms(n: usize) -> usize {
    n * RATE as usize / 1000
}

/// Sums signals of one length.
fn mix(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
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
/// (within 2 s), for echo delays from 40 to 250 ms.
#[test]
fn echo_is_cancelled_by_25_db_after_2_s() {
    for delay in [40, 120, 250] {
        let far = SpeechLike::new(120.0, 3.0, RATE).samples(secs(6.0));
        let mic = echo_of(&far, delay, 0.5);
        let out = process(AEC_ONLY, &far, &mic);
        let e = erle(&mic, &out, secs(2.0)..secs(6.0));
        eprintln!("{delay} ms echo path: ERLE {e:.1} dB");
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
    eprintln!("noise suppression: SNR {before:.1} dB → {after:.1} dB");
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
            eprintln!("a {level} dBFS talker peaks at {p:.1} dBFS in second {s}");
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

/// Normalised correlation of `x` with `clean`, at the best lag up to 20 ms
/// either way (the processing's filters shift the signal slightly).
fn correlation(x: &[f32], clean: &[f32]) -> f64 {
    let n = x.len().min(clean.len()) - ms(40);
    let at = |lag: usize| {
        let a = &x[lag..lag + n];
        let b = &clean[ms(20)..ms(20) + n];
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum();
        let pa: f64 = a.iter().map(|p| f64::from(*p).powi(2)).sum();
        let pb: f64 = b.iter().map(|q| f64::from(*q).powi(2)).sum();
        dot / (pa * pb).sqrt().max(1e-20)
    };
    // Coarse, then sample by sample around the best.
    let coarse = (0..=ms(40))
        .step_by(8)
        .max_by(|a, b| at(*a).total_cmp(&at(*b)))
        .unwrap_or(0);
    (coarse.saturating_sub(8)..=(coarse + 8).min(ms(40)))
        .map(at)
        .fold(f64::MIN, f64::max)
}

/// Double talk: the far end talks throughout (its echo `delay_ms` late at
/// the microphone) and a near-end talker at `near_gain` and pitch
/// `pitch_hz` joins once the canceller has converged. Returns the
/// near-end talker's level change through the processing (dB), its
/// correlation with the clean talker after processing, and before.
fn double_talk(delay_ms: usize, near_gain: f64, pitch_hz: f64) -> (f64, f64, f64) {
    let far = SpeechLike::new(120.0, 3.0, RATE).samples(secs(10.0));
    let echo = echo_of(&far, delay_ms, 0.5);
    let mut near = vec![0.0f32; secs(4.0)];
    near.extend(
        SpeechLike::new(pitch_hz, 2.5, RATE)
            .with_gain(near_gain)
            .samples(secs(6.0)),
    );
    let mic = mix(&echo, &near);
    let out = process(AEC_ONLY, &far, &mic);
    let w = secs(5.0)..secs(10.0);
    let level = power_db(&out[w.clone()]) - power_db(&near[w.clone()]);
    let after = correlation(&out[w.clone()], &near[w.clone()]);
    let before = correlation(&mic[w.clone()], &near[w]);
    (level, after, before)
}

/// Both talk at once, as loud as each other at the microphone: the
/// near-end talker keeps its level (within 3 dB) and stays intelligible
/// (correlation with the clean talker ≥ 0.9) while the far end's echo is
/// removed.
#[test]
fn double_talk_keeps_the_near_end_talker() {
    let (level, c, echo_only) = double_talk(120, 0.6, 210.0);
    eprintln!("double talk: near-end {level:+.1} dB, correlation {c:.3}");
    assert!(
        level.abs() <= 3.0,
        "near-end talker {level:+.1} dB through double talk (within 3 dB)"
    );
    assert!(c >= 0.9, "correlation with the clean talker {c:.3} (≥ 0.9)");
    assert!(
        c > echo_only,
        "the echo was not removed: {c:.3} vs {echo_only:.3}"
    );
}

/// Harder double talk — the longest echo path, a near-end talker 6 dB
/// quieter than its echo, a lower and a higher voice — still keeps the
/// talker within 3 dB and clearer than the unprocessed microphone
/// (correlation ≥ 0.85; measured 0.86–0.93).
#[test]
fn harder_double_talk_keeps_the_near_end_talker() {
    for (delay, gain, pitch) in [
        (40, 0.6, 210.0),
        (250, 0.6, 210.0),
        (120, 0.3, 210.0),
        (120, 0.6, 150.0),
        (120, 0.6, 300.0),
    ] {
        let (level, c, echo_only) = double_talk(delay, gain, pitch);
        eprintln!("{delay} ms, gain {gain}, {pitch} Hz: near-end {level:+.1} dB, correlation {c:.3} (unprocessed {echo_only:.3})");
        assert!(
            level.abs() <= 3.0,
            "{delay} ms, gain {gain}, {pitch} Hz: near-end {level:+.1} dB"
        );
        assert!(
            c >= 0.85 && c > echo_only,
            "{delay} ms, gain {gain}, {pitch} Hz: correlation {c:.3} (unprocessed {echo_only:.3})"
        );
    }
}

/// The echo path changes mid-call (the delay grows by 100 ms, as when the
/// audio device's buffering changes): the canceller finds it again and
/// removes ≥ 25 dB within 2 s.
#[test]
fn a_changed_echo_path_is_found_again_within_2_s() {
    let far = SpeechLike::new(120.0, 3.0, RATE).samples(secs(10.0));
    let before = echo_of(&far, 80, 0.5);
    let after = echo_of(&far, 180, 0.4);
    let change = secs(4.0);
    let mic: Vec<f32> = before[..change]
        .iter()
        .chain(&after[change..])
        .copied()
        .collect();
    let out = process(AEC_ONLY, &far, &mic);
    let settled = erle(&mic, &out, secs(2.0)..change);
    assert!(settled >= 25.0, "before the change: ERLE {settled:.1} dB");
    let e = erle(&mic, &out, change + secs(2.0)..secs(10.0));
    eprintln!("echo path changed: ERLE {settled:.1} dB before, {e:.1} dB 2 s after");
    assert!(e >= 25.0, "2 s after the change: ERLE {e:.1} dB (≥ 25)");
}

/// With headphones the microphone hears no echo: the near-end talker
/// passes (within 2 dB, correlation ≥ 0.9) while the far end talks, once
/// the canceller has seen that there is no echo to remove (seconds, not
/// the 40 s of AEC3's default detector).
#[test]
fn without_echo_the_near_end_passes_untouched() {
    let far = SpeechLike::new(120.0, 3.0, RATE).samples(secs(20.0));
    let near = SpeechLike::new(210.0, 2.5, RATE)
        .with_gain(0.6)
        .samples(secs(20.0));
    let out = process(AEC_ONLY, &far, &near);
    let w = secs(5.0)..secs(20.0);
    let level = power_db(&out[w.clone()]) - power_db(&near[w.clone()]);
    let c = correlation(&out[w.clone()], &near[w]);
    eprintln!("no echo: near-end {level:+.1} dB, correlation {c:.3}");
    assert!(
        level.abs() <= 2.0 && c >= 0.9,
        "near-end talker {level:+.1} dB, correlation {c:.3}"
    );
}
