//! Decoded video to the web view: a WebSocket on 127.0.0.1 with a token
//! made at launch, one connection per tile (`/frames/local`,
//! `/frames/<userId>`). Each binary message is one I420 frame followed by
//! a 16-byte trailer: width, height, frame number (u32 little-endian) and
//! the magic `KGF1`. Newest frame wins: a slow view skips frames, never
//! queues them. A view may give its tile's size in device pixels (`w`, `h`
//! in the URL; later a text message `WxH`): frames are then scaled down to
//! fit before they are sent. The largest size each tile is viewed at is
//! kept ([`FrameServer::tile_sizes`]): the call asks the server for no
//! larger a simulcast layer than that.

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
pub use bytes_of::read_frame_message;
use kaigi_media::VideoFrame;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The tile of this client's own camera preview.
pub const LOCAL_TILE: &str = "local";

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

    /// Reads a view message's trailer: `(width, height, frame number)`,
    /// or `None` when it is not a frame message (no magic, or a size that
    /// does not match an I420 picture of that width and height).
    pub fn read_frame_message(m: &[u8]) -> Option<(u32, u32, u32)> {
        let t = m.len().checked_sub(16).map(|i| &m[i..])?;
        let u = |i: usize| u32::from_le_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
        let (w, h, n) = (u(0), u(4), u(8));
        let picture = (u64::from(w) * u64::from(h) * 3).div_ceil(2);
        (&t[12..] == TRAILER_MAGIC && (m.len() - 16) as u64 == picture).then_some((w, h, n))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_frame_message_reads_back() {
            let frame = VideoFrame::black(64, 36).unwrap();
            let m = frame_message(&frame, 7);
            assert_eq!(read_frame_message(&m), Some((64, 36, 7)));
            assert_eq!(read_frame_message(&m[1..]), None, "size mismatch");
            assert_eq!(read_frame_message(b"short"), None);
        }
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

/// Each tile's largest view, in device pixels (tiles with no sized view
/// are absent).
pub type TileSizes = watch::Receiver<HashMap<String, (u32, u32)>>;

/// A view's tile and its size in device pixels.
type ViewSize = (String, (u32, u32));

struct Shared {
    token: String,
    sources: SourceTable,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    /// Open views' tiles and sizes, by view.
    views: parking_lot::Mutex<HashMap<u64, ViewSize>>,
    next_view: AtomicU64,
    tile_sizes: watch::Sender<HashMap<String, (u32, u32)>>,
}

impl Shared {
    /// Records view `id`'s tile and size (`None`: the view is gone or has
    /// no size) and republishes the tiles' largest sizes.
    fn view_size(&self, id: u64, tile: &str, size: Option<(u32, u32)>) {
        let mut views = self.views.lock();
        match size {
            Some(size) => {
                views.insert(id, (tile.to_owned(), size));
            }
            None => {
                views.remove(&id);
            }
        }
        let mut largest: HashMap<String, (u32, u32)> = HashMap::new();
        for (tile, (w, h)) in views.values() {
            let e = largest.entry(tile.clone()).or_default();
            *e = (e.0.max(*w), e.1.max(*h));
        }
        drop(views);
        self.tile_sizes.send_if_modified(|sizes| {
            let changed = *sizes != largest;
            *sizes = largest;
            changed
        });
    }
}

/// The frame server.
pub struct FrameServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Deserialize)]
struct ViewQuery {
    token: String,
    /// The tile's size in device pixels (frames are scaled down to fit).
    #[serde(default)]
    w: u32,
    #[serde(default)]
    h: u32,
}

