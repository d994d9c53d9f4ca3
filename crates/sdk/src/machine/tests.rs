//! The session machine's behaviours, one test each, with no socket and no
//! clock: time is an `Instant` the test moves.

use super::*;
use crate::options::ReconnectPolicy;
use kaigi_proto::signal::{ErrorMessage, PeerInfo};

const INTERVAL: u64 = 1_000;
const TIMEOUT: u64 = 5_000;

fn user(u: &str) -> UserId {
    UserId::new(u).unwrap()
}

fn joined(session: &str, users: &[&str]) -> Joined {
    Joined {
        req_id: JOIN_REQ_ID,
        session_id: session.into(),
        room: kaigi_proto::signal::RoomRef::from(&RoomId::Num(7)),
        role: Role::Anchor,
        users: users
            .iter()
            .map(|u| PeerInfo {
                user_id: user(u),
                role: Role::Anchor,
            })
            .collect(),
        heartbeat_interval_ms: INTERVAL,
        heartbeat_timeout_ms: TIMEOUT,
    }
}

fn settings() -> Settings {
    Settings {
        reconnect: ReconnectPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(1_000),
            give_up_after: Duration::from_secs(10),
        },
        leave_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    }
}

fn machine(users: &[&str]) -> (Machine, Instant) {
    let t0 = Instant::now();
    let m = Machine::new(settings(), RoomId::Num(7), &joined("s1", users), t0, 42);
    (m, t0)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sends(out: &[Output]) -> Vec<&ClientMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<&ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Emit(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn replies(out: &[Output]) -> Vec<(Token, Result<(), ClientError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply(t, r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

fn state_changes(out: &[Output]) -> Vec<ConnectionState> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionStateChanged { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

/// Drops the connection and returns when the first rejoin attempt is due.
fn drop_connection(m: &mut Machine, now: Instant) -> Instant {
    let out = m.connection_lost(now);
    assert!(out.contains(&Output::Media(MediaAction::Reset)), "{out:?}");
    m.poll_timeout().expect("an attempt is scheduled")
}

#[test]
fn the_first_ping_goes_at_once_then_one_per_interval_and_a_pong_measures_the_round_trip() {
    let (mut m, t0) = machine(&[]);
    assert_eq!(m.poll_timeout(), Some(t0));
    let out = m.timeout(t0);
    assert_eq!(sends(&out), vec![&ClientMessage::Ping { req_id: 2 }]);
    // Nothing more until the interval has passed.
    assert!(sends(&m.timeout(t0 + ms(INTERVAL - 1))).is_empty());
    assert_eq!(
        sends(&m.timeout(t0 + ms(INTERVAL))),
        vec![&ClientMessage::Ping { req_id: 3 }]
    );
    m.server(ServerMessage::Pong { req_id: 3 }, t0 + ms(INTERVAL + 40));
    // The quality report uses the signaling round trip before media.
    let out = m.timeout(t0 + QUALITY_INTERVAL);
    assert!(out.contains(&Output::Media(MediaAction::MeasureLink)));
    let out = m.link(LinkCounters::default());
    match events(&out)[..] {
        [ClientEvent::NetworkQuality { uplink_rtt, .. }] => assert_eq!(*uplink_rtt, 40),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn silence_past_the_heartbeat_timeout_starts_reconnecting() {
    let (mut m, t0) = machine(&["bob"]);
    m.timeout(t0);
    // Heard at 3 s: the deadline moves.
    m.server(
        ServerMessage::PeerJoin {
            user_id: user("carol"),
            role: Role::Anchor,
        },
        t0 + ms(3_000),
    );
    assert!(state_changes(&m.timeout(t0 + ms(TIMEOUT + 1))).is_empty());
    let out = m.timeout(t0 + ms(3_000 + TIMEOUT));
    assert_eq!(state_changes(&out), vec![ConnectionState::Reconnecting]);
    assert!(out.contains(&Output::Media(MediaAction::Reset)));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        ClientEvent::NetworkQuality {
            uplink_network_quality: grade::DISCONNECTED,
            ..
        }
    )));
    // The room and its peers are kept while reconnecting.
    assert_eq!(m.status().state, ConnectionState::Reconnecting);
    assert_eq!(m.status().peers.len(), 2);
}

#[test]
fn reconnect_attempts_back_off_with_jitter_up_to_the_max_then_give_up() {
    let (mut m, t0) = machine(&[]);
    let mut now = t0;
    let mut at = drop_connection(&mut m, now);
    let mut waits = Vec::new();
    let mut gave_up = None;
    for _ in 0..100 {
        waits.push(at.duration_since(now));
        let out = m.timeout(at);
        assert_eq!(
            out,
            vec![Output::Rejoin {
                resume: "s1".into(),
                role: Role::Anchor
            }]
        );
        // Nothing is scheduled while the attempt runs.
        assert_eq!(m.poll_timeout(), None);
        now = at + ms(50);
        let out = m.rejoin_failed(ClientError::Unreachable("refused".into()), now);
        if out.contains(&Output::Done) {
            gave_up = Some(out);
            break;
        }
        at = m.poll_timeout().expect("the next attempt");
    }
    let out = gave_up.expect("gave up within the policy");
    assert_eq!(state_changes(&out), vec![ConnectionState::Disconnected]);
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, ClientEvent::Error { name, .. } if name == "RECONNECT_FAILED")));
    // 200 ms doubling to the 1 s cap, each ±20 %.
    let bases = [200, 400, 800, 1_000, 1_000];
    for (w, base) in waits.iter().zip(bases) {
        let w = w.as_millis() as u64;
        assert!(
            w >= base * 8 / 10 && w <= base * 12 / 10,
            "{w} ms for {base} ms"
        );
    }
    assert!(now.duration_since(t0) >= Duration::from_secs(10));
    assert!(m.is_done());
}

#[test]
fn an_error_that_retrying_cannot_fix_gives_up_at_once() {
    let (mut m, t0) = machine(&[]);
    let at = drop_connection(&mut m, t0);
    m.timeout(at);
    let out = m.rejoin_failed(
        ClientError::Auth {
            code: ErrorCode::UsersigExpired,
            message: "expired".into(),
        },
        at,
    );
    assert_eq!(state_changes(&out), vec![ConnectionState::Disconnected]);
    assert_eq!(out.last(), Some(&Output::Done));
}

#[test]
fn each_forced_exit_closes_media_says_why_and_ends() {
    for reason in [
        KickReason::DuplicateUserId,
        KickReason::RemovedByAdmin,
        KickReason::RoomDismissed,
    ] {
        let (mut m, t0) = machine(&["bob"]);
        m.command(
            Command::Request(Request::SwitchRole(Role::Audience)),
            Some(9),
            t0,
        );
        let out = m.server(
            ServerMessage::banned(reason, kaigi_proto::PROTOCOL_VERSION),
            t0,
        );
        assert_eq!(
            out,
            vec![
                Output::Reply(9, Err(ClientError::ConnectionLost)),
                Output::Media(MediaAction::CloseAll),
                Output::Status(Status {
                    state: ConnectionState::Disconnected,
                    room: None,
                    peers: BTreeMap::new()
                }),
                Output::Emit(ClientEvent::ClientBanned {
                    reason,
                    message: reason.message().into()
                }),
                Output::Emit(ClientEvent::ConnectionStateChanged {
                    prev_state: ConnectionState::Connected,
                    state: ConnectionState::Disconnected
                }),
                Output::Close,
                Output::Done,
            ],
            "{reason}"
        );
        assert_eq!(m.poll_timeout(), None);
    }
}

#[test]
fn a_refused_resume_is_a_forced_exit() {
    let (mut m, t0) = machine(&[]);
    let at = drop_connection(&mut m, t0);
    m.timeout(at);
    let out = m.rejoin_failed(ClientError::Banned(KickReason::RemovedByAdmin), at);
    assert!(out.contains(&Output::Media(MediaAction::CloseAll)));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        ClientEvent::ClientBanned {
            reason: KickReason::RemovedByAdmin,
            ..
        }
    )));
    assert_eq!(state_changes(&out), vec![ConnectionState::Disconnected]);
    assert!(m.is_done());
}

