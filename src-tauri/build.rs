//! Tauri's build step, with a permission per app command so the window's
//! capability grants exactly the commands the UI calls.

include!("src/commands.rs");

fn main() {
    // The manifest wants the names for the whole build: a one-off leak.
    let names: &'static [&'static str] =
        Vec::leak(COMMANDS.iter().map(|(name, _)| *name).collect());
    let manifest = tauri_build::AppManifest::new().commands(names);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        panic!("tauri build step: {e:#}");
    }
}
