//! `kaigi audio-process` on WAV files: a far-end talker at 16 kHz stereo
//! (float), and a 16 kHz mono microphone (16-bit) that hears its echo.

use std::path::Path;
use std::process::Command;

use kaigi_media::SpeechLike;

const RATE: u32 = 16_000;

fn write(path: &Path, channels: u16, float: bool, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: RATE,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        for _ in 0..channels {
            if float {
                w.write_sample(s).unwrap();
            } else {
                w.write_sample((s * 32767.0) as i16).unwrap();
            }
        }
    }
    w.finalize().unwrap();
}

fn read(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let s = r
        .samples::<i16>()
        .map(|v| f32::from(v.unwrap()) / 32768.0)
        .collect();
    (spec, s)
}

fn power_db(x: &[f32]) -> f64 {
    let p = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * p.max(1e-20).log10()
}

fn kaigi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kaigi"))
        .arg("audio-process")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn recordings_are_processed_like_a_call() {
    let dir = std::env::temp_dir().join(format!("kaigi-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (far_wav, mic_wav) = (dir.join("far.wav"), dir.join("mic.wav"));
    let far = SpeechLike::new(120.0, 3.0, RATE).samples(6 * RATE as usize);
    // The room: 80 ms later, at half the level.
    let delay = (RATE / 1000 * 80) as usize;
    let mic: Vec<f32> = (0..far.len())
        .map(|i| {
            if i >= delay {
                far[i - delay] * 0.5
            } else {
                0.0
            }
        })
        .collect();
    write(&far_wav, 2, true, &far);
    write(&mic_wav, 1, false, &mic);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--far",
            far_wav.to_str().unwrap(),
            "--mic",
            mic_wav.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-ns",
            "--no-agc",
        ];
        args.extend_from_slice(extra);
        let o = kaigi(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["sampleRate"], RATE);
        read(out)
    };
    let (spec, cancelled) = run(&dir.join("out.wav"), &[]);
    assert_eq!((spec.sample_rate, spec.channels), (RATE, 1));
    assert_eq!(cancelled.len(), mic.len());
    let (_, kept) = run(&dir.join("kept.wav"), &["--no-aec"]);
    let w = 3 * RATE as usize..6 * RATE as usize;
    let gone = power_db(&kept[w.clone()]) - power_db(&cancelled[w]);
    assert!(gone >= 20.0, "the echo is {gone:.1} dB lower (≥ 20)");

    // A file that is not WAV: a clear error, no output.
    let bad = dir.join("bad.wav");
    std::fs::write(&bad, b"not a wav").unwrap();
    let o = kaigi(&[
        "--far",
        bad.to_str().unwrap(),
        "--mic",
        mic_wav.to_str().unwrap(),
        "--out",
        dir.join("x.wav").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.wav"));
    let _ = std::fs::remove_dir_all(&dir);
}
