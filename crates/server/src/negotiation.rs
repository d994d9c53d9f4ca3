//! SDP negotiation of a signaling session's media connection: the server
//! always offers; publishing, subscribing and their ends change the
//! transceivers of the session's [`MediaPeer`] and lead to a new offer; a
//! worn connection is replaced. The session's loop is in `signaling.rs`.

use kaigi_proto::signal::{check_layers, ErrorMessage, ServerMessage, StreamType, VideoSize};
use kaigi_proto::ErrorCode;
use kaigi_rtc::PeerEvent;
use tracing::{debug, info, warn};

use crate::registry::{PublishError, SessionId, StreamKinds};
use crate::sfu::{MediaPeer, Publication, ENDED_MLINES_BEFORE_REPLACING};
use crate::signaling::Session;

impl Session {
    pub(crate) async fn media(&mut self) -> Result<&mut MediaPeer, ErrorMessage> {
        if self.media.is_none() {
            let ip = self.shared.config.media_ip();
            let peer = MediaPeer::new(
                self.shared.media_ports.clone(),
                self.shared.config.external_ip,
            )
            .await
            .map_err(|e| {
                warn!(%ip, error = %e, "media cannot start");
                // Said to the client, and in the log for the operator.
                ErrorMessage::new(
                    None,
                    ErrorCode::MediaFailed,
                    format!(
                        "the server could not start media on {ip}: {e} \
                         (its operator sets --media-ip to an address of the server \
                         that clients can reach)"
                    ),
                )
            })?;
            self.media = Some(peer);
        }
        self.media
            .as_mut()
            .ok_or_else(|| ErrorMessage::new(None, ErrorCode::Internal, "no media connection"))
    }

