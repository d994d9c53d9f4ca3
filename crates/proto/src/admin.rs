//! The admin API's requests and responses (`docs/admin-api.md`), shared by
//! the server (which parses requests and builds responses), the CLI and
//! the tests (which build requests and read responses). No I/O.
//!
//! A request is `POST /api/<Action>` with a JSON object body; the answer is
//! `{"Response": {…fields…, "RequestId": "…"}}` or, on failure,
//! `{"Response": {"Error": {"Code": "…", "Message": "…"}, "RequestId": "…"}}`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::invite::{InviteCode, DEFAULT_INVITE_SECS, MAX_INVITE_SECS};
use crate::{Role, RoomId, SdkAppId, UserId};

/// At most this many users per `RemoveUser` call (TRTC's limit).
pub const MAX_USER_IDS: usize = 10;
/// `ListRooms`' default page size.
pub const LIST_LIMIT: usize = 100;
/// `ListRooms`' largest page size.
pub const LIST_LIMIT_MAX: usize = 1000;

/// The actions the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Make an invite to a room (Kaigi's own).
    CreateInvite,
    /// Revoke an invite (Kaigi's own).
    RevokeInvite,
    /// List an app's live invites (Kaigi's own).
    ListInvites,
    /// Block or unblock a user's audio and/or video in a numeric room.
    SetUserBlocked,
    /// The same in a string room.
    SetUserBlockedByStrRoomId,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 11] = [
        Action::RemoveUser,
        Action::RemoveUserByStrRoomId,
        Action::DismissRoom,
        Action::DismissRoomByStrRoomId,
        Action::DescribeRoom,
        Action::ListRooms,
        Action::CreateInvite,
        Action::RevokeInvite,
        Action::ListInvites,
        Action::SetUserBlocked,
        Action::SetUserBlockedByStrRoomId,
    ];

    /// The action named `s` (as in the URL path), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The action's name, as in the URL path.
    pub fn name(self) -> &'static str {
        match self {
            Action::RemoveUser => "RemoveUser",
            Action::RemoveUserByStrRoomId => "RemoveUserByStrRoomId",
            Action::DismissRoom => "DismissRoom",
            Action::DismissRoomByStrRoomId => "DismissRoomByStrRoomId",
            Action::DescribeRoom => "DescribeRoom",
            Action::ListRooms => "ListRooms",
            Action::CreateInvite => "CreateInvite",
            Action::RevokeInvite => "RevokeInvite",
            Action::ListInvites => "ListInvites",
            Action::SetUserBlocked => "SetUserBlocked",
            Action::SetUserBlockedByStrRoomId => "SetUserBlockedByStrRoomId",
        }
    }
}

/// A refused request: TRTC's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdminError {
    /// E.g. `FailedOperation.RoomNotExist`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

impl AdminError {
    /// An error with this code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What a request asks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `RemoveUser` / `RemoveUserByStrRoomId`: the action follows the room.
    RemoveUser { room: RoomId, users: Vec<UserId> },
    /// `DismissRoom` / `DismissRoomByStrRoomId`.
    DismissRoom { room: RoomId },
    /// `DescribeRoom` (either kind of room).
    DescribeRoom { room: RoomId },
    /// `ListRooms`, one page.
    ListRooms { offset: usize, limit: usize },
    /// `CreateInvite`: an invite to `room` lasting `expire_secs`.
    CreateInvite { room: RoomId, expire_secs: u64 },
    /// `RevokeInvite`.
    RevokeInvite { code: InviteCode },
    /// `ListInvites`, of one room or of all.
    ListInvites { room: Option<RoomId> },
    /// `SetUserBlocked` / `SetUserBlockedByStrRoomId`: what of `user`'s
    /// media the server stops forwarding (TRTC's `IsMute`: 0 nothing, 1
    /// both, 2 audio, 3 video).
    SetUserBlocked {
        room: RoomId,
        user: UserId,
        audio: bool,
        video: bool,
    },
}

