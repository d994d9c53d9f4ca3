//! Signaling messages: JSON objects over one WebSocket per client, tagged by
//! `"type"`. `docs/protocol.md` is the prose form of this module.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{IdError, Role, RoomId, UserId};
use crate::kick::KickReason;

/// The largest text message the server accepts, in bytes, but for `answer`.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The largest `answer` the server accepts, in bytes: an SDP grows with the
/// streams a client sends and receives (about 700 bytes per m-line), and a
/// room of 150 publishers must still fit.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Which of a user's streams: `main` (camera and microphone) or `sub`
/// (a shared screen), as TRTC's main and auxiliary streams. On the wire a
/// field `streamType`, left out for `main`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    /// The camera and the microphone.
    #[default]
    Main,
    /// A shared screen.
    Sub,
}

impl StreamType {
    /// Both, `main` first.
    pub const ALL: [StreamType; 2] = [StreamType::Main, StreamType::Sub];

    /// Whether this is `main` (left out on the wire).
    pub fn is_main(&self) -> bool {
        *self == StreamType::Main
    }

    /// `main` or `sub`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Main => "main",
            StreamType::Sub => "sub",
        }
    }
}

/// The name of `user`'s stream of `stream_type` where one string names
/// it (the msid stream id of the tracks the server sends, the app's
/// tiles): the user id for `main`, the user id and `.sub` for `sub` (a
/// user id holds no dot).
pub fn stream_name(user: &UserId, stream_type: StreamType) -> String {
    match stream_type {
        StreamType::Main => user.to_string(),
        StreamType::Sub => format!("{user}.sub"),
    }
}

/// The user and stream type a [`stream_name`] names.
pub fn parse_stream_name(name: &str) -> Option<(UserId, StreamType)> {
    match name.strip_suffix(".sub") {
        Some(user) => Some((UserId::new(user).ok()?, StreamType::Sub)),
        None => Some((UserId::new(name).ok()?, StreamType::Main)),
    }
}

impl std::fmt::Display for StreamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a room is named on the wire: exactly one of `roomId` (number) and
/// `strRoomId` (string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    /// A numeric room id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<u64>,
    /// A string room id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub str_room_id: Option<String>,
}

/// Why a [`RoomRef`] does not name one valid room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomRefError {
    /// Neither `roomId` nor `strRoomId` was given.
    #[error("one of roomId or strRoomId is required")]
    Missing,
    /// Both were given.
    #[error("give roomId or strRoomId, not both")]
    Both,
    /// The id itself is invalid.
    #[error(transparent)]
    Invalid(#[from] IdError),
}

impl RoomRef {
    /// The validated room.
    pub fn room(&self) -> Result<RoomId, RoomRefError> {
        match (self.room_id, &self.str_room_id) {
            (Some(_), Some(_)) => Err(RoomRefError::Both),
            (Some(n), None) => Ok(RoomId::num(n)?),
            (None, Some(s)) => Ok(RoomId::str(s.clone())?),
            (None, None) => Err(RoomRefError::Missing),
        }
    }
}

impl From<&RoomId> for RoomRef {
    fn from(r: &RoomId) -> Self {
        match r {
            RoomId::Num(n) => RoomRef {
                room_id: Some(u64::from(*n)),
                str_room_id: None,
            },
            RoomId::Str(s) => RoomRef {
                room_id: None,
                str_room_id: Some(s.clone()),
            },
        }
    }
}

