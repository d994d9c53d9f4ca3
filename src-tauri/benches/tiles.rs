//! Video into the window: the local preview and 4 remote tiles, each
//! 640×360 at 30 fps, in the real app under Xvfb, for each path frames can
//! take into the web view — the loopback WebSocket, the `next_frame`
//! command (raw-bytes response), a Tauri channel (raw bytes) — and `off`
//! (tiles not fed: the same call, decoding and publishing, nothing drawn)
//! as the baseline. For each: the frames each tile drew per second, and
//! the CPU of the app's processes (the Rust process, WebKit's web and
//! network processes) and of Xvfb over the same window. Delivery and
//! drawing cost = a path's CPU minus the baseline's.
//!
//! `cargo bench -p kaigi-desktop --features ipc-transports --bench tiles` (add `-- --quick` for a
//! short window). Writes `bench-results/desktop-tiles.json` and its section
//! of `BENCHMARKS.md`; screenshots go to `target/*/bench-screenshots/`.

#[path = "../tests/driver/mod.rs"]
#[allow(dead_code)]
mod driver;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use driver::Driver;
use kaigi_proto::devapp::DevApp;
use kaigi_proto::{usersig, Role, RoomId, UserId};
use kaigi_sdk::{AudioInput, Client, ClientOptions, LocalStream, LocalStreamConfig, VideoInput};
use serde_json::{json, Value};

const ROOM: &str = "bench-tiles";
const TRANSPORTS: [&str; 4] = ["off", "websocket", "ipc", "channel"];
/// The run that measures the app as people use it: the WebSocket path,
/// the others publishing as `kaigi bot` and the app do (640×480 in
/// simulcast layers; the app takes the layer its tiles need).
const CALL: &str = "call";
const REMOTES: usize = 4;
const GOAL_FPS: f64 = 25.0;

/// CPU ticks (user + system) of the processes under `root`, by kind.
fn cpu_ticks(root: u32) -> HashMap<&'static str, u64> {
    let mut by_kind = HashMap::new();
    for (_, kind, ticks) in driver::app_processes(root) {
        *by_kind.entry(kind).or_insert(0) += ticks;
    }
    by_kind
}

/// Resident and proportional memory (MiB) of the app's own processes
/// (the Rust process and WebKit's; not Xvfb), from `smaps_rollup`:
/// `{"app": [rss, pss], "web": …, "network": …, "total": …}`.
fn memory_mib(root: u32) -> Value {
    let mut by_kind: HashMap<&str, (f64, f64)> = HashMap::new();
    for (pid, kind, _) in driver::app_processes(root) {
        if kind == "xvfb" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        let e = by_kind.entry(kind).or_insert((0.0, 0.0));
        e.0 += field("Rss:");
        e.1 += field("Pss:");
    }
    let total = by_kind
        .values()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let mut out = serde_json::Map::new();
    for (k, (rss, pss)) in by_kind.into_iter().chain([("total", total)]) {
        out.insert(k.to_owned(), json!([round(rss), round(pss)]));
    }
    Value::Object(out)
}

/// Each tile's drawn-frame count, renderer and path.
const TILES_JS: &str = "return [...document.querySelectorAll('#tile-local canvas, .tile.remote canvas')].map(c => ({tile: c.closest('figure').dataset.user || 'local', frames: Number(c.dataset.frames || 0), fps: Number(c.dataset.fps || 0), renderer: c.dataset.renderer || '', transport: c.dataset.transport || ''}))";

struct Bot {
    client: Client,
    _stream: LocalStream,
}

