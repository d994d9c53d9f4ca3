//! The machine in a room: what the server's messages change while the
//! connection is up.

use std::time::Instant;

use kaigi_proto::signal::{ServerMessage, StreamType};
use kaigi_proto::{ErrorCode, Role};
use tracing::{debug, warn};

use super::types::{to_client_error, MediaAction, Request};
use super::{Machine, Phase};
use crate::events::ClientEvent;

impl Machine {
    pub(super) fn connected_message(&mut self, msg: ServerMessage, now: Instant) {
        match msg {
            ServerMessage::Pong { req_id } => {
                if let Phase::Connected(link) = &mut self.phase {
                    if let Some((_, sent)) = link.ping.take_if(|(id, _)| *id == req_id) {
                        link.signaling_rtt = Some(now.duration_since(sent).as_secs_f64() * 1000.0);
                    }
                }
            }
            ServerMessage::PeerJoin { user_id, role } => {
                self.status.peers.insert(user_id.clone(), role);
                self.push_status();
                self.emit(ClientEvent::PeerJoin { user_id, role });
            }
            ServerMessage::PeerLeave { user_id, reason } => {
                self.status.peers.remove(&user_id);
                self.push_status();
                self.emit(ClientEvent::PeerLeave { user_id, reason });
            }
            ServerMessage::PeerRole { user_id, role } => {
                self.status.peers.insert(user_id.clone(), role);
                self.push_status();
                self.emit(ClientEvent::PeerRole { user_id, role });
            }
            ServerMessage::ClientBanned {
                reason,
                cause,
                message,
            } => {
                // A reason this client does not know (a newer server's)
                // still forces it out, as a removal.
                let cause = cause
                    .or_else(|| kaigi_proto::KickReason::parse(&reason))
                    .unwrap_or(kaigi_proto::KickReason::RemovedByAdmin);
                self.fail_all();
                self.media(MediaAction::CloseAll);
                self.banned(cause, message);
            }
            ServerMessage::Offer {
                sdp,
                publish_req_id,
                new_connection,
            } => {
                let carries_publish = publish_req_id.and_then(|r| self.publish_of(r));
                self.media(MediaAction::Answer {
                    sdp,
                    carries_publish,
                    new_connection,
                });
            }
            ServerMessage::Published { req_id } if self.publish_of(req_id).is_some() => {
                if let Some(stream_type) = self.publish_of(req_id) {
                    self.media(MediaAction::StartSending(stream_type));
                    if let Some(w) = self.publish.remove(&stream_type) {
                        self.reply(w.token, Ok(()));
                    }
                }
            }
            ServerMessage::Unpublished { req_id }
                if self.unpublish.values().any(|w| w.req_id == req_id) =>
            {
                let done = self
                    .unpublish
                    .iter()
                    .find(|(_, w)| w.req_id == req_id)
                    .map(|(t, _)| *t);
                if let Some(w) = done.and_then(|t| self.unpublish.remove(&t)) {
                    self.reply(w.token, Ok(()));
                }
            }
            ServerMessage::Error(e) if e.req_id.and_then(|r| self.publish_of(r)).is_some() => {
                let Some(stream_type) = e.req_id.and_then(|r| self.publish_of(r)) else {
                    return;
                };
                // Refused as a second publish, the first goes on;
                // otherwise nothing of that type is published.
                if e.code == ErrorCode::AlreadyPublishing.code() {
                    self.media(MediaAction::CancelPublish(stream_type));
                } else {
                    self.published.remove(&stream_type);
                    self.media(MediaAction::Unpublish(stream_type));
                }
                if let Some(w) = self.publish.remove(&stream_type) {
                    self.reply(w.token, Err(to_client_error(e)));
                }
            }
            ServerMessage::StreamAdded {
                user_id,
                stream_type,
                audio,
                video,
                audio_muted,
                video_muted,
            } => {
                let key = (user_id.clone(), stream_type);
                self.paused.remove(&key);
                self.mutes.insert(key, (audio_muted, video_muted));
                self.emit(ClientEvent::StreamAdded {
                    user_id,
                    stream_type,
                    audio,
                    video,
                });
            }
            ServerMessage::StreamUpdated {
                user_id,
                stream_type,
                audio_muted,
                video_muted,
                video_paused,
            } => {
                let key = (user_id.clone(), stream_type);
                let (was_audio, was_video) = self
                    .mutes
                    .insert(key.clone(), (audio_muted, video_muted))
                    .unwrap_or_default();
                if video_paused {
                    self.paused.insert(key);
                } else {
                    self.paused.remove(&key);
                }
                let u = user_id.clone();
                // TRTC's mute events are about the main stream.
                let main = stream_type.is_main();
                if main && audio_muted != was_audio {
                    self.emit(if audio_muted {
                        ClientEvent::MuteAudio { user_id: u.clone() }
                    } else {
                        ClientEvent::UnmuteAudio { user_id: u.clone() }
                    });
                }
                if main && video_muted != was_video {
                    self.emit(if video_muted {
                        ClientEvent::MuteVideo { user_id: u }
                    } else {
                        ClientEvent::UnmuteVideo { user_id: u }
                    });
                }
                self.emit(ClientEvent::StreamUpdated {
                    user_id,
                    stream_type,
                    audio_muted,
                    video_muted,
                    video_paused,
                });
            }
            ServerMessage::StreamRemoved {
                user_id,
                stream_type,
            } => {
                let key = (user_id.clone(), stream_type);
                self.mutes.remove(&key);
                self.paused.remove(&key);
                self.subscribed.remove(&key);
                self.media(MediaAction::StreamRemoved(user_id.clone(), stream_type));
                self.emit(ClientEvent::StreamRemoved {
                    user_id,
                    stream_type,
                });
            }
            ServerMessage::Muted { req_id: r }
            | ServerMessage::Subscribed { req_id: r, .. }
            | ServerMessage::Unsubscribed { req_id: r, .. }
            | ServerMessage::VideoSizeSet { req_id: r, .. }
            | ServerMessage::ChatSent { req_id: r, .. }
            | ServerMessage::RoleSwitched { req_id: r, .. } => {
                if let Some(w) = self.take_request(r) {
                    self.request_done(w.what);
                    self.reply(w.token, Ok(()));
                }
            }
            ServerMessage::Chat {
                user_id,
                text,
                sent_at,
            } => self.emit(ClientEvent::Chat {
                user_id,
                text,
                sent_at,
            }),
            ServerMessage::Blocked { audio, video } => {
                self.emit(ClientEvent::Blocked { audio, video })
            }
            ServerMessage::VideoLayers {
                stream_type,
                active,
            } => self.media(MediaAction::SendLayers(stream_type, active)),
            ServerMessage::Error(e) if e.req_id.is_some_and(|r| self.has_request(r)) => {
                if let Some(w) = e.req_id.and_then(|r| self.take_request(r)) {
                    self.reply(w.token, Err(to_client_error(e)));
                }
            }
            ServerMessage::Error(e) => {
                warn!(code = e.code, message = %e.message, "server error");
                // A server going away or a room moving to another node:
                // the reconnect that follows is the news.
                let moving = matches!(e.name, ErrorCode::ServerShuttingDown | ErrorCode::RoomMoved);
                if e.req_id.is_none() && !moving {
                    self.emit(ClientEvent::Error {
                        code: e.code,
                        name: e.name.to_string(),
                        message: e.message,
                    });
                }
            }
            other => debug!(?other, "ignored"),
        }
    }

    /// What a request's success changes on this side.
    pub(super) fn request_done(&mut self, request: Request) {
        match request {
            Request::Mute { .. } | Request::Chat { .. } => {}
            Request::Subscribe {
                user,
                stream_type,
                audio,
                video,
            } => {
                self.subscribed.insert((user, stream_type), (audio, video));
            }
            Request::Unsubscribe { user, stream_type } => {
                self.subscribed.remove(&(user.clone(), stream_type));
                self.media(MediaAction::StreamRemoved(user, stream_type));
            }
            Request::SetVideoSize {
                user,
                stream_type,
                size,
            } => {
                if size.is_unlimited() {
                    self.video_sizes.remove(&(user, stream_type));
                } else {
                    self.video_sizes.insert((user, stream_type), size);
                }
            }
            Request::SwitchRole(role) => {
                if let Some((_, r)) = self.status.room.as_mut() {
                    *r = role;
                }
                self.push_status();
                if role == Role::Audience {
                    // The server ended what was published.
                    self.published.clear();
                    for stream_type in StreamType::ALL {
                        self.media(MediaAction::Unpublish(stream_type));
                    }
                }
            }
        }
    }
}
