//! Media benchmarks: glass-to-glass latency (the test pattern's capture
//! stamp to decode at a subscriber, through the SFU in its own process),
//! `join()` to the first decoded remote frame, and the CPU to encode
//! 640×480 at 30 fps. Prints a table, writes `bench-results/media.json` and
//! its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench media` (`-- --quick` for a short run).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kaigi_media::{unix_micros, H264Encoder, H264Settings, Stamp, TestPattern};
use kaigi_sdk::{ClientEvent, LocalStream, Role, SyntheticSource};
use kaigi_tests::bench::{machine, write_results, ChildServer};
use kaigi_tests::{room, TestServer};
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Latency from capture to decode of each frame a subscriber reads.
async fn glass_to_glass(server: &TestServer, seconds: u64) -> (f64, f64, usize) {
    let (alice, _) = server.joined("g2g-pub", &room(100)).await;
    let (bob, mut events) = server.joined("g2g-sub", &room(100)).await;
    let stream = LocalStream::synthetic(alice.user_id(), SyntheticSource::default()).unwrap();
    alice.publish(&stream).await.unwrap();
    loop {
        if let Some(ClientEvent::StreamSubscribed { .. }) = events.recv().await {
            break;
        }
    }
    let remote = bob.remote_streams().pop().unwrap();
    let mut video = remote.video();
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds + 1);
    let warmup = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if tokio::time::timeout(Duration::from_secs(2), video.changed())
            .await
            .is_err()
        {
            break;
        }
        let now = unix_micros();
        let stamp = video.borrow_and_update().as_deref().and_then(Stamp::read);
        if let (Some(s), true) = (stamp, Instant::now() > warmup) {
            lat.push(now.saturating_sub(s.captured_us) as f64 / 1000.0);
        }
    }
    stream.close();
    let n = lat.len();
    (percentile(&mut lat, 0.5), percentile(&mut lat, 0.95), n)
}

/// From calling `join()` to the first decoded frame of a publisher already
/// in the room.
async fn join_to_first_frame(server: &TestServer, joins: usize) -> (f64, f64) {
    let (alice, _) = server.joined("jf-pub", &room(101)).await;
    let stream = LocalStream::synthetic(alice.user_id(), SyntheticSource::default()).unwrap();
    alice.publish(&stream).await.unwrap();
    let mut v = Vec::new();
    for i in 0..joins {
        let (c, mut events) = server.client(&format!("jf{i}"));
        let t = Instant::now();
        c.join(room(101), Role::Anchor).await.unwrap();
        loop {
            if let Some(ClientEvent::StreamSubscribed { .. }) = events.recv().await {
                break;
            }
        }
        let remote = c.remote_streams().pop().unwrap();
        let mut video = remote.video();
        // The first picture of any layer: what the person sees (a new
        // subscriber may start on a smaller layer and move up).
        video.wait_for(|f| f.is_some()).await.unwrap();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
        c.leave().await.unwrap();
    }
    stream.close();
    (percentile(&mut v, 0.5), percentile(&mut v, 0.95))
}

/// CPU time to generate and encode one 640×480 frame, on this thread.
fn encode_cost(frames: usize) -> (f64, f64) {
    let mut pattern = TestPattern::new(640, 480).unwrap();
    let mut enc = H264Encoder::new(H264Settings::default()).unwrap();
    let src: Vec<_> = (0..frames).map(|_| pattern.next_frame()).collect();
    let t = Instant::now();
    let mut pattern2 = TestPattern::new(640, 480).unwrap();
    for _ in 0..frames {
        std::hint::black_box(pattern2.next_frame());
    }
    let gen_ms = t.elapsed().as_secs_f64() * 1000.0 / frames as f64;
    let t = Instant::now();
    for f in &src {
        std::hint::black_box(enc.encode(f).unwrap());
    }
    let enc_ms = t.elapsed().as_secs_f64() * 1000.0 / frames as f64;
    (enc_ms, gen_ms)
}

