//! Nodes of one service on a real Redis (`redis-server` started by the
//! test): they see each other with their load, a room is placed on the
//! least loaded one, racing placements agree on one owner, a node that
//! stops renewing loses its rooms to a later placement with a larger
//! token (and is told), and a Redis that restarts empty is ridden out
//! (the leases are written back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kaigi_proto::{RoomId, SdkAppId};
use kaigi_server::cluster::{Cluster, ClusterConfig, LoadFn, LostLease};
use kaigi_tests::redis::RedisServer;
use kaigi_tests::within;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const APP: SdkAppId = SdkAppId(1_400_000_001);

/// A node with a load it reports, running until its token is cancelled.
struct Node {
    cluster: Arc<Cluster>,
    lost: mpsc::UnboundedReceiver<LostLease>,
    participants: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Short leases, so that expiry is seen within a test.
fn config(redis: &RedisServer, id: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(&redis.url(), id, &format!("ws://192.0.2.1:7880/{id}/ws"));
    c.lease = Duration::from_millis(1200);
    c.heartbeat = Duration::from_millis(200);
    c
}

async fn node(redis: &RedisServer, id: &str) -> Node {
    let participants = Arc::new(AtomicU64::new(0));
    let p = participants.clone();
    let load: LoadFn = Arc::new(move || (p.load(Ordering::Relaxed), 0));
    let (cluster, lost) = Cluster::connect(config(redis, id), load)
        .await
        .expect("Redis is up");
    let stop = CancellationToken::new();
    let task = tokio::spawn(cluster.clone().run(stop.clone()));
    Node {
        cluster,
        lost,
        participants,
        stop,
        task,
    }
}

/// Waits (within the test deadline) until `check` holds, checking once a
/// heartbeat: what is waited for is Redis's state, which has no events.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        loop {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

async fn live_ids(c: &Cluster) -> Vec<String> {
    let mut ids: Vec<String> = c
        .live_nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_rooms_go_to_the_least_loaded() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let c = node(&redis, "node-c").await;
    a.participants.store(10, Ordering::Relaxed);
    c.participants.store(5, Ordering::Relaxed);
    until("all three alive, with their loads", || async {
        let live = a.cluster.live_nodes().await.unwrap_or_default();
        live.len() == 3
            && live
                .iter()
                .any(|n| n.node_id == "node-a" && n.participants == 10)
    })
    .await;
    let live = b.cluster.live_nodes().await.unwrap();
    let order: Vec<&str> = live.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(order, ["node-b", "node-c", "node-a"], "least loaded first");
    assert_eq!(live[0].advertise, "ws://192.0.2.1:7880/node-b/ws");
    // Placed from any node, a new room goes to the least loaded one, and
    // every node then sees that owner.
    let room = RoomId::num(7).unwrap();
    let owner = a.cluster.place(APP, &room).await.unwrap();
    assert_eq!(owner.node_id, "node-b");
    assert_eq!(c.cluster.place(APP, &room).await.unwrap(), owner);
    assert_eq!(
        b.cluster.owner_of(APP, &room).await.unwrap(),
        Some(owner.clone())
    );
    // The owner took the lease up (when it looked at the room): it renews
    // it beyond the lease time.
    b.cluster.place(APP, &room).await.unwrap();
    assert_eq!(b.cluster.owned().len(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.cluster.owner_of(APP, &room).await.unwrap(), Some(owner));
    // A node that leaves is gone for the others at once.
    c.stop.cancel();
    c.task.await.unwrap();
    assert_eq!(live_ids(&a.cluster).await, ["node-a", "node-b"]);
    // Released by its owner, a room is placed anew (with a larger token).
    b.cluster.release(APP, &room).await;
    assert_eq!(a.cluster.owner_of(APP, &room).await.unwrap(), None);
    let again = a.cluster.place(APP, &room).await.unwrap();
    assert!(again.token > 1, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_placements_agree_on_one_owner() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis, "node-a").await,
        node(&redis, "node-b").await,
        node(&redis, "node-c").await,
    ];
    until("all three alive", || async {
        live_ids(&nodes[0].cluster).await.len() == 3
    })
    .await;
    for r in 0..10u32 {
        let room = RoomId::str(format!("race-{r}")).unwrap();
        let mut tasks = Vec::new();
        for i in 0..30 {
            let c = nodes[i % 3].cluster.clone();
            let room = room.clone();
            tasks.push(tokio::spawn(async move { c.place(APP, &room).await }));
        }
        let mut owners = Vec::new();
        for t in tasks {
            owners.push(t.await.unwrap().expect("placed"));
        }
        assert!(
            owners.windows(2).all(|w| w[0] == w[1]),
            "room {r}: {owners:?}"
        );
    }
    // Each node holds exactly the leases of the rooms placed on it.
    let held: usize = nodes.iter().map(|n| n.cluster.owned().len()).sum();
    assert_eq!(held, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_renewing_loses_its_rooms_to_a_fenced_placement() {
    let redis = RedisServer::start();
    let mut a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    b.participants.store(100, Ordering::Relaxed);
    until("both alive, b loaded", || async {
        a.cluster
            .live_nodes()
            .await
            .unwrap_or_default()
            .iter()
            .any(|n| n.node_id == "node-b" && n.participants == 100)
    })
    .await;
    let room = RoomId::num(9).unwrap();
    let first = a.cluster.place(APP, &room).await.unwrap();
    assert_eq!(first.node_id, "node-a");
    // a hangs (no heartbeats, as a node killed with -9 or cut off): its
    // presence and its lease run out; the room is placed again, on b,
    // with a larger token.
    a.task.abort();
    until("a gone, its room free", || async {
        live_ids(&b.cluster).await == ["node-b"]
            && b.cluster.owner_of(APP, &room).await.ok() == Some(None)
    })
    .await;
    let second = b.cluster.place(APP, &room).await.unwrap();
    assert_eq!(second.node_id, "node-b");
    assert!(
        second.token > first.token,
        "fenced: {first:?} then {second:?}"
    );
    // a comes back (its heartbeats resume): its renewal finds another
    // owner, and it is told to let the room go; the new owner keeps it.
    let stop = CancellationToken::new();
    let _again = tokio::spawn(a.cluster.clone().run(stop.clone()));
    let lost = within("a told of its lost lease", a.lost.recv())
        .await
        .expect("the lost lease");
    assert_eq!((lost.room, lost.token), (room.clone(), first.token));
    assert!(a.cluster.owned().is_empty());
    assert_eq!(b.cluster.owner_of(APP, &room).await.unwrap(), Some(second));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_ridden_out() {
    let mut redis = RedisServer::start();
    let mut a = node(&redis, "node-a").await;
    until("a in the service", || async { a.cluster.in_service() }).await;
    let room = RoomId::num(11).unwrap();
    // Tokens well past what a fresh Redis's counter starts from.
    for n in 100..105 {
        a.cluster
            .place(APP, &RoomId::num(n).unwrap())
            .await
            .unwrap();
    }
    let first = a.cluster.place(APP, &room).await.unwrap();
    // Redis goes away for less than a lease: nothing is lost; placing
    // fails with a clear error meanwhile.
    redis.stop();
    let refused = a.cluster.place(APP, &RoomId::num(12).unwrap()).await;
    assert!(refused.is_err(), "{refused:?}");
    redis.restart();
    // Back (empty, as a Redis without persistence restarts): the node
    // announces itself again and writes its lease back, with the fence
    // raised to its token; nothing was lost.
    until("a back in the service, its room's lease back", || async {
        live_ids(&a.cluster).await == ["node-a"]
            && a.cluster.owner_of(APP, &room).await.ok().flatten() == Some(first.clone())
    })
    .await;
    assert!(a.cluster.in_service());
    assert!(a.lost.try_recv().is_err(), "no lease was lost");
    let other = a
        .cluster
        .place(APP, &RoomId::num(12).unwrap())
        .await
        .unwrap();
    assert!(
        other.token > first.token,
        "the fence went on from {first:?}: {other:?}"
    );
    assert!(a.cluster.redis_latency().is_some());
    a.stop.cancel();
}

/// A node of a real server in this process, on `redis`.
async fn server_node(redis: &RedisServer, id: &str) -> kaigi_tests::TestServer {
    let url = redis.url();
    let id = id.to_owned();
    let s = kaigi_tests::TestServer::start_with(move |c| {
        let mut cc = ClusterConfig::new(&url, &id, "");
        cc.lease = Duration::from_millis(1500);
        cc.heartbeat = Duration::from_millis(300);
        c.cluster = Some(cc);
    })
    .await;
    s
}

/// In-process nodes `ids` of one service, once all are in it.
async fn service(redis: &RedisServer, ids: &[&str]) -> Vec<kaigi_tests::TestServer> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(server_node(redis, id).await);
    }
    let first = nodes[0].cluster();
    until("every node in the service", || async {
        live_ids(&first).await.len() == ids.len()
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_one_room_through_three_nodes_meet_on_its_node() {
    let redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b", "node-c"]).await;
    let first = nodes[0].cluster();
    // /healthz says so.
    let health: serde_json::Value =
        reqwest::get(format!("http://{}/healthz", nodes[1].handle().local_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(health["node"], "node-b");
    assert_eq!(health["inService"], true);
    // One user through each node: all three end up in one room, on one
    // node, and see each other.
    let room = kaigi_tests::room(40);
    let (alice, mut alice_events) = nodes[0].joined("alice", &room).await;
    let (_bob, _) = nodes[1].joined("bob", &room).await;
    let (_carol, _) = nodes[2].joined("carol", &room).await;
    for who in ["bob", "carol"] {
        kaigi_tests::wait_for(&mut alice_events, "the others", |e| {
            matches!(e, kaigi_sdk::ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == who)
        })
        .await;
    }
    let owner = first
        .owner_of(APP, &room)
        .await
        .unwrap()
        .expect("the room is placed");
    let on_owner = nodes
        .iter()
        .find(|n| n.cluster().node_id() == owner.node_id)
        .unwrap();
    for n in &nodes {
        let here = local_users(n, &room);
        if n.cluster().node_id() == owner.node_id {
            assert_eq!(here, ["alice", "bob", "carol"]);
        } else {
            assert!(here.is_empty(), "no room on {}", n.cluster().node_id());
        }
    }
    assert_eq!(alice.remote_users().len(), 2);
    let health: serde_json::Value =
        reqwest::get(format!("http://{}/healthz", on_owner.handle().local_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        (health["rooms"].as_u64(), health["participants"].as_u64()),
        (Some(1), Some(3)),
        "{health}"
    );
    // Everyone leaves: the node gives the room up.
    drop((alice, _bob, _carol));
    let c = on_owner.cluster();
    until("the empty room's lease given up", || async {
        c.owner_of(APP, &room).await.ok() == Some(None)
    })
    .await;
}

/// Whether every client is in a room (connected) with all the others.
fn all_together(clients: &[kaigi_sdk::Client]) -> bool {
    clients.iter().all(|c| {
        c.connection_state() == kaigi_sdk::ConnectionState::Connected
            && c.remote_users().len() == clients.len() - 1
    })
}

/// The node whose `/healthz` says it holds a room.
async fn node_with_rooms(nodes: &[kaigi_tests::node::NodeProcess]) -> Option<usize> {
    for (i, n) in nodes.iter().enumerate() {
        let health: Option<serde_json::Value> =
            match reqwest::get(format!("http://{}/healthz", n.addr)).await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
        if health.is_some_and(|h| h["rooms"].as_u64() > Some(0)) {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rooms_node_killed_or_drained_its_people_meet_again_on_another() {
    use kaigi_tests::node::NodeProcess;
    let redis = RedisServer::start();
    let mut nodes: Vec<NodeProcess> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|id| NodeProcess::start(&redis.url(), id))
        .collect();
    let lb = kaigi_tests::balancer::Balancer::start(nodes.iter().map(|n| n.addr).collect()).await;
    let entry = kaigi_tests::TestServer::remote(lb.addr);
    let room = kaigi_tests::room(41);
    let mut clients = Vec::new();
    for i in 0..6 {
        let (c, _events) = entry.client(&format!("user{i}"));
        within(
            "join through the balancer",
            c.join(room.clone(), kaigi_sdk::Role::Anchor),
        )
        .await
        .expect("joined");
        clients.push(c);
    }
    until("all six together", || async { all_together(&clients) }).await;
    // user0 sends video; user1 receives it through every move below (the
    // SDK publishes again after each rejoin).
    let _video = kaigi_tests::publish_pattern(&clients[0]).await;
    kaigi_tests::frames_arrive(&clients[1], "user0", 10).await;
    let owner = node_with_rooms(&nodes).await.expect("the room's node");
    let killed = nodes[owner].id.clone();
    nodes[owner].kill();
    let t0 = std::time::Instant::now();
    // Every client reconnects (through the balancer, which skips the dead
    // node), the room is placed again on a live node once the dead one's
    // lease has run out, and they are all together again.
    // (Right after the kill the clients may not have noticed yet: the
    // room's new node is waited for too.)
    until("all six together again on another node", || async {
        all_together(&clients)
            && node_with_rooms(&nodes)
                .await
                .is_some_and(|i| nodes[i].id != killed)
    })
    .await;
    let took = t0.elapsed();
    let now_on = node_with_rooms(&nodes).await.expect("the room's new node");
    kaigi_tests::frames_arrive(&clients[1], "user0", 10).await;
    let video_back = t0.elapsed();
    eprintln!(
        "back together on {} {took:?} after {killed} was killed, video back after {video_back:?}",
        nodes[now_on].id
    );
    // Drained (SIGTERM, as systemd stops it): the node hands its rooms
    // back at once, so nobody waits out a lease.
    let drained = nodes[now_on].id.clone();
    nodes[now_on].terminate();
    let t0 = std::time::Instant::now();
    until(
        "all six together after the drain on the third node",
        || async {
            all_together(&clients)
                && node_with_rooms(&nodes)
                    .await
                    .is_some_and(|i| nodes[i].id != drained && nodes[i].id != killed)
        },
    )
    .await;
    let took = t0.elapsed();
    kaigi_tests::frames_arrive(&clients[1], "user0", 10).await;
    let video_back = t0.elapsed();
    let last = node_with_rooms(&nodes)
        .await
        .expect("the room's third node");
    eprintln!(
        "back together on {} {took:?} after {drained} was drained, video back after {video_back:?}",
        nodes[last].id
    );
    for c in &clients {
        let _ = c.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_joins_with_one_user_id_through_three_nodes_leave_one() {
    let redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b", "node-c"]).await;
    let room = kaigi_tests::room(42);
    // 100 clients, one user id, through the three nodes at once: TRTC's
    // rule (the newest wins) holds whichever node each came in through,
    // because they all end up on the room's node.
    let mut joins = Vec::new();
    for i in 0..100 {
        let (c, events) = nodes[i % 3].client("same-user");
        joins.push(async move {
            let r = c.join(room_of(42), kaigi_sdk::Role::Anchor).await;
            (c, events, r)
        });
    }
    let joined = within("100 racing joins", futures_util::future::join_all(joins)).await;
    let clients: Vec<_> = joined
        .into_iter()
        .filter_map(|(c, e, r)| r.ok().map(|_| (c, e)))
        .collect();
    // Each was in the room at some point (a later one then took over).
    assert_eq!(clients.len(), 100, "every join succeeded");
    until("exactly one left in the room", || async {
        let users = nodes_users(&nodes, &room).await;
        let connected = clients
            .iter()
            .filter(|(c, _)| c.connection_state() == kaigi_sdk::ConnectionState::Connected)
            .count();
        users == ["same-user"] && connected == 1
    })
    .await;
}

fn room_of(n: u64) -> RoomId {
    kaigi_tests::room(n)
}

/// The users in `room` on whichever node holds it.
async fn nodes_users(nodes: &[kaigi_tests::TestServer], room: &RoomId) -> Vec<String> {
    nodes.iter().flat_map(|n| local_users(n, room)).collect()
}

/// The users in `room` on node `n` itself (sorted; empty if it has no
/// such room).
fn local_users(n: &kaigi_tests::TestServer, room: &RoomId) -> Vec<String> {
    let mut users: Vec<String> = n.handle().shared().read(|reg| {
        reg.room(APP, room)
            .map(|r| {
                r.participants()
                    .iter()
                    .map(|(u, _)| u.to_string())
                    .collect()
            })
            .unwrap_or_default()
    });
    users.sort();
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_calls_through_any_node_reach_the_rooms_node() {
    let redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b", "node-c"]).await;
    let first = nodes[0].cluster();
    // Two rooms; the second is placed once the first's node reports its
    // load, so (least loaded first) on another node.
    let one = kaigi_tests::room(50);
    let two = kaigi_tests::room(51);
    let (alice, mut alice_events) = nodes[0].joined("alice", &one).await;
    let (bob, _bob_events) = nodes[0].joined("bob", &one).await;
    let owner_one = first.owner_of(APP, &one).await.unwrap().unwrap().node_id;
    until("the first room's load reported", || async {
        first
            .live_nodes()
            .await
            .unwrap_or_default()
            .iter()
            .any(|n| n.node_id == owner_one && n.participants == 2)
    })
    .await;
    let (_carol, _) = nodes[1].joined("carol", &two).await;
    let owner_two = first.owner_of(APP, &two).await.unwrap().unwrap().node_id;
    assert_ne!(owner_one, owner_two, "the second room on another node");
    let other = nodes
        .iter()
        .find(|n| n.cluster().node_id() != owner_one)
        .unwrap();
    // DescribeRoom and ListRooms through any node see the whole service.
    for n in &nodes {
        let mut users = n.users_in(&one).await.expect("the room, through any node");
        users.sort();
        assert_eq!(users, ["alice", "bob"]);
        let listed = n.admin("ListRooms", serde_json::json!({})).await;
        assert_eq!(listed["Response"]["Total"], 2, "{listed}");
    }
    // RemoveUser through a node that does not hold the room.
    assert_eq!(alice.remote_users().len(), 1);
    other.remove_users(&one, &["alice"]).await;
    let (banned, _) = kaigi_tests::expect_event(&mut alice_events, "client-banned").await;
    assert!(matches!(
        banned,
        kaigi_sdk::ClientEvent::ClientBanned {
            reason: kaigi_proto::KickReason::RemovedByAdmin,
            ..
        }
    ));
    // DismissRoom through a node that does not hold it.
    other.dismiss(&one).await;
    until("bob dismissed too", || async {
        bob.connection_state() == kaigi_sdk::ConnectionState::Disconnected
    })
    .await;
    until("the room gone, through any node", || async {
        other.users_in(&one).await.is_none()
    })
    .await;
    // A room that does not exist is one on every node.
    let missing = other
        .admin("DescribeRoom", serde_json::json!({"RoomId": 999}))
        .await;
    assert_eq!(
        missing["Response"]["Error"]["Code"], "FailedOperation.RoomNotExist",
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_session_may_not_resume_through_any_node() {
    use kaigi_tests::{raw_join, raw_recv, raw_send};
    let redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b"]).await;
    let room = kaigi_tests::room(60);
    let (c, mut events) = nodes[0].client("dave");
    let info = c
        .join(room.clone(), kaigi_sdk::Role::Anchor)
        .await
        .expect("joined");
    nodes[1].remove_users(&room, &["dave"]).await;
    kaigi_tests::expect_event(&mut events, "client-banned").await;
    // The room's node tells the service (its write follows the kick).
    let session = u64::from_str_radix(&info.session_id, 16).unwrap();
    let c0 = nodes[0].cluster();
    until("the forced exit known to the service", || async {
        c0.kicked(session).await.ok().flatten().is_some()
    })
    .await;
    // Resuming that session, through either node, is refused as TRTC's
    // client would be: the session was forced out.
    for n in &nodes {
        let mut ws = n.raw().await;
        let mut join = raw_join(1, "dave", 60);
        join["resume"] = serde_json::json!(info.session_id);
        raw_send(&mut ws, join).await;
        let reply = raw_recv(&mut ws).await.expect("a reply");
        assert_eq!(reply["name"], "SESSION_BANNED", "{reply}");
        assert_eq!(reply["kickReason"], "removed-by-admin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_mid_call_goes_unnoticed() {
    let mut redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b"]).await;
    let room = kaigi_tests::room(70);
    let (alice, mut alice_events) = nodes[0].joined("alice", &room).await;
    let (bob, mut bob_events) = nodes[1].joined("bob", &room).await;
    let _stream = kaigi_tests::publish_pattern(&alice).await;
    kaigi_tests::expect_event(&mut bob_events, "stream-subscribed").await;
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
    let owner = nodes[0]
        .cluster()
        .owner_of(APP, &room)
        .await
        .unwrap()
        .unwrap();
    // Redis goes away and comes back empty.
    redis.stop();
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
    redis.restart();
    let c = nodes[0].cluster();
    until("the room's lease written back", || async {
        c.owner_of(APP, &room).await.ok().flatten() == Some(owner.clone())
    })
    .await;
    // The call went on: video flowed, nobody was moved or reconnected.
    kaigi_tests::frames_arrive(&bob, "alice", 10).await;
    for events in [&mut alice_events, &mut bob_events] {
        let seen = kaigi_tests::drain(events);
        assert!(
            !seen.iter().any(|e| matches!(
                e.name(),
                "connection-state-changed" | "client-banned" | "error"
            )),
            "{seen:?}"
        );
    }
    // And the service works again: a newcomer through either node meets
    // them.
    let (carol, _) = nodes[1].joined("carol", &room).await;
    assert_eq!(carol.remote_users().len(), 2);
}

/// A UserSig from an invite, as a client of node `via`.
fn invitee(
    via: &kaigi_tests::TestServer,
    got: &kaigi_sdk::invite::Redeemed,
) -> (kaigi_sdk::Client, kaigi_sdk::EventStream) {
    let c = kaigi_sdk::Client::new(got.client_options(&via.url()).unwrap()).unwrap();
    let e = c.events();
    (c, e)
}

fn invite_refused<T: std::fmt::Debug>(r: Result<T, kaigi_sdk::ClientError>, code: &str) {
    match r {
        Err(kaigi_sdk::ClientError::Invite { code: c, .. }) => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_made_at_one_node_works_and_is_revoked_at_every_node() {
    use kaigi_proto::admin::Request;
    use kaigi_sdk::invite::{preview, redeem};
    let redis = RedisServer::start();
    let nodes = service(&redis, &["node-a", "node-b", "node-c"]).await;
    let room = kaigi_tests::room(80);
    let (_host, mut host_events) = nodes[0].joined("host", &room).await;
    let owner = nodes[0]
        .cluster()
        .owner_of(APP, &room)
        .await
        .unwrap()
        .unwrap()
        .node_id;
    let others: Vec<&kaigi_tests::TestServer> = nodes
        .iter()
        .filter(|n| n.cluster().node_id() != owner)
        .collect();
    // Made at one node that does not hold the room...
    let made = others[0]
        .request(&Request::CreateInvite {
            room: room.clone(),
            expire_secs: 600,
        })
        .await
        .expect("CreateInvite");
    let code: kaigi_proto::invite::InviteCode = made["Code"].as_str().unwrap().parse().unwrap();
    // ...looked up and redeemed at every node.
    for n in &nodes {
        let seen = preview(&n.url(), &code, None).await.expect("preview");
        assert_eq!(seen.room.room().unwrap(), room);
    }
    // The name check asks the room's node: the host's name is taken
    // whichever node is asked.
    for n in &others {
        invite_refused(redeem(&n.url(), &code, "host", None).await, "NAME_TAKEN");
    }
    let guest = redeem(&others[1].url(), &code, "guest", None)
        .await
        .expect("redeem at a third node");
    let (g, _) = invitee(others[1], &guest);
    kaigi_tests::within(
        "the guest joins",
        g.join(room.clone(), kaigi_sdk::Role::Anchor),
    )
    .await
    .expect("join through the invite");
    kaigi_tests::wait_for(&mut host_events, "the guest", |e| {
        matches!(e, kaigi_sdk::ClientEvent::PeerJoin { user_id, .. } if user_id.as_str() == "guest")
    })
    .await;
    // Redeemed at once through all three nodes: each UserSig counted once.
    let racing = (0..9).map(|i| {
        let url = nodes[i % 3].url();
        let code = code.clone();
        async move { redeem(&url, &code, &format!("racer-{i}"), None).await }
    });
    for r in futures_util::future::join_all(racing).await {
        r.expect("a racing redeem");
    }
    for n in &nodes {
        let listed = n
            .request(&Request::ListInvites { room: None })
            .await
            .unwrap();
        let invites = listed["Invites"].as_array().unwrap();
        assert_eq!(invites.len(), 1, "{listed:?}");
        assert_eq!(invites[0]["Redeemed"], serde_json::json!(10));
    }
    // Revoked at one node: refused at every node, the UserSig it gave
    // too (wherever it is presented).
    nodes[2]
        .request(&Request::RevokeInvite { code: code.clone() })
        .await
        .expect("RevokeInvite");
    for n in &nodes {
        invite_refused(preview(&n.url(), &code, None).await, "INVITE_REVOKED");
        invite_refused(
            redeem(&n.url(), &code, "late", None).await,
            "INVITE_REVOKED",
        );
    }
    g.leave().await.unwrap();
    for n in &nodes {
        let (again, _) = invitee(n, &guest);
        match kaigi_tests::within(
            "a rejoin",
            again.join(room.clone(), kaigi_sdk::Role::Anchor),
        )
        .await
        {
            Err(kaigi_sdk::ClientError::Auth { code, .. }) => {
                assert_eq!(code, kaigi_proto::ErrorCode::RoomNotGranted)
            }
            r => panic!("{r:?}"),
        }
    }
    // Another app's key cannot revoke or see it; bounded per app.
    let c = nodes[0].cluster();
    assert!(!c.revoke_invite(SdkAppId(1), &code).await.unwrap());
    let now = kaigi_tests::now();
    for i in 0..kaigi_server::invites::MAX_INVITES_PER_APP - 1 {
        let r = kaigi_server::invites::InviteRecord::new(APP, kaigi_tests::room(1), 60, now);
        c.create_invite(r, now)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    let one_more = kaigi_server::invites::InviteRecord::new(APP, kaigi_tests::room(1), 60, now);
    assert_eq!(
        c.create_invite(one_more, now).await.unwrap(),
        Err(kaigi_server::invites::InviteError::TooMany)
    );
    assert_eq!(
        c.invites_of(APP, now).await.unwrap().len(),
        kaigi_server::invites::MAX_INVITES_PER_APP
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_placed_in_a_burst_spread_over_the_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let c = node(&redis, "node-c").await;
    until("all three alive", || async {
        a.cluster.live_nodes().await.unwrap_or_default().len() == 3
    })
    .await;
    // Nine rooms placed at once, long before any node reports their
    // people: three on each node.
    let rooms: Vec<RoomId> = (1..=9).map(|n| RoomId::num(100 + n).unwrap()).collect();
    let mut owners = std::collections::BTreeMap::<String, usize>::new();
    for room in &rooms {
        let owner = a.cluster.place(APP, room).await.unwrap();
        *owners.entry(owner.node_id).or_default() += 1;
    }
    assert_eq!(
        owners.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{owners:?}"
    );
    for n in [a, b, c] {
        n.stop.cancel();
    }
}
