//! UserSig decoding and verification never panic on any input, and a sig
//! generated from arbitrary fields always verifies.
#![no_main]

use kaigi_proto::{usersig, SdkAppId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = usersig::decode(text);
        let _ = usersig::verify(text, SdkAppId(1400000000), "key", "alice", 1_700_000_000);
    }
    // Round trip: split the input into an identifier and a key.
    if data.len() >= 2 {
        let cut = (data[0] as usize) % data.len();
        let ident = String::from_utf8_lossy(&data[1..cut.max(1)]).into_owned();
        let key = String::from_utf8_lossy(&data[cut.max(1)..]).into_owned();
        let app = SdkAppId(u32::from(data[0]) + 1);
        let sig = usersig::generate(app, &key, &ident, 3600, 1_700_000_000);
        let claims = usersig::verify(&sig, app, &key, &ident, 1_700_000_001).expect("own sig verifies");
        assert_eq!(claims.identifier, ident);
    }
});
