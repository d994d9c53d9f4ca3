//! The reliability benchmark's abuse runs: idle WebSockets, junk
//! datagrams at the media ports, junk admin requests.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kaigi_sdk::ConnectionState;
use kaigi_tests::bench::*;
use kaigi_tests::*;
use rand::Rng;
use serde_json::{json, Value};

use super::{holdings, ms, udp_ports};

pub async fn idle_websockets(n: usize, never_join: usize) -> Value {
    let child = ChildServer::start_with(&[(PER_IP_ENV, "0".into())]);
    let pid = child.child.id();
    let server = TestServer::remote(child.addr);
    let before = holdings(pid);
    let mut held = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let mut ws = server.raw().await;
        raw_send(
            &mut ws,
            raw_join(1, &format!("idle{i}"), 100 + (i / 50) as u64),
        )
        .await;
        held.push(ws);
    }
    // Each got its `joined` (read the first message of each).
    for ws in held.iter_mut() {
        let m = raw_recv(ws).await.expect("joined");
        assert_eq!(m["type"], "joined", "{m}");
    }
    let opened_s = t.elapsed().as_secs_f64();
    let during = holdings(pid);
    let per_conn = (during.rss_kib - before.rss_kib) as f64 * 1024.0 / n as f64;
    // Connections that never join: closed at the join deadline.
    let mut closes = Vec::new();
    let started = Instant::now();
    let mut loners = Vec::new();
    for _ in 0..never_join {
        loners.push(server.raw().await);
    }
    for mut ws in loners {
        let code = raw_close_code(&mut ws).await;
        closes.push((ms(started.elapsed()), code));
    }
    let still = server.users_in(&room(100)).await.map(|u| u.len());
    drop(held);
    child.stop();
    let first = closes.iter().map(|c| c.0).fold(f64::MAX, f64::min);
    let last = closes.iter().map(|c| c.0).fold(0.0, f64::max);
    json!({"connections": n, "opened_s": (opened_s * 10.0).round() / 10.0,
           "rss_before_kib": before.rss_kib, "rss_during_kib": during.rss_kib,
           "bytes_per_connection": per_conn.round(), "fds_during": during.fds,
           "never_join": never_join, "never_join_closed_first_ms": first,
           "never_join_closed_last_ms": last,
           "never_join_close_codes": closes.iter().map(|c| c.1).collect::<HashSet<_>>(),
           "room_100_users_after": still})
}

