//! The Tauri layer on tauri's mock runtime, with the app's real context
//! (its `tauri.conf.json` and capability): every command the UI calls is
//! granted and answers through the IPC, an error crosses as
//! `{code, message}`, commands outside the capability are refused, frames
//! arrive as raw bytes (a command's response and a channel), and the SDK's
//! events reach the window as Tauri events (`peer-join`, `client-banned`,
//! `local-stream-closed`, `client-left`) against a real server.

use std::sync::mpsc;
use std::time::Duration;

use kaigi_tests::{sig, str_room, TestServer, APP};
use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody, InvokeResponseBody};
use tauri::test::{get_ipc_response, mock_builder, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{Listener, Manager, WebviewWindow};

const WAIT: Duration = Duration::from_secs(10);

fn invoke(
    window: &WebviewWindow<MockRuntime>,
    cmd: &str,
    args: Value,
) -> Result<InvokeResponseBody, Value> {
    get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
}

fn json_of(body: InvokeResponseBody) -> Value {
    match body {
        InvokeResponseBody::Json(s) => serde_json::from_str(&s).unwrap(),
        InvokeResponseBody::Raw(_) => panic!("expected JSON, got raw bytes"),
    }
}

fn raw_of(body: InvokeResponseBody) -> Vec<u8> {
    match body {
        InvokeResponseBody::Raw(b) => b,
        InvokeResponseBody::Json(s) => panic!("expected raw bytes, got JSON {s}"),
    }
}

/// (width, height) of a frame message, checking its trailer.
fn frame_size(m: &[u8]) -> (u32, u32) {
    let (w, h, _) = kaigi_app::frames::read_frame_message(m)
        .unwrap_or_else(|| panic!("a frame, not {} bytes of something else", m.len()));
    (w, h)
}

/// Collects the window's events by name.
struct Events(mpsc::Receiver<(String, Value)>);

impl Events {
    fn listen(app: &tauri::App<MockRuntime>, names: &'static [&'static str]) -> Self {
        let (tx, rx) = mpsc::channel();
        for &name in names {
            let tx = tx.clone();
            app.listen_any(name, move |e| {
                let payload = serde_json::from_str(e.payload()).unwrap_or(Value::Null);
                let _ = tx.send((name.to_string(), payload));
            });
        }
        Events(rx)
    }

    /// The next `name` event's payload (others before it are skipped).
    fn wait(&self, name: &str) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok((n, v)) if n == name => return v,
                Ok(_) => continue,
                Err(_) => panic!("the window never got {name}"),
            }
        }
    }
}

