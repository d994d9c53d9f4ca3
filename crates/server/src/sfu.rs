//! The SFU: one WebRTC peer connection per signaling session, with the
//! server always the offerer (so negotiations never collide). Publishers'
//! RTP is forwarded to subscribers without decoding; subscribers' keyframe
//! requests are relayed to the publisher.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use kaigi_proto::UserId;
use kaigi_rtc::{
    build_peer, event_handler, is_keyframe_request, pli, set_local_and_gather, track, Gathering,
    PeerEvent, RtcError, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpTransceiver;

use crate::registry::{SessionId, StreamKinds};

fn kind_name(kind: RtpCodecKind) -> &'static str {
    if kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    }
}

/// An incoming track and its SSRC.
type Incoming = (Arc<dyn TrackRemote>, u32);

/// A received publication, what of it is received, and the transceivers
/// that carry it to this session.
type Subscription = (Weak<Publication>, StreamKinds, Vec<Arc<dyn RtpTransceiver>>);

/// One subscriber's copy of a published track.
#[derive(Clone)]
struct Output {
    subscriber: SessionId,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
}

/// A published stream: its incoming tracks and who receives them.
pub struct Publication {
    /// The publishing session.
    pub session: SessionId,
    /// The publishing user (the media stream id subscribers see).
    pub user: UserId,
    /// What it carries.
    pub kinds: StreamKinds,
    /// Distinguishes this publication from the user's earlier ones.
    pub id: u32,
    remotes: RwLock<HashMap<RtpCodecKind, Incoming>>,
    outputs: RwLock<HashMap<RtpCodecKind, Arc<Vec<Output>>>>,
    closed: CancellationToken,
}

impl Publication {
    /// A publication with no tracks yet.
    pub fn new(session: SessionId, user: UserId, kinds: StreamKinds) -> Arc<Self> {
        Arc::new(Publication {
            session,
            user,
            kinds,
            id: rand::random(),
            remotes: RwLock::new(HashMap::new()),
            outputs: RwLock::new(HashMap::new()),
            closed: CancellationToken::new(),
        })
    }

    /// Takes an incoming track from the publisher and forwards its packets
    /// until the track ends or the publication closes.
    pub async fn attach(self: &Arc<Self>, remote: Arc<dyn TrackRemote>) {
        let kind = remote.kind().await;
        let Some(ssrc) = remote.ssrcs().await.first().copied() else {
            warn!("incoming track without an SSRC ignored");
            return;
        };
        if let Ok(mut r) = self.remotes.write() {
            r.insert(kind, (remote.clone(), ssrc));
        }
        if kind == RtpCodecKind::Video {
            let _ = remote.write_rtcp(vec![pli(ssrc)]).await;
        }
        let me = self.clone();
        tokio::spawn(async move {
            debug!(user = %me.user, kind = kind_name(kind), "forwarding");
            loop {
                let evt = tokio::select! {
                    _ = me.closed.cancelled() => break,
                    evt = remote.poll() => evt,
                };
                match evt {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        let outs = me.outputs.read().ok().and_then(|o| o.get(&kind).cloned());
                        for out in outs.iter().flat_map(|v| v.iter()) {
                            let mut p = packet.clone();
                            p.header.ssrc = out.ssrc;
                            // The publisher's header extensions are numbered
                            // for its connection, not the subscriber's (where
                            // the same id may name another extension): none
                            // is forwarded, and the subscriber's connection
                            // adds its own (transport-wide sequence numbers).
                            p.header.extension = false;
                            p.header.extension_profile = 0;
                            p.header.extensions.clear();
                            p.header.extensions_padding = 0;
                            // One subscriber's failure is not the others'.
                            let _ = out.track.write_rtp(p).await;
                        }
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                }
            }
            if let Ok(mut r) = me.remotes.write() {
                // A replaced connection's track ends after the new one is
                // attached: remove only this one.
                if r.get(&kind).is_some_and(|(_, s)| *s == ssrc) {
                    r.remove(&kind);
                }
            }
            debug!(user = %me.user, kind = kind_name(kind), "forwarding ended");
        });
    }

    /// Asks the publisher for a keyframe (a subscriber started or lost one).
    pub async fn request_keyframe(&self) {
        let video = self
            .remotes
            .read()
            .ok()
            .and_then(|r| r.get(&RtpCodecKind::Video).cloned());
        if let Some((remote, ssrc)) = video {
            let _ = remote.write_rtcp(vec![pli(ssrc)]).await;
        }
    }

    fn add_output(&self, kind: RtpCodecKind, out: Output) {
        if let Ok(mut o) = self.outputs.write() {
            let mut list: Vec<Output> =
                o.get(&kind).map(|v| v.as_ref().clone()).unwrap_or_default();
            list.push(out);
            o.insert(kind, Arc::new(list));
        }
    }

