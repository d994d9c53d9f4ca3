//! Calls on thin and lossy links (issue: calls that adapt), across test
//! hosts made of network namespaces (see `kaigi_tests::netlab`; needs
//! root): the server, a publisher and a subscriber on one switch; one
//! party's link capped with `tc tbf` or losing packets at random
//! (nftables `numgen`). The publisher sends the 640×480 test pattern at
//! 30 fps and a tone; for each case the subscriber's decoded frame rate
//! and the share of the publisher's audio packets it received, over a
//! measurement window. Prints a table, writes `bench-results/adapt.json`
//! and its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench adapt` (`-- --quick` for a short run).

use std::net::SocketAddr;
use std::time::Duration;

use kaigi_tests::bench::{machine, write_results};
use kaigi_tests::netlab::{Lab, Ns, Trio};

/// The top layer's size.
const TOP: (usize, usize) = (640, 480);

/// What adapting to a cap that appears, then lifts, takes.
struct Transition {
    /// From the cap to the first smaller-layer frame.
    down: Option<Duration>,
    /// Audio packets received from the cap to the smaller layer, as a share.
    audio_after_cap: f64,
    /// Decoded frames per second in that time.
    fps_after_cap: f64,
    /// From lifting the cap to the first top-layer frame.
    up: Option<Duration>,
}

/// A clean call on the top layer; the subscriber's downlink is capped at
/// `kbit`, then the cap lifts.
fn transition(kbit: u32) -> Transition {
    let trio = Trio::new("adtr");
    let (lab, switch) = (&trio.lab, &trio.switch);
    let (sub_ns, sub_if) = &trio.subscriber;
    let (addr, _stop) = trio.start_server();
    let _alice = lab.publish(&trio.publisher.0, addr, 1, "alice");
    let bob = lab.watch(sub_ns, addr, 1, "bob", "alice");
    let long = Duration::from_secs(30);
    bob.wait_until("the top layer", long, |s| s.size == Some(TOP))
        .expect("a clean call reaches the top layer");
    bob.skip(Duration::from_secs(3));
    lab.cap(sub_ns, sub_if, switch, true, kbit);
    let capped = std::time::Instant::now();
    let at_cap = bob.wait_until("a sample", long, |_| true).expect("samples");
    let smaller = bob
        .wait_until("a smaller layer", long, |s| {
            s.size.is_some_and(|z| z != TOP)
        })
        .ok();
    let down = smaller
        .as_ref()
        .map(|s| s.at.saturating_duration_since(capped));
    // What the subscriber got from the cap until the smaller layer played.
    let (fps_after_cap, audio_after_cap) = smaller.as_ref().map_or((0.0, 0.0), |s| {
        let secs =
            s.at.saturating_duration_since(at_cap.at)
                .as_secs_f64()
                .max(1e-3);
        (
            (s.frames - at_cap.frames) as f64 / secs,
            ((s.audio - at_cap.audio) as f64 / secs / AUDIO_PACKETS_PER_SEC).min(1.0),
        )
    });
    bob.skip(Duration::from_secs(5));
    lab.uncap(sub_ns, sub_if, switch, true);
    let lifted = std::time::Instant::now();
    let up = bob
        .wait_until("the top layer again", long, |s| s.size == Some(TOP))
        .ok()
        .map(|s| s.at.saturating_duration_since(lifted));
    Transition {
        down,
        audio_after_cap,
        fps_after_cap,
        up,
    }
}
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

/// Opus packets a second (20 ms frames).
const AUDIO_PACKETS_PER_SEC: f64 = 50.0;

/// How a case impairs one party's link.
#[derive(Clone, Copy)]
enum Impairment {
    Clean,
    /// Random loss of what the subscriber receives, percent.
    Loss(u32),
    /// The subscriber's downlink capped, kbit/s.
    Downlink(u32),
    /// The publisher's uplink capped, kbit/s.
    Uplink(u32),
}

impl Impairment {
    fn name(self) -> String {
        match self {
            Impairment::Clean => "clean".into(),
            Impairment::Loss(p) => format!("{p} % random loss (subscriber)"),
            Impairment::Downlink(k) => format!("subscriber's downlink capped at {k} kbit/s"),
            Impairment::Uplink(k) => format!("publisher's uplink capped at {k} kbit/s"),
        }
    }
}

/// (decoded frames per second, share of audio packets received) at the
/// subscriber in `sub_ns`, of `pub_ns`' publication, over `window`.
fn measure(
    lab: &Lab,
    server: SocketAddr,
    pub_ns: &Ns,
    sub_ns: &Ns,
    window: Duration,
) -> (f64, f64) {
    // A subscriber that never decodes a frame has 0 fps, not a failed run.
    lab.measure_call(server, pub_ns, sub_ns, 1, Duration::from_secs(2), window)
        .map(|got| {
            (
                got.fps,
                (got.audio_per_sec / AUDIO_PACKETS_PER_SEC).min(1.0),
            )
        })
        .unwrap_or((0.0, 0.0))
}