#[test]
fn leave_while_reconnecting_cancels_the_attempt_and_ends_at_once() {
    // Between attempts.
    let (mut m, t0) = machine(&[]);
    drop_connection(&mut m, t0);
    let out = m.command(Command::Leave, Some(1), t0 + ms(10));
    assert!(!out.contains(&Output::CancelRejoin));
    assert!(out.contains(&Output::Media(MediaAction::CloseAll)));
    assert!(out.contains(&Output::Reply(1, Ok(()))));
    assert_eq!(out.last(), Some(&Output::Done));
    // During an attempt.
    let (mut m, t0) = machine(&[]);
    let at = drop_connection(&mut m, t0);
    m.timeout(at);
    let out = m.command(Command::Leave, Some(1), at);
    assert_eq!(out[0], Output::CancelRejoin);
    assert_eq!(state_changes(&out), vec![ConnectionState::Disconnected]);
    assert!(out.contains(&Output::Reply(1, Ok(()))));
    // A late result of the cancelled attempt changes nothing.
    assert!(m.rejoined(&joined("s2", &[]), Vec::new(), at).is_empty());
}

#[test]
fn commands_while_reconnecting_fail_as_connection_lost() {
    let (mut m, t0) = machine(&[]);
    drop_connection(&mut m, t0);
    let out = m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }),
        Some(3),
        t0,
    );
    assert_eq!(
        out,
        vec![Output::Reply(3, Err(ClientError::ConnectionLost))]
    );
}

