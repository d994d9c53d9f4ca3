//! Reliability: faults and load against the real server in its own
//! process — `kill -9` and restart mid-call, a killed client, a client
//! that stops reading, a churn soak, thousands of idle WebSockets, random
//! bytes at the media ports, and junk at the admin API. Prints a table,
//! writes `bench-results/reliability.json`, and updates its section of
//! `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench reliability` (add `-- --quick` for a
//! short run).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaigi_proto::signal::PeerLeaveReason;
use kaigi_sdk::{ClientEvent, ConnectionState};
use kaigi_tests::bench::{
    machine, write_results, ChildServer, FAST_ENV, HEARTBEAT_ENV, LISTEN_ENV,
};
use kaigi_tests::*;

use serde_json::{json, Value};

#[path = "reliability/abuse.rs"]
mod abuse;

use abuse::{admin_junk, idle_websockets, junk_at_media_ports};

const CLIENT_ENV: &str = "KAIGI_BENCH_CLIENT";

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        client_child(&spec);
        return;
    }
    kaigi_server::listener::raise_fd_limit();
    kaigi_tests::bench::main(run);
}

/// In a client child process: join `room` as `user` at `addr`, say so, and
/// stay until killed.
fn client_child(spec: &str) {
    let mut parts = spec.split(' ');
    let (addr, user, r) = (
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse().unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = TestServer::remote(addr);
        let (_c, _e) = server.joined(&user, &room(r)).await;
        println!("joined");
        std::future::pending::<()>().await;
    });
}

/// What a process holds: resident memory (KiB), fds, threads, UDP sockets.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Holdings {
    rss_kib: u64,
    fds: usize,
    threads: usize,
    udp: usize,
}

fn holdings(pid: u32) -> Holdings {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut udp_inodes = HashSet::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                udp_inodes.insert(inode.to_owned());
            }
        }
    }
    let mut fds = 0;
    let mut udp = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        fds += 1;
        if let Ok(t) = std::fs::read_link(fd.path()) {
            let t = t.to_string_lossy().to_string();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if udp_inodes.contains(i) {
                    udp += 1;
                }
            }
        }
    }
    Holdings {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:") as usize,
        udp,
    }
}

