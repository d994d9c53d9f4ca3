//! The SFU: one WebRTC peer connection per signaling session, with the
//! server always the offerer (so negotiations never collide). Publishers'
//! RTP is forwarded to subscribers without decoding; subscribers' keyframe
//! requests are relayed to the publisher.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

use kaigi_proto::signal::{StreamType, VideoSize};
use kaigi_proto::UserId;
use kaigi_rtc::SendBudget;
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
use crate::simulcast::{self, allocate, Candidate, Layer, Path, RateMeter, Trials, VideoOutput};

fn kind_name(kind: RtpCodecKind) -> &'static str {
    if kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    }
}

/// An incoming track and its SSRC.
type Incoming = (Arc<dyn TrackRemote>, u32);

/// What an incoming track is: its kind, and for video its layer.
pub type Slot = (RtpCodecKind, usize);

/// A received publication, what of it is received, the transceivers that
/// carry it to this session, and its video output.
type Subscription = (
    Weak<Publication>,
    StreamKinds,
    Vec<Arc<dyn RtpTransceiver>>,
    Option<Arc<VideoOutput>>,
);

/// Publications to ask for a keyframe of a layer.
pub type Keyframes = Vec<(Arc<Publication>, usize)>;

/// One subscriber's copy of a published audio track.
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
    /// The publishing user.
    pub user: UserId,
    /// Which of the user's streams.
    pub stream_type: StreamType,
    /// What it carries.
    pub kinds: StreamKinds,
    /// Distinguishes this publication from the user's earlier ones.
    pub id: u32,
    /// Its video's simulcast layers, largest first (one when it does not
    /// simulcast; none without video).
    pub layers: Vec<Layer>,
    remotes: RwLock<HashMap<Slot, Incoming>>,
    audio: RwLock<Arc<Vec<Output>>>,
    video: RwLock<Arc<Vec<Arc<VideoOutput>>>>,
    closed: CancellationToken,
    /// `SetUserBlocked`: its audio / video is not forwarded.
    blocked_audio: std::sync::atomic::AtomicBool,
    blocked_video: std::sync::atomic::AtomicBool,
    /// Which layers its publisher was told to send.
    demand: parking_lot::Mutex<simulcast::LayerDemand>,
}

impl Publication {
    /// A publication with no tracks yet; `layers` are the sizes of its
    /// video's simulcast layers (empty: one layer of unknown size).
    pub fn new(
        session: SessionId,
        user: UserId,
        stream_type: StreamType,
        kinds: StreamKinds,
        layers: &[VideoSize],
    ) -> Arc<Self> {
        let layers = match (kinds.video, layers) {
            (false, _) => Vec::new(),
            (true, []) => vec![Layer::new(VideoSize::default())],
            (true, sizes) => sizes.iter().map(|&s| Layer::new(s)).collect(),
        };
        Arc::new(Publication {
            session,
            user,
            stream_type,
            kinds,
            id: rand::random(),
            layers,
            remotes: RwLock::new(HashMap::new()),
            audio: RwLock::new(Arc::default()),
            video: RwLock::new(Arc::default()),
            closed: CancellationToken::new(),
            blocked_audio: Default::default(),
            blocked_video: Default::default(),
            demand: Default::default(),
        })
    }

    /// The layers its publisher should send (largest first), when that
    /// changed at `now`: every layer as large as the largest any
    /// subscriber shows the video large enough to need, and every smaller
    /// one (see [`simulcast::active_layers`], [`simulcast::LayerDemand`]).
    /// `None` without simulcast or when nothing changed.
    pub fn layers_to_send(&self, now: Instant) -> Option<Vec<bool>> {
        let last = self.layers.len().checked_sub(1).filter(|&l| l > 0)?;
        let needed = self
            .video
            .read()
            .ok()?
            .iter()
            .map(|o| o.cap())
            .min()
            .unwrap_or(last)
            .min(last);
        let top = self.demand.lock().update(needed, now)?;
        Some(simulcast::active_layers(self.layers.len(), Some(top)))
    }

    /// The msid stream id subscribers see: the user id for `main`, the
    /// user id and `.sub` for `sub` (a user id has no dot).
    pub fn media_stream_id(&self) -> String {
        kaigi_proto::signal::stream_name(&self.user, self.stream_type)
    }

