//! The contract test: `tests/interop/contract.py` speaks the protocol and
//! the admin API as a third party would, from `docs/protocol.md` and
//! `docs/admin-api.md` alone (Python, websockets, aiortc; no Kaigi code),
//! and checks every message, field, error code, close code and order the
//! documents state against the real server. It fails when the documents
//! and the server drift apart.

use std::time::Duration;

use kaigi_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_does_what_the_documents_say() {
    // The documents' defaults, but a short heartbeat timeout so that the
    // timeout checks are quick (the script reads it from `joined`).
    let server = TestServer::start_with(|c| c.heartbeat_timeout = Duration::from_secs(3)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/contract.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--url", &format!("ws://{}/ws", server.addr)])
        .args(["--http", &format!("http://{}", server.addr)])
        .args(["--app", &APP.0.to_string(), "--key", KEY])
        .args([
            "--other-app",
            &OTHER_APP.0.to_string(),
            "--other-key",
            OTHER_KEY,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the contract test ends within 120 s")
        .expect("python3 with websockets and aiortc (scripts/setup installs them)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "the server and the documents disagree:\n{}\n{stderr}",
        failed.join("\n")
    );
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        passed >= 100,
        "only {passed} checks ran:\n{stdout}\n{stderr}"
    );
}
