//! Microphones and speakers through cpal. Audio inside Kaigi is 48 kHz;
//! devices run at whatever rate they offer, converted on the way in and out.
//! cpal streams live on a thread of their own (they are not `Send` on every
//! platform) until the handle is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SizedSample, StreamConfig};
use tracing::{debug, warn};

use crate::devices::{spawn_device_thread, DeviceError, DeviceKind};
use crate::{unix_micros, AudioFrame, OPUS_FRAME_SAMPLES, OPUS_SAMPLE_RATE};

/// Input frames per conversion step: small, so the converter adds little
/// delay (128 frames is 2.7 ms at 48 kHz; the filter adds half its length).
const RESAMPLE_CHUNK: usize = 128;

/// Rate converter for one mono signal: a windowed-sinc filter (rubato)
/// that removes what the lower rate cannot carry instead of folding it
/// back (aliasing), as linear interpolation did.
pub struct Resampler {
    /// `None` when the rates are equal.
    inner: Option<rubato::SincFixedIn<f32>>,
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("converting", &self.inner.is_some())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Resampler {
    /// Converts from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        use rubato::{
            SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
        };
        let (from, to) = (from.max(1), to.max(1));
        let inner = (from != to).then(|| {
            let params = SincInterpolationParameters {
                sinc_len: 128,
                f_cutoff: rubato::calculate_cutoff(128, WindowFunction::BlackmanHarris2),
                oversampling_factor: 128,
                interpolation: SincInterpolationType::Linear,
                window: WindowFunction::BlackmanHarris2,
            };
            SincFixedIn::new(
                f64::from(to) / f64::from(from),
                1.0,
                params,
                RESAMPLE_CHUNK,
                1,
            )
        });
        Resampler {
            // Construction fails only for a ratio of zero or infinity,
            // which the clamping above rules out.
            inner: inner.and_then(Result::ok),
            pending: Vec::with_capacity(RESAMPLE_CHUNK * 2),
            out: Vec::new(),
        }
    }

    /// Converts `input`, appending to `out`. State carries across calls;
    /// up to one step's input waits for the next call.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        use rubato::Resampler as _;
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return;
        };
        self.pending.extend_from_slice(input);
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            self.out.resize(inner.output_frames_max(), 0.0);
            match inner.process_into_buffer(
                &[&self.pending[..need]],
                &mut [&mut self.out[..]],
                None,
            ) {
                Ok((used, written)) => {
                    out.extend_from_slice(&self.out[..written]);
                    self.pending.drain(..used);
                }
                Err(e) => {
                    // Buffers are sized as the converter asks: not expected.
                    warn!(error = %e, "resampling failed; input dropped");
                    self.pending.clear();
                    break;
                }
            }
        }
    }
}

fn find_device(kind: DeviceKind, id: Option<&str>) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    let not_found = || match id {
        Some(id) => DeviceError::NotFound {
            kind,
            id: id.to_owned(),
        },
        None => DeviceError::NoDevice(kind),
    };
    let devices = match kind {
        DeviceKind::Microphone => host.input_devices().map(|d| d.collect::<Vec<_>>()),
        _ => host.output_devices().map(|d| d.collect::<Vec<_>>()),
    }
    .map_err(|_| not_found())?;
    match id {
        Some(id) => devices
            .into_iter()
            .find(|d| d.name().is_ok_and(|n| n == id))
            .ok_or_else(not_found),
        // The first listed device: the host's "default" is not always one
        // that opens.
        None => devices.into_iter().next().ok_or_else(not_found),
    }
}

/// Runs `build` on a thread of its own and keeps what it returns (a cpal
/// stream) alive there until the returned handle is dropped, or until the
/// stream itself says it is done (`build`'s sender: a lost device, whose
/// stream would otherwise keep failing).
fn stream_thread(
    kind: DeviceKind,
    name: String,
    build: impl FnOnce(mpsc::Sender<()>) -> Result<cpal::Stream, DeviceError> + Send + 'static,
) -> Result<DeviceThread, DeviceError> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // Hung up when the thread ends, however it ends.
    let (ended_tx, ended_rx) = mpsc::channel::<()>();
    let id = name.clone();
    let done = stop_tx.clone();
    let thread = spawn_device_thread(kind, &id, move |ready| {
        let _ended = ended_tx;
        let opened = build(done).and_then(|s| {
            s.play().map_err(|e| DeviceError::Open {
                kind,
                id: name.clone(),
                message: e.to_string(),
            })?;
            Ok(s)
        });
        let stream = match opened {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        // Until the handle is dropped or the stream is done.
        let _ = stop_rx.recv();
        drop(stream);
        debug!(device = %name, "closed");
    })?;
    Ok(DeviceThread {
        stop: Some(stop_tx),
        ended: ended_rx,
        thread: Some(thread),
        name: id,
    })
}