    /// Takes an incoming track from the publisher (`slot`: its kind and
    /// layer) and forwards its packets until the track ends or the
    /// publication closes.
    pub async fn attach(self: &Arc<Self>, remote: Arc<dyn TrackRemote>, slot: Slot) {
        let (kind, layer) = slot;
        let Some(ssrc) = remote.ssrcs().await.first().copied() else {
            warn!("incoming track without an SSRC ignored");
            return;
        };
        if kind == RtpCodecKind::Video && layer >= self.layers.len() {
            warn!(layer, "a video track beyond the declared layers ignored");
            return;
        }
        if let Ok(mut r) = self.remotes.write() {
            r.insert(slot, (remote.clone(), ssrc));
        }
        if kind == RtpCodecKind::Video {
            let _ = remote.write_rtcp(vec![pli(ssrc)]).await;
        }
        let me = self.clone();
        tokio::spawn(async move {
            debug!(user = %me.user, kind = kind_name(kind), layer, "forwarding");
            let mut meter = RateMeter::new(Instant::now());
            loop {
                let evt = tokio::select! {
                    _ = me.closed.cancelled() => break,
                    evt = remote.poll() => evt,
                };
                match evt {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        if kind == RtpCodecKind::Video {
                            me.forward_video(layer, &packet, &mut meter).await;
                        } else {
                            me.forward_audio(packet).await;
                        }
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                }
            }
            if let Ok(mut r) = me.remotes.write() {
                // A replaced connection's track ends after the new one is
                // attached: remove only this one.
                if r.get(&slot).is_some_and(|(_, s)| *s == ssrc) {
                    r.remove(&slot);
                }
            }
            debug!(user = %me.user, kind = kind_name(kind), layer, "forwarding ended");
        });
    }

    /// Stops (or resumes) forwarding its audio and video. Video resumed
    /// asks the publisher for a keyframe, so subscribers see a picture at
    /// once.
    pub fn set_blocked(self: &Arc<Self>, audio: bool, video: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.blocked_audio.store(audio, SeqCst);
        let was = self.blocked_video.swap(video, SeqCst);
        if was && !video {
            let remotes: Vec<_> = self
                .remotes
                .read()
                .map(|r| {
                    r.iter()
                        .filter(|((kind, _), _)| *kind == RtpCodecKind::Video)
                        .map(|(_, (remote, ssrc))| (remote.clone(), *ssrc))
                        .collect()
                })
                .unwrap_or_default();
            tokio::spawn(async move {
                for (remote, ssrc) in remotes {
                    let _ = remote.write_rtcp(vec![pli(ssrc)]).await;
                }
            });
        }
    }

    async fn forward_audio(&self, packet: rtc::rtp::Packet) {
        if self
            .blocked_audio
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let outs = self.audio.read().map(|o| o.clone()).unwrap_or_default();
        for out in outs.iter() {
            let mut p = packet.clone();
            p.header.ssrc = out.ssrc;
            // Header extensions are per connection (see VideoOutput::forward).
            p.header.extension = false;
            p.header.extension_profile = 0;
            p.header.extensions.clear();
            p.header.extensions_padding = 0;
            // One subscriber's failure is not the others'.
            let _ = out.track.write_rtp(p).await;
        }
    }

    async fn forward_video(&self, layer: usize, packet: &rtc::rtp::Packet, meter: &mut RateMeter) {
        if self
            .blocked_video
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let now = Instant::now();
        meter.count(
            &self.layers[layer],
            packet.payload.len() + kaigi_rtc::pacing::PACKET_OVERHEAD_BYTES + 12,
            now,
        );
        if crate::simulcast::starts_keyframe(&packet.payload) {
            self.layers[layer].keyframe_arrived();
        }
        let outs = self.video.read().map(|o| o.clone()).unwrap_or_default();
        for out in outs.iter() {
            if let Some(p) = out.forward(layer, packet, now) {
                let _ = out.track.write_rtp(p).await;
            }
        }
    }

    /// Asks the publisher for a keyframe of `layer` (a subscriber started,
    /// lost one, or switches to that layer).
    pub async fn request_keyframe(&self, layer: usize) {
        if !self
            .layers
            .get(layer)
            .is_some_and(|l| l.may_ask_keyframe(Instant::now()))
        {
            return;
        }
        let video = self
            .remotes
            .read()
            .ok()
            .and_then(|r| r.get(&(RtpCodecKind::Video, layer)).cloned());
        if let Some((remote, ssrc)) = video {
            let _ = remote.write_rtcp(vec![pli(ssrc)]).await;
        }
    }

