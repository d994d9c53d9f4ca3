//! The real app binary in a real window under Xvfb, driven over WebDriver
//! (tauri-driver + WebKitWebDriver) as a person would: join through the
//! form on the embedded server; switch a sound setting; see a bot's
//! video; leave; rejoin; and each forced exit — a bot with the same
//! name, `kaigi admin remove-user`, `kaigi admin dismiss-room` — shows
//! the kicked-out dialog with its reason, whose OK returns to the join
//! screen (or Rejoin rejoins); then a server of one's own (the advanced
//! fields) goes away and comes back: the reconnecting banner shows and
//! goes; it goes away for longer than the app keeps trying: the user is
//! told and rejoins. On the way: the join screen and the room fit the
//! default and the smallest window, Japanese keeps the inputs whole, Stop
//! video stops the own tile; sharing the screen (the picker, the bar, a
//! bot receiving it) and a bot's shared screen on the stage. Each step
//! saves a screenshot under
//! `target/e2e-screenshots/`.

mod driver;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use driver::{Driver, Proc};
use serde_json::json;

const ROOM: &str = "e2e-standup";
const NAME: &str = "alice";

/// Everything of the room screen a person needs is on screen, and the page
/// does not scroll (the tile grid takes what is left).
const FITS: &str = "const leave = document.getElementById('leave').getBoundingClientRect(); \
    const mic = document.getElementById('mic').getBoundingClientRect(); \
    return document.documentElement.scrollHeight <= innerHeight + 1 && leave.bottom <= innerHeight && leave.right <= innerWidth && mic.bottom <= innerHeight";

/// Waits for the kicked-out dialog, checks its words and title.
async fn kicked_dialog(d: &Driver, reason: &str, words: &str, title: &str, shot: &str) {
    d.until(
        &format!("the {reason} dialog"),
        &format!("const d = document.getElementById('kicked'); return d.open && d.dataset.reason === '{reason}'"),
    )
    .await;
    let text = d
        .js("return document.getElementById('kicked-reason').textContent")
        .await;
    assert!(
        text.as_str().is_some_and(|t| t.contains(words)),
        "{reason}: {text}"
    );
    let shown = d
        .js("return document.querySelector('[data-testid=kicked-dialog] h2').textContent + '|' + document.querySelector('[data-testid=kicked-reason]').dataset.reason")
        .await;
    assert_eq!(
        shown,
        json!(format!("{title}|{reason}")),
        "the dialog's title and reason code"
    );
    d.shot(shot).await;
}