/// How long closing a device may take before its thread is left behind.
const DEVICE_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Keeps a device stream open; closes it (and joins its thread) on drop.
struct DeviceThread {
    stop: Option<mpsc::Sender<()>>,
    /// Hangs up when the thread has ended.
    ended: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        // Said, not just hung up: the stream's error callback holds a
        // sender too (`done`), so the channel never closes while it lives.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A driver can keep a stream from closing (cpal 0.16's ALSA
        // output retries a failed underrun recovery forever when the sound
        // server has gone): its thread is then left behind rather than
        // the caller held with it.
        if let Err(mpsc::RecvTimeoutError::Timeout) = self.ended.recv_timeout(DEVICE_CLOSE_WAIT) {
            tracing::error!(device = %self.name, "the device did not close; its thread is left behind");
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An open microphone delivering 20 ms, 48 kHz mono frames. Dropping it
/// closes the device.
pub struct Microphone {
    name: String,
    _thread: DeviceThread,
}

impl Microphone {
    /// Opens the microphone named `id` (or the first one) and calls
    /// `on_frame` with each 20 ms frame, `on_error` once if it stops
    /// working (unplugged).
    pub fn open(
        id: Option<&str>,
        on_frame: impl FnMut(AudioFrame) + Send + 'static,
        on_error: impl FnMut(DeviceError) + Send + 'static,
    ) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Microphone;
        let device = find_device(kind, id)?;
        let name = device.name().unwrap_or_default();
        let open_err = |e: String| DeviceError::Open {
            kind,
            id: name.clone(),
            message: e,
        };
        let config = device
            .default_input_config()
            .map_err(|e| open_err(e.to_string()))?;
        let format = config.sample_format();
        let config: StreamConfig = config.into();
        let n = name.clone();
        let thread = stream_thread(kind, name.clone(), move |done| {
            let chunker = Chunker::new(config.sample_rate.0, config.channels, on_frame);
            let errors = error_reporter(kind, n.clone(), on_error, done);
            let stream = match format {
                SampleFormat::F32 => input_stream::<f32>(&device, &config, chunker, errors),
                SampleFormat::I16 => input_stream::<i16>(&device, &config, chunker, errors),
                SampleFormat::U16 => input_stream::<u16>(&device, &config, chunker, errors),
                other => Err(cpal::BuildStreamError::StreamConfigNotSupported).inspect_err(|_| {
                    warn!(format = ?other, "unsupported sample format");
                }),
            };
            stream.map_err(|e| DeviceError::Open {
                kind,
                id: n,
                message: e.to_string(),
            })
        })?;
        Ok(Microphone {
            name,
            _thread: thread,
        })
    }

    /// The device's name (its id).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The stream's error callback: the first error is reported as the device
/// lost and ends the stream (`done`); the stream's later errors (it may
/// keep failing until it is closed) are only counted.
fn error_reporter(
    kind: DeviceKind,
    id: String,
    mut on_error: impl FnMut(DeviceError) + Send + 'static,
    done: mpsc::Sender<()>,
) -> impl FnMut(cpal::StreamError) + Send + 'static {
    let mut errors = 0u64;
    move |e| {
        errors += 1;
        if errors == 1 {
            warn!(device = %id, error = %e, "device lost");
            crate::devices::note_lost();
            let _ = done.send(());
            on_error(DeviceError::Lost {
                kind,
                id: id.clone(),
                message: e.to_string(),
            });
        } else if errors.is_power_of_two() {
            debug!(device = %id, errors, "device still failing");
        }
    }
}

fn input_stream<T: SizedSample + cpal::Sample>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut chunker: Chunker<impl FnMut(AudioFrame) + Send + 'static>,
    errors: impl FnMut(cpal::StreamError) + Send + 'static,
) -> Result<cpal::Stream, cpal::BuildStreamError>
where
    f32: cpal::FromSample<T>,
{
    device.build_input_stream(
        config,
        move |data: &[T], info: &cpal::InputCallbackInfo| {
            let t = info.timestamp();
            let latency = t.callback.duration_since(&t.capture).unwrap_or_default();
            chunker.push(data, latency);
        },
        errors,
        None,
    )
}

