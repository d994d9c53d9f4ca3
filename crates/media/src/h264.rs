//! H.264 through openh264: constrained baseline for interoperability,
//! bitrate control, keyframes on request.

use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

use crate::frame::VideoFrame;
use crate::MediaError;

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H264Settings {
    /// Target bitrate, bits per second.
    pub bitrate_bps: u32,
    /// Frames per second the source delivers.
    pub fps: f32,
    /// A keyframe at least this often (frames); keyframes are also made on
    /// request (a subscriber's PLI).
    pub keyframe_interval: u32,
    /// What the pictures are: a camera's, or a screen's (text and flat
    /// areas kept sharp; unchanged regions cost next to nothing).
    pub content: Content,
}

/// What an encoder is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Content {
    /// A camera: motion, noise.
    #[default]
    Camera,
    /// A screen: text, flat areas, little motion, low frame rates.
    Screen,
}

impl Default for H264Settings {
    fn default() -> Self {
        H264Settings {
            bitrate_bps: 1_000_000,
            fps: 30.0,
            keyframe_interval: 300,
            content: Content::Camera,
        }
    }
}

/// One encoded frame: Annex B NAL units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Annex B bytes (start codes + NAL units, SPS/PPS before keyframes).
    pub data: Vec<u8>,
    /// Whether this is a keyframe (IDR or I).
    pub keyframe: bool,
    /// The frame's capture time, carried through.
    pub captured_us: u64,
}

/// An H.264 encoder.
pub struct H264Encoder {
    encoder: Encoder,
    settings: H264Settings,
    keyframe_requested: bool,
}

impl H264Encoder {
    /// An encoder with these settings (constrained baseline, level 3.1 —
    /// 4.0 for screens up to 1920×1080 —, real-time camera or screen
    /// tuning, one thread).
    pub fn new(settings: H264Settings) -> Result<Self, MediaError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps))
            .usage_type(match settings.content {
                Content::Camera => UsageType::CameraVideoRealTime,
                Content::Screen => UsageType::ScreenContentRealTime,
            })
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .level(match settings.content {
                Content::Camera => Level::Level_3_1,
                Content::Screen => Level::Level_4_0,
            })
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            // Rate control needs to drop a frame now and then under load.
            .skip_frames(true)
            .num_threads(1);
        // The screen tuning has its own detection of still areas; these two
        // are camera tools (openh264 turns them off itself, with a warning).
        let config = match settings.content {
            Content::Camera => config,
            Content::Screen => config
                .adaptive_quantization(false)
                .background_detection(false),
        };
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::H264(e.to_string()))?;
        Ok(H264Encoder {
            encoder,
            settings,
            keyframe_requested: false,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> H264Settings {
        self.settings
    }

    /// Makes the next frame a keyframe (for a PLI or a new subscriber).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Encodes one frame. `None` when the encoder skipped it.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, MediaError> {
        if self.keyframe_requested {
            self.encoder.force_intra_frame();
            self.keyframe_requested = false;
        }
        let stream = self
            .encoder
            .encode(frame)
            .map_err(|e| MediaError::H264(e.to_string()))?;
        let keyframe = match stream.frame_type() {
            FrameType::IDR | FrameType::I => true,
            FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => return Ok(None),
        };
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedVideo {
            data,
            keyframe,
            captured_us: frame.captured_us,
        }))
    }
}

/// H.264 decoders alive in this process (see [`H264Decoder::live`]).
static LIVE_DECODERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An H.264 decoder.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    /// A decoder.
    pub fn new() -> Result<Self, MediaError> {
        let decoder = Decoder::new().map_err(|e| MediaError::H264(e.to_string()))?;
        LIVE_DECODERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(H264Decoder { decoder })
    }

    /// How many decoders this process holds now. Each holds several
    /// megabytes from its start (openh264's bitstream buffer and picture
    /// pool), so the count is worth watching.
    pub fn live() -> usize {
        LIVE_DECODERS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decodes Annex B bytes (one access unit). `None` when no picture is
    /// complete yet (e.g. waiting for a keyframe).
    pub fn decode(&mut self, annex_b: &[u8]) -> Result<Option<VideoFrame>, MediaError> {
        let Some(yuv) = self
            .decoder
            .decode(annex_b)
            .map_err(|e| MediaError::H264(e.to_string()))?
        else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        let mut data = Vec::with_capacity(w * h * 3 / 2);
        for row in 0..h {
            data.extend_from_slice(&yuv.y()[row * sy..row * sy + w]);
        }
        for row in 0..h / 2 {
            data.extend_from_slice(&yuv.u()[row * su..row * su + w / 2]);
        }
        for row in 0..h / 2 {
            data.extend_from_slice(&yuv.v()[row * sv..row * sv + w / 2]);
        }
        Ok(Some(VideoFrame {
            width: w,
            height: h,
            data,
            captured_us: 0,
        }))
    }
}

impl Drop for H264Decoder {
    fn drop(&mut self) {
        LIVE_DECODERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
