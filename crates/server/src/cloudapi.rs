//! The admin API as Tencent Cloud API 3.0 serves TRTC's: `POST /` with the
//! action in `X-TC-Action`, version `2019-07-22` in `X-TC-Version`, and a
//! `TC3-HMAC-SHA256` signature by a SecretId/SecretKey pair configured on
//! the server (`--cloud-api-key`), so a backend built on an official
//! tencentcloud SDK works pointed at Kaigi (`docs/admin-api.md`, "Cloud API
//! 3.0"). The same actions as `/api/{action}`, carried out the same way.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use kaigi_proto::admin::{Action, AdminError, Request};
use kaigi_proto::tc3;
use kaigi_proto::SdkAppId;
use serde_json::{json, Map, Value};
use tracing::info;

use crate::admin::{count_call, read_body, ApiError};
use crate::state::{unix_now, Shared};

fn err(code: &'static str, message: impl Into<String>) -> ApiError {
    AdminError::new(code, message)
}

/// `POST /`: one Cloud API 3.0 request, answered in its JSON shape (HTTP
/// 200, `{"Response":{…,"RequestId"}}` or `{"Response":{"Error":{…}}}`).
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Json<Value> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let action = header(&headers, "x-tc-action")
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect::<String>();
    let result = serve(&shared, &method, &uri, &headers, body).await;
    let response = match result {
        Ok(mut fields) => {
            info!(%action, %request_id, "cloud API call done");
            count_call(&shared, &action, "ok");
            fields.insert("RequestId".into(), json!(request_id));
            Value::Object(fields)
        }
        Err(e) => {
            info!(%action, code = %e.code, message = %e.message, %request_id, "cloud API call refused");
            count_call(&shared, &action, &e.code);
            json!({"Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id})
        }
    };
    Json(json!({ "Response": response }))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request's signature; the key that signed it.
fn authenticate<'a>(
    shared: &'a Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a crate::config::CloudApiKey, ApiError> {
    let invalid = |m: String| err("AuthFailure.InvalidAuthorization", m);
    let auth: tc3::Authorization = header(headers, "authorization")
        .ok_or_else(|| invalid("the request has no Authorization header".into()))?
        .parse()
        .map_err(|e: tc3::AuthorizationError| invalid(e.to_string()))?;
    if auth.service != tc3::TRTC_SERVICE {
        return Err(invalid(format!(
            "the credential's service is {}, not {}",
            auth.service,
            tc3::TRTC_SERVICE
        )));
    }
    for required in ["content-type", "host"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(invalid(format!("SignedHeaders must include {required}")));
        }
    }
    let timestamp: u64 = header(headers, "x-tc-timestamp")
        .ok_or_else(|| err("MissingParameter", "X-TC-Timestamp is required"))?
        .trim()
        .parse()
        .map_err(|_| err("InvalidParameter", "X-TC-Timestamp is not a Unix time"))?;
    let now = unix_now();
    if timestamp.abs_diff(now) > tc3::MAX_SKEW_SECS {
        return Err(err(
            "AuthFailure.SignatureExpire",
            format!(
                "the request's timestamp {timestamp} is more than {} s from the server's clock {now}",
                tc3::MAX_SKEW_SECS
            ),
        ));
    }
    if auth.date != tc3::utc_date(timestamp) {
        return Err(invalid(format!(
            "the credential's date {} is not the UTC date of X-TC-Timestamp",
            auth.date
        )));
    }
    if headers.contains_key("x-tc-token") {
        return Err(err(
            "AuthFailure.TokenFailure",
            "this server takes no temporary credentials (X-TC-Token); sign with a configured key pair",
        ));
    }
    let key = shared
        .config
        .cloud_api_keys
        .iter()
        .find(|k| k.secret_id == auth.secret_id)
        .ok_or_else(|| {
            err(
                "AuthFailure.SecretIdNotFound",
                format!("this server has no SecretId {}", auth.secret_id),
            )
        })?;
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = header(headers, name)
            .ok_or_else(|| invalid(format!("the signed header {name} is missing")))?;
        signed.push((name.as_str(), value));
    }
    let payload_hash = if header(headers, "x-tc-content-sha256") == Some("UNSIGNED-PAYLOAD") {
        tc3::sha256_hex(b"UNSIGNED-PAYLOAD")
    } else {
        tc3::sha256_hex(body)
    };
    let canonical = tc3::canonical_request(
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        &signed,
        &payload_hash,
    );
    let expected = tc3::signature(
        &key.secret_key,
        &auth.date,
        &auth.service,
        timestamp,
        &canonical,
    );
    if !tc3::same_signature(&expected, &auth.signature) {
        return Err(err(
            "AuthFailure.SignatureFailure",
            "the signature does not match the request (check the SecretKey, and sign the body sent)",
        ));
    }
    Ok(key)
}

async fn serve(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    if method != Method::POST {
        return Err(err(
            "UnsupportedOperation",
            format!("use POST with a JSON body, not {method}"),
        ));
    }
    let bytes = read_body(body).await?;
    let key = authenticate(shared, method, uri, headers, &bytes)?;
    match header(headers, "x-tc-version") {
        Some(tc3::TRTC_VERSION) => {}
        Some(v) => {
            return Err(err(
                "NoSuchVersion",
                format!("this server serves version {}, not {v}", tc3::TRTC_VERSION),
            ))
        }
        None => return Err(err("MissingParameter", "X-TC-Version is required")),
    }
    let name = header(headers, "x-tc-action")
        .ok_or_else(|| err("MissingParameter", "X-TC-Action is required"))?;
    let action = Action::parse(name)
        .ok_or_else(|| err("InvalidAction", format!("no such action: {name}")))?;
    let content_type = header(headers, "content-type").unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(err(
            "InvalidParameter.BodyParamsError",
            format!("the body must be application/json, not {content_type:?}"),
        ));
    }
    let app = body_app(&bytes)?;
    if !shared.app_keys.contains_key(&app) {
        return Err(err(
            "FailedOperation.SdkAppIdNotExist",
            format!("this server has no SdkAppId {app}"),
        ));
    }
    if !key.may_act_on(app) {
        return Err(err(
            "AuthFailure.UnauthorizedOperation",
            format!(
                "the SecretId {} may not act on SdkAppId {app}",
                key.secret_id
            ),
        ));
    }
    let request = Request::parse(action, &bytes, app)?;
    crate::admin::limit(shared, app, action)?;
    crate::admin::route(shared, app, request).await
}

/// The body's `SdkAppId`.
fn body_app(bytes: &[u8]) -> Result<SdkAppId, ApiError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| {
        err(
            "InvalidParameter.BodyParamsError",
            format!("the body is not JSON: {e}"),
        )
    })?;
    match body.get("SdkAppId") {
        None | Some(Value::Null) => Err(err("MissingParameter.SdkAppId", "SdkAppId is required")),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .map(SdkAppId)
            .ok_or_else(|| {
                err(
                    "InvalidParameterValue.SdkAppId",
                    format!("SdkAppId must be a positive integer, not {v}"),
                )
            }),
    }
}