/// A view's text message `WxH`: the tile's new size.
fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.trim().split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
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
            views: parking_lot::Mutex::new(HashMap::new()),
            next_view: AtomicU64::new(0),
            tile_sizes: watch::Sender::new(HashMap::new()),
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

    /// A view of `tile` for a transport of the caller's (the Tauri IPC),
    /// its frames scaled down to fit `fit` (width, height; zero: as they are).
    pub fn open_view(&self, tile: &str, fit: (u32, u32)) -> TileView {
        let mut v = TileView::new(self.shared.clone(), tile);
        v.set_fit(fit.0, fit.1);
        v
    }

    /// Each tile's largest open view, in device pixels, as views open,
    /// resize and close.
    pub fn tile_sizes(&self) -> TileSizes {
        self.shared.tile_sizes.subscribe()
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
    Query(q): Query<ViewQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if q.token != shared.token {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    ws.on_upgrade(move |socket| view(socket, shared, tile, (q.w, q.h)))
}

/// One view of a tile: waits for the tile's source, then yields its
/// newest frames as view messages. Shared by the WebSocket and IPC paths.
pub struct TileView {
    id: u64,
    tile: String,
    sources: watch::Receiver<HashMap<String, FrameSource>>,
    frames: Option<FrameSource>,
    number: u32,
    fit: Option<(usize, usize)>,
    shared: Arc<Shared>,
}

impl TileView {
    fn new(shared: Arc<Shared>, tile: &str) -> Self {
        TileView {
            id: shared.next_view.fetch_add(1, Ordering::Relaxed),
            tile: tile.to_owned(),
            sources: shared.sources.0.subscribe(),
            frames: None,
            number: 0,
            fit: None,
            shared,
        }
    }

    /// Scales frames down to fit in `width × height` (the tile's size in
    /// device pixels) before they are sent; zero: as they are.
    pub fn set_fit(&mut self, width: u32, height: u32) {
        let clamp = |v: u32| (v as usize).min(8192);
        self.fit = (width > 0 && height > 0).then(|| (clamp(width), clamp(height)));
        let size = self.fit.map(|(w, h)| (w as u32, h as u32));
        self.shared.view_size(self.id, &self.tile, size);
    }

    /// The next frame as a view message (I420 + trailer), the newest one
    /// when several came since the last call; `None` once the tile has
    /// ended (or never started and the table went away).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(frames) = self.frames.as_mut() else {
                // Wait for the tile's source (the view may open before the stream).
                if let Some(s) = self.sources.borrow_and_update().get(&self.tile).cloned() {
                    debug!(tile = %self.tile, "view opened");
                    let mut s = s;
                    // A frame already there is shown at once.
                    s.mark_changed();
                    self.frames = Some(s);
                    continue;
                }
                self.sources.changed().await.ok()?;
                continue;
            };
            tokio::select! {
                changed = frames.changed() => {
                    changed.ok()?;
                    let Some(frame) = frames.borrow_and_update().clone() else { continue };
                    self.number = self.number.wrapping_add(1);
                    let scaled = self.fit.and_then(|(w, h)| frame.scaled_to_fit(w, h));
                    let msg = frame_message(scaled.as_ref().unwrap_or(&frame), self.number);
                    self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes_sent.fetch_add(msg.len() as u64, Ordering::Relaxed);
                    return Some(msg);
                }
                changed = self.sources.changed() => {
                    let gone = changed.is_err()
                        || !self.sources.borrow_and_update().contains_key(&self.tile);
                    if gone {
                        debug!(tile = %self.tile, "tile ended");
                        return None;
                    }
                }
            }
        }
    }
}

impl Drop for TileView {
    fn drop(&mut self) {
        self.shared.view_size(self.id, &self.tile, None);
    }
}

/// How long one write to a view may take before the view counts as gone
/// (a page that stopped reading, e.g. a frozen web view).
const VIEW_SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `tile`'s frames to one WebSocket view until the tile ends or the
/// view goes. A text message `WxH` from the view resizes its frames.
async fn view(mut socket: WebSocket, shared: Arc<Shared>, tile: String, size: (u32, u32)) {
    let mut view = TileView::new(shared, &tile);
    view.set_fit(size.0, size.1);
    loop {
        tokio::select! {
            msg = view.next() => {
                let Some(msg) = msg else { break };
                // A view that stops reading is dropped, not waited on.
                match tokio::time::timeout(VIEW_SEND_DEADLINE, socket.send(Message::Binary(msg.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        debug!(%tile, "view stopped reading; closed");
                        return;
                    }
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some((w, h)) = parse_size(&t) {
                        view.set_fit(w, h);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    let _ = tokio::time::timeout(VIEW_SEND_DEADLINE, socket.send(Message::Close(None))).await;
    debug!(%tile, "view closed");
}