async fn run(quick: bool) {
    let window = Duration::from_secs(if quick { 4 } else { 15 });
    let cases = [
        Impairment::Clean,
        Impairment::Loss(5),
        Impairment::Downlink(250),
        Impairment::Uplink(250),
        Impairment::Downlink(150),
    ];
    // `-- NAME…`: only the cases whose name contains one of these (the
    // results are printed, not written).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut rows = String::new();
    let mut results = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|o| case.name().contains(o.as_str())) {
            continue;
        }
        // A lab per case: caps and loss rules go with it.
        let trio = Trio::new(&format!("ad{i}"));
        let (lab, switch) = (&trio.lab, &trio.switch);
        let ((pub_ns, pub_if), (sub_ns, sub_if)) = (&trio.publisher, &trio.subscriber);
        match case {
            Impairment::Clean => {}
            Impairment::Loss(p) => lab.random_loss(sub_ns, p),
            Impairment::Downlink(k) => lab.cap(sub_ns, sub_if, switch, true, k),
            Impairment::Uplink(k) => lab.cap(pub_ns, pub_if, switch, false, k),
        }
        let (addr, stop) = trio.start_server();
        let (fps, audio) = measure(lab, addr, pub_ns, sub_ns, window);
        drop(stop);
        println!(
            "{}: {fps:.1} fps, {:.0} % of audio packets",
            case.name(),
            audio * 100.0
        );
        rows.push_str(&format!(
            "| {} | {fps:.1} fps | {:.0} % |\n",
            case.name(),
            audio * 100.0
        ));
        results.push(json!({"case": case.name(), "fps": fps, "audio_share": audio}));
    }
    let mut transitions = String::new();
    if only.is_empty() || only.iter().any(|o| "transition".contains(o.as_str())) {
        let t = transition(250);
        let secs =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "cap of 250 kbit/s appears: a smaller layer after {}, {:.1} fps and {:.0} % of audio until then; \
             cap lifts: the top layer after {}",
            secs(t.down),
            t.fps_after_cap,
            t.audio_after_cap * 100.0,
            secs(t.up)
        );
        transitions = format!(
            "\n| time to adapt | measured | goal |\n|---|---|---|\n\
             | a 250 kbit/s cap appears on the subscriber's downlink → first frame of a smaller layer | {} | — |\n\
             | … video and audio from the cap until then | {:.1} fps, {:.0} % of audio | — |\n\
             | the cap lifts → first frame of the top layer again | {} | ≤ 15 s |\n",
            secs(t.down),
            t.fps_after_cap,
            t.audio_after_cap * 100.0,
            secs(t.up)
        );
        results.push(json!({
            "case": "transition 250 kbit/s",
            "down_s": t.down.map(|d| d.as_secs_f64()),
            "fps_after_cap": t.fps_after_cap,
            "audio_after_cap": t.audio_after_cap,
            "up_s": t.up.map(|d| d.as_secs_f64()),
        }));
    }
    if !only.is_empty() {
        return;
    }
    let (date, cores, cpu) = machine();
    let body = format!(
        "## Calls on thin and lossy links (issue: calls that adapt)\n\n\
         Measured {date} on {cores} cores ({cpu}), release build, with `cargo bench -p kaigi-tests --bench adapt` (as \
         root: it builds network namespaces). Server, publisher and subscriber on one switch; the publisher sends the \
         640×480 test pattern at 30 fps (1 Mbit/s) and a tone; one party's link is capped with `tc tbf` (a 200 ms queue) \
         or loses packets at random (nftables). {}-second window after 2 s of settling; raw figures in \
         `bench-results/adapt.json`. Goals: ≥ 15 fps and ≥ 97 % of audio at 250 kbit/s either way, ≥ 97 % of audio \
         at 150 kbit/s, ≥ 25 fps at 5 % loss. Both ends estimate their send path (GCC over transport-wide feedback) \
         and pace video with audio first; the publisher's encoder follows its estimate and sends three simulcast \
         layers (640×480, 320×240, 160×120); the SFU gives each subscriber the largest layer its own estimate (and \
         tile size) allows, trying the next one up now and then, and pauses video below the smallest. The \
         subscriber plays audio from an adaptive jitter buffer (FEC, concealment). A trial of a layer that does not \
         fit ends as soon as the bottleneck's queue grows (the estimator measures it from one-way delays), before \
         the queue overflows into audio; a standing queue or loss with a queue drops the estimate to what arrives. Before any of this (fixed bitrate, one FIFO): clean 30 fps/100 %, 5 % loss 30/94 %, \
         downlink 250 kbit/s 0.9/84 %, uplink 250 kbit/s 1.3/85 %, downlink 150 kbit/s 0.2/75 %.\n\n\
         | link | video decoded | audio packets received |\n|---|---|---|\n{rows}{transitions}",
        window.as_secs()
    );
    write_results(
        "adapt",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu, "window_s": window.as_secs(), "results": results}),
    );
}
