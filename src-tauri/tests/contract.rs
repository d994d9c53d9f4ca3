//! The UI's contract with the Rust side, generated from it: the commands
//! and their arguments, the events and their payload fields, and every
//! error code. `ui/contract.js` is this output, checked in; the UI imports
//! it and its tests check the UI against it (every command it calls
//! exists, every event is listened for, every error code has words in
//! every language). When the Rust side changes, this test fails until the
//! file is regenerated: `KAIGI_BLESS=1 cargo test -p kaigi-desktop --test contract`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kaigi_app::{AppErrorCode, UiEvent};
use serde_json::{json, Value};

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
         /** The video paths over the IPC: only in builds for the tile benchmark. */\n\
         export const IPC_TRANSPORT_COMMANDS = {};\n\n\
         /** The events the window is sent, with their payloads' fields. */\n\
         export const EVENT_FIELDS = {};\n\n\
         /** The events' names. */\n\
         export const EVENTS = Object.keys(EVENT_FIELDS);\n\n\
         /** Every error `code` a command or an `error` event can carry. */\n\
         export const ERROR_CODES = {};\n",
        pretty(json!(commands)),
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
