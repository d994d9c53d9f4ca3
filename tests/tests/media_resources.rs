//! After leave and after a forced exit, the media connections are closed,
//! their UDP sockets are gone (checked in /proc), the published streams'
//! sources are closed, and every task the clients and the server started
//! has ended (counted by the runtime), not assumed; each remote video
//! holds one H.264 decoder while it plays, and none is left after.

use kaigi_media::H264Decoder;
use kaigi_sdk::{LocalStream, SyntheticSource};
use kaigi_tests::*;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_kick_free_every_media_socket_source_and_task() {
    let server = TestServer::start().await;
    let before = udp_sockets();
    let tasks_before = alive_tasks();
    let (alice, _) = server.joined("alice", &room(1)).await;
    let (bob, mut bob_events) = server.joined("bob", &room(1)).await;
    let stream = publish_pattern(&alice).await;
    let bob_stream = LocalStream::synthetic(bob.user_id(), SyntheticSource::default()).unwrap();
    within("bob publishes", bob.publish(&bob_stream))
        .await
        .unwrap();
    expect_event(&mut bob_events, "stream-subscribed").await;
    let during = udp_sockets();
    let tasks_during = alive_tasks();
    assert!(
        tasks_during > tasks_before + 8,
        "sessions, peer connections and encoders run as tasks: {tasks_before} → {tasks_during}"
    );
    assert!(
        during.len() >= before.len() + 2,
        "the clients' two peer connections hold UDP sockets: {} → {}",
        before.len(),
        during.len()
    );
    // Each remote stream decodes its video with one H.264 decoder; its
    // audio track holds none (each holds megabytes: there were two per
    // stream, the audio track's never used).
    within("both decoding video and receiving audio", async {
        loop {
            let streams: Vec<_> = alice
                .remote_streams()
                .into_iter()
                .chain(bob.remote_streams())
                .collect();
            if streams.len() == 2
                && streams
                    .iter()
                    .all(|s| s.frames_decoded() > 0 && s.audio_packets() > 0)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(H264Decoder::live(), 2, "one H.264 decoder per remote video");
    let ports = &server.handle().shared().media_ports;
    assert_eq!(
        ports.connections(),
        2,
        "the server's two peer connections are on its media port"
    );

    // Bob is removed by an administrator; Alice leaves.
    server.remove_users(&room(1), &["bob"]).await;
    expect_event(&mut bob_events, "client-banned").await;
    assert!(bob_stream.is_closed(), "a forced exit closes the sources");
    within("leave", alice.leave()).await.unwrap();
    assert!(stream.is_closed(), "leave closes the sources");
    // Every server session has ended, media torn down first.
    server.wait_sessions(0).await;
    drop(bob);
    // Every task of the clients' and server's sessions and peer
    // connections ends (the server's own listeners stay).
    eprintln!("tasks: {tasks_before} → {tasks_during} → {}", alive_tasks());
    within("tasks to end", async {
        while alive_tasks() > tasks_before {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(ports.connections(), 0, "the media port forgot them");
    assert_eq!(H264Decoder::live(), 0, "every decoder freed");
    let after = udp_sockets();
    let leaked: Vec<_> = after.difference(&before).collect();
    assert!(
        leaked.is_empty(),
        "UDP sockets still open after leave and kick: {leaked:?}"
    );
}
