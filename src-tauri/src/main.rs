//! The Kaigi desktop app's binary; see the library for what it holds.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // Before GTK, WebKit or any thread: they read these once.
    kaigi_desktop::apply_rendering_defaults();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAIGI_LOG")
                .unwrap_or_else(|_| kaigi_proto::log_filter("info").into()),
        )
        .init();
    // One Kaigi per user: a second launch (an invite link opened in a
    // browser) hands its arguments to the running one.
    let builder = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(
            kaigi_desktop::on_second_launch,
        ))
        .plugin(tauri_plugin_deep_link::init());
    let built = kaigi_desktop::configure(builder).build(kaigi_desktop::context::<tauri::Wry>());
    match built {
        Ok(app) => {
            kaigi_desktop::register_links(&app);
            app.run(kaigi_desktop::on_run_event)
        }
        Err(e) => {
            eprintln!("Kaigi could not start: {e}");
            std::process::exit(1);
        }
    }
}