/// The remote publishers: as the path comparison has them (`fixed`: one
/// 640×360 layer, every tile decoded and scaled from full size, nothing
/// received), or as people in a call (`watch`: publishing as `kaigi bot`
/// and the app do, 640×480 in simulcast layers, and receiving everyone
/// else, see [`watch_as_tiles`]; not decoding, which would only compete
/// for the machine's cores).
async fn bots(dev: &DevApp, url: &str, watch: bool) -> Vec<Bot> {
    let fixed = !watch;
    let mut out = Vec::new();
    for i in 0..REMOTES {
        let user = UserId::new(format!("bot{i}")).expect("a user id");
        let sig = usersig::generate(
            dev.sdk_app_id,
            &dev.secret_key,
            user.as_str(),
            3600,
            kaigi_tests::now(),
        );
        let mut opts = ClientOptions::new(url.to_owned(), dev.sdk_app_id, user.clone(), sig);
        opts.auto_subscribe = watch;
        opts.decode = false;
        let client = Client::new(opts).expect("a client");
        client
            .join(RoomId::str(ROOM).expect("a room"), Role::Anchor)
            .await
            .expect("a bot joins");
        let stream = LocalStream::new(
            &user,
            LocalStreamConfig {
                video: if fixed {
                    VideoInput::TestPattern {
                        width: 640,
                        height: 360,
                    }
                } else {
                    VideoInput::TestPattern {
                        width: 640,
                        height: 480,
                    }
                },
                audio: AudioInput::Tone {
                    hz: 300.0 + 100.0 * i as f64,
                },
                fps: 30,
                video_bitrate_bps: if fixed { 800_000 } else { 1_000_000 },
                // One layer for the paths: they are compared at one fixed
                // size.
                simulcast: !fixed,
                // A tone: no processing either way.
                audio_processing: kaigi_sdk::AudioProcessing::NONE,
            },
        )
        .expect("a synthetic stream");
        client.publish(&stream).await.expect("a bot publishes");
        out.push(Bot {
            client,
            _stream: stream,
        });
    }
    out
}

/// The bots show everyone else in tiles the size of the app's remote
/// tiles (`box_px`, device pixels), with the app's margin for a layer
/// larger than its tile: what each tells the server, as the app does.
async fn watch_as_tiles(bots: &[Bot], box_px: (f64, f64)) {
    let limit = ((box_px.0 * 1.5) as u32, (box_px.1 * 1.5) as u32);
    for (i, bot) in bots.iter().enumerate() {
        let others = std::iter::once("host".to_owned()).chain(
            (0..bots.len())
                .filter(|&j| j != i)
                .map(|j| format!("bot{j}")),
        );
        for other in others {
            let other = UserId::new(other).expect("a user id");
            bot.client
                .set_remote_video_size(&other, limit.0, limit.1)
                .await
                .expect("a tile size");
        }
    }
    println!(
        "      call: the others show each other at most {}×{}",
        limit.0, limit.1
    );
}