    /// The layer a new subscriber starts on: the largest that arrives
    /// and takes no more than `room` bits per second, or else the
    /// smallest that arrives.
    fn first_layer(&self, room: f64) -> usize {
        let now = Instant::now();
        let live: Vec<usize> = (0..self.layers.len())
            .filter(|&i| self.layers[i].live(now))
            .collect();
        live.iter()
            .copied()
            .find(|&i| self.layers[i].rate_bps() <= room)
            .or(live.last().copied())
            .unwrap_or(0)
    }

    fn add_audio(&self, out: Output) {
        if let Ok(mut o) = self.audio.write() {
            let mut list = o.as_ref().clone();
            list.push(out);
            *o = Arc::new(list);
        }
    }

    fn add_video(&self, out: Arc<VideoOutput>) {
        if let Ok(mut o) = self.video.write() {
            let mut list = o.as_ref().clone();
            list.push(out);
            *o = Arc::new(list);
        }
    }

    /// Stops forwarding to `subscriber`.
    pub fn remove_outputs(&self, subscriber: SessionId) {
        if let Ok(mut o) = self.audio.write() {
            if o.iter().any(|x| x.subscriber == subscriber) {
                *o = Arc::new(
                    o.iter()
                        .filter(|x| x.subscriber != subscriber)
                        .cloned()
                        .collect(),
                );
            }
        }
        if let Ok(mut o) = self.video.write() {
            if o.iter().any(|x| x.subscriber == subscriber) {
                *o = Arc::new(
                    o.iter()
                        .filter(|x| x.subscriber != subscriber)
                        .cloned()
                        .collect(),
                );
            }
        }
    }

    /// Stops all forwarding.
    pub fn close(&self) {
        self.closed.cancel();
        if let Ok(mut o) = self.audio.write() {
            *o = Arc::default();
        }
        if let Ok(mut o) = self.video.write() {
            *o = Arc::default();
        }
    }

    /// Subscribers currently attached.
    pub fn subscriber_count(&self) -> usize {
        let mut s: Vec<SessionId> = Vec::new();
        if let Ok(o) = self.audio.read() {
            s.extend(o.iter().map(|x| x.subscriber));
        }
        if let Ok(o) = self.video.read() {
            s.extend(o.iter().map(|x| x.subscriber));
        }
        s.sort_unstable();
        s.dedup();
        s.len()
    }
}