impl Request {
    /// The action that carries this request.
    pub fn action(&self) -> Action {
        match self {
            Request::RemoveUser { room, .. } if room.is_str() => Action::RemoveUserByStrRoomId,
            Request::RemoveUser { .. } => Action::RemoveUser,
            Request::DismissRoom { room } if room.is_str() => Action::DismissRoomByStrRoomId,
            Request::DismissRoom { .. } => Action::DismissRoom,
            Request::DescribeRoom { .. } => Action::DescribeRoom,
            Request::ListRooms { .. } => Action::ListRooms,
            Request::CreateInvite { .. } => Action::CreateInvite,
            Request::RevokeInvite { .. } => Action::RevokeInvite,
            Request::ListInvites { .. } => Action::ListInvites,
            Request::SetUserBlocked { room, .. } if room.is_str() => {
                Action::SetUserBlockedByStrRoomId
            }
            Request::SetUserBlocked { .. } => Action::SetUserBlocked,
        }
    }

    /// The JSON body for `app`.
    pub fn body(&self, app: SdkAppId) -> Value {
        let mut body = match self {
            Request::RemoveUser { room, users } => {
                json!({"RoomId": room_json(room), "UserIds": users})
            }
            Request::DismissRoom { room } | Request::DescribeRoom { room } => {
                json!({"RoomId": room_json(room)})
            }
            Request::ListRooms { offset, limit } => json!({"Offset": offset, "Limit": limit}),
            Request::CreateInvite { room, expire_secs } => {
                json!({"RoomId": room_json(room), "ExpireSeconds": expire_secs})
            }
            Request::RevokeInvite { code } => json!({"Code": code.to_string()}),
            Request::ListInvites { room: Some(room) } => json!({"RoomId": room_json(room)}),
            Request::ListInvites { room: None } => json!({}),
            Request::SetUserBlocked {
                room,
                user,
                audio,
                video,
            } => {
                let is_mute = match (audio, video) {
                    (false, false) => 0,
                    (true, true) => 1,
                    (true, false) => 2,
                    (false, true) => 3,
                };
                let mut b = json!({"UserId": user, "IsMute": is_mute});
                let room_field = if room.is_str() { "StrRoomId" } else { "RoomId" };
                b[room_field] = room_json(room);
                b
            }
        };
        body["SdkAppId"] = json!(app.0);
        body
    }

