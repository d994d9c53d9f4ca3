//! Several nodes as one service (issue: beyond one machine): kick latency
//! and join latency through a node that does not hold the room (against
//! the room's own node), and placements per second (three real nodes in
//! this process on a real `redis-server` on loopback); then capacity: the
//! same calls (rooms of one publisher and several subscribers) carried by
//! one node, then by three (each its own process), with the server CPU
//! per forwarded packet and how the rooms spread. Prints tables, writes
//! `bench-results/cluster.json` and its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench cluster` (`-- --quick`: fewer rounds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaigi_proto::RoomId;
use kaigi_sdk::{Client, ClientEvent, LocalStream, Role, SyntheticSource};
use kaigi_server::cluster::{Cluster, ClusterConfig};
use kaigi_tests::bench::{
    kick_latencies, machine, proc_stats, stats, write_results, ChildServer, Stats, NODE_ENV,
    PER_IP_ENV, REDIS_ENV,
};
use kaigi_tests::redis::RedisServer;
use kaigi_tests::{room, TestServer, APP};
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

async fn node(redis: &RedisServer, id: &str) -> TestServer {
    let (url, id) = (redis.url(), id.to_owned());
    TestServer::start_with(move |c| {
        c.cluster = Some(ClusterConfig::new(&url, &id, ""));
        // Kicks back to back, for latency: not TRTC's 20 a second.
        c.admin_rate_limit = kaigi_server::RateLimit {
            per_sec: 1_000_000,
            burst: 1_000_000,
        };
    })
    .await
}

/// A client's whole join through `via` (redirects included).
async fn joins(via: &TestServer, r: u64, n: usize) -> Stats {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let (c, _) = via.client(&format!("j{i}"));
        let t = Instant::now();
        c.join(room(r), Role::Anchor).await.unwrap();
        v.push(t.elapsed());
        c.leave().await.unwrap();
    }
    stats(v)
}