/// CPU time to scale one `from` frame down to fit `to`, in µs: a
/// 640×360 frame to a 354×196 tile (what the app does per tile and frame
/// before sending it to the window), or 640×480 to 320×240 (a simulcast
/// layer, by halving).
fn scale_cost(from: (usize, usize), to: (usize, usize), frames: usize) -> f64 {
    let frame = TestPattern::new(from.0, from.1).unwrap().next_frame();
    let t = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(std::hint::black_box(&frame).scaled_to_fit(to.0, to.1));
    }
    t.elapsed().as_secs_f64() * 1e6 / frames as f64
}

async fn run(quick: bool) {
    let (secs, joins, frames) = if quick { (3, 5, 150) } else { (10, 20, 900) };
    let child = ChildServer::start();
    let server = TestServer::remote(child.addr);
    eprintln!("glass-to-glass for {secs} s …");
    let (g50, g95, gn) = glass_to_glass(&server, secs).await;
    eprintln!("join → first frame ×{joins} …");
    let (j50, j95) = join_to_first_frame(&server, joins).await;
    child.stop();
    eprintln!("encode ×{frames} …");
    let (enc_ms, gen_ms) = encode_cost(frames);
    let enc_pct = enc_ms * 30.0 / 10.0;
    let scale_us = scale_cost((640, 360), (354, 196), frames * 2);
    let halve_us = scale_cost((640, 480), (320, 240), frames * 2);
    // Five tiles at 30 fps, % of a core.
    let scale_pct = scale_us * 150.0 / 1e4;

    let rows = [
        (
            "glass-to-glass latency, 640×480 at 30 fps, p50",
            format!("{g50:.1} ms (p95 {g95:.1} ms, {gn} frames)"),
            "≤ 80 ms",
            Some(g50 <= 80.0),
        ),
        (
            "join() → first decoded remote frame, p50",
            format!("{j50:.0} ms (p95 {j95:.0} ms, {joins} joins)"),
            "≤ 300 ms",
            Some(j50 <= 300.0),
        ),
        (
            "H.264 encode of 640×480 at 30 fps (one core)",
            format!(
                "{enc_pct:.1} % of a core ({enc_ms:.2} ms/frame; pattern {gen_ms:.2} ms/frame)"
            ),
            "≤ 25 %",
            Some(enc_pct <= 25.0),
        ),
        (
            "scaling a 640×360 frame to a 354×196 tile (the app, per tile and frame)",
            format!("{scale_us:.0} µs ({scale_pct:.1} % of a core for 5 tiles at 30 fps)"),
            "— (487 µs on 2026-11-23, before rows-first bilinear)",
            None,
        ),
        (
            "halving a 640×480 frame to 320×240 (a simulcast layer; the first step to a small tile)",
            format!("{halve_us:.0} µs"),
            "— (176 µs on 2026-11-23, before summing rows first)",
            None,
        ),
    ];
    let mut table = String::from("| benchmark | result | goal | met |\n|---|---|---|---|\n");
    for (name, fig, goal, met) in &rows {
        let _ = writeln!(
            table,
            "| {name} | {fig} | {goal} | {} |",
            match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        );
    }
    println!("\n{table}");
    let (date, cores, cpu) = machine();
    let body = format!(
        "## Media (issue: real audio and video)\n\nMeasured {date} on {cores} cores ({cpu}), release build; the SFU in its own process, publisher and subscriber SDK clients in the bench process, all on 127.0.0.1{}. \
         Produced by `cargo bench -p kaigi-tests --bench media`; raw figures in `bench-results/media.json`.\n\n{table}",
        if quick { " (quick run)" } else { "" }
    );
    let json = json!({
        "date": date, "cores": cores, "cpu": cpu, "quick": quick,
        "glass_to_glass_ms": {"p50": g50, "p95": g95, "frames": gn},
        "join_to_first_frame_ms": {"p50": j50, "p95": j95, "joins": joins},
        "encode_640x480_ms_per_frame": enc_ms, "encode_core_percent_at_30fps": enc_pct,
        "pattern_ms_per_frame": gen_ms, "scale_640x360_to_354x196_us": scale_us,
        "halve_640x480_to_320x240_us": halve_us,
    });
    write_results("media", &body, &json);
}
