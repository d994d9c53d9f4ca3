//! Device lists and device errors. A machine without cameras, microphones
//! or speakers has empty lists, not errors.

use cpal::traits::{DeviceTrait, HostTrait};

/// What a device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Captures video.
    Camera,
    /// Captures audio.
    Microphone,
    /// Plays audio.
    Speaker,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Camera => "camera",
            DeviceKind::Microphone => "microphone",
            DeviceKind::Speaker => "speaker",
        })
    }
}

/// A device that can be opened by its `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What it is.
    pub kind: DeviceKind,
    /// What to open it by.
    pub id: String,
    /// A name for people.
    pub label: String,
}

/// Why a device could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No device of that kind has that id.
    #[error("there is no {kind} \"{id}\"")]
    NotFound {
        /// The kind.
        kind: DeviceKind,
        /// The id asked for.
        id: String,
    },
    /// The machine has no device of that kind.
    #[error("this machine has no {0}")]
    NoDevice(DeviceKind),
    /// The device exists but could not be opened (busy, unsupported).
    #[error("the {kind} \"{id}\" could not be opened: {message}")]
    Open {
        /// The kind.
        kind: DeviceKind,
        /// The device.
        id: String,
        /// What failed.
        message: String,
    },
    /// The device stopped working while in use (unplugged).
    #[error("the {kind} \"{id}\" stopped working: {message}")]
    Lost {
        /// The kind.
        kind: DeviceKind,
        /// The device.
        id: String,
        /// What failed.
        message: String,
    },
}

/// The devices of a kind this machine has now.
pub fn list(kind: DeviceKind) -> Vec<DeviceInfo> {
    match kind {
        DeviceKind::Camera => nokhwa::query(nokhwa::utils::ApiBackend::Auto)
            .unwrap_or_default()
            .into_iter()
            .map(|c| DeviceInfo {
                kind,
                id: c.index().to_string(),
                label: c.human_name(),
            })
            .collect(),
        DeviceKind::Microphone | DeviceKind::Speaker => {
            let host = cpal::default_host();
            let devices = if kind == DeviceKind::Microphone {
                host.input_devices().map(|d| d.collect::<Vec<_>>())
            } else {
                host.output_devices().map(|d| d.collect::<Vec<_>>())
            };
            devices
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| d.name().ok())
                .map(|name| DeviceInfo {
                    kind,
                    label: name.clone(),
                    id: name,
                })
                .collect()
        }
    }
}

/// Runs `body` on a thread of its own. `body` opens the device, says
/// through `ready` whether that worked, and then keeps it running while it
/// is in use. Returns once it has said: the thread, or the error (with the
/// thread joined).
pub(crate) fn spawn_device_thread(
    kind: DeviceKind,
    id: &str,
    body: impl FnOnce(std::sync::mpsc::Sender<Result<(), DeviceError>>) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DeviceError> {
    let failed = |message: String| DeviceError::Open {
        kind,
        id: id.to_owned(),
        message,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("kaigi-{kind}"))
        .spawn(move || body(ready_tx))
        .map_err(|e| failed(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(failed("the device thread ended".into()))
        }
    }
}
