//! The registry's behaviours, one test each.
use super::*;

const APP: SdkAppId = SdkAppId(1);
const MAIN: StreamType = StreamType::Main;
const SUB: StreamType = StreamType::Sub;

fn place(room: RoomId, user: &str) -> Place {
    Place {
        app: APP,
        room,
        user: UserId::new(user).unwrap(),
    }
}

fn num(n: u64) -> RoomId {
    RoomId::num(n).unwrap()
}

#[test]
fn join_announces_and_lists_others() {
    let mut r = Registry::new();
    let (j, fx) = r
        .join(1, place(num(7), "a"), Role::Anchor.into(), None, 100)
        .unwrap();
    assert!(j.users.is_empty() && j.created_room && fx.is_empty());
    let (j, fx) = r
        .join(2, place(num(7), "b"), Role::Audience.into(), None, 101)
        .unwrap();
    assert_eq!(
        j.users,
        vec![PeerInfo {
            user_id: UserId::new("a").unwrap(),
            role: Role::Anchor
        }]
    );
    assert_eq!(
        fx,
        vec![Effect::Broadcast {
            to: vec![1],
            msg: ServerMessage::PeerJoin {
                user_id: UserId::new("b").unwrap(),
                role: Role::Audience
            }
        }]
    );
    assert_eq!(
        r.join(2, place(num(8), "b"), Role::Anchor.into(), None, 1),
        Err(JoinError::AlreadyInRoom(num(7)))
    );
}

#[test]
fn duplicate_user_kicks_earlier_silently_for_others() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "dup"), Role::Anchor.into(), None, 0)
        .unwrap();
    let (j, fx) = r
        .join(3, place(num(7), "dup"), Role::Anchor.into(), None, 0)
        .unwrap();
    assert_eq!(j.replaced, Some(2));
    assert_eq!(
        fx,
        vec![Effect::Kick {
            session: 2,
            reason: KickReason::DuplicateUserId
        }]
    );
    // The replaced session leaving later changes nothing.
    assert!(r.leave(2, PeerLeaveReason::Left).is_empty());
    assert_eq!(r.room(APP, &num(7)).unwrap().len(), 2);
    // And it may not resume.
    assert_eq!(
        r.join(9, place(num(7), "dup"), Role::Anchor.into(), Some(2), 0),
        Err(JoinError::ResumeBanned(KickReason::DuplicateUserId))
    );
}

#[test]
fn a_takeover_with_another_role_announces_the_role() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "dup"), Role::Anchor.into(), None, 0)
        .unwrap();
    let (_, fx) = r
        .join(3, place(num(7), "dup"), Role::Audience.into(), None, 0)
        .unwrap();
    assert_eq!(
        fx,
        vec![
            Effect::Broadcast {
                to: vec![1],
                msg: ServerMessage::PeerRole {
                    user_id: UserId::new("dup").unwrap(),
                    role: Role::Audience
                }
            },
            Effect::Kick {
                session: 2,
                reason: KickReason::DuplicateUserId
            },
        ]
    );
}

#[test]
fn stream_messages_come_before_their_offers() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    let fx = r.publish(1, MAIN, AV).unwrap();
    assert!(
        matches!(
            &fx[..],
            [
                Effect::Broadcast {
                    msg: ServerMessage::StreamAdded { .. },
                    ..
                },
                Effect::Subscribe { .. }
            ]
        ),
        "{fx:?}"
    );
    let fx = r.unpublish(1, MAIN);
    assert!(
        matches!(
            &fx[..],
            [
                Effect::Broadcast {
                    msg: ServerMessage::StreamRemoved { .. },
                    ..
                },
                Effect::Unsubscribe { .. }
            ]
        ),
        "{fx:?}"
    );
}