/// `join`: authenticate and enter a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// Echoed in the reply.
    pub req_id: u64,
    /// The application.
    pub sdk_app_id: u32,
    /// The user; validated by the server so a bad one gets `INVALID_PARAMETER`.
    pub user_id: String,
    /// The user's UserSig.
    pub user_sig: String,
    /// The room.
    #[serde(flatten)]
    pub room: RoomRef,
    /// `anchor` (default) or `audience`.
    #[serde(default)]
    pub role: Role,
    /// The session id of an earlier session this join resumes after a
    /// dropped connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// The protocol version the client speaks; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Whether the server subscribes this client to every stream in the
    /// room by itself (the default). When false, the client asks with
    /// `subscribe`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub auto_subscribe: bool,
    /// A room permission ticket (TRTC's `privateMapKey`: a UserSig of this
    /// user whose userbuf is a room grant), from the app's backend; an app
    /// may require one (protocol 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_map_key: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The most simulcast layers a publication may have.
pub const MAX_LAYERS: usize = 3;

/// The longest chat message, in characters (protocol 3).
pub const MAX_CHAT_CHARS: usize = 2000;

/// Checks a chat message's text: 1 to [`MAX_CHAT_CHARS`] characters, not
/// only white space, and no control characters but line breaks and tabs.
pub fn check_chat_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("a chat message needs some text".into());
    }
    let chars = text.chars().count();
    if chars > MAX_CHAT_CHARS {
        return Err(format!(
            "a chat message is at most {MAX_CHAT_CHARS} characters, not {chars}"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("a chat message may not hold control characters".into());
    }
    Ok(())
}

/// A picture size in pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VideoSize {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl VideoSize {
    /// A size.
    pub const fn new(width: u32, height: u32) -> Self {
        VideoSize { width, height }
    }

    /// Whether this is the "no limit" size (0 by 0).
    pub fn is_unlimited(self) -> bool {
        self.width == 0 && self.height == 0
    }

    /// Whether a picture of this size fits within `limit` (with "no
    /// limit" everything fits).
    pub fn fits_in(self, limit: VideoSize) -> bool {
        limit.is_unlimited() || (self.width <= limit.width && self.height <= limit.height)
    }
}

