//! The server's signaling parser and the SDK's server-message parser never
//! panic, and whatever they accept survives a serialize/parse round trip.
#![no_main]

use kaigi_proto::signal::{parse_client_message, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = parse_client_message(text) {
        let again = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(parse_client_message(&again).expect("reparses"), msg);
        if let kaigi_proto::signal::ClientMessage::Join(j) = &msg {
            // Validation of the room reference never panics either.
            let _ = j.room.room();
        }
    }
    if let Ok(msg) = serde_json::from_str::<ServerMessage>(text) {
        let again = msg.to_json();
        assert_eq!(serde_json::from_str::<ServerMessage>(&again).expect("reparses"), msg);
    }
});
