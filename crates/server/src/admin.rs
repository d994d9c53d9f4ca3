//! The admin HTTP API, in the shape of TRTC's server APIs:
//! `POST /api/<Action>?sdkappid=…&identifier=administrator&usersig=…`
//! with a JSON body, answering `{"Response":{…,"RequestId":…}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use axum::Json;
use kaigi_proto::{usersig, RoomId, SdkAppId, UserId, UserSigError, ADMIN_IDENTIFIER};
use serde_json::{json, Map, Value};
use tracing::info;

use crate::metrics::AdminCall;
use crate::registry::RoomNotExist;
use crate::state::{unix_now, Shared};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request's body may take to arrive (its headers have their
/// own deadline, [`crate::listener::HEADER_READ_TIMEOUT`]).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many users per `RemoveUser` call (TRTC's limit).
pub const MAX_USER_IDS: usize = 10;
/// `ListRooms` default and maximum page size.
pub const LIST_LIMIT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;

/// An admin API error: TRTC's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// E.g. `FailedOperation.RoomNotExist`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

impl From<RoomNotExist> for ApiError {
    fn from(_: RoomNotExist) -> Self {
        err("FailedOperation.RoomNotExist", "the room does not exist")
    }
}

/// The actions the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remove users from a numeric room.
    RemoveUser,
    /// Remove users from a string room.
    RemoveUserByStrRoomId,
    /// Close a numeric room.
    DismissRoom,
    /// Close a string room.
    DismissRoomByStrRoomId,
    /// List the users of a room.
    DescribeRoom,
    /// List an app's rooms.
    ListRooms,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RemoveUser" => Action::RemoveUser,
            "RemoveUserByStrRoomId" => Action::RemoveUserByStrRoomId,
            "DismissRoom" => Action::DismissRoom,
            "DismissRoomByStrRoomId" => Action::DismissRoomByStrRoomId,
            "DescribeRoom" => Action::DescribeRoom,
            "ListRooms" => Action::ListRooms,
            _ => return None,
        })
    }
}

/// `/api/{action}`: every method comes here so that each failure answers
/// in TRTC's JSON shape. The action is taken from the path as sent (every
/// action name is plain ASCII), so a path that does not percent-decode to
/// UTF-8 is `InvalidAction` too, not a bare 400.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    body: Body,
) -> Json<Value> {
    let raw = uri.path().strip_prefix("/api/").unwrap_or_default();
    let action: String = raw.chars().take(64).collect();
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = serve(&shared, &action, &query, method, body).await;
    let (label, response) = match result {
        Ok(mut fields) => {
            info!(%action, %request_id, "admin call done");
            fields.insert("RequestId".into(), json!(request_id));
            ("ok".to_owned(), Value::Object(fields))
        }
        Err(e) => {
            info!(%action, code = e.code, message = %e.message, %request_id, "admin call refused");
            (
                e.code.to_owned(),
                json!({"Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id}),
            )
        }
    };
    let action_label = if Action::parse(&action).is_some() {
        action
    } else {
        "unknown".into()
    };
    shared
        .metrics
        .admin_calls
        .get_or_create(&AdminCall {
            action: action_label,
            result: label,
        })
        .inc();
    Json(json!({ "Response": response }))
}

async fn serve(
    shared: &Shared,
    action: &str,
    query: &HashMap<String, String>,
    method: Method,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    if method != Method::POST {
        return Err(err(
            "UnsupportedOperation",
            format!("use POST, not {method}"),
        ));
    }
    let app = authenticate(shared, query)?;
    let action = Action::parse(action)
        .ok_or_else(|| err("InvalidAction", format!("no such action: {action}")))?;
    let bytes = read_body(body).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| err("InvalidParameter", format!("the body is not JSON: {e}")))?;
    let body = body
        .as_object()
        .ok_or_else(|| err("InvalidParameter", "the body must be a JSON object"))?;
    match body.get("SdkAppId") {
        None | Some(Value::Null) => {
            return Err(err("MissingParameter.SdkAppId", "SdkAppId is required"))
        }
        Some(v) if v.as_u64() != Some(u64::from(app.0)) => {
            return Err(err(
                "UnauthorizedOperation.SdkAppId",
                format!("the body's SdkAppId {v} is not the authenticated app {app}"),
            ))
        }
        Some(_) => {}
    }
    let now = unix_now();
    let mut out = Map::new();
    match action {
        Action::RemoveUser | Action::RemoveUserByStrRoomId => {
            let room = room_id(body, action == Action::RemoveUserByStrRoomId)?;
            let users = user_ids(body)?;
            let removed = shared.apply(|reg| match reg.remove_users(app, &room, &users, now) {
                Ok((removed, fx)) => (Ok(removed), fx),
                Err(e) => (Err(e), Vec::new()),
            })?;
            info!(%app, %room, removed = ?removed.iter().map(UserId::as_str).collect::<Vec<_>>(), "users removed");
        }
        Action::DismissRoom | Action::DismissRoomByStrRoomId => {
            let room = room_id(body, action == Action::DismissRoomByStrRoomId)?;
            let kicked = shared.apply(|reg| match reg.dismiss(app, &room, now) {
                Ok(fx) => (Ok(fx.len()), fx),
                Err(e) => (Err(e), Vec::new()),
            })?;
            info!(%app, %room, kicked, "room dismissed");
        }
        Action::DescribeRoom => {
            let room = match body.get("RoomId") {
                Some(Value::String(_)) => room_id(body, true)?,
                _ => room_id(body, false)?,
            };
            let described = shared.read(|reg| {
                reg.room(app, &room).map(|r| {
                    let users: Vec<Value> = r
                        .participants()
                        .into_iter()
                        .map(|(u, p)| json!({"UserId": u, "Role": p.role, "JoinTime": p.joined_at}))
                        .collect();
                    (users, r.created_at)
                })
            });
            let (users, created) = described.ok_or(RoomNotExist)?;
            out.extend(room_fields(&room));
            out.insert("CreateTime".into(), json!(created));
            out.insert("Total".into(), json!(users.len()));
            out.insert("Users".into(), Value::Array(users));
        }
        Action::ListRooms => {
            let offset = count(body, "Offset", 0, usize::MAX)?;
            let limit = count(body, "Limit", LIST_LIMIT, LIST_LIMIT_MAX)?;
            let (total, rooms) = shared.read(|reg| {
                let all = reg.rooms(app);
                let page: Vec<Value> = all
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|(id, r)| {
                        let mut m = room_fields(id);
                        m.insert("UserCount".into(), json!(r.len()));
                        m.insert("CreateTime".into(), json!(r.created_at));
                        Value::Object(m)
                    })
                    .collect();
                (all.len(), page)
            });
            out.insert("Total".into(), json!(total));
            out.insert("Rooms".into(), Value::Array(rooms));
        }
    }
    Ok(out)
}

