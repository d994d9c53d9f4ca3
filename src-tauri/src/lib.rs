//! The Kaigi desktop app: a Tauri 2 window over kaigi-app. This crate only
//! registers kaigi-app's commands (plus, with the `ipc-transports` feature,
//! the IPC video paths the tile benchmark compares) and forwards its events
//! to the window as Tauri events.

use std::sync::Arc;

use kaigi_app::app::FrameEndpoint;
use kaigi_app::JoinForm;
use kaigi_app::{App, AppError, AudioSettings, Devices, Joined, Preview, UiEvent};
use tauri::{Emitter, Manager, Runtime, State};

#[tauri::command]
fn list_devices(app: State<'_, App>) -> Devices {
    app.list_devices()
}

#[tauri::command]
async fn start_preview(
    app: State<'_, App>,
    user_id: String,
    camera: Option<String>,
    microphone: Option<String>,
) -> Result<Preview, AppError> {
    app.start_preview(&user_id, camera.as_deref(), microphone.as_deref())
        .await
}

#[tauri::command]
async fn stop_preview(app: State<'_, App>) -> Result<(), AppError> {
    app.stop_preview().await;
    Ok(())
}

#[tauri::command]
async fn join_room(app: State<'_, App>, form: JoinForm) -> Result<Joined, AppError> {
    app.join_room(form).await
}

#[tauri::command]
async fn leave_room(app: State<'_, App>) -> Result<(), AppError> {
    app.leave_room().await
}

#[tauri::command]
async fn set_mute(
    app: State<'_, App>,
    audio: Option<bool>,
    video: Option<bool>,
) -> Result<(), AppError> {
    app.set_mute(audio, video).await
}

#[tauri::command]
async fn set_camera(app: State<'_, App>, id: String) -> Result<(), AppError> {
    app.set_camera(&id).await
}

#[tauri::command]
async fn set_microphone(app: State<'_, App>, id: String) -> Result<(), AppError> {
    app.set_microphone(&id).await
}

#[tauri::command]
async fn set_speaker(app: State<'_, App>, id: String) -> Result<(), AppError> {
    app.set_speaker(&id).await
}

#[tauri::command]
async fn set_audio_processing(
    app: State<'_, App>,
    settings: AudioSettings,
) -> Result<(), AppError> {
    app.set_audio_processing(settings).await;
    Ok(())
}

#[tauri::command]
async fn remove_participant(app: State<'_, App>, user_id: String) -> Result<(), AppError> {
    app.remove_participant(&user_id).await
}

#[tauri::command]
async fn send_chat(app: State<'_, App>, text: String) -> Result<(), AppError> {
    app.send_chat(&text).await
}

#[tauri::command]
async fn end_meeting(app: State<'_, App>) -> Result<(), AppError> {
    app.end_meeting().await
}

#[tauri::command]
async fn create_invite(app: State<'_, App>) -> Result<kaigi_app::InviteInfo, AppError> {
    app.create_invite().await
}

#[tauri::command]
async fn revoke_invite(app: State<'_, App>) -> Result<(), AppError> {
    app.revoke_invite().await
}

#[tauri::command]
fn take_opened_invite(app: State<'_, App>) -> Option<String> {
    app.take_opened_invite()
}

#[tauri::command]
async fn list_share_sources(
    app: State<'_, App>,
) -> Result<Vec<kaigi_app::share::ShareSource>, AppError> {
    app.list_share_sources().await
}

#[tauri::command]
async fn start_share(
    app: State<'_, App>,
    request: kaigi_app::share::ShareRequest,
) -> Result<(), AppError> {
    app.start_share(request).await
}

#[tauri::command]
async fn stop_share(app: State<'_, App>) -> Result<(), AppError> {
    app.stop_share().await
}

#[tauri::command]
fn frame_endpoint(app: State<'_, App>) -> FrameEndpoint {
    app.frame_endpoint()
}

