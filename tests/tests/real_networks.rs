//! Calls across test hosts made of network namespaces (see
//! `kaigi_tests::netlab`): the server and some parties on a "public"
//! switch (203.0.113.0/24), others on a LAN (198.18.0.0/24) behind a NAT
//! router. No namespace has a route out of the lab; the server's has no
//! default route at all. Each test removes its namespaces, also on failure.

use std::net::SocketAddr;

use kaigi_tests::netlab::{self, Lab, Ns, Side};
use kaigi_tests::*;

const SERVER: &str = "203.0.113.10";

/// Starts a server in `ns` on `SERVER`; it serves until the returned
/// sender is dropped.
fn server_in(lab: &Lab, ns: &Ns) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    lab.server(ns, |c| c.listen = format!("{SERVER}:0").parse().unwrap())
}

/// How long each call's media is measured.
const WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// One call at a time: each encodes and decodes 640×480 at 30 fps, and
/// several at once on a 2-core machine measure the machine, not the path.
static ONE_CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `publisher` (in its namespace) publishes the 640×480 test pattern at
/// 30 fps and a tone; `receiver` (in its) must decode it at ≥ 25 fps and
/// receive audio without gaps (≥ 45 of Opus' 50 packets a second) over
/// [`WINDOW`]. Panics with what was missing. Returns what the receiver's
/// media went over, as its `network-quality` events say.
fn call(lab: &Lab, server: SocketAddr, publisher: &Ns, receiver: &Ns, r: u64) -> String {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let got = lab
        .measure_call(
            server,
            publisher,
            receiver,
            r,
            std::time::Duration::ZERO,
            WINDOW,
        )
        .expect("the receiver decoded the publisher's video");
    eprintln!(
        "call over {}: {:.1} fps, {:.1} audio packets/s",
        got.transport, got.fps, got.audio_per_sec
    );
    assert!(
        got.fps >= 25.0 && got.audio_per_sec >= 45.0,
        "over {}: {:.1} fps of 640×480 (≥ 25), {:.1} audio packets/s (≥ 45)",
        got.transport,
        got.fps,
        got.audio_per_sec
    );
    got.transport
}

#[test]
fn a_server_without_a_default_route_and_parties_on_its_switch() {
    let mut lab = Lab::new("nr");
    let public = lab.switch("pub");
    let server_ns = lab.namespace("srv");
    lab.attach(&server_ns, &public, &format!("{SERVER}/24"));
    let a = lab.namespace("a");
    lab.attach(&a, &public, "203.0.113.20/24");
    let b = lab.namespace("b");
    lab.attach(&b, &public, "203.0.113.30/24");
    let (addr, _stop) = server_in(&lab, &server_ns);
    assert_eq!(call(&lab, addr, &a, &b, 1), "udp");
}

/// A public switch with the server, and a LAN behind a NAT router.
fn nat_lab(tag: &str) -> (Lab, Ns, Ns, Ns) {
    netlab::nat_lab(tag, &format!("{SERVER}/24"))
}

/// [`nat_lab`] with a party on the public switch (`out`) and one on the
/// LAN (`in`, routed through the NAT router).
fn nat_lab_with_parties(tag: &str) -> (Lab, Ns, Ns, Ns) {
    let (mut lab, public, lan, server_ns) = nat_lab(tag);
    let outside = lab.namespace("out");
    lab.attach(&outside, &public, "203.0.113.20/24");
    let inside = lab.namespace("in");
    lab.attach(&inside, &lan, "198.18.0.10/24");
    lab.default_route(&inside, "198.18.0.1");
    (lab, outside, inside, server_ns)
}

#[test]
fn a_party_behind_nat_sends_and_receives() {
    let (lab, outside, inside, server_ns) = nat_lab_with_parties("nt");
    let (addr, _stop) = server_in(&lab, &server_ns);
    assert_eq!(call(&lab, addr, &inside, &outside, 1), "udp");
    assert_eq!(call(&lab, addr, &outside, &inside, 2), "udp");
}

#[test]
fn two_parties_behind_the_same_nat() {
    let (mut lab, _public, lan, server_ns) = nat_lab("n2");
    let one = lab.namespace("one");
    lab.attach(&one, &lan, "198.18.0.10/24");
    lab.default_route(&one, "198.18.0.1");
    let two = lab.namespace("two");
    lab.attach(&two, &lan, "198.18.0.11/24");
    lab.default_route(&two, "198.18.0.1");
    let (addr, _stop) = server_in(&lab, &server_ns);
    assert_eq!(call(&lab, addr, &one, &two, 1), "udp");
}