    /// Stops forwarding to `subscriber`.
    pub fn remove_outputs(&self, subscriber: SessionId) {
        if let Ok(mut o) = self.outputs.write() {
            for list in o.values_mut() {
                if list.iter().any(|x| x.subscriber == subscriber) {
                    *list = Arc::new(
                        list.iter()
                            .filter(|x| x.subscriber != subscriber)
                            .cloned()
                            .collect(),
                    );
                }
            }
        }
    }

    /// Stops all forwarding.
    pub fn close(&self) {
        self.closed.cancel();
        if let Ok(mut o) = self.outputs.write() {
            o.clear();
        }
    }

    /// Subscribers currently attached.
    pub fn subscriber_count(&self) -> usize {
        self.outputs
            .read()
            .map(|o| {
                let mut s: Vec<SessionId> = o
                    .values()
                    .flat_map(|v| v.iter().map(|x| x.subscriber))
                    .collect();
                s.sort_unstable();
                s.dedup();
                s.len()
            })
            .unwrap_or(0)
    }
}

/// A session's peer connection and its negotiation state.
pub struct MediaPeer {
    /// The server's media ports, which the connection's sockets are on.
    ports: Arc<kaigi_rtc::MediaPorts>,
    /// The address offers advertise instead of the ports' (a 1:1 NAT).
    external: Option<std::net::IpAddr>,
    pc: Box<dyn PeerConnection>,
    /// Events from the connection, for the session task.
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    gathering: Arc<Gathering>,
    negotiating: bool,
    renegotiate: bool,
    subscriptions: HashMap<SessionId, Subscription>,
    /// Publishers to ask for a keyframe once the negotiation in flight ends.
    keyframes_after: Vec<SessionId>,
    /// Numbers this session's outgoing tracks: each subscription's tracks
    /// get new ids, so the client sees them as new.
    tracks_made: u64,
    /// The receive-only transceivers of the current publication.
    receiving: Vec<Arc<dyn RtpTransceiver>>,
    /// Stopped transceivers: their m-lines stay in every offer (webrtc-rs
    /// does not recycle m-lines), so they are counted to know when the
    /// connection is worth replacing.
    ended: usize,
}

/// How many ended m-lines a connection carries before the server replaces
/// it (for clients that speak protocol 2): a replacement costs every
/// stream a DTLS handshake and a keyframe, so not too often, and the SDP
/// stays within a few kilobytes of what is live.
pub const ENDED_MLINES_BEFORE_REPLACING: usize = 16;

impl MediaPeer {
    /// A peer connection on the server's media `ports`, whose offers
    /// advertise them at `external` (a 1:1 NAT) or their own address.
    pub async fn new(
        ports: Arc<kaigi_rtc::MediaPorts>,
        external: Option<std::net::IpAddr>,
    ) -> Result<Self, RtcError> {
        let (handler, events, gathering) = event_handler();
        let peer = build_peer(kaigi_rtc::Transport::Shared(ports.clone()), handler).await?;
        // Its send budget paces what goes to the subscriber, audio first.
        let pc = peer.pc;
        Ok(MediaPeer {
            ports,
            external,
            pc: Box::new(pc),
            events,
            gathering,
            negotiating: false,
            renegotiate: false,
            subscriptions: HashMap::new(),
            keyframes_after: Vec::new(),
            tracks_made: 0,
            receiving: Vec::new(),
            ended: 0,
        })
    }

    /// How many stopped m-lines the connection carries.
    pub fn ended_mlines(&self) -> usize {
        self.ended
    }

    /// Whether this session receives any publisher that still publishes.
    pub fn has_subscriptions(&self) -> bool {
        self.subscriptions
            .values()
            .any(|(p, _, _)| p.strong_count() > 0)
    }

    /// The publishers this session receives, and what of each.
    pub fn subscriptions(&self) -> Vec<(Arc<Publication>, StreamKinds)> {
        self.subscriptions
            .values()
            .filter_map(|(p, kinds, _)| p.upgrade().map(|p| (p, *kinds)))
            .collect()
    }

    /// Retires the receive-only transceivers of the publication that
    /// ended. They stay `recvonly` (a client may still be bound to them;
    /// nothing arriving on them is forwarded) and count as ended m-lines.
    pub fn retire_receiving(&mut self) {
        self.ended += self.receiving.len();
        self.receiving.clear();
    }

