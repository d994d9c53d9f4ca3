//! One address cannot lock everyone out: connections are capped per IP and
//! in all (refused with a whole HTTP response, not left hanging), a client
//! that sends its request slowly (headers or body) or keeps a connection
//! idle is cut off, and clients already in rooms keep working at the caps.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kaigi_server::admin::BODY_READ_TIMEOUT;
use kaigi_server::listener::HEADER_READ_TIMEOUT;
use kaigi_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind a loopback source");
    within("connect", socket.connect(server))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes, or until `limit`.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// Opens a WebSocket from `from` and keeps it open by pinging (never joins).
async fn pinging_ws(from: [u8; 4], server: SocketAddr) -> Result<RawWs, String> {
    let tcp = connect_from(from, server).await;
    let url = format!("ws://{server}/ws");
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    const CAP: usize = 40;
    let server = TestServer::start_with(|c| c.max_connections_per_ip = CAP).await;
    // One address opens as many connections as it may, and one more.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(
            pinging_ws([127, 0, 0, 2], server.addr)
                .await
                .expect("under the cap"),
        );
    }
    let refused = pinging_ws([127, 0, 0, 2], server.addr).await;
    assert!(
        matches!(&refused, Err(e) if e.contains("429")),
        "over the per-IP cap: {refused:?}"
    );
    let mut raw = connect_from([127, 0, 0, 2], server.addr).await;
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut raw, WAIT).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("Retry-After: 5"), "{answer}");

    // Everyone else still gets in, and media works.
    let r = room(1);
    let (alice, _) = server.joined("alice", &r).await;
    let (bob, _) = server.joined("bob", &r).await;
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 3).await;

    // A slot comes back when its connection closes.
    drop(held.pop());
    let again = within("a freed slot", async {
        loop {
            match pinging_ws([127, 0, 0, 2], server.addr).await {
                Ok(ws) => break ws,
                // The server notices the close a moment later.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_total_cap_joined_clients_keep_working() {
    const TOTAL: usize = 30;
    let server = TestServer::start_with(|c| c.max_connections = Some(TOTAL)).await;
    let r = room(2);
    let (alice, mut alice_events) = server.joined("alice", &r).await;
    let (bob, _) = server.joined("bob", &r).await;
    // Idle connections from many addresses fill the rest.
    let mut held = Vec::new();
    for i in 0..TOTAL - 2 {
        held.push(
            pinging_ws([127, 0, 1, 1 + i as u8], server.addr)
                .await
                .expect("under the total"),
        );
    }
    let refused = pinging_ws([127, 0, 2, 1], server.addr).await;
    assert!(
        matches!(&refused, Err(e) if e.contains("503")),
        "over the total cap: {refused:?}"
    );
    // The two in the room publish, receive and see each other leave.
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 3).await;
    within("bob leaves", bob.leave()).await.expect("leave");
    wait_for(&mut alice_events, "peer-leave", |e| {
        matches!(e, kaigi_sdk::ClientEvent::PeerLeave { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_slow_bodies_and_idle_connections_are_cut_off() {
    let server = TestServer::start().await;
    let limit = HEADER_READ_TIMEOUT.max(BODY_READ_TIMEOUT) + Duration::from_secs(3);
    let started = Instant::now();

    // Headers that never end.
    let slow_headers = async {
        let mut tcp = connect_from([127, 0, 0, 3], server.addr).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n")
            .await
            .unwrap();
        read_to_close(&mut tcp, limit).await
    };
    // A kept-alive connection that goes quiet after one request.
    let idle = async {
        let mut tcp = connect_from([127, 0, 0, 4], server.addr).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut tcp, limit).await
    };
    // A body that stops short of its length.
    let slow_body = async {
        let mut tcp = connect_from([127, 0, 0, 5], server.addr).await;
        let query = admin_query();
        let head = format!(
            "POST /api/ListRooms?{query} HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"SdkAppId\":"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        read_to_close(&mut tcp, limit).await
    };
    let (headers, idle, body) = tokio::join!(slow_headers, idle, slow_body);
    let elapsed = started.elapsed();

    let headers = headers.expect("a connection with unfinished headers is closed");
    assert!(!headers.contains("200 OK"), "{headers}");
    let idle = idle.expect("an idle kept-alive connection is closed");
    assert!(
        idle.starts_with("HTTP/1.1 200"),
        "its one request was served: {idle}"
    );
    let body = body.expect("a connection with an unfinished body is closed");
    assert!(
        body.contains("InvalidParameter") && body.contains("did not arrive"),
        "{body}"
    );
    assert!(
        elapsed >= HEADER_READ_TIMEOUT.min(BODY_READ_TIMEOUT) - Duration::from_millis(200),
        "cut off only at the deadline: {elapsed:?}"
    );
    // The server serves everyone else meanwhile and after.
    let (_c, _) = server.joined("carol", &room(3)).await;
}
