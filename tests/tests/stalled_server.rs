//! A server that stops reading cannot hang the SDK's session: once the
//! socket's buffers are full a write blocks, and the session gives it a
//! deadline, counts the connection as lost and reconnects. Every request
//! waiting on that connection gets an answer (`ConnectionLost`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kaigi_sdk::{ClientError, ClientEvent, ConnectionState, Role};
use kaigi_tests::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Requests sent at once: several megabytes, more than the loopback
/// socket buffers of both ends hold.
const REQUESTS: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_does_not_hang_the_session() {
    // A server that joins the client, then never reads again (its receive
    // buffer as small as the kernel allows) and never answers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let stalled = tokio::spawn(async move {
        let mut held = Vec::new();
        // The first connection joins; reconnection attempts are held
        // without an answer.
        let mut first = true;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            if std::mem::take(&mut first) {
                let join = loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => break t,
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                };
                let join: serde_json::Value = serde_json::from_str(&join).unwrap();
                let joined = json!({
                    "type": "joined", "reqId": join["reqId"], "sessionId": "s1",
                    "roomId": 1, "role": "anchor", "users": [],
                    "heartbeatIntervalMs": 60_000, "heartbeatTimeoutMs": 60_000,
                });
                ws.send(Message::text(joined.to_string())).await.unwrap();
            }
            held.push(ws);
        }
    });

    let server = TestServer::remote(addr);
    let (client, mut events) = server.client("alice");
    within("join", client.join(room(1), Role::Anchor))
        .await
        .expect("joined by the stalled server");
    let requests = futures_util::future::join_all((0..REQUESTS).map(|_| client.mute_audio(true)));
    let (results, _) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), requests),
        wait_for(&mut events, "reconnecting", |e| {
            matches!(
                e,
                ClientEvent::ConnectionStateChanged {
                    state: ConnectionState::Reconnecting,
                    ..
                }
            )
        })
    );
    let results = results.expect("every request answered, none left hanging");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ClientError::ConnectionLost))),
        "requests on the stalled connection fail as ConnectionLost"
    );
    within("leave", client.leave()).await.expect("leave");
    stalled.abort();
}
