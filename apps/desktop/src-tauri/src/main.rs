//! The Kaigi desktop app: a Tauri 2 window over kaigi-app. This file only
//! registers the commands and forwards kaigi-app's events to the window.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::sync::Arc;

use kaigi_app::app::{FrameEndpoint, JoinForm};
use kaigi_app::{App, AppError, Devices, Joined, Preview, UiEvent};
use tauri::{Emitter, Manager, State};

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
fn frame_endpoint(app: State<'_, App>) -> FrameEndpoint {
    app.frame_endpoint()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAIGI_LOG")
                .unwrap_or_else(|_| kaigi_proto::log_filter("info").into()),
        )
        .init();
    let context: tauri::Context<tauri::Wry> = tauri::generate_context!();
    let built = tauri::Builder::default()
        .setup(|tauri_app| {
            let handle = tauri_app.handle().clone();
            let emit = Arc::new(move |event: UiEvent| {
                if let Err(e) = handle.emit(event.name(), &event) {
                    tracing::warn!(error = %e, "an event did not reach the window");
                }
            });
            let app = tauri::async_runtime::block_on(App::new(emit))?;
            tauri_app.manage(app);
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            list_devices,
            start_preview,
            stop_preview,
            join_room,
            leave_room,
            set_mute,
            set_camera,
            set_microphone,
            set_speaker,
            frame_endpoint,
        ])
        .build(context);
    let app = match built {
        Ok(app) => app,
        Err(e) => {
            eprintln!("Kaigi could not start: {e}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            // Leave the room cleanly so the others see a leave, not a timeout.
            if let Some(app) = handle.try_state::<App>() {
                let _ = tauri::async_runtime::block_on(app.leave_room());
            }
        }
    });
}
