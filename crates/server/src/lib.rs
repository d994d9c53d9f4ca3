//! kaigi-server: the room registry, WebSocket signaling and the TRTC-shaped
//! admin API, as a library (for embedding and tests) and a binary.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use kaigi_server::{config::{AppCredential, Config}, server};
//! let app: AppCredential = "1400000000:secret".parse().unwrap();
//! let handle = server::start(Config::new("127.0.0.1:0".parse().unwrap(), vec![app])).await?;
//! println!("signaling at {}", handle.ws_url());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod cloudapi;
pub mod cluster;
pub mod config;
pub mod invite_store;
pub mod invites;
pub mod listener;
pub mod metrics;
mod negotiation;
pub mod registry;
pub mod server;
pub mod sfu;
pub mod signaling;
pub mod simulcast;
pub mod state;
pub mod tls;
pub mod webhooks;

pub use config::{AppCredential, Config, RateLimit};
pub use server::{start, ServerHandle};
pub use signaling::{JOIN_DEADLINE, WRITE_DEADLINE};
