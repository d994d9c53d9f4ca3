//! The host's powers: removing a participant, ending the meeting, making
//! and revoking invites. The app has them when its own embedded server
//! holds the room, or when it joined another server with the app's secret
//! key (then through that server's admin API, as `kaigi admin` does).

use std::path::PathBuf;

use kaigi_proto::admin::{read_response, AdminError, Request};
use kaigi_proto::invite::{Invite, InviteCode, DEFAULT_INVITE_SECS};
use kaigi_proto::{endpoint, usersig, RoomId, SdkAppId, UserId, ADMIN_IDENTIFIER};
use serde_json::Value;

use crate::call::InviteInfo;
use crate::embedded::EmbeddedServer;
use crate::error::{AppError, AppErrorCode};

/// How long an admin call's UserSig is valid.
const ADMIN_SIG_SECS: u64 = 300;
/// How long an admin call may take.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A server this app may administer: its address, app and secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteAdmin {
    pub(crate) server: String,
    pub(crate) app: SdkAppId,
    pub(crate) key: String,
    pub(crate) ca: Option<PathBuf>,
}

/// Who holds the room for this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// The app's embedded server.
    Embedded,
    /// Another server, administered with the app's key.
    Remote(RemoteAdmin),
}

fn admin_error(e: AdminError) -> AppError {
    let code = match e.code.as_str() {
        "FailedOperation.RoomNotExist" => AppErrorCode::NotInRoom,
        c if c.starts_with("AuthFailure") || c.starts_with("UnauthorizedOperation") => {
            AppErrorCode::NotHost
        }
        _ => AppErrorCode::InvalidParameter,
    };
    AppError::new(code, e.to_string())
}

impl RemoteAdmin {
    /// Calls the admin API: the answer's fields, or its error.
    async fn call(&self, request: &Request) -> Result<serde_json::Map<String, Value>, AppError> {
        let url = endpoint::api_url(&self.server, request.action().name())
            .map_err(|e| AppError::new(AppErrorCode::InvalidOptions, e.to_string()))?;
        let sig = usersig::generate(
            self.app,
            &self.key,
            ADMIN_IDENTIFIER,
            ADMIN_SIG_SECS,
            kaigi_proto::unix_now(),
        );
        let mut http = reqwest::Client::builder().timeout(ADMIN_TIMEOUT);
        if let Some(path) = &self.ca {
            let pem = std::fs::read(path).map_err(|e| {
                AppError::new(
                    AppErrorCode::InvalidOptions,
                    format!("{}: {e}", path.display()),
                )
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| AppError::new(AppErrorCode::InvalidOptions, e.to_string()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let unreachable = |e: reqwest::Error| {
            AppError::new(AppErrorCode::ServerUnreachable, e.without_url().to_string())
        };
        let answer: Value = http
            .build()
            .map_err(|e| AppError::new(AppErrorCode::InvalidOptions, e.to_string()))?
            .post(&url)
            .query(&[
                ("sdkappid", self.app.to_string()),
                ("identifier", ADMIN_IDENTIFIER.to_owned()),
                ("usersig", sig),
                ("random", rand::random::<u32>().to_string()),
                ("contenttype", "json".to_owned()),
            ])
            .json(&request.body(self.app))
            .send()
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(unreachable)?;
        read_response(&answer).cloned().map_err(admin_error)
    }
}

impl Host {
    /// Removes `user` from `room`; whether they were there (a remote
    /// server does not say: true).
    pub(crate) async fn remove_user(
        &self,
        embedded: Option<&EmbeddedServer>,
        room: &RoomId,
        user: &UserId,
    ) -> Result<bool, AppError> {
        match self {
            Host::Embedded => Ok(embedded.is_some_and(|e| e.remove_user(room, user))),
            Host::Remote(admin) => {
                let request = Request::RemoveUser {
                    room: room.clone(),
                    users: vec![user.clone()],
                };
                admin.call(&request).await.map(|_| true)
            }
        }
    }

    /// Closes `room` for everyone.
    pub(crate) async fn dismiss(
        &self,
        embedded: Option<&EmbeddedServer>,
        room: &RoomId,
    ) -> Result<(), AppError> {
        match self {
            Host::Embedded => {
                if let Some(e) = embedded {
                    e.dismiss_room(room);
                }
                Ok(())
            }
            Host::Remote(admin) => admin
                .call(&Request::DismissRoom { room: room.clone() })
                .await
                .map(|_| ()),
        }
    }

    /// Makes an invite to `room` lasting a day.
    pub(crate) async fn create_invite(
        &self,
        embedded: Option<&EmbeddedServer>,
        room: &RoomId,
    ) -> Result<InviteInfo, AppError> {
        match (self, embedded) {
            (Host::Embedded, Some(e)) => e.create_invite(room),
            (Host::Embedded, None) => Err(AppError::new(AppErrorCode::NotHost, "no server")),
            (Host::Remote(admin), _) => {
                let made = admin
                    .call(&Request::CreateInvite {
                        room: room.clone(),
                        expire_secs: DEFAULT_INVITE_SECS,
                    })
                    .await?;
                let code: InviteCode = made
                    .get("Code")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| {
                        AppError::new(AppErrorCode::InvalidParameter, "the server made no invite")
                    })?;
                Ok(InviteInfo {
                    link: Invite::link(&admin.server, &code),
                    code: code.to_string(),
                    expires_at: made.get("ExpiresAt").and_then(Value::as_u64).unwrap_or(0),
                    revocable: true,
                })
            }
        }
    }

    /// Revokes the invite `code`.
    pub(crate) async fn revoke_invite(
        &self,
        embedded: Option<&EmbeddedServer>,
        code: &str,
    ) -> Result<(), AppError> {
        match self {
            Host::Embedded => {
                if let Some(e) = embedded {
                    e.revoke_invite(code);
                }
                Ok(())
            }
            Host::Remote(admin) => {
                let code = code
                    .parse()
                    .map_err(|e: kaigi_proto::invite::InviteParseError| {
                        AppError::invalid(e.to_string())
                    })?;
                admin
                    .call(&Request::RevokeInvite { code })
                    .await
                    .map(|_| ())
            }
        }
    }
}