/// A session's peer connection and its negotiation state.
pub struct MediaPeer {
    /// The server's media ports, which the connection's sockets are on.
    ports: Arc<kaigi_rtc::MediaPorts>,
    /// The address offers advertise instead of the ports' (a 1:1 NAT).
    external: Option<std::net::IpAddr>,
    pc: Box<dyn PeerConnection>,
    /// What the connection's congestion controller and pacer know of the
    /// path to the client: the layers sent to it fit its estimate.
    budget: Arc<SendBudget>,
    /// The largest size the client shows each user's video at.
    sizes: HashMap<(UserId, StreamType), VideoSize>,
    /// Trials of larger layers.
    trials: Trials,
    /// Events from the connection, for the session task.
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    gathering: Arc<Gathering>,
    negotiating: bool,
    renegotiate: bool,
    subscriptions: HashMap<(SessionId, StreamType), Subscription>,
    /// Publications to ask for a keyframe once the negotiation in flight
    /// ends.
    keyframes_after: Vec<(SessionId, StreamType)>,
    /// Numbers this session's outgoing tracks: each subscription's tracks
    /// get new ids, so the client sees them as new.
    tracks_made: u64,
    /// The receive-only transceivers of the current publications, and
    /// what each receives.
    receiving: Vec<(Arc<dyn RtpTransceiver>, StreamType, Slot)>,
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
        Ok(MediaPeer {
            ports,
            external,
            pc: Box::new(peer.pc),
            budget: peer.budget,
            sizes: HashMap::new(),
            trials: Trials::default(),
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
            .any(|(p, ..)| p.strong_count() > 0)
    }

    /// The publishers this session receives, and what of each.
    pub fn subscriptions(&self) -> Vec<(Arc<Publication>, StreamKinds)> {
        self.subscriptions
            .values()
            .filter_map(|(p, kinds, ..)| p.upgrade().map(|p| (p, *kinds)))
            .collect()
    }

    /// Retires the receive-only transceivers of the publication of
    /// `stream_type` that ended. They stay `recvonly` (a client may still
    /// be bound to them; nothing arriving on them is forwarded) and count
    /// as ended m-lines.
    pub fn retire_receiving(&mut self, stream_type: StreamType) {
        let before = self.receiving.len();
        self.receiving.retain(|(_, t, _)| *t != stream_type);
        self.ended += before - self.receiving.len();
    }

    /// Adds receive-only transceivers for what the client will publish as
    /// `stream_type`: audio, then each of the video's `layers`, largest
    /// first.
    pub async fn receive(
        &mut self,
        stream_type: StreamType,
        kinds: StreamKinds,
        layers: usize,
    ) -> Result<(), RtcError> {
        let mut slots = Vec::new();
        if kinds.audio {
            slots.push((RtpCodecKind::Audio, 0));
        }
        if kinds.video {
            slots.extend((0..layers.max(1)).map(|l| (RtpCodecKind::Video, l)));
        }
        for slot in slots {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            let t = self
                .pc
                .add_transceiver_from_kind(slot.0, Some(init))
                .await
                .map_err(RtcError::from_display)?;
            self.receiving.push((t, stream_type, slot));
        }
        Ok(())
    }

    /// What an arriving track is: the stream type and slot of the
    /// receive-only transceiver it arrived on (`None`: not a current
    /// publication's).
    pub async fn slot_of(&self, remote: &Arc<dyn TrackRemote>) -> Option<(StreamType, Slot)> {
        for (t, stream_type, slot) in &self.receiving {
            if let Ok(Some(receiver)) = t.receiver().await {
                if std::ptr::addr_eq(Arc::as_ptr(receiver.track()), Arc::as_ptr(remote)) {
                    return Some((*stream_type, *slot));
                }
            }
        }
        None
    }

    /// Records the largest size the client shows `user`'s video of
    /// `stream_type` at.
    pub fn set_video_size(&mut self, user: UserId, stream_type: StreamType, size: VideoSize) {
        if size.is_unlimited() {
            self.sizes.remove(&(user, stream_type));
        } else {
            self.sizes.insert((user, stream_type), size);
        }
    }

    /// The largest size the client shows `publication`'s video at (no
    /// limit when it never said).
    fn shown_at(&self, publication: &Publication) -> VideoSize {
        self.sizes
            .get(&(publication.user.clone(), publication.stream_type))
            .copied()
            .unwrap_or_default()
    }

    /// The sizes recorded, to carry over to a replacement connection.
    pub fn video_sizes(&self) -> HashMap<(UserId, StreamType), VideoSize> {
        self.sizes.clone()
    }

    /// Chooses the layer of every video this client receives from the
    /// connection's estimate (see [`simulcast::allocate`]). Returns the
    /// publications to ask for a keyframe of a layer, and the users'
    /// streams whose video to this client paused (`true`) or resumed
    /// (`false`).
    pub fn allocate(&mut self, now: Instant) -> (Keyframes, Vec<(UserId, StreamType, bool)>) {
        let held: Vec<(Arc<Publication>, Arc<VideoOutput>)> = self
            .subscriptions
            .values()
            .filter_map(|(p, _, _, out)| Some((p.upgrade()?, out.clone()?)))
            .collect();
        let audio = self
            .subscriptions
            .values()
            .filter(|(p, kinds, ..)| kinds.audio && p.upgrade().is_some_and(|p| p.kinds.audio))
            .count();
        let cands: Vec<Candidate<'_>> = held
            .iter()
            .map(|(p, out)| {
                let limit = self.shown_at(p);
                // The largest layer the publisher must send for this subscriber.
                out.set_cap(simulcast::cap(&p.layers, limit));
                Candidate {
                    layers: &p.layers,
                    limit,
                    output: out,
                }
            })
            .collect();
        // Until the path has shown a limit, every video gets the largest
        // layer it is shown at: the estimate so far only leads what was
        // sent (a room of 25 videos on a LAN would otherwise start paused
        // and come back one trial at a time).
        let path = Path {
            estimate_bps: self
                .budget
                .estimate_bps()
                .filter(|_| self.budget.constrained()),
            queue_delay: self.budget.queue_delay(now),
            loss: self.budget.loss(),
            network_queue: self.budget.network_queue(),
        };
        tracing::trace!(?path, "choosing layers");
        let changes = allocate(&cands, path, audio, &mut self.trials, now);
        self.budget.set_probe(self.trials.probe_bps());
        let mut keyframes = Vec::new();
        let mut paused = Vec::new();
        for c in changes {
            let p = &held[c.index].0;
            if let Some(layer) = c.keyframe {
                keyframes.push((p.clone(), layer));
            }
            if let Some(on) = c.paused {
                paused.push((p.user.clone(), p.stream_type, on));
            }
        }
        (keyframes, paused)
    }

    /// What a new video may take at first: the estimate's room for video
    /// shared with the videos already received.
    fn first_room(&self) -> f64 {
        let estimate = self
            .budget
            .estimate_bps()
            .unwrap_or(kaigi_rtc::SERVER_START_BITRATE);
        let videos = 1 + self
            .subscriptions
            .values()
            .filter(|s| s.3.is_some())
            .count();
        (estimate * simulcast::VIDEO_SHARE - simulcast::AUDIO_BPS) / videos as f64
    }

    /// Whether the server paused `user`'s video of `stream_type` to this
    /// client.
    pub fn video_paused(&self, user: &UserId, stream_type: StreamType) -> bool {
        self.subscriptions.values().any(|(p, _, _, out)| {
            out.as_ref().is_some_and(|o| o.told_paused())
                && p.upgrade()
                    .is_some_and(|p| &p.user == user && p.stream_type == stream_type)
        })
    }

    /// Whether any video is received (so layers are worth choosing).
    pub fn receives_video(&self) -> bool {
        self.subscriptions.values().any(|(.., out)| out.is_some())
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
        let key = (publication.session, publication.stream_type);
        match self.subscriptions.get(&key) {
            Some((_, had, ..)) if *had == kinds => return Ok(false),
            Some(_) => {
                self.unsubscribe(me, key.0, key.1).await?;
            }
            None => {}
        }
        let stream_id = publication.media_stream_id();
        let user = stream_id.as_str();
        let mut transceivers = Vec::new();
        let mut video = None;
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
            if kind == RtpCodecKind::Audio {
                publication.add_audio(Output {
                    subscriber: me,
                    track: local,
                    ssrc,
                });
                continue;
            }
            let out = Arc::new(VideoOutput::new(
                me,
                local.clone(),
                ssrc,
                publication.first_layer(self.first_room()),
            ));
            out.set_cap(simulcast::cap(
                &publication.layers,
                self.shown_at(publication),
            ));
            publication.add_video(out.clone());
            video = Some(out.clone());
            // The subscriber's PLIs go to the publisher, for the layer it
            // receives.
            let weak = Arc::downgrade(publication);
            tokio::spawn(async move {
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = local.poll().await {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        match (weak.upgrade(), out.layer()) {
                            (Some(p), Some(layer)) => p.request_keyframe(layer).await,
                            (Some(_), None) => {}
                            (None, _) => break,
                        }
                    }
                }
            });
        }
        self.subscriptions.insert(
            key,
            (Arc::downgrade(publication), kinds, transceivers, video),
        );
        if kinds.video {
            self.keyframes_after.push(key);
        }
        Ok(true)
    }

    /// Stops sending `publisher`'s stream of `stream_type` to this session
    /// (`me`).
    pub async fn unsubscribe(
        &mut self,
        me: SessionId,
        publisher: SessionId,
        stream_type: StreamType,
    ) -> Result<bool, RtcError> {
        let Some((publication, _, transceivers, _)) =
            self.subscriptions.remove(&(publisher, stream_type))
        else {
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
        for (publication, ..) in self.subscriptions.values() {
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

    /// Whether the connection has any m-line to offer: a fresh one with
    /// nothing received or sent has none, and an offer without m-lines
    /// carries no ICE credentials a client could use.
    pub fn carries_anything(&self) -> bool {
        !self.receiving.is_empty() || !self.subscriptions.is_empty()
    }

    /// Whether an offer awaits its answer.
    pub fn negotiating(&self) -> bool {
        self.negotiating
    }

    /// Applies the client's answer. Returns the publications to ask for a
    /// keyframe (of a layer) now, and whether another offer is due.
    pub async fn answer(
        &mut self,
        sdp: String,
    ) -> Result<(Vec<(Arc<Publication>, usize)>, bool), RtcError> {
        if !self.negotiating {
            return Err(RtcError(
                "an answer arrived with no offer outstanding".into(),
            ));
        }
        let desc = RTCSessionDescription::answer(sdp).map_err(RtcError::from_display)?;
        let applied = self.pc.set_remote_description(desc).await;
        self.negotiating = false;
        applied.map_err(RtcError::from_display)?;
        let keyframes = std::mem::take(&mut self.keyframes_after)
            .into_iter()
            .filter_map(|key| {
                let (p, _, _, out) = self.subscriptions.get(&key)?;
                Some((p.upgrade()?, out.as_ref()?.layer()?))
            })
            .collect();
        Ok((keyframes, std::mem::take(&mut self.renegotiate)))
    }

    /// Closes the connection, freeing its sockets and tasks.
    pub async fn close(self) {
        kaigi_rtc::close_peer(self.pc.as_ref()).await;
    }
}
