//! Decoded video to the web view: a WebSocket on 127.0.0.1 with a token
//! made at launch, one connection per tile (`/frames/local`,
//! `/frames/<userId>`). Each binary message is one I420 frame followed by
//! a 16-byte trailer: width, height, frame number (u32 little-endian) and
//! the magic `KGF1`. Newest frame wins: a slow view skips frames, never
//! queues them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes_of::frame_message;
use kaigi_media::VideoFrame;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A stream's newest frame.
pub type FrameSource = watch::Receiver<Option<Arc<VideoFrame>>>;

/// The trailer's magic, after width, height and frame number.
pub const TRAILER_MAGIC: &[u8; 4] = b"KGF1";

mod bytes_of {
    use super::*;

    /// One frame as the view receives it.
    pub fn frame_message(frame: &VideoFrame, number: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(frame.data.len() + 16);
        m.extend_from_slice(&frame.data);
        m.extend_from_slice(&(frame.width as u32).to_le_bytes());
        m.extend_from_slice(&(frame.height as u32).to_le_bytes());
        m.extend_from_slice(&number.to_le_bytes());
        m.extend_from_slice(TRAILER_MAGIC);
        m
    }
}

/// The tiles and their sources; viewers wait for theirs to appear.
#[derive(Clone)]
pub struct SourceTable(Arc<watch::Sender<HashMap<String, FrameSource>>>);

impl SourceTable {
    /// Makes `tile` (`local`, or a user id) show `source`.
    pub fn set(&self, tile: &str, source: FrameSource) {
        self.0.send_modify(|s| {
            s.insert(tile.to_owned(), source);
        });
    }

    /// Ends `tile`: its viewers are closed.
    pub fn remove(&self, tile: &str) {
        self.0.send_modify(|s| {
            s.remove(tile);
        });
    }

    /// Ends every tile.
    pub fn clear(&self) {
        self.0.send_modify(HashMap::clear);
    }
}

struct Shared {
    token: String,
    sources: SourceTable,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
}

/// The frame server.
pub struct FrameServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

impl FrameServer {
    /// Starts it on a free port of 127.0.0.1 with a fresh token.
    pub async fn start() -> std::io::Result<Self> {
        let token: String = (0..32)
            .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
            .collect();
        let shared = Arc::new(Shared {
            token,
            sources: SourceTable(Arc::new(watch::Sender::new(HashMap::new()))),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/frames/{tile}", get(upgrade))
            .with_state(shared.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "frame server ended");
            }
        });
        Ok(FrameServer { addr, shared, stop })
    }

    /// `ws://127.0.0.1:PORT/frames`; a tile connects to `URL/<tile>?token=…`.
    pub fn url(&self) -> String {
        format!("ws://{}/frames", self.addr)
    }

    /// The per-launch token.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Makes `tile` (`local`, or a user id) show `source`.
    pub fn set_source(&self, tile: &str, source: FrameSource) {
        self.shared.sources.set(tile, source);
    }

    /// Ends `tile`: its viewers are closed.
    pub fn remove_source(&self, tile: &str) {
        self.shared.sources.remove(tile);
    }

    /// Ends every tile.
    pub fn clear(&self) {
        self.shared.sources.clear();
    }

    /// The tile table, for tasks that keep it in step with streams.
    pub fn shared_sources(&self) -> SourceTable {
        self.shared.sources.clone()
    }

    /// Frames and bytes sent to views so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.shared.frames_sent.load(Ordering::Relaxed),
            self.shared.bytes_sent.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FrameServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Path(tile): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if q.token != shared.token {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    ws.on_upgrade(move |socket| view(socket, shared, tile))
}

/// Sends `tile`'s frames to one view until the tile ends or the view goes.
async fn view(mut socket: WebSocket, shared: Arc<Shared>, tile: String) {
    let mut sources = shared.sources.0.subscribe();
    // Wait for the tile's source (the view may open before the stream).
    let mut frames = loop {
        if let Some(s) = sources.borrow_and_update().get(&tile).cloned() {
            break s;
        }
        tokio::select! {
            changed = sources.changed() => if changed.is_err() { return },
            msg = socket.recv() => if !matches!(msg, Some(Ok(_))) { return },
        }
    };
    debug!(%tile, "view opened");
    let mut number: u32 = 0;
    // A frame already there is shown at once.
    frames.mark_changed();
    loop {
        tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() { break }
                let Some(frame) = frames.borrow_and_update().clone() else { continue };
                number = number.wrapping_add(1);
                let msg = frame_message(&frame, number);
                let len = msg.len() as u64;
                if socket.send(Message::Binary(msg.into())).await.is_err() { break }
                shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            changed = sources.changed() => {
                let gone = changed.is_err() || !sources.borrow_and_update().contains_key(&tile);
                if gone { break }
            }
            msg = socket.recv() => if !matches!(msg, Some(Ok(_))) { break },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    debug!(%tile, "view closed");
}