    /// Adds receive-only transceivers for what the client will publish.
    pub async fn receive(&mut self, kinds: StreamKinds) -> Result<(), RtcError> {
        for (on, kind) in [
            (kinds.audio, RtpCodecKind::Audio),
            (kinds.video, RtpCodecKind::Video),
        ] {
            if on {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                };
                let t = self
                    .pc
                    .add_transceiver_from_kind(kind, Some(init))
                    .await
                    .map_err(RtcError::from_display)?;
                self.receiving.push(t);
            }
        }
        Ok(())
    }

    /// Sends the `kinds` of `publication` to this session (`me`): one local
    /// track per kind, replacing an earlier subscription with other kinds.
    /// Returns whether anything changed (so a new offer is due).
    pub async fn subscribe(
        &mut self,
        me: SessionId,
        publication: &Arc<Publication>,
        kinds: StreamKinds,
    ) -> Result<bool, RtcError> {
        match self.subscriptions.get(&publication.session) {
            Some((_, had, _)) if *had == kinds => return Ok(false),
            Some(_) => {
                self.unsubscribe(me, publication.session).await?;
            }
            None => {}
        }
        let user = publication.user.as_str();
        let mut transceivers = Vec::new();
        for (on, kind) in [
            (kinds.audio && publication.kinds.audio, RtpCodecKind::Audio),
            (kinds.video && publication.kinds.video, RtpCodecKind::Video),
        ] {
            if !on {
                continue;
            }
            // Unique per publication and subscription: a republished or
            // resubscribed stream is a new track.
            self.tracks_made += 1;
            let track_id = format!(
                "{user}-{}-{:x}-{}",
                kind_name(kind),
                publication.id,
                self.tracks_made
            );
            let local = Arc::new(TrackLocalStaticRTP::new(track(user, &track_id, kind)));
            let ssrc = local.ssrcs().await.first().copied().unwrap_or_default();
            // A dedicated send-only transceiver: `add_track` would reuse any
            // sender-less one, such as this session's own receive side.
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            };
            let transceiver = self
                .pc
                .add_transceiver_from_track(local.clone() as Arc<dyn TrackLocal>, Some(init))
                .await
                .map_err(RtcError::from_display)?;
            transceivers.push(transceiver);
            publication.add_output(
                kind,
                Output {
                    subscriber: me,
                    track: local.clone(),
                    ssrc,
                },
            );
            if kind == RtpCodecKind::Video {
                // The subscriber's PLIs go to the publisher.
                let weak = Arc::downgrade(publication);
                tokio::spawn(async move {
                    while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = local.poll().await {
                        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                            match weak.upgrade() {
                                Some(p) => p.request_keyframe().await,
                                None => break,
                            }
                        }
                    }
                });
            }
        }
        self.subscriptions.insert(
            publication.session,
            (Arc::downgrade(publication), kinds, transceivers),
        );
        if kinds.video {
            self.keyframes_after.push(publication.session);
        }
        Ok(true)
    }

    /// Stops sending `publisher`'s stream to this session (`me`).
    pub async fn unsubscribe(
        &mut self,
        me: SessionId,
        publisher: SessionId,
    ) -> Result<bool, RtcError> {
        let Some((publication, _, transceivers)) = self.subscriptions.remove(&publisher) else {
            return Ok(false);
        };
        if let Some(p) = publication.upgrade() {
            p.remove_outputs(me);
        }
        // Stopped transceivers go inactive in the next offer, which ends the
        // client's remote tracks.
        for t in &transceivers {
            t.stop().await.map_err(RtcError::from_display)?;
            self.ended += 1;
        }
        Ok(true)
    }

    /// Detaches this session from every publication it receives.
    pub fn detach_all(&mut self, me: SessionId) {
        for (publication, _, _) in self.subscriptions.values() {
            if let Some(p) = publication.upgrade() {
                p.remove_outputs(me);
            }
        }
        self.subscriptions.clear();
    }

    /// Makes an offer reflecting the current tracks, unless one is in
    /// flight (then another follows its answer). Returns the SDP to send.
    pub async fn offer(&mut self) -> Result<Option<String>, RtcError> {
        if self.negotiating {
            self.renegotiate = true;
            return Ok(None);
        }
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(RtcError::from_display)?;
        let sdp = set_local_and_gather(self.pc.as_ref(), offer, &self.gathering).await?;
        self.negotiating = true;
        Ok(Some(self.ports.advertised(self.external, &sdp)))
    }

    /// Whether an offer awaits its answer.
    pub fn negotiating(&self) -> bool {
        self.negotiating
    }

    /// Applies the client's answer. Returns the publishers to ask for a
    /// keyframe now, and whether another offer is due.
    pub async fn answer(&mut self, sdp: String) -> Result<(Vec<SessionId>, bool), RtcError> {
        if !self.negotiating {
            return Err(RtcError(
                "an answer arrived with no offer outstanding".into(),
            ));
        }
        let desc = RTCSessionDescription::answer(sdp).map_err(RtcError::from_display)?;
        let applied = self.pc.set_remote_description(desc).await;
        self.negotiating = false;
        applied.map_err(RtcError::from_display)?;
        Ok((
            std::mem::take(&mut self.keyframes_after),
            std::mem::take(&mut self.renegotiate),
        ))
    }

    /// Closes the connection, freeing its sockets and tasks.
    pub async fn close(self) {
        kaigi_rtc::close_peer(self.pc.as_ref()).await;
    }
}