#[test]
fn a_server_behind_a_one_to_one_nat_with_its_external_ip() {
    const EXTERNAL: &str = "203.0.113.50";
    const INTERNAL: &str = "198.18.1.10";
    let mut lab = Lab::new("oo");
    let public = lab.switch("pub");
    let private = lab.switch("priv");
    let server_ns = lab.namespace("srv");
    lab.attach(&server_ns, &private, &format!("{INTERNAL}/24"));
    lab.default_route(&server_ns, "198.18.1.1");
    lab.one_to_one_router(
        "nat",
        Side {
            switch: &public,
            cidr: "203.0.113.1/24",
        },
        Side {
            switch: &private,
            cidr: "198.18.1.1/24",
        },
        EXTERNAL,
        INTERNAL,
    );
    let a = lab.namespace("a");
    lab.attach(&a, &public, "203.0.113.20/24");
    let b = lab.namespace("b");
    lab.attach(&b, &public, "203.0.113.30/24");
    let (inside, _stop) = lab.server(&server_ns, |c| {
        c.listen = format!("{INTERNAL}:0").parse().unwrap();
        c.external_ip = Some(EXTERNAL.parse().unwrap());
    });
    // The parties know only the external address.
    let outside = SocketAddr::new(EXTERNAL.parse().unwrap(), inside.port());
    assert_eq!(call(&lab, outside, &a, &b, 1), "udp");
    // The server's candidates name the external address, never the
    // internal one (which no party can reach).
    let offer = lab
        .spawn_in(&a, move || async move {
            let server = TestServer::remote(outside);
            let mut ws = server.raw().await;
            raw_send(&mut ws, raw_join(1, "carol", 2)).await;
            raw_reply(&mut ws, "joined").await;
            raw_send(
                &mut ws,
                serde_json::json!({"type": "publish", "reqId": 2, "audio": true, "video": true}),
            )
            .await;
            loop {
                let m = raw_recv(&mut ws).await.expect("an offer");
                if m["type"] == "offer" {
                    return m["sdp"].as_str().unwrap_or_default().to_owned();
                }
            }
        })
        .join()
        .expect("an offer over the 1:1 NAT");
    let candidates: Vec<&str> = offer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{offer}");
    assert!(
        candidates
            .iter()
            .all(|c| c.contains(EXTERNAL) && !c.contains(INTERNAL)),
        "{candidates:?}"
    );
}

/// A network that blocks UDP: media goes over TCP to the server's TCP
/// candidate (ICE-TCP), both ways.
#[test]
fn a_party_whose_network_drops_udp_gets_media_over_tcp() {
    let (lab, outside, inside, server_ns) = nat_lab_with_parties("nu");
    // The LAN's router forwards no UDP.
    lab.nft(
        &Ns(inside.0.replace("-in", "-nat")),
        "table ip filter {\n  chain block {\n    type filter hook forward priority 0;\n    \
         meta l4proto udp drop\n  }\n}\n",
    );
    let (addr, _stop) = server_in(&lab, &server_ns);
    assert_eq!(call(&lab, addr, &outside, &inside, 1), "tcp");
    assert_eq!(
        call(&lab, addr, &inside, &outside, 2),
        "udp",
        "the other party"
    );
}

/// An operator opens three ports: signaling (TCP 7880) and media (UDP and
/// TCP 7882), and the server's firewall drops everything else coming in.
/// Calls work through it: over UDP, and over TCP for a party whose network
/// blocks UDP. (With a socket per connection on a free port, no media got
/// through such a firewall.)
#[test]
fn a_firewalled_server_needs_only_its_signaling_and_media_ports() {
    let (lab, outside, inside, server_ns) = nat_lab_with_parties("fw");
    lab.nft(
        &server_ns,
        "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
         iif lo accept\n    ct state established,related accept\n    \
         tcp dport 7880 accept\n    udp dport 7882 accept\n    tcp dport 7882 accept\n  }\n}\n",
    );
    let (addr, _stop) = lab.server(&server_ns, |c| {
        c.listen = format!("{SERVER}:7880").parse().unwrap();
        c.media_port = 7882;
    });
    assert_eq!(call(&lab, addr, &outside, &inside, 1), "udp");
    assert_eq!(call(&lab, addr, &inside, &outside, 2), "udp");
    // Now the LAN's router forwards no UDP: TCP 7882 carries it.
    lab.nft(
        &Ns(inside.0.replace("-in", "-nat")),
        "table ip filter {\n  chain block {\n    type filter hook forward priority 0;\n    \
         meta l4proto udp drop\n  }\n}\n",
    );
    assert_eq!(call(&lab, addr, &outside, &inside, 3), "tcp");
}
