//! The client's side of its one peer connection to the server (which
//! always makes the offers): answering, publishing, received tracks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use kaigi_proto::signal::StreamType;
use kaigi_proto::UserId;
use kaigi_rtc::{build_peer, event_handler, set_local_and_gather, Gathering, PeerEvent};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::local::LocalStream;
use super::remote::{AudioOut, RemoteStream};
use crate::error::ClientError;

/// The client's peer connection, remote streams and publication.
pub(crate) struct MediaSession {
    bind: IpAddr,
    pc: Option<Box<dyn PeerConnection>>,
    /// The connection's send estimate and pacer queue, which the
    /// published stream's encoder follows.
    budget: Arc<kaigi_rtc::SendBudget>,
    events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    gathering: Arc<Gathering>,
    /// Streams to attach at the offer that carries their publish.
    pending: BTreeMap<StreamType, LocalStream>,
    published: BTreeMap<StreamType, LocalStream>,
    remotes: Arc<Mutex<HashMap<(UserId, StreamType), RemoteStream>>>,
    audio_out: AudioOut,
    /// Whether received video is decoded.
    pub decode: bool,
}

/// What a track arriving meant.
pub(crate) enum Arrived {
    /// The first track of this user's stream of this type.
    Subscribed(UserId, StreamType),
    /// Another track of a stream already subscribed.
    More,
}

impl MediaSession {
    pub fn new(
        bind: IpAddr,
        remotes: Arc<Mutex<HashMap<(UserId, StreamType), RemoteStream>>>,
        audio_out: AudioOut,
    ) -> Self {
        MediaSession {
            bind,
            pc: None,
            budget: Arc::default(),
            events: None,
            gathering: Arc::new(Gathering::default()),
            pending: BTreeMap::new(),
            published: BTreeMap::new(),
            remotes,
            audio_out,
            decode: true,
        }
    }

    /// Attaches `stream` as `stream_type` at the offer carrying its
    /// publish.
    pub fn publish(&mut self, stream_type: StreamType, stream: LocalStream) {
        self.pending.insert(stream_type, stream);
    }

    /// Forgets a publish the server refused; what is published stays.
    pub fn cancel_publish(&mut self, stream_type: StreamType) {
        self.pending.remove(&stream_type);
    }

    /// Stops sending the published stream of `stream_type`: a `main`
    /// stream keeps running until closed; a shared screen is closed (its
    /// capture ends, as TRTC's `stopScreenShare`).
    pub fn unpublish(&mut self, stream_type: StreamType) {
        let pending = self.pending.remove(&stream_type);
        let published = self.published.remove(&stream_type);
        for s in pending.into_iter().chain(published) {
            s.stop_sending();
            if stream_type == StreamType::Sub {
                s.close();
            }
        }
        self.share_estimate();
    }

    /// The published stream of `stream_type`, if any.
    pub fn published(&self, stream_type: StreamType) -> Option<&LocalStream> {
        self.published.get(&stream_type)
    }

    /// Splits the send estimate between the published streams: a shared
    /// screen (text that must stay sharp) takes the larger part while the
    /// camera goes on beside it; one stream alone takes all of it.
    fn share_estimate(&self) {
        let both = self.published.len() > 1;
        for (t, s) in &self.published {
            s.set_estimate_share(match (both, t) {
                (false, _) => 1.0,
                (true, StreamType::Sub) => SCREEN_SHARE,
                (true, StreamType::Main) => 1.0 - SCREEN_SHARE,
            });
        }
    }

    /// Applies mute flags to the published `main` stream.
    pub fn set_muted(&self, audio: Option<bool>, video: Option<bool>) {
        if let Some(stream) = self.published.get(&StreamType::Main) {
            if let Some(a) = audio {
                stream.set_audio_muted(a);
            }
            if let Some(v) = video {
                stream.set_video_muted(v);
            }
        }
    }

    /// Sends only the `active` simulcast layers (largest first) of the
    /// published stream of `stream_type`.
    pub fn send_layers(&self, stream_type: StreamType, active: &[bool]) {
        if let Some(stream) = self.published.get(&stream_type) {
            stream.send_layers(active);
        }
    }

