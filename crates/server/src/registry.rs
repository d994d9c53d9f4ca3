//! The room registry: who is in which room. Sans-IO: every operation takes
//! its inputs (and the time) and returns the effects the I/O layer must
//! carry out, so it is tested without sockets or clocks.

use std::collections::{HashMap, VecDeque};

use kaigi_proto::signal::{PeerInfo, PeerLeaveReason, ServerMessage};
use kaigi_proto::{KickReason, Role, RoomId, SdkAppId, UserId};

/// A signaling session (one WebSocket connection), unique per server run.
pub type SessionId = u64;

/// How long a forced-out session is remembered, so that it cannot resume.
const KICKED_MEMORY_SECS: u64 = 600;
/// At most this many forced-out sessions are remembered.
const KICKED_MEMORY_MAX: usize = 100_000;

/// What the I/O layer must do after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send one message to several sessions (serialized once).
    Broadcast {
        /// Recipients.
        to: Vec<SessionId>,
        /// The message.
        msg: ServerMessage,
    },
    /// Attach `publisher`'s stream (the `kinds` of it) to `subscriber`'s
    /// media connection, replacing any earlier subscription to it.
    Subscribe {
        /// Who receives.
        subscriber: SessionId,
        /// Whose stream.
        publisher: SessionId,
        /// What of it.
        kinds: StreamKinds,
    },
    /// Detach `publisher`'s stream from `subscriber`'s media connection.
    Unsubscribe {
        /// Who received.
        subscriber: SessionId,
        /// Whose stream.
        publisher: SessionId,
    },
    /// Tell a session it was forced out (`client-banned`), then close it.
    Kick {
        /// The session.
        session: SessionId,
        /// Why.
        reason: KickReason,
    },
}

/// A participant in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The session that holds this user's place.
    pub session: SessionId,
    /// Their role.
    pub role: Role,
    /// Unix seconds when they joined.
    pub joined_at: u64,
    /// What they publish, if anything.
    pub stream: Option<Stream>,
    /// Whether they receive every stream without asking.
    pub auto_subscribe: bool,
    seq: u64,
}

/// The kinds of media a published stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKinds {
    /// Audio.
    pub audio: bool,
    /// Video.
    pub video: bool,
}

impl StreamKinds {
    /// Neither audio nor video.
    pub const NONE: StreamKinds = StreamKinds {
        audio: false,
        video: false,
    };
}

/// A published stream: what it carries and what is muted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// What it carries.
    pub kinds: StreamKinds,
    /// Audio muted.
    pub audio_muted: bool,
    /// Video muted.
    pub video_muted: bool,
}

impl Stream {
    fn added(&self, user: &UserId) -> ServerMessage {
        ServerMessage::StreamAdded {
            user_id: user.clone(),
            audio: self.kinds.audio,
            video: self.kinds.video,
            audio_muted: self.audio_muted,
            video_muted: self.video_muted,
        }
    }
}

/// Why `publish` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The session is in no room.
    #[error("join a room before publishing")]
    NotInRoom,
    /// Audiences may not publish.
    #[error("an audience cannot publish; switch to the anchor role")]
    Audience,
    /// Already publishing.
    #[error("already publishing; unpublish first")]
    AlreadyPublishing,
    /// `mute` with nothing published.
    #[error("nothing is published")]
    NotPublishing,
    /// `subscribe` to a user who publishes nothing in this room.
    #[error("that user publishes nothing in this room")]
    StreamNotFound,
}

/// A room: created by the first join, removed when the last user goes.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// Unix seconds when the room was created.
    pub created_at: u64,
    participants: HashMap<UserId, Participant>,
}

impl Room {
    /// Participants in join order.
    pub fn participants(&self) -> Vec<(&UserId, &Participant)> {
        let mut v: Vec<_> = self.participants.iter().collect();
        v.sort_by_key(|(_, p)| p.seq);
        v
    }

