//! Several nodes as one service (issue: beyond one machine): kick latency
//! and join latency through a node that does not hold the room (against
//! the room's own node), and placements per second. Three real nodes in
//! this process on a real `redis-server` on loopback. Prints a table,
//! writes `bench-results/cluster.json` and its section of `BENCHMARKS.md`.
//!
//! `cargo bench -p kaigi-tests --bench cluster` (`-- --quick`: fewer rounds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaigi_proto::RoomId;
use kaigi_sdk::Role;
use kaigi_server::cluster::{Cluster, ClusterConfig};
use kaigi_tests::bench::{kick_latencies, machine, stats, write_results, Stats};
use kaigi_tests::redis::RedisServer;
use kaigi_tests::{room, TestServer, APP};
use serde_json::json;

fn main() {
    kaigi_tests::bench::main(run);
}

async fn node(redis: &RedisServer, id: &str) -> TestServer {
    let (url, id) = (redis.url(), id.to_owned());
    TestServer::start_with(move |c| c.cluster = Some(ClusterConfig::new(&url, &id, ""))).await
}

fn cluster_of(s: &TestServer) -> Arc<Cluster> {
    s.handle()
        .shared()
        .cluster
        .get()
        .expect("in a service")
        .clone()
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

async fn run(quick: bool) {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis, "node-a").await,
        node(&redis, "node-b").await,
        node(&redis, "node-c").await,
    ];
    let first = cluster_of(&nodes[0]);
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
        .find(|n| cluster_of(n).node_id() == owner)
        .unwrap();
    let other = nodes
        .iter()
        .find(|n| cluster_of(n).node_id() != owner)
        .unwrap();
    let kick_other = kick_latencies(own, other, 1, n).await;
    let kick_own = kick_latencies(own, own, 1, n).await;
    let join_other = joins(other, 1, n).await;
    let join_own = joins(own, 1, n).await;
    let placed = placements(&first, if quick { 1 } else { 5 }).await;
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
    println!("{table}placements: {placed:.0}/s");
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
         {table}\n| placements | {placed:.0} per second | — |\n"
    );
    write_results(
        "cluster",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu,
                "kick_other_p50_ms": kick_other.p50, "kick_other_p99_ms": kick_other.p99,
                "kick_own_p50_ms": kick_own.p50, "kick_own_p99_ms": kick_own.p99,
                "join_other_p50_ms": join_other.p50, "join_other_p99_ms": join_other.p99,
                "join_own_p50_ms": join_own.p50, "join_own_p99_ms": join_own.p99,
                "placements_per_s": placed}),
    );
}
