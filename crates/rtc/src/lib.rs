//! kaigi-rtc: the WebRTC setup Kaigi's SFU and SDK share, so both ends
//! agree on codecs and behave alike: the codec table (H.264 constrained
//! baseline, Opus), the interceptor chain (defaults plus keyframe requests
//! delivered to the application), fast ICE checks, and peer construction.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    Packet, Slot, StreamInfo, TaggedPacket, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sansio::Protocol;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, Registry,
    SettingEngineBuilder,
};

pub mod estimate;
pub mod guard;
pub mod mux;
pub mod pacing;
pub mod quality;

pub use mux::{MediaPorts, DEFAULT_MEDIA_PORT};
pub use pacing::{AudioFirstPacer, SendBudget};

pub use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// The payload type Kaigi offers H.264 with.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// The payload type Kaigi offers Opus with.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// H.264's RTP clock.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Opus's RTP clock.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;

/// Why building or driving a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebRTC: {0}")]
pub struct RtcError(pub String);

impl RtcError {
    /// Wraps any displayable error.
    pub fn from_display(e: impl std::fmt::Display) -> Self {
        RtcError(e.to_string())
    }
}

/// H.264 constrained baseline, packetization mode 1, with NACK and PLI
/// feedback: what every browser can send and receive.
pub fn h264_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/H264".to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: feedback(&[("nack", ""), ("nack", "pli"), ("ccm", "fir")]),
        },
        payload_type: H264_PAYLOAD_TYPE,
    }
}

/// Opus, 48 kHz, with in-band FEC.
pub fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: AUDIO_CLOCK_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

fn feedback(list: &[(&str, &str)]) -> Vec<rtc::rtp_transceiver::rtp_sender::RTCPFeedback> {
    list.iter()
        .map(
            |(typ, parameter)| rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
                typ: (*typ).to_owned(),
                parameter: (*parameter).to_owned(),
            },
        )
        .collect()
}

/// The codec for a kind.
pub fn codec_for(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    match kind {
        RtpCodecKind::Audio => opus_codec(),
        _ => h264_codec(),
    }
}

/// A track description for a local track of `kind`, in media stream
/// `stream_id`, with a random SSRC.
pub fn track(stream_id: &str, track_id: &str, kind: RtpCodecKind) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random::<u32>()),
                ..Default::default()
            },
            codec: codec_for(kind).rtp_codec,
            ..Default::default()
        }],
    )
}

/// A picture loss indication for `media_ssrc`.
pub fn pli(media_ssrc: u32) -> Box<dyn rtc::rtcp::Packet> {
    Box::new(PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    })
}

/// Whether an RTCP packet asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Marks inbound keyframe requests (PLI, FIR) for the application. Inbound
/// RTCP otherwise ends in the interceptor chain, and an SFU must relay
/// these to the publisher, whose encoder must act on them.
#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// How many times a missing packet is asked for.
pub const NACKS_PER_PACKET: u16 = 3;

/// Sent packets kept per stream for retransmission on NACK.
pub const NACK_HISTORY: u16 = 256;

/// Where a client's send estimate starts, in bits per second: enough for
/// the full picture (see the SDK's encoder ladder), so a clean path starts
/// at full quality, and a thin one is flooded for no longer than the
/// first feedback takes.
pub const START_BITRATE: f64 = 800_000.0;
/// The lowest send estimate: audio and a small picture.
pub const MIN_BITRATE: f64 = 150_000.0;
/// The highest send estimate.
pub const MAX_BITRATE: f64 = 2_500_000.0;

/// Where GCC starts on the server's paths to clients: it forwards what
/// publishers send, which it does not choose, so GCC itself assumes the
/// path carries it until feedback shows congestion…
pub const SERVER_GCC_START_BITRATE: f64 = 3_000_000.0;
/// …and the estimate the SFU chooses simulcast layers by starts here (a
/// middle layer of a 640×480 stream, with room for audio) and grows with
/// what the client acknowledges: a first layer that floods a thin
/// downlink costs seconds of video.
pub const SERVER_START_BITRATE: f64 = 1_000_000.0;
/// The lowest server estimate: audio.
pub const SERVER_MIN_BITRATE: f64 = 60_000.0;
/// The highest server estimate.
pub const SERVER_MAX_BITRATE: f64 = 200_000_000.0;

/// How long the ICE agent waits, once a peer-reflexive pair works, for a
/// better one (UDP rather than TCP) before it takes it.
pub const PRFLX_ACCEPTANCE_WAIT: Duration = Duration::from_millis(250);