    /// Parses and validates `action`'s `body` (the bytes as sent) for the
    /// authenticated `app`. Checks run in the documented order: a JSON
    /// object, its `SdkAppId` (present, and `app`), then the action's own
    /// fields.
    pub fn parse(action: Action, body: &[u8], app: SdkAppId) -> Result<Request, AdminError> {
        let body: Value = serde_json::from_slice(body).map_err(|e| {
            AdminError::new(
                "InvalidParameter.BodyParamsError",
                format!("the body is not JSON: {e}"),
            )
        })?;
        let body = body.as_object().ok_or_else(|| {
            AdminError::new(
                "InvalidParameter.BodyParamsError",
                "the body must be a JSON object",
            )
        })?;
        match body.get("SdkAppId") {
            None | Some(Value::Null) => {
                return Err(AdminError::new(
                    "MissingParameter.SdkAppId",
                    "SdkAppId is required",
                ))
            }
            Some(v) if v.as_u64() != Some(u64::from(app.0)) => {
                return Err(AdminError::new(
                    "UnauthorizedOperation.SdkAppId",
                    format!("the body's SdkAppId {v} is not the authenticated app {app}"),
                ))
            }
            Some(_) => {}
        }
        Ok(match action {
            Action::RemoveUser | Action::RemoveUserByStrRoomId => Request::RemoveUser {
                room: room_id(body, action == Action::RemoveUserByStrRoomId)?,
                users: user_ids(body)?,
            },
            Action::DismissRoom | Action::DismissRoomByStrRoomId => Request::DismissRoom {
                room: room_id(body, action == Action::DismissRoomByStrRoomId)?,
            },
            Action::DescribeRoom => Request::DescribeRoom {
                room: room_id(body, matches!(body.get("RoomId"), Some(Value::String(_))))?,
            },
            Action::ListRooms => Request::ListRooms {
                offset: count(body, "Offset", 0, usize::MAX)?,
                limit: count(body, "Limit", LIST_LIMIT, LIST_LIMIT_MAX)?,
            },
            Action::CreateInvite => {
                let room = room_id(body, matches!(body.get("RoomId"), Some(Value::String(_))))?;
                let expire_secs = match body.get("ExpireSeconds") {
                    None | Some(Value::Null) => DEFAULT_INVITE_SECS,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| (1..=MAX_INVITE_SECS).contains(n))
                        .ok_or_else(|| {
                            AdminError::new(
                                "InvalidParameter.ExpireSeconds",
                                format!("ExpireSeconds must be 1 to {MAX_INVITE_SECS}"),
                            )
                        })?,
                };
                Request::CreateInvite { room, expire_secs }
            }
            Action::RevokeInvite => Request::RevokeInvite {
                code: match body.get("Code") {
                    None | Some(Value::Null) => {
                        return Err(AdminError::new("MissingParameter.Code", "Code is required"))
                    }
                    Some(Value::String(c)) => {
                        c.parse().map_err(|e: crate::invite::InviteParseError| {
                            AdminError::new("InvalidParameter.Code", e.to_string())
                        })?
                    }
                    Some(_) => {
                        return Err(AdminError::new(
                            "InvalidParameter.Code",
                            "Code must be a string",
                        ))
                    }
                },
            },
            Action::SetUserBlocked | Action::SetUserBlockedByStrRoomId => {
                let by_str = action == Action::SetUserBlockedByStrRoomId;
                let room = if by_str {
                    // TRTC names the string room `StrRoomId` here.
                    let mut b = body.clone();
                    b.insert(
                        "RoomId".into(),
                        b.get("StrRoomId").cloned().unwrap_or(Value::Null),
                    );
                    room_id(&b, true).map_err(|e| AdminError {
                        code: e.code.replace("RoomId", "StrRoomId"),
                        message: e.message.replace("RoomId", "StrRoomId"),
                    })?
                } else {
                    room_id(body, false)?
                };
                let user = match body.get("UserId") {
                    None | Some(Value::Null) => {
                        return Err(AdminError::new(
                            "MissingParameter.UserId",
                            "UserId is required",
                        ))
                    }
                    Some(Value::String(u)) => UserId::new(u.clone())
                        .map_err(|e| AdminError::new("InvalidParameter.UserId", e.to_string()))?,
                    Some(_) => {
                        return Err(AdminError::new(
                            "InvalidParameter.UserId",
                            "UserId must be a string",
                        ))
                    }
                };
                let (audio, video) =
                    match body.get("IsMute").and_then(Value::as_u64) {
                        Some(0) => (false, false),
                        Some(1) => (true, true),
                        Some(2) => (true, false),
                        Some(3) => (false, true),
                        _ if matches!(body.get("IsMute"), None | Some(Value::Null)) => {
                            return Err(AdminError::new(
                                "MissingParameter.IsMute",
                                "IsMute is required",
                            ))
                        }
                        _ => return Err(AdminError::new(
                            "InvalidParameterValue.IsMute",
                            "IsMute is 0 (unblock), 1 (audio and video), 2 (audio) or 3 (video)",
                        )),
                    };
                Request::SetUserBlocked {
                    room,
                    user,
                    audio,
                    video,
                }
            }
            Action::ListInvites => Request::ListInvites {
                room: match body.get("RoomId") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(room_id(body, v.is_string())?),
                },
            },
        })
    }
}

fn room_json(room: &RoomId) -> Value {
    match room {
        RoomId::Num(n) => json!(n),
        RoomId::Str(s) => json!(s),
    }
}

