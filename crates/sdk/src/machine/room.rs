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
            ServerMessage::ClientBanned { reason, message } => {
                self.fail_all();
                self.media(MediaAction::CloseAll);
                self.banned(reason, message);
            }
            ServerMessage::Offer {
                sdp,
                publish_req_id,
                new_connection,
            } => {
                let carries_publish = publish_req_id
                    .is_some_and(|r| self.publish.as_ref().is_some_and(|w| w.req_id == r));
                self.media(MediaAction::Answer {
                    sdp,
                    carries_publish,
                    new_connection,
                });
            }
            ServerMessage::Published { req_id } if self.publish_is(req_id) => {
                self.media(MediaAction::StartSending);
                if let Some(w) = self.publish.take() {
                    self.reply(w.token, Ok(()));
                }
            }
            ServerMessage::Unpublished { req_id }
                if self.unpublish.as_ref().is_some_and(|w| w.req_id == req_id) =>
            {
                if let Some(w) = self.unpublish.take() {
                    self.reply(w.token, Ok(()));
                }
            }
            ServerMessage::Error(e) if e.req_id.is_some_and(|r| self.publish_is(r)) => {
                // Refused as a second publish, the first goes on;
                // otherwise nothing is published.
                if e.code == ErrorCode::AlreadyPublishing.code() {
                    self.media(MediaAction::CancelPublish);
                } else {
                    self.published = None;
                    self.media(MediaAction::Unpublish);
                }
                if let Some(w) = self.publish.take() {
                    self.reply(w.token, Err(to_client_error(e)));
                }
            }
            // This client speaks of `main` streams only (it asks for a
            // protocol the server sends no `sub` stream to).
            ServerMessage::StreamAdded {
                user_id,
                stream_type: StreamType::Main,
                audio,
                video,
                audio_muted,
                video_muted,
            } => {
                self.mutes
                    .insert(user_id.clone(), (audio_muted, video_muted));
                self.paused.remove(&user_id);
                self.emit(ClientEvent::StreamAdded {
                    user_id,
                    audio,
                    video,
                });
            }
            ServerMessage::StreamUpdated {
                user_id,
                stream_type: StreamType::Main,
                audio_muted,
                video_muted,
                video_paused,
            } => {
                let (was_audio, was_video) = self
                    .mutes
                    .insert(user_id.clone(), (audio_muted, video_muted))
                    .unwrap_or_default();
                if video_paused {
                    self.paused.insert(user_id.clone());
                } else {
                    self.paused.remove(&user_id);
                }
                let u = user_id.clone();
                if audio_muted != was_audio {
                    self.emit(if audio_muted {
                        ClientEvent::MuteAudio { user_id: u.clone() }
                    } else {
                        ClientEvent::UnmuteAudio { user_id: u.clone() }
                    });
                }
                if video_muted != was_video {
                    self.emit(if video_muted {
                        ClientEvent::MuteVideo { user_id: u }
                    } else {
                        ClientEvent::UnmuteVideo { user_id: u }
                    });
                }
                self.emit(ClientEvent::StreamUpdated {
                    user_id,
                    audio_muted,
                    video_muted,
                    video_paused,
                });
            }
            ServerMessage::StreamRemoved {
                user_id,
                stream_type: StreamType::Main,
            } => {
                self.mutes.remove(&user_id);
                self.paused.remove(&user_id);
                self.subscribed.remove(&user_id);
                self.media(MediaAction::StreamRemoved(user_id.clone()));
                self.emit(ClientEvent::StreamRemoved { user_id });
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
            ServerMessage::Error(e) if e.req_id.is_some_and(|r| self.has_request(r)) => {
                if let Some(w) = e.req_id.and_then(|r| self.take_request(r)) {
                    self.reply(w.token, Err(to_client_error(e)));
                }
            }
            ServerMessage::Error(e) => {
                warn!(code = e.code, message = %e.message, "server error");
                if e.req_id.is_none() && e.name != ErrorCode::ServerShuttingDown {
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
            Request::Subscribe { user, audio, video } => {
                self.subscribed.insert(user, (audio, video));
            }
            Request::Unsubscribe { user } => {
                self.subscribed.remove(&user);
                self.media(MediaAction::StreamRemoved(user));
            }
            Request::SetVideoSize { user, size } => {
                if size.is_unlimited() {
                    self.video_sizes.remove(&user);
                } else {
                    self.video_sizes.insert(user, size);
                }
            }
            Request::SwitchRole(role) => {
                if let Some((_, r)) = self.status.room.as_mut() {
                    *r = role;
                }
                self.push_status();
                if role == Role::Audience {
                    // The server ended what was published.
                    self.published = None;
                    self.media(MediaAction::Unpublish);
                }
            }
        }
    }
}
