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
pub(crate) type Remotes =
    Arc<Mutex<HashMap<(UserId, kaigi_proto::signal::StreamType), crate::media::RemoteStream>>>;

/// Where a command's result goes.
pub(crate) type Reply = oneshot::Sender<Result<(), ClientError>>;

/// What the client and its session task share.
pub(crate) struct Shared {
    pub opts: ClientOptions,
    pub url: String,
    /// TLS for `wss://`: the public roots plus `ClientOptions::ca_file`.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
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

/// The TLS client configuration: Mozilla's public roots, plus the
/// certificate authorities in `ca_file` (PEM) if given.
pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad =
            |e: String| ClientError::InvalidOptions(format!("ca_file {}: {e}", path.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|c| c.collect::<Result<_, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidOptions(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// An order from the client to its session task.
pub(crate) enum Order {
    Leave(Reply),
    Publish(
        crate::media::LocalStream,
        kaigi_proto::signal::StreamType,
        Reply,
    ),
    Unpublish(kaigi_proto::signal::StreamType, Reply),
    /// A request answered by one reply from the server.
    Request(Request, Reply),
}