#[test]
fn numeric_and_string_rooms_are_apart() {
    let mut r = Registry::new();
    r.join(1, place(num(123), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    let (j, fx) = r
        .join(
            2,
            place(RoomId::str("123").unwrap(), "a"),
            Role::Anchor.into(),
            None,
            0,
        )
        .unwrap();
    assert!(j.created_room && j.replaced.is_none() && fx.is_empty());
    assert_eq!(r.rooms(APP).len(), 2);
}

#[test]
fn last_leave_removes_room() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    let fx = r.leave(1, PeerLeaveReason::Timeout);
    assert_eq!(
        fx,
        vec![Effect::Broadcast {
            to: vec![2],
            msg: ServerMessage::PeerLeave {
                user_id: UserId::new("a").unwrap(),
                reason: PeerLeaveReason::Timeout
            }
        }]
    );
    assert!(r.leave(2, PeerLeaveReason::Left).is_empty());
    assert!(r.room(APP, &num(7)).is_none());
    assert_eq!(r.counts(), (0, 0));
}

#[test]
fn remove_and_dismiss() {
    let mut r = Registry::new();
    for (s, u) in [(1, "a"), (2, "b"), (3, "c")] {
        r.join(s, place(num(7), u), Role::Anchor.into(), None, 0)
            .unwrap();
    }
    let users = [UserId::new("b").unwrap(), UserId::new("zz").unwrap()];
    let (removed, fx) = r.remove_users(APP, &num(7), &users, 0).unwrap();
    assert_eq!(removed, vec![UserId::new("b").unwrap()]);
    assert_eq!(
        fx[0],
        Effect::Kick {
            session: 2,
            reason: KickReason::RemovedByAdmin
        }
    );
    assert!(matches!(&fx[1], Effect::Broadcast { to, .. } if to.len() == 2));
    assert_eq!(r.remove_users(APP, &num(8), &users, 0), Err(RoomNotExist));
    let fx = r.dismiss(APP, &num(7), 0).unwrap();
    assert_eq!(fx.len(), 2);
    assert!(fx.iter().all(|e| matches!(
        e,
        Effect::Kick {
            reason: KickReason::RoomDismissed,
            ..
        }
    )));
    assert_eq!(r.dismiss(APP, &num(7), 0), Err(RoomNotExist));
    assert_eq!(r.counts(), (0, 0));
    assert!(r.leave(1, PeerLeaveReason::Left).is_empty());
}

const AV: StreamKinds = StreamKinds {
    audio: true,
    video: true,
};

/// The (subscriber, publisher) pairs of the Subscribe (or, with
/// `unsubscribe`, Unsubscribe) effects, sorted.
fn pairs(fx: &[Effect], unsubscribe: bool) -> Vec<(SessionId, SessionId)> {
    typed(fx, unsubscribe)
        .into_iter()
        .map(|(s, p, _)| (s, p))
        .collect()
}

fn subscribes(fx: &[Effect]) -> Vec<(SessionId, SessionId)> {
    pairs(fx, false)
}

fn unsubscribes(fx: &[Effect]) -> Vec<(SessionId, SessionId)> {
    pairs(fx, true)
}

#[test]
fn publish_subscribes_everyone_and_newcomers() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    let fx = r.publish(1, MAIN, AV).unwrap();
    assert_eq!(subscribes(&fx), [(2, 1)]);
    assert!(fx.iter().any(|e| matches!(e, Effect::Broadcast { msg: ServerMessage::StreamAdded { .. }, to } if to == &vec![2])));
    assert_eq!(r.publish(1, MAIN, AV), Err(PublishError::AlreadyPublishing));
    let fx = r.mute(1, MAIN, None, Some(true)).unwrap();
    assert!(matches!(
        &fx[..],
        [Effect::Broadcast {
            msg: ServerMessage::StreamUpdated {
                video_muted: true,
                audio_muted: false,
                ..
            },
            ..
        }]
    ));
    assert!(
        r.mute(1, MAIN, None, Some(true)).unwrap().is_empty(),
        "no change, no update"
    );
    assert_eq!(
        r.mute(2, MAIN, Some(true), None),
        Err(PublishError::NotPublishing)
    );
    let (_, fx) = r
        .join(3, place(num(7), "c"), Role::Audience.into(), None, 0)
        .unwrap();
    assert_eq!(subscribes(&fx), [(3, 1)]);
    assert_eq!(r.publish(3, MAIN, AV), Err(PublishError::Audience));
    assert_eq!(r.publish(99, MAIN, AV), Err(PublishError::NotInRoom));
    let fx = r.unpublish(1, MAIN);
    assert_eq!(unsubscribes(&fx), [(2, 1), (3, 1)]);
    assert!(r.unpublish(1, MAIN).is_empty());
}

