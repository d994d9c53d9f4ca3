//! Real codecs on synthetic sources: the pattern's stamps survive H.264, the
//! tone's frequency survives Opus.

use kaigi_media::tone::estimate_frequency;
use kaigi_media::{
    H264Decoder, H264Encoder, H264Settings, OpusDecoder, OpusEncoder, SineTone, Stamp, TestPattern,
    OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE,
};

#[test]
fn stamps_survive_h264_at_640x480() {
    let mut pattern = TestPattern::new(640, 480).unwrap();
    let mut enc = H264Encoder::new(H264Settings {
        bitrate_bps: 800_000,
        ..Default::default()
    })
    .unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let mut read = Vec::new();
    let mut bytes = 0;
    for i in 0..90u64 {
        let frame = pattern.frame_at(1_700_000_000_000_000 + i * 33_333);
        let Some(encoded) = enc.encode(&frame).unwrap() else {
            continue;
        };
        if i == 0 {
            assert!(encoded.keyframe, "the first frame is a keyframe");
            assert_eq!(&encoded.data[..4], &[0, 0, 0, 1], "Annex B");
        }
        bytes += encoded.data.len();
        if let Some(decoded) = dec.decode(&encoded.data).unwrap() {
            assert_eq!((decoded.width, decoded.height), (640, 480));
            read.push(Stamp::read(&decoded).expect("stamp readable after coding"));
        }
    }
    assert!(read.len() >= 85, "decoded {} of 90", read.len());
    for w in read.windows(2) {
        assert!(w[1].counter > w[0].counter, "counters increase");
    }
    assert_eq!(
        read.last().unwrap().captured_us,
        1_700_000_000_000_000 + u64::from(read.last().unwrap().counter) * 33_333
    );
    // 3 s at 800 kbit/s is about 300 kB; the rate control must be in range.
    assert!(bytes > 50_000 && bytes < 600_000, "{bytes} bytes");
}

#[test]
fn keyframe_on_request() {
    let mut pattern = TestPattern::new(320, 240).unwrap();
    let mut enc = H264Encoder::new(H264Settings::default()).unwrap();
    let mut kinds = Vec::new();
    for i in 0..20 {
        if i == 10 {
            enc.request_keyframe();
        }
        if let Some(e) = enc.encode(&pattern.next_frame()).unwrap() {
            kinds.push((i, e.keyframe));
        }
    }
    assert!(kinds.iter().any(|(i, k)| *i == 10 && *k), "{kinds:?}");
    assert!(
        kinds.iter().filter(|(_, k)| *k).count() == 2,
        "only the first and the requested: {kinds:?}"
    );
}

#[test]
fn decoder_waits_for_a_keyframe_and_survives_garbage() {
    let mut pattern = TestPattern::new(320, 240).unwrap();
    let mut enc = H264Encoder::new(H264Settings::default()).unwrap();
    let first = enc.encode(&pattern.next_frame()).unwrap().unwrap();
    let second = enc.encode(&pattern.next_frame()).unwrap().unwrap();
    let mut dec = H264Decoder::new().unwrap();
    // A P-frame without its keyframe gives no picture (and no panic).
    let _ = dec.decode(&second.data);
    let _ = dec.decode(&[0, 0, 0, 1, 0x65, 0xff, 0x00, 0x13]);
    let _ = dec.decode(&[1, 2, 3]);
    let mut dec = H264Decoder::new().unwrap();
    assert!(dec.decode(&first.data).unwrap().is_some());
}

#[test]
fn tone_survives_opus() {
    for freq in [440.0, 1000.0] {
        let mut tone = SineTone::new(freq, OPUS_SAMPLE_RATE);
        let mut enc = OpusEncoder::new(1, 32_000).unwrap();
        let mut dec = OpusDecoder::new(1).unwrap();
        let mut out = Vec::new();
        for _ in 0..50 {
            let packet = enc.encode(&tone.frame(OPUS_FRAME_SAMPLES, 0)).unwrap();
            assert!(
                packet.len() < 200,
                "{} bytes for 20 ms at 32 kbit/s",
                packet.len()
            );
            out.extend(dec.decode(&packet).unwrap().samples);
        }
        // Skip the codec's start-up.
        let est = estimate_frequency(&out[4800..], OPUS_SAMPLE_RATE).unwrap();
        assert!((est - freq).abs() < 2.0, "{freq} Hz came out as {est}");
        // Loss concealment makes a full frame.
        assert_eq!(dec.decode(&[]).unwrap().samples.len(), OPUS_FRAME_SAMPLES);
    }
    assert!(OpusEncoder::new(3, 32_000).is_err());
    let mut enc = OpusEncoder::new(1, 32_000).unwrap();
    assert!(enc
        .encode(&SineTone::new(440.0, 44_100).frame(960, 0))
        .is_err());
}

