// Generated from the Rust side by src-tauri/tests/contract.rs; do not edit.
// Regenerate: KAIGI_BLESS=1 cargo test -p kaigi-desktop --test contract

/** The commands the window may call, with their arguments' names. */
export const COMMANDS = {
  "create_invite": [],
  "end_meeting": [],
  "frame_endpoint": [],
  "join_room": [
    "form"
  ],
  "leave_room": [],
  "list_devices": [],
  "list_share_sources": [],
  "remove_participant": [
    "userId"
  ],
  "revoke_invite": [],
  "send_chat": [
    "text"
  ],
  "set_audio_processing": [
    "settings"
  ],
  "set_camera": [
    "id"
  ],
  "set_microphone": [
    "id"
  ],
  "set_mute": [
    "audio",
    "video"
  ],
  "set_speaker": [
    "id"
  ],
  "start_preview": [
    "userId",
    "camera",
    "microphone"
  ],
  "start_share": [
    "request"
  ],
  "stop_preview": [],
  "stop_share": [],
  "take_opened_invite": []
};

/** What each command returns: the fields of its result object. */
export const RESULTS = {
  "create_invite": [
    "code",
    "expiresAt",
    "link",
    "revocable"
  ],
  "end_meeting": [],
  "frame_endpoint": [
    "token",
    "url"
  ],
  "join_room": [
    "botCommand",
    "embedded",
    "host",
    "invite",
    "publishing",
    "role",
    "room",
    "server",
    "userId",
    "users"
  ],
  "leave_room": [],
  "list_devices": [
    "cameras",
    "microphones",
    "speakers"
  ],
  "list_share_sources": [],
  "remove_participant": [],
  "revoke_invite": [],
  "send_chat": [],
  "set_audio_processing": [],
  "set_camera": [],
  "set_microphone": [],
  "set_mute": [],
  "set_speaker": [],
  "start_preview": [
    "audio",
    "video"
  ],
  "start_share": [],
  "stop_preview": [],
  "stop_share": [],
  "take_opened_invite": []
};

/** The video paths over the IPC: only in builds for the tile benchmark. */
export const IPC_TRANSPORT_COMMANDS = {
  "close_view": [
    "view"
  ],
  "next_frame": [
    "view"
  ],
  "open_view": [
    "tile",
    "width",
    "height"
  ],
  "watch_tile": [
    "tile",
    "frames",
    "width",
    "height"
  ]
};

/** The events the window is sent, with their payloads' fields. */
export const EVENT_FIELDS = {
  "audio-volume": [
    "result"
  ],
  "blocked": [
    "audio",
    "video"
  ],
  "chat": [
    "sentAt",
    "text",
    "userId"
  ],
  "client-banned": [
    "message",
    "reason"
  ],
  "client-left": [],
  "connection-state-changed": [
    "prevState",
    "state"
  ],
  "device-changed": [
    "action",
    "device",
    "type"
  ],
  "error": [
    "code",
    "message",
    "name"
  ],
  "invite-opened": [
    "link"
  ],
  "local-audio-level": [
    "level"
  ],
  "local-stream-closed": [],
  "mute-audio": [
    "userId"
  ],
  "mute-video": [
    "userId"
  ],
  "network-quality": [
    "downlinkLoss",
    "downlinkNetworkQuality",
    "downlinkRTT",
    "transport",
    "uplinkLoss",
    "uplinkNetworkQuality",
    "uplinkRTT"
  ],
  "peer-join": [
    "role",
    "userId"
  ],
  "peer-leave": [
    "reason",
    "userId"
  ],
  "peer-role": [
    "role",
    "userId"
  ],
  "share-started": [
    "source"
  ],
  "share-stopped": [],
  "speaking-while-muted": [],
  "stream-added": [
    "audio",
    "streamType",
    "userId",
    "video"
  ],
  "stream-removed": [
    "streamType",
    "userId"
  ],
  "stream-subscribed": [
    "streamType",
    "userId"
  ],
  "stream-updated": [
    "audioMuted",
    "streamType",
    "userId",
    "videoMuted",
    "videoPaused"
  ],
  "unmute-audio": [
    "userId"
  ],
  "unmute-video": [
    "userId"
  ]
};

/** The events' names. */
export const EVENTS = Object.keys(EVENT_FIELDS);

/** Every error `code` a command or an `error` event can carry. */
export const ERROR_CODES = [
  "ALREADY_IN_ROOM",
  "ALREADY_PUBLISHING",
  "ALREADY_SHARING",
  "AUDIENCE_CANNOT_PUBLISH",
  "CONNECTION_LOST",
  "DEVICE_LOST",
  "DEVICE_NOT_FOUND",
  "DEVICE_UNAVAILABLE",
  "FRAME_SERVER_FAILED",
  "HEARTBEAT_TIMEOUT",
  "INTERNAL",
  "INVALID_INVITE",
  "INVALID_MESSAGE",
  "INVALID_OPTIONS",
  "INVALID_PARAMETER",
  "INVITE_EXPIRED",
  "INVITE_NOT_FOUND",
  "INVITE_REVOKED",
  "INVITE_USED_UP",
  "MEDIA_FAILED",
  "MESSAGE_TOO_LARGE",
  "NAME_TAKEN",
  "NOT_HOST",
  "NOT_IN_ROOM",
  "NOT_PUBLISHING",
  "NO_DEVICE",
  "NO_LOCAL_STREAM",
  "RATE_LIMITED",
  "RECONNECT_FAILED",
  "ROOM_ELSEWHERE",
  "ROOM_MOVED",
  "ROOM_NOT_GRANTED",
  "SERVER_SHUTTING_DOWN",
  "SERVER_START_FAILED",
  "SERVER_UNREACHABLE",
  "SERVICE_UNAVAILABLE",
  "SESSION_BANNED",
  "SHARE_FAILED",
  "STREAM_NOT_FOUND",
  "TIMEOUT",
  "TLS_FAILED",
  "TOO_MANY_VIEWS",
  "UNKNOWN_SDK_APP_ID",
  "UNKNOWN_VIEW",
  "UNSUPPORTED_PROTOCOL",
  "USERSIG_BAD_SIGNATURE",
  "USERSIG_EXPIRED",
  "USERSIG_UNDECODABLE",
  "USERSIG_WRONG_APP",
  "USERSIG_WRONG_USER"
];
