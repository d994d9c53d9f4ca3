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
use std::time::{Duration, Instant};

use kaigi_sdk::{LocalStream, SyntheticSource};
use kaigi_tests::bench::{machine, write_results};
use kaigi_tests::netlab::{Lab, Ns};
use kaigi_tests::{frames_arrive, room, within, TestServer};
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
    r: u64,
    window: Duration,
) -> (f64, f64) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let publishing = lab.spawn_in(pub_ns, move || async move {
        let server = TestServer::remote(server);
        let (alice, _) = server.joined("alice", &room(r)).await;
        let stream = LocalStream::synthetic(alice.user_id(), SyntheticSource::default())
            .expect("a test pattern");
        within("publish", alice.publish(&stream))
            .await
            .expect("published");
        let _ = done_rx.await;
        let _ = within("leave", alice.leave()).await;
    });
    let receiving = lab.spawn_in(sub_ns, move || async move {
        let server = TestServer::remote(server);
        let (bob, _) = server.joined("bob", &room(r)).await;
        frames_arrive(&bob, "alice", 1).await;
        let remote = bob
            .remote_streams()
            .into_iter()
            .find(|s| s.user_id().as_str() == "alice")
            .expect("alice's stream");
        // Settle, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (frames, audio, start) = (
            remote.frames_decoded(),
            remote.audio_packets(),
            Instant::now(),
        );
        tokio::time::sleep(window).await;
        let secs = start.elapsed().as_secs_f64();
        let fps = (remote.frames_decoded() - frames) as f64 / secs;
        let audio = (remote.audio_packets() - audio) as f64 / (secs * AUDIO_PACKETS_PER_SEC);
        let _ = within("leave", bob.leave()).await;
        (fps, audio.min(1.0))
    });
    let got = receiving.join();
    drop(done_tx);
    let _ = publishing.join();
    // A subscriber that never decodes a frame has 0 fps, not a failed run.
    got.unwrap_or((0.0, 0.0))
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
    let mut rows = String::new();
    let mut results = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        // A lab per case: caps and loss rules go with it.
        let mut lab = Lab::new(&format!("ad{i}"));
        let switch = lab.switch("sw");
        let server_ns = lab.namespace("srv");
        lab.attach(&server_ns, &switch, "203.0.113.10/24");
        let pub_ns = lab.namespace("pub");
        let pub_if = lab.attach(&pub_ns, &switch, "203.0.113.20/24");
        let sub_ns = lab.namespace("sub");
        let sub_if = lab.attach(&sub_ns, &switch, "203.0.113.30/24");
        match case {
            Impairment::Clean => {}
            Impairment::Loss(p) => lab.random_loss(&sub_ns, p),
            Impairment::Downlink(k) => lab.cap(&sub_ns, &sub_if, &switch, true, k),
            Impairment::Uplink(k) => lab.cap(&pub_ns, &pub_if, &switch, false, k),
        }
        let (addr, stop) = lab.server(&server_ns, |c| {
            c.listen = "203.0.113.10:7880".parse().unwrap();
            c.media_port = 7882;
        });
        let (fps, audio) = measure(&lab, addr, &pub_ns, &sub_ns, 1, window);
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
    let (date, cores, cpu) = machine();
    let body = format!(
        "## Calls on thin and lossy links (issue: calls that adapt)\n\n\
         Measured {date} on {cores} cores ({cpu}), release build, with `cargo bench -p kaigi-tests --bench adapt` (as \
         root: it builds network namespaces). Server, publisher and subscriber on one switch; the publisher sends the \
         640×480 test pattern at 30 fps (1 Mbit/s) and a tone; one party's link is capped with `tc tbf` (a 200 ms queue) \
         or loses packets at random (nftables). {}-second window after 2 s of settling; raw figures in \
         `bench-results/adapt.json`. The encoder sends a fixed bitrate and the SFU one layer: these are the figures \
         congestion control, simulcast and audio priority are to move (goals: ≥ 15 fps and ≥ 97 % of audio at 250 kbit/s, \
         ≥ 97 % of audio at 150 kbit/s).\n\n\
         | link | video decoded | audio packets received |\n|---|---|---|\n{rows}",
        window.as_secs()
    );
    write_results(
        "adapt",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu, "window_s": window.as_secs(), "results": results}),
    );
}
