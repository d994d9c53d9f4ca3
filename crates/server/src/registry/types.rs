//! What the registry holds and returns: rooms, participants, streams,
//! places, errors, and the effects the I/O layer carries out.

use std::collections::HashMap;

use kaigi_proto::signal::{PeerInfo, ServerMessage, StreamType};
use kaigi_proto::{KickReason, Role, RoomId, SdkAppId, UserId};

/// A signaling session (one WebSocket connection), unique per server run.
pub type SessionId = u64;

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
        /// Which of the publisher's streams.
        stream_type: StreamType,
        /// What of it.
        kinds: StreamKinds,
    },
    /// Detach `publisher`'s stream from `subscriber`'s media connection.
    Unsubscribe {
        /// Who received.
        subscriber: SessionId,
        /// Whose stream.
        publisher: SessionId,
        /// Which of the publisher's streams.
        stream_type: StreamType,
    },
    /// Send a chat message (serialized once) to the sessions that speak
    /// protocol 3 or later; the others do not know the message.
    Chat {
        /// Recipients.
        to: Vec<SessionId>,
        /// The `chat` message.
        msg: ServerMessage,
    },
    /// Apply what of a session's media is blocked to its publications, and
    /// tell it (protocol 6 and later).
    Block {
        /// The session.
        session: SessionId,
        /// What is blocked now.
        blocked: Blocked,
    },
    /// Tell a session it was forced out (`client-banned`), then close it.
    Kick {
        /// The session.
        session: SessionId,
        /// Why.
        reason: KickReason,
    },
}

/// Something that happened to a room, for the app's webhooks (TRTC's room
/// event group); collected by the registry, taken with
/// [`super::Registry::take_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    /// The room's app.
    pub app: SdkAppId,
    /// The room.
    pub room: RoomId,
    /// What happened.
    pub kind: RoomEventKind,
}

/// What happened to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEventKind {
    /// Its first user entered.
    Created,
    /// It ended: its last user left, or it was dismissed.
    Dismissed,
    /// A user entered.
    Entered {
        /// Who.
        user: UserId,
        /// As what.
        role: Role,
    },
    /// A user left.
    Exited {
        /// Who.
        user: UserId,
        /// Why.
        reason: ExitReason,
    },
    /// A user switched role.
    RoleSwitched {
        /// Who.
        user: UserId,
        /// The new role.
        role: Role,
    },
    /// A user started (`on`) or stopped sending one kind of media:
    /// publishing or unpublishing it, muting or unmuting it, or (stop)
    /// becoming an audience. Leaving says it of everything the user sent.
    Media {
        /// Who.
        user: UserId,
        /// What.
        kind: MediaKind,
        /// Started or stopped.
        on: bool,
    },
}

/// Why a user left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// They left (or closed their connection).
    Left,
    /// Nothing was heard from them within the heartbeat timeout.
    Timeout,
    /// `RemoveUser`.
    Removed,
    /// `DismissRoom`.
    Dismissed,
    /// Another client entered with their user id.
    Duplicate,
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
    /// What they publish, if anything: a `main` and a `sub` stream.
    pub streams: Streams,
    /// Whether they receive every stream without asking.
    pub auto_subscribe: bool,
    /// What of theirs the server does not forward (`SetUserBlocked`).
    pub blocked: Blocked,
    pub(super) seq: u64,
}

/// What of a user's media the server stops forwarding (`SetUserBlocked`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocked {
    /// Their audio.
    pub audio: bool,
    /// Their video (of every stream).
    pub video: bool,
}

/// Why `SetUserBlocked` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// No such room.
    #[error("the room does not exist")]
    RoomNotExist,
    /// The user is not in the room.
    #[error("the user is not in the room")]
    UserNotInRoom,
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

/// What a user sends, as TRTC's media events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// The main stream's video.
    Video,
    /// The main stream's audio.
    Audio,
    /// The `sub` stream (a shared screen; TRTC's auxiliary stream).
    Aux,
}

impl MediaKind {
    /// Every kind.
    pub const ALL: [MediaKind; 3] = [MediaKind::Video, MediaKind::Audio, MediaKind::Aux];
}

/// A user's published streams, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    main: Option<Stream>,
    sub: Option<Stream>,
}

impl Streams {
    /// The stream of this type, if published.
    pub fn get(&self, ty: StreamType) -> Option<Stream> {
        match ty {
            StreamType::Main => self.main,
            StreamType::Sub => self.sub,
        }
    }

    /// The slot of this type.
    pub fn slot(&mut self, ty: StreamType) -> &mut Option<Stream> {
        match ty {
            StreamType::Main => &mut self.main,
            StreamType::Sub => &mut self.sub,
        }
    }

    /// The published ones, `main` first.
    pub fn iter(&self) -> impl Iterator<Item = (StreamType, Stream)> + '_ {
        StreamType::ALL
            .into_iter()
            .filter_map(|t| self.get(t).map(|s| (t, s)))
    }

    /// Whether the user sends `kind` now: published and not muted.
    pub fn sends(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Video => self
                .get(StreamType::Main)
                .is_some_and(|s| s.kinds.video && !s.video_muted),
            MediaKind::Audio => self
                .get(StreamType::Main)
                .is_some_and(|s| s.kinds.audio && !s.audio_muted),
            MediaKind::Aux => self.get(StreamType::Sub).is_some_and(|s| {
                (s.kinds.video && !s.video_muted) || (s.kinds.audio && !s.audio_muted)
            }),
        }
    }

    /// Whether any is published.
    pub fn any(&self) -> bool {
        self.main.is_some() || self.sub.is_some()
    }
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
    /// `stream-added` for it, muted where its user is blocked too.
    pub(super) fn added(
        &self,
        user: &UserId,
        stream_type: StreamType,
        blocked: Blocked,
    ) -> ServerMessage {
        let s = self.as_seen(blocked);
        ServerMessage::StreamAdded {
            user_id: user.clone(),
            stream_type,
            audio: s.kinds.audio,
            video: s.kinds.video,
            audio_muted: s.audio_muted,
            video_muted: s.video_muted,
        }
    }

    /// As the others see it: muted where its user mutes or is blocked.
    pub(super) fn as_seen(&self, blocked: Blocked) -> Stream {
        Stream {
            kinds: self.kinds,
            audio_muted: self.audio_muted || blocked.audio,
            video_muted: self.video_muted || blocked.video,
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
    pub(super) participants: HashMap<UserId, Participant>,
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
    pub(super) fn member_mut(&mut self, user: &UserId) -> Result<&mut Participant, PublishError> {
        self.participants
            .get_mut(user)
            .ok_or(PublishError::NotInRoom)
    }

    pub(super) fn sessions_except(&self, except: SessionId) -> Vec<SessionId> {
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

/// The admin API's "no such room".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room does not exist")]
pub struct RoomNotExist;