/// Where a peer connection's sockets are.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Its own UDP socket and TCP listener, on free ports of this address
    /// (a client).
    Own(IpAddr),
    /// Virtual ones on a server's shared media ports.
    Shared(Arc<MediaPorts>),
}

/// Transport-wide congestion control: the header extension and feedback
/// in the media engine, GCC (held to what arrives, see `estimate`)
/// wire-most, the audio-first pacer, and the transport-wide sequence
/// numbers and feedback in both directions.
fn congestion_control(
    registry: Registry,
    media: &mut MediaEngine,
    budget: Arc<SendBudget>,
    (gcc_start, start, min, max): (f64, f64, f64, f64),
) -> Result<Registry, RtcError> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                },
                kind,
                None,
            )
            .map_err(RtcError::from_display)?;
    }
    Ok(registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(
                estimate::LeadingGcc::new(gcc_start, min, max)
                    .leading_from(start)
                    .publishing_loss(budget.clone()),
            )
            .build(),
        )
        .with(Slot::Pacer, AudioFirstPacer::new(budget))
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build()))
}

/// A peer connection and what its congestion control knows.
pub struct Peer<P> {
    /// The connection.
    pub pc: P,
    /// Its send estimate and pacer queue.
    pub budget: Arc<SendBudget>,
}

/// Builds a peer connection with Kaigi's codecs and interceptors, its
/// sockets where `transport` says (host candidates only).
pub async fn build_peer(
    transport: Transport,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Peer<impl PeerConnection>, RtcError> {
    let mut media = MediaEngine::default();
    media
        .register_codec(h264_codec(), RtpCodecKind::Video)
        .map_err(RtcError::from_display)?;
    media
        .register_codec(opus_codec(), RtpCodecKind::Audio)
        .map_err(RtcError::from_display)?;
    // The defaults (NACK, TWCC receiver, RTCP reports), but with a shorter
    // retransmission history: the default 1024 packets per sent stream is
    // the largest share of an SFU's memory per forwarded stream, and
    // NACKs for packets older than ~2 s of video come too late to help.
    configure_simulcast_extension_headers(&mut media).map_err(RtcError::from_display)?;
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new().with_size(NACK_HISTORY).build(),
        )
        // A packet is asked for a few times, not for as long as it is in
        // the window: one that a thin link's sender dropped on purpose
        // (see `pacing`) would otherwise be asked for every 100 ms for
        // seconds, and each answer competes with new video.
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        );
    // Each side estimates what its path to the other carries (GCC from
    // the other's transport-wide feedback), paces its video at that rate
    // with audio ahead of it, and publishes what it knows in a
    // `SendBudget` its encoder (client) follows.
    let budget = Arc::new(SendBudget::default());
    let range = match transport {
        Transport::Own(_) => (START_BITRATE, START_BITRATE, MIN_BITRATE, MAX_BITRATE),
        Transport::Shared(_) => (
            SERVER_GCC_START_BITRATE,
            SERVER_START_BITRATE,
            SERVER_MIN_BITRATE,
            SERVER_MAX_BITRATE,
        ),
    };
    let registry = congestion_control(registry, &mut media, budget.clone(), range)?;
    let registry = configure_rtcp_reports(registry)
        // Application-most: every other interceptor has seen the RTCP first.
        .with(Slot::from(14_000), KeyframeRequests::default());
    // The default 200 ms between ICE checks dominates connection time on a
    // LAN or loopback; 20 ms brings setup to tens of milliseconds.
    // No mDNS: Kaigi's candidates are addresses, and an mDNS socket means
    // a multicast bind on 224.0.0.251:5353 per connection (which fails on
    // a host without a default route).
    let settings = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        // Kaigi gathers host candidates only, so a client behind a NAT is
        // always a peer-reflexive candidate to the server, over UDP and over
        // TCP. The default wait of a second for a better pair delayed every
        // such call's media by that second (bench `networks`); no wait at
        // all let a TCP pair that validated first win over UDP that works.
        // A quarter second lets UDP win wherever it gets through.
        .with_prflx_acceptance_min_wait(Some(PRFLX_ACCEPTANCE_WAIT));
    // On shared ports, the connection's ICE username fragment is what
    // routes its STUN to it, so it is chosen here.
    let (settings, runtime, bind) = match transport {
        Transport::Own(bind) => (settings, guard::GuardedRuntime::new(), bind),
        Transport::Shared(ports) => {
            let (ufrag, pwd) = ports.credentials();
            let bind = ports.udp_addr().ip();
            (
                settings.with_ice_credentials(ufrag.clone(), pwd),
                guard::GuardedRuntime::shared(ports, ufrag),
                bind,
            )
        }
    };
    let settings = settings.build();
    let runtime = runtime.map_err(RtcError::from_display)?;
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_runtime(Arc::new(runtime))
        .with_handler(handler)
        .with_udp_addrs(vec![format!("{}", std::net::SocketAddr::new(bind, 0))])
        .with_tcp_addrs(vec![format!("{}", std::net::SocketAddr::new(bind, 0))])
        .build()
        .await
        .map_err(RtcError::from_display)?;
    Ok(Peer { pc, budget })
}

