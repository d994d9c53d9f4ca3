//! Local and remote streams, and the client's side of the one peer
//! connection to the server (which always makes the offers).

mod adapt;
mod frames;
mod jitter;
mod local;
mod peer;
mod remote;

pub use jitter::AudioStats;
pub use local::{AudioInput, LocalStream, LocalStreamConfig, SyntheticSource, VideoInput};
pub(crate) use peer::{Arrived, MediaSession};
pub(crate) use remote::AudioOut;
pub use remote::RemoteStream;
