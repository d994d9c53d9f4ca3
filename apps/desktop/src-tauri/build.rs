//! Tauri's build step, with a permission per app command so the window's
//! capability grants exactly the commands the UI calls.

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(&[
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
    ]);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        panic!("tauri build step: {e:#}");
    }
}
