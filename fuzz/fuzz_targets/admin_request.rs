//! The admin API's request parser never panics on any action and body,
//! and whatever it accepts survives a body/parse round trip.
#![no_main]

use kaigi_proto::admin::{Action, Request};
use kaigi_proto::SdkAppId;
use libfuzzer_sys::fuzz_target;

const APP: SdkAppId = SdkAppId(1400000001);

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let action = Action::ALL[usize::from(which) % Action::ALL.len()];
    if let Ok(request) = Request::parse(action, body, APP) {
        let again = serde_json::to_vec(&request.body(APP)).expect("serializes");
        assert_eq!(Request::parse(request.action(), &again, APP).expect("reparses"), request);
    }
});