async fn measure(run: &str, window: Duration, shots: PathBuf) -> Value {
    let transport = if run == CALL { "websocket" } else { run };
    let app = PathBuf::from(env!("CARGO_BIN_EXE_kaigi-desktop"));
    let work = std::env::temp_dir().join(format!("kaigi-bench-tiles-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a work folder");
    let dev_app = work.join("dev-app.json");
    let envs: [(&str, String); 7] = [
        ("KAIGI_DEV_APP", dev_app.to_string_lossy().into_owned()),
        ("KAIGI_LISTEN", "127.0.0.1:0".to_owned()),
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1".to_owned()),
        ("NO_AT_BRIDGE", "1".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        (
            "XDG_CONFIG_HOME",
            work.join("config").to_string_lossy().into_owned(),
        ),
        (
            "XDG_DATA_HOME",
            work.join("data").to_string_lossy().into_owned(),
        ),
    ];
    let (driver, d) = Driver::launch(&app, &envs, shots).await;
    d.until(
        "the join screen",
        "return !document.getElementById('join').disabled",
    )
    .await;
    d.js(&format!(
        "localStorage.setItem('kaigi.transport', '{transport}'); return true"
    ))
    .await;
    // Idle on the join screen, its preview playing (not drawn on `off`).
    if transport != "off" {
        d.until(
            "the preview playing",
            "return Number(document.getElementById('preview').dataset.frames || 0) > 30",
        )
        .await;
    }
    let idle_memory = memory_mib(driver.0.id());
    d.join("host", ROOM).await;
    let dev: DevApp = serde_json::from_str(
        &std::fs::read_to_string(&dev_app).expect("the embedded server's dev app"),
    )
    .expect("a dev app");
    let url = dev.server.clone().expect("the embedded server's address");
    let bots = bots(&dev, &url, run == CALL).await;
    d.until(
        "four remote tiles",
        &format!("return document.querySelectorAll('.tile.remote').length === {REMOTES}"),
    )
    .await;
    if run == CALL {
        let b = d
            .js("const r = document.querySelector('.tile.remote canvas').getBoundingClientRect(); return [r.width * devicePixelRatio, r.height * devicePixelRatio]")
            .await;
        watch_as_tiles(
            &bots,
            (b[0].as_f64().unwrap_or(0.0), b[1].as_f64().unwrap_or(0.0)),
        )
        .await;
        // Settling: publishers stop the layers nobody needs after 5 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    if transport != "off" {
        // Every tile drawing (up to 30 s): then the measurement starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let tiles = d.js(TILES_JS).await;
            let all = tiles.as_array().is_some_and(|t| {
                t.len() == REMOTES + 1 && t.iter().all(|t| t["fps"].as_f64() >= Some(GOAL_FPS))
            });
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!("{run:>10}: measuring for {} s", window.as_secs());
    let root = driver.0.id();
    let hz = 100.0; // USER_HZ on Linux
    let (t0, c0, f0) = (Instant::now(), cpu_ticks(root), d.js(TILES_JS).await);
    tokio::time::sleep(window).await;
    let (c1, f1) = (cpu_ticks(root), d.js(TILES_JS).await);
    let secs = t0.elapsed().as_secs_f64();
    let call_memory = memory_mib(root);
    d.shot(&format!("tiles-{run}")).await;
    let pct = |k: &str| {
        let used = c1
            .get(k)
            .unwrap_or(&0)
            .saturating_sub(*c0.get(k).unwrap_or(&0));
        (used as f64 / hz / secs * 1000.0).round() / 10.0
    };
    let before: HashMap<String, f64> = f0
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["tile"].as_str().unwrap_or("").to_owned(),
                t["frames"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let tiles: Vec<Value> = f1
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let name = t["tile"].as_str().unwrap_or("").to_owned();
            let drawn =
                t["frames"].as_f64().unwrap_or(0.0) - before.get(&name).copied().unwrap_or(0.0);
            json!({"tile": name, "fps": (drawn / secs * 10.0).round() / 10.0,
                   "renderer": t["renderer"], "transport": t["transport"]})
        })
        .collect();
    let min_fps = tiles
        .iter()
        .filter_map(|t| t["fps"].as_f64())
        .fold(f64::INFINITY, f64::min);
    for b in &bots {
        let _ = b.client.leave().await;
    }
    d.quit().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&work);
    let (app_cpu, web, net, xvfb) = (pct("app"), pct("web"), pct("network"), pct("xvfb"));
    let renderer = tiles
        .first()
        .and_then(|t| t["renderer"].as_str())
        .unwrap_or("")
        .to_owned();
    println!(
        "{run:>10}: min {min_fps:.1} fps over {} tiles ({renderer}); CPU % of a core: app {app_cpu}, web {web}, network {net}, Xvfb {xvfb}; memory MiB [RSS, PSS] idle {idle_memory}, in the call {call_memory}",
        tiles.len()
    );
    json!({"run": run, "transport": transport, "seconds": secs, "tiles": tiles, "min_fps": if min_fps.is_finite() { min_fps } else { 0.0 },
           "renderer": renderer, "memory_mib": {"idle": idle_memory, "call": call_memory},
           "cpu_pct": {"app": app_cpu, "web": web, "network": net, "xvfb": xvfb,
                       "app_total": ((app_cpu + web + net) * 10.0).round() / 10.0}})
}

async fn run(quick: bool) {
    let window = Duration::from_secs(if quick { 4 } else { 15 });
    let shots = PathBuf::from(env!("CARGO_BIN_EXE_kaigi-desktop"))
        .parent()
        .expect("the binary's folder")
        .join("bench-screenshots");
    // Runs named on the command line (`-- websocket call`) narrow it.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| TRANSPORTS.contains(&a.as_str()) || a == CALL)
        .collect();
    let mut results = Vec::new();
    for t in TRANSPORTS
        .into_iter()
        .chain([CALL])
        .filter(|t| named.is_empty() || named.iter().any(|n| n == t))
    {
        results.push(measure(t, window, shots.clone()).await);
    }
    if !named.is_empty() {
        return; // a partial run is not written down
    }
    let base = results[0]["cpu_pct"]["app_total"].as_f64().unwrap_or(0.0);
    let base_x = results[0]["cpu_pct"]["xvfb"].as_f64().unwrap_or(0.0);
    let (date, cores, cpu) = kaigi_tests::bench::machine();
    let mut body = format!(
        "## Video into the window (issue: the desktop app)\n\n\
         `cargo bench -p kaigi-desktop --features ipc-transports --bench tiles` — {date}, {cores} cores ({cpu}); the release app under Xvfb \
         (1280×800, software rendering), joined on its embedded server with its test-pattern camera published, \
         {REMOTES} remote publishers at 640×360/30 fps; {}-second window per path. CPU is % of one core; \
         \"app\" is the app's Rust process (embedded server, decoding {REMOTES} streams, encoding the local one, \
         frame delivery), \"WebKit\" its web and network processes. Delivery + drawing = the path's app and WebKit CPU \
         minus the `off` baseline's (same call, tiles not fed).\n\n\
         | path | slowest of 5 tiles, drawn fps (goal ≥ {GOAL_FPS}) | renderer | app | WebKit | Xvfb | delivery + drawing |\n\
         |---|---|---|---|---|---|---|\n",
        window.as_secs()
    );
    for r in results.iter().filter(|r| r["run"] != CALL) {
        let c = &r["cpu_pct"];
        let total = c["app_total"].as_f64().unwrap_or(0.0);
        let web = c["web"].as_f64().unwrap_or(0.0) + c["network"].as_f64().unwrap_or(0.0);
        let (fps, extra) = if r["transport"] == "off" {
            ("— (not drawn)".to_owned(), "baseline".to_owned())
        } else {
            let fps = r["min_fps"].as_f64().unwrap_or(0.0);
            let ok = if fps >= GOAL_FPS { "met" } else { "missed" };
            (
                format!("{fps:.1} ({ok})"),
                format!(
                    "{:.1} % (+ {:.1} % Xvfb)",
                    total - base,
                    c["xvfb"].as_f64().unwrap_or(0.0) - base_x
                ),
            )
        };
        body.push_str(&format!(
            "| {} | {fps} | {} | {:.1} % | {web:.1} % | {:.1} % | {extra} |\n",
            r["transport"].as_str().unwrap_or(""),
            r["renderer"]
                .as_str()
                .filter(|s| !s.is_empty() && r["transport"] != "off")
                .unwrap_or("—"),
            c["app"].as_f64().unwrap_or(0.0),
            c["xvfb"].as_f64().unwrap_or(0.0),
        ));
    }
    body.push('\n');
    // Memory and CPU of the app as people run it: the WebSocket path, in a
    // call of Kaigi publishers (`call`), and beside it the path run above
    // (every tile decoded and scaled from one full-size layer).
    let row = |r: &Value, what: &str, goal: bool| {
        let m = &r["memory_mib"];
        let mib = |when: &str, kind: &str, i: usize| m[when][kind][i].as_f64().unwrap_or(0.0);
        let cpu = r["cpu_pct"]["app_total"].as_f64().unwrap_or(0.0);
        let rss = mib("call", "total", 0);
        let goals = if goal {
            format!(
                "≤ 350 MiB RSS ({}), ≤ 60 % of a core ({})",
                if rss <= 350.0 { "met" } else { "missed" },
                if cpu <= 60.0 { "met" } else { "missed" },
            )
        } else {
            "—".to_owned()
        };
        format!(
            "| {what} | {:.0} / {:.0} / {:.0} = {:.0} MiB | {:.0} MiB | {:.0} / {:.0} / {:.0} = {rss:.0} MiB | {:.0} MiB | {cpu:.1} % | {goals} |\n",
            mib("idle", "app", 0), mib("idle", "web", 0), mib("idle", "network", 0), mib("idle", "total", 0),
            mib("idle", "total", 1),
            mib("call", "app", 0), mib("call", "web", 0), mib("call", "network", 0), mib("call", "total", 1),
        )
    };
    let call = results.iter().find(|r| r["run"] == CALL);
    let fixed = results.iter().find(|r| r["run"] == "websocket");
    if call.is_some() || fixed.is_some() {
        body.push_str(
            "Memory of the app's own processes (the Rust process and WebKit's web and network processes; \
             `smaps_rollup`) and their CPU, the WebSocket path: idle on the join screen (preview playing) and in the \
             5-person call. Before (issue: the app people expect): 651 MiB RSS (461 MiB PSS) in a 5-person call at 76 % \
             of a core, 456 MiB RSS idle on the join screen.\n\n\
             | call | idle RSS: app / web / network = total | idle PSS | in the call RSS: app / web / network = total | in the call PSS | CPU in the call | goal |\n\
             |---|---|---|---|---|---|---|\n",
        );
        if let Some(r) = call {
            body.push_str(&row(
                r,
                "a call as people have it: the others publish as Kaigi does (640×480, simulcast) and receive everyone at tile size; tiles take the layer they need, publishers send only layers someone needs",
                true,
            ));
        }
        if let Some(r) = fixed {
            body.push_str(&row(
                r,
                "the paths' call (one 640×360 layer each: every tile decoded and scaled from full size)",
                false,
            ));
        }
        body.push('\n');
    }
    println!("{body}");
    kaigi_tests::bench::write_results(
        "desktop-tiles",
        &body,
        &json!({"date": date, "cores": cores, "cpu": cpu, "results": results}),
    );
}

fn main() {
    kaigi_tests::bench::main(run);
}
