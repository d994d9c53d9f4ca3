//! A call on a loudspeaker, end to end through real audio devices: a
//! PulseAudio server of the test's own whose only speaker is a null sink
//! and whose only microphone is that sink's monitor, so everything alice's
//! client plays (bob's tone) comes straight back into her microphone, the
//! way a laptop's speaker is heard by its microphone. Kaigi's devices open
//! it through ALSA's pulse plugin (cpal), as they would a desktop's sound
//! server. With echo cancellation bob does not hear himself back; with it
//! switched off mid-call he does, loudly. Then the sound server goes away,
//! as an unplugged headset does: alice is told, and stays in the call; it
//! comes back, as a headset plugged in again does: alice's client takes it
//! for her microphone and speaker by itself, and the sound flows again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kaigi_sdk::devices::DeviceAction;
use kaigi_sdk::{
    AudioInput, AudioProcessing, Client, ClientEvent, DeviceType, LocalStream, LocalStreamConfig,
    SyntheticSource, VideoInput,
};
use kaigi_tests::*;

/// A PulseAudio server for this process alone: one null sink (`room`) as
/// the default speaker, its monitor as the default microphone. Stopped and
/// removed on drop.
struct SoundServer {
    child: Option<Child>,
    dir: PathBuf,
}

impl SoundServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("kaigi-pulse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = SoundServer { child: None, dir };
        server.run();
        server
    }

    /// Starts the server (again).
    fn run(&mut self) {
        let dir = &self.dir;
        let socket = dir.join("native");
        std::fs::write(
            dir.join("default.pa"),
            format!(
                "load-module module-null-sink sink_name=room rate=48000 channels=1\n\
                 set-default-sink room\n\
                 set-default-source room.monitor\n\
                 load-module module-native-protocol-unix auth-anonymous=1 socket={}\n",
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--log-target=stderr",
                "-F",
            ])
            .arg(dir.join("default.pa"))
            .env("HOME", dir)
            .env("XDG_RUNTIME_DIR", dir)
            .env("XDG_CONFIG_HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio (scripts/setup installs it)");
        self.child = Some(child);
        // Waiting for the server's socket to appear: polled, there is
        // nothing to wait on.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "pulseaudio did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server, as an unplugged device vanishes (its socket file
    /// stays behind, as after a crash).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What `PULSE_SERVER` must say for ALSA's pulse plugin to use it.
    fn address(&self) -> String {
        format!("unix:{}", self.dir.join("native").display())
    }
}

impl Drop for SoundServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The device both of alice's ends open: ALSA's PCM for the sound server.
const DEVICE: &str = "pulse";

/// Echo cancellation alone: noise suppression would remove a steady tone
/// by itself, and gain control would lift what is left.
const AEC_ONLY: AudioProcessing = AudioProcessing {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
};

/// The median level (0–100, 0.6 dB a step) at which `client` hears `user`
/// over `window`, sampled every 20 ms.
async fn level_heard(client: &Client, user: &str, window: Duration) -> u8 {
    let mut levels = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Some(s) = client
            .remote_streams()
            .into_iter()
            .find(|s| s.user_id().as_str() == user)
        {
            levels.push(s.audio_level());
        }
        // Sampling a level over a window, not synchronizing.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    levels.sort_unstable();
    levels.get(levels.len() / 2).copied().unwrap_or(0)
}

#[test]
fn bob_does_not_hear_himself_back_through_alices_loudspeaker() {
    let sound = SoundServer::start();
    // Before anything in this process opens ALSA (one test in this binary).
    std::env::set_var("PULSE_SERVER", sound.address());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(call(sound));
}

