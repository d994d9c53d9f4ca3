//! kaigi-media: raw frames, synthetic sources that stand in for cameras and
//! microphones (a moving test pattern that carries a frame counter and
//! capture time through lossy coding, a sine tone), and the codecs: H.264
//! through openh264, Opus at 48 kHz; cameras (nokhwa), microphones and
//! speakers (cpal). No networking.

#![forbid(unsafe_code)]

pub mod audio_device;
pub mod audio_processing;
pub mod camera;
pub mod devices;
pub mod frame;
pub mod h264;
pub mod opus_codec;
pub mod pattern;
pub mod scale;
pub mod screen;
pub mod tone;

pub use audio_device::{Microphone, Mixer, Speaker};
pub use audio_processing::{AudioProcessing, AudioProcessor};
pub use camera::{Camera, CameraSettings};
pub use devices::{DeviceError, DeviceInfo, DeviceKind};
pub use frame::{AudioFrame, VideoFrame};
pub use h264::{Content, EncodedVideo, H264Decoder, H264Encoder, H264Settings};
pub use opus_codec::{OpusDecoder, OpusEncoder, OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE};
pub use pattern::{Stamp, TestPattern};
pub use tone::{SineTone, SpeechLike};

/// Why a media operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The H.264 codec reported an error.
    #[error("H.264: {0}")]
    H264(String),
    /// The Opus codec reported an error.
    #[error("Opus: {0}")]
    Opus(String),
    /// A frame or setting is not usable (e.g. odd dimensions).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The screen or window could not be captured.
    #[error("screen capture: {0}")]
    Capture(String),
}

/// Microseconds since the Unix epoch, the clock capture stamps use.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