fn room_id(body: &Map<String, Value>, string_room: bool) -> Result<RoomId, AdminError> {
    let bad = |m: String| AdminError::new("InvalidParameterValue.RoomId", m);
    match (body.get("RoomId"), string_room) {
        (None | Some(Value::Null), _) => Err(AdminError::new(
            "MissingParameter.RoomId",
            "RoomId is required",
        )),
        (Some(Value::String(s)), true) => RoomId::str(s.clone()).map_err(|e| bad(e.to_string())),
        (Some(Value::Number(n)), false) => n
            .as_u64()
            .ok_or_else(|| bad("RoomId must be a whole number".into()))
            .and_then(|n| RoomId::num(n).map_err(|e| bad(e.to_string()))),
        (Some(_), true) => Err(bad("RoomId must be a string for this action".into())),
        (Some(_), false) => Err(bad("RoomId must be a number for this action".into())),
    }
}

fn user_ids(body: &Map<String, Value>) -> Result<Vec<UserId>, AdminError> {
    let bad = |m: String| AdminError::new("InvalidParameter.UserIds", m);
    let list = match body.get("UserIds") {
        None | Some(Value::Null) => {
            return Err(AdminError::new(
                "MissingParameter.UserIds",
                "UserIds is required",
            ))
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
) -> Result<usize, AdminError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(max))
            .ok_or_else(|| {
                AdminError::new("InvalidParameter", format!("{name} must be a whole number"))
            }),
    }
}

/// One user in `DescribeRoom`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoomUser {
    /// Who.
    pub user_id: UserId,
    /// `anchor` or `audience`.
    pub role: Role,
    /// When they entered (Unix seconds).
    pub join_time: u64,
}

/// `DescribeRoom`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribedRoom {
    /// The room (a number or a string, as `RoomIdType` says).
    #[serde(flatten)]
    pub room: RoomFields,
    /// When the room was created (Unix seconds).
    pub create_time: u64,
    /// How many users are in it.
    pub total: usize,
    /// Who is in it.
    pub users: Vec<RoomUser>,
}

/// One room in `ListRooms`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedRoom {
    /// The room.
    #[serde(flatten)]
    pub room: RoomFields,
    /// How many users are in it.
    pub user_count: usize,
    /// When it was created (Unix seconds).
    pub create_time: u64,
}

/// `ListRooms`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedRooms {
    /// How many rooms the app has in all.
    pub total: usize,
    /// This page of them.
    pub rooms: Vec<ListedRoom>,
}

/// `CreateInvite`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedInvite {
    /// The code, grouped for reading (`k3m-9xq2-7hd`).
    pub code: InviteCode,
    /// The room.
    #[serde(flatten)]
    pub room: RoomFields,
    /// When it stops admitting anyone (Unix seconds).
    pub expires_at: u64,
}

/// One invite in `ListInvites`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedInvite {
    /// The code.
    pub code: InviteCode,
    /// The room.
    #[serde(flatten)]
    pub room: RoomFields,
    /// When it was made (Unix seconds).
    pub create_time: u64,
    /// When it stops admitting anyone (Unix seconds).
    pub expires_at: u64,
    /// Whether it was revoked (kept until it would have expired).
    pub revoked: bool,
    /// How many UserSigs it has given out.
    pub redeemed: u64,
}

/// `ListInvites`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedInvites {
    /// The invites, oldest first.
    pub invites: Vec<ListedInvite>,
}

/// A room in an answer: `RoomId` and `RoomIdType` (0 numeric, 1 string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoomFields {
    /// The id, a number or a string.
    pub room_id: Value,
    /// 0: numeric, 1: string.
    pub room_id_type: u8,
}

impl From<&RoomId> for RoomFields {
    fn from(room: &RoomId) -> Self {
        RoomFields {
            room_id: room_json(room),
            room_id_type: u8::from(room.is_str()),
        }
    }
}

impl RoomFields {
    /// The room these fields name, if valid.
    pub fn room(&self) -> Option<RoomId> {
        match (&self.room_id, self.room_id_type) {
            (Value::Number(n), 0) => n.as_u64().and_then(|n| RoomId::num(n).ok()),
            (Value::String(s), 1) => RoomId::str(s.clone()).ok(),
            _ => None,
        }
    }
}

