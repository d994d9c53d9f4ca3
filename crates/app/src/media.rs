//! The app's local media: the device pickers, the preview, and switching
//! camera, microphone and speaker (also mid-call).

use std::sync::Arc;

use kaigi_proto::UserId;
use kaigi_sdk::{
    devices, AudioInput, AudioProcessing, Client, LocalStream, LocalStreamConfig, VideoInput,
};
use serde::{Deserialize, Serialize};

use crate::app::{App, State};
use crate::error::{AppError, AppErrorCode};
use crate::events::{AppEvent, Emitter, UiEvent};
use crate::frames::FrameServer;

/// The camera entry that is a moving test pattern (for machines without a
/// camera, demos and tests).
pub const TEST_PATTERN: &str = "test-pattern";
/// The microphone entry that is a tone.
pub const TONE: &str = "tone";

/// A device the UI can pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// What to pass back.
    pub id: String,
    /// What to show.
    pub label: String,
}

/// Everything the device pickers show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Devices {
    /// Cameras, then the test pattern.
    pub cameras: Vec<Device>,
    /// Microphones, then the tone.
    pub microphones: Vec<Device>,
    /// Speakers.
    pub speakers: Vec<Device>,
}

/// What `start_preview` opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Video (shown on the `local` tile).
    pub video: bool,
    /// Audio.
    pub audio: bool,
}

/// The microphone's processing as the settings show it: each part on or
/// off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioSettings {
    /// Echo cancellation.
    pub echo_cancellation: bool,
    /// Noise suppression.
    pub noise_suppression: bool,
    /// Automatic gain control.
    pub auto_gain: bool,
}

impl From<AudioSettings> for AudioProcessing {
    fn from(s: AudioSettings) -> Self {
        AudioProcessing {
            echo_cancellation: s.echo_cancellation,
            noise_suppression: s.noise_suppression,
            auto_gain: s.auto_gain,
        }
    }
}

impl From<AudioProcessing> for AudioSettings {
    fn from(p: AudioProcessing) -> Self {
        AudioSettings {
            echo_cancellation: p.echo_cancellation,
            noise_suppression: p.noise_suppression,
            auto_gain: p.auto_gain,
        }
    }
}

pub(crate) fn local_config(
    camera: Option<&str>,
    microphone: Option<&str>,
    audio_processing: AudioProcessing,
) -> LocalStreamConfig {
    LocalStreamConfig {
        video: match camera {
            None => VideoInput::None,
            Some(TEST_PATTERN) => VideoInput::TestPattern {
                width: 640,
                height: 360,
            },
            Some(id) => VideoInput::Camera {
                id: Some(id.to_owned()),
                width: 640,
                height: 360,
            },
        },
        audio: match microphone {
            None => AudioInput::None,
            Some(TONE) => AudioInput::Tone { hz: 440.0 },
            Some(id) => AudioInput::Microphone {
                id: Some(id.to_owned()),
            },
        },
        fps: 30,
        video_bitrate_bps: 800_000,
        simulcast: true,
        // What the settings say (all on by default) for a microphone; the
        // tone gets none.
        audio_processing,
    }
}

fn camera_of(local: &LocalStream) -> Option<String> {
    match &local.config().video {
        // The app's own stream has no screen (screens share as `sub`).
        VideoInput::None | VideoInput::Screen { .. } => None,
        VideoInput::TestPattern { .. } => Some(TEST_PATTERN.into()),
        VideoInput::Camera { .. } => local.camera_id(),
    }
}

pub(crate) fn microphone_of(local: &LocalStream) -> Option<String> {
    match &local.config().audio {
        AudioInput::None => None,
        AudioInput::Tone { .. } => Some(TONE.into()),
        AudioInput::Microphone { .. } => local.microphone_id(),
    }
}

pub(crate) fn local_user(client: &Option<Arc<Client>>, _local: &LocalStream) -> String {
    client
        .as_ref()
        .map(|c| c.user_id().to_string())
        .unwrap_or_else(|| "me".into())
}

/// How often the level meter is fed.
const METER_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Sends `local`'s microphone level (after processing) to the UI's meter
/// until the stream closes.
fn meter(local: LocalStream, emit: Emitter) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METER_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if local.is_closed() {
                break;
            }
            emit(UiEvent::App(AppEvent::LocalAudioLevel {
                level: local.audio_level(),
            }));
        }
    });
}

pub(crate) fn close_local(state: &mut State, frames: &FrameServer, emit: &Emitter) {
    if let Some(local) = state.local.take() {
        local.close();
        frames.remove_source(crate::frames::LOCAL_TILE);
        emit(UiEvent::App(AppEvent::LocalStreamClosed {}));
    }
}

