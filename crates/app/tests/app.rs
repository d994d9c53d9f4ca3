//! The app's core against a real server: joining through the form,
//! publishing, tiles on the frame server, leaving, and each forced exit
//! reaching the UI as `client-banned` with the local stream closed.

use std::time::Duration;

use futures_util::StreamExt;
use kaigi_app::{App, AppError, AppErrorCode, JoinForm, UiEvent};
use kaigi_sdk::KickReason;
use kaigi_tests::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

struct Ui {
    rx: mpsc::UnboundedReceiver<UiEvent>,
}

impl Ui {
    /// The next event named `name`, within 10 s.
    async fn wait(&mut self, name: &str) -> serde_json::Value {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = self.rx.recv().await {
                if e.name() == name {
                    return Some(serde_json::to_value(&e).unwrap());
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(v)) => v,
            _ => panic!("the UI never got {name}"),
        }
    }
}

async fn app() -> (App, Ui) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = App::new(std::sync::Arc::new(move |e| {
        let _ = tx.send(e);
    }))
    .await
    .unwrap();
    (app, Ui { rx })
}

fn form(server: &TestServer, user: &str, room: u64) -> JoinForm {
    JoinForm {
        server: Some(server.url()),
        sdk_app_id: Some(APP.0),
        user_id: user.into(),
        user_sig: Some(sig(user)),
        room_id: Some(room),
        camera: Some("test-pattern".into()),
        microphone: Some("tone".into()),
        ..Default::default()
    }
}

