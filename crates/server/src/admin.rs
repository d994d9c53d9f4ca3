//! The admin HTTP API, in the shape of TRTC's server APIs:
//! `POST /api/<Action>?sdkappid=…&identifier=administrator&usersig=…`
//! with a JSON body, answering `{"Response":{…,"RequestId":…}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use axum::Json;
use kaigi_proto::admin::{
    Action, AdminError, DescribedRoom, ListedRoom, ListedRooms, Request, RoomUser,
};
use kaigi_proto::{usersig, SdkAppId, UserId, UserSigError, ADMIN_IDENTIFIER};
use serde_json::{json, Map, Value};
use tracing::info;

use crate::metrics::{AdminCall, Metrics};
use crate::registry::RoomNotExist;
use crate::state::{unix_now, Shared};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request's body may take to arrive (its headers have their
/// own deadline, [`crate::listener::HEADER_READ_TIMEOUT`]).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The admin API's error: TRTC's code and a message.
pub type ApiError = AdminError;

fn err(code: &'static str, message: impl Into<String>) -> ApiError {
    AdminError::new(code, message)
}

impl From<RoomNotExist> for ApiError {
    fn from(_: RoomNotExist) -> Self {
        err("FailedOperation.RoomNotExist", "the room does not exist")
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
            info!(%action, code = %e.code, message = %e.message, %request_id, "admin call refused");
            (
                e.code.clone(),
                json!({"Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id}),
            )
        }
    };
    count_call(&shared, &action, &label);
    Json(json!({ "Response": response }))
}

/// Counts a call of `action` (an unknown one as `unknown`) by its result.
pub(crate) fn count_call(shared: &Shared, action: &str, result: &str) {
    let action = if Action::parse(action).is_some() {
        action
    } else {
        "unknown"
    };
    shared
        .metrics
        .admin_calls
        .get_or_create(&AdminCall {
            action: action.to_owned(),
            result: result.to_owned(),
        })
        .inc();
}

/// Admin calls per app and action, as token buckets
/// ([`crate::config::Config::admin_rate_limit`]): TRTC answers
/// `RequestLimitExceeded` past 20 a second.
#[derive(Default)]
pub struct CallLimiter {
    buckets: parking_lot::Mutex<HashMap<(SdkAppId, Action), (f64, std::time::Instant)>>,
}

/// Takes one call of `action` by `app` from its bucket.
pub(crate) fn limit(shared: &Shared, app: SdkAppId, action: Action) -> Result<(), ApiError> {
    let rate = shared.config.admin_rate_limit;
    let now = std::time::Instant::now();
    let mut buckets = shared.admin_limits.buckets.lock();
    let (tokens, last) = buckets
        .entry((app, action))
        .or_insert((f64::from(rate.burst), now));
    let refill = now.duration_since(*last).as_secs_f64() * f64::from(rate.per_sec);
    *tokens = (*tokens + refill).min(f64::from(rate.burst));
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        Ok(())
    } else {
        Err(err(
            "RequestLimitExceeded",
            format!(
                "{} is limited to {} requests a second per app",
                action.name(),
                rate.per_sec
            ),
        ))
    }
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
    let request = Request::parse(action, &bytes, app)?;
    limit(shared, app, action)?;
    route(shared, app, request).await
}

/// Carries out `request` where it belongs: a room's actions on the room's
/// node (through Redis, in a service), `ListRooms` across the service,
/// the rest here.
pub(crate) async fn route(
    shared: &Shared,
    app: SdkAppId,
    request: Request,
) -> Result<Map<String, Value>, ApiError> {
    if let Some(cluster) = shared.cluster.get() {
        match &request {
            Request::RemoveUser { room, .. }
            | Request::DismissRoom { room }
            | Request::DescribeRoom { room }
            | Request::SetUserBlocked { room, .. } => {
                let owner = cluster.owner_of(app, room).await.map_err(unavailable)?;
                if let Some(o) = owner.filter(|o| o.node_id != cluster.node_id()) {
                    return forward(shared, cluster, &o.node_id, app, &request).await;
                }
            }
            Request::ListRooms { offset, limit } => {
                return list_service(shared, cluster, app, *offset, *limit).await;
            }
            _ => {}
        }
    }
    execute(shared, app, request).await
}

