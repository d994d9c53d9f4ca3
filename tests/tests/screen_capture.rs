//! Screen capture on a real X server (Xvfb, started by the test on a free
//! display): a known picture drawn on the screen comes back pixel for
//! pixel, survives H.264 tuned for screens at PSNR ≥ 30 dB (1280×720),
//! and a screen larger than 1920×1080 is scaled down keeping its aspect.

use kaigi_media::screen::{bgrx_to_i420, ScreenTarget, X11Screen};
use kaigi_media::{Content, H264Decoder, H264Encoder, H264Settings, VideoFrame};
use kaigi_tests::xvfb::{draw, picture, psnr, window, Xvfb};

#[test]
fn a_drawn_screen_is_captured_exactly_and_survives_screen_coding() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w as u32, h as u32);
    let pic = picture(w, h);
    draw(&x.display, &pic, w, h, 0);
    let want = bgrx_to_i420(&pic, w, h).unwrap();

    let mut cap = X11Screen::open(Some(&x.display), ScreenTarget::Screen).unwrap();
    assert_eq!(cap.screen_size().unwrap(), (w as u16, h as u16));
    let got = cap.grab().unwrap();
    assert_eq!((got.width, got.height), (w, h));
    // A change after the first frame (read through DAMAGE, only its rows)
    // is in the next one, and the rest stays as it was.
    let mut changed = pic.clone();
    for y in 301..333 {
        for x in 100..900 {
            changed[(y * w + x) * 4 + 1] ^= 0xff;
        }
    }
    draw(&x.display, &changed[301 * w * 4..333 * w * 4], w, 32, 301);
    let after = cap.grab().unwrap();
    let expect = bgrx_to_i420(&changed, w, h).unwrap();
    let differing = after
        .data
        .iter()
        .zip(&expect.data)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "the changed rows read ({differing} bytes differ)"
    );
    draw(&x.display, &pic, w, h, 0);
    let got = cap.grab().unwrap();
    let differing = got
        .data
        .iter()
        .zip(&want.data)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "captured pixel for pixel ({differing} bytes differ)"
    );
    assert!(got.captured_us > 0);

    // Ten frames of the still screen at 10 fps, 1.5 Mbit/s, tuned for
    // screens: the decoded picture keeps its text.
    let mut enc = H264Encoder::new(H264Settings {
        bitrate_bps: 1_500_000,
        fps: 10.0,
        keyframe_interval: 100_000,
        content: Content::Screen,
    })
    .unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let mut last: Option<VideoFrame> = None;
    let mut bytes = 0;
    for _ in 0..10 {
        let frame = cap.grab().unwrap();
        if let Some(e) = enc.encode(&frame).unwrap() {
            bytes += e.data.len();
            if let Some(d) = dec.decode(&e.data).unwrap() {
                last = Some(d);
            }
        }
    }
    let last = last.expect("decoded frames");
    assert_eq!((last.width, last.height), (w, h));
    let db = psnr(last.y(), want.y());
    eprintln!("screen coding: PSNR {db:.1} dB, {bytes} bytes for 10 frames");
    assert!(db >= 30.0, "PSNR {db:.1} dB");
    assert!(
        bytes < 1_500_000 / 8 * 2,
        "{bytes} bytes for 1 s of a still screen"
    );
}

#[test]
fn a_large_screen_is_scaled_to_1080p_keeping_its_aspect_and_bad_targets_fail_clearly() {
    let x = Xvfb::start(2560, 1600);
    let mut cap = X11Screen::open(Some(&x.display), ScreenTarget::Screen).unwrap();
    let f = cap.grab().unwrap();
    assert_eq!(
        (f.width, f.height),
        (1728, 1080),
        "16:10 fitted into 1920×1080"
    );
    // No window manager: the root's children (none here) are the windows.
    assert!(cap.windows().unwrap().is_empty());
    let mut gone = X11Screen::open(Some(&x.display), ScreenTarget::Window(0x7fff_fff0)).unwrap();
    assert!(gone.grab().is_err(), "a window that does not exist");
    assert!(X11Screen::open(Some(":4094"), ScreenTarget::Screen).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_screen_reaches_another_client_sharp() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w as u32, h as u32);
    let pic = picture(w, h);
    draw(&x.display, &pic, w, h, 0);
    let want = bgrx_to_i420(&pic, w, h).unwrap();

    let server = kaigi_tests::TestServer::start().await;
    let room = kaigi_tests::room(61);
    let (alice, _alice_events) = server.joined("alice", &room).await;
    let (bob, mut bob_events) = server.joined("bob", &room).await;
    let screen = kaigi_sdk::LocalStream::new(
        alice.user_id(),
        kaigi_sdk::LocalStreamConfig {
            video: kaigi_sdk::VideoInput::Screen {
                display: Some(x.display.clone()),
                window: None,
            },
            audio: kaigi_sdk::AudioInput::None,
            fps: 10,
            video_bitrate_bps: 2_000_000,
            simulcast: false,
            ..Default::default()
        },
    )
    .expect("the screen opens");
    kaigi_tests::within("publish", alice.publish(&screen))
        .await
        .unwrap();
    kaigi_tests::expect_event(&mut bob_events, "stream-subscribed").await;
    let remote = bob
        .remote_streams()
        .into_iter()
        .find(|s| s.user_id().as_str() == "alice")
        .expect("alice's stream");
    let mut video = remote.video();
    // The first full-size pictures (the estimate starts low, then the
    // encoder reaches its quality): the best of the first few seconds.
    let best = kaigi_tests::within("a sharp picture", async {
        loop {
            video.changed().await.expect("the stream goes on");
            let Some(f) = video.borrow_and_update().clone() else {
                continue;
            };
            if (f.width, f.height) == (w, h) {
                let db = psnr(f.y(), want.y());
                if db >= 30.0 {
                    return db;
                }
            }
        }
    })
    .await;
    eprintln!("shared screen at the receiver: {best:.1} dB");
    screen.close();
}

#[test]
fn windows_are_listed_with_titles_and_thumbnails_and_one_window_can_be_shared() {
    let x = Xvfb::start(1280, 720);
    let red_window = window(&x.display, "Slides", (0, 0, 640, 360), 0xff0000);
    let blue_window = window(&x.display, "Editor", (640, 360, 320, 240), 0x0000ff);
    let (red, blue) = (red_window.id, blue_window.id);
    let cap = X11Screen::open(Some(&x.display), ScreenTarget::Screen).unwrap();
    let mut listed = cap.windows().unwrap();
    listed.sort_by(|a, b| a.title.cmp(&b.title));
    let seen: Vec<_> = listed
        .iter()
        .map(|w| (w.title.as_str(), w.id, w.width, w.height))
        .collect();
    assert_eq!(
        seen,
        [("Editor", blue, 320, 240), ("Slides", red, 640, 360)]
    );
    // A thumbnail fits its box and shows the window's colour.
    let thumb = cap.thumbnail(ScreenTarget::Window(red), 160, 160).unwrap();
    assert_eq!((thumb.width, thumb.height), (160, 90));
    let mid = thumb.y()[45 * 160 + 80];
    assert_eq!(mid, 82, "pure red's luma");
    // Sharing one window sends that window only, at its own size.
    let mut one = X11Screen::open(Some(&x.display), ScreenTarget::Window(blue)).unwrap();
    let f = one.grab().unwrap();
    assert_eq!((f.width, f.height), (320, 240));
    assert!(f.y().iter().all(|&y| y == 41), "pure blue everywhere");
}
