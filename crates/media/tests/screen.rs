//! Screen capture on a real X server (Xvfb, started by the test on a free
//! display): a known picture drawn on the screen comes back pixel for
//! pixel, survives H.264 tuned for screens at PSNR ≥ 30 dB (1280×720),
//! and a screen larger than 1920×1080 is scaled down keeping its aspect.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kaigi_media::screen::{bgrx_to_i420, ScreenTarget, X11Screen};
use kaigi_media::{Content, H264Decoder, H264Encoder, H264Settings, VideoFrame};
use x11rb::connection::Connection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, CreateGCAux, ImageFormat};

/// An Xvfb of its own, ended when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts one at `w`×`h`; returns once it accepts connections (it
    /// writes its display number to `-displayfd` when ready).
    fn start(w: u32, h: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset", "-screen", "0"])
            .arg(format!("{w}x{h}x24"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/setup installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().expect("Xvfb's display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A picture like a screen's: flat panels, 1-pixel lines, small "text"
/// (a dense pattern of 1–2 pixel strokes) and a gradient; BGRX.
fn picture(w: usize, h: usize) -> Vec<u8> {
    let mut p = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = if y < h / 8 {
                (40, 60, 90) // a title bar
            } else if x < w / 5 {
                (230, 230, 235) // a side panel
            } else if (x / 7 + y / 13) % 9 == 0 && (y % 13) < 9 && (x % 7) < 5 {
                // glyph-like strokes on white
                if (x + y) % 3 == 0 {
                    (20, 20, 20)
                } else {
                    (250, 250, 250)
                }
            } else if y > h * 7 / 8 {
                ((x * 255 / w) as u8, 128, (255 - x * 255 / w) as u8) // a gradient
            } else if x % 64 == 0 || y % 48 == 0 {
                (200, 200, 200) // grid lines
            } else {
                (255, 255, 255)
            };
            let i = (y * w + x) * 4;
            p[i..i + 4].copy_from_slice(&[b, g, r, 0]);
        }
    }
    p
}

/// Draws `bgrx` on the root window of `display`, in strips that fit a request.
fn draw(display: &str, bgrx: &[u8], w: usize, h: usize) {
    let (conn, screen) = x11rb::connect(Some(display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let depth = conn.setup().roots[screen].root_depth;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, root, &CreateGCAux::new()).unwrap();
    let rows = 32;
    for y in (0..h).step_by(rows) {
        let n = rows.min(h - y);
        conn.put_image(
            ImageFormat::Z_PIXMAP,
            root,
            gc,
            w as u16,
            n as u16,
            0,
            y as i16,
            0,
            depth,
            &bgrx[y * w * 4..(y + n) * w * 4],
        )
        .unwrap()
        .check()
        .expect("PutImage");
    }
    conn.sync().unwrap();
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[test]
fn a_drawn_screen_is_captured_exactly_and_survives_screen_coding() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w as u32, h as u32);
    let pic = picture(w, h);
    draw(&x.display, &pic, w, h);
    let want = bgrx_to_i420(&pic, w, h).unwrap();

    let mut cap = X11Screen::open(Some(&x.display), ScreenTarget::Screen).unwrap();
    assert_eq!(cap.screen_size().unwrap(), (w as u16, h as u16));
    let got = cap.grab().unwrap();
    assert_eq!((got.width, got.height), (w, h));
    let differing = got.data.iter().zip(&want.data).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "captured pixel for pixel ({differing} bytes differ)");
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
    assert!(bytes < 1_500_000 / 8 * 2, "{bytes} bytes for 1 s of a still screen");
}

#[test]
fn a_large_screen_is_scaled_to_1080p_keeping_its_aspect_and_bad_targets_fail_clearly() {
    let x = Xvfb::start(2560, 1600);
    let mut cap = X11Screen::open(Some(&x.display), ScreenTarget::Screen).unwrap();
    let f = cap.grab().unwrap();
    assert_eq!((f.width, f.height), (1728, 1080), "16:10 fitted into 1920×1080");
    // No window manager: the root's children (none here) are the windows.
    assert!(cap.windows().unwrap().is_empty());
    let mut gone = X11Screen::open(Some(&x.display), ScreenTarget::Window(0x7fff_fff0)).unwrap();
    assert!(gone.grab().is_err(), "a window that does not exist");
    assert!(X11Screen::open(Some(":4094"), ScreenTarget::Screen).is_err());
}
