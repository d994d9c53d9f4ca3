// The app's commands: included by build.rs (a permission for each) and by
// the library (`COMMANDS`, and through it the UI's generated contract), so
// none of them can drift apart.

/// The commands the window may call, each with the names of its
/// arguments as the window passes them (camelCase). `build.rs` makes a
/// permission for each, `capabilities/default.json` grants them, and
/// `ui/contract.js` lists them for the UI.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("list_devices", &[]),
    ("start_preview", &["userId", "camera", "microphone"]),
    ("stop_preview", &[]),
    ("join_room", &["form"]),
    ("leave_room", &[]),
    ("set_mute", &["audio", "video"]),
    ("set_camera", &["id"]),
    ("set_microphone", &["id"]),
    ("set_speaker", &["id"]),
    ("set_audio_processing", &["settings"]),
    ("remove_participant", &["userId"]),
    ("end_meeting", &[]),
    ("send_chat", &["text"]),
    ("create_invite", &[]),
    ("revoke_invite", &[]),
    ("take_opened_invite", &[]),
    ("frame_endpoint", &[]),
    ("list_share_sources", &[]),
    ("start_share", &["request"]),
    ("stop_share", &[]),
];

/// The commands of the video paths over the IPC, which lost to the frame
/// server's WebSocket: only in builds with the `ipc-transports` feature,
/// for the tile benchmark's comparison (`capabilities/ipc/` grants them).
pub const IPC_TRANSPORT_COMMANDS: &[(&str, &[&str])] = &[
    ("open_view", &["tile", "width", "height"]),
    ("next_frame", &["view"]),
    ("watch_tile", &["tile", "frames", "width", "height"]),
    ("close_view", &["view"]),
];
