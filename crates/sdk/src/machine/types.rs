//! The machine's vocabulary: what it is told (commands, requests), what
//! it answers (outputs, media actions) and what it keeps (status).

use std::collections::BTreeMap;
use std::time::Duration;

use kaigi_proto::signal::{ClientMessage, ErrorMessage, StreamType, VideoSize};
use kaigi_proto::{ErrorCode, KickReason, Role, RoomId, UserId};

use crate::error::ClientError;
use crate::events::{ClientEvent, ConnectionState};
use crate::options::ReconnectPolicy;

/// Names one command's reply: the I/O loop holds the reply channel.
pub(crate) type Token = u64;

/// What the session tells the app about where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub state: ConnectionState,
    pub room: Option<(RoomId, Role)>,
    pub peers: BTreeMap<UserId, Role>,
}

impl Status {
    /// Moves to `state` (a disconnected client is in no room and sees no
    /// one); the `connection-state-changed` event, if it changed.
    pub fn transition(&mut self, state: ConnectionState) -> Option<ClientEvent> {
        let prev = self.state;
        self.state = state;
        if state == ConnectionState::Disconnected {
            self.room = None;
            self.peers.clear();
        }
        (prev != state).then_some(ClientEvent::ConnectionStateChanged {
            prev_state: prev,
            state,
        })
    }
}

/// A request answered by one reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Mute {
        audio: Option<bool>,
        video: Option<bool>,
    },
    Subscribe {
        user: UserId,
        stream_type: StreamType,
        audio: bool,
        video: bool,
    },
    Unsubscribe {
        user: UserId,
        stream_type: StreamType,
    },
    SetVideoSize {
        user: UserId,
        stream_type: StreamType,
        size: VideoSize,
    },
    SwitchRole(Role),
    Chat {
        text: String,
    },
}

/// What a publication sends: its stream type, its kinds and its video's
/// simulcast layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publishing {
    pub stream_type: StreamType,
    pub audio: bool,
    pub video: bool,
    /// Largest first; empty: one layer.
    pub layers: Vec<VideoSize>,
}

impl Publishing {
    pub(super) fn message(&self, req_id: u64) -> ClientMessage {
        ClientMessage::Publish {
            req_id,
            stream_type: self.stream_type,
            audio: self.audio,
            video: self.video,
            simulcast: self.layers.clone(),
        }
    }
}

impl Request {
    pub(super) fn message(&self, req_id: u64) -> ClientMessage {
        match self.clone() {
            Request::Mute { audio, video } => ClientMessage::Mute {
                req_id,
                stream_type: StreamType::Main,
                audio,
                video,
            },
            Request::Subscribe {
                user,
                stream_type,
                audio,
                video,
            } => ClientMessage::Subscribe {
                req_id,
                user_id: user.to_string(),
                stream_type,
                audio,
                video,
            },
            Request::Unsubscribe { user, stream_type } => ClientMessage::Unsubscribe {
                req_id,
                user_id: user.to_string(),
                stream_type,
            },
            Request::SetVideoSize {
                user,
                stream_type,
                size,
            } => ClientMessage::SetVideoSize {
                req_id,
                user_id: user.to_string(),
                stream_type,
                size,
            },
            Request::SwitchRole(role) => ClientMessage::SwitchRole { req_id, role },
            Request::Chat { text } => ClientMessage::Chat { req_id, text },
        }
    }
}

/// An app's command, as the machine sees it (the stream to publish stays
/// with the I/O loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Publish a stream.
    Publish(Publishing),
    Unpublish(StreamType),
    Request(Request),
    /// Leave (also when the client is dropped: then nobody waits).
    Leave,
}

/// What the I/O loop does with the media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaAction {
    /// Attach the stream given with the publish command at the next offer.
    Publish(StreamType),
    /// Forget a publish the server refused (what is published stays).
    CancelPublish(StreamType),
    /// Stop sending the published stream of this type.
    Unpublish(StreamType),
    SetMuted {
        audio: Option<bool>,
        video: Option<bool>,
    },
    /// Answer the server's offer, then report with [`Machine::answered`];
    /// `carries_publish` names the publish whose m-lines it adds.
    Answer {
        sdp: String,
        carries_publish: Option<StreamType>,
        new_connection: bool,
    },
    /// The publish of this type is confirmed: start sending.
    StartSending(StreamType),
    /// Send only these simulcast layers (largest first) of the published
    /// stream of this type: the server says nobody needs the others.
    SendLayers(StreamType, Vec<bool>),
    /// A remote stream ended (or was unsubscribed).
    StreamRemoved(UserId, StreamType),
    /// Read the link counters, then report with [`Machine::link`].
    MeasureLink,
    /// The connection dropped: close the media, keeping the published
    /// stream to publish again after rejoining.
    Reset,
    /// Rejoined: publish the kept streams again.
    Republish,
    /// Leave or forced exit: close the media and the published stream's
    /// sources (devices released).
    CloseAll,
}

/// One thing for the I/O loop to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// The status changed (set before the events that follow).
    Status(Status),
    Send(ClientMessage),
    Emit(ClientEvent),
    Reply(Token, Result<(), ClientError>),
    Media(MediaAction),
    /// Open a new connection and join with `resume`; report with
    /// [`Machine::rejoined`] or [`Machine::rejoin_failed`].
    Rejoin {
        resume: String,
        role: Role,
    },
    /// Drop the rejoin attempt under way.
    CancelRejoin,
    /// Close the signaling connection (a bounded closing handshake).
    Close,
    /// The session is over.
    Done,
}

/// The machine's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub reconnect: ReconnectPolicy,
    pub leave_timeout: Duration,
    pub request_timeout: Duration,
}

/// The SDK's error for the server's `error` message.
pub(crate) fn to_client_error(e: ErrorMessage) -> ClientError {
    match e.name {
        c if c.is_auth() => ClientError::Auth {
            code: c,
            message: e.message,
        },
        ErrorCode::InvalidParameter => ClientError::InvalidParameter(e.message),
        ErrorCode::AlreadyInRoom => ClientError::AlreadyInRoom,
        ErrorCode::SessionBanned => {
            ClientError::Banned(e.kick_reason.unwrap_or(KickReason::DuplicateUserId))
        }
        code => ClientError::Server {
            code,
            message: e.message,
        },
    }
}
