//! Picture quality per bitrate at each simulcast layer: the 640×480 test
//! pattern (scaled down for the smaller layers, as the SDK does) encoded
//! with the SDK's H.264 encoder at 30 fps and a range of bitrates, decoded,
//! and compared with what went in: luma PSNR averaged over the frames
//! shown (a frame the encoder skipped shows the one before). Prints a
//! table, writes `bench-results/quality.json` and its section of
//! `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench quality` (`-- --quick`: fewer frames).

use kaigi_media::{H264Decoder, H264Encoder, H264Settings, TestPattern, VideoFrame};
use kaigi_tests::bench::{machine, write_results};
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

/// The layers the SDK sends for a 640×480 camera.
const LAYERS: [(usize, usize); 3] = [(640, 480), (320, 240), (160, 120)];
/// Bitrates tried at each layer, kbit/s.
const RATES: [u32; 6] = [50, 100, 200, 400, 800, 1600];
/// Frames before measuring (the rate control settles).
const WARMUP: usize = 30;

/// Luma PSNR of `got` against `want` (same size), dB; 99 for identical.
fn psnr(want: &VideoFrame, got: &VideoFrame) -> f64 {
    let n = want.width * want.height;
    let mse = want.data[..n]
        .iter()
        .zip(&got.data[..n])
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        / n as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// (mean luma PSNR over the measured frames, the bitrate reached in kbit/s,
/// frames the encoder skipped) for `layer` at `kbps`.
fn measure(layer: (usize, usize), kbps: u32, frames: usize) -> (f64, f64, usize) {
    let mut pattern = TestPattern::new(640, 480).expect("the pattern");
    let mut enc = H264Encoder::new(H264Settings {
        bitrate_bps: kbps * 1000,
        fps: 30.0,
        ..Default::default()
    })
    .expect("an encoder");
    let mut dec = H264Decoder::new().expect("a decoder");
    let (mut sum, mut counted, mut bytes, mut skipped) = (0.0, 0usize, 0usize, 0usize);
    let mut shown: Option<VideoFrame> = None;
    for i in 0..WARMUP + frames {
        let full = pattern.frame_at(i as u64 * 33_333);
        let source = if layer == (640, 480) {
            full
        } else {
            full.scaled_to_fit(layer.0, layer.1)
                .expect("a smaller layer")
        };
        match enc.encode(&source).expect("encodes") {
            Some(out) => {
                if i >= WARMUP {
                    bytes += out.data.len();
                }
                if let Some(picture) = dec.decode(&out.data).expect("decodes") {
                    shown = Some(picture);
                }
            }
            None => skipped += usize::from(i >= WARMUP),
        }
        if i >= WARMUP {
            if let Some(s) = &shown {
                sum += psnr(&source, s);
                counted += 1;
            }
        }
    }
    let kbps_reached = bytes as f64 * 8.0 * 30.0 / frames as f64 / 1000.0;
    (sum / counted.max(1) as f64, kbps_reached, skipped)
}

async fn run(quick: bool) {
    let frames = if quick { 60 } else { 240 };
    let mut results = Vec::new();
    let mut header = String::from("| layer |");
    let mut rule = String::from("|---|");
    for r in RATES {
        header.push_str(&format!(" {r} kbit/s |"));
        rule.push_str("---|");
    }
    let mut rows = String::new();
    for layer in LAYERS {
        let mut row = format!("| {}×{} |", layer.0, layer.1);
        for kbps in RATES {
            let (db, reached, skipped) = measure(layer, kbps, frames);
            println!(
                "{}×{} at {kbps} kbit/s: {db:.1} dB (reached {reached:.0} kbit/s, {skipped} frames skipped)",
                layer.0, layer.1
            );
            row.push_str(&format!(" {db:.1} dB |"));
            results.push(json!({
                "width": layer.0, "height": layer.1, "kbps": kbps,
                "psnr_db": db, "kbps_reached": reached, "skipped": skipped,
            }));
        }
        rows.push_str(&row);
        rows.push('\n');
    }
    if quick {
        return;
    }
    let (date, cores, cpu) = machine();
    let body = format!(
        "## Picture quality per bitrate, per simulcast layer\n\n\
         Measured {date} on {cores} cores ({cpu}), release build, with `cargo bench -p kaigi-tests --bench quality`. \
         The 640×480 test pattern (scrolling bars, a bouncing box, the frame stamp), scaled down for the smaller \
         layers as the SDK does, encoded with the SDK's H.264 encoder (OpenH264, 30 fps) at each bitrate, decoded, \
         and compared with what went in: luma PSNR averaged over {frames} frames after {WARMUP} of warm-up, a skipped \
         frame counting as the one before it still shown; raw figures (with the bitrate reached and frames skipped) \
         in `bench-results/quality.json`. What it tells the layer choice: where a smaller layer beats a larger one \
         at the same bitrate, the SFU should send the smaller one (goal: the layers the SDK's rate split gives at \
         each estimate sit on the better side). The pattern is easy (flat bars): from about 200 kbit/s every \
         layer is near lossless and the encoder sends less than asked. Below that the smaller layer is the better \
         picture at the same bitrate (at 100 kbit/s 160×120 beats 320×240, which beats a 640×480 that skips \
         frames), which is what the SFU's choice by estimate gives a thin link.\n\n{header}\n{rule}\n{rows}"
    );
    write_results(
        "quality",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu, "frames": frames, "results": results}),
    );
}
