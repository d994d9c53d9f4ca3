//! SFU capacity: publishers send 640×360 video and audio; subscribers are
//! added in steps until more than 1% of the forwarded packets are lost (or
//! the step limit). For each step: packets forwarded per second, the
//! server's CPU (from /proc), packets per second per server core, and the
//! server's memory per forwarded stream. The server runs in its own
//! process; subscribers count packets without decoding. Prints a table,
//! writes `bench-results/sfu.json` and its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench sfu` (`-- --quick` for a short run).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kaigi_sdk::{Client, ClientEvent, LocalStream, Role, SyntheticSource};
use kaigi_tests::bench::{machine, write_results, ChildServer};
use kaigi_tests::{room, TestServer};
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

/// The server process's CPU seconds (user + system) and resident KiB.
fn proc_stats(pid: u32) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = f
        .get(11)
        .zip(f.get(12))
        .map(|(u, s)| (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / tick)
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

struct Step {
    subscribers: usize,
    streams: usize,
    pps: f64,
    loss: f64,
    server_cores: f64,
    rss_kib: u64,
}

async fn subscriber(server: &TestServer, name: String, publishers: usize) -> Client {
    let mut opts = server.options(&name);
    opts.decode = false;
    let c = Client::new(opts).unwrap();
    let mut events = c.events();
    c.join(room(500), Role::Audience).await.unwrap();
    let mut subscribed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscribed < publishers && Instant::now() < deadline {
        if let Ok(Some(ClientEvent::StreamSubscribed { .. })) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            subscribed += 1;
        }
    }
    c
}

fn totals(subs: &[Client]) -> (u64, u64) {
    subs.iter()
        .flat_map(|c| c.remote_streams())
        .fold((0, 0), |(r, l), s| {
            (r + s.packets_received(), l + s.packets_lost())
        })
}

async fn run(quick: bool) {
    let publishers = 4;
    let (steps, per_step, measure) = if quick {
        (vec![4, 8], 4, 3)
    } else {
        (vec![5, 10, 20, 30, 40, 50, 60], 10, 5)
    };
    let child = ChildServer::start();
    let pid = child.child.id();
    let server = TestServer::remote(child.addr);
    let mut pubs = Vec::new();
    for i in 0..publishers {
        let (c, _) = server.joined(&format!("pub{i}"), &room(500)).await;
        let s = LocalStream::synthetic(
            c.user_id(),
            SyntheticSource {
                video: Some((640, 360)),
                fps: 30,
                tone_hz: Some(440.0 + 110.0 * i as f64),
                video_bitrate_bps: 800_000,
            },
        )
        .unwrap();
        c.publish(&s).await.unwrap();
        pubs.push((c, s));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, rss_base) = proc_stats(pid);
    let mut subs: Vec<Client> = Vec::new();
    let mut results: Vec<Step> = Vec::new();
    let _ = per_step;
    for target in steps {
        while subs.len() < target {
            let name = format!("sub{}", subs.len());
            subs.push(subscriber(&server, name, publishers).await);
        }
        // Settle, then measure over a window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (r0, l0) = totals(&subs);
        let (cpu0, _) = proc_stats(pid);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(measure)).await;
        let (r1, l1) = totals(&subs);
        let (cpu1, rss) = proc_stats(pid);
        let secs = t.elapsed().as_secs_f64();
        let (got, lost) = (r1 - r0, l1.saturating_sub(l0));
        let step = Step {
            subscribers: subs.len(),
            streams: subs.len() * publishers,
            pps: got as f64 / secs,
            loss: lost as f64 / (got + lost).max(1) as f64,
            server_cores: (cpu1 - cpu0) / secs,
            rss_kib: rss,
        };
        eprintln!(
            "{} subscribers × {publishers} streams: {:.0} pkt/s, loss {:.2} %, server {:.2} cores, RSS {} KiB",
            step.subscribers,
            step.pps,
            step.loss * 100.0,
            step.server_cores,
            step.rss_kib
        );
        let over = step.loss > 0.01;
        results.push(step);
        if over {
            break;
        }
    }
    for c in &subs {
        let _ = c.leave().await;
    }
    for (c, s) in &pubs {
        let _ = c.leave().await;
        s.close();
    }
    child.stop();

    let held = results.iter().filter(|s| s.loss <= 0.01).last();
    let mut table = String::from(
        "| subscribers | forwarded streams | forwarded packets/s | loss | server CPU (cores) | packets/s per server core | server RSS |\n|---|---|---|---|---|---|---|\n",
    );
    for s in &results {
        let _ = writeln!(
            table,
            "| {} | {} | {:.0} | {:.2} % | {:.2} | {:.0} | {:.1} MiB |",
            s.subscribers,
            s.streams,
            s.pps,
            s.loss * 100.0,
            s.server_cores,
            s.pps / s.server_cores.max(1e-3),
            s.rss_kib as f64 / 1024.0
        );
    }
    let (per_core, subscribers, mem_per_stream) = match held {
        Some(s) => (
            s.pps / s.server_cores.max(1e-3),
            s.subscribers,
            (s.rss_kib.saturating_sub(rss_base)) as f64 / s.streams.max(1) as f64,
        ),
        None => (0.0, 0, 0.0),
    };
    let goals = format!(
        "| figure | result | goal | met |\n|---|---|---|---|\n\
         | forwarded packets per second per server core, at ≤ 1% loss | {per_core:.0} | ≥ 50,000 | {} |\n\
         | subscribers held at ≤ 1% loss ({publishers} publishers each) | {subscribers} | — | — |\n\
         | server memory per forwarded stream (audio + video) | {mem_per_stream:.0} KiB | — | — |\n",
        if per_core >= 50_000.0 { "yes" } else { "**no**" }
    );
    println!("\n{goals}\n{table}");
    let (date, cores, cpu) = machine();
    let body = format!(
        "## SFU capacity (issue: real audio and video)\n\nMeasured {date} on {cores} cores ({cpu}), release build{}. \
         {publishers} publishers send 640×360 at 30 fps (800 kbit/s) and Opus; audience subscribers join in steps and count packets \
         without decoding, in the bench process, which shares the 2 cores with the server. Loss is counted from RTP sequence gaps at the \
         subscribers; server CPU and RSS come from /proc for the server's own process. \
         Produced by `cargo bench -p kaigi-tests --bench sfu`; raw figures in `bench-results/sfu.json`.\n\n{goals}\n{table}",
        if quick { " (quick run)" } else { "" }
    );
    let json = json!({
        "date": date, "cores": cores, "cpu": cpu, "quick": quick, "publishers": publishers,
        "server_rss_kib_before_subscribers": rss_base,
        "steps": results.iter().map(|s| json!({
            "subscribers": s.subscribers, "forwarded_streams": s.streams,
            "packets_per_second": s.pps, "loss": s.loss,
            "server_cores": s.server_cores, "server_rss_kib": s.rss_kib,
        })).collect::<Vec<_>>(),
        "packets_per_second_per_core": per_core,
        "subscribers_held": subscribers,
        "memory_per_forwarded_stream_kib": mem_per_stream,
    });
    write_results("sfu", &body, &json);
}