/// What a peer connection reports to its owner.
pub enum PeerEvent {
    /// A remote track arrived.
    Track(Arc<dyn webrtc::media_stream::track_remote::TrackRemote>),
    /// The connection failed.
    Failed,
}

/// Whether ICE candidate gathering has completed, and a way to wait for it.
#[derive(Default)]
pub struct Gathering {
    done: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// Forwards a peer connection's events to a channel and tracks gathering.
pub struct EventHandler {
    events: tokio::sync::mpsc::UnboundedSender<PeerEvent>,
    gathering: Arc<Gathering>,
}

/// A handler for [`build_peer`], the receiver of its events, and its
/// gathering state.
pub fn event_handler() -> (
    Arc<EventHandler>,
    tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    Arc<Gathering>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gathering = Arc::new(Gathering::default());
    (
        Arc::new(EventHandler {
            events: tx,
            gathering: gathering.clone(),
        }),
        rx,
        gathering,
    )
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for EventHandler {
    async fn on_ice_gathering_state_change(
        &self,
        state: webrtc::peer_connection::RTCIceGatheringState,
    ) {
        if state == webrtc::peer_connection::RTCIceGatheringState::Complete {
            self.gathering
                .done
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.gathering.notify.notify_waiters();
        }
    }

    async fn on_connection_state_change(
        &self,
        state: webrtc::peer_connection::RTCPeerConnectionState,
    ) {
        if state == webrtc::peer_connection::RTCPeerConnectionState::Failed {
            let _ = self.events.send(PeerEvent::Failed);
        }
    }

    async fn on_track(&self, track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(track));
    }
}

/// How long candidate gathering may take before a description goes out
/// with what there is (host candidates only: normally milliseconds).
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long closing a peer connection may take. Closing waits for the
/// connection's driver; a driver that does not answer must not hold up
/// whoever is closing (a session ending, a client leaving).
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Closes `pc` within [`CLOSE_DEADLINE`]; whether it closed in time.
pub async fn close_peer(pc: &dyn PeerConnection) -> bool {
    match tokio::time::timeout(CLOSE_DEADLINE, pc.close()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing a peer connection");
            true
        }
        Err(_) => {
            tracing::warn!("a peer connection did not close in time; abandoned");
            false
        }
    }
}

/// Hands the passive TCP candidates of a remote description (`sdp`, just
/// applied) to `pc` as if trickled: webrtc-rs 0.21 dials a passive TCP
/// candidate only when it arrives through `add_ice_candidate`, not when it
/// is in the description, so without this a client whose network blocks
/// UDP never tries the server's TCP port.
pub async fn dial_tcp_candidates(pc: &dyn PeerConnection, sdp: &str) {
    let mut mid: Option<String> = None;
    let mut index: Option<u16> = None;
    let mut seen = std::collections::HashSet::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            index = Some(index.map_or(0, |i| i + 1));
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim().to_owned());
        } else if let Some(c) = line.strip_prefix("a=") {
            let passive_tcp =
                c.starts_with("candidate:") && c.contains(" tcp ") && c.contains("tcptype passive");
            // One per address: BUNDLE repeats them in every m-section.
            if passive_tcp
                && seen.insert(
                    c.split_whitespace()
                        .skip(4)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            {
                let init = webrtc::peer_connection::RTCIceCandidateInit {
                    candidate: c.trim().to_owned(),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: index,
                    ..Default::default()
                };
                if let Err(e) = pc.add_ice_candidate(init).await {
                    tracing::debug!(error = %e, "a TCP candidate was not taken");
                }
            }
        }
    }
}

/// Sets `desc` as the local description and returns the SDP to send, with
/// every candidate in it (no trickle ICE): the first time, it waits for
/// gathering to complete.
pub async fn set_local_and_gather(
    pc: &dyn PeerConnection,
    desc: webrtc::peer_connection::RTCSessionDescription,
    gathering: &Gathering,
) -> Result<String, RtcError> {
    let waiter = gathering.notify.notified();
    pc.set_local_description(desc)
        .await
        .map_err(RtcError::from_display)?;
    if !gathering.done.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = tokio::time::timeout(GATHER_TIMEOUT, waiter).await;
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| RtcError("no local description".into()))
}
