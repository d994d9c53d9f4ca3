//! The client's side of its one peer connection to the server (which
//! always makes the offers): answering, publishing, received tracks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

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
    /// A stream to attach at the next offer.
    pending: Option<LocalStream>,
    published: Option<LocalStream>,
    remotes: Arc<Mutex<HashMap<UserId, RemoteStream>>>,
    audio_out: AudioOut,
    /// Whether received video is decoded.
    pub decode: bool,
}

/// What a track arriving meant.
pub(crate) enum Arrived {
    /// The first track of this user's stream.
    Subscribed(UserId),
    /// Another track of a stream already subscribed.
    More,
}

impl MediaSession {
    pub fn new(
        bind: IpAddr,
        remotes: Arc<Mutex<HashMap<UserId, RemoteStream>>>,
        audio_out: AudioOut,
    ) -> Self {
        MediaSession {
            bind,
            pc: None,
            budget: Arc::default(),
            events: None,
            gathering: Arc::new(Gathering::default()),
            pending: None,
            published: None,
            remotes,
            audio_out,
            decode: true,
        }
    }

    /// Attaches `stream` at the next offer.
    pub fn publish(&mut self, stream: LocalStream) {
        self.pending = Some(stream);
    }

    /// Forgets a publish the server refused; what is published stays.
    pub fn cancel_publish(&mut self) {
        self.pending = None;
    }

    /// Stops sending the published stream (it keeps running until closed).
    pub fn unpublish(&mut self) {
        self.pending = None;
        if let Some(s) = self.published.take() {
            s.stop_sending();
        }
    }

    /// The published stream, if any.
    pub fn published(&self) -> Option<&LocalStream> {
        self.published.as_ref()
    }

    /// Applies mute flags to the published stream.
    pub fn set_muted(&self, audio: Option<bool>, video: Option<bool>) {
        if let Some(stream) = &self.published {
            if let Some(a) = audio {
                stream.set_audio_muted(a);
            }
            if let Some(v) = video {
                stream.set_video_muted(v);
            }
        }
    }

    /// Answers the server's offer; `carries_publish` says it is the offer
    /// for the pending publish, `new_connection` that it replaces the
    /// current connection (the published stream moves to the new one).
    pub async fn answer(
        &mut self,
        sdp: String,
        carries_publish: bool,
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
            if let Some(stream) = self.published.take() {
                self.pending = Some(stream);
                moved = true;
            }
        }
        let carries_publish = carries_publish || moved;
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
        if let Some(stream) = self.pending.take_if(|_| carries_publish) {
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
            self.published = Some(stream);
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
            self.start_sending().await;
        }
        Ok(sdp)
    }

    /// After `published`: starts the sources sending with the negotiated
    /// payload types.
    pub async fn start_sending(&mut self) {
        let (Some(pc), Some(stream)) = (&self.pc, &self.published) else {
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

    /// Decodes a track the server sent; the stream id names its user.
    pub async fn on_track(&mut self, remote: Arc<dyn TrackRemote>) -> Option<Arrived> {
        let user = UserId::new(remote.stream_id().await).ok()?;
        let kind = remote.kind().await;
        let mut remotes = self.remotes.lock();
        let (stream, first) = match remotes.get(&user) {
            Some(s) => (s.clone(), false),
            None => {
                let s = RemoteStream::new(user.clone(), self.audio_out.clone(), self.decode);
                remotes.insert(user.clone(), s.clone());
                (s, true)
            }
        };
        stream.attach(remote, kind);
        Some(if first {
            Arrived::Subscribed(user)
        } else {
            Arrived::More
        })
    }

    /// The connection's loss and RTT counters; `None` before it exists.
    pub async fn link_counters(&self) -> Option<kaigi_rtc::quality::LinkCounters> {
        let pc = self.pc.as_ref()?;
        let mut counters = kaigi_rtc::quality::link_counters(pc.as_ref()).await;
        if let Some(stream) = &self.published {
            counters.send_wanted_bps = Some(stream.wanted_bps());
            counters.send_estimate_bps = self.budget.estimate_bps();
            counters.send_loss = Some(self.budget.loss());
        }
        Some(counters)
    }

    /// Forgets a user's stream.
    pub fn stream_removed(&mut self, user: &UserId) {
        let removed = self.remotes.lock().remove(user);
        if let Some(s) = removed {
            s.close();
        }
    }

    /// Closes the connection and every remote stream; the published local
    /// stream is returned so it can be published again after a reconnect.
    pub async fn close(mut self) -> Option<LocalStream> {
        let streams: Vec<_> = self.remotes.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.close();
        }
        if let Some(pc) = self.pc.take() {
            kaigi_rtc::close_peer(pc.as_ref()).await;
        }
        self.published.take().or(self.pending.take())
    }
}
