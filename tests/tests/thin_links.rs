//! Calls on thin and lossy links (see `kaigi_tests::netlab`; needs root):
//! the server, a publisher and subscribers on one switch, one party's link
//! capped with `tc tbf` (a 200 ms queue) or losing packets at random
//! (nftables `numgen`). The publisher sends the 640×480 test pattern (in
//! three simulcast layers) at 30 fps and a tone (50 Opus packets a
//! second). Each test removes its namespaces, also on failure.

use std::time::Duration;

use kaigi_rtc::quality::grade;
use kaigi_tests::netlab::{Lab, Ns, Party, Trio, Window};
use kaigi_tests::WAIT;

/// One call at a time: several at once on a 2-core machine measure the
/// machine, not the link.
static ONE_CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long the call runs before it is measured: the time to adapt and
/// the first, closely spaced layer trials (the bench `adapt` measures the
/// time to adapt).
const SETTLE: Duration = Duration::from_secs(8);
/// How long it is measured: with the settling, a 20 s call per case.
const WINDOW: Duration = Duration::from_secs(12);
/// The top layer's size.
const TOP: (usize, usize) = (640, 480);

/// Opus packets a second (20 ms frames).
const AUDIO_PER_SEC: f64 = 50.0;

/// A lab `tag` with the server, the publisher and the subscriber on one
/// switch; `impair` does to it what the test needs; returns what the
/// subscriber got.
fn call(tag: &str, impair: impl FnOnce(&Lab, &Ns, &str, &Ns, &str, &Ns)) -> Window {
    call_and(tag, impair, |_| ())
}

/// [`call`], then `after` with the publisher (while the call goes on).
fn call_and(
    tag: &str,
    impair: impl FnOnce(&Lab, &Ns, &str, &Ns, &str, &Ns),
    after: impl FnOnce(&Party),
) -> Window {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let trio = Trio::new(tag);
    let ((pub_ns, pub_if), (sub_ns, sub_if)) = (&trio.publisher, &trio.subscriber);
    impair(&trio.lab, pub_ns, pub_if, sub_ns, sub_if, &trio.switch);
    let (addr, _stop) = trio.start_server();
    let _alice = trio.lab.publish(pub_ns, addr, 1, "alice");
    let bob = trio.lab.watch(sub_ns, addr, 1, "bob", "alice");
    bob.first_frame().expect("the subscriber decodes a picture");
    bob.skip(SETTLE);
    let got = bob.measure(WINDOW);
    eprintln!("{tag}: {got:?}");
    after(&_alice);
    got
}

fn audio_share(got: &Window) -> f64 {
    got.audio_per_sec / AUDIO_PER_SEC
}

/// The publisher's encoder follows its uplink's estimate down; its
/// `network-quality` says its uplink is thin.
#[test]
fn a_publisher_on_a_250_kbit_uplink_keeps_video_moving_and_audio_whole() {
    let got = call_and(
        "thup",
        |lab, pub_ns, pub_if, _, _, switch| lab.cap(pub_ns, pub_if, switch, false, 250),
        |alice| {
            let seen = alice.measure(Duration::from_secs(3));
            let (up, _) = seen
                .worst_quality
                .expect("network-quality reached the publisher");
            assert!(
                up >= grade::POOR,
                "the publisher's uplink graded {up} (≥ 3, poor)"
            );
        },
    );
    assert!(
        got.fps >= 15.0 && audio_share(&got) >= 0.97,
        "{:.1} fps (≥ 15), {:.1} % of audio packets (≥ 97)",
        got.fps,
        audio_share(&got) * 100.0
    );
}

/// Lost video is resent (NACK); lost audio is recovered from FEC or
/// concealed, so playout has no gaps.
#[test]
fn a_subscriber_losing_5_percent_still_sees_smooth_video_and_hears_no_gaps() {
    let got = call("thloss", |lab, _, _, sub_ns, _, _| {
        lab.random_loss(sub_ns, 5)
    });
    assert!(got.fps >= 25.0, "{:.1} fps (≥ 25)", got.fps);
    assert!(
        got.audio_repaired_per_sec > 0.0 && got.audio_out_per_sec >= 0.97 * AUDIO_PER_SEC,
        "{:.1} audio frames played a second (≥ 48.5), {:.1} of them repaired (> 0)",
        got.audio_out_per_sec,
        got.audio_repaired_per_sec
    );
}

/// The server sends a subscriber on a thin downlink a smaller simulcast
/// layer instead of the one that does not fit, with audio first.
#[test]
fn a_subscriber_on_a_250_kbit_downlink_gets_a_smaller_layer_and_all_the_audio() {
    let got = call("thdown", |lab, _, _, sub_ns, sub_if, switch| {
        lab.cap(sub_ns, sub_if, switch, true, 250)
    });
    assert!(
        got.fps >= 15.0 && audio_share(&got) >= 0.97,
        "{:.1} fps (≥ 15), {:.1} % of audio packets (≥ 97)",
        got.fps,
        audio_share(&got) * 100.0
    );
    assert_ne!(got.size, Some(TOP), "the top layer does not fit 250 kbit/s");
}