    /// How many users are in the room.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether the room is empty (never true for a room in the registry).
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// The session's own participant entry (gone if it was replaced).
    fn member_mut(&mut self, user: &UserId) -> Result<&mut Participant, PublishError> {
        self.participants
            .get_mut(user)
            .ok_or(PublishError::NotInRoom)
    }

    fn sessions_except(&self, except: SessionId) -> Vec<SessionId> {
        self.participants
            .values()
            .map(|p| p.session)
            .filter(|s| *s != except)
            .collect()
    }
}

/// Where a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The app.
    pub app: SdkAppId,
    /// The room.
    pub room: RoomId,
    /// The user.
    pub user: UserId,
}

/// Why a join was refused by the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The session is already in a room.
    #[error("this connection is already in room {0}; leave first")]
    AlreadyInRoom(RoomId),
    /// The session it resumes was forced out.
    #[error("the session being resumed was forced out ({0})")]
    ResumeBanned(KickReason),
}

/// How a session takes part in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its role.
    pub role: Role,
    /// Whether it receives every stream without asking.
    pub auto_subscribe: bool,
}

impl From<Role> for Member {
    /// A member with this role that receives every stream.
    fn from(role: Role) -> Self {
        Member {
            role,
            auto_subscribe: true,
        }
    }
}

/// A successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Who else is in the room, in join order.
    pub users: Vec<PeerInfo>,
    /// The session this join took the place of (same user id), if any.
    pub replaced: Option<SessionId>,
    /// Whether this join created the room.
    pub created_room: bool,
}

/// The effects of `publisher`'s stream ending, for everyone in `room`
/// but `except`.
fn stream_removed(
    room: &Room,
    except: SessionId,
    publisher: SessionId,
    user: &UserId,
) -> Vec<Effect> {
    let to: Vec<SessionId> = room
        .participants
        .values()
        .map(|p| p.session)
        .filter(|s| *s != except && *s != publisher)
        .collect();
    if to.is_empty() {
        return Vec::new();
    }
    // The message first: a client hears that the stream ended before the
    // offer that marks its m-lines inactive.
    let unsubscribes = to.iter().map(|s| Effect::Unsubscribe {
        subscriber: *s,
        publisher,
    });
    let mut effects = vec![Effect::Broadcast {
        to: to.clone(),
        msg: ServerMessage::StreamRemoved {
            user_id: user.clone(),
        },
    }];
    effects.extend(unsubscribes);
    effects
}

/// The admin API's "no such room".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room does not exist")]
pub struct RoomNotExist;