/// Why a `publish`'s simulcast layers are refused.
pub fn check_layers(layers: &[VideoSize]) -> Result<(), String> {
    if layers.len() > MAX_LAYERS {
        return Err(format!("at most {MAX_LAYERS} simulcast layers"));
    }
    if layers
        .iter()
        .any(|l| l.width == 0 || l.height == 0 || l.width > 7680 || l.height > 4320)
    {
        return Err("a simulcast layer's width and height are 1 to 7680 by 4320".into());
    }
    if layers
        .windows(2)
        .any(|w| w[1].width >= w[0].width || w[1].height >= w[0].height)
    {
        return Err("simulcast layers go from the largest to the smallest".into());
    }
    Ok(())
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Enter a room.
    Join(JoinRequest),
    /// Leave the room; answered with `left`.
    Leave {
        /// Echoed in the reply.
        req_id: u64,
    },
    /// Heartbeat; answered with `pong`.
    Ping {
        /// Echoed in the reply.
        req_id: u64,
    },
    /// Start sending media; the server follows with an `offer` whose
    /// answer carries the client's tracks, then replies `published`.
    Publish {
        /// Echoed in the reply.
        req_id: u64,
        /// Which of the client's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether an audio track will be sent.
        audio: bool,
        /// Whether a video track will be sent.
        video: bool,
        /// The video's simulcast layers, largest first (one to
        /// [`MAX_LAYERS`]); absent: one layer. Each is a video track of
        /// its own, on its own receive-only m-line of the offer, in this
        /// order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        simulcast: Vec<VideoSize>,
    },
    /// Stop sending media; answered with `unpublished`.
    Unpublish {
        /// Echoed in the reply.
        req_id: u64,
        /// Which of the client's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// Mutes or unmutes the published audio or video (absent: unchanged);
    /// answered with `muted`.
    Mute {
        /// Echoed in the reply.
        req_id: u64,
        /// Which of the client's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether audio is muted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
        /// Whether video is muted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
    },
    /// Receive a user's published stream (all of it, or only its audio or
    /// video); answered with `subscribed`. Subscribing again changes what
    /// is received.
    Subscribe {
        /// Echoed in the reply.
        req_id: u64,
        /// Whose stream.
        user_id: String,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Receive its audio (default true).
        #[serde(default = "yes")]
        audio: bool,
        /// Receive its video (default true).
        #[serde(default = "yes")]
        video: bool,
    },
    /// The largest size this client shows a user's video at, so the
    /// server sends no larger simulcast layer than that; answered with
    /// `video-size-set`.
    SetVideoSize {
        /// Echoed in the reply.
        req_id: u64,
        /// Whose video.
        user_id: String,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// The size; 0 by 0 lifts the limit.
        #[serde(flatten)]
        size: VideoSize,
    },
    /// Stop receiving a user's stream; answered with `unsubscribed`.
    Unsubscribe {
        /// Echoed in the reply.
        req_id: u64,
        /// Whose stream.
        user_id: String,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// Change this client's role in the room; answered with
    /// `role-switched`. Becoming `audience` ends what it publishes.
    SwitchRole {
        /// Echoed in the reply.
        req_id: u64,
        /// The new role.
        role: Role,
    },
    /// Send a text message to everyone else in the room (protocol 3);
    /// answered with `chat-sent`.
    Chat {
        /// Echoed in the reply.
        req_id: u64,
        /// The text (see [`check_chat_text`]).
        text: String,
    },
    /// The client's SDP answer to the server's latest `offer`.
    Answer {
        /// The SDP text.
        sdp: String,
    },
}

impl ClientMessage {
    /// The stream type a request names, if it names one.
    pub fn stream_type(&self) -> Option<StreamType> {
        match self {
            ClientMessage::Publish { stream_type, .. }
            | ClientMessage::Unpublish { stream_type, .. }
            | ClientMessage::Mute { stream_type, .. }
            | ClientMessage::Subscribe { stream_type, .. }
            | ClientMessage::Unsubscribe { stream_type, .. }
            | ClientMessage::SetVideoSize { stream_type, .. } => Some(*stream_type),
            _ => None,
        }
    }

    /// The request id, echoed by the reply.
    pub fn req_id(&self) -> u64 {
        match self {
            ClientMessage::Join(j) => j.req_id,
            ClientMessage::Leave { req_id }
            | ClientMessage::Ping { req_id }
            | ClientMessage::Publish { req_id, .. }
            | ClientMessage::Unpublish { req_id, .. }
            | ClientMessage::Mute { req_id, .. }
            | ClientMessage::Subscribe { req_id, .. }
            | ClientMessage::Unsubscribe { req_id, .. }
            | ClientMessage::SetVideoSize { req_id, .. }
            | ClientMessage::SwitchRole { req_id, .. }
            | ClientMessage::Chat { req_id, .. } => *req_id,
            ClientMessage::Answer { .. } => 0,
        }
    }
}

/// Why a client message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is larger than the limit of {MAX_MESSAGE_BYTES} ({MAX_ANSWER_BYTES} for an answer)")]
    TooLarge(usize),
    /// Not a JSON object of a known type with the right fields.
    #[error("{message}")]
    Invalid {
        /// The request id, when one could be read, so the error can answer it.
        req_id: Option<u64>,
        /// What was wrong.
        message: String,
    },
}

impl ParseError {
    /// The matching error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::TooLarge(_) => ErrorCode::MessageTooLarge,
            ParseError::Invalid { .. } => ErrorCode::InvalidMessage,
        }
    }

    /// The request id the error answers, if any.
    pub fn req_id(&self) -> Option<u64> {
        match self {
            ParseError::TooLarge(_) => None,
            ParseError::Invalid { req_id, .. } => *req_id,
        }
    }
}