pub async fn junk_at_media_ports(datagrams: usize) -> Value {
    let child = ChildServer::start();
    let pid = child.child.id();
    let server = TestServer::remote(child.addr);
    let r = room(20);
    let (alice, _) = server.joined("alice", &r).await;
    let (bob, _) = server.joined("bob", &r).await;
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 5).await;
    let ports = udp_ports(pid);
    let before = holdings(pid);
    let frames = |c: &kaigi_sdk::Client| {
        c.remote_streams()
            .into_iter()
            .find(|s| s.user_id().as_str() == "alice")
            .map(|s| s.frames_decoded())
            .unwrap_or(0)
    };
    let frames_before = frames(&bob);
    let t = Instant::now();
    let spray_ports = ports.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rng = rand::rng();
        let mut buf = [0u8; 1200];
        let mut sent = 0usize;
        for i in 0..datagrams {
            let len = rng.random_range(1..buf.len());
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len > 12 {
                // Half of it RTP-shaped, each with a new SSRC.
                buf[0] = 0x80;
                buf[1] = 102;
            }
            let port = spray_ports[i % spray_ports.len()];
            if sock.send_to(&buf[..len], ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        sent
    })
    .await
    .unwrap();
    let spray = t.elapsed();
    let fps = (frames(&bob) - frames_before) as f64 / spray.as_secs_f64();
    frames_arrive(&bob, "alice", 10).await;
    let after = holdings(pid);
    let metrics = reqwest::get(format!("http://{}/metrics", child.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kaigi_media_datagrams_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    child.stop();
    json!({"datagrams": sent, "ports": ports.len(), "spray_s": (spray.as_secs_f64() * 10.0).round() / 10.0,
           "video_fps_during": fps.round(), "dropped_by_gate": dropped,
           "rss_before_kib": before.rss_kib, "rss_after_kib": after.rss_kib})
}

pub async fn admin_junk() -> Value {
    let child = ChildServer::start();
    let pid = child.child.id();
    let server = TestServer::remote(child.addr);
    let r = room(30);
    let (alice, _) = server.joined("alice", &r).await;
    let before = holdings(pid);
    let http = reqwest::Client::new();
    let base = format!("http://{}", child.addr);
    let q = admin_query();
    let mut rows = Vec::new();
    let call = async |rows: &mut Vec<Value>, name: &str, req: reqwest::RequestBuilder| {
        let t = Instant::now();
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let code = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["Response"]["Error"]["Code"].as_str().map(str::to_owned));
                format!("{status} {}", code.unwrap_or_else(|| "-".into()))
            }
            Err(e) if e.is_request() || e.is_body() => "connection closed by the server".into(),
            Err(e) => format!("error: {e}"),
        };
        rows.push(json!({"request": name, "outcome": outcome, "ms": ms(t.elapsed())}));
    };
    let dismiss = format!("{base}/api/DismissRoom?{q}");
    call(
        &mut rows,
        "malformed JSON",
        http.post(&dismiss).body("{\"SdkAppId\":"),
    )
    .await;
    call(
        &mut rows,
        "1 MB body",
        http.post(&dismiss).body(vec![b' '; 1 << 20]),
    )
    .await;
    // 100 MB, streamed over a raw connection: the server answers after
    // 64 KiB and closes; the sender sees its writes fail.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t = Instant::now();
        let tcp = tokio::net::TcpStream::connect(child.addr).await.unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let head = format!(
            "POST /api/DismissRoom?{q} HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            100u64 << 20
        );
        let writer = tokio::spawn(async move {
            let chunk = vec![b' '; 1 << 20];
            let mut written = 0u64;
            if wr.write_all(head.as_bytes()).await.is_ok() {
                for _ in 0..100 {
                    if wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                    written += chunk.len() as u64;
                }
            }
            written
        });
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        let code = answer
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|b| serde_json::from_str::<Value>(b.trim()).ok())
            .and_then(|v| v["Response"]["Error"]["Code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        let status = answer.lines().next().unwrap_or("closed").to_owned();
        writer.abort();
        rows.push(json!({"request": "100 MB body", "outcome": format!("{status} {code}"), "ms": ms(t.elapsed())}));
    }
    call(
        &mut rows,
        "wrong Content-Type",
        http.post(&dismiss)
            .header("Content-Type", "image/png")
            .body(vec![0x89, b'P', b'N', b'G']),
    )
    .await;
    call(
        &mut rows,
        "junk action",
        http.post(format!("{base}/api/%ff%fe%00?{q}")).body("{}"),
    )
    .await;
    call(
        &mut rows,
        "path traversal",
        http.get(format!("{base}/../../etc/passwd")),
    )
    .await;
    // A 100 KB request line: HTTP clients refuse to build one, so raw TCP.
    {
        let t = Instant::now();
        let head = format!(
            "POST /api/DismissRoom?{} HTTP/1.1\r\nHost: k\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(100_000)
        );
        let answer = {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(child.addr).await.unwrap();
            let _ = tcp.write_all(head.as_bytes()).await;
            let mut buf = vec![0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let status = answer
            .lines()
            .next()
            .filter(|l| !l.is_empty())
            .unwrap_or("connection closed by the server")
            .to_owned();
        rows.push(json!({"request": "100 KB URL", "outcome": status, "ms": ms(t.elapsed())}));
    }
    call(
        &mut rows,
        "no such path",
        http.post(format!("{base}/api/DismissRoom/extra?{q}"))
            .body("{}"),
    )
    .await;
    let serving = reqwest::get(format!("{base}/healthz"))
        .await
        .is_ok_and(|r| r.status() == 200);
    let users = server.users_in(&r).await;
    let intact = users == Some(vec!["alice".to_owned()])
        && alice.connection_state() == ConnectionState::Connected;
    let after = holdings(pid);
    child.stop();
    json!({"requests": rows, "serving_after": serving, "room_intact": intact,
           "rss_before_kib": before.rss_kib, "rss_after_kib": after.rss_kib})
}
