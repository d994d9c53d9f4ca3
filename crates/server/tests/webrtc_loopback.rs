//! The media path the SFU is built on, proven in isolation: H.264 from the
//! stamped test pattern goes publisher → SFU (RTP forwarded untouched) →
//! subscriber over real WebRTC (ICE, DTLS-SRTP) on 127.0.0.1, and the
//! subscriber decodes the stamps with increasing counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::{H264Decoder, H264Encoder, H264Settings, Stamp, TestPattern};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, Registry,
};

fn h264() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/H264".to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 102,
    }
}

struct Handler {
    gathered: Arc<Notify>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

struct Peer {
    pc: Box<dyn PeerConnection>,
    gathered: Arc<Notify>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

async fn peer() -> Peer {
    let mut media = MediaEngine::default();
    media.register_codec(h264(), RtpCodecKind::Video).unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let gathered = Arc::new(Notify::new());
    let (tx, tracks) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gathered.clone(),
            tracks: tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    Peer {
        pc: Box::new(pc),
        gathered,
        tracks,
    }
}

/// Offer from `a`, answer from `b`, no trickle (host candidates gather at once).
async fn negotiate(a: &Peer, b: &Peer, before_answer: impl std::future::Future<Output = ()>) {
    let offer = a.pc.create_offer(None).await.unwrap();
    a.pc.set_local_description(offer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), a.gathered.notified())
        .await
        .unwrap();
    b.pc.set_remote_description(a.pc.local_description().await.unwrap())
        .await
        .unwrap();
    before_answer.await;
    let answer = b.pc.create_answer(None).await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.gathered.notified())
        .await
        .unwrap();
    a.pc.set_remote_description(b.pc.local_description().await.unwrap())
        .await
        .unwrap();
}

fn track(id: &str) -> MediaStreamTrack {
    MediaStreamTrack::new(
        format!("{id}-stream"),
        format!("{id}-video"),
        format!("{id}-video"),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random::<u32>()),
                ..Default::default()
            },
            codec: h264().rtp_codec,
            ..Default::default()
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_publisher_to_sfu_to_subscriber() {
    // Publisher side: the SFU offers to receive; the publisher answers with its track.
    let mut sfu_in = peer().await;
    let publisher = peer().await;
    sfu_in
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let camera = Arc::new(TrackLocalStaticSample::new(Instant::now(), track("pub")).unwrap());
    let cam = camera.clone();
    let pub_pc = &publisher.pc;
    negotiate(&sfu_in, &publisher, async move {
        pub_pc.add_track(cam as Arc<dyn TrackLocal>).await.unwrap();
    })
    .await;
    let sender = publisher.pc.get_senders().await.into_iter().next().unwrap();

    // Subscriber side: the SFU offers to send a forwarding track.
    let sfu_out = peer().await;
    let mut subscriber = peer().await;
    let forward = Arc::new(TrackLocalStaticRTP::new(track("fwd")));
    sfu_out
        .pc
        .add_track(forward.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    negotiate(&sfu_out, &subscriber, async {}).await;

    // The SFU forwards the publisher's RTP without decoding.
    let fwd_ssrc = forward.ssrcs().await[0];
    tokio::spawn(async move {
        let incoming = sfu_in.tracks.recv().await.unwrap();
        while let Some(evt) = incoming.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(mut p) = evt {
                p.header.ssrc = fwd_ssrc;
                if forward.write_rtp(p).await.is_err() {
                    break;
                }
            }
        }
    });

    // The publisher sends 90 frames at 30 fps, a keyframe every second (the
    // SFU proper relays PLI instead; frames sent before forwarding starts
    // are lost to the subscriber).
    let pt = sender.get_parameters().await.unwrap().rtp_parameters.codecs[0].payload_type;
    let ssrc = camera.ssrcs().await[0];
    tokio::spawn(async move {
        let mut pattern = TestPattern::new(640, 480).unwrap();
        let mut enc = H264Encoder::new(H264Settings {
            keyframe_interval: 30,
            ..Default::default()
        })
        .unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for _ in 0..90 {
            tick.tick().await;
            if let Some(e) = enc.encode(&pattern.next_frame()).unwrap() {
                let sample = Sample {
                    data: Bytes::from(e.data),
                    duration: Duration::from_millis(33),
                    ..Sample::new(Instant::now())
                };
                camera
                    .sample_writer(ssrc, pt)
                    .write_sample(&sample)
                    .await
                    .unwrap();
            }
        }
    });

    // The subscriber depacketizes, decodes and reads the stamps.
    let remote = tokio::time::timeout(Duration::from_secs(10), subscriber.tracks.recv())
        .await
        .unwrap()
        .unwrap();
    let mut builder = SampleBuilder::new(64, H264Packet::default(), 90_000);
    let mut dec = H264Decoder::new().unwrap();
    let mut counters = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(evt) = remote.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(p) = evt {
                builder.push(Instant::now(), p);
                while let Some(sample) = builder.pop(Instant::now()) {
                    // Until the first keyframe arrives the decoder has no
                    // parameter sets and refuses; that is expected.
                    if let Ok(Some(frame)) = dec.decode(&sample.data) {
                        if let Some(stamp) = Stamp::read(&frame) {
                            counters.push(stamp.counter);
                        }
                    }
                }
                if counters.len() >= 45 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "decoded {} frames: {counters:?}",
        counters.len()
    );
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
}
