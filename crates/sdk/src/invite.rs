//! Joining through an invite: look one up, and trade it (with a name) for a
//! UserSig that enters its room (`docs/protocol.md`, "Invites").
//!
//! ```no_run
//! # async fn run() -> Result<(), kaigi_sdk::ClientError> {
//! use kaigi_sdk::{invite, Client, ClientOptions, Role};
//! let invite: kaigi_proto::invite::Invite =
//!     "kaigi://invite/k3m-9xq2-7hd?server=ws://192.0.2.10:7880".parse().unwrap();
//! let server = invite.server.clone().unwrap();
//! let got = invite::redeem(&server, &invite.code, "carol", None).await?;
//! let client = Client::new(got.client_options(&server)?)?;
//! client.join(got.room()?, Role::Anchor).await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Duration;

use kaigi_proto::invite::{
    InviteCode, InviteErrorBody, InvitePreview, RedeemRequest, RedeemedInvite,
};
use kaigi_proto::{RoomId, SdkAppId, UserId};
use serde::de::DeserializeOwned;

use crate::{ClientError, ClientOptions};

/// How long a lookup may take.
const TIMEOUT: Duration = Duration::from_secs(10);

fn url(server: &str, code: &InviteCode) -> Result<String, ClientError> {
    kaigi_proto::endpoint::invite_url(server, &code.to_string())
        .map_err(|e| ClientError::InvalidOptions(e.to_string()))
}

fn http(ca_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(path) = ca_file {
        let bad =
            |e: String| ClientError::InvalidOptions(format!("ca_file {}: {e}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| ClientError::InvalidOptions(e.to_string()))
}

fn transport_error(e: reqwest::Error) -> ClientError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_timeout() {
        ClientError::Timeout(TIMEOUT.as_millis() as u64)
    } else if text.contains("certificate") {
        ClientError::Tls(text)
    } else {
        ClientError::Unreachable(text)
    }
}

async fn answer<T: DeserializeOwned>(r: reqwest::Response) -> Result<T, ClientError> {
    let status = r.status();
    let bytes = r.bytes().await.map_err(transport_error)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Server {
            code: kaigi_proto::ErrorCode::Internal,
            message: format!("the server's answer could not be read: {e}"),
        });
    }
    match serde_json::from_slice::<InviteErrorBody>(&bytes) {
        Ok(b) => Err(ClientError::Invite {
            code: b.error.code,
            message: b.error.message,
        }),
        Err(_) => Err(ClientError::Unreachable(format!(
            "the server answered HTTP {status}; is it a Kaigi server?"
        ))),
    }
}

/// What the invite `code` on `server` is for, without using it.
pub async fn preview(
    server: &str,
    code: &InviteCode,
    ca_file: Option<&Path>,
) -> Result<InvitePreview, ClientError> {
    let url = url(server, code)?;
    let r = http(ca_file)?
        .get(&url)
        .send()
        .await
        .map_err(transport_error)?;
    answer(r).await
}

/// Trades the invite `code` on `server` for a UserSig for `user` that
/// enters the invite's room until it expires.
pub async fn redeem(
    server: &str,
    code: &InviteCode,
    user: &str,
    ca_file: Option<&Path>,
) -> Result<Redeemed, ClientError> {
    let url = url(server, code)?;
    let body = RedeemRequest {
        user_id: user.trim().to_owned(),
    };
    let r = http(ca_file)?
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(transport_error)?;
    Ok(Redeemed(answer(r).await?))
}

/// A redeemed invite: what joining its room needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed(pub RedeemedInvite);

impl Redeemed {
    /// The room it enters.
    pub fn room(&self) -> Result<RoomId, ClientError> {
        self.0
            .room
            .room()
            .map_err(|e| ClientError::InvalidParameter(e.to_string()))
    }

    /// The name it was given for.
    pub fn user(&self) -> Result<UserId, ClientError> {
        UserId::new(self.0.user_id.clone())
            .map_err(|e| ClientError::InvalidParameter(e.to_string()))
    }

    /// Client options for `server` with this UserSig.
    pub fn client_options(&self, server: &str) -> Result<ClientOptions, ClientError> {
        Ok(ClientOptions::new(
            server.to_owned(),
            SdkAppId(self.0.sdk_app_id),
            self.user()?,
            self.0.user_sig.clone(),
        ))
    }
}