/// The video paths over the IPC (only with the `ipc-transports` feature).
#[cfg(feature = "ipc-transports")]
mod ipc {
    use kaigi_app::{App, AppError};
    use tauri::ipc::{Channel, InvokeResponseBody, Response};
    use tauri::State;

    /// A view of `tile` whose frames `next_frame` returns, scaled down to fit
    /// `width × height` (device pixels; absent: as they are).
    #[tauri::command]
    pub fn open_view(
        app: State<'_, App>,
        tile: String,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<u64, AppError> {
        app.open_view(&tile, (width.unwrap_or(0), height.unwrap_or(0)))
    }

    /// The view's next frame as raw bytes (an `ArrayBuffer` in the window):
    /// I420 + the frame server's 16-byte trailer; empty when the tile ended.
    #[tauri::command]
    pub async fn next_frame(app: State<'_, App>, view: u64) -> Result<Response, AppError> {
        Ok(Response::new(app.next_frame(view).await?))
    }

    /// Pushes the tile's frames through `frames` as raw bytes; an empty one
    /// when the tile ends.
    #[tauri::command]
    pub async fn watch_tile(
        app: State<'_, App>,
        tile: String,
        frames: Channel<InvokeResponseBody>,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<u64, AppError> {
        let fit = (width.unwrap_or(0), height.unwrap_or(0));
        app.push_view(&tile, fit, move |m| {
            frames.send(InvokeResponseBody::Raw(m)).is_ok()
        })
    }

    #[tauri::command]
    pub fn close_view(app: State<'_, App>, view: u64) {
        app.close_view(view);
    }
}

include!("commands.rs");

/// The app's context: `tauri.conf.json`, the capabilities and the files
/// of `../ui` it lists.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// Adds the app to a builder (the real runtime's, or the mock one in
/// tests): the managed [`App`], whose events go to every window, and the
/// commands.
pub fn configure<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .setup(|tauri_app| {
            let handle = tauri_app.handle().clone();
            let emit = Arc::new(move |event: UiEvent| {
                if let Err(e) = handle.emit(event.name(), &event) {
                    tracing::warn!(error = %e, "an event did not reach the window");
                }
            });
            let app = tauri::async_runtime::block_on(App::new(emit))?;
            // Opened with an invite link (`kaigi://…` as the argument).
            if let Some(link) = std::env::args().nth(1) {
                app.open_link(&link);
            }
            tauri_app.manage(app);
            Ok(())
        })
        .invoke_handler(handler())
}

/// `tauri::generate_handler!` for the app's commands and `$extra`.
macro_rules! handler_with {
    ($($extra:path),*) => {
        tauri::generate_handler![
            list_devices,
            start_preview,
            stop_preview,
            join_room,
            leave_room,
            set_mute,
            set_camera,
            set_microphone,
            set_speaker,
            set_audio_processing,
            remove_participant,
            end_meeting,
            send_chat,
            create_invite,
            revoke_invite,
            take_opened_invite,
            frame_endpoint,
            list_share_sources,
            start_share,
            stop_share,
            $($extra),*
        ]
    };
}

/// The commands' handler (with the IPC video paths where built).
fn handler<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    #[cfg(not(feature = "ipc-transports"))]
    return handler_with!();
    #[cfg(feature = "ipc-transports")]
    return handler_with!(
        ipc::open_view,
        ipc::next_frame,
        ipc::watch_tile,
        ipc::close_view
    );
}