impl App {
    /// Cameras, microphones and speakers, with the synthetic sources last.
    pub fn list_devices(&self) -> Devices {
        let conv = |d: Vec<kaigi_sdk::DeviceInfo>| {
            d.into_iter()
                .map(|d| Device {
                    id: d.id,
                    label: d.label,
                })
                .collect::<Vec<_>>()
        };
        let mut cameras = conv(devices::cameras());
        cameras.push(Device {
            id: TEST_PATTERN.into(),
            label: "Test pattern".into(),
        });
        let mut microphones = conv(devices::microphones());
        microphones.push(Device {
            id: TONE.into(),
            label: "Tone (440 Hz)".into(),
        });
        Devices {
            cameras,
            microphones,
            speakers: conv(devices::speakers()),
        }
    }

    /// Opens the camera and microphone (replacing an earlier preview) and
    /// shows the video on the `local` tile. `user` names the stream others
    /// will see if it is published.
    pub async fn start_preview(
        &self,
        user: &str,
        camera: Option<&str>,
        microphone: Option<&str>,
    ) -> Result<Preview, AppError> {
        let user = UserId::new(user).map_err(|e| AppError::invalid(e.to_string()))?;
        let mut state = self.state.lock().await;
        if let Some(old) = state.local.take() {
            old.close();
        }
        self.frames.remove_source(crate::frames::LOCAL_TILE);
        if camera.is_none() && microphone.is_none() {
            return Ok(Preview {
                video: false,
                audio: false,
            });
        }
        let stream = LocalStream::new(
            &user,
            local_config(camera, microphone, state.audio_processing),
        )?;
        if stream.has_video() {
            self.frames
                .set_source(crate::frames::LOCAL_TILE, stream.video());
        }
        if stream.has_audio() {
            meter(stream.clone(), self.emit.clone());
        }
        let preview = Preview {
            video: stream.has_video(),
            audio: stream.has_audio(),
        };
        state.local = Some(stream);
        Ok(preview)
    }

    /// Closes the preview: devices released.
    pub async fn stop_preview(&self) {
        let mut state = self.state.lock().await;
        close_local(&mut state, &self.frames, &self.emit);
    }

    /// Switches the camera live (between cameras), or reopens the stream
    /// with the new source (to or from the test pattern) and republishes.
    pub async fn set_camera(&self, id: &str) -> Result<(), AppError> {
        self.switch(Some(id), None).await
    }

    /// Switches the microphone; see [`App::set_camera`].
    pub async fn set_microphone(&self, id: &str) -> Result<(), AppError> {
        self.switch(None, Some(id)).await
    }

    pub(crate) async fn switch(
        &self,
        camera: Option<&str>,
        microphone: Option<&str>,
    ) -> Result<(), AppError> {
        let (local, client) = {
            let state = self.state.lock().await;
            let local = state.local.clone().ok_or_else(|| {
                AppError::new(
                    AppErrorCode::NoLocalStream,
                    "no camera or microphone is open",
                )
            })?;
            (local, state.client.clone())
        };
        let live = match (
            camera,
            microphone,
            &local.config().video,
            &local.config().audio,
        ) {
            (Some(c), None, VideoInput::Camera { .. }, _) if c != TEST_PATTERN => {
                Some(local.switch_camera(Some(c)))
            }
            (None, Some(m), _, AudioInput::Microphone { .. }) if m != TONE => {
                Some(local.switch_microphone(Some(m)))
            }
            _ => None,
        };
        if let Some(result) = live {
            return result.map_err(AppError::from);
        }
        // Another kind of source: a new stream, published in place of the old.
        let keep_camera = camera_of(&local);
        let keep_mic = microphone_of(&local);
        let user = local_user(&client, &local);
        let cam = camera.map(str::to_owned).or(keep_camera);
        let mic = microphone.map(str::to_owned).or(keep_mic);
        if let Some(c) = &client {
            c.unpublish().await?;
        }
        self.start_preview(&user, cam.as_deref(), mic.as_deref())
            .await?;
        if let Some(c) = &client {
            let state = self.state.lock().await;
            if let Some(l) = &state.local {
                c.publish(l).await?;
            }
        }
        Ok(())
    }

    /// Switches parts of the microphone's processing on or off: at once on
    /// the open microphone, and for every one opened later.
    pub async fn set_audio_processing(&self, settings: AudioSettings) {
        let mut state = self.state.lock().await;
        state.audio_processing = settings.into();
        if let Some(local) = &state.local {
            local.set_audio_processing(settings.into());
        }
    }

    /// The microphone's processing: what the open stream does, else what
    /// the next one will.
    pub async fn audio_processing(&self) -> AudioSettings {
        let state = self.state.lock().await;
        match &state.local {
            Some(local) => local.audio_processing().into(),
            None => state.audio_processing.into(),
        }
    }

    /// Plays the others on speaker `id`.
    pub async fn set_speaker(&self, id: &str) -> Result<(), AppError> {
        let state = self.state.lock().await;
        let client = state
            .client
            .as_ref()
            .ok_or_else(|| AppError::new(AppErrorCode::NotInRoom, "join a room first"))?;
        client.set_audio_output(Some(id)).map_err(AppError::from)
    }
}
