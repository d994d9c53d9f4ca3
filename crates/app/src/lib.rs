//! kaigi-app: the desktop app without its window. The Tauri shell
//! (`src-tauri`) only registers these commands and forwards
//! [`UiEvent`]s; everything here is tested without a web view.
//!
//! - [`App`]: the managed state (the `Client`, the local stream, the
//!   embedded server) and the commands the UI calls.
//! - [`UiEvent`]: what the UI is told (`client-left`, `client-banned`, …),
//!   through an injected emitter.
//! - [`AppError`]: the one error type that crosses IPC, as `{code, message}`.
//! - [`FrameServer`]: decoded video to the web view over a loopback
//!   WebSocket with a per-launch token, newest frame wins.

#![forbid(unsafe_code)]

pub mod app;
mod call;
pub mod embedded;
pub mod error;
pub mod events;
pub mod frames;
mod host;
#[cfg(feature = "ipc-transports")]
pub mod ipc_views;
mod media;
pub mod share;

pub use app::App;
pub use call::{InviteInfo, JoinForm, Joined};
pub use embedded::EmbeddedServer;
pub use error::{AppError, AppErrorCode};
pub use events::{Emitter, UiEvent};
pub use frames::FrameServer;
pub use media::{AudioSettings, Devices, Preview, TEST_PATTERN, TONE};