/// All rooms of all apps.
#[derive(Debug, Default)]
pub struct Registry {
    rooms: HashMap<(SdkAppId, RoomId), Room>,
    places: HashMap<SessionId, Place>,
    kicked: HashMap<SessionId, KickReason>,
    kicked_order: VecDeque<(u64, SessionId)>,
    next_seq: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `session` in `room` as `user`. If the user is already there under
    /// another session, that session is kicked (`duplicate-user-id`) and this
    /// one takes its place without the others seeing a leave or a join.
    pub fn join(
        &mut self,
        session: SessionId,
        place: Place,
        member: Member,
        resume: Option<SessionId>,
        now: u64,
    ) -> Result<(Joined, Vec<Effect>), JoinError> {
        let Member {
            role,
            auto_subscribe,
        } = member;
        if let Some(p) = self.places.get(&session) {
            return Err(JoinError::AlreadyInRoom(p.room.clone()));
        }
        if let Some(reason) = resume.and_then(|r| self.kicked.get(&r)) {
            return Err(JoinError::ResumeBanned(*reason));
        }
        let key = (place.app, place.room.clone());
        let created_room = !self.rooms.contains_key(&key);
        let room = self.rooms.entry(key).or_insert_with(|| Room {
            created_at: now,
            participants: HashMap::new(),
        });
        let users = room
            .participants()
            .into_iter()
            .filter(|(u, _)| **u != place.user)
            .map(|(u, p)| PeerInfo {
                user_id: u.clone(),
                role: p.role,
            })
            .collect();
        self.next_seq += 1;
        let previous = room.participants.insert(
            place.user.clone(),
            Participant {
                session,
                role,
                joined_at: now,
                stream: None,
                auto_subscribe,
                seq: self.next_seq,
            },
        );
        let mut effects = Vec::new();
        // The newcomer hears of, and (unless it asks itself) receives,
        // every stream already published.
        for (user, p) in room.participants() {
            if let (true, Some(stream)) = (p.session != session, p.stream) {
                effects.push(Effect::Broadcast {
                    to: vec![session],
                    msg: stream.added(user),
                });
                if auto_subscribe {
                    effects.push(Effect::Subscribe {
                        subscriber: session,
                        publisher: p.session,
                        kinds: stream.kinds,
                    });
                }
            }
        }
        let replaced = previous.as_ref().map(|p| p.session);
        match previous {
            Some(old) => {
                // Seamless for the others: the old session's stream ends,
                // but nobody leaves or joins.
                if old.stream.is_some() {
                    effects.extend(stream_removed(room, session, old.session, &place.user));
                }
                // The takeover's role is the user's role now.
                if old.role != role {
                    let to = room.sessions_except(session);
                    if !to.is_empty() {
                        effects.push(Effect::Broadcast {
                            to,
                            msg: ServerMessage::PeerRole {
                                user_id: place.user.clone(),
                                role,
                            },
                        });
                    }
                }
                effects.push(Effect::Kick {
                    session: old.session,
                    reason: KickReason::DuplicateUserId,
                });
            }
            None => {
                let to = room.sessions_except(session);
                if !to.is_empty() {
                    effects.push(Effect::Broadcast {
                        to,
                        msg: ServerMessage::PeerJoin {
                            user_id: place.user.clone(),
                            role,
                        },
                    });
                }
            }
        }
        if let Some(old) = replaced {
            self.places.remove(&old);
            self.remember_kick(old, KickReason::DuplicateUserId, now);
        }
        self.places.insert(session, place);
        Ok((
            Joined {
                users,
                replaced,
                created_room,
            },
            effects,
        ))
    }

    /// Takes `session` out of its room, telling the others why. A session in
    /// no room (already left, or replaced) is a no-op.
    pub fn leave(&mut self, session: SessionId, reason: PeerLeaveReason) -> Vec<Effect> {
        let Some(place) = self.places.remove(&session) else {
            return Vec::new();
        };
        let key = (place.app, place.room);
        let Some(room) = self.rooms.get_mut(&key) else {
            return Vec::new();
        };
        if room.participants.get(&place.user).map(|p| p.session) != Some(session) {
            return Vec::new();
        }
        let gone = room.participants.remove(&place.user);
        if room.participants.is_empty() {
            self.rooms.remove(&key);
            return Vec::new();
        }
        let mut effects = Vec::new();
        if gone.is_some_and(|p| p.stream.is_some()) {
            effects.extend(stream_removed(room, session, session, &place.user));
        }
        effects.push(Effect::Broadcast {
            to: room.sessions_except(session),
            msg: ServerMessage::PeerLeave {
                user_id: place.user,
                reason,
            },
        });
        effects
    }

    /// Where `session` is, and its room.
    fn room_of(&mut self, session: SessionId) -> Option<(Place, &mut Room)> {
        let place = self.places.get(&session)?.clone();
        let room = self.rooms.get_mut(&(place.app, place.room.clone()))?;
        Some((place, room))
    }