    /// Answers the server's offer; `carries_publish` names the pending
    /// publish it is the offer for, `new_connection` says it replaces the
    /// current connection (the published streams move to the new one, in
    /// the order of their types, as the server offers them).
    pub async fn answer(
        &mut self,
        sdp: String,
        carries_publish: Option<StreamType>,
        new_connection: bool,
    ) -> Result<String, ClientError> {
        let err = |e: webrtc::error::Error| ClientError::Media(e.to_string());
        let mut moved = false;
        if new_connection {
            // Closed first: a local track is bound to one connection at a
            // time. Remote streams stay; their new tracks attach to them.
            if let Some(pc) = self.pc.take() {
                kaigi_rtc::close_peer(pc.as_ref()).await;
            }
            self.events = None;
            for (t, stream) in std::mem::take(&mut self.published) {
                self.pending.insert(t, stream);
                moved = true;
            }
        }
        // What binds to this offer's new receive-only m-lines: the
        // publish it carries, or everything that moves.
        let attach: Vec<StreamType> = if moved {
            self.pending.keys().copied().collect()
        } else {
            carries_publish.into_iter().collect()
        };
        if self.pc.is_none() {
            let (handler, events, gathering) = event_handler();
            let peer = build_peer(kaigi_rtc::Transport::Own(self.bind), handler)
                .await
                .map_err(|e| ClientError::Media(e.to_string()))?;
            self.pc = Some(Box::new(peer.pc));
            self.budget = peer.budget;
            self.events = Some(events);
            self.gathering = gathering;
        }
        let pc = self
            .pc
            .as_ref()
            .ok_or_else(|| ClientError::Media("no peer connection".into()))?;
        for stream_type in attach {
            let Some(stream) = self.pending.remove(&stream_type) else {
                continue;
            };
            // Send-only transceivers without a mid, added before the offer
            // is applied, are what its new receive-only m-lines bind to;
            // `add_track` could take a subscription's transceiver instead.
            for t in stream.tracks() {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                };
                pc.add_transceiver_from_track(t.clone() as Arc<dyn TrackLocal>, Some(init))
                    .await
                    .map_err(err)?;
            }
            self.published.insert(stream_type, stream);
        }
        let offer = RTCSessionDescription::offer(sdp.clone()).map_err(err)?;
        pc.set_remote_description(offer).await.map_err(err)?;
        kaigi_rtc::dial_tcp_candidates(pc.as_ref(), &sdp).await;
        let answer = pc.create_answer(None).await.map_err(err)?;
        let sdp = set_local_and_gather(pc.as_ref(), answer, &self.gathering)
            .await
            .map_err(|e| ClientError::Media(e.to_string()))?;
        if moved {
            // No `published` follows a replacement: send at once.
            let types: Vec<StreamType> = self.published.keys().copied().collect();
            for t in types {
                self.start_sending(t).await;
            }
        }
        Ok(sdp)
    }

    /// After `published`: starts the sources of the stream of
    /// `stream_type` sending with the negotiated payload types.
    pub async fn start_sending(&mut self, stream_type: StreamType) {
        self.share_estimate();
        let (Some(pc), Some(stream)) = (&self.pc, self.published.get(&stream_type)) else {
            return;
        };
        for sender in pc.get_senders().await {
            let id = sender.track().track_id().await;
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            // A track the offer had no m-line for (a server that takes
            // fewer layers) has no codec: it is not sent.
            let Some(pt) = params.rtp_parameters.codecs.first().map(|c| c.payload_type) else {
                continue;
            };
            stream.send_as(&id, pt);
        }
        stream.listen_for_keyframe_requests();
        stream.follow(self.budget.clone());
        stream.hear_played(self.audio_out.clone());
    }

    /// The next track the server sends; never, before a connection exists.
    pub async fn next_track(&mut self) -> Arc<dyn TrackRemote> {
        match self.events.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(PeerEvent::Track(t)) => t,
                Some(PeerEvent::Failed) => std::future::pending().await,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Decodes a track the server sent; the stream id names its user and
    /// stream type (`alice` or `alice.sub`).
    pub async fn on_track(&mut self, remote: Arc<dyn TrackRemote>) -> Option<Arrived> {
        let (user, stream_type) =
            kaigi_proto::signal::parse_stream_name(&remote.stream_id().await)?;
        let kind = remote.kind().await;
        let key = (user.clone(), stream_type);
        let mut remotes = self.remotes.lock();
        let (stream, first) = match remotes.get(&key) {
            Some(s) => (s.clone(), false),
            None => {
                let s = RemoteStream::new(
                    user.clone(),
                    stream_type,
                    self.audio_out.clone(),
                    self.decode,
                );
                remotes.insert(key, s.clone());
                (s, true)
            }
        };
        stream.attach(remote, kind);
        Some(if first {
            Arrived::Subscribed(user, stream_type)
        } else {
            Arrived::More
        })
    }

    /// The connection's loss and RTT counters; `None` before it exists.
    pub async fn link_counters(&self) -> Option<kaigi_rtc::quality::LinkCounters> {
        let pc = self.pc.as_ref()?;
        let mut counters = kaigi_rtc::quality::link_counters(pc.as_ref()).await;
        if !self.published.is_empty() {
            counters.send_wanted_bps = Some(self.published.values().map(|s| s.wanted_bps()).sum());
            counters.send_estimate_bps = self.budget.estimate_bps();
            counters.send_loss = Some(self.budget.loss());
        }
        Some(counters)
    }

    /// Forgets a user's stream of `stream_type`.
    pub fn stream_removed(&mut self, user: &UserId, stream_type: StreamType) {
        let removed = self.remotes.lock().remove(&(user.clone(), stream_type));
        if let Some(s) = removed {
            s.close();
        }
    }

    /// Closes the connection and every remote stream; the published local
    /// streams are returned so they can be published again after a
    /// reconnect.
    pub async fn close(mut self) -> BTreeMap<StreamType, LocalStream> {
        let streams: Vec<_> = self.remotes.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.close();
        }
        if let Some(pc) = self.pc.take() {
            kaigi_rtc::close_peer(pc.as_ref()).await;
        }
        let mut streams = std::mem::take(&mut self.pending);
        streams.extend(std::mem::take(&mut self.published));
        streams
    }
}

/// The share of the send estimate a shared screen gets while the camera
/// is sent too.
const SCREEN_SHARE: f64 = 0.7;
