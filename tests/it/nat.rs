//! Peers behind NATs: a small internet of network namespaces made by this
//! test, with nothing leaving this machine. A "public" namespace holds the
//! relay (`p2p signal`) and coturn (as a user runs it, from Debian's
//! package); two home routers NAT their LAN with nftables masquerade; the
//! sender sits behind one, the receiver behind the other.
//!
//! ```text
//!  hostA 10.250.1.2 ─ routerA ─ 10.240.0.2 ┐           ┌ 10.241.0.2 ─ routerB ─ 10.250.2.2 hostB
//!                                           └─ public ─┘
//!                                 10.240.0.1 (relay, coturn)  10.241.0.1
//!                                              │ 10.239.0.1
//!                                           beyond 10.239.0.2
//! ```
//!
//! "beyond" stands for the rest of the internet: the public namespace's
//! default route leads there, and packets for addresses nobody has (the
//! homes' private ones, which peers offer as host candidates) vanish there
//! as they would on the internet. Without it the kernel answers coturn's
//! relaying to such an address with "Network is unreachable", and coturn
//! then closes the whole allocation: TURN seemed broken in an earlier
//! version of this test (bench/NOTES.md, "TURN").
//!
//! - cone: `masquerade` keeps a port per inside address (endpoint-
//!   independent mapping), so STUN-learnt addresses work both ways;
//! - symmetric: `masquerade random,fully-random` picks a new port per
//!   destination, so an address learnt from STUN is useless to the peer.
//!
//! Both routers drop unsolicited inbound packets (forward) and new inbound
//! flows to themselves (input), as home routers do. Needs root, iproute2,
//! nftables and coturn.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const PUBLIC_A: &str = "10.240.0.1";
const STUN_PORT: u16 = 3478;
const TLS_PORT: u16 = 5349;

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    Cone,
    Symmetric,
}

/// The six namespaces; deleted when dropped.
struct Internet {
    public: String,
    router_a: String,
    router_b: String,
    host_a: String,
    host_b: String,
    beyond: String,
}

impl Internet {
    fn new(nat: Nat) -> Self {
        remove_leftover_netns();
        let net = Self {
            public: netns_name("P"),
            router_a: netns_name("RA"),
            router_b: netns_name("RB"),
            host_a: netns_name("HA"),
            host_b: netns_name("HB"),
            beyond: netns_name("I"),
        };
        for ns in net.all() {
            run(&["ip", "netns", "add", ns], None);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"], None);
        }
        // (namespace, interface, address) pairs joined by a veth each.
        let links = [
            (
                (&net.public, "upa", "10.240.0.1/24"),
                (&net.router_a, "wan", "10.240.0.2/24"),
            ),
            (
                (&net.public, "upb", "10.241.0.1/24"),
                (&net.router_b, "wan", "10.241.0.2/24"),
            ),
            (
                (&net.router_a, "lan", "10.250.1.1/24"),
                (&net.host_a, "eth", "10.250.1.2/24"),
            ),
            (
                (&net.router_b, "lan", "10.250.2.1/24"),
                (&net.host_b, "eth", "10.250.2.2/24"),
            ),
            (
                (&net.public, "isp", "10.239.0.1/24"),
                (&net.beyond, "edge", "10.239.0.2/24"),
            ),
        ];
        for ((ns1, if1, addr1), (ns2, if2, addr2)) in links {
            run(
                &[
                    "ip", "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2,
                    "netns", ns2,
                ],
                None,
            );
            for (ns, iface, addr) in [(ns1, if1, addr1), (ns2, if2, addr2)] {
                run(&["ip", "-n", ns, "addr", "add", addr, "dev", iface], None);
                run(&["ip", "-n", ns, "link", "set", iface, "up"], None);
            }
        }
        for ns in [&net.public, &net.router_a, &net.router_b] {
            run(
                &[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
                None,
            );
        }
        for (ns, via) in [
            (&net.router_a, "10.240.0.1"),
            (&net.router_b, "10.241.0.1"),
            (&net.host_a, "10.250.1.1"),
            (&net.host_b, "10.250.2.1"),
            (&net.public, "10.239.0.2"),
        ] {
            run(
                &["ip", "-n", ns, "route", "add", "default", "via", via],
                None,
            );
        }
        let flags = match nat {
            Nat::Cone => "",
            Nat::Symmetric => "random,fully-random",
        };
        let rules = format!(
            "table ip nat {{\n\
             chain post {{ type nat hook postrouting priority srcnat; oifname \"wan\" masquerade {flags}; }}\n\
             }}\n\
             table inet filter {{\n\
             chain fw {{ type filter hook forward priority 0; policy drop;\n\
             iifname \"lan\" accept\n\
             ct state established,related accept\n }}\n\
             chain inp {{ type filter hook input priority 0; policy accept;\n\
             iifname \"wan\" ct state new drop\n }}\n\
             }}\n"
        );
        for ns in [&net.router_a, &net.router_b] {
            run(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&rules));
        }
        net
    }

