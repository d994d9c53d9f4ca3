//! Connections piled on a call's media TCP port (ICE-TCP's passive
//! listener) are closed over a small cap, so they cannot take the
//! server's descriptors; calls go on.

use std::net::SocketAddr;

use kaigi_tests::*;

/// The port of the server's passive TCP candidate in an offer.
fn passive_tcp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find(|l| l.starts_with("a=candidate") && l.contains(" tcp ") && l.contains("passive"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|p| p.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_piled_on_a_media_tcp_port_are_closed_over_the_cap() {
    let server = TestServer::start().await;
    // A session with a media connection: its offer names the TCP port.
    let mut ws = server.raw().await;
    raw_send(&mut ws, raw_join(1, "carol", 7)).await;
    raw_reply(&mut ws, "joined").await;
    raw_send(
        &mut ws,
        serde_json::json!({"type": "publish", "reqId": 2, "audio": true, "video": true}),
    )
    .await;
    let sdp = within("an offer", async {
        loop {
            let m = raw_recv(&mut ws).await.expect("open");
            if m["type"] == "offer" {
                return m["sdp"].as_str().unwrap_or_default().to_owned();
            }
        }
    })
    .await;
    let port = passive_tcp_port(&sdp).unwrap_or_else(|| panic!("a TCP candidate in {sdp}"));
    let refused_before = kaigi_rtc::guard::refused_tcp_streams();
    const PILE: usize = 100;
    let mut pile = Vec::new();
    for _ in 0..PILE {
        pile.push(
            tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .expect("the listener accepts"),
        );
    }
    // All but the per-address cap are closed as they arrive (polling a
    // counter that the accept loop moves at its own pace).
    let want = (PILE - kaigi_rtc::guard::MAX_TCP_STREAMS_PER_IP) as u64;
    within("the pile refused", async {
        while kaigi_rtc::guard::refused_tcp_streams() < refused_before + want {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // The server goes on serving calls.
    let (alice, _) = server.joined("alice", &room(8)).await;
    let (bob, _) = server.joined("bob", &room(8)).await;
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 10).await;
    drop(pile);
}
