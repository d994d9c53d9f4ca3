//! Tauri's build step, with a permission per app command so the window's
//! capability grants exactly the commands the UI calls.

include!("src/commands.rs");

fn main() {
    let ipc = std::env::var_os("CARGO_FEATURE_IPC_TRANSPORTS").is_some();
    let extra: &[(&str, &[&str])] = if ipc { IPC_TRANSPORT_COMMANDS } else { &[] };
    // The manifest wants the names for the whole build: a one-off leak.
    let names: &'static [&'static str] = Vec::leak(
        COMMANDS
            .iter()
            .chain(extra)
            .map(|(name, _)| *name)
            .collect(),
    );
    let manifest = tauri_build::AppManifest::new().commands(names);
    // The IPC video paths' capability only where their commands exist.
    let capabilities = if ipc {
        "./capabilities/**/*.json"
    } else {
        "./capabilities/*.json"
    };
    let attributes = tauri_build::Attributes::new()
        .app_manifest(manifest)
        .capabilities_path_pattern(capabilities);
    println!("cargo:rerun-if-changed=capabilities");
    if let Err(e) = tauri_build::try_build(attributes) {
        panic!("tauri build step: {e:#}");
    }
}