/// Who is in `room` of `app` now (asked of the room's node in a service);
/// nobody if there is no such room.
pub(crate) async fn room_users(
    shared: &Shared,
    app: SdkAppId,
    room: &kaigi_proto::RoomId,
) -> Result<Vec<UserId>, ApiError> {
    match route(shared, app, Request::DescribeRoom { room: room.clone() }).await {
        Ok(fields) => {
            let described: DescribedRoom = serde_json::from_value(Value::Object(fields))
                .map_err(|e| err("InternalError", format!("DescribeRoom's answer: {e}")))?;
            Ok(described.users.into_iter().map(|u| u.user_id).collect())
        }
        Err(e) if e.code == "FailedOperation.RoomNotExist" => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// An invite store's refusal in the API's terms.
fn invite_error(e: crate::invites::InviteError) -> ApiError {
    match e {
        crate::invites::InviteError::Unavailable(m) => err(
            "FailedOperation.ServiceUnavailable",
            format!("the service cannot reach its Redis now: {m}"),
        ),
        e => err("LimitExceeded.Invite", e.to_string()),
    }
}

/// The service's Redis could not be asked.
fn unavailable(e: crate::cluster::ClusterError) -> ApiError {
    err(
        "FailedOperation.ServiceUnavailable",
        format!("the service cannot reach its Redis now: {e}"),
    )
}

/// How long a request carried out by another node may take.
pub const ROUTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Has node `node` (the room's) carry out `request`, through Redis.
async fn forward(
    shared: &Shared,
    cluster: &crate::cluster::Cluster,
    node: &str,
    app: SdkAppId,
    request: &Request,
) -> Result<Map<String, Value>, ApiError> {
    Metrics::count(&shared.metrics.routed, request.action().name());
    let body = json!({"app": app.0, "action": request.action().name(), "body": request.body(app)});
    let reply = cluster
        .call(node, body, ROUTED_TIMEOUT)
        .await
        .map_err(|e| err("InternalError", format!("the room's node {node}: {e}")))?;
    reply_result(reply)
}

/// An answer from another node as this node's.
fn reply_result(reply: Value) -> Result<Map<String, Value>, ApiError> {
    if let Some(Value::Object(ok)) = reply.get("ok") {
        return Ok(ok.clone());
    }
    let code = reply["error"]["code"].as_str().unwrap_or("InternalError");
    let message = reply["error"]["message"].as_str().unwrap_or("");
    Err(AdminError::new(code, message))
}

/// `ListRooms` of the whole service: every live node's rooms, merged in
/// room order, then the page.
async fn list_service(
    shared: &Shared,
    cluster: &crate::cluster::Cluster,
    app: SdkAppId,
    offset: usize,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let nodes = cluster.live_nodes().await.map_err(unavailable)?;
    let mut all = local_rooms(shared, app);
    let asks = nodes
        .iter()
        .filter(|n| n.node_id != cluster.node_id())
        .map(|n| {
            cluster.call(
                &n.node_id,
                json!({"app": app.0, "action": LIST_HERE}),
                ROUTED_TIMEOUT,
            )
        });
    for reply in futures_util::future::join_all(asks).await {
        let reply = reply.map_err(|e| err("InternalError", e.to_string()))?;
        let mut listed: Vec<ListedRoom> = reply_result(reply)
            .ok()
            .and_then(|m| serde_json::from_value(m.get("Rooms").cloned()?).ok())
            .unwrap_or_default();
        all.append(&mut listed);
    }
    all.sort_by_key(|r| r.room.room());
    let listed = ListedRooms {
        total: all.len(),
        rooms: all.into_iter().skip(offset).take(limit).collect(),
    };
    match json!(listed) {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// What another node asks for its own rooms (not an action of the API).
const LIST_HERE: &str = "ListRoomsHere";

/// This node's rooms of `app`, in room order.
fn local_rooms(shared: &Shared, app: SdkAppId) -> Vec<ListedRoom> {
    shared.read(|reg| {
        reg.rooms(app)
            .iter()
            .map(|(id, r)| ListedRoom {
                room: (*id).into(),
                user_count: r.len(),
                create_time: r.created_at,
            })
            .collect()
    })
}

/// Carries out a request another node sent (it routed it here): the
/// room's actions, or this node's rooms for a `ListRooms` of the service.
pub async fn serve_routed(shared: Arc<Shared>, body: Value) -> Value {
    let answer = |r: Result<Map<String, Value>, ApiError>| match r {
        Ok(m) => json!({"ok": m}),
        Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
    };
    let Some(app) = body["app"].as_u64().and_then(|a| u32::try_from(a).ok()) else {
        return answer(Err(err("InvalidParameter", "no app")));
    };
    let app = SdkAppId(app);
    let action = body["action"].as_str().unwrap_or_default();
    if action == LIST_HERE {
        return answer(Ok([("Rooms".to_owned(), json!(local_rooms(&shared, app)))]
            .into_iter()
            .collect()));
    }
    let Some(action) = Action::parse(action) else {
        return answer(Err(err(
            "InvalidAction",
            format!("no such action: {action}"),
        )));
    };
    let bytes = serde_json::to_vec(&body["body"]).unwrap_or_default();
    answer(match Request::parse(action, &bytes, app) {
        Ok(r) => execute(&shared, app, r).await,
        Err(e) => Err(e),
    })
}

/// Carries out a request on this node's own registry (and the service's
/// invites).
async fn execute(
    shared: &Shared,
    app: SdkAppId,
    request: Request,
) -> Result<Map<String, Value>, ApiError> {
    let now = unix_now();
    let fields = match request {
        Request::RemoveUser { room, users } => {
            let removed = shared.try_apply(|reg| reg.remove_users(app, &room, &users, now))?;
            info!(%app, %room, removed = ?removed.iter().map(UserId::as_str).collect::<Vec<_>>(), "users removed");
            json!({})
        }
        Request::DismissRoom { room } => {
            let kicked =
                shared.try_apply(|reg| reg.dismiss(app, &room, now).map(|fx| (fx.len(), fx)))?;
            info!(%app, %room, kicked, "room dismissed");
            json!({})
        }
        Request::DescribeRoom { room } => {
            let described = shared.read(|reg| {
                reg.room(app, &room).map(|r| {
                    let users: Vec<RoomUser> = r
                        .participants()
                        .into_iter()
                        .map(|(u, p)| RoomUser {
                            user_id: u.clone(),
                            role: p.role,
                            join_time: p.joined_at,
                        })
                        .collect();
                    DescribedRoom {
                        room: (&room).into(),
                        create_time: r.created_at,
                        total: users.len(),
                        users,
                    }
                })
            });
            json!(described.ok_or(RoomNotExist)?)
        }
        Request::CreateInvite { room, expire_secs } => {
            let made = crate::invites::create(shared, app, room, expire_secs)
                .await
                .map_err(invite_error)?;
            json!(made)
        }
        Request::RevokeInvite { code } => {
            if !crate::invites::revoke(shared, app, &code)
                .await
                .map_err(invite_error)?
            {
                return Err(err(
                    "FailedOperation.InviteNotExist",
                    format!("the app has no invite {code}"),
                ));
            }
            json!({})
        }
        Request::SetUserBlocked {
            room,
            user,
            audio,
            video,
        } => {
            let blocked = crate::registry::Blocked { audio, video };
            shared
                .try_apply(|reg| reg.set_blocked(app, &room, &user, blocked))
                .map_err(|e| match e {
                    crate::registry::BlockError::RoomNotExist => {
                        err("FailedOperation.RoomNotExist", e.to_string())
                    }
                    crate::registry::BlockError::UserNotInRoom => {
                        err("FailedOperation.UserNotInRoom", e.to_string())
                    }
                })?;
            info!(%app, %room, %user, audio, video, "user blocked");
            json!({})
        }
        Request::ListInvites { room } => {
            json!(kaigi_proto::admin::ListedInvites {
                invites: crate::invites::list(shared, app, room.as_ref())
                    .await
                    .map_err(invite_error)?,
            })
        }
        Request::ListRooms { offset, limit } => {
            let listed = shared.read(|reg| {
                let all = reg.rooms(app);
                ListedRooms {
                    total: all.len(),
                    rooms: all
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .map(|(id, r)| ListedRoom {
                            room: (*id).into(),
                            user_count: r.len(),
                            create_time: r.created_at,
                        })
                        .collect(),
                }
            });
            json!(listed)
        }
    };
    match fields {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// Reads the whole body: at most [`MAX_BODY_BYTES`], within
/// [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
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
            "FailedOperation.SdkAppIdNotExist",
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
