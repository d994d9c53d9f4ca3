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
        // In the order of their types (main, then sub), as the client
        // attaches them.
        let publishing: Vec<_> = self
            .publications
            .values()
            .map(|p| (p.stream_type, p.kinds, p.layers.len()))
            .collect();
        let failed =
            |e: kaigi_rtc::RtcError| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string());
        let media = self.media().await?;
        for ((user, stream_type), size) in sizes {
            media.set_video_size(user, stream_type, size);
        }
        for (stream_type, kinds, layers) in publishing {
            media
                .receive(stream_type, kinds, layers)
                .await
                .map_err(failed)?;
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
        let live = !self.publications.is_empty();
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
            let publish_req_id = self
                .publish_reply
                .map(|(req_id, _)| req_id)
                .filter(|_| !self.publish_offered);
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

    /// `publish`: a stream of `stream_type` with these kinds and layers.
    /// One publish is negotiated at a time: another that arrives meanwhile
    /// waits for the first one's `published` (or failure).
    pub(crate) async fn publish(
        &mut self,
        req_id: u64,
        stream_type: StreamType,
        kinds: StreamKinds,
        layers: &[VideoSize],
    ) -> Result<(), ErrorMessage> {
        if self.publish_reply.is_some() && self.queued_publish.is_none() {
            self.queued_publish = Some(QueuedPublish {
                req_id,
                stream_type,
                kinds,
                layers: layers.to_vec(),
            });
            return Ok(());
        }
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
        if self.publications.contains_key(&stream_type) || self.publish_reply.is_some() {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::AlreadyPublishing,
                PublishError::AlreadyPublishing.to_string(),
            ));
        }
        // Registered before the registry announces it, so subscribers find it.
        let publication = Publication::new(id, place.user, stream_type, kinds, layers);
        self.shared.add_publication(publication.clone());
        // A block set before (SetUserBlocked) holds for new streams too; one
        // set from now on finds the publication registered.
        let blocked = self.shared.read(|reg| reg.blocked(id));
        publication.set_blocked(blocked.audio, blocked.video);
        let published = self
            .shared
            .try_apply(|reg| reg.publish(id, stream_type, kinds).map(|fx| ((), fx)));
        if let Err(e) = published {
            self.shared.remove_publication(id, stream_type);
            return Err(ErrorMessage::new(
                None,
                publish_error_code(e),
                e.to_string(),
            ));
        }
        self.publications.insert(stream_type, publication);
        self.publish_reply = Some((req_id, stream_type));
        self.publish_offered = false;
        let ready = async {
            self.media()
                .await?
                .receive(stream_type, kinds, layers.len())
                .await
                .map_err(|e| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string()))?;
            self.renegotiate().await
        }
        .await;
        if let Err(e) = ready {
            self.publish_reply = None;
            self.stop_publishing(stream_type).await;
            return Err(e);
        }
        info!(
            %stream_type,
            audio = kinds.audio,
            video = kinds.video,
            layers = layers.len(),
            "publishing"
        );
        Ok(())
    }

    /// Starts the publish that waited for the one before it, if any;
    /// its refusal answers it.
    pub(crate) async fn next_publish(&mut self) {
        if self.publish_reply.is_some() {
            return;
        }
        let Some(q) = self.queued_publish.take() else {
            return;
        };
        if let Err(mut e) = self
            .publish(q.req_id, q.stream_type, q.kinds, &q.layers)
            .await
        {
            e.req_id = Some(q.req_id);
            self.send(&ServerMessage::Error(e));
        }
    }

    /// Ends this session's stream of `stream_type`, if it publishes one.
    pub(crate) async fn stop_publishing(&mut self, stream_type: StreamType) {
        self.end_publication(stream_type, false).await;
    }

    /// Ends the stream of `stream_type`; `leaving`: the session leaves
    /// next (no media events for the webhooks).
    async fn end_publication(&mut self, stream_type: StreamType, leaving: bool) {
        if let Some(q) = self
            .queued_publish
            .take_if(|q| q.stream_type == stream_type)
        {
            // Unpublished before its turn came: it never starts.
            self.send(&ServerMessage::Error(ErrorMessage::new(
                Some(q.req_id),
                ErrorCode::NotPublishing,
                "unpublished before this publish started",
            )));
        }
        if self.publications.remove(&stream_type).is_some() {
            let id = self.id;
            self.shared.apply(|reg| {
                let effects = if leaving {
                    reg.unpublish_leaving(id, stream_type)
                } else {
                    reg.unpublish(id, stream_type)
                };
                ((), effects)
            });
            self.shared.remove_publication(id, stream_type);
            if let Some(media) = self.media.as_mut() {
                media.retire_receiving(stream_type);
            }
        }
    }

    /// Ends every stream this session publishes, as it leaves.
    pub(crate) async fn stop_publishing_all(&mut self) {
        for stream_type in StreamType::ALL {
            self.end_publication(stream_type, true).await;
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
                if let Some((req_id, stream_type)) =
                    self.publish_reply.take().filter(|_| self.publish_offered)
                {
                    self.publish_offered = false;
                    self.stop_publishing(stream_type).await;
                    err.req_id = Some(req_id);
                    self.send(&ServerMessage::Error(err));
                    self.next_publish().await;
                    return Ok(());
                }
                return Err(err);
            }
        };
        for (p, layer) in keyframes {
            p.request_keyframe(layer).await;
        }
        if self.publish_offered {
            self.publish_offered = false;
            if let Some((req_id, _)) = self.publish_reply.take() {
                self.send(&ServerMessage::Published { req_id });
            }
            self.next_publish().await;
        }
        if again {
            self.renegotiate().await?;
        }
        Ok(())
    }

    pub(crate) async fn subscribe(
        &mut self,
        publisher: SessionId,
        stream_type: StreamType,
        kinds: StreamKinds,
    ) {
        let Some(publication) = self.shared.publication(publisher, stream_type) else {
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

    pub(crate) async fn unsubscribe(&mut self, publisher: SessionId, stream_type: StreamType) {
        let id = self.id;
        let Some(media) = self.media.as_mut() else {
            return;
        };
        match media.unsubscribe(id, publisher, stream_type).await {
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
                // With one publication and no simulcast the kind says it
                // all (a track whose transceiver was not found, say on a
                // republish).
                if let (None, [(stream_type, p)]) = (
                    slot,
                    self.publications.iter().collect::<Vec<_>>().as_slice(),
                ) {
                    if p.layers.len() <= 1 {
                        slot = Some((**stream_type, (remote.kind().await, 0)));
                    }
                }
                match slot.and_then(|(t, slot)| Some((self.publications.get(&t)?, slot))) {
                    Some((p, slot)) => p.attach(remote, slot).await,
                    None => debug!("a track arrived outside the publications; ignored"),
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

/// A `publish` that waits for the one being negotiated.
pub(crate) struct QueuedPublish {
    req_id: u64,
    stream_type: StreamType,
    kinds: StreamKinds,
    layers: Vec<VideoSize>,
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
        for (user, stream_type, paused) in paused {
            info!(%user, %stream_type, paused, "video to this client paused or resumed");
            let (audio_muted, video_muted) = self
                .mutes
                .get(&(user.clone(), stream_type))
                .copied()
                .unwrap_or_default();
            self.send(&ServerMessage::StreamUpdated {
                user_id: user,
                stream_type,
                audio_muted,
                video_muted,
                video_paused: paused,
            });
        }
    }

    /// Tells the client which layers of its simulcast videos anyone needs
    /// (`video-layers`, protocol 7), when that changed.
    pub(crate) fn tell_layers(&mut self) {
        let now = std::time::Instant::now();
        let changed: Vec<_> = self
            .publications
            .iter()
            .filter_map(|(&stream_type, p)| Some((stream_type, p.layers_to_send(now)?)))
            .collect();
        for (stream_type, active) in changed {
            debug!(%stream_type, ?active, "telling the publisher which layers are needed");
            self.send(&ServerMessage::VideoLayers {
                stream_type,
                active,
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
                        stream_type,
                        audio_muted,
                        video_muted,
                        ..
                    } => {
                        self.mutes
                            .insert((user_id, stream_type), (audio_muted, video_muted));
                    }
                    ServerMessage::StreamUpdated {
                        user_id,
                        stream_type,
                        audio_muted,
                        video_muted,
                        ..
                    } => {
                        self.mutes
                            .insert((user_id.clone(), stream_type), (audio_muted, video_muted));
                        let paused = self
                            .media
                            .as_ref()
                            .is_some_and(|m| m.video_paused(&user_id, stream_type));
                        if paused {
                            self.send(&ServerMessage::StreamUpdated {
                                user_id,
                                stream_type,
                                audio_muted,
                                video_muted,
                                video_paused: true,
                            });
                            return;
                        }
                    }
                    ServerMessage::StreamRemoved {
                        user_id,
                        stream_type,
                    } => {
                        self.mutes.remove(&(user_id, stream_type));
                    }
                    _ => {}
                }
            }
        }
        self.push(axum::extract::ws::Message::Text(text));
    }
}
