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

/// The devices this process has open now (a kind and an id per opening).
static OPEN: parking_lot::Mutex<Vec<(DeviceKind, String)>> = parking_lot::Mutex::new(Vec::new());

/// One opening of a device, counted in [`OPEN`] while it lives.
struct InUse(DeviceKind, String);

impl InUse {
    fn new(kind: DeviceKind, id: &str) -> Self {
        OPEN.lock().push((kind, id.to_owned()));
        InUse(kind, id.to_owned())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut open = OPEN.lock();
        if let Some(at) = open.iter().position(|(k, i)| *k == self.0 && *i == self.1) {
            open.swap_remove(at);
        }
    }
}

/// Whether this process has the device open now. A device in use may be
/// missing from [`list`] (listing opens each device, and a busy one
/// refuses), so a watcher counts an open device as present.
pub fn is_open(kind: DeviceKind, id: &str) -> bool {
    OPEN.lock().iter().any(|(k, i)| *k == kind && i == id)
}

/// Devices this process lost while using them (a sign that the lists
/// changed, even where nothing in `/dev` did).
static LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a device lost while in use (for [`fingerprint`]).
pub(crate) fn note_lost() {
    LOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A cheap summary of where devices come from: the sound cards' and video
/// devices' nodes in `/dev` and the sound servers' sockets. It changes
/// when a device is plugged or unplugged or a sound server starts or
/// stops, and when a device in use is lost; listing the devices
/// themselves (which opens each) is only worth doing then. Reads
/// directories; opens nothing.
pub fn fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    LOST.load(std::sync::atomic::Ordering::Relaxed).hash(&mut h);
    let names = |dir: &str, keep: &dyn Fn(&str) -> bool| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| keep(n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    names("/dev/snd", &|_| true).hash(&mut h);
    names("/dev", &|n| n.starts_with("video")).hash(&mut h);
    let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_default();
    let mut sockets = vec![
        format!("{runtime}/pulse/native"),
        format!("{runtime}/pipewire-0"),
    ];
    if let Ok(server) = std::env::var("PULSE_SERVER") {
        sockets.push(server.trim_start_matches("unix:").to_owned());
    }
    for path in sockets {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path)
            .ok()
            .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
            .hash(&mut h);
    }
    h.finish()
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
    let in_use = InUse::new(kind, id);
    let thread = std::thread::Builder::new()
        .name(format!("kaigi-{kind}"))
        .spawn(move || {
            let _in_use = in_use;
            body(ready_tx)
        })
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