/// Below what the smallest layer needs beside audio, audio still arrives
/// whole; video either keeps moving or is paused with `videoPaused`.
#[test]
fn a_subscriber_on_a_150_kbit_downlink_keeps_all_the_audio() {
    let got = call("th150", |lab, _, _, sub_ns, sub_if, switch| {
        lab.cap(sub_ns, sub_if, switch, true, 150)
    });
    assert!(
        audio_share(&got) >= 0.97,
        "{:.1} % of audio packets (≥ 97)",
        audio_share(&got) * 100.0
    );
    assert!(
        got.fps >= 5.0 || got.paused,
        "{:.1} fps (≥ 5) and video not paused",
        got.fps
    );
}

/// When a subscriber's cap lifts, the server finds out by itself (layer
/// trials) and sends the top layer again.
#[test]
fn a_lifted_cap_brings_the_top_layer_back_within_15_s() {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let trio = Trio::new("thlift");
    let (lab, switch) = (&trio.lab, &trio.switch);
    let (sub_ns, sub_if) = &trio.subscriber;
    lab.cap(sub_ns, sub_if, switch, true, 250);
    let (addr, _stop) = trio.start_server();
    let _alice = lab.publish(&trio.publisher.0, addr, 1, "alice");
    let bob = lab.watch(sub_ns, addr, 1, "bob", "alice");
    bob.first_frame().expect("the subscriber decodes a picture");
    bob.wait_until("a smaller layer", Duration::from_secs(15), |s| {
        s.size.is_some_and(|size| size != TOP)
    })
    .expect("the capped subscriber gets a smaller layer");
    bob.skip(SETTLE);
    lab.uncap(sub_ns, sub_if, switch, true);
    let lifted = std::time::Instant::now();
    let budget = Duration::from_secs(15);
    // A trial of the top layer can start while the lifted link still
    // drains the cap's queue and fail; what counts is the top layer held
    // within 15 s (a 4 s measurement of it ending inside the budget or
    // starting before it ran out).
    let got = loop {
        let left = budget.saturating_sub(lifted.elapsed());
        bob.wait_until("the top layer", left, |s| s.size == Some(TOP))
            .expect("the top layer comes back within 15 s of the cap lifting");
        eprintln!("top layer back after {:?}", lifted.elapsed());
        let got = bob.measure(Duration::from_secs(4));
        if (got.fps >= 25.0 && got.size == Some(TOP)) || lifted.elapsed() >= budget {
            break got;
        }
        eprintln!("the top layer did not hold: {got:?}");
    };
    assert!(
        got.fps >= 25.0 && got.size == Some(TOP),
        "after the cap lifted: {got:?} (≥ 25 fps of 640×480)"
    );
}

/// One subscriber on a thin link does not pull a clean one of the same
/// publisher down: each gets its own layer.
#[test]
fn a_capped_subscriber_does_not_lower_a_clean_ones_layer() {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let mut trio = Trio::new("thtwo");
    let carol_ns = trio.lab.namespace("sub2");
    trio.lab.attach(&carol_ns, &trio.switch, "203.0.113.40/24");
    let (lab, switch) = (&trio.lab, &trio.switch);
    let (sub_ns, sub_if) = &trio.subscriber;
    lab.cap(sub_ns, sub_if, switch, true, 250);
    let (addr, _stop) = trio.start_server();
    let _alice = lab.publish(&trio.publisher.0, addr, 1, "alice");
    let bob = lab.watch(sub_ns, addr, 1, "bob", "alice");
    let carol = lab.watch(&carol_ns, addr, 1, "carol", "alice");
    bob.first_frame()
        .expect("the capped subscriber decodes a picture");
    carol
        .first_frame()
        .expect("the clean subscriber decodes a picture");
    carol.skip(SETTLE);
    let clean = carol.measure(WINDOW);
    eprintln!("clean: {clean:?}");
    let (_, down) = clean
        .worst_quality
        .expect("network-quality reached the subscriber");
    assert!(
        down <= grade::GOOD,
        "the clean downlink graded {down} (≤ 2, good)"
    );
    assert!(
        clean.fps >= 25.0 && clean.size == Some(TOP) && !clean.paused,
        "the clean subscriber: {clean:?} (≥ 25 fps of 640×480)"
    );
    // The capped one is on a smaller layer: at any moment it may be in a
    // trial of the larger one (up to 6 s, given up when its link queues),
    // so it is seen below 640×480 within a trial's length, not at one
    // instant.
    let capped = bob
        .wait_until("the capped subscriber below 640×480", WAIT, |s| {
            s.size.is_some_and(|size| size != TOP)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("capped: {capped:?}");
}
