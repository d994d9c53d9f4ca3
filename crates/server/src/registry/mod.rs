//! The room registry: who is in which room. Sans-IO: every operation takes
//! its inputs (and the time) and returns the effects the I/O layer must
//! carry out, so it is tested without sockets or clocks.

mod types;

use std::collections::{HashMap, VecDeque};

use kaigi_proto::signal::{PeerInfo, PeerLeaveReason, ServerMessage};
use kaigi_proto::{KickReason, Role, RoomId, SdkAppId, UserId};

pub use types::*;

/// How long a forced-out session is remembered, so that it cannot resume.
const KICKED_MEMORY_SECS: u64 = 600;
/// At most this many forced-out sessions are remembered.
const KICKED_MEMORY_MAX: usize = 100_000;

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
                video_paused: false,
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

    /// Who hears `session`'s chat: its user, and the others in its room.
    pub fn chat_audience(&self, session: SessionId) -> Option<(UserId, Vec<SessionId>)> {
        let place = self.places.get(&session)?;
        let room = self.rooms.get(&(place.app, place.room.clone()))?;
        Some((place.user.clone(), room.sessions_except(session)))
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
mod tests;