/// An answer, as a client reads it: the fields, or the error.
pub fn read_response(answer: &Value) -> Result<&Map<String, Value>, AdminError> {
    let response = answer
        .get("Response")
        .and_then(Value::as_object)
        .ok_or_else(|| AdminError::new("InternalError", "the answer has no Response object"))?;
    match response.get("Error") {
        Some(e) => Err(AdminError::new(
            e.get("Code").and_then(Value::as_str).unwrap_or(""),
            e.get("Message").and_then(Value::as_str).unwrap_or(""),
        )),
        None => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: SdkAppId = SdkAppId(1400000001);

    #[test]
    fn requests_round_trip_through_their_bodies() {
        let requests = [
            Request::RemoveUser {
                room: RoomId::Num(7),
                users: vec![UserId::new("bob").unwrap()],
            },
            Request::RemoveUser {
                room: RoomId::str("standup").unwrap(),
                users: vec![UserId::new("bob").unwrap()],
            },
            Request::DismissRoom {
                room: RoomId::Num(7),
            },
            Request::DismissRoom {
                room: RoomId::str("standup").unwrap(),
            },
            Request::DescribeRoom {
                room: RoomId::str("standup").unwrap(),
            },
            Request::ListRooms {
                offset: 5,
                limit: 10,
            },
        ];
        for r in requests {
            let body = serde_json::to_vec(&r.body(APP)).unwrap();
            let parsed = Request::parse(r.action(), &body, APP).unwrap();
            assert_eq!(parsed, r);
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let parse =
            |a: Action, b: &str| Request::parse(a, b.as_bytes(), SdkAppId(1)).map_err(|e| e.code);
        assert_eq!(
            parse(Action::DismissRoom, ""),
            Err("InvalidParameter.BodyParamsError".into())
        );
        assert_eq!(
            parse(Action::DismissRoom, "[1]"),
            Err("InvalidParameter.BodyParamsError".into())
        );
        assert_eq!(
            parse(Action::DismissRoom, r#"{"RoomId":"x"}"#),
            Err("MissingParameter.SdkAppId".into())
        );
        assert_eq!(
            parse(Action::DismissRoom, r#"{"SdkAppId":2,"RoomId":1}"#),
            Err("UnauthorizedOperation.SdkAppId".into())
        );
        assert_eq!(
            parse(Action::DismissRoom, r#"{"SdkAppId":1,"RoomId":"x"}"#),
            Err("InvalidParameterValue.RoomId".into())
        );
        assert_eq!(
            parse(Action::RemoveUser, r#"{"SdkAppId":1,"RoomId":1}"#),
            Err("MissingParameter.UserIds".into())
        );
        assert_eq!(
            parse(
                Action::RemoveUser,
                r#"{"SdkAppId":1,"RoomId":1,"UserIds":[]}"#
            ),
            Err("InvalidParameter.UserIds".into())
        );
        assert_eq!(
            parse(Action::ListRooms, r#"{"SdkAppId":1,"Limit":1000000}"#),
            Ok(Request::ListRooms {
                offset: 0,
                limit: LIST_LIMIT_MAX
            })
        );
    }

    #[test]
    fn answers_read_back() {
        let described = DescribedRoom {
            room: (&RoomId::Num(7)).into(),
            create_time: 1,
            total: 1,
            users: vec![RoomUser {
                user_id: UserId::new("bob").unwrap(),
                role: Role::Anchor,
                join_time: 2,
            }],
        };
        let v = serde_json::to_value(&described).unwrap();
        assert_eq!(v["RoomId"], 7);
        assert_eq!(v["RoomIdType"], 0);
        assert_eq!(v["Users"][0]["UserId"], "bob");
        let answer = json!({"Response": v});
        let fields = read_response(&answer).unwrap();
        let back: DescribedRoom = serde_json::from_value(Value::Object(fields.clone())).unwrap();
        assert_eq!(back, described);
        assert_eq!(back.room.room(), Some(RoomId::Num(7)));
        let refused = json!({"Response": {"Error": {"Code": "FailedOperation.RoomNotExist", "Message": "m"}}});
        assert_eq!(
            read_response(&refused).unwrap_err().code,
            "FailedOperation.RoomNotExist"
        );
    }
}