    /// Both routers drop every UDP packet from their LAN, as a firewall
    /// that lets only TCP out does: only TURN over TCP or TLS gets through.
    fn block_udp(&self) {
        for ns in [&self.router_a, &self.router_b] {
            run(
                &[
                    "ip", "netns", "exec", ns, "nft", "insert", "rule", "inet", "filter", "fw",
                    "iifname", "lan", "meta", "l4proto", "udp", "drop",
                ],
                None,
            );
        }
    }

    /// Router B's public address changes, as when a home's provider
    /// hands it a new one: 10.241.0.2 goes, 10.241.0.3 comes, and the
    /// NAT's mappings go with the old address (the kernel drops
    /// masqueraded flows of an address that is removed).
    fn renumber_b(&self) {
        let rb = self.router_b.as_str();
        // (Deleting the old first: a primary address takes the secondary
        // ones of its subnet with it.)
        run(
            &["ip", "-n", rb, "addr", "del", "10.241.0.2/24", "dev", "wan"],
            None,
        );
        run(
            &["ip", "-n", rb, "addr", "add", "10.241.0.3/24", "dev", "wan"],
            None,
        );
        run(
            &[
                "ip",
                "-n",
                rb,
                "route",
                "replace",
                "default",
                "via",
                "10.241.0.1",
            ],
            None,
        );
    }