async fn call(mut sound: SoundServer) {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = server.joined("alice", &room(71)).await;
    alice.set_audio_output(Some(DEVICE)).expect("the speaker");
    let mic = LocalStream::new(
        alice.user_id(),
        LocalStreamConfig {
            video: VideoInput::None,
            audio: AudioInput::Microphone {
                id: Some(DEVICE.into()),
            },
            audio_processing: AEC_ONLY,
            ..Default::default()
        },
    )
    .expect("the microphone");
    within("alice publishes", alice.publish(&mic))
        .await
        .expect("published");

    let (bob, _bob_events) = server.joined("bob", &room(71)).await;
    let tone = LocalStream::synthetic(
        bob.user_id(),
        SyntheticSource {
            video: None,
            tone_hz: Some(440.0),
            ..Default::default()
        },
    )
    .unwrap();
    within("bob publishes", bob.publish(&tone))
        .await
        .expect("published");

    // Alice plays bob's tone; her microphone hears it; bob hears what she
    // sends. Sound must flow both ways before anything is measured.
    within("bob's tone reaches alice's speaker", async {
        while level_heard(&alice, "bob", Duration::from_millis(200)).await < 30 {}
    })
    .await;
    within("alice's microphone reaches bob", async {
        while bob
            .remote_streams()
            .iter()
            .all(|s| s.user_id().as_str() != "alice" || s.audio_packets() < 50)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Converged within 2 s; then bob hears (almost) nothing of himself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cancelled = level_heard(&bob, "alice", Duration::from_secs(3)).await;
    assert_eq!(mic.audio_processing(), AEC_ONLY);

    // Echo cancellation off, mid-call: bob hears his own tone back.
    mic.set_audio_processing(AudioProcessing::NONE);
    let echoed = level_heard(&bob, "alice", Duration::from_secs(3)).await;
    let removed_db = (f64::from(echoed) - f64::from(cancelled)) * 0.6;
    assert!(
        echoed >= 50,
        "without echo cancellation the loop carries bob's tone back (level {echoed})"
    );
    assert!(
        removed_db >= 25.0,
        "echo cancellation removed {removed_db:.1} dB of bob's voice coming back \
         (level {cancelled} with it, {echoed} without)"
    );
    eprintln!("echo removed: {removed_db:.1} dB (level {cancelled} vs {echoed})");

    // The sound server goes away (unplugged): alice is told her
    // microphone and speaker are lost, and stays in the call.
    sound.kill();
    let mut lost = std::collections::HashSet::new();
    while !(lost.contains("microphone") && lost.contains("speaker")) {
        let (e, _) = wait_for(
            &mut alice_events,
            "devices lost",
            |e| matches!(e, ClientEvent::Error { name, .. } if name == "DEVICE_LOST"),
        )
        .await;
        if let ClientEvent::Error { message, .. } = e {
            // "the microphone \"pulse\" stopped working: …"
            lost.insert(message.split(' ').nth(1).unwrap_or_default().to_owned());
        }
    }
    assert!(
        bob.remote_streams()
            .iter()
            .any(|s| s.user_id().as_str() == "alice"),
        "alice is still in the call"
    );
    assert!(
        !drain(&mut alice_events)
            .iter()
            .any(|e| matches!(e, ClientEvent::ClientBanned { .. })),
        "a lost device is not a forced exit"
    );

    // Nothing else can take over: the devices are reported gone.
    within(
        "the devices are reported removed",
        both_changed(&mut alice_events, DeviceAction::Remove),
    )
    .await;
    let before = packets_from(&bob, "alice");
    assert!(
        !drain(&mut alice_events).iter().any(|e| matches!(
            e,
            ClientEvent::DeviceChanged {
                action: DeviceAction::Active,
                ..
            }
        )),
        "no device took over"
    );

    // Plugged back in: alice's microphone and speaker take it by
    // themselves, and bob's tone comes back through the loop (processing
    // is still off) in what alice sends.
    sound.run();
    within(
        "the devices are taken again",
        both_changed(&mut alice_events, DeviceAction::Active),
    )
    .await;
    within("alice's microphone reaches bob again", async {
        while packets_from(&bob, "alice") < before + 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let echoed = level_heard(&bob, "alice", Duration::from_secs(2)).await;
    assert!(
        echoed >= 50,
        "bob's tone goes round the loop again through the devices taken back (level {echoed})"
    );
}

/// Waits until `device-changed` with `action` came for both the
/// microphone and the speaker.
async fn both_changed(events: &mut kaigi_sdk::EventStream, action: DeviceAction) {
    let mut kinds = std::collections::HashSet::new();
    while !(kinds.contains(&DeviceType::Microphone) && kinds.contains(&DeviceType::Speaker)) {
        let (e, _) = wait_for(
            events,
            "device-changed",
            |e| matches!(e, ClientEvent::DeviceChanged { action: a, .. } if *a == action),
        )
        .await;
        if let ClientEvent::DeviceChanged { kind, .. } = e {
            kinds.insert(kind);
        }
    }
}

/// Audio packets `client` received from `user` so far.
fn packets_from(client: &Client, user: &str) -> u64 {
    client
        .remote_streams()
        .iter()
        .find(|s| s.user_id().as_str() == user)
        .map(|s| s.audio_packets())
        .unwrap_or(0)
}
