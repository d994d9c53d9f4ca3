//! kaigi-sdk: a [`Client`] enters and leaves Kaigi rooms, reports what
//! happens as typed [`ClientEvent`]s, reconnects by itself when the
//! signaling connection drops, and never after `leave()` or a forced exit.
//!
//! ```no_run
//! # async fn run() -> Result<(), kaigi_sdk::ClientError> {
//! use kaigi_sdk::{Client, ClientEvent, ClientOptions};
//! use kaigi_proto::{Role, RoomId, SdkAppId, UserId};
//!
//! let client = Client::new(ClientOptions::new(
//!     "ws://127.0.0.1:7880",
//!     SdkAppId(1400000000),
//!     UserId::new("alice").unwrap(),
//!     "<UserSig>",
//! ))?;
//! let mut events = client.events();
//! client.join(RoomId::num(1234).unwrap(), Role::Anchor).await?;
//! while let Some(event) = events.recv().await {
//!     if let ClientEvent::ClientBanned { reason, message } = event {
//!         println!("forced out ({reason}): {message}");
//!         break;
//!     }
//! }
//! client.leave().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod client;
mod error;
mod events;
mod follow;
mod machine;
mod media;
mod options;
mod session;
mod shared;

pub use client::{Client, JoinInfo, SubscribeOptions};
pub use error::ClientError;
pub use events::{
    AudioVolumeEntry, ClientEvent, ConnectionState, DeviceRef, DeviceType, EventStream,
};
pub use kaigi_media::{AudioProcessing, DeviceError, DeviceInfo, DeviceKind};
pub use kaigi_proto::signal::{PeerInfo, PeerLeaveReason, StreamType};
pub use kaigi_proto::{KickReason, Role, RoomId, SdkAppId, UserId};
pub use media::{
    AudioInput, AudioStats, LocalStream, LocalStreamConfig, RemoteStream, SyntheticSource,
    VideoInput,
};
pub use options::{ClientOptions, ReconnectPolicy};

pub mod devices;
pub mod invite;
