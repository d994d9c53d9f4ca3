//! Signaling benchmarks: join, leave and kick latency, dismissal of a
//! 1000-user room, and server memory per idle client. Prints a table, writes
//! `bench-results/signaling.json`, and updates its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench signaling` (add `-- --quick` for a
//! short run).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kaigi_sdk::{ClientEvent, Role};
use kaigi_tests::bench::{kick_latencies, machine, stats, write_results, ChildServer, Stats};
use kaigi_tests::{raw_join, room, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    kaigi_tests::bench::main(run);
}

async fn join_leave(server: &TestServer, n: usize) -> (Stats, Stats) {
    let mut joins = Vec::with_capacity(n);
    let mut leaves = Vec::with_capacity(n);
    // A few others in the room, so a join also announces itself.
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(server.joined(&format!("other{i}"), &room(1)).await);
    }
    for i in 0..n {
        let (c, _) = server.client(&format!("joiner{i}"));
        let t = Instant::now();
        c.join(room(1), Role::Anchor).await.unwrap();
        joins.push(t.elapsed());
        let t = Instant::now();
        c.leave().await.unwrap();
        leaves.push(t.elapsed());
    }
    (stats(joins), stats(leaves))
}

async fn dismiss(server: &TestServer, users: usize, rounds: usize) -> Stats {
    let http = reqwest::Client::new();
    let mut v = Vec::new();
    for round in 0..rounds {
        let r = 100 + round as u64;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (settled_tx, mut settled_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::with_capacity(users);
        for chunk in (0..users).collect::<Vec<_>>().chunks(100) {
            let joined = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|i| server.joined_owned(format!("d{i}"), room(r))),
            )
            .await;
            for (c, mut events) in joined {
                let c = std::sync::Arc::new(c);
                let (tx, settled_tx, client) = (tx.clone(), settled_tx.clone(), c.clone());
                tokio::spawn(async move {
                    // Settled once this client knows every other user, so the
                    // join storm's peer-join backlog is not part of the figure.
                    let mut settled = false;
                    loop {
                        if !settled && client.remote_user_count() == users - 1 {
                            settled = true;
                            let _ = settled_tx.send(());
                        }
                        match events.recv().await {
                            Some(ClientEvent::ClientBanned { .. }) => {
                                let _ = tx.send(Instant::now());
                                return;
                            }
                            Some(_) => {}
                            None => return,
                        }
                    }
                });
                clients.push(c);
            }
        }
        for _ in 0..users {
            settled_rx.recv().await.unwrap();
        }
        v.push(time_dismiss(server, &http, r, users, &mut rx).await);
        drop(clients);
    }
    stats(v)
}

/// Dismissal seen by lightweight WebSocket clients: the server's own time
/// to notify everyone, without 1000 SDK clients' bookkeeping competing for
/// the same two cores.
async fn dismiss_raw(server: &TestServer, users: usize, rounds: usize) -> Stats {
    let http = reqwest::Client::new();
    let mut v = Vec::new();
    for round in 0..rounds {
        let r = 500 + round as u64;
        let (banned_tx, mut banned_rx) = tokio::sync::mpsc::unbounded_channel();
        let (settled_tx, mut settled_rx) = tokio::sync::mpsc::unbounded_channel();
        for chunk in (0..users).collect::<Vec<_>>().chunks(100) {
            let conns = futures_util::future::join_all(chunk.iter().map(|i| async move {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
                        .await
                        .unwrap();
                ws.send(Message::text(raw_join(1, &format!("r{i}"), r).to_string()))
                    .await
                    .unwrap();
                ws
            }))
            .await;
            for mut ws in conns {
                let (banned_tx, settled_tx) = (banned_tx.clone(), settled_tx.clone());
                tokio::spawn(async move {
                    let mut known = 0usize;
                    while let Some(Ok(m)) = ws.next().await {
                        let Message::Text(t) = m else { continue };
                        if t.contains("\"client-banned\"") {
                            let _ = banned_tx.send(Instant::now());
                            return;
                        }
                        if t.contains("\"joined\"") {
                            known += serde_json::from_str::<Value>(&t).unwrap()["users"]
                                .as_array()
                                .unwrap()
                                .len();
                        } else if t.contains("\"peer-join\"") {
                            known += 1;
                        }
                        if known == users - 1 {
                            let _ = settled_tx.send(());
                        }
                    }
                });
            }
        }
        for _ in 0..users {
            settled_rx.recv().await.unwrap();
        }
        v.push(time_dismiss(server, &http, r, users, &mut banned_rx).await);
    }
    stats(v)
}

/// An admin API URL with a fresh administrator UserSig.
fn admin_url(server: &TestServer, action: &str) -> String {
    let sig = kaigi_proto::usersig::generate(
        kaigi_tests::APP,
        kaigi_tests::KEY,
        "administrator",
        3600,
        kaigi_tests::now(),
    );
    format!(
        "http://{}/api/{action}?sdkappid={}&identifier=administrator&usersig={sig}&random=1&contenttype=json",
        server.addr,
        kaigi_tests::APP.0
    )
}