/// Turns device buffers (any rate, any channels) into 20 ms 48 kHz mono frames.
struct Chunker<F> {
    channels: usize,
    rate: u32,
    resampler: Resampler,
    mono: Vec<f32>,
    pending: Vec<f32>,
    on_frame: F,
}

impl<F: FnMut(AudioFrame)> Chunker<F> {
    fn new(rate: u32, channels: u16, on_frame: F) -> Self {
        Chunker {
            channels: usize::from(channels.max(1)),
            rate,
            resampler: Resampler::new(rate, OPUS_SAMPLE_RATE),
            mono: Vec::new(),
            pending: Vec::with_capacity(OPUS_FRAME_SAMPLES * 2),
            on_frame,
        }
    }

    /// Takes a device buffer whose first sample was captured `latency`
    /// ago; each frame's `captured_us` is when its last sample was.
    fn push<T: cpal::Sample>(&mut self, data: &[T], latency: std::time::Duration)
    where
        f32: cpal::FromSample<T>,
    {
        self.mono.clear();
        self.mono.extend(
            data.chunks(self.channels)
                .map(|c| c.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() / c.len() as f32),
        );
        self.resampler.process(&self.mono, &mut self.pending);
        // When the buffer's last sample was captured.
        let buffer_us = self.mono.len() as u64 * 1_000_000 / u64::from(self.rate.max(1));
        let end_us = (unix_micros() + buffer_us).saturating_sub(latency.as_micros() as u64);
        while self.pending.len() >= OPUS_FRAME_SAMPLES {
            let samples = self
                .pending
                .drain(..OPUS_FRAME_SAMPLES)
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
                .collect();
            let after_us = self.pending.len() as u64 * 1_000_000 / u64::from(OPUS_SAMPLE_RATE);
            (self.on_frame)(AudioFrame {
                sample_rate: OPUS_SAMPLE_RATE,
                channels: 1,
                samples,
                captured_us: end_us.saturating_sub(after_us),
            });
        }
    }
}

/// At most this much audio (48 kHz samples) waits per source: 200 ms.
const MIX_QUEUE_MAX: usize = OPUS_SAMPLE_RATE as usize / 5;

/// Sums several 48 kHz sources (remote users) for a speaker. Each source
/// has a short queue; a source that falls behind is silence, one that runs
/// ahead loses its oldest audio.
#[derive(Clone, Default)]
pub struct Mixer {
    sources: Arc<Mutex<HashMap<u64, VecDeque<f32>>>>,
    /// What was pulled (played), for echo cancellation to take.
    played: Arc<Mutex<VecDeque<f32>>>,
    /// How long pulled audio takes to be heard, µs (the speaker says).
    output_latency_us: Arc<AtomicU32>,
}

/// At most this much played audio (48 kHz samples) waits to be taken as
/// the echo reference: 1 s.
const PLAYED_MAX: usize = OPUS_SAMPLE_RATE as usize;

impl Mixer {
    /// An empty mixer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a decoded frame from `source` (any channel count, 48 kHz).
    pub fn push(&self, source: u64, frame: &AudioFrame) {
        let channels = usize::from(frame.channels.max(1));
        let mut sources = self.sources.lock();
        let q = sources.entry(source).or_default();
        q.extend(
            frame
                .samples
                .chunks(channels)
                .map(|c| c.iter().map(|s| f32::from(*s)).sum::<f32>() / (c.len() as f32 * 32768.0)),
        );
        if q.len() > MIX_QUEUE_MAX {
            let extra = q.len() - MIX_QUEUE_MAX;
            q.drain(..extra);
        }
    }

    /// Forgets a source.
    pub fn remove(&self, source: u64) {
        self.sources.lock().remove(&source);
    }

    /// Fills `out` with the next 48 kHz mono samples of the mix.
    pub fn pull(&self, out: &mut [f32]) {
        out.fill(0.0);
        let mut sources = self.sources.lock();
        let n = out.len();
        for q in sources.values_mut() {
            let take = n.min(q.len());
            for (o, s) in out.iter_mut().zip(q.drain(..take)) {
                *o += s;
            }
        }
        for o in out.iter_mut() {
            *o = o.clamp(-1.0, 1.0);
        }
        drop(sources);
        let mut played = self.played.lock();
        played.extend(out.iter().copied());
        if played.len() > PLAYED_MAX {
            let extra = played.len() - PLAYED_MAX;
            played.drain(..extra);
        }
    }

