//! Calls on thin and lossy links (see `kaigi_tests::netlab`; needs root):
//! the server, a publisher and a subscriber on one switch, one party's
//! link capped with `tc tbf` (a 200 ms queue) or losing packets at random
//! (nftables `numgen`). The publisher sends the 640×480 test pattern (in
//! three simulcast layers) at
//! 30 fps and a tone (50 Opus packets a second). Each test removes its
//! namespaces, also on failure.

use std::time::Duration;

use kaigi_tests::netlab::{CallRates, Lab, Ns, Trio};

/// One call at a time: several at once on a 2-core machine measure the
/// machine, not the link.
static ONE_CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long the call runs before it is measured: the time to adapt
/// (the bench `adapt` measures it).
const SETTLE: Duration = Duration::from_secs(3);
/// How long it is measured.
const WINDOW: Duration = Duration::from_secs(10);

/// A lab `tag` with the server, the publisher and the subscriber on one
/// switch; `impair` does to it what the test needs; returns what the
/// subscriber got.
fn call(tag: &str, impair: impl FnOnce(&Lab, &Ns, &str, &Ns, &str, &Ns)) -> CallRates {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let trio = Trio::new(tag);
    let ((pub_ns, pub_if), (sub_ns, sub_if)) = (&trio.publisher, &trio.subscriber);
    impair(&trio.lab, pub_ns, pub_if, sub_ns, sub_if, &trio.switch);
    let (addr, _stop) = trio.start_server();
    let got = trio
        .lab
        .measure_call(addr, pub_ns, sub_ns, 1, SETTLE, WINDOW)
        .expect("the subscriber decoded the publisher's video");
    eprintln!(
        "{tag}: {:.1} fps, {:.1} audio packets/s",
        got.fps, got.audio_per_sec
    );
    got
}

/// Opus packets a second (20 ms frames).
const AUDIO_PER_SEC: f64 = 50.0;

#[test]
fn a_publisher_on_a_250_kbit_uplink_keeps_video_moving_and_audio_whole() {
    let got = call("thup", |lab, pub_ns, pub_if, _, _, switch| {
        lab.cap(pub_ns, pub_if, switch, false, 250)
    });
    assert!(
        got.fps >= 15.0 && got.audio_per_sec >= 0.97 * AUDIO_PER_SEC,
        "{:.1} fps (≥ 15), {:.1} % of audio packets (≥ 97)",
        got.fps,
        got.audio_per_sec / AUDIO_PER_SEC * 100.0
    );
}

#[test]
fn a_subscriber_losing_5_percent_still_sees_smooth_video() {
    let got = call("thloss", |lab, _, _, sub_ns, _, _| {
        lab.random_loss(sub_ns, 5)
    });
    assert!(got.fps >= 25.0, "{:.1} fps (≥ 25)", got.fps);
}

/// The server sends a subscriber on a thin downlink a smaller simulcast
/// layer instead of the one that does not fit, with audio first.
#[test]
fn a_subscriber_on_a_250_kbit_downlink_gets_a_smaller_layer_and_all_the_audio() {
    let got = call("thdown", |lab, _, _, sub_ns, sub_if, switch| {
        lab.cap(sub_ns, sub_if, switch, true, 250)
    });
    assert!(
        got.fps >= 10.0 && got.audio_per_sec >= 0.97 * AUDIO_PER_SEC,
        "{:.1} fps (≥ 10), {:.1} % of audio packets (≥ 97)",
        got.fps,
        got.audio_per_sec / AUDIO_PER_SEC * 100.0
    );
}