#[test]
fn commands_errors_frames_and_events_through_the_tauri_layer() {
    let (chan_tx, chan_rx) = mpsc::channel::<Vec<u8>>();
    let app = kaigi_desktop::configure(mock_builder().channel_interceptor(
        move |_webview, _callback, _index, body| {
            if let InvokeResponseBody::Raw(b) = body {
                let _ = chan_tx.send(b.clone());
            }
            true
        },
    ))
    .build(kaigi_desktop::context())
    .expect("the app builds on the mock runtime");
    // One turn of the (mock) event loop runs the app's setup, as a launch does.
    let mut app = app;
    #[allow(deprecated)]
    app.run_iteration(|_, _| {});
    // The window tauri.conf.json declares, which the capability names.
    let window = app.get_webview_window("main").expect("the main window");
    let events = Events::listen(
        &app,
        &[
            "peer-join",
            "stream-added",
            "client-banned",
            "local-stream-closed",
            "client-left",
        ],
    );
    let server = tauri::async_runtime::block_on(TestServer::start());

    // Devices: the synthetic sources are always there.
    let devices = json_of(invoke(&window, "list_devices", json!({})).unwrap());
    assert!(devices["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == "test-pattern"));

    // One error type crosses: {code, message}.
    let err = invoke(&window, "leave_room", json!({})).unwrap_err();
    assert_eq!(err["code"], "NOT_IN_ROOM", "{err}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    let err = invoke(
        &window,
        "join_room",
        json!({"form": {"userId": "a b", "roomId": 1}}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "INVALID_PARAMETER", "{err}");

    // What the capability does not grant is refused.
    let refused = invoke(
        &window,
        "plugin:event|emit",
        json!({"event": "x", "payload": null}),
    )
    .unwrap_err();
    assert!(refused.to_string().contains("not allowed"), "{refused}");

    // Join through the form, with the preview published.
    let joined = json_of(
        invoke(
            &window,
            "join_room",
            json!({"form": {
                "server": server.url(), "sdkAppId": APP.0, "userId": "alice",
                "userSig": sig("alice"), "strRoomId": "tauri-layer",
                "camera": "test-pattern", "microphone": "tone"}}),
        )
        .unwrap(),
    );
    assert_eq!(joined["userId"], "alice");
    assert_eq!(joined["publishing"], true);

    // Frames as raw bytes over the IPC (built for the tile benchmark).
    if cfg!(feature = "ipc-transports") {
        // Frames as raw bytes: pulled by a command, pushed through a channel.
        let view = json_of(invoke(&window, "open_view", json!({"tile": "local"})).unwrap());
        let frame = raw_of(invoke(&window, "next_frame", json!({"view": view})).unwrap());
        assert_eq!(frame_size(&frame), (640, 360));
        invoke(&window, "close_view", json!({"view": view})).unwrap();
        // At the tile's size: scaled down to fit.
        let view = json_of(
            invoke(
                &window,
                "open_view",
                json!({"tile": "local", "width": 354, "height": 196}),
            )
            .unwrap(),
        );
        let frame = raw_of(invoke(&window, "next_frame", json!({"view": view})).unwrap());
        assert_eq!(frame_size(&frame), (348, 196));
        invoke(&window, "close_view", json!({"view": view})).unwrap();
        let pushed = json_of(
            invoke(
                &window,
                "watch_tile",
                json!({"tile": "local", "frames": "__CHANNEL__:7"}),
            )
            .unwrap(),
        );
        let m = chan_rx
            .recv_timeout(WAIT)
            .expect("a frame through the channel");
        assert_eq!(frame_size(&m), (640, 360));
        invoke(&window, "close_view", json!({"view": pushed})).unwrap();
    }

    // Another participant: the window hears of them.
    let (_bob, _bob_events) =
        tauri::async_runtime::block_on(server.joined("bob", &str_room("tauri-layer")));
    assert_eq!(events.wait("peer-join")["userId"], "bob");

    // Removed by the administrator: client-banned with reason and message,
    // then the local stream is closed.
    tauri::async_runtime::block_on(server.admin(
        "RemoveUserByStrRoomId",
        json!({"RoomId": "tauri-layer", "UserIds": ["alice"]}),
    ));
    let banned = events.wait("client-banned");
    assert_eq!(banned["reason"], "removed-by-admin", "{banned}");
    assert!(banned["message"].as_str().is_some_and(|m| !m.is_empty()));
    events.wait("local-stream-closed");
    let err = invoke(&window, "leave_room", json!({})).unwrap_err();
    assert_eq!(
        err["code"], "NOT_IN_ROOM",
        "a forced exit forgets the client"
    );

    // Rejoin and leave: client-left once the leave completed.
    let form = json!({"form": {
        "server": server.url(), "sdkAppId": APP.0, "userId": "alice",
        "userSig": sig("alice"), "strRoomId": "tauri-layer", "camera": "test-pattern"}});
    invoke(&window, "join_room", form).unwrap();
    invoke(&window, "leave_room", json!({})).unwrap();
    assert_eq!(events.wait("client-left")["event"], "client-left");
}

#[test]
fn every_command_is_registered_granted_and_given_a_permission() {
    let caps: Value = serde_json::from_str(include_str!("../capabilities/default.json")).unwrap();
    let granted: Vec<&str> = caps["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for (cmd, _) in kaigi_desktop::COMMANDS {
        let permission = format!("allow-{}", cmd.replace('_', "-"));
        assert!(
            granted.contains(&permission.as_str()),
            "{permission} is not granted"
        );
    }
    // Nothing beyond the commands, event listening and full screen (the
    // window's own, asked by the Full screen button).
    let used = [
        "core:event:allow-listen",
        "core:event:allow-unlisten",
        "core:window:allow-set-fullscreen",
    ];
    let extra: Vec<&&str> = granted
        .iter()
        .filter(|p| !p.starts_with("allow-") && !used.contains(p))
        .collect();
    assert!(
        extra.is_empty(),
        "granted beyond what the UI uses: {extra:?}"
    );
}

#[test]
fn the_app_embeds_every_ui_file_and_nothing_else() {
    // `frontendDist` lists the UI's files, so its tests stay out of the app.
    let conf: Value = serde_json::from_str(include_str!("../tauri.conf.json")).unwrap();
    let mut listed: Vec<String> = conf["build"]["frontendDist"]
        .as_array()
        .expect("frontendDist is a list of files")
        .iter()
        .map(|p| p.as_str().unwrap().trim_start_matches("../ui/").to_owned())
        .collect();
    listed.sort();
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui");
    let mut present: Vec<String> = std::fs::read_dir(&ui)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(
        listed, present,
        "tauri.conf.json's frontendDist against ui/"
    );
}