/// Parses one client message, enforcing the size limits: an `answer` may
/// be up to [`MAX_ANSWER_BYTES`], anything else up to [`MAX_MESSAGE_BYTES`].
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    if text.len() > MAX_ANSWER_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    let parsed: Result<ClientMessage, _> = serde_json::from_str(text);
    if text.len() > MAX_MESSAGE_BYTES && !matches!(parsed, Ok(ClientMessage::Answer { .. })) {
        return Err(ParseError::TooLarge(text.len()));
    }
    parsed.map_err(|e| {
        // Salvage the request id so the error can answer the request.
        let req_id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("reqId").and_then(|r| r.as_u64()));
        ParseError::Invalid {
            req_id,
            message: e.to_string(),
        }
    })
}

/// A user in a room, as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// The user.
    pub user_id: UserId,
    /// Their role.
    pub role: Role,
}

/// Why a peer left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerLeaveReason {
    /// They called `leave`, or closed their connection.
    Left,
    /// Nothing was heard from them within the heartbeat timeout.
    Timeout,
    /// An administrator removed them.
    Removed,
}

/// The reply to a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// Echoes the join's request id.
    pub req_id: u64,
    /// This session's id; give it as `resume` when rejoining after a drop.
    pub session_id: String,
    /// The room joined.
    #[serde(flatten)]
    pub room: RoomRef,
    /// The role granted.
    pub role: Role,
    /// The other users already in the room.
    pub users: Vec<PeerInfo>,
    /// How often the client should send `ping`.
    pub heartbeat_interval_ms: u64,
    /// After how long without any message the server drops the client.
    pub heartbeat_timeout_ms: u64,
}

/// An `error` message. With a `reqId` it answers that request; without one
/// it is about the connection, which the server then closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    /// The request this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<u64>,
    /// Numeric code (see [`ErrorCode::code`]).
    pub code: u32,
    /// Symbolic name, e.g. `USERSIG_EXPIRED`.
    pub name: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// For `SESSION_BANNED`: why the resumed session was forced out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kick_reason: Option<KickReason>,
    /// For `ROOM_ELSEWHERE`: the signaling URL of the node that holds the
    /// room, to join there (protocol 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
}

