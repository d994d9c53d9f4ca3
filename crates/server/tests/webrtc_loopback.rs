//! The media path the SFU is built on, proven in isolation: H.264 from the
//! stamped test pattern goes publisher → SFU (RTP forwarded untouched) →
//! subscriber over real WebRTC (ICE, DTLS-SRTP) on 127.0.0.1. The publisher
//! makes no periodic keyframes: the SFU's PLI must reach its encoder, or the
//! subscriber never decodes anything.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaigi_media::{H264Decoder, H264Encoder, H264Settings, Stamp, TestPattern};
use kaigi_rtc::{build_peer, is_keyframe_request, pli, track, RtpCodecKind};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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
    let gathered = Arc::new(Notify::new());
    let (tx, tracks) = mpsc::unbounded_channel();
    let pc = build_peer(
        kaigi_rtc::Transport::Own(LOCALHOST),
        Arc::new(Handler {
            gathered: gathered.clone(),
            tracks: tx,
        }),
    )
    .await
    .unwrap()
    .pc;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_publisher_to_sfu_to_subscriber_with_pli_relay() {
    // Publisher side: the SFU offers to receive; the publisher answers with
    // its track, which reuses the offered transceiver.
    let mut sfu_in = peer().await;
    let publisher = peer().await;
    let recvonly = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Recvonly,
        ..Default::default()
    };
    sfu_in
        .pc
        .add_transceiver_from_kind(RtpCodecKind::Video, Some(recvonly))
        .await
        .unwrap();
    let camera = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            track("alice", "alice-video", RtpCodecKind::Video),
        )
        .unwrap(),
    );
    let cam = camera.clone();
    let pub_pc = &publisher.pc;
    negotiate(&sfu_in, &publisher, async move {
        pub_pc.add_track(cam as Arc<dyn TrackLocal>).await.unwrap();
    })
    .await;
    assert_eq!(
        publisher.pc.get_transceivers().await.len(),
        1,
        "the offered transceiver was reused"
    );
    let sender = publisher.pc.get_senders().await.into_iter().next().unwrap();

    // Subscriber side: the SFU offers to send a forwarding track.
    let sfu_out = peer().await;
    let mut subscriber = peer().await;
    let forward = Arc::new(TrackLocalStaticRTP::new(track(
        "alice",
        "alice-video",
        RtpCodecKind::Video,
    )));
    sfu_out
        .pc
        .add_track(forward.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    negotiate(&sfu_out, &subscriber, async {}).await;

    // The SFU forwards the publisher's RTP without decoding, and asks for a
    // keyframe as soon as it has the track.
    let fwd_ssrc = forward.ssrcs().await[0];
    let plis_sent = Arc::new(AtomicUsize::new(0));
    let sent = plis_sent.clone();
    tokio::spawn(async move {
        let incoming = sfu_in.tracks.recv().await.unwrap();
        let media_ssrc = incoming.ssrcs().await[0];
        incoming.write_rtcp(vec![pli(media_ssrc)]).await.unwrap();
        sent.fetch_add(1, Ordering::SeqCst);
        while let Some(evt) = incoming.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(mut p) = evt {
                p.header.ssrc = fwd_ssrc;
                if forward.write_rtp(p).await.is_err() {
                    break;
                }
            }
        }
    });

    // The publisher: keyframes only on request.
    let wanted = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let (cam, w, r) = (camera.clone(), wanted.clone(), requests.clone());
    tokio::spawn(async move {
        while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = cam.poll().await {
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                r.fetch_add(1, Ordering::SeqCst);
                w.store(true, Ordering::SeqCst);
            }
        }
    });
    let pt = sender.get_parameters().await.unwrap().rtp_parameters.codecs[0].payload_type;
    let ssrc = camera.ssrcs().await[0];
    tokio::spawn(async move {
        let mut pattern = TestPattern::new(640, 480).unwrap();
        let mut enc = H264Encoder::new(H264Settings {
            keyframe_interval: 100_000,
            ..Default::default()
        })
        .unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for _ in 0..150 {
            tick.tick().await;
            if wanted.swap(false, Ordering::SeqCst) {
                enc.request_keyframe();
            }
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
                    // Before the requested keyframe the decoder has no
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
    assert_eq!(plis_sent.load(Ordering::SeqCst), 1);
    assert!(
        requests.load(Ordering::SeqCst) >= 1,
        "the publisher's encoder heard the PLI"
    );
}
