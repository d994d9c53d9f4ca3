//! The embedded server: with no server configured, the app hosts
//! kaigi-server in-process, with the dev app (shared with the `kaigi` CLI)
//! so that `kaigi bot` joins the same room without flags.

use std::net::{IpAddr, SocketAddr};

use kaigi_proto::SdkAppId;
use kaigi_server::config::{Config, DevApp, DevAppExt};
use kaigi_server::ServerHandle;
use tracing::{info, warn};

/// The address the embedded server listens on unless `KAIGI_LISTEN` says
/// otherwise. Loopback by default: joining from another machine is a
/// choice (see the README).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";

/// A kaigi-server running inside the app.
pub struct EmbeddedServer {
    handle: ServerHandle,
    app: DevApp,
    url: String,
}

impl EmbeddedServer {
    /// Starts it on `listen` with media on port 7882 (busy ports fall back
    /// to any free ones), on `media_ip` (default: the listener's IP; give
    /// the LAN address when listening on 0.0.0.0).
    pub async fn start(listen: SocketAddr, media_ip: Option<IpAddr>) -> std::io::Result<Self> {
        let mut app = DevApp::load_or_generate();
        let config = |addr: SocketAddr, media_port: u16| {
            let mut c = Config::new(addr, vec![app.credential()]);
            c.media_ip = media_ip;
            c.media_port = media_port;
            c
        };
        let first = config(listen, kaigi_server::config::DEFAULT_MEDIA_PORT);
        let handle = match kaigi_server::start(first).await {
            Ok(h) => h,
            Err(e) => {
                warn!(%listen, error = %e, "port busy; using any free ports");
                kaigi_server::start(config(SocketAddr::new(listen.ip(), 0), 0)).await?
            }
        };
        // A server on every interface is reached at the media address.
        let addr = handle.local_addr();
        let host = match (addr.ip().is_unspecified(), media_ip) {
            (true, Some(ip)) => SocketAddr::new(ip, addr.port()),
            _ => addr,
        };
        let url = format!("ws://{host}");
        app.server = Some(url.clone());
        if let Err(e) = app.save() {
            warn!(error = %e, "the dev app could not be saved; `kaigi` needs --server/--app/--key");
        }
        info!(%url, "embedded server started");
        Ok(EmbeddedServer { handle, app, url })
    }

    /// `ws://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The app it serves.
    pub fn sdk_app_id(&self) -> SdkAppId {
        self.app.sdk_app_id
    }

    /// The app's secret key, to make UserSigs.
    pub fn secret_key(&self) -> &str {
        &self.app.secret_key
    }

    /// Removes `user` from `room` as the admin API's `RemoveUser` does
    /// (they get `client-banned`, `removed-by-admin`). Returns whether they
    /// were there.
    pub fn remove_user(&self, room: &kaigi_proto::RoomId, user: &kaigi_proto::UserId) -> bool {
        let app = self.app.sdk_app_id;
        let now = kaigi_proto::unix_now();
        let removed = self
            .handle
            .shared()
            .try_apply(|reg| reg.remove_users(app, room, std::slice::from_ref(user), now));
        let removed = removed.is_ok_and(|users| !users.is_empty());
        info!(%room, %user, removed, "removed by the host");
        removed
    }

    /// Closes `room` for everyone as the admin API's `DismissRoom` does.
    /// Returns whether it was open.
    pub fn dismiss_room(&self, room: &kaigi_proto::RoomId) -> bool {
        let app = self.app.sdk_app_id;
        let now = kaigi_proto::unix_now();
        let closed = self
            .handle
            .shared()
            .try_apply(|reg| reg.dismiss(app, room, now).map(|fx| (fx.len(), fx)));
        info!(%room, kicked = ?closed.as_ref().ok(), "meeting ended by the host");
        closed.is_ok()
    }

    /// Makes an invite to `room` lasting a day.
    pub fn create_invite(
        &self,
        room: &kaigi_proto::RoomId,
    ) -> Result<crate::call::InviteInfo, crate::error::AppError> {
        let now = kaigi_proto::unix_now();
        let made = self
            .handle
            .shared()
            .invites
            .create(
                self.app.sdk_app_id,
                room.clone(),
                kaigi_proto::invite::DEFAULT_INVITE_SECS,
                now,
            )
            .map_err(|e| crate::error::AppError::invalid(e.to_string()))?;
        Ok(crate::call::InviteInfo {
            link: kaigi_proto::invite::Invite::link(&self.url, &made.code),
            code: made.code.to_string(),
            expires_at: made.expires_at,
            revocable: true,
        })
    }

    /// Revokes the invite `code` (as written by [`Self::create_invite`]).
    pub fn revoke_invite(&self, code: &str) -> bool {
        let Ok(code) = code.parse() else {
            return false;
        };
        self.handle
            .shared()
            .invites
            .revoke(self.app.sdk_app_id, &code, kaigi_proto::unix_now())
    }

    /// The command that joins `room` as a second participant.
    pub fn bot_command(&self, room: &kaigi_proto::RoomId) -> String {
        let room_arg = match room {
            kaigi_proto::RoomId::Num(n) => format!("--room {n}"),
            kaigi_proto::RoomId::Str(s) => format!("--str-room '{s}'"),
        };
        format!(
            "kaigi bot --server {} --app {} --key {} --user bot {room_arg} --video test-pattern --audio tone",
            self.url, self.app.sdk_app_id, self.app.secret_key
        )
    }

    /// Stops it: everyone connected is told to reconnect later.
    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}
