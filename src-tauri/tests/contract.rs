//! The UI's contract with the Rust side, generated from it: the commands
//! and their arguments, the events and their payload fields, and every
//! error code. `ui/contract.js` is this output, checked in; the UI imports
//! it and its tests check the UI against it (every command it calls
//! exists, every event is listened for, every error code has words in
//! every language). When the Rust side changes, this test fails until the
//! file is regenerated: `KAIGI_BLESS=1 cargo test -p kaigi-desktop --test contract`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kaigi_app::app::FrameEndpoint;
use kaigi_app::{AppErrorCode, Devices, Joined, Preview, UiEvent};
use kaigi_proto::{Role, UserId};
use serde::Serialize;
use serde_json::{json, Value};

/// The fields of `value`'s JSON object.
fn fields(value: impl Serialize) -> Vec<String> {
    match serde_json::to_value(value).expect("serializes") {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Each command's result: the fields of the object it returns (an empty
/// list: nothing, or a bare value).
fn results() -> BTreeMap<&'static str, Vec<String>> {
    let joined = Joined {
        user_id: UserId::new("u").unwrap(),
        room: "r".into(),
        role: Role::Anchor,
        users: Vec::new(),
        server: "ws://127.0.0.1:7880".into(),
        embedded: true,
        bot_command: None,
        publishing: true,
        host: true,
        invite: None,
    };
    let mut r: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    r.insert(
        "list_devices",
        fields(Devices {
            cameras: Vec::new(),
            microphones: Vec::new(),
            speakers: Vec::new(),
        }),
    );
    r.insert(
        "start_preview",
        fields(Preview {
            video: true,
            audio: true,
        }),
    );
    r.insert("join_room", fields(joined));
    r.insert(
        "create_invite",
        fields(kaigi_app::InviteInfo {
            link: "kaigi://invite/k3m-9xq2-7hd?server=ws://127.0.0.1:7880".into(),
            code: "k3m-9xq2-7hd".into(),
            expires_at: 0,
            revocable: true,
        }),
    );
    r.insert(
        "frame_endpoint",
        fields(FrameEndpoint {
            url: "ws://127.0.0.1:1/frames".into(),
            token: "t".into(),
        }),
    );
    for (name, _) in kaigi_desktop::COMMANDS {
        r.entry(name).or_default();
    }
    r
}

fn contract() -> String {
    let commands: BTreeMap<&str, &[&str]> = kaigi_desktop::COMMANDS.iter().copied().collect();
    let ipc_commands: BTreeMap<&str, &[&str]> = kaigi_desktop::IPC_TRANSPORT_COMMANDS
        .iter()
        .copied()
        .collect();
    let events: BTreeMap<&str, Vec<String>> = UiEvent::examples()
        .iter()
        .map(|e| {
            let fields = match serde_json::to_value(e).expect("an event serializes") {
                Value::Object(m) => m.keys().filter(|k| *k != "event").cloned().collect(),
                _ => Vec::new(),
            };
            (e.name(), fields)
        })
        .collect();
    let mut codes: Vec<String> = AppErrorCode::all().iter().map(|c| c.as_str()).collect();
    codes.sort();
    let pretty = |v: Value| serde_json::to_string_pretty(&v).expect("json");
    format!(
        "// Generated from the Rust side by src-tauri/tests/contract.rs; do not edit.\n\
         // Regenerate: KAIGI_BLESS=1 cargo test -p kaigi-desktop --test contract\n\n\
         /** The commands the window may call, with their arguments' names. */\n\
         export const COMMANDS = {};\n\n\
         /** What each command returns: the fields of its result object. */\n\
         export const RESULTS = {};\n\n\
         /** The video paths over the IPC: only in builds for the tile benchmark. */\n\
         export const IPC_TRANSPORT_COMMANDS = {};\n\n\
         /** The events the window is sent, with their payloads' fields. */\n\
         export const EVENT_FIELDS = {};\n\n\
         /** The events' names. */\n\
         export const EVENTS = Object.keys(EVENT_FIELDS);\n\n\
         /** Every error `code` a command or an `error` event can carry. */\n\
         export const ERROR_CODES = {};\n",
        pretty(json!(commands)),
        pretty(json!(results())),
        pretty(json!(ipc_commands)),
        pretty(json!(events)),
        pretty(json!(codes)),
    )
}

#[test]
fn the_ui_contract_is_generated_from_the_rust_side() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/contract.js");
    let want = contract();
    if std::env::var_os("KAIGI_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write ui/contract.js");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "ui/contract.js is not what the Rust side says; regenerate it with \
         KAIGI_BLESS=1 cargo test -p kaigi-desktop --test contract"
    );
}