/// Waits for the kicked-out dialog, checks its words, clicks OK.
async fn kicked(d: &Driver, reason: &str, words: &str, title: &str, shot: &str) {
    kicked_dialog(d, reason, words, title, shot).await;
    d.click("#kicked-ok").await;
    d.until(
        "the join screen after OK",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;
}

/// Waits (up to 20 s) until something accepts connections on `addr`.
async fn wait_listening(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn kaigi_cli(bin_dir: &Path) -> PathBuf {
    let cli = bin_dir.join("kaigi");
    assert!(
        cli.exists(),
        "{} is missing: `cargo test --workspace` builds it (or `cargo build -p kaigi-cli`)",
        cli.display()
    );
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_joins_sees_a_bot_leaves_and_is_forced_out_three_ways() {
    let app = PathBuf::from(env!("CARGO_BIN_EXE_kaigi-desktop"));
    let bin_dir = app.parent().unwrap().to_path_buf();
    let cli = kaigi_cli(&bin_dir);
    let work = std::env::temp_dir().join(format!("kaigi-e2e-{}", std::process::id()));
    let shots = bin_dir.join("e2e-screenshots");
    std::fs::create_dir_all(&work).unwrap();
    let dev_app = work.join("dev-app.json");
    let envs: [(&str, String); 8] = [
        ("KAIGI_RECONNECT_GIVE_UP_SECS", "6".to_owned()),
        ("KAIGI_DEV_APP", dev_app.to_str().unwrap().to_owned()),
        ("KAIGI_LISTEN", "127.0.0.1:0".to_owned()),
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1".to_owned()),
        ("NO_AT_BRIDGE", "1".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        (
            "XDG_CONFIG_HOME",
            work.join("config").to_str().unwrap().to_owned(),
        ),
        (
            "XDG_DATA_HOME",
            work.join("data").to_str().unwrap().to_owned(),
        ),
    ];
    let (app_proc, d) = Driver::launch(&app, &envs, shots).await;
    let cli_cmd = |args: &[&str]| {
        let mut c = Command::new(&cli);
        c.args(args).envs(envs.iter().cloned());
        c
    };

    // 0. The join screen fits the default window: Join is on screen, and the
    //    hooks any WebDriver script may use are there.
    d.until(
        "Join on screen at the default size",
        "const j = document.querySelector('[data-testid=join-submit]').getBoundingClientRect(); return j.height > 0 && j.bottom <= innerHeight && ['join-name', 'join-room'].every((t) => document.querySelector(`[data-testid=${t}]`))",
    )
    .await;
    d.shot("00-join-screen").await;
    // With no GPU, GL (Mesa's software rasterizer and LLVM under it) stays
    // out of the app's own process; the web process draws.
    if !kaigi_desktop::has_render_node() {
        let procs = driver::app_processes(app_proc.0.id());
        let app_pid = procs
            .iter()
            .find(|p| p.1 == "app")
            .expect("the app's process")
            .0;
        let maps = std::fs::read_to_string(format!("/proc/{app_pid}/maps")).unwrap();
        for lib in ["libLLVM", "swrast_dri", "libEGL_mesa", "libGLX_mesa"] {
            assert!(!maps.contains(lib), "{lib} is loaded in the app's process");
        }
    }

    // 1. Join through the form (the embedded server), see the local preview.
    d.join(NAME, ROOM).await;
    d.until(
        "the local tile playing",
        "return Number(document.querySelector('#tile-local canvas').dataset.frames || 0) > 10",
    )
    .await;
    d.shot("01-joined").await;
    d.until("the room screen fits the window", FITS).await;
    d.until(
        "the room's name in the header and the window title, one person",
        &format!("return document.title.includes('{ROOM}') && document.getElementById('room-name').textContent.includes('{ROOM}') && document.getElementById('room-name').textContent.includes('1')"),
    )
    .await;
    d.until(
        "the own tile filling the stage, and the room's hooks",
        "const t = document.querySelector('[data-testid=self-tile]').getBoundingClientRect(); return t.height > 300 && ['toggle-mic', 'toggle-camera', 'leave'].every((id) => document.querySelector(`[data-testid=${id}]`))",
    )
    .await;
    // The smallest window still shows the toolbar; the tiles shrink.
    d.resize(720, 520).await;
    d.until("the room screen fits the smallest window", FITS)
        .await;
    d.shot("01-smallest-window").await;
    d.resize(1120, 760).await;
    // In Japanese the inputs keep the page's font and their height.
    d.js("const l = document.getElementById('language'); l.value = 'ja'; l.dispatchEvent(new Event('change')); return true").await;
    d.until(
        "the Japanese words, and inputs in the page's font",
        "const i = document.getElementById('name'); return document.getElementById('leave').textContent === '退出' && getComputedStyle(i).fontFamily === getComputedStyle(document.body).fontFamily && getComputedStyle(i).minHeight === '36px' && document.getElementById('mic').getAttribute('aria-pressed') === 'false'",
    )
    .await;
    d.shot("01-japanese").await;
    d.js("const l = document.getElementById('language'); l.value = 'en'; l.dispatchEvent(new Event('change')); return true").await;
    d.until(
        "the microphone's level on the toolbar's meter",
        "return parseFloat(document.querySelector('#room-level > span').style.width) > 0",
    )
    .await;

    // The sound settings: all on, one switched off, remembered.
    d.click("#settings-open").await;
    d.until(
        "the settings dialog with everything on",
        "return document.getElementById('settings').open && ['echo-cancellation', 'noise-suppression', 'auto-gain'].every((id) => document.getElementById(id).checked)",
    )
    .await;
    d.click("#echo-cancellation").await;
    d.shot("01-settings").await;
    d.click("#settings-done").await;
    d.until(
        "echo cancellation off and remembered",
        "return !document.getElementById('settings').open && JSON.parse(localStorage.getItem('kaigi.audio')).echoCancellation === false",
    )
    .await;
    d.click("#settings-open").await;
    d.click("#echo-cancellation").await;
    d.click("#settings-done").await;
    let server = d
        .js("return document.getElementById('server-address').textContent")
        .await;
    assert!(
        server
            .as_str()
            .is_some_and(|s| s.starts_with("ws://127.0.0.1:")),
        "{server}"
    );

    // 2. A bot joins and publishes: its tile plays at ≥ 25 fps.
    let bot = Proc(
        cli_cmd(&[
            "bot",
            "--user",
            "bot",
            "--str-room",
            ROOM,
            "--video",
            "test-pattern:640x360",
            "--audio",
            "tone",
            "--say",
            "hello from the bot <b>not bold</b>",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    d.until(
        "the bot's tile at 25 fps",
        "const c = document.querySelector('.tile[data-user=\"bot\"] canvas'); return !!c && Number(c.dataset.frames || 0) > 60 && Number(c.dataset.fps || 0) >= 25",
    )
    .await;
    d.shot("02-bot-video").await;

    // The bot's chat message: an unread badge, then the log (as text, not
    // markup); an own message sent with Enter joins it.
    d.until(
        "one unread chat message",
        "const u = document.querySelector('[data-testid=chat-unread]'); return !u.hidden && u.textContent === '1'",
    )
    .await;
    d.click("[data-testid=chat-toggle]").await;
    d.until(
        "the bot's message in the chat log",
        "const log = document.querySelector('[data-testid=chat-log]'); return log.textContent.includes('hello from the bot <b>not bold</b>') && !log.querySelector('b') && document.querySelector('[data-testid=chat-unread]').hidden",
    )
    .await;
    // WebDriver's Enter key (U+E007) sends, as a person's Enter does.
    d.type_into("[data-testid=chat-input]", "hi bot\u{E007}")
        .await;
    d.until(
        "the own message in the log, the input cleared",
        "const mine = document.querySelector('[data-testid=chat-log] li.mine'); return !!mine && mine.textContent.includes('hi bot') && document.querySelector('[data-testid=chat-input]').value === ''",
    )
    .await;
    d.until("the room screen fits with the chat open", FITS)
        .await;
    d.shot("02-chat").await;
    d.click("[data-testid=chat-toggle]").await;

    // Stop video: the own tile stops (camera-off shown, no more frames)
    // while the bot's keeps playing; Start video brings it back.
    d.click("[data-testid=toggle-camera]").await;
    d.until(
        "camera-off on the own tile",
        "const off = document.querySelector('[data-testid=self-tile] [data-testid=camera-off]'); return !!off && !off.hidden && document.querySelector('#tile-local svg[data-kind=cam]').dataset.state === 'off'",
    )
    .await;
    let frames = |sel: &str| format!("Number(document.querySelector('{sel}').dataset.frames || 0)");
    let (own, bot_tile) = ("#tile-local canvas", ".tile[data-user=\\'bot\\'] canvas");
    let own0 = d.js(&format!("return {}", frames(own))).await;
    let bot0 = d.js(&format!("return {}", frames(bot_tile))).await;
    d.until(
        "a second of the bot's video",
        &format!("return {} > {} + 30", frames(bot_tile), bot0),
    )
    .await;
    assert_eq!(
        d.js(&format!("return {}", frames(own))).await,
        own0,
        "the own tile stopped with the camera"
    );
    d.shot("02-video-stopped").await;
    d.click("[data-testid=toggle-camera]").await;
    d.until(
        "the own tile playing again",
        &format!(
            "return document.querySelector('[data-testid=camera-off]').hidden && {} > 10",
            frames(own)
        ),
    )
    .await;
    // Speaker view puts the speaking bot (its tone) on the stage, the own
    // tile in the strip; a pin puts the own tile there instead.
    d.click("[data-testid=toggle-view]").await;
    d.until(
        "speaker view with the bot on the stage",
        "const main = document.querySelector('.tile.main'); const own = document.getElementById('tile-local').getBoundingClientRect(); return !!main && main.dataset.user === 'bot' && own.height < main.getBoundingClientRect().height / 2",
    )
    .await;
    d.shot("02-speaker-view").await;
    d.click("[data-testid=pin-self]").await;
    d.until(
        "the own tile pinned on the stage",
        "return document.getElementById('tile-local').classList.contains('main') && document.querySelector('[data-testid=pin-self]').getAttribute('aria-pressed') === 'true'",
    )
    .await;
    d.click("[data-testid=pin-self]").await;
    d.click("[data-testid=toggle-view]").await;
    d.until(
        "the grid again",
        "return !document.querySelector('.tile.main') && !document.getElementById('tiles').classList.contains('speaker')",
    )
    .await;
    d.click("[data-testid=fullscreen]").await;
    d.until(
        // The window asked to go full screen (Exit full screen offered).
        // Under Xvfb no window manager grants it, so the window's size
        // cannot show it here; on a desktop it covers the screen.
        "full screen asked",
        "return document.querySelector('[data-testid=fullscreen]').getAttribute('aria-pressed') === 'true'",
    )
    .await;
    d.until("the room screen fits in full screen", FITS).await;
    d.shot("02-full-screen").await;
    d.click("[data-testid=fullscreen]").await;
    d.until(
        "out of full screen",
        "return document.querySelector('[data-testid=fullscreen]').getAttribute('aria-pressed') === 'false'",
    )
    .await;

    // Screen sharing. A viewer bot reports what it receives; Share opens
    // the picker (the whole screen and the app's own window, with
    // thumbnails); sharing the screen shows the bar, not the own screen,
    // and the viewer receives it as `sub`. Then a presenter bot shares a
    // display of its own: it takes the stage, at actual size on request.
    // Stop ends the own share only.
    let viewer_log = work.join("viewer.jsonl");
    let viewer = Proc(
        cli_cmd(&["bot", "--user", "viewer", "--str-room", ROOM])
            .stdout(std::fs::File::create(&viewer_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let viewer_saw = |what: &'static str, pred: fn(&serde_json::Value) -> bool| {
        let log = viewer_log.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(v) = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(pred)
                {
                    return v;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the viewer never reported {what}: {text}"
                );
                // Reading the bot's output as it comes (one line a second).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    d.until(
        "the viewer in the room",
        "return !!document.querySelector('[data-testid=tile-viewer]')",
    )
    .await;
    d.click("[data-testid=share]").await;
    d.until(
        "the picker: the screen and the app's window, with thumbnails",
        "const p = document.querySelector('[data-testid=share-picker]'); const items = [...p.querySelectorAll('button[data-source]')]; return p.open && items[0].dataset.source === 'screen' && items.some((b) => b.textContent.includes('Kaigi')) && items.every((b) => { const i = b.querySelector('img'); return i && i.complete && i.naturalWidth > 0; })",
    )
    .await;
    d.shot("02-share-picker").await;
    d.click("[data-testid=share-source-screen]").await;
    d.until(
        "the sharing bar, and Share turned to Stop sharing",
        "const bar = document.querySelector('[data-testid=sharing-bar]'); return !bar.hidden && bar.textContent.includes('You are sharing your screen') && document.querySelector('[data-testid=share]').getAttribute('aria-pressed') === 'true' && !document.querySelector('.tile.screen')",
    )
    .await;
    d.shot("02-sharing").await;
    d.until("the room screen fits while sharing", FITS).await;
    let got = viewer_saw("the shared screen as sub", |v| {
        v["event"] == "stream-stats"
            && v["userId"] == NAME
            && v["streamType"] == "sub"
            && v["size"] == "1280x800"
            && v["framesDecoded"].as_u64() > Some(5)
    })
    .await;
    eprintln!("the viewer receives the shared screen: {got}");
    // A presenter shares a display of its own: large on the stage.
    let screen = kaigi_tests::xvfb::Xvfb::start(1280, 720);
    let picture = kaigi_tests::xvfb::picture(1280, 720);
    kaigi_tests::xvfb::draw(&screen.display, &picture, 1280, 720, 0);
    let presenter = Proc(
        cli_cmd(&[
            "bot",
            "--user",
            "presenter",
            "--str-room",
            ROOM,
            "--share-screen",
            &screen.display,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    d.until(
        "the presenter's screen on the stage, playing",
        "const t = document.querySelector('[data-testid=screen-presenter]'); const c = t && t.querySelector('canvas'); return !!c && t.classList.contains('main') && Number(c.dataset.frames || 0) > 5 && t.textContent.includes(\"presenter's screen\") && t.getBoundingClientRect().width > 2 * document.getElementById('tile-local').getBoundingClientRect().width",
    )
    .await;
    d.shot("02-presenter-screen").await;
    d.click("[data-testid=zoom-presenter]").await;
    d.until(
        "the presenter's screen at its actual size",
        "const t = document.querySelector('[data-testid=screen-presenter]'); const c = t.querySelector('canvas'); return t.classList.contains('actual') && c.dataset.size === '1280x720' && Math.abs(c.getBoundingClientRect().width * devicePixelRatio - 1280) < 2",
    )
    .await;
    d.shot("02-presenter-actual-size").await;
    d.click("[data-testid=zoom-presenter]").await;
    d.click("[data-testid=share-stop]").await;
    d.until(
        "the bar gone, the presenter's screen still shown",
        "return document.querySelector('[data-testid=sharing-bar]').hidden && document.querySelector('[data-testid=share]').getAttribute('aria-pressed') === 'false' && !!document.querySelector('[data-testid=screen-presenter]')",
    )
    .await;
    viewer_saw("the own share's end", |v| {
        v["event"] == "stream-removed" && v["userId"] == NAME && v["streamType"] == "sub"
    })
    .await;
    drop(presenter);
    d.until(
        "the presenter's screen gone with the presenter",
        "return !document.querySelector('.tile.screen') && !document.querySelector('.tile.main')",
    )
    .await;
    drop(viewer);
    drop(screen);

    // The host's participant list: both of us, with Remove for the bot;
    // removing it asks first, then the bot is gone.
    d.click("[data-testid=people-toggle]").await;
    d.until(
        "the participant list with the host and the bot",
        "const l = document.querySelector('[data-testid=participant-list]'); return !l.hidden && !!l.querySelector('[data-testid=participant-alice]') && !!l.querySelector('[data-testid=participant-bot]') && !!l.querySelector('[data-testid=remove-bot]') && !l.querySelector('[data-testid=remove-alice]') && document.querySelector('[data-testid=participant-alice]').textContent.includes('Host')",
    )
    .await;
    d.shot("02-people").await;
    d.click("[data-testid=remove-bot]").await;
    d.until(
        "the confirmation to remove the bot",
        "const c = document.querySelector('[data-testid=confirm-dialog]'); return c.open && c.textContent.includes('bot')",
    )
    .await;
    d.shot("02-confirm-remove").await;
    d.click("[data-testid=confirm-ok]").await;
    d.until(
        "the bot removed",
        "return !document.querySelector('[data-testid=tile-bot]') && !document.querySelector('[data-testid=participant-bot]')",
    )
    .await;
    d.until("the room screen fits with the list open", FITS)
        .await;

    drop(bot);

    // Invites: the host copies one (its code shows); a guest joins with it
    // and a name only; once revoked, nobody else can.
    d.click("[data-testid=invite-copy]").await;
    d.until(
        "the invite's code, and Revoke",
        "return /^[0-9a-z]{3}-[0-9a-z]{4}-[0-9a-z]{3}$/.test(document.querySelector('[data-testid=invite-code]').textContent) && !document.querySelector('[data-testid=invite-revoke]').hidden",
    )
    .await;
    d.shot("02-invite").await;
    let code = d
        .js("return document.querySelector('[data-testid=invite-code]').textContent")
        .await;
    let link = format!(
        "kaigi://invite/{}?server={}",
        code.as_str().unwrap(),
        server.as_str().unwrap()
    );
    let guest = Proc(
        cli_cmd(&["bot", "--invite", &link, "--user", "guest"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    d.until(
        "the guest in the room through the invite",
        "return !!document.querySelector('[data-testid=participant-guest]')",
    )
    .await;
    d.click("[data-testid=invite-revoke]").await;
    d.until(
        "the invite revoked",
        "return document.querySelector('[data-testid=invite-code]').textContent === '' && document.querySelector('[data-testid=invite-revoke]').hidden",
    )
    .await;
    let late = cli_cmd(&["bot", "--invite", &link, "--user", "late"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&late.stdout);
    assert!(
        !late.status.success() && said.contains("invite-failed") && said.contains("INVITE_REVOKED"),
        "{said}"
    );
    drop(guest);
    d.until(
        "the guest gone",
        "return !document.querySelector('[data-testid=participant-guest]')",
    )
    .await;

    // 3. Leave (a host is asked: leave, or end for all) → the join screen; then rejoin.
    d.click("#leave").await;
    d.until(
        "the host's choice between leaving and ending",
        "const c = document.querySelector('[data-testid=confirm-dialog]'); return c.open && !document.querySelector('[data-testid=confirm-alt]').hidden",
    )
    .await;
    d.shot("03-leave-or-end").await;
    d.click("[data-testid=confirm-ok]").await;
    d.until(
        "the join screen after leave",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;
    d.shot("03-left").await;
    d.join(NAME, ROOM).await;
    d.shot("04-rejoined").await;

    // An admin call through the CLI, which must succeed.
    let admin = |args: &[&str]| {
        let out = cli_cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };

    // 4. The same name joins elsewhere → dialog (duplicate).
    let dup = Proc(
        cli_cmd(&["bot", "--user", NAME, "--str-room", ROOM])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    kicked(
        &d,
        "duplicate-user-id",
        "Someone joined this room with the same user name",
        "You were disconnected",
        "05-kicked-duplicate",
    )
    .await;
    drop(dup);

    // 5. Removed by the administrator; Rejoin from the dialog.
    d.join(NAME, ROOM).await;
    admin(&["admin", "remove-user", "--str-room", ROOM, "--user", NAME]);
    kicked_dialog(
        &d,
        "removed-by-admin",
        "account administrator removed you",
        "You were removed from the meeting",
        "06-kicked-removed",
    )
    .await;
    d.click("[data-testid=kicked-rejoin]").await;
    d.until(
        "the room again after Rejoin",
        "return !document.getElementById('room-screen').hidden && !document.getElementById('kicked').open && document.getElementById('badge').classList.contains('CONNECTED')",
    )
    .await;

    // The backend blocks this user's microphone for the others
    // (SetUserBlocked): the own tile says so (the microphone still works
    // here), then not after the unblock.
    let own_mic = |state: &str, words: &str| {
        format!("const m = document.querySelector('#tile-local .icons svg[data-kind=mic]'); return !!m && m.dataset.state === '{state}' && m.getAttribute('aria-label').includes('{words}')")
    };
    let blocked = [
        "admin",
        "set-user-blocked",
        "--str-room",
        ROOM,
        "--user",
        NAME,
    ];
    admin(&[&blocked[..], &["--audio"]].concat());
    d.until(
        "the own microphone marked blocked",
        &own_mic("blocked", "organizer"),
    )
    .await;
    d.shot("06-blocked").await;
    admin(&blocked);
    d.until("the own microphone on again", &own_mic("on", "on"))
        .await;

    // 6. The room is dismissed.
    admin(&["admin", "dismiss-room", "--str-room", ROOM]);
    kicked(
        &d,
        "room-dismissed",
        "account administrator closed this room",
        "The meeting has ended",
        "07-kicked-dismissed",
    )
    .await;

    // The host ends the meeting for all from the toolbar: asked first, then
    // back on the join screen without the kicked-out dialog.
    d.join(NAME, ROOM).await;
    d.click("[data-testid=end-for-all]").await;
    d.until(
        "the confirmation to end for all",
        "return document.querySelector('[data-testid=confirm-dialog]').open",
    )
    .await;
    d.click("[data-testid=confirm-ok]").await;
    d.until(
        "the join screen after ending the meeting, no dialog",
        "return !document.getElementById('join-screen').hidden && !document.getElementById('kicked').open",
    )
    .await;

    // 7. A server of one's own, through the advanced fields; it goes away
    //    (the reconnecting banner) and comes back on the same address.
    let server_bin = bin_dir.join("kaigi-server");
    let port = driver::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (app_id, key) = (1_400_000_777u32, "e2e-own-server-key");
    let start_server = || {
        Proc(
            Command::new(&server_bin)
                .args(["--listen", &listen, "--media-port", "0"])
                .args(["--app", &format!("{app_id}:{key}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kaigi-server (`cargo test --workspace` builds it)"),
        )
    };
    let own = start_server();
    wait_listening(&listen).await;
    let user_sig = kaigi_proto::usersig::generate(
        kaigi_proto::SdkAppId(app_id),
        key,
        NAME,
        3600,
        kaigi_proto::unix_now(),
    );
    d.click("details summary").await;
    d.type_into("#server", &format!("ws://{listen}")).await;
    d.type_into("#sdkAppId", &app_id.to_string()).await;
    d.type_into("#userSig", &user_sig).await;
    d.join(NAME, ROOM).await;
    let hosted = d
        .js("return document.getElementById('hosted').hidden")
        .await;
    assert_eq!(
        hosted,
        json!(true),
        "no hosted-room box for a server of one's own"
    );
    drop(own);
    d.until(
        "the reconnecting banner",
        "return !document.getElementById('banner').hidden && document.getElementById('badge').classList.contains('RECONNECTING')",
    )
    .await;
    d.shot("08-reconnecting").await;
    let _own = start_server();
    d.until(
        "the banner gone after the server came back",
        "return document.getElementById('banner').hidden && document.getElementById('badge').classList.contains('CONNECTED')",
    )
    .await;
    d.until(
        "network quality reported again after the reconnect",
        "const q = document.getElementById('quality').textContent; return !/disconnected|unknown/.test(q)",
    )
    .await;
    d.shot("09-reconnected").await;

    // 8. The server goes away for longer than the app keeps trying (6 s
    //    here): the user is told, the room is left; Rejoin once it is back.
    drop(_own);
    kicked_dialog(
        &d,
        "disconnected",
        "could not be restored",
        "Connection lost",
        "10-gave-up",
    )
    .await;
    let _own = start_server();
    wait_listening(&listen).await;
    d.click("[data-testid=kicked-rejoin]").await;
    d.until(
        "the room again after Rejoin",
        "return !document.getElementById('room-screen').hidden && document.getElementById('badge').classList.contains('CONNECTED')",
    )
    .await;
    d.click("#leave").await;
    d.until(
        "the join screen after leaving the own server",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;

    // 9. An invite from that server's admin, pasted into the join screen:
    //    the room field goes, the name is all it takes.
    let made = cli_cmd(&[
        "admin",
        "create-invite",
        "--server",
        &format!("ws://{listen}"),
        "--app",
        &app_id.to_string(),
        "--key",
        key,
        "--str-room",
        "invited-room",
    ])
    .output()
    .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stdout)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let code = made["Response"]["Code"].as_str().unwrap().to_owned();
    let link = format!("kaigi://invite/{code}?server=ws://{listen}");
    d.js("for (const id of ['server', 'sdkAppId', 'userSig']) document.getElementById(id).value = ''; return true").await;
    d.type_into("[data-testid=invite-paste]", &link).await;
    d.until(
        "the invite taken: no room field, the note shown",
        "return document.getElementById('room-field').hidden && !document.getElementById('invite-note').hidden",
    )
    .await;
    d.shot("11-invite-pasted").await;
    d.click("[data-testid=join-submit]").await;
    d.until(
        "in the invited room, its code shown, not revocable",
        &format!("return !document.getElementById('room-screen').hidden && document.getElementById('room-name').textContent.includes('invited-room') && document.querySelector('[data-testid=invite-code]').textContent === '{code}' && document.querySelector('[data-testid=invite-revoke]').hidden"),
    )
    .await;
    d.shot("12-joined-by-invite").await;
    d.click("#leave").await;
    d.until(
        "the join screen after the invited room",
        "return !document.getElementById('join-screen').hidden",
    )
    .await;

    // 10. The app's key instead of a UserSig: the app hosts the room on that
    //     server (End for all, invites through its admin API).
    d.js("const i = document.getElementById('invite'); i.value = ''; i.dispatchEvent(new Event('input')); return true").await;
    d.type_into("#server", &format!("ws://{listen}")).await;
    d.type_into("#sdkAppId", &app_id.to_string()).await;
    d.type_into("#secretKey", key).await;
    d.type_into("#room", "keyed-room").await;
    d.shot("13-keyed-form").await;
    // Join sits below the open Advanced fields (the form scrolls): submit.
    d.js("document.getElementById('join-form').requestSubmit(); return true")
        .await;
    d.until(
        "host controls on a server of one's own",
        "return !document.getElementById('room-screen').hidden && document.getElementById('badge').classList.contains('CONNECTED') && !document.querySelector('[data-testid=end-for-all]').hidden && !document.querySelector('[data-testid=invite-copy]').hidden",
    )
    .await;
    d.click("[data-testid=invite-copy]").await;
    d.until(
        "an invite from that server",
        "return /^[0-9a-z]{3}-[0-9a-z]{4}-[0-9a-z]{3}$/.test(document.querySelector('[data-testid=invite-code]').textContent)",
    )
    .await;
    d.shot("13-host-with-key").await;
    d.click("[data-testid=end-for-all]").await;
    d.until(
        "the confirmation to end for all",
        "return document.querySelector('[data-testid=confirm-dialog]').open",
    )
    .await;
    d.click("[data-testid=confirm-ok]").await;
    d.until(
        "the join screen after ending the keyed room",
        "return !document.getElementById('join-screen').hidden && !document.getElementById('kicked').open",
    )
    .await;

    d.quit().await;
    let _ = std::fs::remove_dir_all(&work);
}