/// The local UDP ports a process has open.
fn udp_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashMap::new();
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(local), Some(inode)) = (f.get(1), f.get(9)) {
            if let Some(port) = local
                .split_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                inodes.insert(inode.to_string(), port);
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let t = std::fs::read_link(fd.path()).ok()?;
            let t = t.to_string_lossy().to_string();
            let i = t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
            inodes.get(&i).copied()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Polls `f` (a state, not an event) until it holds or `limit` passes.
async fn until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A free loopback port for a server that restarts on the same address.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn restart(clients: usize, publishers: usize) -> Value {
    let addr = free_addr();
    let settings = [(LISTEN_ENV, addr.to_string()), (HEARTBEAT_ENV, "20".into())];
    let mut child = ChildServer::start_with(&settings);
    let server = TestServer::remote(child.addr);
    let r = room(1);
    let mut joined = Vec::new();
    for i in 0..clients {
        joined.push(server.joined(&format!("u{i}"), &r).await);
    }
    let mut streams = Vec::new();
    for (c, _) in joined.iter().take(publishers) {
        streams.push(publish_pattern(c).await);
    }
    let (banned, mut banned_events) = server.joined("banned", &r).await;
    server.remove_users(&room(1), &["banned"]).await;
    expect_event(&mut banned_events, "client-banned").await;
    for (i, (c, _)) in joined.iter().enumerate() {
        for p in (0..publishers).filter(|p| *p != i) {
            frames_arrive(c, &format!("u{p}"), 3).await;
        }
    }

    child.child.kill().expect("kill -9");
    let _ = child.child.wait();
    let restarted = Instant::now();
    let child = ChildServer::start_with(&settings);
    let server = TestServer::remote(child.addr);
    let all_back = until(Duration::from_secs(30), async || {
        joined
            .iter()
            .all(|(c, _)| c.connection_state() == ConnectionState::Connected)
            && server.users_in(&r).await.map(|u| u.len()) == Some(clients)
    })
    .await;
    let back = restarted.elapsed();
    for (i, (c, _)) in joined.iter().enumerate() {
        for p in (0..publishers).filter(|p| *p != i) {
            frames_arrive(c, &format!("u{p}"), 3).await;
        }
    }
    let media = restarted.elapsed();
    let users = server.users_in(&r).await.unwrap_or_default();
    let banned_out = !users.iter().any(|u| u == "banned")
        && banned.connection_state() != ConnectionState::Connected;
    drop((joined, streams, banned));
    child.stop();
    json!({"clients": clients, "publishers": publishers, "all_back": all_back,
           "back_ms": ms(back), "media_ms": ms(media), "banned_stay_out": banned_out})
}

async fn killed_client(runs: usize) -> Value {
    let child = ChildServer::start_with(&[(HEARTBEAT_ENV, "20".into())]);
    let server = TestServer::remote(child.addr);
    let (_observer, mut events) = server.joined("observer", &room(2)).await;
    let mut times = Vec::new();
    for i in 0..runs {
        let user = format!("victim{i}");
        let mut victim = Command::new(std::env::current_exe().unwrap())
            .env(CLIENT_ENV, format!("{} {user} 2", child.addr))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(victim.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "joined");
        wait_for(
            &mut events,
            "peer-join",
            |e| matches!(e, ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == user),
        )
        .await;
        let t = Instant::now();
        victim.kill().unwrap();
        let _ = victim.wait();
        wait_for(
            &mut events,
            "peer-leave",
            |e| matches!(e, ClientEvent::PeerLeave { user_id, .. } if user_id.as_str() == user),
        )
        .await;
        times.push(ms(t.elapsed()));
    }
    child.stop();
    let max = times.iter().cloned().fold(0.0, f64::max);
    json!({"runs": runs, "peer_leave_ms": times, "max_ms": max, "heartbeat_timeout_ms": 20_000})
}

async fn stuck_reader(runs: usize) -> Value {
    let child = ChildServer::start_with(&[(FAST_ENV, "1".into()), (HEARTBEAT_ENV, "30".into())]);
    let server = TestServer::remote(child.addr);
    let (_watcher, mut events) = server.joined("watcher", &room(3)).await;
    let mut times = Vec::new();
    let mut reasons = Vec::new();
    for run in 0..runs {
        let user = format!("stuck{run}");
        let mut stuck = tiny_window_ws(child.addr).await;
        raw_send(&mut stuck, raw_join(1, &user, 3)).await;
        assert_eq!(raw_recv(&mut stuck).await.unwrap()["type"], "joined");
        let churn = Churn::start(server.raw().await, 3);
        let t = Instant::now();
        let (left, _) = wait_for(
            &mut events,
            "peer-leave of the stuck client",
            |e| matches!(e, ClientEvent::PeerLeave { user_id, .. } if user_id.as_str() == user),
        )
        .await;
        times.push(ms(t.elapsed()));
        if let ClientEvent::PeerLeave { reason, .. } = left {
            reasons.push(match reason {
                PeerLeaveReason::Timeout => "timeout",
                _ => "too slow (left)",
            });
        }
        churn.stop().await;
        drop(stuck);
    }
    child.stop();
    json!({"runs": runs, "dropped_after_ms": times, "reasons": reasons})
}

async fn join_leave_cycles(server: &TestServer, cycles: usize, lanes: usize) {
    let per_lane = cycles / lanes;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let mut ws = server.raw().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_lane as u64 {
                raw_send(
                    &mut ws,
                    raw_join(i * 2, &format!("churn{lane}"), 10 + lane as u64),
                )
                .await;
                raw_reply(&mut ws, "joined").await;
                raw_send(&mut ws, json!({"type": "leave", "reqId": i * 2 + 1})).await;
                raw_reply(&mut ws, "left").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn publish_cycles(server: &TestServer, cycles: usize) {
    let r = room(9);
    let (_watcher, _) = server.joined("watcher", &r).await;
    let (cycler, _) = server.joined("cycler", &r).await;
    let stream = kaigi_sdk::LocalStream::synthetic(
        cycler.user_id(),
        kaigi_sdk::SyntheticSource {
            video: Some((320, 112)),
            fps: 10,
            video_bitrate_bps: 100_000,
            simulcast: true,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..cycles {
        within("publish", cycler.publish(&stream)).await.unwrap();
        within("unpublish", cycler.unpublish()).await.unwrap();
    }
    within("leave", cycler.leave()).await.unwrap();
}

async fn soak(cycles: usize, publishes: usize) -> Value {
    let child = ChildServer::start_with(&[(FAST_ENV, "1".into())]);
    let pid = child.child.id();
    let server = TestServer::remote(child.addr);
    // Warm up: allocator arenas, runtime threads, the codec tables.
    // Publish cycles replace the watcher's and the cycler's connections
    // every few cycles: warm up over several replacements.
    join_leave_cycles(&server, 500, 10).await;
    publish_cycles(&server, 50).await;
    let settle = async |base: Option<Holdings>| {
        // Sessions end a moment after their clients; wait for the counts.
        let mut h = holdings(pid);
        until(Duration::from_secs(5), async || {
            h = holdings(pid);
            base.is_none_or(|b| h.fds <= b.fds && h.udp <= b.udp && h.threads <= b.threads)
        })
        .await;
        h
    };
    let base = settle(None).await;
    let t = Instant::now();
    // RSS after each quarter of the join/leave cycles, then of the publish
    // cycles: a leak climbs on, a warmed allocator levels.
    let mut rss_steps = Vec::new();
    for _ in 0..4 {
        join_leave_cycles(&server, cycles / 4, 10).await;
        rss_steps.push(holdings(pid).rss_kib);
    }
    let churn_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..4 {
        publish_cycles(&server, publishes / 4).await;
        rss_steps.push(holdings(pid).rss_kib);
    }
    let publish_s = t.elapsed().as_secs_f64();
    let after = settle(Some(base)).await;
    child.stop();
    let growth = (after.rss_kib as f64 - base.rss_kib as f64) / base.rss_kib as f64 * 100.0;
    json!({"join_leave_cycles": cycles, "publish_cycles": publishes,
           "churn_s": (churn_s * 10.0).round() / 10.0, "publish_s": (publish_s * 10.0).round() / 10.0,
           "before": {"rss_kib": base.rss_kib, "fds": base.fds, "threads": base.threads, "udp": base.udp},
           "after": {"rss_kib": after.rss_kib, "fds": after.fds, "threads": after.threads, "udp": after.udp},
           "rss_after_quarters_kib": rss_steps, "rss_growth_pct": (growth * 10.0).round() / 10.0})
}

/// A JSON array as `a, b, c` (strings without quotes), for the table.
fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| v.to_string())
}

async fn run(quick: bool) {
    let (date, cores, cpu) = machine();
    println!(
        "reliability, {date}, {cores} cores, {cpu}{}",
        if quick { ", quick" } else { "" }
    );
    let restart = restart(10, 3).await;
    println!("restart: {restart}");
    let killed = killed_client(if quick { 2 } else { 5 }).await;
    println!("killed client: {killed}");
    let stuck = stuck_reader(if quick { 1 } else { 3 }).await;
    println!("stuck reader: {stuck}");
    let soak = if quick {
        soak(1_000, 20).await
    } else {
        soak(10_000, 200).await
    };
    println!("soak: {soak}");
    let idle = idle_websockets(if quick { 500 } else { 5_000 }, 100).await;
    println!("idle: {idle}");
    let junk = junk_at_media_ports(if quick { 100_000 } else { 1_000_000 }).await;
    println!("junk datagrams: {junk}");
    let admin = admin_junk().await;
    println!("admin junk: {admin}");

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Reliability (issue: hardening)\n\nMeasured {date} on {cores} cores ({cpu}), release build; the server in its own process (kill -9 is a real SIGKILL), clients in the benchmark's process on 127.0.0.1{}. `cargo bench -p kaigi-tests --bench reliability`.\n",
        if quick { ", quick run" } else { "" }
    );
    let _ = writeln!(md, "| fault or load | result | goal |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| server `kill -9` mid-call, restart on the same port ({} clients, {} publishing, 1 removed before) | all back in the room in {} ms, every subscriber decoding every publisher again {} ms after the restart; removed one stayed out: {} | all back, nothing lost, banned stay out |",
        restart["clients"], restart["publishers"], restart["back_ms"], restart["media_ms"], restart["banned_stay_out"]
    );
    let _ = writeln!(
        md,
        "| client process `kill -9` ({} runs) | `peer-leave` after {} ms (max {} ms) | well under the 20,000 ms heartbeat timeout |",
        killed["runs"], list(&killed["peer_leave_ms"]), killed["max_ms"]
    );
    let _ = writeln!(
        md,
        "| a client that stops reading while the room churns ({} runs) | dropped after {} ms ({}) | dropped, no ghost |",
        stuck["runs"], list(&stuck["dropped_after_ms"]), list(&stuck["reasons"])
    );
    let _ = writeln!(
        md,
        "| churn soak: {} join/leave cycles ({} s) and {} publish/unpublish cycles ({} s) | RSS {} → {} KiB ({:+} %; after each quarter of each kind: {} KiB); fds {} → {}; threads {} → {}; UDP sockets {} → {} | RSS within 5 %, counts back to baseline |",
        soak["join_leave_cycles"], soak["churn_s"], soak["publish_cycles"], soak["publish_s"],
        soak["before"]["rss_kib"], soak["after"]["rss_kib"], soak["rss_growth_pct"], list(&soak["rss_after_quarters_kib"]),
        soak["before"]["fds"], soak["after"]["fds"], soak["before"]["threads"], soak["after"]["threads"],
        soak["before"]["udp"], soak["after"]["udp"]
    );
    let _ = writeln!(
        md,
        "| {} idle joined WebSockets, one address (per-IP cap off) | all held; {} bytes of server memory each; {} never-joining connections closed {}–{} ms after opening (codes {}) | held; never-joining ones closed at the 10 s join deadline |",
        idle["connections"], idle["bytes_per_connection"], idle["never_join"],
        idle["never_join_closed_first_ms"], idle["never_join_closed_last_ms"], list(&idle["never_join_close_codes"])
    );
    let _ = writeln!(
        md,
        "| {} random and RTP-shaped datagrams at the server's {} media ports in {} s, during a call | video kept at {} fps; {} dropped before WebRTC; RSS {} → {} KiB | media flows, memory bounded |",
        junk["datagrams"], junk["ports"], junk["spray_s"], junk["video_fps_during"], junk["dropped_by_gate"],
        junk["rss_before_kib"], junk["rss_after_kib"]
    );
    let outcomes: Vec<String> = admin["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}: {} ({} ms)",
                r["request"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
                r["ms"]
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "| admin API junk | {}; serving after: {}; room unchanged: {}; RSS {} → {} KiB | refused, nothing changed, serving |",
        outcomes.join("; "), admin["serving_after"], admin["room_intact"], admin["rss_before_kib"], admin["rss_after_kib"]
    );
    print!("{md}");
    write_results(
        "reliability",
        &md,
        &json!({"date": date, "cores": cores, "cpu": cpu, "quick": quick, "restart": restart,
                "killed_client": killed, "stuck_reader": stuck, "soak": soak, "idle": idle,
                "junk_datagrams": junk, "admin_junk": admin}),
    );
}
