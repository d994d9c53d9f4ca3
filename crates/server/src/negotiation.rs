//! SDP negotiation of a signaling session's media connection: the server
//! always offers; publishing, subscribing and their ends change the
//! transceivers of the session's [`MediaPeer`] and lead to a new offer; a
//! worn connection is replaced. The session's loop is in `signaling.rs`.

use kaigi_proto::signal::{ErrorMessage, ServerMessage};
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
        old.detach_all(id);
        old.close().await;
        let publishing = self.publication.as_ref().map(|p| p.kinds);
        let failed =
            |e: kaigi_rtc::RtcError| ErrorMessage::new(None, ErrorCode::MediaFailed, e.to_string());
        let media = self.media().await?;
        if let Some(kinds) = publishing {
            media.receive(kinds).await.map_err(failed)?;
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
    ) -> Result<(), ErrorMessage> {
        if !kinds.audio && !kinds.video {
            return Err(ErrorMessage::new(
                None,
                ErrorCode::InvalidParameter,
                "publish audio, video or both",
            ));
        }
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
        let publication = Publication::new(id, place.user, kinds);
        self.shared.add_publication(publication.clone());
        let published = self
            .shared
            .try_apply(|reg| reg.publish(id, kinds).map(|fx| ((), fx)));
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
                .receive(kinds)
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
        info!(audio = kinds.audio, video = kinds.video, "publishing");
        Ok(())
    }

    pub(crate) async fn stop_publishing(&mut self) {
        if self.publication.take().is_some() {
            let id = self.id;
            self.shared.apply(|reg| ((), reg.unpublish(id)));
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
        for publisher in keyframes {
            if let Some(p) = self.shared.publication(publisher) {
                p.request_keyframe().await;
            }
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
            PeerEvent::Track(remote) => match &self.publication {
                Some(p) => p.attach(remote).await,
                None => debug!("a track arrived while not publishing; ignored"),
            },
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