/// Reads the whole body: at most [`MAX_BODY_BYTES`], within
/// [`BODY_READ_TIMEOUT`].
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    );
    match read.await {
        Err(_) => Err(err(
            "InvalidParameter",
            format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(err(
                        "RequestSizeLimitExceeded",
                        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                    ));
                }
                source = s.source();
            }
            Err(err(
                "InvalidParameter",
                format!("the body could not be read: {e}"),
            ))
        }
    }
}

/// Checks the query's `sdkappid`, `identifier` and `usersig`.
fn authenticate(shared: &Shared, query: &HashMap<String, String>) -> Result<SdkAppId, ApiError> {
    let get = |k: &str| query.get(k).filter(|v| !v.is_empty());
    let (Some(app), Some(identifier), Some(sig)) =
        (get("sdkappid"), get("identifier"), get("usersig"))
    else {
        return Err(err(
            "AuthFailure.InvalidAuthorization",
            "the query must carry sdkappid, identifier and usersig",
        ));
    };
    let app: SdkAppId = app.parse().map_err(|_| {
        err(
            "AuthFailure.InvalidAuthorization",
            "sdkappid is not a number",
        )
    })?;
    let key = shared.app_keys.get(&app).ok_or_else(|| {
        err(
            "UnauthorizedOperation.SdkAppId",
            format!("this server has no SdkAppId {app}"),
        )
    })?;
    if identifier != ADMIN_IDENTIFIER {
        return Err(err(
            "AuthFailure.UnauthorizedOperation",
            format!("identifier must be {ADMIN_IDENTIFIER}"),
        ));
    }
    usersig::verify(sig, app, key, ADMIN_IDENTIFIER, unix_now()).map_err(|e| match e {
        UserSigError::Expired { .. } => err("AuthFailure.SignatureExpire", e.to_string()),
        _ => err("AuthFailure.SignatureFailure", e.to_string()),
    })?;
    Ok(app)
}

fn room_id(body: &Map<String, Value>, string_room: bool) -> Result<RoomId, ApiError> {
    let bad = |m: String| err("InvalidParameter.RoomId", m);
    match (body.get("RoomId"), string_room) {
        (None | Some(Value::Null), _) => Err(err("MissingParameter.RoomId", "RoomId is required")),
        (Some(Value::String(s)), true) => RoomId::str(s.clone()).map_err(|e| bad(e.to_string())),
        (Some(Value::Number(n)), false) => n
            .as_u64()
            .ok_or_else(|| bad("RoomId must be a whole number".into()))
            .and_then(|n| RoomId::num(n).map_err(|e| bad(e.to_string()))),
        (Some(_), true) => Err(bad("RoomId must be a string for this action".into())),
        (Some(_), false) => Err(bad("RoomId must be a number for this action".into())),
    }
}

fn user_ids(body: &Map<String, Value>) -> Result<Vec<UserId>, ApiError> {
    let bad = |m: String| err("InvalidParameter.UserIds", m);
    let list = match body.get("UserIds") {
        None | Some(Value::Null) => {
            return Err(err("MissingParameter.UserIds", "UserIds is required"))
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("UserIds must be an array of strings".into())),
    };
    if list.is_empty() || list.len() > MAX_USER_IDS {
        return Err(bad(format!(
            "UserIds must hold 1 to {MAX_USER_IDS} users, not {}",
            list.len()
        )));
    }
    list.iter()
        .map(|v| {
            let s = v
                .as_str()
                .ok_or_else(|| bad("UserIds must be an array of strings".into()))?;
            UserId::new(s).map_err(|e| bad(format!("{s:?}: {e}")))
        })
        .collect()
}

fn count(
    body: &Map<String, Value>,
    name: &'static str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|n| (n as usize).min(max))
            .ok_or_else(|| err("InvalidParameter", format!("{name} must be a whole number"))),
    }
}

fn room_fields(room: &RoomId) -> Map<String, Value> {
    let mut m = Map::new();
    match room {
        RoomId::Num(n) => {
            m.insert("RoomId".into(), json!(n));
            m.insert("RoomIdType".into(), json!(0));
        }
        RoomId::Str(s) => {
            m.insert("RoomId".into(), json!(s));
            m.insert("RoomIdType".into(), json!(1));
        }
    }
    m
}
