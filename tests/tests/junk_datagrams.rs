//! Junk datagrams sprayed at a call's media ports — RTP- and RTCP-shaped,
//! each with a new SSRC, from an address that is not in the call — cost
//! the server (and the clients) no memory that stays, and the call's
//! media keeps flowing through the spray.

use std::net::SocketAddr;

use kaigi_tests::*;
use rand::Rng;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// An RTP- or RTCP-shaped datagram with a random SSRC, sequence number and
/// payload (and so a wrong authentication tag).
fn junk(rng: &mut impl Rng, rtcp: bool) -> Vec<u8> {
    let mut d = vec![0u8; 120];
    rng.fill(&mut d[..]);
    d[0] = 0x80;
    d[1] = if rtcp { 200 } else { 102 };
    if rtcp {
        // Length in 32-bit words minus one: a sender report's size.
        d[2] = 0;
        d[3] = 6;
    }
    d
}

/// The server's count of datagrams its media sockets' gate dropped.
async fn dropped_datagrams(server: &TestServer) -> u64 {
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kaigi_media_datagrams_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped-datagram count in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_at_the_media_ports_costs_no_memory_and_media_flows() {
    const DATAGRAMS: usize = 300_000;
    let server = TestServer::start().await;
    let before: std::collections::HashSet<u64> = udp_sockets();
    let r = room(1);
    let (alice, _) = server.joined("alice", &r).await;
    let (bob, _) = server.joined("bob", &r).await;
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 5).await;
    // Every media socket of the call: the server's one media port and the
    // two clients' sockets.
    let mut targets: Vec<SocketAddr> = udp_socket_addrs()
        .into_iter()
        .filter(|(inode, _)| !before.contains(inode))
        .filter_map(|(_, addr)| addr)
        .filter(|a| a.ip().is_loopback())
        .collect();
    let media_port = server.handle().shared().media_ports.udp_addr();
    assert!(
        !targets.contains(&media_port),
        "the server's port is not per call"
    );
    targets.push(media_port);
    assert!(targets.len() >= 3, "media sockets: {targets:?}");

    let baseline = rss();
    let sprayer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let spray = tokio::task::spawn_blocking(move || {
        let mut rng = rand::rng();
        let mut sent = 0usize;
        for i in 0..DATAGRAMS {
            let d = junk(&mut rng, i % 4 == 0);
            if sprayer.send_to(&d, targets[i % targets.len()]).is_ok() {
                sent += 1;
            }
            if i % 64 == 0 {
                // Let the receivers keep up, so most datagrams are read
                // rather than dropped by the kernel.
                std::thread::yield_now();
            }
        }
        sent
    });
    // Media flows during the spray.
    frames_arrive(&bob, "alice", 10).await;
    let sent = within("the spray", spray).await.expect("spray");
    frames_arrive(&bob, "alice", 10).await;
    let grown = rss().saturating_sub(baseline);
    let dropped = dropped_datagrams(&server).await;
    assert!(
        dropped > sent as u64 / 2,
        "most of the {sent} junk datagrams were read and dropped, not left unread: {dropped}"
    );
    assert!(
        grown < 16 << 20,
        "{sent} junk datagrams grew memory by {} MB",
        grown >> 20
    );
}