/// Rooms placed per second by `c`, 16 at a time, for `secs`.
async fn placements(c: &Arc<Cluster>, secs: u64) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    let mut next = 0u64;
    while t.elapsed() < Duration::from_secs(secs) {
        let batch: Vec<_> = (0..16)
            .map(|i| {
                let c = c.clone();
                let room = RoomId::str(format!("placed-{}", next + i)).unwrap();
                async move { c.place(APP, &room).await }
            })
            .collect();
        next += 16;
        for r in futures_util::future::join_all(batch).await {
            r.expect("placed");
            n += 1;
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// One run of the capacity workload.
struct Carried {
    /// Rooms and participants per node, as each node's `/healthz` says.
    spread: Vec<(u64, u64)>,
    pps: f64,
    loss: f64,
    server_cores: f64,
    rss_kib: u64,
}

/// Until `n` streams are subscribed to (at most 20 s).
async fn subscribed(events: &mut kaigi_sdk::EventStream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = 0;
    while got < n && Instant::now() < deadline {
        if let Ok(Some(ClientEvent::StreamSubscribed { .. })) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            got += 1;
        }
    }
}

/// `rooms` rooms of one publisher (640×360, 30 fps, simulcast, and Opus)
/// and `subs` subscribers each, every client entering through the next
/// node of `servers` in turn; packets counted at the subscribers, CPU and
/// memory of every server process, over `secs`.
async fn carry(servers: &[(TestServer, u32)], rooms: u64, subs: usize, secs: u64) -> Carried {
    let mut next = 0usize;
    let mut via = || {
        next += 1;
        &servers[(next - 1) % servers.len()].0
    };
    let mut pubs = Vec::new();
    let mut clients: Vec<Client> = Vec::new();
    for r in 0..rooms {
        let (c, _) = via().joined(&format!("pub{r}"), &room(900 + r)).await;
        let s = LocalStream::synthetic(
            c.user_id(),
            SyntheticSource {
                video: Some((640, 360)),
                fps: 30,
                tone_hz: Some(440.0),
                video_bitrate_bps: 800_000,
                simulcast: true,
            },
        )
        .unwrap();
        c.publish(&s).await.unwrap();
        pubs.push((c, s));
    }
    for r in 0..rooms {
        for i in 0..subs {
            let mut o = via().options(&format!("sub{r}-{i}"));
            o.decode = false;
            let c = Client::new(o).unwrap();
            let mut events = c.events();
            c.join(room(900 + r), Role::Audience).await.unwrap();
            subscribed(&mut events, 1).await;
            clients.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let totals = |clients: &[Client]| {
        clients
            .iter()
            .flat_map(|c| c.remote_streams())
            .fold((0u64, 0u64), |(r, l), s| {
                (r + s.packets_received(), l + s.packets_lost())
            })
    };
    let cpu = || {
        servers
            .iter()
            .map(|(_, pid)| proc_stats(*pid).0)
            .sum::<f64>()
    };
    let (r0, l0) = totals(&clients);
    let cpu0 = cpu();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (r1, l1) = totals(&clients);
    let cpu1 = cpu();
    let elapsed = t.elapsed().as_secs_f64();
    let rss_kib = servers.iter().map(|(_, pid)| proc_stats(*pid).1).sum();
    let mut spread = Vec::new();
    for (s, _) in servers {
        let text = reqwest::get(format!(
            "{}/metrics",
            s.url().replacen("ws://", "http://", 1)
        ))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        spread.push((gauge("kaigi_rooms"), gauge("kaigi_participants")));
    }
    for c in &clients {
        let _ = c.leave().await;
    }
    for (c, s) in &pubs {
        let _ = c.leave().await;
        s.close();
    }
    let (got, lost) = (r1 - r0, l1.saturating_sub(l0));
    Carried {
        spread,
        pps: got as f64 / elapsed,
        loss: lost as f64 / (got + lost).max(1) as f64,
        server_cores: (cpu1 - cpu0) / elapsed,
        rss_kib,
    }
}

/// Rooms in the capacity run.
const CAP_ROOMS: u64 = 6;
/// Subscribers per room in the capacity run.
const CAP_SUBS: usize = 12;

/// Capacity of one node against three: the same calls on each.
async fn capacity(quick: bool) -> (Carried, Carried) {
    let (rooms, subs, secs) = if quick {
        (3, 2, 3)
    } else {
        (CAP_ROOMS, CAP_SUBS, 10)
    };
    let per_ip = (PER_IP_ENV, "0".to_owned());
    let one = ChildServer::start_with(std::slice::from_ref(&per_ip));
    let single = [(TestServer::remote(one.addr), one.child.id())];
    let alone = carry(&single, rooms, subs, secs).await;
    one.stop();
    let redis = RedisServer::start();
    let children: Vec<ChildServer> = ["cap-a", "cap-b", "cap-c"]
        .iter()
        .map(|id| {
            ChildServer::start_with(&[
                per_ip.clone(),
                (REDIS_ENV, redis.url()),
                (NODE_ENV, (*id).to_owned()),
            ])
        })
        .collect();
    let three: Vec<(TestServer, u32)> = children
        .iter()
        .map(|c| (TestServer::remote(c.addr), c.child.id()))
        .collect();
    // Every node in the service before the first room is placed.
    kaigi_tests::within("three nodes in the service", async {
        loop {
            let mut n = 0;
            for (s, _) in &three {
                let ok = reqwest::get(format!(
                    "{}/healthz",
                    s.url().replacen("ws://", "http://", 1)
                ))
                .await
                .is_ok_and(|r| r.status().is_success());
                n += usize::from(ok);
            }
            if n == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let together = carry(&three, rooms, subs, secs).await;
    for c in children {
        c.stop();
    }
    (alone, together)
}

async fn run(quick: bool) {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis, "node-a").await,
        node(&redis, "node-b").await,
        node(&redis, "node-c").await,
    ];
    let first = nodes[0].cluster();
    kaigi_tests::within("three nodes", async {
        while first.live_nodes().await.map(|l| l.len()).unwrap_or(0) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let n = if quick { 30 } else { 300 };
    // Room 1 is placed by its first join through node a; the bench then
    // reaches it through a node that does not hold it, and through its own.
    let (_first_user, _) = nodes[0].joined("first", &room(1)).await;
    let owner = first
        .owner_of(APP, &room(1))
        .await
        .unwrap()
        .unwrap()
        .node_id;
    let own = nodes
        .iter()
        .find(|n| n.cluster().node_id() == owner)
        .unwrap();
    let other = nodes
        .iter()
        .find(|n| n.cluster().node_id() != owner)
        .unwrap();
    let kick_other = kick_latencies(own, other, 1, n).await;
    let kick_own = kick_latencies(own, own, 1, n).await;
    let join_other = joins(other, 1, n).await;
    let join_own = joins(own, 1, n).await;
    let placed = placements(&first, if quick { 1 } else { 5 }).await;
    drop(nodes);
    let (alone, together) = capacity(quick).await;
    let cap_row = |what: &str, c: &Carried| {
        let spread: Vec<String> = c
            .spread
            .iter()
            .map(|(r, p)| format!("{r} rooms / {p} people"))
            .collect();
        format!(
            "| {what} | {} | {:.0} | {:.2} % | {:.2} | {:.1} µs | {:.1} MiB |\n",
            spread.join(", "),
            c.pps,
            c.loss * 100.0,
            c.server_cores,
            c.server_cores * 1e6 / c.pps.max(1.0),
            c.rss_kib as f64 / 1024.0
        )
    };
    let cap_table = format!(
        "| service | rooms and people per node | forwarded packets/s | loss | server CPU (cores, all nodes) | server CPU per forwarded packet | server RSS (all nodes) |\n\
         |---|---|---|---|---|---|---|\n{}{}",
        cap_row("one node", &alone),
        cap_row("three nodes", &together)
    );
    let busiest = together.spread.iter().map(|(_, p)| *p).max().unwrap_or(0);
    let all: u64 = together.spread.iter().map(|(_, p)| *p).sum();
    let share = busiest as f64 / all.max(1) as f64;
    let cost = |c: &Carried| c.server_cores / c.pps.max(1.0);
    // Three nodes on three machines carry what one carries, times three,
    // times how evenly the rooms spread (the busiest node fills first),
    // times how much dearer a packet is in the service.
    let factor = (1.0 / share.max(1.0 / 3.0)) * cost(&alone) / cost(&together).max(1e-12);
    let row = |what: &str, s: &Stats, goal: &str| {
        format!(
            "| {what} | {:.2} | {:.2} | {:.2} | {} | {goal} |\n",
            s.p50, s.p99, s.max, s.n
        )
    };
    let met = if kick_other.p99 <= 5.0 {
        "met"
    } else {
        "missed"
    };
    let table = format!(
        "| what | p50 ms | p99 ms | max ms | n | goal |\n|---|---|---|---|---|---|\n{}{}{}{}",
        row(
            "kick through a node without the room",
            &kick_other,
            &format!("p99 ≤ 5 ms ({met})")
        ),
        row("kick through the room's node", &kick_own, "—"),
        row(
            "join through a node without the room (redirected)",
            &join_other,
            "—"
        ),
        row("join through the room's node", &join_own, "—"),
    );
    println!("{table}placements: {placed:.0}/s\n\n{cap_table}\nbusiest node {:.0} % of the people; three machines carry {factor:.2}× one", share * 100.0);
    if quick {
        return;
    }
    let (date, cores, cpu) = machine();
    let body = format!(
        "## Several nodes (issue: beyond one machine)\n\n\
         Measured {date} on {cores} cores ({cpu}), release build, with `cargo bench -p kaigi-tests --bench cluster`. \
         Three nodes in one process on loopback, on a `redis-server` (Debian's) on loopback. A kick is \
         `RemoveUser` sent over HTTP until the removed client (an SDK client on the room's node) has its \
         `client-banned`; through another node it travels as a request on Redis to the room's node. A join is \
         the SDK's `join` until it resolves; through another node it includes the `ROOM_ELSEWHERE` answer \
         and the second connection. Placements: rooms placed by one node, 16 at a time.\n\n\
         {table}\n| placements | {placed:.0} per second | — |\n\n\
         **Capacity, one node against three.** The same calls on one node, then on three nodes of one service \
         (each node its own process, like the one node): {} rooms, each of one publisher (640×360 at 30 fps in three \
         simulcast layers, and Opus) and {} audience subscribers that count packets without decoding; every client \
         enters through the next node in turn (so two in three are redirected), and the rooms are placed by the \
         service. All processes share this machine's {cores} cores, so the three nodes here cannot carry more than the one: what \
         the bench measures is what decides the capacity of three machines — how evenly the rooms spread, and what a \
         forwarded packet costs in the service against alone.\n\n{cap_table}\n\
         The busiest node carries {:.0} % of the people (an even spread: 33 %), and a packet costs {:.2}× as much CPU \
         in the service as alone, so three nodes on three such machines carry **{factor:.2}× one node's calls** \
         (one node: `## SFU capacity` above). A packet here costs more than in the SFU bench because each publisher \
         has only {} subscribers: taking in its three layers, and each connection's own upkeep, weigh more per \
         forwarded packet.\n\n\
         Placements per second halved (24,918 on 2026-11-23 before) when placement began counting the rooms \
         placed on each node since its last report (one more sorted set per node, written by each placement and \
         read with the node list): the price of spreading rooms opened in a burst, which had all gone to one node.\n",
        CAP_ROOMS,
        CAP_SUBS,
        share * 100.0,
        cost(&together) / cost(&alone).max(1e-12),
        CAP_SUBS
    );
    write_results(
        "cluster",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu,
        "kick_other_p50_ms": kick_other.p50, "kick_other_p99_ms": kick_other.p99,
        "kick_own_p50_ms": kick_own.p50, "kick_own_p99_ms": kick_own.p99,
        "join_other_p50_ms": join_other.p50, "join_other_p99_ms": join_other.p99,
        "join_own_p50_ms": join_own.p50, "join_own_p99_ms": join_own.p99,
        "placements_per_s": placed,
        "capacity": {
            "one_node": {"spread": alone.spread, "packets_per_s": alone.pps, "loss": alone.loss,
                         "server_cores": alone.server_cores, "server_rss_kib": alone.rss_kib},
            "three_nodes": {"spread": together.spread, "packets_per_s": together.pps, "loss": together.loss,
                            "server_cores": together.server_cores, "server_rss_kib": together.rss_kib},
            "busiest_share": share, "three_machines_factor": factor,
        }}),
    );
}