    /// Marks `session`'s stream as published: the others are told and
    /// subscribed.
    pub fn publish(
        &mut self,
        session: SessionId,
        kinds: StreamKinds,
    ) -> Result<Vec<Effect>, PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        if me.role == Role::Audience {
            return Err(PublishError::Audience);
        }
        if me.stream.is_some() {
            return Err(PublishError::AlreadyPublishing);
        }
        let stream = Stream {
            kinds,
            audio_muted: false,
            video_muted: false,
        };
        me.stream = Some(stream);
        let others = room.sessions_except(session);
        let mut effects = Vec::new();
        // `stream-added` before the offer that carries the stream.
        if !others.is_empty() {
            effects.push(Effect::Broadcast {
                to: others,
                msg: stream.added(&place.user),
            });
        }
        effects.extend(
            room.participants
                .values()
                .filter(|p| p.session != session && p.auto_subscribe)
                .map(|p| Effect::Subscribe {
                    subscriber: p.session,
                    publisher: session,
                    kinds,
                }),
        );
        Ok(effects)
    }

    /// Changes what of `session`'s stream is muted; the others get
    /// `stream-updated` when anything changed.
    pub fn mute(
        &mut self,
        session: SessionId,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Result<Vec<Effect>, PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        let stream = me.stream.as_mut().ok_or(PublishError::NotPublishing)?;
        let before = *stream;
        stream.audio_muted = audio.unwrap_or(stream.audio_muted);
        stream.video_muted = video.unwrap_or(stream.video_muted);
        let after = *stream;
        let to = room.sessions_except(session);
        if before == after || to.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Effect::Broadcast {
            to,
            msg: ServerMessage::StreamUpdated {
                user_id: place.user.clone(),
                audio_muted: after.audio_muted,
                video_muted: after.video_muted,
            },
        }])
    }

    /// Subscribes `session` to `user`'s stream, or to the `kinds` of it
    /// that the stream carries. Returns what will be received.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        user: &UserId,
        kinds: StreamKinds,
    ) -> Result<(StreamKinds, Vec<Effect>), PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let publisher = room
            .participants
            .get(user)
            .filter(|_| *user != place.user)
            .ok_or(PublishError::StreamNotFound)?;
        let stream = publisher.stream.ok_or(PublishError::StreamNotFound)?;
        let kinds = StreamKinds {
            audio: kinds.audio && stream.kinds.audio,
            video: kinds.video && stream.kinds.video,
        };
        let effect = if kinds.audio || kinds.video {
            Effect::Subscribe {
                subscriber: session,
                publisher: publisher.session,
                kinds,
            }
        } else {
            Effect::Unsubscribe {
                subscriber: session,
                publisher: publisher.session,
            }
        };
        Ok((kinds, vec![effect]))
    }

    /// Stops `session` receiving `user`'s stream. Not receiving it already,
    /// or `user` publishing nothing, is not an error.
    pub fn unsubscribe(
        &mut self,
        session: SessionId,
        user: &UserId,
    ) -> Result<Vec<Effect>, PublishError> {
        let (_, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        Ok(room
            .participants
            .get(user)
            .map(|p| Effect::Unsubscribe {
                subscriber: session,
                publisher: p.session,
            })
            .into_iter()
            .collect())
    }

    /// Changes `session`'s role. Becoming an audience ends its stream. The
    /// others get `peer-role` when the role changed.
    pub fn switch_role(
        &mut self,
        session: SessionId,
        role: Role,
    ) -> Result<Vec<Effect>, PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        if me.role == role {
            return Ok(Vec::new());
        }
        me.role = role;
        let ends_stream = role == Role::Audience && me.stream.take().is_some();
        let mut effects = Vec::new();
        if ends_stream {
            effects.extend(stream_removed(room, session, session, &place.user));
        }
        let to = room.sessions_except(session);
        if !to.is_empty() {
            effects.push(Effect::Broadcast {
                to,
                msg: ServerMessage::PeerRole {
                    user_id: place.user.clone(),
                    role,
                },
            });
        }
        Ok(effects)
    }

    /// Ends `session`'s stream, if it has one.
    pub fn unpublish(&mut self, session: SessionId) -> Vec<Effect> {
        let Some(place) = self.places.get(&session) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&(place.app, place.room.clone())) else {
            return Vec::new();
        };
        match room.participants.get_mut(&place.user) {
            Some(me) if me.session == session && me.stream.is_some() => me.stream = None,
            _ => return Vec::new(),
        }
        stream_removed(room, session, session, &place.user)
    }

    /// Removes users from a room (`RemoveUser`). Users not in the room are
    /// skipped. Returns who was removed.
    pub fn remove_users(
        &mut self,
        app: SdkAppId,
        room_id: &RoomId,
        users: &[UserId],
        now: u64,
    ) -> Result<(Vec<UserId>, Vec<Effect>), RoomNotExist> {
        let key = (app, room_id.clone());
        let room = self.rooms.get_mut(&key).ok_or(RoomNotExist)?;
        let mut effects = Vec::new();
        let mut removed = Vec::new();
        for user in users {
            if let Some(p) = room.participants.remove(user) {
                if p.stream.is_some() {
                    effects.extend(stream_removed(room, p.session, p.session, user));
                }
                effects.push(Effect::Kick {
                    session: p.session,
                    reason: KickReason::RemovedByAdmin,
                });
                removed.push((user.clone(), p.session));
            }
        }
        let remaining: Vec<SessionId> = room.participants.values().map(|p| p.session).collect();
        if room.participants.is_empty() {
            self.rooms.remove(&key);
        } else {
            for (user, _) in &removed {
                effects.push(Effect::Broadcast {
                    to: remaining.clone(),
                    msg: ServerMessage::PeerLeave {
                        user_id: user.clone(),
                        reason: PeerLeaveReason::Removed,
                    },
                });
            }
        }
        for (_, session) in &removed {
            self.places.remove(session);
            self.remember_kick(*session, KickReason::RemovedByAdmin, now);
        }
        Ok((removed.into_iter().map(|(u, _)| u).collect(), effects))
    }

    /// Closes a room (`DismissRoom`): everyone in it is kicked.
    pub fn dismiss(
        &mut self,
        app: SdkAppId,
        room_id: &RoomId,
        now: u64,
    ) -> Result<Vec<Effect>, RoomNotExist> {
        let room = self
            .rooms
            .remove(&(app, room_id.clone()))
            .ok_or(RoomNotExist)?;
        let mut effects = Vec::with_capacity(room.participants.len());
        for p in room.participants.into_values() {
            self.places.remove(&p.session);
            self.remember_kick(p.session, KickReason::RoomDismissed, now);
            effects.push(Effect::Kick {
                session: p.session,
                reason: KickReason::RoomDismissed,
            });
        }
        Ok(effects)
    }

    /// A room of an app.
    pub fn room(&self, app: SdkAppId, room_id: &RoomId) -> Option<&Room> {
        self.rooms.get(&(app, room_id.clone()))
    }

    /// All rooms of an app, ordered by room id (numeric rooms first).
    pub fn rooms(&self, app: SdkAppId) -> Vec<(&RoomId, &Room)> {
        let mut v: Vec<_> = self
            .rooms
            .iter()
            .filter(|((a, _), _)| *a == app)
            .map(|((_, r), room)| (r, room))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Where a session is, if in a room.
    pub fn place(&self, session: SessionId) -> Option<&Place> {
        self.places.get(&session)
    }

    /// Total rooms and participants, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.places.len())
    }

    fn remember_kick(&mut self, session: SessionId, reason: KickReason, now: u64) {
        while let Some(&(t, s)) = self.kicked_order.front() {
            if now.saturating_sub(t) <= KICKED_MEMORY_SECS && self.kicked.len() < KICKED_MEMORY_MAX
            {
                break;
            }
            self.kicked_order.pop_front();
            self.kicked.remove(&s);
        }
        self.kicked.insert(session, reason);
        self.kicked_order.push_back((now, session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: SdkAppId = SdkAppId(1);

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
        let fx = r.publish(1, AV).unwrap();
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
        let fx = r.unpublish(1);
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
        let mut v: Vec<_> = fx
            .iter()
            .filter_map(|e| match (e, unsubscribe) {
                (
                    Effect::Subscribe {
                        subscriber,
                        publisher,
                        ..
                    },
                    false,
                )
                | (
                    Effect::Unsubscribe {
                        subscriber,
                        publisher,
                    },
                    true,
                ) => Some((*subscriber, *publisher)),
                _ => None,
            })
            .collect();
        v.sort();
        v
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
        let fx = r.publish(1, AV).unwrap();
        assert_eq!(subscribes(&fx), [(2, 1)]);
        assert!(fx.iter().any(|e| matches!(e, Effect::Broadcast { msg: ServerMessage::StreamAdded { .. }, to } if to == &vec![2])));
        assert_eq!(r.publish(1, AV), Err(PublishError::AlreadyPublishing));
        let fx = r.mute(1, None, Some(true)).unwrap();
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
            r.mute(1, None, Some(true)).unwrap().is_empty(),
            "no change, no update"
        );
        assert_eq!(
            r.mute(2, Some(true), None),
            Err(PublishError::NotPublishing)
        );
        let (_, fx) = r
            .join(3, place(num(7), "c"), Role::Audience.into(), None, 0)
            .unwrap();
        assert_eq!(subscribes(&fx), [(3, 1)]);
        assert_eq!(r.publish(3, AV), Err(PublishError::Audience));
        assert_eq!(r.publish(99, AV), Err(PublishError::NotInRoom));
        let fx = r.unpublish(1);
        assert_eq!(unsubscribes(&fx), [(2, 1), (3, 1)]);
        assert!(r.unpublish(1).is_empty());
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
            r.subscribe(2, &a, AV).unwrap_err(),
            PublishError::StreamNotFound,
            "nothing published yet"
        );
        let fx = r.publish(1, AV).unwrap();
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
        let (got, fx) = r.subscribe(2, &a, audio_only).unwrap();
        assert_eq!(got, audio_only);
        assert!(matches!(
            &fx[..],
            [Effect::Subscribe {
                subscriber: 2,
                publisher: 1,
                kinds
            }] if *kinds == audio_only
        ));
        assert_eq!(unsubscribes(&r.unsubscribe(2, &a).unwrap()), [(2, 1)]);
        assert_eq!(
            r.subscribe(2, &UserId::new("m").unwrap(), AV).unwrap_err(),
            PublishError::StreamNotFound,
            "not one's own stream"
        );
        assert_eq!(
            r.subscribe(2, &UserId::new("nobody").unwrap(), AV)
                .unwrap_err(),
            PublishError::StreamNotFound
        );
        assert_eq!(r.subscribe(9, &a, AV).unwrap_err(), PublishError::NotInRoom);
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
        assert_eq!(r.publish(2, AV), Err(PublishError::Audience));
        let fx = r.switch_role(2, Role::Anchor).unwrap();
        assert!(
            matches!(&fx[..], [Effect::Broadcast { to, msg: ServerMessage::PeerRole { role: Role::Anchor, .. } }] if to == &vec![1])
        );
        assert!(r.switch_role(2, Role::Anchor).unwrap().is_empty());
        r.publish(2, AV).unwrap();
        let fx = r.switch_role(2, Role::Audience).unwrap();
        assert_eq!(unsubscribes(&fx), [(1, 2)]);
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Broadcast {
                msg: ServerMessage::StreamRemoved { .. },
                ..
            }
        )));
        assert_eq!(r.publish(2, AV), Err(PublishError::Audience));
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
        r.publish(1, AV).unwrap();
        let fx = r.leave(1, PeerLeaveReason::Left);
        assert_eq!(unsubscribes(&fx), [(2, 1)]);
        r.join(3, place(num(7), "c"), Role::Anchor.into(), None, 0)
            .unwrap();
        r.publish(3, AV).unwrap();
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
        r.publish(4, AV).unwrap();
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
}