    /// Replaces the media connection with a new one that carries only what
    /// is live: ended m-lines otherwise stay in every offer for good.
    pub(crate) async fn replace_media(&mut self) -> Result<(), ErrorMessage> {
        let Some(mut old) = self.media.take() else {
            return Ok(());
        };
        let id = self.id;
        let subscriptions = old.subscriptions();
        info!(
            ended = old.ended_mlines(),
            live = subscriptions.len(),
            "replacing the media connection"
        );
        let sizes = old.video_sizes();
        old.detach_all(id);
        old.close().await;
        let publishing = self.publication.as_ref().map(|p| (p.kinds, p.layers.len()));
        let failed =
            |e: kaigi_rtc::RtcError| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string());
        let media = self.media().await?;
        for (user, size) in sizes {
            media.set_video_size(user, size);
        }
        if let Some((kinds, layers)) = publishing {
            media.receive(kinds, layers).await.map_err(failed)?;
        }
        for (publication, kinds) in subscriptions {
            media
                .subscribe(id, &publication, kinds)
                .await
                .map_err(failed)?;
        }
        self.new_connection = true;
        Ok(())
    }

    /// Sends a new offer, unless one is in flight (then it follows).
    pub(crate) async fn renegotiate(&mut self) -> Result<(), ErrorMessage> {
        // A connection is replaced only when something on it is live: a
        // new one with no m-line at all cannot be offered. Until then the
        // ended m-lines ride along (what one step ends, at most).
        let live = self.publication.is_some();
        let worn = self.media.as_ref().is_some_and(|m| {
            !m.negotiating()
                && m.ended_mlines() > ENDED_MLINES_BEFORE_REPLACING
                && (live || m.has_subscriptions())
        });
        // Protocol 1 clients do not know `newConnection`.
        if worn && self.protocol >= 2 {
            self.replace_media().await?;
        }
        if self.new_connection && !self.media().await?.carries_anything() {
            // What was live when the old connection was replaced ended
            // meanwhile: the new one is offered when something is.
            return Ok(());
        }
        let sdp = self
            .media()
            .await?
            .offer()
            .await
            .map_err(|e| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string()))?;
        if let Some(sdp) = sdp {
            let publish_req_id = self.publish_reply.filter(|_| !self.publish_offered);
            self.publish_offered |= publish_req_id.is_some();
            let new_connection = std::mem::take(&mut self.new_connection);
            self.send(&ServerMessage::Offer {
                sdp,
                publish_req_id,
                new_connection,
            });
        }
        Ok(())
    }

    pub(crate) async fn publish(
        &mut self,
        req_id: u64,
        kinds: StreamKinds,
        layers: &[VideoSize],
    ) -> Result<(), ErrorMessage> {
        if !kinds.audio && !kinds.video {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::InvalidParameter,
                "publish audio, video or both",
            ));
        }
        if !layers.is_empty() && !kinds.video {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::InvalidParameter,
                "simulcast layers without video",
            ));
        }
        check_layers(layers)
            .map_err(|e| ErrorMessage::new(None, ErrorCode::InvalidParameter, e))?;
        let id = self.id;
        let Some(place) = self.shared.read(|reg| reg.place(id).cloned()) else {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::NotInRoom,
                "join a room before publishing",
            ));
        };
        // Refused before anything is registered: the real publication
        // stays untouched.
        if self.publication.is_some() {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::AlreadyPublishing,
                PublishError::AlreadyPublishing.to_string(),
            ));
        }
        // Registered before the registry announces it, so subscribers find it.
        let publication = Publication::new(id, place.user, kinds, layers);
        self.shared.add_publication(publication.clone());
        let published = self
            .shared
            .try_apply(|reg| reg.publish(id, StreamType::Main, kinds).map(|fx| ((), fx)));
        if let Err(e) = published {
            self.shared.remove_publication(id);
            return Err(ErrorMessage::new(
                None,
                publish_error_code(e),
                e.to_string(),
            ));
        }
        self.publication = Some(publication);
        self.publish_reply = Some(req_id);
        self.publish_offered = false;
        let ready = async {
            self.media()
                .await?
                .receive(kinds, layers.len())
                .await
                .map_err(|e| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string()))?;
            self.renegotiate().await
        }
        .await;
        if let Err(e) = ready {
            self.publish_reply = None;
            self.stop_publishing().await;
            return Err(e);
        }
        info!(
            audio = kinds.audio,
            video = kinds.video,
            layers = layers.len(),
            "publishing"
        );
        Ok(())
    }

    pub(crate) async fn stop_publishing(&mut self) {
        if self.publication.take().is_some() {
            let id = self.id;
            self.shared
                .apply(|reg| ((), reg.unpublish(id, StreamType::Main)));
            self.shared.remove_publication(id);
            if let Some(media) = self.media.as_mut() {
                media.retire_receiving();
            }
        }
    }

    pub(crate) async fn answer(&mut self, sdp: String) -> Result<(), ErrorMessage> {
        let Some(media) = self.media.as_mut().filter(|m| m.negotiating()) else {
            // A client's answer can cross a `leave` (or a kick of its media)
            // on the wire: nothing to apply it to, nothing wrong either.
            debug!("an answer with no offer outstanding, ignored");
            return Ok(());
        };
        let (keyframes, again) = match media.answer(sdp).await {
            Ok(r) => r,
            Err(e) => {
                let mut err = ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string());
                if let Some(req_id) = self.publish_reply.take().filter(|_| self.publish_offered) {
                    self.publish_offered = false;
                    self.stop_publishing().await;
                    err.req_id = Some(req_id);
                }
                return Err(err);
            }
        };
        for (p, layer) in keyframes {
            p.request_keyframe(layer).await;
        }
        if self.publish_offered {
            self.publish_offered = false;
            if let Some(req_id) = self.publish_reply.take() {
                self.send(&ServerMessage::Published { req_id });
            }
        }
        if again {
            self.renegotiate().await?;
        }
        Ok(())
    }

    pub(crate) async fn subscribe(&mut self, publisher: SessionId, kinds: StreamKinds) {
        let Some(publication) = self.shared.publication(publisher) else {
            return;
        };
        let id = self.id;
        let result = async {
            let changed = self
                .media()
                .await?
                .subscribe(id, &publication, kinds)
                .await
                .map_err(|e| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string()))?;
            if changed {
                self.renegotiate().await?;
            }
            Ok::<(), ErrorMessage>(())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e.message, "subscribing failed");
            self.send(&ServerMessage::Error(e));
        }
    }

    pub(crate) async fn unsubscribe(&mut self, publisher: SessionId) {
        let id = self.id;
        let Some(media) = self.media.as_mut() else {
            return;
        };
        match media.unsubscribe(id, publisher).await {
            Ok(true) => {
                if let Err(e) = self.renegotiate().await {
                    warn!(error = %e.message, "renegotiating after unsubscribe failed");
                }
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "unsubscribing failed"),
        }
    }

    pub(crate) async fn on_media_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Track(remote) => {
                let mut slot = match &self.media {
                    Some(m) => m.slot_of(&remote).await,
                    None => None,
                };
                // Without simulcast the kind says it all (a track whose
                // transceiver was not found, say on a republish).
                if self
                    .publication
                    .as_ref()
                    .is_some_and(|p| p.layers.len() <= 1)
                {
                    slot = slot.or(Some((remote.kind().await, 0)));
                }
                match (&self.publication, slot) {
                    (Some(p), Some(slot)) => p.attach(remote, slot).await,
                    _ => debug!("a track arrived outside the publication; ignored"),
                }
            }
            PeerEvent::Failed => {
                let ports = &self.shared.media_ports;
                let ip = self
                    .shared
                    .config
                    .external_ip
                    .unwrap_or(ports.udp_addr().ip());
                let at = std::net::SocketAddr::new(ip, ports.udp_addr().port());
                let tcp = std::net::SocketAddr::new(ip, ports.tcp_addr().port());
                warn!(%at, %tcp, "media connection failed: no path to the client");
                self.send(&ServerMessage::Error(ErrorMessage::new(
                    None,
                    ErrorCode::MediaFailed,
                    format!(
                        "the media connection failed: no packets got through between \
                         you and the server's media ports ({at} UDP, {tcp} TCP): a network \
                         or firewall that blocks them?"
                    ),
                )));
            }
        }
    }
}

