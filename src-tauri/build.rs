//! Tauri's build step, with a permission per app command so the window's
//! capability grants exactly the commands the UI calls.

include!("src/commands.rs");

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(COMMANDS);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        panic!("tauri build step: {e:#}");
    }
}
