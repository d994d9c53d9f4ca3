//! What the [`crate::Client`] and its session task share, and the orders
//! the client gives the task.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use kaigi_proto::UserId;
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::machine::{Request, Status};
use crate::options::ClientOptions;

/// The streams received from the other users, by user.
pub(crate) type Remotes = Arc<Mutex<HashMap<UserId, crate::media::RemoteStream>>>;

/// Where a command's result goes.
pub(crate) type Reply = oneshot::Sender<Result<(), ClientError>>;

/// What the client and its session task share.
pub(crate) struct Shared {
    pub opts: ClientOptions,
    pub url: String,
    pub status: Mutex<Status>,
    pub listeners: Mutex<Vec<mpsc::UnboundedSender<ClientEvent>>>,
    /// Streams received from the other users.
    pub remotes: Remotes,
    /// The stream this client publishes, for its own volume.
    pub local: Mutex<Option<crate::media::LocalStream>>,
    /// The speaker's mixer, while remote audio is played.
    pub audio_out: crate::media::AudioOut,
}

impl Shared {
    /// Sends `event` to every open event stream.
    pub fn emit(&self, event: ClientEvent) {
        self.listeners
            .lock()
            .retain(|l| l.send(event.clone()).is_ok());
    }

    /// The status, locked.
    pub fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock()
    }

    /// Moves to `state` outside a session (while joining), emitting
    /// `connection-state-changed` if it changed.
    pub fn set_state(&self, state: crate::events::ConnectionState) {
        let changed = self.status().transition(state);
        if let Some(event) = changed {
            self.emit(event);
        }
    }
}

/// An order from the client to its session task.
pub(crate) enum Order {
    Leave(Reply),
    Publish(crate::media::LocalStream, Reply),
    Unpublish(Reply),
    /// A request answered by one reply from the server.
    Request(Request, Reply),
}
