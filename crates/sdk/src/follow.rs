//! Devices that come and go during a call. A camera or microphone that
//! stops working is replaced by the default one of its kind (the first
//! listed that opens); with none, its source stays silent (or black) and
//! the next one plugged in is taken. The speaker likewise. Each step is
//! told as events: `error` (`DEVICE_LOST`) when it stops, `device-changed`
//! (`active`) when another takes over, and `device-changed` (`add` /
//! `remove`) as devices are plugged in and out.

use std::sync::{Arc, Weak};

use kaigi_media::{DeviceError, DeviceInfo, DeviceKind, Mixer, Speaker};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::devices::{self, DeviceAction};
use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::media::{AudioInput, LocalStream, VideoInput};
use crate::shared::Shared;

/// Reports devices plugged in and out as `device-changed` events while the
/// client lives.
pub(crate) fn watch_devices(shared: Weak<Shared>) -> JoinHandle<()> {
    let mut changes = devices::changes();
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            shared.emit(ClientEvent::device_changed(change.action, &change.device));
        }
    })
}

/// Opens the first device of `kind` other than `lost` that `open` accepts
/// (on a blocking thread: opening a device waits for it).
async fn take_over(
    kind: DeviceKind,
    lost: Option<String>,
    open: impl Fn(&str) -> Result<(), ClientError> + Send + 'static,
) -> Option<DeviceInfo> {
    tokio::task::spawn_blocking(move || {
        kaigi_media::devices::list(kind)
            .into_iter()
            .filter(|d| Some(&d.id) != lost.as_ref())
            .find(|d| match open(&d.id) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(%kind, id = %d.id, error = %e, "cannot take over");
                    false
                }
            })
    })
    .await
    .ok()
    .flatten()
}

/// Switches `stream`'s source of `kind` to device `id`.
fn switch(stream: &LocalStream, kind: DeviceKind, id: &str) -> Result<(), ClientError> {
    match kind {
        DeviceKind::Camera => stream.switch_camera(Some(id)),
        DeviceKind::Microphone => stream.switch_microphone(Some(id)),
        DeviceKind::Speaker => Err(ClientError::InvalidOptions(
            "a stream has no speaker".into(),
        )),
    }
}

/// Whether `stream` captures `kind` from a device.
fn from_device(stream: &LocalStream, kind: DeviceKind) -> bool {
    match kind {
        DeviceKind::Camera => matches!(stream.config().video, VideoInput::Camera { .. }),
        DeviceKind::Microphone => matches!(stream.config().audio, AudioInput::Microphone { .. }),
        DeviceKind::Speaker => false,
    }
}

/// Follows the published `stream`'s devices until it closes: reports a
/// failure, moves the source to another device, and takes a device plugged
/// in while a source has none.
pub(crate) fn follow_stream(shared: Weak<Shared>, stream: LocalStream) -> JoinHandle<()> {
    let mut errors = stream.device_errors();
    // Only a stream of devices watches them (listing opens every device).
    let uses_devices =
        from_device(&stream, DeviceKind::Camera) || from_device(&stream, DeviceKind::Microphone);
    let (never, mut plugged) = if uses_devices {
        (None, devices::changes())
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), rx)
    };
    let closed = stream.closed_token();
    tokio::spawn(async move {
        // Kept so that `plugged` stays open (and silent) without devices.
        let _never = never;
        // Sources whose device stopped and that no other device took over.
        let mut without: Vec<DeviceKind> = Vec::new();
        loop {
            let (kind, lost) = tokio::select! {
                _ = closed.cancelled() => break,
                e = errors.recv() => {
                    let Some(e) = e else { break };
                    let Some(shared) = shared.upgrade() else { break };
                    shared.emit(ClientEvent::error(&ClientError::Device(e.clone())));
                    let DeviceError::Lost { kind, id, .. } = e else { continue };
                    (kind, Some(id))
                }
                c = plugged.recv() => {
                    let Some(c) = c else { break };
                    if c.action != DeviceAction::Add || !without.contains(&c.device.kind) {
                        continue;
                    }
                    (c.device.kind, None)
                }
            };
            if !from_device(&stream, kind) || stream.is_closed() {
                continue;
            }
            let s = stream.clone();
            match take_over(kind, lost, move |id| switch(&s, kind, id)).await {
                Some(device) => {
                    without.retain(|k| *k != kind);
                    tracing::info!(%kind, id = %device.id, "took over");
                    if let Some(shared) = shared.upgrade() {
                        shared.emit(ClientEvent::device_changed(DeviceAction::Active, &device));
                    }
                }
                None => {
                    if !without.contains(&kind) {
                        tracing::warn!(%kind, "no device to take over; the source is silent until one is plugged in");
                        without.push(kind);
                    }
                }
            }
        }
    })
}

