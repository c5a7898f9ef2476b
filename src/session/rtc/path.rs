//! What ICE tried and what it chose, read from webrtc-rs's statistics: the
//! path a connection took, and, when none was found, why and what to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Value};
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

/// One side of a candidate pair: `srflx/udp 203.0.113.7:4242`.
#[derive(Debug, Clone, PartialEq)]
struct End {
    typ: String,
    protocol: String,
    address: String,
    /// A local relay candidate: how it reaches its TURN server (udp, tcp,
    /// tls).
    relay: Option<String>,
}

impl End {
    fn kind(&self) -> String {
        match &self.relay {
            Some(t) if t != "udp" => format!("{}/{} (TURN over {t})", self.typ, self.protocol),
            _ => format!("{}/{}", self.typ, self.protocol),
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({"type": self.typ, "protocol": self.protocol, "address": self.address});
        if let Some(t) = &self.relay {
            v["relay_protocol"] = json!(t);
        }
        v
    }
}

/// How each TURN bridge reaches its server (`tcp`, `tls`), by the
/// `HOST:PORT` webrtc-rs was given for it (see `turn_tcp`).
pub(super) type RelayTransports = std::collections::HashMap<String, &'static str>;

/// How a local relay candidate gathered through `url` reaches its server.
fn relay_transport(url: &str, bridges: &RelayTransports) -> String {
    let server = url
        .split_once(':')
        .map_or("", |(_, rest)| rest)
        .split('?')
        .next()
        .unwrap_or_default();
    if let Some(t) = bridges.get(server) {
        return (*t).to_owned();
    }
    if url.starts_with("turns:") {
        "tls".into()
    } else if url.contains("transport=tcp") {
        "tcp".into()
    } else {
        "udp".into()
    }
}

/// ICE's candidates and checks for one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IceSummary {
    /// Candidates by type (host, srflx, prflx, relay), loopback left out.
    local: BTreeMap<String, usize>,
    remote: BTreeMap<String, usize>,
    pairs: usize,
    /// Pairs that got at least one answer to a check.
    answered: usize,
    /// The pair in use, with its round-trip time.
    selected: Option<(End, End, Option<f64>)>,
    /// The connection came up (whether or not the statistics named its
    /// pair yet).
    connected: bool,
}

/// What ICE did for `pc`; `connected` when it came up. Right at the
/// connection the statistics may not name the selected pair yet (seen
/// once in many runs): the pair that carried the most is taken then.
pub(super) async fn summarize(
    pc: &dyn PeerConnection,
    bridges: &RelayTransports,
    connected: bool,
) -> IceSummary {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    // Candidates by the id a pair names them with (their stats id less
    // its `RTCLocalIceCandidate_`/`RTCRemoteIceCandidate_` prefix).
    let mut ends = BTreeMap::new();
    let mut s = IceSummary::default();
    for entry in report.iter() {
        let (c, side) = match entry {
            RTCStatsReportEntry::LocalCandidate(c) => (c, true),
            RTCStatsReportEntry::RemoteCandidate(c) => (c, false),
            _ => continue,
        };
        let address = c.address.clone().unwrap_or_default();
        let typ = c.candidate_type.to_string();
        let relay = (side && typ == "relay").then(|| relay_transport(&c.url, bridges));
        let end = End {
            typ,
            protocol: c.protocol.clone(),
            address: format!("{address}:{}", c.port),
            relay,
        };
        if !address.starts_with("127.") && address != "::1" {
            let counts = if side { &mut s.local } else { &mut s.remote };
            *counts.entry(end.typ.clone()).or_default() += 1;
        }
        let id = c.stats.id.as_str();
        let id = id.split_once('_').map_or(id, |(_, rest)| rest);
        ends.insert((side, id.to_owned()), end);
    }
    let selected_id = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.clone())
        .unwrap_or_default();
    for pair in report.candidate_pairs() {
        s.pairs += 1;
        if pair.responses_received > 0 {
            s.answered += 1;
        }
        let chosen = if selected_id.is_empty() {
            pair.nominated
        } else {
            pair.stats.id == selected_id
        };
        if chosen {
            let (Some(l), Some(r)) = (
                ends.get(&(true, pair.local_candidate_id.clone())),
                ends.get(&(false, pair.remote_candidate_id.clone())),
            ) else {
                continue;
            };
            let rtt = (pair.current_round_trip_time > 0.0)
                .then_some(pair.current_round_trip_time * 1000.0);
            s.selected = Some((l.clone(), r.clone(), rtt));
        }
    }
    s.connected = connected;
    if connected && s.selected.is_none() {
        let busiest = report
            .candidate_pairs()
            .filter(|p| p.responses_received > 0 || p.packets_received > 0)
            .max_by_key(|p| p.packets_received + p.responses_received);
        if let Some(pair) = busiest {
            if let (Some(l), Some(r)) = (
                ends.get(&(true, pair.local_candidate_id.clone())),
                ends.get(&(false, pair.remote_candidate_id.clone())),
            ) {
                let rtt = (pair.current_round_trip_time > 0.0)
                    .then_some(pair.current_round_trip_time * 1000.0);
                s.selected = Some((l.clone(), r.clone(), rtt));
            }
        }
    }
    s
}

fn counts(c: &BTreeMap<String, usize>) -> String {
    if c.is_empty() {
        return "none".into();
    }
    let mut out = String::new();
    for (typ, n) in c {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{typ}×{n}");
    }
    out
}

impl IceSummary {
    /// A summary of a connection whose pair was not named: it came up
    /// before the statistics named it, or it failed (for tests elsewhere).
    #[cfg(test)]
    pub(crate) fn without_pair(connected: bool) -> Self {
        let host = BTreeMap::from([("host".to_owned(), 2)]);
        Self {
            local: host.clone(),
            remote: host,
            pairs: 1,
            answered: 1,
            selected: None,
            connected,
        }
    }

