// The app's command names: included by build.rs (a permission for each)
// and by the library (`COMMANDS`), so the two cannot drift apart.

/// The commands the window may call; `build.rs` makes a permission for
/// each, and `capabilities/default.json` grants them.
pub const COMMANDS: &[&str] = &[
    "list_devices",
    "start_preview",
    "stop_preview",
    "join_room",
    "leave_room",
    "set_mute",
    "set_camera",
    "set_microphone",
    "set_speaker",
    "frame_endpoint",
    "open_view",
    "next_frame",
    "watch_tile",
    "close_view",
];
