//! A real X server for tests and benchmarks (Xvfb on a free display,
//! started and ended by the caller), and pictures to draw on it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, CreateGCAux, ImageFormat};
use x11rb::wrapper::ConnectionExt as _;

/// An Xvfb of its own, ended when dropped.
pub struct Xvfb {
    child: Child,
    /// `:N`.
    pub display: String,
}

impl Xvfb {
    /// Starts one at `w`×`h`; returns once it accepts connections (it
    /// writes its display number to `-displayfd` when ready).
    pub fn start(w: u32, h: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-noreset",
                "-screen",
                "0",
            ])
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

impl Xvfb {
    /// The server's process id (its CPU is part of what a capture costs).
    pub fn pid(&self) -> u32 {
        self.child.id()
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
pub fn picture(w: usize, h: usize) -> Vec<u8> {
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

/// Draws `bgrx` (`w` × `h`) on the root window of `display` with its top
/// at row `top`, in strips that fit a request.
pub fn draw(display: &str, bgrx: &[u8], w: usize, h: usize, top: usize) {
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
            (top + y) as i16,
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

/// A mapped top-level window of a test's own, alive until dropped (its
/// X connection closes, and the server destroys it).
pub struct TestWindow {
    /// Its X id.
    pub id: u32,
    _conn: x11rb::rust_connection::RustConnection,
}

/// Makes a mapped top-level window named `title` on `display` at
/// `(x, y, w, h)`, filled with one colour (`0xRRGGBB`).
pub fn window(
    display: &str,
    title: &str,
    (x, y, w, h): (i16, i16, u16, u16),
    rgb: u32,
) -> TestWindow {
    use x11rb::protocol::xproto::{AtomEnum, CreateWindowAux, PropMode, WindowClass};
    let (conn, screen) = x11rb::connect(Some(display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let id = conn.generate_id().unwrap();
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        id,
        root,
        x,
        y,
        w,
        h,
        0,
        WindowClass::INPUT_OUTPUT,
        x11rb::COPY_FROM_PARENT,
        &CreateWindowAux::new().background_pixel(rgb),
    )
    .unwrap();
    conn.change_property8(
        PropMode::REPLACE,
        id,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        title.as_bytes(),
    )
    .unwrap();
    conn.map_window(id).unwrap();
    conn.sync().unwrap();
    TestWindow { id, _conn: conn }
}

/// The PSNR of plane `a` against plane `b` (8-bit samples), in dB
/// (infinite when they are equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
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

/// A stream sharing X display `display` as `user`'s screen at 10 fps (no
/// audio, one layer): what Share makes.
pub fn screen_stream(user: &kaigi_sdk::UserId, display: &str) -> kaigi_sdk::LocalStream {
    kaigi_sdk::LocalStream::new(
        user,
        kaigi_sdk::LocalStreamConfig {
            video: kaigi_sdk::VideoInput::Screen {
                display: Some(display.to_owned()),
                window: None,
            },
            audio: kaigi_sdk::AudioInput::None,
            fps: 10,
            video_bitrate_bps: 2_000_000,
            simulcast: false,
            ..Default::default()
        },
    )
    .expect("the screen opens")
}