#[test]
fn manual_subscribers_choose_what_they_receive() {
    let mut r = Registry::new();
    let manual = Member {
        role: Role::Anchor,
        auto_subscribe: false,
    };
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "m"), manual, None, 0).unwrap();
    let a = UserId::new("a").unwrap();
    assert_eq!(
        r.subscribe(2, &a, MAIN, AV).unwrap_err(),
        PublishError::StreamNotFound,
        "nothing published yet"
    );
    let fx = r.publish(1, MAIN, AV).unwrap();
    assert!(subscribes(&fx).is_empty(), "manual: told, not subscribed");
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            msg: ServerMessage::StreamAdded { .. },
            ..
        }
    )));
    let audio_only = StreamKinds {
        audio: true,
        video: false,
    };
    let (got, fx) = r.subscribe(2, &a, MAIN, audio_only).unwrap();
    assert_eq!(got, audio_only);
    assert!(matches!(
        &fx[..],
        [Effect::Subscribe {
            subscriber: 2,
            publisher: 1,
            stream_type: StreamType::Main,
            kinds
        }] if *kinds == audio_only
    ));
    assert_eq!(unsubscribes(&r.unsubscribe(2, &a, MAIN).unwrap()), [(2, 1)]);
    assert_eq!(
        r.subscribe(2, &UserId::new("m").unwrap(), MAIN, AV)
            .unwrap_err(),
        PublishError::StreamNotFound,
        "not one's own stream"
    );
    assert_eq!(
        r.subscribe(2, &UserId::new("nobody").unwrap(), MAIN, AV)
            .unwrap_err(),
        PublishError::StreamNotFound
    );
    assert_eq!(
        r.subscribe(9, &a, MAIN, AV).unwrap_err(),
        PublishError::NotInRoom
    );
    // A manual newcomer hears of existing streams but is not subscribed.
    let (_, fx) = r.join(3, place(num(7), "n"), manual, None, 0).unwrap();
    assert!(subscribes(&fx).is_empty());
    assert!(!fx.is_empty());
}

#[test]
fn switching_to_audience_ends_the_stream() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Audience.into(), None, 0)
        .unwrap();
    assert_eq!(r.publish(2, MAIN, AV), Err(PublishError::Audience));
    let fx = r.switch_role(2, Role::Anchor).unwrap();
    assert!(
        matches!(&fx[..], [Effect::Broadcast { to, msg: ServerMessage::PeerRole { role: Role::Anchor, .. } }] if to == &vec![1])
    );
    assert!(r.switch_role(2, Role::Anchor).unwrap().is_empty());
    r.publish(2, MAIN, AV).unwrap();
    let fx = r.switch_role(2, Role::Audience).unwrap();
    assert_eq!(unsubscribes(&fx), [(1, 2)]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            msg: ServerMessage::StreamRemoved { .. },
            ..
        }
    )));
    assert_eq!(r.publish(2, MAIN, AV), Err(PublishError::Audience));
    let b = UserId::new("b").unwrap();
    let members = r.room(APP, &num(7)).unwrap().participants();
    assert_eq!(
        members.iter().find(|(u, _)| **u == b).unwrap().1.role,
        Role::Audience
    );
    assert_eq!(r.switch_role(9, Role::Anchor), Err(PublishError::NotInRoom));
}

#[test]
fn leaving_publishers_are_unsubscribed_and_takeover_swaps_streams() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.publish(1, MAIN, AV).unwrap();
    let fx = r.leave(1, PeerLeaveReason::Left);
    assert_eq!(unsubscribes(&fx), [(2, 1)]);
    r.join(3, place(num(7), "c"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.publish(3, MAIN, AV).unwrap();
    // c signs in again elsewhere: its old stream ends for b, no leave.
    let (_, fx) = r
        .join(4, place(num(7), "c"), Role::Anchor.into(), None, 0)
        .unwrap();
    assert_eq!(unsubscribes(&fx), [(2, 3)]);
    assert!(!fx.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            msg: ServerMessage::PeerLeave { .. },
            ..
        }
    )));
    // Removal by an admin also ends the stream.
    r.publish(4, MAIN, AV).unwrap();
    let (_, fx) = r
        .remove_users(APP, &num(7), &[UserId::new("c").unwrap()], 0)
        .unwrap();
    assert_eq!(unsubscribes(&fx), [(2, 4)]);
}

#[test]
fn kicked_memory_is_bounded_in_time() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.dismiss(APP, &num(7), 0).unwrap();
    r.join(
        2,
        place(num(7), "b"),
        Role::Anchor.into(),
        None,
        KICKED_MEMORY_SECS + 10,
    )
    .unwrap();
    r.dismiss(APP, &num(7), KICKED_MEMORY_SECS + 10).unwrap();
    assert!(!r.kicked.contains_key(&1));
    assert!(r.kicked.contains_key(&2));
}

