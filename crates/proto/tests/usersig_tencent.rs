//! UserSig interop with Tencent's published `tls-sig-api-v2` library.
//!
//! `data/tencent_vectors.json` was made by that library (see
//! `tencent_usersig.py vectors`); the live tests run it through `python3`
//! (`pip install tls-sig-api-v2`, done by `.ci/run`) in both directions.

use kaigi_proto::{usersig, SdkAppId, UserSigError};
use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn now() -> u64 {
    kaigi_proto::unix_now()
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(dir().join("tencent_usersig.py"))
        .args(args)
        .output()
        .expect("python3 runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "tencent_usersig.py {args:?} failed (is `pip install tls-sig-api-v2` done?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn committed_tencent_vectors_verify() {
    let text = std::fs::read_to_string(dir().join("data/tencent_vectors.json")).unwrap();
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let app = SdkAppId(v["sdkAppId"].as_u64().unwrap() as u32);
        let key = v["key"].as_str().unwrap();
        let user = v["userId"].as_str().unwrap();
        let sig = v["userSig"].as_str().unwrap();
        let time = v["time"].as_u64().unwrap();
        let expire = v["expire"].as_u64().unwrap();
        let claims =
            usersig::verify(sig, app, key, user, time + 1).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!((claims.time, claims.expire), (time, expire));
        assert_eq!(claims.userbuf.is_some(), !v["userbuf"].is_null());
        assert_eq!(
            usersig::verify(sig, app, key, user, time + expire + 1),
            Err(UserSigError::Expired {
                expired_at: time + expire
            })
        );
        assert_eq!(
            usersig::verify(sig, app, "wrong-key", user, time),
            Err(UserSigError::BadSignature)
        );
    }
}

#[test]
fn sig_made_by_tencent_library_now_verifies() {
    let key = "live-interop-key";
    let sig = python(&["gen", "1400000123", key, "alice", "3600"]);
    let claims = usersig::verify(&sig, SdkAppId(1400000123), key, "alice", now()).unwrap();
    assert_eq!(claims.expire, 3600);
    assert!(matches!(
        usersig::verify(&sig, SdkAppId(1400000123), key, "bob", now()),
        Err(UserSigError::WrongIdentifier { .. })
    ));
}

#[test]
fn our_sig_verifies_with_tencent_library() {
    let key = "live-interop-key";
    let sig = usersig::generate(SdkAppId(1400000123), key, "carol_1", 3600, now());
    assert_eq!(
        python(&["verify", &sig, "1400000123", key, "carol_1"]),
        "ok"
    );
    assert_eq!(
        python(&["verify", &sig, "1400000123", "other", "carol_1"]),
        "bad signature"
    );
    let old = usersig::generate(SdkAppId(1400000123), key, "carol_1", 10, now() - 100);
    assert_eq!(
        python(&["verify", &old, "1400000123", key, "carol_1"]),
        "expired"
    );
}
