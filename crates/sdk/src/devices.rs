//! The cameras, microphones and speakers of this machine (empty lists on a
//! machine without them), and what happens to them: [`changes`] reports
//! devices plugged in and unplugged while the program runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kaigi_media::devices::{fingerprint, is_open, list};
pub use kaigi_media::{DeviceInfo, DeviceKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Cameras.
pub fn cameras() -> Vec<DeviceInfo> {
    list(DeviceKind::Camera)
}

/// Microphones.
pub fn microphones() -> Vec<DeviceInfo> {
    list(DeviceKind::Microphone)
}

/// Speakers.
pub fn speakers() -> Vec<DeviceInfo> {
    list(DeviceKind::Speaker)
}

/// Every device of every kind.
fn all() -> Vec<DeviceInfo> {
    let mut v = cameras();
    v.extend(microphones());
    v.extend(speakers());
    v
}

/// What happened to a device (TRTC v5's `DEVICE_CHANGED` actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceAction {
    /// It was plugged in (or its sound server started).
    Add,
    /// It was unplugged (or stopped working).
    Remove,
    /// A stream now uses it in place of one that stopped working.
    Active,
}

/// A device and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// What happened.
    pub action: DeviceAction,
    /// To which device.
    pub device: DeviceInfo,
}

/// How often the watcher looks whether devices may have changed (reading
/// `/dev` and the sound servers' sockets; no device is opened).
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// After a sign of change the devices are listed this many more times: a
/// device's stream may still hold it open at the first look.
const LIST_AFTER_CHANGE: u32 = 4;

static LISTENERS: Mutex<Vec<mpsc::UnboundedSender<DeviceChange>>> = Mutex::new(Vec::new());
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Devices plugged in and unplugged from now on. A thread of its own
/// watches while anyone listens: it looks every 500 ms whether the
/// machine's device nodes or sound servers changed, and only then lists
/// the devices (listing opens each). A device this process has open counts
/// as present until it is closed or reported lost.
pub fn changes() -> mpsc::UnboundedReceiver<DeviceChange> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut listeners = LISTENERS.lock();
    listeners.retain(|l| !l.is_closed());
    listeners.push(tx);
    if !WATCHING.swap(true, Ordering::SeqCst) {
        let spawned = std::thread::Builder::new()
            .name("kaigi-device-watch".into())
            .spawn(watch);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch devices");
            WATCHING.store(false, Ordering::SeqCst);
        }
    }
    rx
}

/// The watcher's loop; ends when nobody listens any more.
fn watch() {
    let mut known = all();
    let mut seen = fingerprint();
    let mut list_again = 0;
    loop {
        std::thread::sleep(LOOK_EVERY);
        {
            let mut listeners = LISTENERS.lock();
            listeners.retain(|l| !l.is_closed());
            if listeners.is_empty() {
                WATCHING.store(false, Ordering::SeqCst);
                return;
            }
        }
        let now = fingerprint();
        if now != seen {
            seen = now;
            list_again = LIST_AFTER_CHANGE;
        }
        if list_again == 0 {
            continue;
        }
        list_again -= 1;
        let (found, next) = diff(&known, all(), |d| is_open(d.kind, &d.id));
        known = next;
        let listeners = LISTENERS.lock();
        for change in &found {
            tracing::info!(action = ?change.action, kind = %change.device.kind, id = %change.device.id, "device changed");
            for l in listeners.iter() {
                let _ = l.send(change.clone());
            }
        }
    }
}

/// What changed from `before` to `after`: devices added, and devices
/// removed unless `open` says this process still holds them. Returns the
/// changes and the devices to compare with next time (`after` and the
/// open ones missing from it).
fn diff(
    before: &[DeviceInfo],
    mut after: Vec<DeviceInfo>,
    open: impl Fn(&DeviceInfo) -> bool,
) -> (Vec<DeviceChange>, Vec<DeviceInfo>) {
    let same = |a: &DeviceInfo, b: &DeviceInfo| a.kind == b.kind && a.id == b.id;
    let mut out: Vec<DeviceChange> = after
        .iter()
        .filter(|d| !before.iter().any(|b| same(b, d)))
        .map(|d| DeviceChange {
            action: DeviceAction::Add,
            device: d.clone(),
        })
        .collect();
    let mut kept = Vec::new();
    for b in before.iter().filter(|b| !after.iter().any(|d| same(b, d))) {
        if open(b) {
            kept.push(b.clone());
        } else {
            out.push(DeviceChange {
                action: DeviceAction::Remove,
                device: b.clone(),
            });
        }
    }
    after.extend(kept);
    (out, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mic(id: &str) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Microphone,
            id: id.into(),
            label: id.into(),
        }
    }

    #[test]
    fn plugged_and_unplugged_devices_are_told_apart() {
        let (changes, next) = diff(&[mic("a"), mic("b")], vec![mic("b"), mic("c")], |_| false);
        assert_eq!(
            changes,
            vec![
                DeviceChange {
                    action: DeviceAction::Add,
                    device: mic("c")
                },
                DeviceChange {
                    action: DeviceAction::Remove,
                    device: mic("a")
                },
            ]
        );
        assert_eq!(next, vec![mic("b"), mic("c")]);
    }

    #[test]
    fn a_device_in_use_missing_from_the_list_is_removed_only_once_closed() {
        let (changes, next) = diff(&[mic("a")], vec![], |d| d.id == "a");
        assert!(changes.is_empty());
        assert_eq!(next, vec![mic("a")]);
        // Still missing, and now closed (lost): removed.
        let (changes, next) = diff(&next, vec![], |_| false);
        assert_eq!(
            changes,
            vec![DeviceChange {
                action: DeviceAction::Remove,
                device: mic("a")
            }]
        );
        assert!(next.is_empty());
    }
}
