//! TLS on the server's own listener: `wss://` signaling and `https://`
//! admin on one port with a certificate from a private CA. A client that
//! trusts the CA joins and gets media; one that does not is refused with a
//! TLS error that says what to do, and the server keeps serving.

use std::path::PathBuf;

use kaigi_sdk::{Client, ClientError, Role};
use kaigi_server::config::TlsFiles;
use kaigi_tests::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files
/// in a fresh folder: (folder, CA certificate, server certificate, key).
fn test_pki() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("kaigi-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_pem = write("ca.pem", ca.pem());
    let cert = write("cert.pem", leaf.pem());
    let key = write("key.pem", key.serialize_pem());
    (dir, ca_pem, cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_with_a_private_ca() {
    let (dir, ca, cert, key) = test_pki();
    let server = TestServer::start_with(|c| c.tls = Some(TlsFiles { cert, key })).await;
    let wss = format!("wss://{}", server.addr);

    // Trusting the CA: join, publish, and the other side decodes frames.
    let trusted = |user: &str| {
        let mut o = server.options(user);
        o.server_url = wss.clone();
        o.ca_file = Some(ca.clone());
        Client::new(o).unwrap()
    };
    let alice = trusted("alice");
    within("alice joins over wss", alice.join(room(1), Role::Anchor))
        .await
        .expect("join over wss");
    let bob = trusted("bob");
    within("bob joins over wss", bob.join(room(1), Role::Anchor))
        .await
        .expect("join over wss");
    let _stream = publish_pattern(&alice).await;
    frames_arrive(&bob, "alice", 5).await;

    // Not trusting it: a TLS error that says how to fix it.
    let mut o = server.options("carol");
    o.server_url = wss.clone();
    let carol = Client::new(o).unwrap();
    let refused = within("carol is refused", carol.join(room(1), Role::Anchor)).await;
    match refused {
        Err(ClientError::Tls(message)) => {
            assert!(message.contains("certificate"), "{message}");
            assert!(message.contains("ca_file"), "says what to do: {message}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // Plain ws:// to the TLS port fails; the server keeps serving.
    let mut o = server.options("dave");
    o.server_url = format!("ws://{}", server.addr);
    let dave = Client::new(o).unwrap();
    assert!(within("dave", dave.join(room(1), Role::Anchor))
        .await
        .is_err());

    // The admin API over https on the same port.
    let pem = std::fs::read(&ca).unwrap();
    let mut http = reqwest::Client::builder();
    for c in reqwest::Certificate::from_pem_bundle(&pem).unwrap() {
        http = http.add_root_certificate(c);
    }
    let answer: serde_json::Value = http
        .build()
        .unwrap()
        .post(format!(
            "https://{}/api/DescribeRoom?{}",
            server.addr,
            admin_query()
        ))
        .body(serde_json::json!({"SdkAppId": APP.0, "RoomId": 1}).to_string())
        .send()
        .await
        .expect("https admin call")
        .json()
        .await
        .unwrap();
    let users: Vec<&str> = answer["Response"]["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["UserId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"], "{answer}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_certificate_that_does_not_parse_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("kaigi-tls-bad-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let mut config = kaigi_server::Config::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.tls = Some(TlsFiles {
        cert: cert.clone(),
        key,
    });
    let err = kaigi_server::start(config).await.err().expect("refused");
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "names the file: {err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