    /// Whether this side had any candidate to try.
    pub(super) fn gathered(&self) -> bool {
        !self.local.is_empty()
    }

    /// "srflx/udp ↔ relay/udp, 12.3 ms", once connected.
    pub fn path(&self) -> Option<String> {
        let (l, r, rtt) = self.selected.as_ref()?;
        let mut s = format!("{} ↔ {}", l.kind(), r.kind());
        if let Some(ms) = rtt {
            let _ = write!(s, ", round trip {ms:.1} ms");
        }
        Some(s)
    }

    /// The chosen path's round trip, if ICE measured one.
    pub fn round_trip(&self) -> Option<std::time::Duration> {
        let (_, _, rtt) = self.selected.as_ref()?;
        rtt.map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0))
    }

    /// The selected path for `--events json`.
    pub fn path_json(&self) -> Option<Value> {
        let (l, r, rtt) = self.selected.as_ref()?;
        Some(json!({
            "local": l.json(),
            "remote": r.json(),
            "rtt_ms": rtt,
        }))
    }

    /// Whether the connection came up.
    pub fn connected(&self) -> bool {
        self.connected
    }

    fn has(c: &BTreeMap<String, usize>, typ: &str) -> bool {
        c.get(typ).is_some_and(|n| *n > 0)
    }

    /// What to do about a connection that never came up.
    fn hint(&self) -> &'static str {
        let relay = Self::has(&self.local, "relay") || Self::has(&self.remote, "relay");
        let srflx = Self::has(&self.local, "srflx") || Self::has(&self.remote, "srflx");
        if relay {
            "a TURN relay was allocated but carried nothing: check that the TURN server \
             relays between its own addresses and is reachable from both sides (or try \
             ?transport=tcp)"
        } else if srflx {
            "both sides know their public address but no direct path works, as behind \
             symmetric NATs or strict firewalls: give both sides --ice-server \
             turn:USER:PASS@HOST:PORT (a TURN server reachable from both)"
        } else {
            "no side knows its public address: if the peers are on different networks, \
             give both sides --ice-server stun:HOST:PORT, or turn:USER:PASS@HOST:PORT \
             behind symmetric NATs"
        }
    }

    /// One line: what was tried, and what to do.
    pub fn why_not(&self) -> String {
        let checks = if self.pairs == 0 || self.answered == 0 {
            "no connectivity check was answered".to_owned()
        } else {
            format!(
                "{} of {} candidate pairs answered",
                self.answered, self.pairs
            )
        };
        format!(
            "no network path: candidates here {}, from the peer {}; {checks}; {}",
            counts(&self.local),
            counts(&self.remote),
            self.hint()
        )
    }

    /// The same facts for `--events json`.
    pub fn why_not_json(&self) -> Value {
        json!({
            "local_candidates": self.local,
            "remote_candidates": self.remote,
            "pairs": self.pairs,
            "answered": self.answered,
            "hint": self.hint(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(local: &[(&str, usize)], remote: &[(&str, usize)]) -> IceSummary {
        let map = |v: &[(&str, usize)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        IceSummary {
            local: map(local),
            remote: map(remote),
            pairs: 4,
            answered: 0,
            selected: None,
            connected: false,
        }
    }

    #[test]
    fn the_hint_follows_what_was_gathered() {
        let s = summary(&[("host", 1)], &[("host", 1)]);
        assert!(
            s.why_not().contains("--ice-server stun:"),
            "{}",
            s.why_not()
        );
        assert!(s.why_not().contains("host×1"));
        let s = summary(&[("host", 1), ("srflx", 1)], &[("host", 1), ("srflx", 1)]);
        assert!(
            s.why_not().contains("turn:USER:PASS@HOST:PORT"),
            "{}",
            s.why_not()
        );
        let s = summary(&[("relay", 1)], &[("host", 1)]);
        assert!(s.why_not().contains("TURN relay was allocated"));
        assert_eq!(s.why_not_json()["pairs"], 4);
    }

    #[test]
    fn the_path_names_both_ends_and_the_round_trip() {
        let end = |typ: &str| End {
            typ: typ.into(),
            protocol: "udp".into(),
            address: "10.0.0.1:1".into(),
            relay: None,
        };
        let s = IceSummary {
            selected: Some((end("srflx"), end("relay"), Some(12.34))),
            ..Default::default()
        };
        assert_eq!(
            s.path().unwrap(),
            "srflx/udp ↔ relay/udp, round trip 12.3 ms"
        );
        assert_eq!(s.path_json().unwrap()["remote"]["type"], "relay");
        assert!(IceSummary::default().path().is_none());
    }

    #[test]
    fn a_relay_says_how_it_reaches_its_turn_server() {
        let bridges: RelayTransports = [("127.0.0.1:5000".to_owned(), "tls")].into();
        assert_eq!(
            relay_transport("turn:127.0.0.1:5000?transport=udp", &bridges),
            "tls"
        );
        assert_eq!(relay_transport("turn:10.0.0.1:3478", &bridges), "udp");
        assert_eq!(
            relay_transport("turn:10.0.0.1:3478?transport=tcp", &bridges),
            "tcp"
        );
        let relayed = End {
            typ: "relay".into(),
            protocol: "udp".into(),
            address: "10.0.0.1:50000".into(),
            relay: Some("tcp".into()),
        };
        assert_eq!(relayed.kind(), "relay/udp (TURN over tcp)");
        assert_eq!(relayed.json()["relay_protocol"], "tcp");
    }
}