/// A second launch's arguments (`kaigi-desktop kaigi://invite/…`): the
/// link goes to the join screen and the window comes to the front.
pub fn on_second_launch<R: Runtime>(handle: &tauri::AppHandle<R>, argv: Vec<String>, _cwd: String) {
    if let Some(app) = handle.try_state::<App>() {
        for arg in argv.iter().skip(1) {
            app.open_link(arg);
        }
    }
    if let Some(window) = handle.get_webview_window("main") {
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

/// Makes this binary the handler of `kaigi://` links for the user, unless
/// it is the installed one (the `.deb`'s desktop entry registers that) or
/// `KAIGI_REGISTER_LINKS=0`.
pub fn register_links<R: Runtime>(app: &tauri::App<R>) {
    use tauri_plugin_deep_link::DeepLinkExt;
    let installed = std::env::current_exe().is_ok_and(|p| p.starts_with("/usr"));
    let refused = std::env::var("KAIGI_REGISTER_LINKS").is_ok_and(|v| v == "0");
    if installed || refused {
        return;
    }
    if let Err(e) = app.deep_link().register_all() {
        tracing::warn!(error = %e, "kaigi:// links could not be registered (is xdg-utils installed?)");
    }
}

/// Leaves the room cleanly when the app exits, so the others see a leave,
/// not a timeout.
pub fn on_run_event<R: Runtime>(handle: &tauri::AppHandle<R>, event: tauri::RunEvent) {
    if let tauri::RunEvent::Exit = event {
        if let Some(app) = handle.try_state::<App>() {
            let _ = tauri::async_runtime::block_on(app.leave_room());
        }
    }
}

/// WebKitGTK's settings for a machine with no GPU (no DRM render node under
/// `/dev/dri`), where every GL context would be Mesa's software rasterizer.
/// There the app keeps GL out of its own process: GTK's GLX probe at
/// display open and WebKit's EGL display (for the DMA-BUF renderer and the
/// render-node lookup) each load Mesa and, through it, LLVM — 56 MiB of the
/// app process's memory that draws nothing the shared-memory path does not
/// (measured: `BENCHMARKS.md`, *Video into the window*). The web process
/// draws without compositing (software compositing costs CPU and buys
/// nothing for a page of tiles) and hands the UI finished bitmaps.
///
/// Returns the variables to set: none where a render node exists, and
/// never one the user set (`is_set`). [`apply_rendering_defaults`] sets them.
pub fn rendering_defaults(
    has_render_node: bool,
    is_set: impl Fn(&str) -> bool,
) -> Vec<(&'static str, &'static str)> {
    if has_render_node {
        return Vec::new();
    }
    [
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
        ("WEBKIT_DISABLE_DMABUF_RENDERER", "1"),
        ("GDK_GL", "disable"),
        // Read before any EGL display is made: with a device named, WebKit
        // does not open one to find out (there is none to find).
        ("WEBKIT_WEB_RENDER_DEVICE_FILE", "/dev/null"),
    ]
    .into_iter()
    .filter(|(name, _)| !is_set(name))
    .collect()
}

/// Whether this machine has a GPU render node (`/dev/dri/renderD*`).
pub fn has_render_node() -> bool {
    std::fs::read_dir("/dev/dri").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    })
}

/// Sets [`rendering_defaults`] for this machine (Linux). Call first thing
/// in `main`, before any thread starts and before GTK opens the display.
pub fn apply_rendering_defaults() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let set = rendering_defaults(has_render_node(), |name| std::env::var_os(name).is_some());
    for (name, value) in set {
        std::env::set_var(name, value);
    }
}

#[cfg(test)]
mod rendering_tests {
    use super::rendering_defaults;

    #[test]
    fn a_machine_with_a_gpu_keeps_webkits_defaults() {
        assert!(rendering_defaults(true, |_| false).is_empty());
    }

    #[test]
    fn without_a_gpu_gl_stays_out_of_the_app_process() {
        let set = rendering_defaults(false, |_| false);
        let names: Vec<_> = set.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "WEBKIT_DISABLE_COMPOSITING_MODE",
                "WEBKIT_DISABLE_DMABUF_RENDERER",
                "GDK_GL",
                "WEBKIT_WEB_RENDER_DEVICE_FILE"
            ]
        );
    }

    #[test]
    fn what_the_user_set_is_left_alone() {
        let set = rendering_defaults(false, |name| name == "GDK_GL");
        assert!(set.iter().all(|(n, _)| *n != "GDK_GL"));
        assert_eq!(set.len(), 3);
    }
}
