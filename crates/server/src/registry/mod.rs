//! The room registry: who is in which room. Sans-IO: every operation takes
//! its inputs (and the time) and returns the effects the I/O layer must
//! carry out, so it is tested without sockets or clocks.

mod types;

use std::collections::{HashMap, VecDeque};

use kaigi_proto::signal::{PeerInfo, PeerLeaveReason, ServerMessage, StreamType};
use kaigi_proto::{KickReason, Role, RoomId, SdkAppId, UserId};

pub use types::*;

/// How long a forced-out session is remembered, so that it cannot resume.
pub const KICKED_MEMORY_SECS: u64 = 600;
/// At most this many forced-out sessions are remembered.
const KICKED_MEMORY_MAX: usize = 100_000;

/// The effects of `publisher`'s streams `ended` ending, for everyone in
/// `room` but `except`.
fn streams_removed(
    room: &Room,
    except: SessionId,
    publisher: SessionId,
    user: &UserId,
    ended: &[StreamType],
) -> Vec<Effect> {
    ended
        .iter()
        .flat_map(|t| stream_removed(room, except, publisher, user, *t))
        .collect()
}

/// The effects of `publisher`'s stream `stream_type` ending, for everyone
/// in `room` but `except`.
fn stream_removed(
    room: &Room,
    except: SessionId,
    publisher: SessionId,
    user: &UserId,
    stream_type: StreamType,
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
        stream_type,
    });
    let mut effects = vec![Effect::Broadcast {
        to: to.clone(),
        msg: ServerMessage::StreamRemoved {
            user_id: user.clone(),
            stream_type,
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
    /// Room events since the last [`Registry::take_events`].
    events: Vec<RoomEvent>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The room events since the last call, oldest first (for webhooks).
    pub fn take_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.events)
    }

    /// What `user` sends in a room now, by [`MediaKind`].
    fn sending(&self, app: SdkAppId, room: &RoomId, user: &UserId) -> [bool; 3] {
        let streams = self
            .rooms
            .get(&(app, room.clone()))
            .and_then(|r| r.participants.get(user))
            .map(|p| p.streams)
            .unwrap_or_default();
        MediaKind::ALL.map(|k| streams.sends(k))
    }

    /// The media events of `user`'s change from sending `before`.
    fn media_events(&mut self, app: SdkAppId, room: &RoomId, user: &UserId, before: [bool; 3]) {
        let after = self.sending(app, room, user);
        for ((kind, was), now) in MediaKind::ALL.into_iter().zip(before).zip(after) {
            if was != now {
                let user = user.clone();
                self.event(
                    app,
                    room,
                    RoomEventKind::Media {
                        user,
                        kind,
                        on: now,
                    },
                );
            }
        }
    }

    fn event(&mut self, app: SdkAppId, room: &RoomId, kind: RoomEventKind) {
        self.events.push(RoomEvent {
            app,
            room: room.clone(),
            kind,
        });
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
                streams: Streams::default(),
                auto_subscribe,
                blocked: Blocked::default(),
                seq: self.next_seq,
            },
        );
        // A block stays with the user through a takeover.
        if let (Some(old), Some(me)) = (&previous, room.participants.get_mut(&place.user)) {
            me.blocked = old.blocked;
        }
        let mut effects = Vec::new();
        // The newcomer hears of, and (unless it asks itself) receives,
        // every stream already published.
        for (user, p) in room.participants() {
            if p.session == session {
                continue;
            }
            for (stream_type, stream) in p.streams.iter() {
                effects.push(Effect::Broadcast {
                    to: vec![session],
                    msg: stream.added(user, stream_type, p.blocked),
                });
                if auto_subscribe {
                    effects.push(Effect::Subscribe {
                        subscriber: session,
                        publisher: p.session,
                        stream_type,
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
                let ended: Vec<StreamType> = old.streams.iter().map(|(t, _)| t).collect();
                effects.extend(streams_removed(
                    room,
                    session,
                    old.session,
                    &place.user,
                    &ended,
                ));
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
        if created_room {
            self.event(place.app, &place.room, RoomEventKind::Created);
        }
        if replaced.is_some() {
            let user = place.user.clone();
            let reason = ExitReason::Duplicate;
            self.event(
                place.app,
                &place.room,
                RoomEventKind::Exited { user, reason },
            );
        }
        let user = place.user.clone();
        self.event(
            place.app,
            &place.room,
            RoomEventKind::Entered { user, role },
        );
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
        let exit = match reason {
            PeerLeaveReason::Left => ExitReason::Left,
            PeerLeaveReason::Timeout => ExitReason::Timeout,
            PeerLeaveReason::Removed => ExitReason::Removed,
        };
        let emptied = room.participants.is_empty();
        self.event(
            key.0,
            &key.1,
            RoomEventKind::Exited {
                user: place.user.clone(),
                reason: exit,
            },
        );
        if emptied {
            self.rooms.remove(&key);
            self.event(key.0, &key.1, RoomEventKind::Dismissed);
            return Vec::new();
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return Vec::new();
        };
        let ended: Vec<StreamType> = gone
            .map(|p| p.streams.iter().map(|(t, _)| t).collect())
            .unwrap_or_default();
        let mut effects = streams_removed(room, session, session, &place.user, &ended);
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

    /// Marks `session`'s stream `stream_type` as published: the others are
    /// told and subscribed.
    pub fn publish(
        &mut self,
        session: SessionId,
        stream_type: StreamType,
        kinds: StreamKinds,
    ) -> Result<Vec<Effect>, PublishError> {
        let before = self.sending_of(session);
        let effects = self.publish_stream(session, stream_type, kinds)?;
        self.media_events_of(session, before);
        Ok(effects)
    }

    /// What `session`'s user sends now (see [`Registry::sending`]).
    fn sending_of(&self, session: SessionId) -> [bool; 3] {
        self.places
            .get(&session)
            .map(|p| self.sending(p.app, &p.room, &p.user))
            .unwrap_or_default()
    }

    /// The media events of `session`'s change from sending `before`.
    fn media_events_of(&mut self, session: SessionId, before: [bool; 3]) {
        if let Some(p) = self.places.get(&session).cloned() {
            self.media_events(p.app, &p.room, &p.user, before);
        }
    }

    fn publish_stream(
        &mut self,
        session: SessionId,
        stream_type: StreamType,
        kinds: StreamKinds,
    ) -> Result<Vec<Effect>, PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        if me.role == Role::Audience {
            return Err(PublishError::Audience);
        }
        let slot = me.streams.slot(stream_type);
        if slot.is_some() {
            return Err(PublishError::AlreadyPublishing);
        }
        let stream = Stream {
            kinds,
            audio_muted: false,
            video_muted: false,
        };
        *slot = Some(stream);
        let blocked = me.blocked;
        let others = room.sessions_except(session);
        let mut effects = Vec::new();
        // `stream-added` before the offer that carries the stream.
        if !others.is_empty() {
            effects.push(Effect::Broadcast {
                to: others,
                msg: stream.added(&place.user, stream_type, blocked),
            });
        }
        effects.extend(
            room.participants
                .values()
                .filter(|p| p.session != session && p.auto_subscribe)
                .map(|p| Effect::Subscribe {
                    subscriber: p.session,
                    publisher: session,
                    stream_type,
                    kinds,
                }),
        );
        Ok(effects)
    }

    /// Changes what of `session`'s stream `stream_type` is muted; the
    /// others get `stream-updated` when anything changed.
    pub fn mute(
        &mut self,
        session: SessionId,
        stream_type: StreamType,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Result<Vec<Effect>, PublishError> {
        let before = self.sending_of(session);
        let effects = self.mute_stream(session, stream_type, audio, video)?;
        self.media_events_of(session, before);
        Ok(effects)
    }

    fn mute_stream(
        &mut self,
        session: SessionId,
        stream_type: StreamType,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Result<Vec<Effect>, PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        let stream = me
            .streams
            .slot(stream_type)
            .as_mut()
            .ok_or(PublishError::NotPublishing)?;
        let before = *stream;
        stream.audio_muted = audio.unwrap_or(stream.audio_muted);
        stream.video_muted = video.unwrap_or(stream.video_muted);
        let after = *stream;
        let blocked = me.blocked;
        let (before, after) = (before.as_seen(blocked), after.as_seen(blocked));
        let to = room.sessions_except(session);
        if before == after || to.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Effect::Broadcast {
            to,
            msg: ServerMessage::StreamUpdated {
                user_id: place.user.clone(),
                stream_type,
                audio_muted: after.audio_muted,
                video_muted: after.video_muted,
                video_paused: false,
            },
        }])
    }

    /// Sets what of `user`'s media in a room the server does not forward
    /// (`SetUserBlocked`): the others see the blocked kinds as muted
    /// (`stream-updated`), the user is told. Returns the user's session.
    pub fn set_blocked(
        &mut self,
        app: SdkAppId,
        room_id: &RoomId,
        user: &UserId,
        blocked: Blocked,
    ) -> Result<(SessionId, Vec<Effect>), BlockError> {
        let room = self
            .rooms
            .get_mut(&(app, room_id.clone()))
            .ok_or(BlockError::RoomNotExist)?;
        let me = room
            .participants
            .get_mut(user)
            .ok_or(BlockError::UserNotInRoom)?;
        let before = me.blocked;
        me.blocked = blocked;
        let session = me.session;
        let streams: Vec<(StreamType, Stream)> = me.streams.iter().collect();
        let mut effects = vec![Effect::Block { session, blocked }];
        let to = room.sessions_except(session);
        for (stream_type, stream) in streams {
            let (was, now) = (stream.as_seen(before), stream.as_seen(blocked));
            if was != now && !to.is_empty() {
                effects.push(Effect::Broadcast {
                    to: to.clone(),
                    msg: ServerMessage::StreamUpdated {
                        user_id: user.clone(),
                        stream_type,
                        audio_muted: now.audio_muted,
                        video_muted: now.video_muted,
                        video_paused: false,
                    },
                });
            }
        }
        Ok((session, effects))
    }

    /// What of `session`'s media is blocked.
    pub fn blocked(&self, session: SessionId) -> Blocked {
        self.places
            .get(&session)
            .and_then(|p| {
                let room = self.rooms.get(&(p.app, p.room.clone()))?;
                room.participants.get(&p.user).map(|m| m.blocked)
            })
            .unwrap_or_default()
    }

    /// Subscribes `session` to `user`'s stream `stream_type`, or to the
    /// `kinds` of it that the stream carries. Returns what will be received.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        user: &UserId,
        stream_type: StreamType,
        kinds: StreamKinds,
    ) -> Result<(StreamKinds, Vec<Effect>), PublishError> {
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let publisher = room
            .participants
            .get(user)
            .filter(|_| *user != place.user)
            .ok_or(PublishError::StreamNotFound)?;
        let stream = publisher
            .streams
            .get(stream_type)
            .ok_or(PublishError::StreamNotFound)?;
        let kinds = StreamKinds {
            audio: kinds.audio && stream.kinds.audio,
            video: kinds.video && stream.kinds.video,
        };
        let effect = if kinds.audio || kinds.video {
            Effect::Subscribe {
                subscriber: session,
                publisher: publisher.session,
                stream_type,
                kinds,
            }
        } else {
            Effect::Unsubscribe {
                subscriber: session,
                publisher: publisher.session,
                stream_type,
            }
        };
        Ok((kinds, vec![effect]))
    }

    /// Stops `session` receiving `user`'s stream `stream_type`. Not
    /// receiving it already, or `user` publishing nothing, is not an error.
    pub fn unsubscribe(
        &mut self,
        session: SessionId,
        user: &UserId,
        stream_type: StreamType,
    ) -> Result<Vec<Effect>, PublishError> {
        let (_, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        Ok(room
            .participants
            .get(user)
            .map(|p| Effect::Unsubscribe {
                subscriber: session,
                publisher: p.session,
                stream_type,
            })
            .into_iter()
            .collect())
    }

    /// Changes `session`'s role. Becoming an audience ends its streams. The
    /// others get `peer-role` when the role changed.
    pub fn switch_role(
        &mut self,
        session: SessionId,
        role: Role,
    ) -> Result<Vec<Effect>, PublishError> {
        let before = self.sending_of(session);
        let (place, room) = self.room_of(session).ok_or(PublishError::NotInRoom)?;
        let me = room.member_mut(&place.user)?;
        if me.role == role {
            return Ok(Vec::new());
        }
        me.role = role;
        let mut ended = Vec::new();
        if role == Role::Audience {
            ended = me.streams.iter().map(|(t, _)| t).collect();
            me.streams = Streams::default();
        }
        let mut effects = streams_removed(room, session, session, &place.user, &ended);
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
        let user = place.user.clone();
        self.event(
            place.app,
            &place.room,
            RoomEventKind::RoleSwitched { user, role },
        );
        self.media_events_of(session, before);
        Ok(effects)
    }

    /// Ends `session`'s stream `stream_type`, if it has one.
    pub fn unpublish(&mut self, session: SessionId, stream_type: StreamType) -> Vec<Effect> {
        let before = self.sending_of(session);
        let effects = self.unpublish_stream(session, stream_type);
        self.media_events_of(session, before);
        effects
    }

    /// As [`Registry::unpublish`], for a session about to leave: no media
    /// events (its exit says it stopped everything, as TRTC's 104 does).
    pub fn unpublish_leaving(
        &mut self,
        session: SessionId,
        stream_type: StreamType,
    ) -> Vec<Effect> {
        self.unpublish_stream(session, stream_type)
    }

    fn unpublish_stream(&mut self, session: SessionId, stream_type: StreamType) -> Vec<Effect> {
        let Some(place) = self.places.get(&session) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&(place.app, place.room.clone())) else {
            return Vec::new();
        };
        match room.participants.get_mut(&place.user) {
            Some(me) if me.session == session && me.streams.get(stream_type).is_some() => {
                *me.streams.slot(stream_type) = None;
            }
            _ => return Vec::new(),
        }
        stream_removed(room, session, session, &place.user, stream_type)
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
                let ended: Vec<StreamType> = p.streams.iter().map(|(t, _)| t).collect();
                effects.extend(streams_removed(room, p.session, p.session, user, &ended));
                effects.push(Effect::Kick {
                    session: p.session,
                    reason: KickReason::RemovedByAdmin,
                });
                removed.push((user.clone(), p.session));
            }
        }
        let remaining: Vec<SessionId> = room.participants.values().map(|p| p.session).collect();
        let emptied = room.participants.is_empty();
        for (user, _) in &removed {
            let (user, reason) = (user.clone(), ExitReason::Removed);
            self.event(app, room_id, RoomEventKind::Exited { user, reason });
        }
        if emptied {
            self.rooms.remove(&key);
            self.event(app, room_id, RoomEventKind::Dismissed);
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
        for (user, p) in room.participants {
            let reason = ExitReason::Dismissed;
            self.event(app, room_id, RoomEventKind::Exited { user, reason });
            self.places.remove(&p.session);
            self.remember_kick(p.session, KickReason::RoomDismissed, now);
            effects.push(Effect::Kick {
                session: p.session,
                reason: KickReason::RoomDismissed,
            });
        }
        self.event(app, room_id, RoomEventKind::Dismissed);
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