impl ErrorMessage {
    /// An error with this code.
    pub fn new(req_id: Option<u64>, name: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMessage {
            req_id,
            code: name.code(),
            name,
            message: message.into(),
            kick_reason: None,
            redirect: None,
        }
    }
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// `join` succeeded.
    Joined(Joined),
    /// `leave` done; the session is in no room.
    Left {
        /// Echoes the leave's request id.
        req_id: u64,
    },
    /// Answers `ping`.
    Pong {
        /// Echoes the ping's request id.
        req_id: u64,
    },
    /// A request failed, or the connection is being closed for a fault.
    Error(ErrorMessage),
    /// Another user entered the room.
    PeerJoin {
        /// Who.
        user_id: UserId,
        /// Their role.
        role: Role,
    },
    /// Another user left the room.
    PeerLeave {
        /// Who.
        user_id: UserId,
        /// Why.
        reason: PeerLeaveReason,
    },
    /// `publish` done: the server receives the client's media.
    Published {
        /// Echoes the publish's request id.
        req_id: u64,
    },
    /// `mute` done.
    Muted {
        /// Echoes the mute's request id.
        req_id: u64,
    },
    /// A stream's mute state changed.
    StreamUpdated {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether its audio is muted.
        audio_muted: bool,
        /// Whether its video is muted.
        video_muted: bool,
        /// Whether the server has paused its video to this client because
        /// the path to it cannot carry even the smallest layer (audio goes
        /// on; video resumes by itself). Sent only to that client.
        #[serde(default, skip_serializing_if = "is_false")]
        video_paused: bool,
    },
    /// `chat` delivered to the others in the room.
    ChatSent {
        /// Echoes the request id.
        req_id: u64,
        /// When the server took it (ms since the Unix epoch), as the
        /// others see it.
        sent_at: u64,
    },
    /// A chat message from another user in the room (protocol 3).
    Chat {
        /// From whom.
        user_id: UserId,
        /// The text.
        text: String,
        /// When the server took it (ms since the Unix epoch).
        sent_at: u64,
    },
    /// `set-video-size` done.
    VideoSizeSet {
        /// Echoes the request id.
        req_id: u64,
        /// Whose video.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// `unpublish` done.
    Unpublished {
        /// Echoes the unpublish's request id.
        req_id: u64,
    },
    /// `subscribe` done: the stream's tracks arrive with the next `offer`.
    Subscribed {
        /// Echoes the subscribe's request id.
        req_id: u64,
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether its audio is received.
        audio: bool,
        /// Whether its video is received.
        video: bool,
    },
    /// `unsubscribe` done: the stream's tracks end with the next `offer`.
    Unsubscribed {
        /// Echoes the unsubscribe's request id.
        req_id: u64,
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// `switch-role` done.
    RoleSwitched {
        /// Echoes the switch-role's request id.
        req_id: u64,
        /// The role now held.
        role: Role,
    },
    /// Another user in the room changed role.
    PeerRole {
        /// Who.
        user_id: UserId,
        /// Their new role.
        role: Role,
    },
    /// The server's SDP offer for the client's one peer connection; the
    /// client replies with `answer`. The server is always the offerer.
    Offer {
        /// The SDP text.
        sdp: String,
        /// Set when this offer carries the receive transceivers for that
        /// `publish` request: attach the published tracks to this offer
        /// (and to no other).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        publish_req_id: Option<u64>,
        /// Set (protocol 2) when this offer is for a new peer connection
        /// that replaces the client's current one: the client closes the
        /// old connection, answers from a new one, and attaches what it
        /// publishes to this offer's receive-only m-lines.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        new_connection: bool,
    },
    /// A user in the room started publishing; the server subscribes this
    /// client and renegotiates.
    StreamAdded {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// Whether it has audio.
        audio: bool,
        /// Whether it has video.
        video: bool,
        /// Whether its audio is muted now.
        #[serde(default)]
        audio_muted: bool,
        /// Whether its video is muted now.
        #[serde(default)]
        video_muted: bool,
    },
    /// A user's stream ended (unpublish, leave, removal, replaced session).
    StreamRemoved {
        /// Whose stream.
        user_id: UserId,
        /// Which of the user's streams (left out: `main`).
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
    },
    /// What of this client's media the server stops forwarding now
    /// (`SetUserBlocked`; protocol 6): the others see it as muted.
    Blocked {
        /// Its audio.
        audio: bool,
        /// Its video.
        video: bool,
    },
    /// Which of this client's simulcast layers of a published video
    /// anyone receives (protocol 7): the client may stop encoding and
    /// sending the others until a later `video-layers` turns them on again
    /// (then each starts with a keyframe).
    VideoLayers {
        /// Which of its streams.
        #[serde(default, skip_serializing_if = "StreamType::is_main")]
        stream_type: StreamType,
        /// One entry per layer declared in `publish`, largest first:
        /// whether it is needed. The smallest always is.
        active: Vec<bool>,
    },
    /// This client was forced out; the server closes the connection next.
    /// The client must not rejoin by itself.
    ClientBanned {
        /// Why: TRTC's reason (`kick`, `banned`, `room-disband`) from
        /// protocol 6, Kaigi's cause (`duplicate-user-id`, …) before.
        reason: String,
        /// Kaigi's cause (protocol 6 and later).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<KickReason>,
        /// TRTC's text for the reason.
        message: String,
    },
}

impl ServerMessage {
    /// The stream type a message is about (`stream-*` messages and the
    /// replies naming a stream), if any: `sub` ones go only to clients of
    /// protocol 4 or later.
    pub fn stream_type(&self) -> Option<StreamType> {
        match self {
            ServerMessage::StreamAdded { stream_type, .. }
            | ServerMessage::StreamRemoved { stream_type, .. }
            | ServerMessage::StreamUpdated { stream_type, .. }
            | ServerMessage::Subscribed { stream_type, .. }
            | ServerMessage::Unsubscribed { stream_type, .. }
            | ServerMessage::VideoSizeSet { stream_type, .. } => Some(*stream_type),
            _ => None,
        }
    }

    /// The `client-banned` message for a reason, for a session of
    /// `protocol`: TRTC's `reason` and Kaigi's `cause` from protocol 6,
    /// Kaigi's cause as `reason` before.
    pub fn banned(reason: KickReason, protocol: u32) -> Self {
        let (wire, cause) = if protocol >= 6 {
            (reason.trtc_reason(), Some(reason))
        } else {
            (reason.as_str(), None)
        };
        ServerMessage::ClientBanned {
            reason: wire.to_owned(),
            cause,
            message: reason.message().to_owned(),
        }
    }

    /// The cause of a `client-banned` message, of any protocol.
    pub fn kick_cause(&self) -> Option<KickReason> {
        match self {
            ServerMessage::ClientBanned { reason, cause, .. } => {
                cause.or_else(|| KickReason::parse(reason))
            }
            _ => None,
        }
    }

    /// Serializes to the JSON text sent on the wire.
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("server messages serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_names_read_back() {
        let alice = UserId::new("alice_1-x").unwrap();
        for t in StreamType::ALL {
            let name = stream_name(&alice, t);
            assert_eq!(parse_stream_name(&name), Some((alice.clone(), t)));
        }
        assert_eq!(stream_name(&alice, StreamType::Sub), "alice_1-x.sub");
        assert_eq!(parse_stream_name("a.b.sub"), None);
        assert_eq!(parse_stream_name(".sub"), None);
        assert_eq!(parse_stream_name("x.main"), None);
    }

    #[test]
    fn join_wire_shape() {
        let text = r#"{"type":"join","reqId":1,"sdkAppId":1400000000,"userId":"alice","userSig":"x","strRoomId":"123","role":"audience"}"#;
        let ClientMessage::Join(j) = parse_client_message(text).unwrap() else {
            panic!("not a join")
        };
        assert_eq!(j.room.room().unwrap(), RoomId::str("123").unwrap());
        assert_eq!(j.role, Role::Audience);
        let back: serde_json::Value = serde_json::to_value(ClientMessage::Join(j)).unwrap();
        assert_eq!(back["strRoomId"], "123");
        assert!(back.get("roomId").is_none());
    }

    #[test]
    fn room_ref_errors() {
        assert_eq!(RoomRef::default().room(), Err(RoomRefError::Missing));
        let both = RoomRef {
            room_id: Some(1),
            str_room_id: Some("a".into()),
        };
        assert_eq!(both.room(), Err(RoomRefError::Both));
        let zero = RoomRef {
            room_id: Some(0),
            str_room_id: None,
        };
        assert_eq!(
            zero.room(),
            Err(RoomRefError::Invalid(IdError::RoomIdRange))
        );
    }

    #[test]
    fn server_messages_wire_shape() {
        let m = ServerMessage::banned(KickReason::DuplicateUserId, 5);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"client-banned","reason":"duplicate-user-id",
                   "message":"client was banned because of duplicated userId joining the room."})
        );
        // Protocol 6: TRTC's reason, Kaigi's cause beside it.
        let m = ServerMessage::banned(KickReason::RoomDismissed, 6);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"client-banned","reason":"room-disband","cause":"room-dismissed",
                   "message":"client was banned because of the room has been disbanded by the admin."})
        );
        for p in [1, 5, 6] {
            for r in KickReason::ALL {
                let back: ServerMessage =
                    serde_json::from_str(&ServerMessage::banned(r, p).to_json()).unwrap();
                assert_eq!(back.kick_cause(), Some(r), "protocol {p}");
            }
        }
        let e = ServerMessage::Error(ErrorMessage::new(Some(7), ErrorCode::UsersigExpired, "old"));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type":"error","reqId":7,"code":70001,"name":"USERSIG_EXPIRED","message":"old"})
        );
        let j = ServerMessage::Joined(Joined {
            req_id: 1,
            session_id: "s".into(),
            room: RoomRef::from(&RoomId::Num(5)),
            role: Role::Anchor,
            users: vec![PeerInfo {
                user_id: UserId::new("bob").unwrap(),
                role: Role::Audience,
            }],
            heartbeat_interval_ms: 5000,
            heartbeat_timeout_ms: 20000,
        });
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["roomId"], 5);
        assert_eq!(v["users"][0], json!({"userId":"bob","role":"audience"}));
        assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), j);
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert!(matches!(
            parse_client_message("nope"),
            Err(ParseError::Invalid { req_id: None, .. })
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"fly","reqId":9}"#),
            Err(ParseError::Invalid {
                req_id: Some(9),
                ..
            })
        ));
        assert!(matches!(
            parse_client_message(r#"{"type":"join","reqId":3}"#),
            Err(ParseError::Invalid {
                req_id: Some(3),
                ..
            })
        ));
        let big = format!(
            r#"{{"type":"ping","reqId":1,"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            parse_client_message(&big),
            Err(ParseError::TooLarge(big.len()))
        );
    }

    #[test]
    fn an_answer_may_be_larger_than_other_messages() {
        let sdp = "a".repeat(MAX_MESSAGE_BYTES * 4);
        let answer = format!(r#"{{"type":"answer","sdp":"{sdp}"}}"#);
        assert!(matches!(
            parse_client_message(&answer),
            Ok(ClientMessage::Answer { .. })
        ));
        let huge = format!(
            r#"{{"type":"answer","sdp":"{}"}}"#,
            "a".repeat(MAX_ANSWER_BYTES)
        );
        assert_eq!(
            parse_client_message(&huge),
            Err(ParseError::TooLarge(huge.len()))
        );
        // Only an answer: a large join is still refused.
        let join = format!(r#"{{"type":"join","reqId":1,"userSig":"{sdp}"}}"#);
        assert_eq!(
            parse_client_message(&join),
            Err(ParseError::TooLarge(join.len()))
        );
    }

    #[test]
    fn stream_type_is_on_the_wire_only_for_sub_streams() {
        let added = |stream_type| ServerMessage::StreamAdded {
            user_id: UserId::new("a").unwrap(),
            stream_type,
            audio: false,
            video: true,
            audio_muted: false,
            video_muted: false,
        };
        let main = added(StreamType::Main).to_json();
        assert!(!main.contains("streamType"), "{main}");
        let sub = added(StreamType::Sub).to_json();
        assert!(sub.contains(r#""streamType":"sub""#), "{sub}");
        let back: ServerMessage = serde_json::from_str(&sub).unwrap();
        assert_eq!(back, added(StreamType::Sub));
        let old: ServerMessage =
            serde_json::from_str(r#"{"type":"stream-removed","userId":"a"}"#).unwrap();
        assert_eq!(
            old,
            ServerMessage::StreamRemoved {
                user_id: UserId::new("a").unwrap(),
                stream_type: StreamType::Main
            }
        );
    }

    #[test]
    fn new_connection_is_on_the_wire_only_when_set() {
        let plain = ServerMessage::Offer {
            sdp: "v=0".into(),
            publish_req_id: None,
            new_connection: false,
        };
        assert_eq!(plain.to_json(), r#"{"type":"offer","sdp":"v=0"}"#);
        let fresh = ServerMessage::Offer {
            sdp: "v=0".into(),
            publish_req_id: None,
            new_connection: true,
        };
        assert_eq!(
            fresh.to_json(),
            r#"{"type":"offer","sdp":"v=0","newConnection":true}"#
        );
    }
}