/// The next frame on a tile: (width, height, frame number).
async fn next_frame(app: &App, tile: &str) -> (u32, u32, u32) {
    let ep = app.frame_endpoint();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/{tile}?token={}", ep.url, ep.token))
            .await
            .unwrap();
    let msg = within("a frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return b,
                Some(Ok(_)) => continue,
                other => panic!("tile {tile} closed: {other:?}"),
            }
        }
    })
    .await;
    let t = &msg[msg.len() - 16..];
    let u = |i: usize| u32::from_le_bytes(t[i..i + 4].try_into().unwrap());
    assert_eq!(&t[12..], b"KGF1");
    let (w, h) = (u(0), u(4));
    assert_eq!(msg.len() - 16, (w * h * 3 / 2) as usize, "an I420 frame");
    (w, h, u(8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_see_a_peer_and_leave() {
    let server = TestServer::start().await;
    let (app, mut ui) = app().await;
    let joined = app.join_room(form(&server, "alice", 31)).await.unwrap();
    assert!(joined.publishing && !joined.embedded);
    assert_eq!(next_frame(&app, "local").await.0, 640);

    // A second participant publishes: the UI hears of it and its tile plays.
    let (bot, _) = server.joined("bot", &room(31)).await;
    let _stream = publish_pattern(&bot).await;
    let e = ui.wait("peer-join").await;
    assert_eq!(e["userId"], "bot");
    ui.wait("stream-added").await;
    ui.wait("stream-subscribed").await;
    let (w, h, _) = next_frame(&app, "bot").await;
    assert_eq!((w, h), (320, 240));
    // The bot hears alice.
    ui.wait("audio-volume").await;

    app.set_mute(None, Some(true)).await.unwrap();
    app.leave_room().await.unwrap();
    ui.wait("client-left").await;
    assert!(!app.in_room().await && !app.has_local_stream().await);
    assert_eq!(
        app.leave_room().await,
        Err(AppError::new(AppErrorCode::NotInRoom, "not in a room"))
    );
    // Rejoining works.
    app.join_room(form(&server, "alice", 31)).await.unwrap();
    app.leave_room().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forced_exit_reaches_the_ui_and_closes_the_stream() {
    let server = TestServer::start().await;
    let (app, mut ui) = app().await;
    let cases = [
        (KickReason::DuplicateUserId, "duplicate-user-id"),
        (KickReason::RemovedByAdmin, "removed-by-admin"),
        (KickReason::RoomDismissed, "room-dismissed"),
    ];
    for (reason, wire) in cases {
        app.join_room(form(&server, "alice", 32)).await.unwrap();
        assert!(app.has_local_stream().await);
        let _other = match reason {
            KickReason::DuplicateUserId => Some(server.joined("alice", &room(32)).await),
            KickReason::RemovedByAdmin => {
                server.remove_users(&room(32), &["alice"]).await;
                None
            }
            KickReason::RoomDismissed => {
                server.dismiss(&room(32)).await;
                None
            }
        };
        let e = ui.wait("client-banned").await;
        assert_eq!(e["reason"], wire);
        assert_eq!(e["message"], reason.message());
        ui.wait("local-stream-closed").await;
        assert!(!app.in_room().await, "{wire}: the client is forgotten");
        assert!(!app.has_local_stream().await, "{wire}: devices released");
        if let Some((c, _)) = _other {
            c.leave().await.unwrap();
        }
    }
}

/// Why the client of `events` was forced out (waits for `client-banned`).
async fn banned_for(events: &mut kaigi_sdk::EventStream) -> KickReason {
    match expect_event(events, "client-banned").await.0 {
        kaigi_sdk::ClientEvent::ClientBanned { reason, .. } => reason,
        other => unreachable!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_hosts_the_room_and_its_host_removes_and_ends() {
    let dir = std::env::temp_dir().join(format!("kaigi-app-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The dev app and the port are this test's own.
    std::env::set_var("KAIGI_DEV_APP", dir.join("dev-app.json"));
    std::env::set_var("KAIGI_LISTEN", "127.0.0.1:0");
    let (app, mut ui) = app().await;
    let joined = app
        .join_room(JoinForm {
            user_id: "host".into(),
            str_room_id: Some("standup".into()),
            camera: Some("test-pattern".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(joined.embedded && joined.publishing);
    let cmd = joined.bot_command.clone().unwrap();
    assert!(
        cmd.contains(&joined.server) && cmd.contains("--str-room 'standup'"),
        "{cmd}"
    );
    // A participant with the embedded app's credentials joins the same room.
    let e = app.embedded().await.unwrap();
    let user = kaigi_sdk::UserId::new("guest").unwrap();
    let guest = kaigi_sdk::Client::new(kaigi_sdk::ClientOptions::new(
        e.url(),
        e.sdk_app_id(),
        user.clone(),
        kaigi_proto::usersig::generate(e.sdk_app_id(), e.secret_key(), "guest", 600, now()),
    ))
    .unwrap();
    let mut guest_events = guest.events();
    guest
        .join(str_room("standup"), kaigi_sdk::Role::Anchor)
        .await
        .unwrap();
    assert_eq!(ui.wait("peer-join").await["userId"], "guest");
    expect_event(&mut guest_events, "stream-subscribed").await;
    assert!(joined.host, "the app hosts what its own server holds");

    // The host removes the guest: the guest is forced out as by RemoveUser.
    app.remove_participant("guest").await.unwrap();
    assert_eq!(
        banned_for(&mut guest_events).await,
        KickReason::RemovedByAdmin
    );
    assert_eq!(ui.wait("peer-leave").await["userId"], "guest");
    let gone = app.remove_participant("guest").await.unwrap_err();
    assert_eq!(gone.code, AppErrorCode::NotInRoom, "{gone:?}");

    // The guest comes back; the host ends the meeting for all, itself too.
    guest
        .join(str_room("standup"), kaigi_sdk::Role::Anchor)
        .await
        .unwrap();
    assert_eq!(ui.wait("peer-join").await["userId"], "guest");
    app.end_meeting().await.unwrap();
    assert_eq!(
        banned_for(&mut guest_events).await,
        KickReason::RoomDismissed
    );
    assert_eq!(ui.wait("client-banned").await["reason"], "room-dismissed");
    ui.wait("local-stream-closed").await;
    // Out of the room, nobody hosts anything.
    let not_host = app.end_meeting().await.unwrap_err();
    assert_eq!(not_host.code, AppErrorCode::NotHost, "{not_host:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tiles_need_the_token_and_forms_are_checked() {
    let (app, _ui) = app().await;
    let ep = app.frame_endpoint();
    assert!(
        tokio_tungstenite::connect_async(format!("{}/local?token=wrong", ep.url))
            .await
            .is_err(),
        "a wrong token is refused"
    );
    let bad = app
        .join_room(JoinForm {
            user_id: "a b".into(),
            room_id: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code, AppErrorCode::InvalidParameter);
    let no_room = app
        .join_room(JoinForm {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_room.code, AppErrorCode::InvalidParameter);
    let no_sig = app
        .join_room(JoinForm {
            server: Some("ws://127.0.0.1:9".into()),
            sdk_app_id: Some(1),
            user_id: "alice".into(),
            room_id: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_sig.code, AppErrorCode::InvalidParameter);
}

/// (width, height, frame number) of a view message, checking its shape.
fn trailer(msg: &[u8]) -> (u32, u32, u32) {
    kaigi_app::frames::read_frame_message(msg).expect("a frame message")
}

#[cfg(feature = "ipc-transports")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_ipc_pulled_and_pushed_end_with_the_tile() {
    let (app, _ui) = app().await;
    // A view may open before its tile has a source.
    let pulled = app.open_view("local", (0, 0)).unwrap();
    app.start_preview("alice", Some("test-pattern"), None)
        .await
        .unwrap();
    let first = within("a pulled frame", app.next_frame(pulled))
        .await
        .unwrap();
    let second = within("a pulled frame", app.next_frame(pulled))
        .await
        .unwrap();
    let (a, b) = (trailer(&first), trailer(&second));
    assert_eq!((a.0, a.1), (640, 360));
    assert_eq!(b.2, a.2 + 1, "numbered per view");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let _pushed = app
        .push_view("local", (0, 0), move |m| tx.send(m).is_ok())
        .unwrap();
    for _ in 0..3 {
        let m = within("a pushed frame", rx.recv()).await.unwrap();
        assert_eq!(trailer(&m).0, 640);
    }
    assert_eq!(app.open_views(), 2);

    // The preview stops: both views end with an empty message and are gone.
    app.stop_preview().await;
    let end = within("the pulled view's end", async {
        loop {
            let m = app.next_frame(pulled).await.unwrap();
            if m.is_empty() {
                return m;
            }
        }
    })
    .await;
    assert!(end.is_empty());
    within("the pushed view's end", async {
        while let Some(m) = rx.recv().await {
            if m.is_empty() {
                return;
            }
        }
        panic!("the pushed view stopped without its end message");
    })
    .await;
    assert_eq!(
        app.next_frame(pulled).await.unwrap_err().code,
        AppErrorCode::UnknownView
    );
    within("the pushed view forgotten", async {
        while app.open_views() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // Closing a view wakes a pending pull; views are bounded.
    let waiting = app.open_view("nobody", (0, 0)).unwrap();
    let (pending, ()) = tokio::join!(app.next_frame(waiting), async {
        tokio::task::yield_now().await;
        app.close_view(waiting);
    });
    assert!(pending.unwrap().is_empty(), "a closed view ends its pull");
    assert_eq!(app.open_views(), 0);
    let ids: Vec<u64> = (0..kaigi_app::ipc_views::MAX_IPC_VIEWS)
        .map(|_| app.open_view("nobody", (0, 0)).unwrap())
        .collect();
    assert_eq!(
        app.open_view("nobody", (0, 0)).unwrap_err().code,
        AppErrorCode::TooManyViews
    );
    for id in ids {
        app.close_view(id);
    }
    assert_eq!(app.open_views(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_get_frames_at_the_tile_size() {
    use futures_util::SinkExt;
    let (app, _ui) = app().await;
    app.start_preview("alice", Some("test-pattern"), None)
        .await
        .unwrap();
    // The WebSocket: the size in the URL, then a new size as text.
    let ep = app.frame_endpoint();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/local?token={}&w=354&h=196",
        ep.url, ep.token
    ))
    .await
    .unwrap();
    let (w, h, _) = within("a fitted frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return trailer(&b),
                Some(Ok(_)) => continue,
                other => panic!("the view closed: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!((w, h), (348, 196), "640×360 fitted into 354×196");
    ws.send(Message::Text("160x200".into())).await.unwrap();
    within("a frame at the new size", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if trailer(&b).0 == 160 => {
                    assert_eq!(trailer(&b).1, 90);
                    return;
                }
                Some(Ok(_)) => continue,
                other => panic!("the view closed: {other:?}"),
            }
        }
    })
    .await;
    // The IPC: the size when the view opens; a bigger box: as they are.
    #[cfg(feature = "ipc-transports")]
    {
        let small = app.open_view("local", (320, 320)).unwrap();
        let m = within("a pulled frame", app.next_frame(small))
            .await
            .unwrap();
        assert_eq!((trailer(&m).0, trailer(&m).1), (320, 180));
        let big = app.open_view("local", (1920, 1080)).unwrap();
        let m = within("a pulled frame", app.next_frame(big)).await.unwrap();
        assert_eq!((trailer(&m).0, trailer(&m).1), (640, 360));
    }
}

/// Waits for a frame of size `want` on a tile's WebSocket view.
async fn frame_at<S>(ws: &mut S, want: (u32, u32), what: &str)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    within(what, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if (trailer(&b).0, trailer(&b).1) == want => return,
                Some(Ok(_)) => continue,
                other => panic!("the view closed: {other:?}"),
            }
        }
    })
    .await
}

/// The app tells the server the size it shows each remote tile at, so a
/// small tile gets a small simulcast layer and a large one the top layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiles_size_chooses_the_layer_it_receives() {
    use futures_util::SinkExt;
    let server = TestServer::start().await;
    let (app, mut ui) = app().await;
    let mut f = form(&server, "alice", 35);
    f.camera = None;
    f.microphone = None;
    app.join_room(f).await.unwrap();
    let (bot, _) = server.joined("bot", &room(35)).await;
    // 640×480 in three layers.
    let stream =
        kaigi_sdk::LocalStream::synthetic(bot.user_id(), kaigi_sdk::SyntheticSource::default())
            .unwrap();
    within("publish", bot.publish(&stream)).await.unwrap();
    ui.wait("stream-subscribed").await;
    let ep = app.frame_endpoint();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/bot?token={}&w=200&h=150", ep.url, ep.token))
            .await
            .unwrap();
    // Frames come fitted into the tile (at most 200×150) until the server
    // sends the 160×120 layer, which is smaller than the tile.
    frame_at(&mut ws, (160, 120), "the small layer for a small tile").await;
    ws.send(Message::Text("1280x960".into())).await.unwrap();
    frame_at(&mut ws, (640, 480), "the top layer for a large tile").await;
    app.leave_room().await.unwrap();
}

/// The audio settings switch the open microphone's processing at once and
/// carry over to every stream opened later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_settings_apply_now_and_to_later_streams() {
    let (app, _ui) = app().await;
    let all_on = kaigi_app::AudioSettings {
        echo_cancellation: true,
        noise_suppression: true,
        auto_gain: true,
    };
    assert_eq!(app.audio_processing().await, all_on, "on by default");
    app.start_preview("alice", None, Some("tone"))
        .await
        .unwrap();
    assert_eq!(app.audio_processing().await, all_on);
    let no_aec = kaigi_app::AudioSettings {
        echo_cancellation: false,
        ..all_on
    };
    app.set_audio_processing(no_aec).await;
    assert_eq!(app.audio_processing().await, no_aec, "the open stream");
    app.stop_preview().await;
    app.start_preview("alice", Some("test-pattern"), Some("tone"))
        .await
        .unwrap();
    assert_eq!(app.audio_processing().await, no_aec, "a new stream");
}

/// The open microphone's level reaches the UI's meter ten times a second,
/// before any call (the preview), and stops when the stream closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microphone_level_feeds_the_meter() {
    let (app, mut ui) = app().await;
    app.start_preview("alice", None, Some("tone"))
        .await
        .unwrap();
    within("a level from the tone", async {
        while ui.wait("local-audio-level").await["level"].as_u64() == Some(0) {}
    })
    .await;
    app.stop_preview().await;
    ui.wait("local-stream-closed").await;
    // At most one more level (a tick already under way), then none over
    // half a second.
    let mut late = 0;
    let end = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, ui.rx.recv()).await {
        if e.name() == "local-audio-level" {
            late += 1;
        }
    }
    assert!(late <= 1, "{late} levels after the stream closed");
}

#[tokio::test]
async fn an_invite_is_all_a_guest_needs_and_links_reach_the_join_screen() {
    let server = TestServer::start().await;
    let (_host, _host_events) = server.joined("host", &str_room("review")).await;
    let made = server
        .request(&kaigi_proto::admin::Request::CreateInvite {
            room: str_room("review"),
            expire_secs: 600,
        })
        .await
        .unwrap();
    let code = made["Code"].as_str().unwrap().to_owned();
    let link = kaigi_proto::invite::Invite::link(&server.url(), &code.parse().unwrap());
    let (app, mut ui) = app().await;

    // A link given to the app (its command line, a second launch) goes to
    // the UI once; other arguments do not.
    assert!(!app.open_link("--verbose"));
    assert!(app.open_link(&link));
    assert_eq!(ui.wait("invite-opened").await["link"], link.as_str());
    assert_eq!(app.take_opened_invite().as_deref(), Some(link.as_str()));
    assert_eq!(app.take_opened_invite(), None);

    let invited = |user: &str, invite: &str| JoinForm {
        user_id: user.into(),
        invite: Some(invite.into()),
        camera: Some("test-pattern".into()),
        ..Default::default()
    };
    // Mistakes, each with its own code: a taken name, an unknown code, junk,
    // a bare code with no server.
    let taken = app.join_room(invited("host", &link)).await.unwrap_err();
    assert_eq!(taken.code, AppErrorCode::NameTaken, "{taken:?}");
    let unknown = kaigi_proto::invite::Invite::link(
        &server.url(),
        &kaigi_proto::invite::InviteCode::from_bits(99),
    );
    let e = app.join_room(invited("carol", &unknown)).await.unwrap_err();
    assert_eq!(e.code, AppErrorCode::InviteNotFound, "{e:?}");
    let e = app
        .join_room(invited("carol", "not an invite"))
        .await
        .unwrap_err();
    assert_eq!(e.code, AppErrorCode::InvalidInvite, "{e:?}");
    let e = app.join_room(invited("carol", &code)).await.unwrap_err();
    assert_eq!(e.code, AppErrorCode::InvalidInvite, "{e:?}");

    // The name is all it takes; the guest may pass the invite on, not revoke it.
    let joined = app.join_room(invited("carol", &link)).await.unwrap();
    assert_eq!(joined.room, "review");
    assert!(!joined.host && !joined.embedded);
    let invite = joined.invite.clone().unwrap();
    assert_eq!(invite.code, code);
    assert!(!invite.revocable);
    assert_eq!(app.create_invite().await.unwrap(), invite);
    let e = app.revoke_invite().await.unwrap_err();
    assert_eq!(e.code, AppErrorCode::NotHost, "{e:?}");
    assert_eq!(
        server.users_in(&str_room("review")).await.unwrap(),
        vec!["host", "carol"]
    );
    app.leave_room().await.unwrap();
}

#[tokio::test]
async fn with_the_apps_key_the_app_hosts_a_room_on_another_server() {
    let server = TestServer::start().await;
    let (app, mut ui) = app().await;
    let joined = app
        .join_room(JoinForm {
            server: Some(server.url()),
            sdk_app_id: Some(APP.0),
            user_id: "lead".into(),
            secret_key: Some(KEY.into()),
            str_room_id: Some("planning".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(joined.host && !joined.embedded, "{joined:?}");
    let (guest, mut guest_events) = server.joined("guest", &str_room("planning")).await;
    assert_eq!(ui.wait("peer-join").await["userId"], "guest");

    // Invites through the server's admin API: the link names that server.
    let invite = app.create_invite().await.unwrap();
    assert!(invite.revocable);
    assert_eq!(
        invite.link,
        format!("kaigi://invite/{}?server={}", invite.code, server.url())
    );
    let code: kaigi_proto::invite::InviteCode = invite.code.parse().unwrap();
    let got = kaigi_sdk::invite::redeem(&server.url(), &code, "visitor", None)
        .await
        .unwrap();
    assert_eq!(got.room().unwrap(), str_room("planning"));
    app.revoke_invite().await.unwrap();
    match kaigi_sdk::invite::redeem(&server.url(), &code, "late", None).await {
        Err(kaigi_sdk::ClientError::Invite { code, .. }) => assert_eq!(code, "INVITE_REVOKED"),
        r => panic!("{r:?}"),
    }

    // Remove, then end for all.
    app.remove_participant("guest").await.unwrap();
    assert_eq!(
        banned_for(&mut guest_events).await,
        KickReason::RemovedByAdmin
    );
    drop(guest);
    app.end_meeting().await.unwrap();
    assert_eq!(ui.wait("client-banned").await["reason"], "room-dismissed");

    // Without the key, the same join is no host.
    let joined = app
        .join_room(JoinForm {
            server: Some(server.url()),
            sdk_app_id: Some(APP.0),
            user_id: "member".into(),
            user_sig: Some(sig("member")),
            str_room_id: Some("planning".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!joined.host);
    let e = app.end_meeting().await.unwrap_err();
    assert_eq!(e.code, AppErrorCode::NotHost, "{e:?}");
    app.leave_room().await.unwrap();
}
