//! 100 clients racing to join with one userId end with exactly one in the room.

use futures_util::StreamExt;
use kaigi_proto::KickReason;
use kaigi_sdk::{ClientEvent, ConnectionState, Role};
use kaigi_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_racing_joins_leave_one_survivor() {
    const N: usize = 100;
    let server = TestServer::start().await;
    let r = room(3001);
    let (clients, streams): (Vec<_>, Vec<_>) = (0..N).map(|_| server.client("racer")).unzip();
    let joins =
        futures_util::future::join_all(clients.iter().map(|c| c.join(r.clone(), Role::Anchor)))
            .await;
    assert!(
        joins.iter().all(|j| j.is_ok()),
        "each join is accepted, then replaced: {joins:?}"
    );

    // Every event of every client, tagged with the client's index.
    let mut all = futures_util::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |e| (i, e)).boxed()),
    );
    let mut banned = [false; N];
    within("99 bans", async {
        while banned.iter().filter(|b| **b).count() < N - 1 {
            let (i, e) = all.next().await.expect("streams open");
            if let ClientEvent::ClientBanned { reason, .. } = e {
                assert_eq!(reason, KickReason::DuplicateUserId);
                assert!(!banned[i], "client {i} banned twice");
                banned[i] = true;
            }
        }
    })
    .await;
    let survivor = banned.iter().position(|b| !b).unwrap();
    for (i, c) in clients.iter().enumerate() {
        let expected = if i == survivor {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        };
        assert_eq!(c.connection_state(), expected, "client {i}");
    }
    assert_eq!(server.users_in(&r).await.unwrap(), ["racer"]);
    // The 99 banned connections are closed by the server.
    server.wait_sessions(1).await;
}