/// Dismisses room `r` and returns the time until `users` receivers have
/// reported their ban on `banned`.
async fn time_dismiss(
    server: &TestServer,
    http: &reqwest::Client,
    r: u64,
    users: usize,
    banned: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> Duration {
    let url = admin_url(server, "DismissRoom");
    let t = Instant::now();
    let resp = http
        .post(&url)
        .body(json!({"SdkAppId": kaigi_tests::APP.0, "RoomId": r}).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.json::<Value>().await.unwrap()["Response"]["Error"].is_null());
    let mut last = t;
    for _ in 0..users {
        last = last.max(banned.recv().await.unwrap());
    }
    last - t
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn memory_per_idle_client(n: usize) -> f64 {
    let server = ChildServer::start_with(&[(kaigi_tests::bench::PER_IP_ENV, "0".to_owned())]);
    let pid = server.child.id();
    let url = format!("ws://{}/ws", server.addr);
    let connect = |i: usize| {
        let url = url.clone();
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text(
                raw_join(1, &format!("idle{i}"), 1 + (i / 10) as u64).to_string(),
            ))
            .await
            .unwrap();
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    if t.contains("\"joined\"") {
                        break;
                    }
                }
            }
            ws
        }
    };
    // Warm up allocator arenas and runtime threads before the baseline.
    let mut warm = Vec::new();
    for i in 0..50 {
        warm.push(connect(1_000_000 + i).await);
    }
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        conns.extend(futures_util::future::join_all(chunk.iter().map(|i| connect(*i))).await);
    }
    let after = rss_kib(pid);
    drop(conns);
    drop(warm);
    server.stop();
    (after.saturating_sub(before)) as f64 / n as f64
}

struct Row {
    name: &'static str,
    figure: String,
    goal: &'static str,
    met: bool,
}

async fn run(quick: bool) {
    let (n_join, n_kick, dismiss_rounds, idle) = if quick {
        (100, 200, 2, 500)
    } else {
        (500, 1000, 5, 2000)
    };
    // The server runs in its own process, as deployed; the clients here,
    // all on 127.0.0.1: no cap per address.
    let child = ChildServer::start_with(&[
        (kaigi_tests::bench::PER_IP_ENV, "0".to_owned()),
        (kaigi_tests::bench::ADMIN_UNLIMITED_ENV, "1".to_owned()),
    ]);
    let server = TestServer::remote(child.addr);
    eprintln!("join/leave ×{n_join} …");
    let (join, leave) = join_leave(&server, n_join).await;
    eprintln!("kicks ×{n_kick} …");
    let kick = kick_latencies(&server, &server, 2, n_kick).await;
    eprintln!("dismiss of 1000 ×{dismiss_rounds} …");
    let dis = dismiss_raw(&server, 1000, dismiss_rounds).await;
    let dis_sdk = dismiss(&server, 1000, dismiss_rounds).await;
    eprintln!("memory with {idle} idle clients …");
    let mem = memory_per_idle_client(idle).await;

    let rows = vec![
        Row {
            name: "join latency (connect + join), p50",
            figure: format!("{:.2} ms (p99 {:.2} ms, n={})", join.p50, join.p99, join.n),
            goal: "≤ 5 ms",
            met: join.p50 <= 5.0,
        },
        Row {
            name: "leave latency (until confirmed), p50",
            figure: format!(
                "{:.2} ms (p99 {:.2} ms, n={})",
                leave.p50, leave.p99, leave.n
            ),
            goal: "—",
            met: true,
        },
        Row {
            name: "kick latency (RemoveUser sent → client-banned), p99",
            figure: format!(
                "{:.2} ms (p50 {:.2} ms, max {:.2} ms, n={})",
                kick.p99, kick.p50, kick.max, kick.n
            ),
            goal: "≤ 2 ms",
            met: kick.p99 <= 2.0,
        },
        Row {
            name: "DismissRoom of 1000 users, until all notified (median of rounds)",
            figure: format!(
                "{:.2} ms (worst {:.2} ms, rounds={})",
                dis.p50, dis.max, dis.n
            ),
            goal: "≤ 50 ms",
            met: dis.p50 <= 50.0,
        },
        Row {
            name: "the same, 1000 kaigi-sdk Clients in one process as receivers",
            figure: format!(
                "{:.2} ms (worst {:.2} ms, rounds={})",
                dis_sdk.p50, dis_sdk.max, dis_sdk.n
            ),
            goal: "—",
            met: true,
        },
        Row {
            name: "server memory per idle connected client",
            figure: format!("{:.1} KiB ({idle} clients)", mem),
            goal: "≤ 64 KiB",
            met: mem <= 64.0,
        },
    ];

    let (date, cores, cpu) = machine();

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| benchmark | result | goal | met |\n|---|---|---|---|"
    );
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} |",
            r.name,
            r.figure,
            r.goal,
            if r.met { "yes" } else { "**no**" }
        );
    }
    println!("\n{table}");

    let json = json!({
        "date": date, "cpu": cpu, "cores": cores, "quick": quick,
        "join_ms": {"p50": join.p50, "p99": join.p99, "n": join.n},
        "leave_ms": {"p50": leave.p50, "p99": leave.p99, "n": leave.n},
        "kick_ms": {"p50": kick.p50, "p99": kick.p99, "max": kick.max, "n": kick.n},
        "dismiss_1000_ms": {"median": dis.p50, "worst": dis.max, "rounds": dis.n},
        "dismiss_1000_sdk_clients_ms": {"median": dis_sdk.p50, "worst": dis_sdk.max, "rounds": dis_sdk.n},
        "idle_client_kib": mem, "idle_clients": idle,
    });
    let body = format!(
        "## Signaling (issue: rooms and forced exits)\n\nMeasured {date} on {cores} cores ({cpu}), release build, server (its own process) and clients on 127.0.0.1{}. \
         Produced by `cargo bench -p kaigi-tests --bench signaling`; raw figures in `bench-results/signaling.json`.\n\n{table}",
        if quick { " (quick run)" } else { "" }
    );
    write_results("signaling", &body, &json);
    drop(server);
    child.stop();
}