/// (subscriber, publisher, type) of every subscribe (or unsubscribe) effect.
fn typed(fx: &[Effect], unsubscribe: bool) -> Vec<(SessionId, SessionId, StreamType)> {
    let mut v: Vec<_> = fx
        .iter()
        .filter_map(|e| match (e, unsubscribe) {
            (
                Effect::Subscribe {
                    subscriber,
                    publisher,
                    stream_type,
                    ..
                },
                false,
            )
            | (
                Effect::Unsubscribe {
                    subscriber,
                    publisher,
                    stream_type,
                },
                true,
            ) => Some((*subscriber, *publisher, *stream_type)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn added_types(fx: &[Effect]) -> Vec<StreamType> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Broadcast {
                msg: ServerMessage::StreamAdded { stream_type, .. },
                ..
            } => Some(*stream_type),
            _ => None,
        })
        .collect()
}

#[test]
fn a_user_publishes_a_main_and_a_sub_stream_each_on_its_own() {
    let mut r = Registry::new();
    r.join(1, place(num(7), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(7), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    let video = StreamKinds {
        audio: false,
        video: true,
    };
    let fx = r.publish(1, MAIN, AV).unwrap();
    assert_eq!(typed(&fx, false), [(2, 1, MAIN)]);
    let fx = r.publish(1, SUB, video).unwrap();
    assert_eq!(typed(&fx, false), [(2, 1, SUB)]);
    assert_eq!(added_types(&fx), [SUB]);
    assert_eq!(
        r.publish(1, SUB, video),
        Err(PublishError::AlreadyPublishing)
    );
    // Muting one says which.
    let fx = r.mute(1, SUB, None, Some(true)).unwrap();
    assert!(matches!(
        &fx[..],
        [Effect::Broadcast {
            msg: ServerMessage::StreamUpdated {
                stream_type: StreamType::Sub,
                video_muted: true,
                ..
            },
            ..
        }]
    ));
    // A newcomer hears of both and receives both.
    let (_, fx) = r
        .join(3, place(num(7), "c"), Role::Anchor.into(), None, 0)
        .unwrap();
    assert_eq!(added_types(&fx), [MAIN, SUB]);
    assert_eq!(typed(&fx, false), [(3, 1, MAIN), (3, 1, SUB)]);
    // Subscribing to one type names it; the other stays.
    let a = UserId::new("a").unwrap();
    let (_, fx) = r.subscribe(2, &a, SUB, video).unwrap();
    assert_eq!(typed(&fx, false), [(2, 1, SUB)]);
    assert_eq!(
        typed(&r.unsubscribe(2, &a, SUB).unwrap(), true),
        [(2, 1, SUB)]
    );
    // Stopping the share ends only the sub stream.
    let fx = r.unpublish(1, SUB);
    assert_eq!(typed(&fx, true), [(2, 1, SUB), (3, 1, SUB)]);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Broadcast {
            msg: ServerMessage::StreamRemoved {
                stream_type: StreamType::Sub,
                ..
            },
            ..
        }
    )));
    assert!(r.unpublish(1, SUB).is_empty());
    assert_eq!(
        r.subscribe(2, &a, SUB, video).unwrap_err(),
        PublishError::StreamNotFound
    );
    // A forced exit ends both.
    r.publish(1, SUB, video).unwrap();
    let (_, fx) = r
        .remove_users(APP, &num(7), std::slice::from_ref(&a), 0)
        .unwrap();
    assert_eq!(
        typed(&fx, true),
        [(2, 1, MAIN), (2, 1, SUB), (3, 1, MAIN), (3, 1, SUB)]
    );
}

#[test]
fn leaving_or_becoming_an_audience_ends_every_stream() {
    let mut r = Registry::new();
    r.join(1, place(num(8), "a"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.join(2, place(num(8), "b"), Role::Anchor.into(), None, 0)
        .unwrap();
    r.publish(1, MAIN, AV).unwrap();
    r.publish(1, SUB, AV).unwrap();
    let fx = r.switch_role(1, Role::Audience).unwrap();
    assert_eq!(typed(&fx, true), [(2, 1, MAIN), (2, 1, SUB)]);
    r.switch_role(1, Role::Anchor).unwrap();
    r.publish(1, SUB, AV).unwrap();
    let fx = r.leave(1, PeerLeaveReason::Left);
    assert_eq!(typed(&fx, true), [(2, 1, SUB)]);
}
