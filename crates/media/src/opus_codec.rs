//! Opus at 48 kHz, 20 ms frames.

use opus::{Application, Bitrate, Channels, Signal};

use crate::frame::AudioFrame;
use crate::MediaError;

/// Opus's sample rate here.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame.
pub const OPUS_FRAME_SAMPLES: usize = 960;
/// The largest packet the encoder is asked to make.
const MAX_PACKET: usize = 1500;

fn channels(n: u16) -> Result<Channels, MediaError> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        n => Err(MediaError::Invalid(format!(
            "Opus takes 1 or 2 channels, not {n}"
        ))),
    }
}

/// An Opus encoder for speech (VoIP tuning, voice signal, in-band FEC on).
pub struct OpusEncoder {
    encoder: opus::Encoder,
    channels: u16,
}

impl OpusEncoder {
    /// An encoder for `channels` channels at `bitrate_bps`.
    pub fn new(channels_n: u16, bitrate_bps: i32) -> Result<Self, MediaError> {
        let err = |e: opus::Error| MediaError::Opus(e.to_string());
        let mut encoder =
            opus::Encoder::new(OPUS_SAMPLE_RATE, channels(channels_n)?, Application::Voip)
                .map_err(err)?;
        encoder
            .set_bitrate(Bitrate::Bits(bitrate_bps))
            .map_err(err)?;
        // Speech: SILK or hybrid packets, the ones that carry in-band FEC
        // (left to itself the encoder codes steady sounds in CELT, which
        // carries none).
        encoder.set_signal(Signal::Voice).map_err(err)?;
        encoder.set_inband_fec(true).map_err(err)?;
        encoder.set_packet_loss_perc(10).map_err(err)?;
        Ok(OpusEncoder {
            encoder,
            channels: channels_n,
        })
    }

    /// Encodes one 20 ms frame (960 samples per channel, 48 kHz).
    pub fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<u8>, MediaError> {
        let expected = OPUS_FRAME_SAMPLES * usize::from(self.channels);
        if frame.sample_rate != OPUS_SAMPLE_RATE
            || frame.channels != self.channels
            || frame.samples.len() != expected
        {
            return Err(MediaError::Invalid(format!(
                "Opus frames are {expected} samples of {} channel(s) at 48 kHz; got {} at {} Hz, {} channel(s)",
                self.channels,
                frame.samples.len(),
                frame.sample_rate,
                frame.channels
            )));
        }
        self.encoder
            .encode_vec(&frame.samples, MAX_PACKET)
            .map_err(|e| MediaError::Opus(e.to_string()))
    }
}

/// An Opus decoder.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    channels: u16,
}

impl OpusDecoder {
    /// A decoder for `channels` channels at 48 kHz.
    pub fn new(channels_n: u16) -> Result<Self, MediaError> {
        Ok(OpusDecoder {
            decoder: opus::Decoder::new(OPUS_SAMPLE_RATE, channels(channels_n)?)
                .map_err(|e| MediaError::Opus(e.to_string()))?,
            channels: channels_n,
        })
    }

    /// Decodes one packet; an empty packet conceals one lost 20 ms frame.
    pub fn decode(&mut self, packet: &[u8]) -> Result<AudioFrame, MediaError> {
        // For a lost packet the buffer's size is the duration concealed.
        let max = if packet.is_empty() {
            OPUS_FRAME_SAMPLES
        } else {
            5760
        };
        let mut out = vec![0i16; max * usize::from(self.channels)];
        let n = self
            .decoder
            .decode(packet, &mut out, false)
            .map_err(|e| MediaError::Opus(e.to_string()))?;
        out.truncate(n * usize::from(self.channels));
        Ok(self.frame(out))
    }

    /// Recovers the 20 ms frame before `next` (which arrived; the one
    /// before it did not) from `next`'s in-band FEC data, or conceals it
    /// when `next` carries none.
    pub fn decode_fec(&mut self, next: &[u8]) -> Result<AudioFrame, MediaError> {
        // The buffer's size is the duration recovered: one frame.
        let mut out = vec![0i16; OPUS_FRAME_SAMPLES * usize::from(self.channels)];
        let n = self
            .decoder
            .decode(next, &mut out, true)
            .map_err(|e| MediaError::Opus(e.to_string()))?;
        out.truncate(n * usize::from(self.channels));
        Ok(self.frame(out))
    }

    fn frame(&self, samples: Vec<i16>) -> AudioFrame {
        AudioFrame {
            sample_rate: OPUS_SAMPLE_RATE,
            channels: self.channels,
            samples,
            captured_us: 0,
        }
    }
}

/// Whether an Opus packet can carry in-band FEC data for the frame before
/// it: only SILK and hybrid packets do (TOC configurations 0–15), not
/// CELT ones.
pub fn can_carry_fec(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc >> 3 < 16)
}