    /// How long audio pulled now takes to come out of the speaker, as the
    /// device reports it (zero before it does).
    pub fn output_latency(&self) -> Duration {
        Duration::from_micros(u64::from(self.output_latency_us.load(Ordering::Relaxed)))
    }

    fn set_output_latency(&self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.output_latency_us.store(us, Ordering::Relaxed);
    }

    /// Moves what was played since the last call (48 kHz mono, at most
    /// the last second) to `out`: the far end an echo canceller needs.
    pub fn take_played(&self, out: &mut Vec<f32>) {
        out.extend(self.played.lock().drain(..));
    }
}

/// An open speaker playing a [`Mixer`]. Dropping it closes the device.
pub struct Speaker {
    name: String,
    _thread: DeviceThread,
}

impl Speaker {
    /// Opens the speaker named `id` (or the first one) and plays `mixer`;
    /// `on_error` is called once if it stops working.
    pub fn open(
        id: Option<&str>,
        mixer: Mixer,
        on_error: impl FnMut(DeviceError) + Send + 'static,
    ) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Speaker;
        let device = find_device(kind, id)?;
        let name = device.name().unwrap_or_default();
        let supported = device
            .default_output_config()
            .map_err(|e| DeviceError::Open {
                kind,
                id: name.clone(),
                message: e.to_string(),
            })?;
        let format = supported.sample_format();
        let config: StreamConfig = supported.into();
        let n = name.clone();
        let thread = stream_thread(kind, name.clone(), move |done| {
            let errors = error_reporter(kind, n.clone(), on_error, done);
            let stream = match format {
                SampleFormat::F32 => output_stream::<f32>(&device, &config, mixer, errors),
                SampleFormat::I16 => output_stream::<i16>(&device, &config, mixer, errors),
                SampleFormat::U16 => output_stream::<u16>(&device, &config, mixer, errors),
                _ => Err(cpal::BuildStreamError::StreamConfigNotSupported),
            };
            stream.map_err(|e| DeviceError::Open {
                kind,
                id: n,
                message: e.to_string(),
            })
        })?;
        Ok(Speaker {
            name,
            _thread: thread,
        })
    }

    /// The device's name (its id).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn output_stream<T: SizedSample + cpal::FromSample<f32>>(
    device: &cpal::Device,
    config: &StreamConfig,
    mixer: Mixer,
    errors: impl FnMut(cpal::StreamError) + Send + 'static,
) -> Result<cpal::Stream, cpal::BuildStreamError> {
    let channels = usize::from(config.channels.max(1));
    let rate = config.sample_rate.0;
    let mut resampler = Resampler::new(OPUS_SAMPLE_RATE, rate);
    let mut mixed: Vec<f32> = Vec::new();
    let mut converted: Vec<f32> = Vec::new();
    let mut carry: VecDeque<f32> = VecDeque::new();
    device.build_output_stream(
        config,
        move |out: &mut [T], info: &cpal::OutputCallbackInfo| {
            let t = info.timestamp();
            // What is pulled now plays after what is already queued here.
            let queued = Duration::from_micros(carry.len() as u64 * 1_000_000 / u64::from(rate));
            mixer.set_output_latency(
                t.playback.duration_since(&t.callback).unwrap_or_default() + queued,
            );
            let frames = out.len() / channels;
            // Pull enough 48 kHz audio to produce `frames` at the device rate.
            while carry.len() < frames {
                let need = ((frames - carry.len()) as u64 * u64::from(OPUS_SAMPLE_RATE))
                    .div_ceil(u64::from(rate))
                    .max(1) as usize;
                mixed.resize(need, 0.0);
                mixer.pull(&mut mixed);
                converted.clear();
                resampler.process(&mixed, &mut converted);
                carry.extend(converted.iter().copied());
            }
            for frame in out.chunks_mut(channels) {
                let s = carry.pop_front().unwrap_or(0.0);
                for o in frame {
                    *o = T::from_sample(s);
                }
            }
        },
        errors,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tone::estimate_frequency;
    use crate::SineTone;

    #[test]
    fn downsampling_filters_what_the_target_rate_cannot_carry() {
        // A 10 kHz tone into 16 kHz audio (which carries up to 8 kHz): it
        // must vanish, not fold back to 6 kHz.
        let mut tone = SineTone::new(10_000.0, 48_000);
        let input: Vec<f32> = tone
            .frame(48_000, 0)
            .samples
            .iter()
            .map(|s| f32::from(*s) / 32768.0)
            .collect();
        let rms = |x: &[f32]| (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt();
        let mut r = Resampler::new(48_000, 16_000);
        let mut out = Vec::new();
        for chunk in input.chunks(480) {
            r.process(chunk, &mut out);
        }
        assert!(out.len() > 15_000, "{}", out.len());
        // Past the filter's start-up.
        let ratio = rms(&out[1_000..]) / rms(&input);
        assert!(
            ratio < 0.01,
            "aliased energy: {:.1} dB",
            20.0 * ratio.log10()
        );
    }

    #[test]
    fn resampling_keeps_the_pitch() {
        let mut tone = SineTone::new(440.0, 44_100);
        let frame = tone.frame(44_100, 0);
        let input: Vec<f32> = frame
            .samples
            .iter()
            .map(|s| f32::from(*s) / 32768.0)
            .collect();
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for chunk in input.chunks(441) {
            r.process(chunk, &mut out);
        }
        // All of it but what waits for the next step (at most one step of
        // input, 128 frames at 44.1 kHz: 140 at 48 kHz).
        assert!((47_850..=48_000).contains(&out.len()), "{}", out.len());
        let pcm: Vec<i16> = out.iter().map(|s| (s * 32767.0) as i16).collect();
        let f = estimate_frequency(&pcm, 48_000).unwrap();
        assert!((f - 440.0).abs() < 3.0, "{f}");
    }

    #[test]
    fn chunker_makes_20ms_mono_frames_from_stereo_44k() {
        let mut frames = Vec::new();
        let mut c = Chunker::new(44_100, 2, |f: AudioFrame| frames.push(f));
        // 100 ms of stereo at 44.1 kHz, in odd-sized buffers.
        let data = vec![0.25f32; 4410 * 2];
        let before = crate::unix_micros();
        for b in data.chunks(734) {
            // Each buffer's first sample was captured 50 ms ago.
            c.push(b, Duration::from_millis(50));
        }
        drop(c);
        // 100 ms is 5 frames; the converter may hold back a sample.
        assert!((4..=5).contains(&frames.len()), "{}", frames.len());
        assert!(frames
            .iter()
            .all(|f| f.samples.len() == OPUS_FRAME_SAMPLES && f.channels == 1));
        assert!(frames[1].samples.iter().all(|s| (*s - 8191).abs() <= 1));
        // Stamped with when they were captured, not when they were handed over.
        let after = crate::unix_micros();
        for f in &frames {
            assert!(
                f.captured_us + 30_000 < after,
                "{} vs {after}",
                f.captured_us
            );
            assert!(
                f.captured_us + 80_000 > before,
                "{} vs {before}",
                f.captured_us
            );
        }
    }

    #[test]
    fn mixer_sums_sources_and_bounds_queues() {
        let m = Mixer::new();
        let frame = |v: i16| AudioFrame {
            sample_rate: 48_000,
            channels: 2,
            samples: vec![v; 1920],
            captured_us: 0,
        };
        m.push(1, &frame(8192));
        m.push(2, &frame(4096));
        let mut out = vec![0.0; 960];
        m.pull(&mut out);
        assert!(out.iter().all(|s| (s - 0.375).abs() < 1e-4));
        m.pull(&mut out);
        assert!(out.iter().all(|s| *s == 0.0), "drained");
        for _ in 0..100 {
            m.push(1, &frame(8192));
        }
        let mut all = vec![0.0; 48_000];
        m.pull(&mut all);
        assert_eq!(all.iter().filter(|s| **s != 0.0).count(), MIX_QUEUE_MAX);
        m.remove(1);
    }

    /// What the mixer plays is kept (the last second of it) for echo
    /// cancellation to take.
    #[test]
    fn what_is_played_can_be_taken_once() {
        let m = Mixer::new();
        m.push(
            1,
            &AudioFrame {
                sample_rate: OPUS_SAMPLE_RATE,
                channels: 1,
                samples: vec![16384; 480],
                captured_us: 0,
            },
        );
        let mut out = vec![0.0f32; 960];
        m.pull(&mut out);
        let mut played = Vec::new();
        m.take_played(&mut played);
        assert_eq!(played, out);
        assert!((played[0] - 0.5).abs() < 1e-3 && played[900] == 0.0);
        played.clear();
        m.take_played(&mut played);
        assert!(played.is_empty(), "taken once");
        for _ in 0..60 {
            m.pull(&mut out);
        }
        m.take_played(&mut played);
        assert_eq!(played.len(), PLAYED_MAX, "bounded");
    }
}
