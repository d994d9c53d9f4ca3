//! The synthetic microphone: a sine tone, and a frequency estimate to check
//! one after coding.

use crate::frame::AudioFrame;

/// A sine tone at a fixed frequency, mono.
#[derive(Debug, Clone)]
pub struct SineTone {
    freq_hz: f64,
    sample_rate: u32,
    amplitude: f64,
    phase: f64,
}

impl SineTone {
    /// A tone at `freq_hz` sampled at `sample_rate`, at −10 dBFS.
    pub fn new(freq_hz: f64, sample_rate: u32) -> Self {
        SineTone {
            freq_hz,
            sample_rate,
            amplitude: 0.316 * 32767.0,
            phase: 0.0,
        }
    }

    /// The tone's frequency.
    pub fn frequency(&self) -> f64 {
        self.freq_hz
    }

    /// The next `samples` samples as a frame stamped `captured_us`.
    pub fn frame(&mut self, samples: usize, captured_us: u64) -> AudioFrame {
        let step = 2.0 * std::f64::consts::PI * self.freq_hz / f64::from(self.sample_rate);
        let out = (0..samples)
            .map(|_| {
                let v = (self.phase.sin() * self.amplitude).round() as i16;
                self.phase = (self.phase + step) % (2.0 * std::f64::consts::PI);
                v
            })
            .collect();
        AudioFrame {
            sample_rate: self.sample_rate,
            channels: 1,
            samples: out,
            captured_us,
        }
    }
}

/// Estimates the frequency of a (mostly) pure tone from its rising zero
/// crossings, interpolated to a fraction of a sample. `None` if there are
/// fewer than two crossings.
pub fn estimate_frequency(samples: &[i16], sample_rate: u32) -> Option<f64> {
    let mut first: Option<f64> = None;
    let mut last = 0.0;
    let mut cycles = 0usize;
    for i in 1..samples.len() {
        let (a, b) = (f64::from(samples[i - 1]), f64::from(samples[i]));
        if a < 0.0 && b >= 0.0 {
            let t = (i - 1) as f64 + (-a) / (b - a);
            match first {
                None => first = Some(t),
                Some(_) => cycles += 1,
            }
            last = t;
        }
    }
    let first = first?;
    if cycles == 0 {
        return None;
    }
    Some(cycles as f64 * f64::from(sample_rate) / (last - first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_frequency_is_recovered() {
        for f in [220.0, 440.0, 1000.0, 3000.0] {
            let mut t = SineTone::new(f, 48000);
            let frame = t.frame(48000 / 2, 0);
            let est = estimate_frequency(&frame.samples, 48000).unwrap();
            assert!((est - f).abs() < 0.5, "{f} → {est}");
        }
        assert_eq!(estimate_frequency(&[0; 100], 48000), None);
    }

    #[test]
    fn frames_continue_the_phase() {
        let mut t = SineTone::new(440.0, 48000);
        let mut all = t.frame(960, 0).samples;
        all.extend(t.frame(960, 0).samples);
        let mut whole = SineTone::new(440.0, 48000).frame(1920, 0).samples;
        whole.truncate(all.len());
        assert_eq!(all, whole);
    }
}

/// Something like a voice, for testing audio processing without a
/// recording: a buzz (a glottal-like harmonic series) at a gliding pitch,
/// shaped into syllables (on and off a few times a second), mono. Unlike a
/// steady tone, voice-activity detectors and echo cancellers treat it as
/// speech.
#[derive(Debug, Clone)]
pub struct SpeechLike {
    pitch_hz: f64,
    syllables_hz: f64,
    sample_rate: u32,
    amplitude: f64,
    phase: f64,
    /// Where in its syllable the talker is (0..1 a syllable).
    syllable: f64,
    t: u64,
}

impl SpeechLike {
    /// A talker at `pitch_hz` (e.g. 120 or 210) saying `syllables_hz`
    /// syllables a second, sampled at `sample_rate`, peaking near −6 dBFS.
    pub fn new(pitch_hz: f64, syllables_hz: f64, sample_rate: u32) -> Self {
        SpeechLike {
            pitch_hz,
            syllables_hz,
            sample_rate,
            amplitude: 0.5,
            phase: 0.0,
            syllable: 0.0,
            t: 0,
        }
    }

    /// Scales its level by `gain` (linear).
    pub fn with_gain(mut self, gain: f64) -> Self {
        self.amplitude *= gain;
        self
    }

    /// The next `samples` samples, in −1..1.
    pub fn samples(&mut self, samples: usize) -> Vec<f32> {
        let rate = f64::from(self.sample_rate);
        let tau = std::f64::consts::TAU;
        (0..samples)
            .map(|_| {
                let secs = self.t as f64 / rate;
                self.t += 1;
                let pitch = self.pitch_hz * (1.0 + 0.2 * (secs * 2.3).sin());
                self.phase = (self.phase + pitch / rate) % 1.0;
                // Harmonics falling off as 1/h, like a glottal pulse train.
                let buzz: f64 = (1..16)
                    .map(|h| (self.phase * h as f64 * tau).sin() / h as f64)
                    .sum::<f64>()
                    / 1.7;
                // Syllables of uneven length, so the signal has no period
                // an echo canceller's delay estimate could lock onto.
                let pace =
                    1.0 + 0.45 * (secs * 0.37 * tau).sin() + 0.3 * (secs * 0.23 * tau + 1.0).sin();
                self.syllable = (self.syllable + self.syllables_hz * pace / rate) % 1.0;
                let syllable = (self.syllable * tau).sin().max(0.0).powf(0.7);
                (buzz * syllable * self.amplitude) as f32
            })
            .collect()
    }
}