#[test]
fn leave_sends_leave_waits_for_left_and_closes() {
    let (mut m, t0) = machine(&["bob"]);
    let out = m.command(Command::Leave, Some(1), t0);
    assert_eq!(out[0], Output::Media(MediaAction::CloseAll));
    assert_eq!(sends(&out), vec![&ClientMessage::Leave { req_id: 2 }]);
    // Room events while leaving are not reported.
    let out = m.server(
        ServerMessage::PeerLeave {
            user_id: user("bob"),
            reason: PeerLeaveReason::Left,
        },
        t0,
    );
    assert!(out.is_empty());
    let out = m.server(ServerMessage::Left { req_id: 2 }, t0 + ms(5));
    assert_eq!(out[0], Output::Close);
    assert_eq!(state_changes(&out), vec![ConnectionState::Disconnected]);
    assert!(out.contains(&Output::Reply(1, Ok(()))));
    assert_eq!(out.last(), Some(&Output::Done));
}

#[test]
fn leave_without_an_answer_times_out_and_still_ends() {
    let (mut m, t0) = machine(&[]);
    m.command(Command::Leave, Some(1), t0);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    let out = m.timeout(t0 + Duration::from_secs(5));
    assert!(out.contains(&Output::Reply(1, Err(ClientError::Timeout(5_000)))));
    assert_eq!(out.last(), Some(&Output::Done));
    // A dropped connection while leaving is a completed leave.
    let (mut m, t0) = machine(&[]);
    m.command(Command::Leave, Some(1), t0);
    let out = m.connection_lost(t0);
    assert!(out.contains(&Output::Reply(1, Ok(()))));
}

#[test]
fn requests_without_a_reply_time_out() {
    let (mut m, t0) = machine(&[]);
    m.timeout(t0);
    let mute = Request::Mute {
        audio: Some(true),
        video: None,
    };
    let out = m.command(Command::Request(mute), Some(5), t0);
    assert_eq!(
        out[0],
        Output::Media(MediaAction::SetMuted {
            audio: Some(true),
            video: None
        })
    );
    let out = m.timeout(t0 + Duration::from_secs(10));
    assert!(out.contains(&Output::Reply(5, Err(ClientError::Timeout(10_000)))));
    // The late reply is ignored.
    assert!(replies(&m.server(ServerMessage::Muted { req_id: 3 }, t0)).is_empty());
}

#[test]
fn a_publish_without_a_reply_times_out_and_is_withdrawn() {
    let (mut m, t0) = machine(&[]);
    m.timeout(t0);
    m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }),
        Some(4),
        t0,
    );
    let out = m.timeout(t0 + Duration::from_secs(10));
    assert!(out.contains(&Output::Reply(4, Err(ClientError::Timeout(10_000)))));
    assert!(out.contains(&Output::Media(MediaAction::Unpublish(StreamType::Main))));
    assert!(sends(&out)
        .iter()
        .any(|m| matches!(m, ClientMessage::Unpublish { .. })));
}

#[test]
fn publish_offer_answer_published() {
    let (mut m, t0) = machine(&[]);
    let out = m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: false,
            layers: Vec::new(),
        }),
        Some(4),
        t0,
    );
    assert_eq!(
        out,
        vec![
            Output::Media(MediaAction::Publish(StreamType::Main)),
            Output::Send(ClientMessage::Publish {
                stream_type: StreamType::Main,
                req_id: 2,
                audio: true,
                video: false,
                simulcast: Vec::new(),
            })
        ]
    );
    // A second publish while the first is pending is refused here.
    let out = m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }),
        Some(5),
        t0,
    );
    assert!(matches!(
        &replies(&out)[..],
        [(
            5,
            Err(ClientError::Server {
                code: ErrorCode::AlreadyPublishing,
                ..
            })
        )]
    ));
    let out = m.server(
        ServerMessage::Offer {
            sdp: "v=0".into(),
            publish_req_id: Some(2),
            new_connection: false,
        },
        t0,
    );
    assert_eq!(
        out,
        vec![Output::Media(MediaAction::Answer {
            sdp: "v=0".into(),
            carries_publish: Some(StreamType::Main),
            new_connection: false
        })]
    );
    assert_eq!(
        m.answered(Ok("answer".into())),
        vec![Output::Send(ClientMessage::Answer {
            sdp: "answer".into()
        })]
    );
    let out = m.server(ServerMessage::Published { req_id: 2 }, t0);
    assert_eq!(
        out,
        vec![
            Output::Media(MediaAction::StartSending(StreamType::Main)),
            Output::Reply(4, Ok(()))
        ]
    );
    // A failed answer is reported as an error event.
    let out = m.answered(Err(ClientError::Media("bad sdp".into())));
    assert!(matches!(
        &events(&out)[..],
        [ClientEvent::Error { name, .. }] if name == "MEDIA_FAILED"
    ));
}