    fn all(&self) -> [&String; 6] {
        [
            &self.public,
            &self.router_a,
            &self.router_b,
            &self.host_a,
            &self.host_b,
            &self.beyond,
        ]
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The user and password of [`Auth::User`].
const TURN_USER: &str = "p2p:secret";

/// The secret coturn shares with the relay in [`Auth::Secret`].
const TURN_SECRET: &str = "shared-with-the-relay";

/// How coturn checks clients, as docs/networks.md configures it.
#[derive(Clone, Copy)]
enum Auth {
    /// A long-term user (`lt-cred-mech`, `user=p2p:secret`).
    User,
    /// Time-limited credentials that `p2p signal --turn-secret` hands out
    /// (`use-auth-secret`, `static-auth-secret=…`).
    Secret,
}

/// coturn in the public namespace, configured as docs/networks.md
/// says, with its state in a temporary directory. Killed when
/// dropped.
struct Coturn {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn start(ns: &str, auth: Auth) -> Self {
        Self::start_with(ns, auth, None)
    }

    /// With `tls` (certificate, key), coturn also serves TURN over TLS on
    /// [`TLS_PORT`].
    fn start_with(ns: &str, auth: Auth, tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("turnserver.conf");
        let d = dir.path().display();
        let auth = match auth {
            Auth::User => format!("lt-cred-mech\nuser={TURN_USER}\n"),
            Auth::Secret => format!("use-auth-secret\nstatic-auth-secret={TURN_SECRET}\n"),
        };
        let tls = match tls {
            Some((cert, key)) => format!(
                "tls-listening-port={TLS_PORT}\ncert={}\npkey={}\n",
                cert.display(),
                key.display()
            ),
            None => "no-tls\n".to_owned(),
        };
        std::fs::write(
            &conf,
            format!(
                "listening-ip={PUBLIC_A}\nrelay-ip={PUBLIC_A}\nlistening-port={STUN_PORT}\n\
                 realm=p2p.test\n{auth}fingerprint\nno-cli\n\
                 {tls}no-dtls\nuserdb={d}/turndb\npidfile={d}/turnserver.pid\n\
                 log-file=stdout\nsimple-log\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "turnserver", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start turnserver (apt-get install coturn)");
        // It answers within milliseconds; the peers retry STUN anyway.
        std::thread::sleep(Duration::from_millis(300));
        Self { child, _dir: dir }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer(ns: &str, name: &str, relay: &Relay, cmd: &str, room: &str, extra: &[&str]) -> Spawn {
    let mut args = vec![
        cmd, "--signal", &relay.url, "--room", room, "--events", "json",
    ];
    args.extend_from_slice(extra);
    Spawn::in_netns(ns, name, &args)
}

/// The `path` of the first `connect` event `p` printed.
fn connect_path(p: &Proc) -> Value {
    p.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "connect")
        .map(|v| v["path"].clone())
        .unwrap_or(Value::Null)
}

/// A sender behind router A and a receiver behind router B, both given
/// coturn as their STUN server. The namespaces, coturn and the relay live
/// as long as the returned guards.
struct Session {
    tx: Proc,
    rx: Proc,
    _relay: Relay,
    _turn: Coturn,
    /// The namespaces (a test may change them mid-session).
    net: Internet,
}

async fn session(nat: Nat, room: &str) -> Session {
    session_with(nat, room, &format!("stun:{PUBLIC_A}:{STUN_PORT}")).await
}

async fn session_with(nat: Nat, room: &str, ice_server: &str) -> Session {
    let net = Internet::new(nat);
    let turn = Coturn::start(&net.public, Auth::User);
    let relay = Relay::start_in(&net.public, &format!("{PUBLIC_A}:0")).await;
    let ice = ["--ice-server", ice_server];
    let rx = peer(&net.host_b, "receiver", &relay, "receive", room, &ice).spawn();
    let tx = peer(&net.host_a, "sender", &relay, "send", room, &ice).spawn();
    Session {
        tx,
        rx,
        _relay: relay,
        _turn: turn,
        net,
    }
}

#[tokio::test]
async fn cone_nats_connect_directly_with_stun() {
    // Bound whole: the guards must outlive the test, not the statement.
    let s = session(Nat::Cone, "cone").await;
    let (mut tx, mut rx) = (s.tx, s.rx);
    tx.write_stdin(b"across two NATs\n").await;
    assert_eq!(rx.line().await, "across two NATs");

    // The path is direct: each side sees the other's address on the
    // public side of its router, not its LAN address and not a relay.
    for (p, peer_public) in [(&tx, "10.241.0.2"), (&rx, "10.240.0.2")] {
        let path = connect_path(p);
        let remote = &path["remote"];
        assert!(
            remote["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{peer_public}:"))),
            "{}: path {path}\n{}",
            p.name,
            p.stderr()
        );
        assert_ne!(remote["type"], "relay", "{}: {path}", p.name);
        assert_ne!(path["local"]["type"], "relay", "{}: {path}", p.name);
        assert_eq!(remote["protocol"], "udp");
    }
}

#[tokio::test]
async fn symmetric_nats_without_a_turn_server_say_what_to_do() {
    let s = session(Nat::Symmetric, "sym").await;
    let (mut tx, rx) = (s.tx, s.rx);
    tx.write_stdin(b"never arrives\n").await;

    // ICE gives up after 15 s; both sides then say what was tried and what
    // to add, in the log and in the events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let explained = |p: &Proc| p.stderr().contains("no network path");
    while !(explained(&tx) && explained(&rx)) {
        if tokio::time::Instant::now() > deadline {
            tx.fail(&format!(
                "no explanation within 40 s\n--- receiver ---\n{}",
                rx.stderr()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in [&tx, &rx] {
        let err = p.stderr();
        let line = err.lines().find(|l| l.contains("no network path")).unwrap();
        // Both sides learnt their public address from STUN, and still no
        // direct path: behind symmetric NATs only a relay helps.
        assert!(line.contains("srflx"), "{}: {line}", p.name);
        assert!(line.contains("--ice-server turn:"), "{}: {line}", p.name);
    }
    let failed = tx
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "ice");
    let Some(ice) = failed else {
        tx.fail("no ice event");
    };
    assert!(
        ice["local_candidates"]["srflx"].as_u64() >= Some(1),
        "{ice}"
    );
    assert!(ice["hint"].as_str().unwrap().contains("turn:"), "{ice}");
}

const CHANNEL: &str = r#""event":"channel""#;
const KEYFRAME: &str = r#""event":"keyframe""#;

/// Waits until `p` printed `needle`; on failure shows what both printed.
async fn wait_for(p: &Proc, other: &Proc, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !p.stderr().contains(needle) {
        if tokio::time::Instant::now() > deadline {
            p.fail(&format!(
                "no {needle} within 30 s\n--- {} ---\n{}",
                other.name,
                other.stderr()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether either end of `p`'s connected path is a TURN relay.
fn relayed(p: &Proc) -> bool {
    let path = connect_path(p);
    path["local"]["type"] == "relay" || path["remote"]["type"] == "relay"
}

#[tokio::test]
async fn symmetric_nats_relay_media_and_text_through_turn() {
    let net = Internet::new(Nat::Symmetric);
    let _turn = Coturn::start(&net.public, Auth::User);
    let relay = Relay::start_in(&net.public, &format!("{PUBLIC_A}:0")).await;
    let turn = format!("turn:{TURN_USER}@{PUBLIC_A}:{STUN_PORT}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayed.webm");
    let ice = ["--ice-server", turn.as_str()];
    let mut rx = peer(
        &net.host_b,
        "receiver",
        &relay,
        "receive",
        "turn",
        &[&ice[..], &["--record", path.to_str().unwrap()]].concat(),
    )
    .spawn();
    let mut tx = peer(
        &net.host_a,
        "sender",
        &relay,
        "send",
        "turn",
        &[&ice[..], &["--test-source", "--data"]].concat(),
    )
    .spawn();

    wait_for(&tx, &rx, CHANNEL).await;
    tx.write_stdin(b"through the relay\n").await;
    assert_eq!(rx.line().await, "through the relay");
    for p in [&tx, &rx] {
        assert!(
            relayed(p),
            "{}: path {} is not relayed\n{}",
            p.name,
            connect_path(p),
            p.stderr()
        );
    }

    // Six seconds of media from the first key frame, then Ctrl-C: the
    // recording holds at least five, at the sender's frame rate.
    wait_for(&rx, &tx, KEYFRAME).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    tx.write_stdin(b"still relayed\n").await;
    assert_eq!(rx.line().await, "still relayed");
    rx.signal("INT");
    assert!(rx.wait_exit().await.success(), "receiver exit status");
    crate::mediafile::inspect(&path).assert_valid("VP8", Some("Opus"), 5.0, 25.0);
}

/// Symmetric NATs, coturn with `use-auth-secret`, and a relay (with
/// `extra` options) that hands out credentials for it. Dropped in reverse:
/// relay, coturn, then the namespaces.
async fn with_issued_credentials(extra: &[&str]) -> (Internet, Coturn, Relay) {
    let net = Internet::new(Nat::Symmetric);
    let turn = Coturn::start(&net.public, Auth::Secret);
    let turn_url = format!("turn:{PUBLIC_A}:{STUN_PORT}");
    let mut args = vec!["--turn-secret", TURN_SECRET, "--turn-url", &turn_url];
    args.extend_from_slice(extra);
    let relay = Relay::start_in_with(&net.public, &format!("{PUBLIC_A}:0"), &args).await;
    (net, turn, relay)
}

#[tokio::test]
async fn the_relay_hands_out_turn_credentials_that_coturn_accepts() {
    let (net, _turn, relay) = with_issued_credentials(&["-v"]).await;
    // No --ice-server on either side: what they need comes from the relay.
    let mut rx = peer(&net.host_b, "receiver", &relay, "receive", "rest", &["-v"]).spawn();
    let mut tx = peer(&net.host_a, "sender", &relay, "send", "rest", &["-v"]).spawn();

    wait_for(&tx, &rx, CHANNEL).await;
    tx.write_stdin(b"credentials from the relay\n").await;
    assert_eq!(rx.line().await, "credentials from the relay");
    for p in [&tx, &rx] {
        assert!(
            p.stderr().contains("the relay handed us TURN credentials"),
            "{}: {}",
            p.name,
            p.stderr()
        );
        assert!(relayed(p), "{}: path {}", p.name, connect_path(p));
    }
    // The shared secret never leaves the relay, nor shows in its log.
    for p in [&tx, &rx, &relay.proc] {
        assert!(
            !p.stderr().contains(TURN_SECRET),
            "{} printed the TURN secret",
            p.name
        );
    }

    // A thousand lines in one burst, then end of input: every one arrives,
    // in order, and the sender leaves by itself. (Closing the connection
    // right after the last acknowledgement lost the tail of such a burst,
    // through a relay in most runs.)
    let text: String = (0..1000).map(|i| format!("relayed {i}\n")).collect();
    tx.write_stdin(text.as_bytes()).await;
    tx.close_stdin();
    for i in 0..1000 {
        assert_eq!(rx.line().await, format!("relayed {i}"));
    }
    assert!(tx.wait_exit().await.success(), "sender exit status");
}

/// A sender and a receiver behind symmetric NATs whose routers let no UDP
/// out connect through `turn_url` (TCP or TLS) and text arrives.
async fn relayed_over_a_stream(turn_url: &str, tls: bool, room: &str) {
    let net = Internet::new(Nat::Symmetric);
    net.block_udp();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), &format!("IP:{PUBLIC_A}"));
    let _turn = Coturn::start_with(&net.public, Auth::User, tls.then_some((&*cert, &*key)));
    let relay = Relay::start_in(&net.public, &format!("{PUBLIC_A}:0")).await;
    let ca = cert.to_str().unwrap();
    let mut args = vec!["--ice-server", turn_url];
    if tls {
        args.extend(["--ca-file", ca]);
    }
    let mut rx = peer(&net.host_b, "receiver", &relay, "receive", room, &args).spawn();
    let mut tx = peer(&net.host_a, "sender", &relay, "send", room, &args).spawn();
    wait_for(&tx, &rx, CHANNEL).await;
    tx.write_stdin(b"over a stream\n").await;
    assert_eq!(rx.line().await, "over a stream");
    // The path says so: a local relay candidate that reaches coturn over
    // TCP or TLS.
    let want = if tls { "tls" } else { "tcp" };
    for p in [&tx, &rx] {
        let path = connect_path(p);
        assert!(relayed(p), "{}: path {path}", p.name);
        if path["local"]["type"] == "relay" {
            assert_eq!(path["local"]["relay_protocol"], want, "{}: {path}", p.name);
        }
    }
    assert!(
        [&tx, &rx]
            .iter()
            .any(|p| connect_path(p)["local"]["type"] == "relay"),
        "neither side used its own relay"
    );
}

#[tokio::test]
async fn turn_over_tcp_gets_through_a_firewall_that_drops_udp() {
    let url = format!("turn:{TURN_USER}@{PUBLIC_A}:{STUN_PORT}?transport=tcp");
    relayed_over_a_stream(&url, false, "tcp").await;
}

#[tokio::test]
async fn turn_over_tls_with_a_self_signed_certificate_and_ca_file() {
    let url = format!("turns:{TURN_USER}@{PUBLIC_A}:{TLS_PORT}");
    relayed_over_a_stream(&url, true, "tls").await;
}

#[tokio::test]
async fn a_browser_behind_a_symmetric_nat_watches_with_credentials_from_the_relay() {
    let (net, _turn, relay) = with_issued_credentials(&[]).await;
    let _tx = peer(
        &net.host_a,
        "sender",
        &relay,
        "send",
        "page",
        &["--test-source"],
    )
    .spawn();

    // Our page in headless Chromium behind the other NAT, with no ICE
    // server of its own: it gets TURN credentials from the relay.
    let page = format!("{}/?room=page&nick=viewer", relay.http_url());
    let (ok, result) = page_script(
        &net.host_b,
        "watch-page.mjs",
        &[&page],
        Duration::from_secs(120),
    )
    .await;
    eprintln!("the page behind the NAT: {result}");
    assert!(ok, "the page failed: {result}");
    assert!(result["issued"].as_u64() >= Some(1), "{result}");
    assert!(
        result["local"] == "relay" || result["remote"] == "relay",
        "not relayed: {result}"
    );
    // 3 s of video: at least 10 frames a second decoded, with a size.
    assert!(result["frames"].as_u64() >= Some(30), "{result}");
    assert!(result["width"].as_u64() > Some(0), "{result}");
}

/// The receiver's NAT gets a new public address mid-session: nothing on
/// the receiver's host changes, but its relay connection and its path
/// both die. The same session carries on through an ICE restart, and
/// every line written meanwhile arrives, in order.
#[tokio::test]
async fn when_the_receivers_nat_gets_a_new_public_address_the_session_carries_on() {
    a_new_public_address(Nat::Cone, "renumbered").await;
}

/// The same behind symmetric NATs, relayed through TURN: the receiver's
/// allocation on coturn belonged to its old public address (coturn drops
/// what comes from the new one), so its restart needs a new allocation.
#[tokio::test]
async fn behind_symmetric_nats_a_new_public_address_gets_a_new_turn_allocation() {
    a_new_public_address(Nat::Symmetric, "renumbered-turn").await;
}

async fn a_new_public_address(nat: Nat, room: &str) {
    const RECONNECT: &str = r#""event":"reconnect""#;
    // Cone NATs meet directly with STUN; symmetric ones through TURN.
    let server = match nat {
        Nat::Cone => format!("stun:{PUBLIC_A}:{STUN_PORT}"),
        Nat::Symmetric => format!("turn:{TURN_USER}@{PUBLIC_A}:{STUN_PORT}"),
    };
    let s = session_with(nat, room, &server).await;
    let (mut tx, mut rx) = (s.tx, s.rx);
    let mut sent = Vec::new();
    let mut n = 0;
    let line = |n: usize| format!("line {n}");
    tx.write_stdin(format!("{}\n", line(n)).as_bytes()).await;
    sent.push(line(n));
    assert_eq!(rx.line().await, sent[0]);
    // Behind symmetric NATs the path is relayed (no direct one exists,
    // after the change either).
    assert_eq!(nat == Nat::Symmetric, relayed(&rx), "{}", connect_path(&rx));
    s.net.renumber_b();
    let moved = std::time::Instant::now();
    while rx.stderr_count(RECONNECT) == 0 {
        if moved.elapsed() > Duration::from_secs(40) {
            rx.fail(&format!(
                "no reconnect within 40 s of the change; sender said:\n{}",
                tx.stderr()
            ));
        }
        n += 1;
        tx.write_stdin(format!("{}\n", line(n)).as_bytes()).await;
        sent.push(line(n));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = moved.elapsed();
    eprintln!(
        "back {:.2} s after the NAT's address changed",
        back.as_secs_f64()
    );
    // Found by ICE's silence (3 s) and restarted in ~0.1 s: 3.2 s
    // measured (5.2 s with webrtc-rs's 5 s). The issue's aim: within 5 s.
    assert!(
        back <= Duration::from_secs(5),
        "back only {back:?} after the change:\n{}",
        rx.stderr()
    );
    for _ in 0..10 {
        n += 1;
        tx.write_stdin(format!("{}\n", line(n)).as_bytes()).await;
        sent.push(line(n));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = vec![sent[0].clone()];
    while got.len() < sent.len() {
        got.push(rx.line().await);
    }
    assert_eq!(got, sent, "lines lost or reordered across the change");
    assert_eq!(
        rx.stderr_count(r#""event":"connect""#),
        1,
        "the session was replaced, not carried on:\n{}",
        rx.stderr()
    );
}