/// The speaker remote audio plays on, and what follows it.
pub(crate) struct SpeakerSlot {
    speaker: Arc<Mutex<Option<Speaker>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SpeakerSlot {
    pub(crate) fn new() -> Self {
        SpeakerSlot {
            speaker: Arc::new(Mutex::new(None)),
            task: Mutex::new(None),
        }
    }

    /// Plays `mixer` on speaker `id` (or the first one); a speaker that
    /// stops working is reported and replaced as a stream's devices are.
    pub(crate) fn open(
        &self,
        id: Option<&str>,
        mixer: Mixer,
        shared: Weak<Shared>,
    ) -> Result<(), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let report = tx.clone();
        let speaker = Speaker::open(id, mixer.clone(), move |e| {
            let _ = report.send(e);
        })?;
        self.close();
        *self.speaker.lock() = Some(speaker);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let slot = Arc::downgrade(&self.speaker);
            *self.task.lock() = Some(rt.spawn(follow_speaker(shared, slot, mixer, tx, rx)));
        }
        Ok(())
    }

    /// Releases the speaker.
    pub(crate) fn close(&self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
        drop(self.speaker.lock().take());
    }

    /// The speaker's name, while one plays.
    pub(crate) fn name(&self) -> Option<String> {
        self.speaker.lock().as_ref().map(|s| s.name().to_owned())
    }
}

impl Drop for SpeakerSlot {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reports the speaker's failures and replaces it as [`follow_stream`]
/// does a stream's devices.
async fn follow_speaker(
    shared: Weak<Shared>,
    slot: Weak<Mutex<Option<Speaker>>>,
    mixer: Mixer,
    tx: mpsc::UnboundedSender<DeviceError>,
    mut errors: mpsc::UnboundedReceiver<DeviceError>,
) {
    let mut plugged = devices::changes();
    let mut without = false;
    loop {
        let lost = tokio::select! {
            e = errors.recv() => {
                let Some(e) = e else { break };
                let Some(shared) = shared.upgrade() else { break };
                shared.emit(ClientEvent::error(&ClientError::Device(e.clone())));
                let DeviceError::Lost { id, .. } = e else { continue };
                // The dead one goes; another takes its place below.
                if let Some(slot) = slot.upgrade() {
                    drop(slot.lock().take());
                }
                Some(id)
            }
            c = plugged.recv() => {
                let Some(c) = c else { break };
                if !without || c.action != DeviceAction::Add || c.device.kind != DeviceKind::Speaker {
                    continue;
                }
                None
            }
        };
        let (slot2, mixer2, tx2) = (slot.clone(), mixer.clone(), tx.clone());
        let open = move |id: &str| {
            let report = tx2.clone();
            let speaker = Speaker::open(Some(id), mixer2.clone(), move |e| {
                let _ = report.send(e);
            })?;
            match slot2.upgrade() {
                Some(slot) => {
                    *slot.lock() = Some(speaker);
                    Ok(())
                }
                None => Err(ClientError::InvalidOptions("the client is gone".into())),
            }
        };
        match take_over(DeviceKind::Speaker, lost, open).await {
            Some(device) => {
                without = false;
                tracing::info!(id = %device.id, "speaker took over");
                if let Some(shared) = shared.upgrade() {
                    shared.emit(ClientEvent::device_changed(DeviceAction::Active, &device));
                }
            }
            None => {
                if !without {
                    tracing::warn!("no speaker to take over; remote audio is not played until one is plugged in");
                }
                without = true;
            }
        }
    }
}