#[test]
fn a_refused_second_publish_keeps_the_first() {
    let (mut m, t0) = machine(&[]);
    m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }),
        Some(4),
        t0,
    );
    let out = m.server(
        ServerMessage::Error(ErrorMessage::new(
            Some(2),
            ErrorCode::AlreadyPublishing,
            "already publishing",
        )),
        t0,
    );
    assert_eq!(
        out[0],
        Output::Media(MediaAction::CancelPublish(StreamType::Main))
    );
    assert!(matches!(&replies(&out)[..], [(4, Err(_))]));
}

#[test]
fn mute_events_only_for_what_changed() {
    let (mut m, t0) = machine(&["bob"]);
    m.server(
        ServerMessage::StreamAdded {
            user_id: user("bob"),
            stream_type: Default::default(),
            audio: true,
            video: true,
            audio_muted: false,
            video_muted: true,
        },
        t0,
    );
    let out = m.server(
        ServerMessage::StreamUpdated {
            user_id: user("bob"),
            stream_type: Default::default(),
            audio_muted: true,
            video_muted: true,
            video_paused: false,
        },
        t0,
    );
    let names: Vec<_> = events(&out).iter().map(|e| e.name()).collect();
    assert_eq!(names, ["mute-audio", "stream-updated"]);
}

#[test]
fn a_rejoin_reports_who_came_and_went_asks_again_and_publishes_again() {
    let (mut m, t0) = machine(&["bob", "carol"]);
    m.command(
        Command::Request(Request::Subscribe {
            stream_type: StreamType::Main,
            user: user("bob"),
            audio: true,
            video: false,
        }),
        Some(3),
        t0,
    );
    m.server(
        ServerMessage::Subscribed {
            req_id: 2,
            user_id: user("bob"),
            stream_type: Default::default(),
            audio: true,
            video: false,
        },
        t0,
    );
    m.command(
        Command::Publish(Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }),
        Some(4),
        t0,
    );
    m.server(ServerMessage::Published { req_id: 3 }, t0);
    let at = drop_connection(&mut m, t0);
    m.timeout(at);
    let out = m.rejoined(
        &joined("s2", &["bob", "dave"]),
        vec![Publishing {
            stream_type: StreamType::Main,
            audio: true,
            video: true,
            layers: Vec::new(),
        }],
        at,
    );
    let ev: Vec<_> = events(&out).iter().map(|e| e.name()).collect();
    assert_eq!(ev, ["peer-leave", "peer-join", "connection-state-changed"]);
    assert_eq!(
        sends(&out),
        vec![
            &ClientMessage::Subscribe {
                stream_type: StreamType::Main,
                req_id: 2,
                user_id: "bob".into(),
                audio: true,
                video: false
            },
            &ClientMessage::Publish {
                stream_type: StreamType::Main,
                req_id: 3,
                audio: true,
                video: true,
                simulcast: Vec::new(),
            }
        ]
    );
    assert!(out.contains(&Output::Media(MediaAction::Republish)));
    assert_eq!(m.status().state, ConnectionState::Connected);
    // The next drop resumes the new session.
    let at = drop_connection(&mut m, at);
    assert_eq!(
        m.timeout(at),
        vec![Output::Rejoin {
            resume: "s2".into(),
            role: Role::Anchor
        }]
    );
}

#[test]
fn an_audience_switch_ends_the_publication_here_too() {
    let (mut m, t0) = machine(&[]);
    m.command(
        Command::Request(Request::SwitchRole(Role::Audience)),
        Some(3),
        t0,
    );
    let out = m.server(
        ServerMessage::RoleSwitched {
            req_id: 2,
            role: Role::Audience,
        },
        t0,
    );
    assert!(out.contains(&Output::Media(MediaAction::Unpublish(StreamType::Main))));
    assert_eq!(m.status().room, Some((RoomId::Num(7), Role::Audience)));
    assert!(out.contains(&Output::Reply(3, Ok(()))));
}