/// What a subscriber's decoder sees when the server switches simulcast
/// layers: one stream whose pictures change size at a keyframe (from
/// another encoder), after frames of the old size were lost.
#[test]
fn one_decoder_follows_a_switch_of_layers() {
    let mut dec = H264Decoder::new().unwrap();
    let mut sizes = Vec::new();
    for (w, h, lose_last) in [(640, 480, true), (160, 120, false), (320, 240, false)] {
        let mut pattern = TestPattern::new(640, 480).unwrap();
        let mut enc = H264Encoder::new(H264Settings::default()).unwrap();
        for i in 0..10 {
            let frame = pattern.next_frame();
            let frame = frame.scaled_to_fit(w, h).unwrap_or(frame);
            let e = enc.encode(&frame).unwrap().unwrap();
            if lose_last && i >= 5 {
                continue;
            }
            if let Some(d) = dec.decode(&e.data).unwrap() {
                sizes.push((d.width, d.height));
            }
        }
    }
    for size in [(640, 480), (160, 120), (320, 240)] {
        let n = sizes.iter().filter(|s| **s == size).count();
        assert!(n >= 4, "{size:?}: {n} pictures decoded ({sizes:?})");
    }
}

/// A lost Opus frame comes back from the next packet's in-band FEC closer
/// to what was sent than loss concealment guesses it.
#[test]
fn in_band_fec_recovers_a_lost_frame_better_than_concealment() {
    use kaigi_media::opus_codec::can_carry_fec;
    // Something like a voice (a steady tone reads as no speech to the
    // encoder, which then sends no FEC): a buzz at a gliding pitch, with
    // syllables four times a second.
    let mut enc = OpusEncoder::new(1, 32_000).unwrap();
    let (mut phase, mut t) = (0.0f64, 0usize);
    let packets: Vec<Vec<u8>> = (0..60)
        .map(|_| {
            let samples = (0..OPUS_FRAME_SAMPLES)
                .map(|_| {
                    let secs = t as f64 / f64::from(OPUS_SAMPLE_RATE);
                    t += 1;
                    phase += (120.0 + 30.0 * (secs * 3.0).sin()) / f64::from(OPUS_SAMPLE_RATE);
                    let buzz: f64 = (1..12)
                        .map(|h| (phase * h as f64 * std::f64::consts::TAU).sin() / h as f64)
                        .sum();
                    let syllable = (secs * 4.0 * std::f64::consts::TAU).sin().max(0.0);
                    (buzz * syllable * 6000.0) as i16
                })
                .collect();
            let frame = kaigi_media::AudioFrame {
                sample_rate: OPUS_SAMPLE_RATE,
                channels: 1,
                samples,
                captured_us: 0,
            };
            enc.encode(&frame).unwrap()
        })
        .collect();
    const LOST: usize = 40;
    assert!(
        can_carry_fec(&packets[LOST + 1]),
        "a 32 kbit/s VoIP packet is SILK or hybrid (TOC {:#x})",
        packets[LOST + 1][0]
    );
    // What the frame decodes to when nothing is lost.
    let mut all = OpusDecoder::new(1).unwrap();
    let mut reference = Vec::new();
    for (i, p) in packets.iter().enumerate().take(LOST + 1) {
        let f = all.decode(p).unwrap();
        if i == LOST {
            reference = f.samples;
        }
    }
    let recover = |fec: bool| {
        let mut dec = OpusDecoder::new(1).unwrap();
        for p in &packets[..LOST] {
            dec.decode(p).unwrap();
        }
        let f = if fec {
            dec.decode_fec(&packets[LOST + 1]).unwrap()
        } else {
            dec.decode(&[]).unwrap()
        };
        assert_eq!(f.samples.len(), OPUS_FRAME_SAMPLES);
        // Error energy against the reference.
        f.samples
            .iter()
            .zip(&reference)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
    };
    let (fec, plc) = (recover(true), recover(false));
    assert!(
        fec < plc,
        "error with FEC {fec:.3e}, with concealment {plc:.3e}"
    );
}