pub(crate) fn publish_error_code(e: PublishError) -> ErrorCode {
    match e {
        PublishError::NotInRoom => ErrorCode::NotInRoom,
        PublishError::Audience => ErrorCode::AudienceCannotPublish,
        PublishError::AlreadyPublishing => ErrorCode::AlreadyPublishing,
        PublishError::NotPublishing => ErrorCode::NotPublishing,
        PublishError::StreamNotFound => ErrorCode::StreamNotFound,
    }
}

impl Session {
    /// Chooses the layers this client receives (see
    /// [`crate::simulcast::allocate`]), asks publishers for the keyframes
    /// a switch waits for, and tells the client which videos paused or
    /// resumed.
    pub(crate) async fn allocate_layers(&mut self) {
        let Some(media) = self.media.as_mut() else {
            return;
        };
        let (keyframes, paused) = media.allocate(std::time::Instant::now());
        for (p, layer) in keyframes {
            debug!(user = %p.user, layer, "switching layer");
            p.request_keyframe(layer).await;
        }
        for (user, paused) in paused {
            info!(%user, paused, "video to this client paused or resumed");
            let (audio_muted, video_muted) = self.mutes.get(&user).copied().unwrap_or_default();
            self.send(&ServerMessage::StreamUpdated {
                user_id: user,
                stream_type: StreamType::Main,
                audio_muted,
                video_muted,
                video_paused: paused,
            });
        }
    }

    /// Relays a message from the room to the client. A `stream-updated`
    /// carries whether the server has paused that video to this client;
    /// the mute states are remembered for the ones the server sends.
    pub(crate) fn relay(&mut self, text: axum::extract::ws::Utf8Bytes) {
        if text.starts_with(r#"{"type":"stream-"#) {
            if let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) {
                match msg {
                    ServerMessage::StreamAdded {
                        user_id,
                        audio_muted,
                        video_muted,
                        ..
                    } => {
                        self.mutes.insert(user_id, (audio_muted, video_muted));
                    }
                    ServerMessage::StreamUpdated {
                        user_id,
                        audio_muted,
                        video_muted,
                        ..
                    } => {
                        self.mutes
                            .insert(user_id.clone(), (audio_muted, video_muted));
                        let paused = self
                            .media
                            .as_ref()
                            .is_some_and(|m| m.video_paused(&user_id));
                        if paused {
                            self.send(&ServerMessage::StreamUpdated {
                                user_id,
                                stream_type: StreamType::Main,
                                audio_muted,
                                video_muted,
                                video_paused: true,
                            });
                            return;
                        }
                    }
                    ServerMessage::StreamRemoved { user_id, .. } => {
                        self.mutes.remove(&user_id);
                    }
                    _ => {}
                }
            }
        }
        self.push(axum::extract::ws::Message::Text(text));
    }
}
