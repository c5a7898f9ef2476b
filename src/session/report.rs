//! How session events reach the user: status lines through `tracing`, or one
//! JSON object per line (`--events json`) on stderr or in a file.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::machine::Event;
use super::rtc::{short, IceSummary, Payload};
use super::throttle::{kind_of, Throttle};
use crate::cli::EventFormat;

#[derive(Clone)]
pub struct Reporter {
    /// "sender" or "receiver": names the other side in status lines.
    peer_role: &'static str,
    json: Option<Arc<Mutex<Box<dyn Write + Send>>>>,
    /// The path each peer's connection took, for its `connect` event.
    paths: Arc<Mutex<HashMap<String, IceSummary>>>,
    /// Each connected peer's round trip, as ICE measured it when it
    /// connected.
    round_trips: Arc<Mutex<HashMap<String, Duration>>>,
    /// Complaints about what peers sent, kept to a few a kind.
    complaints: Arc<Mutex<Throttle>>,
    /// Set once we leave the room ourselves: peers disposed from then on
    /// did not leave, we did.
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

impl Reporter {
    /// We are leaving the room: the disposals that follow are ours.
    pub fn leaving(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn new(
        peer_role: &'static str,
        format: EventFormat,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let json: Option<Box<dyn Write + Send>> = match (format, file) {
            (_, Some(path)) => Some(Box::new(std::fs::File::create(path).map_err(|e| {
                anyhow::anyhow!("cannot create --events-file {}: {e}", path.display())
            })?)),
            (EventFormat::Json, None) => Some(Box::new(std::io::stderr())),
            (EventFormat::Human, None) => None,
        };
        Ok(Self {
            peer_role,
            json: json.map(|w| Arc::new(Mutex::new(w))),
            paths: Arc::default(),
            round_trips: Arc::default(),
            complaints: Arc::default(),
            leaving: Arc::default(),
        })
    }

    fn write(&self, mut v: Value) {
        let Some(out) = &self.json else { return };
        if let Some(obj) = v.as_object_mut() {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            obj.insert("ts".into(), json!(ts as u64));
        }
        let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(w, "{v}");
        let _ = w.flush();
    }

    /// `id`'s round trip when it connected, if ICE measured one.
    pub fn round_trip(&self, id: &str) -> Option<Duration> {
        self.round_trips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// What ICE did for `id`: kept for the `connect` event that follows,
    /// or, when nothing connected, an `ice` event with what was tried.
    pub fn ice(&self, id: &str, summary: IceSummary) {
        // A connection that came up has a path, named or not: no warning.
        if summary.path().is_some() || summary.connected() {
            self.paths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_owned(), summary);
            return;
        }
        tracing::warn!("{} {}: {}", self.peer_role, short(id), summary.why_not());
        let mut v = summary.why_not_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), json!("ice"));
            o.insert("id".into(), json!(id));
        }
        self.write(v);
    }

    /// The session started outside any room (publishing only to WHIP,
    /// serving only WHEP viewers, watching a WHEP endpoint): `why` says
    /// where it is instead.
    pub fn started_alone(&self, role: &str, id: &str, why: &str) {
        tracing::info!("{role} {} started, in no room: {why}", short(id));
        self.write(json!({"event": "start", "role": role, "id": id, "room": null}));
    }

    /// The session started: our id and room.
    pub fn started(&self, role: &str, id: &str, room: &str) {
        tracing::info!("{role} {} joined room {room:?}", short(id));
        self.write(json!({"event": "start", "role": role, "id": id, "room": room}));
    }

    pub fn event(&self, ev: &Event) {
        let role = self.peer_role;
        match ev {
            Event::Connect { id, state } => {
                let ice = self
                    .paths
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                if let Some(rtt) = ice.as_ref().and_then(IceSummary::round_trip) {
                    self.round_trips
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), rtt);
                }
                let path = ice.as_ref().and_then(IceSummary::path);
                match &path {
                    Some(p) => tracing::info!("{role} {} connected ({p})", short(id)),
                    None => tracing::info!("{role} {} connected", short(id)),
                }
                let path = ice.as_ref().and_then(IceSummary::path_json);
                self.write(json!({"event": "connect", "id": id, "state": state, "path": path}));
            }
            Event::Channel { id } => {
                tracing::debug!("data channel with {role} {} open", short(id));
                self.write(json!({"event": "channel", "id": id}));
            }
            Event::Sync { id, state } => {
                tracing::info!(
                    "{role} {} state: {}",
                    short(id),
                    serde_json::Value::Object(state.clone())
                );
                self.write(json!({"event": "sync", "id": id, "state": state}));
            }
            Event::Dispose { id, reason } => {
                self.round_trips
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                let ours = self.leaving.load(std::sync::atomic::Ordering::Relaxed);
                match reason {
                    Some(r) => tracing::info!("{role} {} disposed: {r}", short(id)),
                    None if ours => {
                        tracing::debug!("closed the connection to {role} {}", short(id))
                    }
                    None => tracing::info!("{role} {} left", short(id)),
                }
                self.write(json!({"event": "dispose", "id": id, "error": reason}));
            }
            Event::Reconnecting { id, reason } => {
                tracing::warn!("{role} {}: {reason}: restarting ICE", short(id));
                self.write(json!({"event": "reconnecting", "id": id, "error": reason}));
            }
            Event::Reconnected { id, after } => {
                tracing::info!(
                    "{role} {} reconnected after {:.1} s",
                    short(id),
                    after.as_secs_f64()
                );
                self.write(json!({"event": "reconnect", "id": id,
                    "gap_ms": after.as_millis() as u64}));
            }
            Event::Rejected { id } => {
                let Some(held) = self.complain("credentials rejected") else {
                    return;
                };
                tracing::warn!(
                    "refused {role} {}: its credentials do not match --verify{}",
                    short(id),
                    held_back(held)
                );
                self.write(
                    json!({"event": "error", "id": id, "error": "credentials rejected",
                    "held_back": held}),
                );
            }
            Event::Error { id, error } => {
                let Some(held) = self.complain(kind_of(error)) else {
                    return;
                };
                match id {
                    Some(id) => tracing::warn!("{role} {}: {error}{}", short(id), held_back(held)),
                    None => tracing::warn!("{error}{}", held_back(held)),
                }
                self.write(json!({"event": "error", "id": id, "error": error, "held_back": held}));
            }
        }
    }

    /// Whether to report a complaint of `kind` now, and how many like it
    /// were held back before it.
    fn complain(&self, kind: &str) -> Option<u64> {
        self.complaints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(std::time::Instant::now(), kind)
    }

    /// A sender's track delivered its first packet.
    pub fn track(&self, id: &str, kind: &str, codec: &str) {
        tracing::debug!("{} {} started: {kind} {codec}", self.peer_role, short(id));
        self.write(json!({"event": "track", "id": id, "kind": kind, "codec": codec}));
    }

    /// The first key frame of a sender went into the recording.
    pub fn keyframe(&self, id: &str) {
        tracing::debug!("{} {}: first key frame recorded", self.peer_role, short(id));
        self.write(json!({"event": "keyframe", "id": id}));
    }

    /// Periodic statistics (`--events json` only).
    pub fn stats(&self, v: Value) {
        if self.json.is_some() {
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("stats"));
            }
            self.write(v);
        }
    }

    /// A data message arrived (receiver side), for `--events json` only.
    pub fn message(&self, id: &str, payload: &Payload) {
        if self.json.is_none() {
            return;
        }
        match payload {
            Payload::Text(t) => self.write(json!({"event": "message", "id": id, "message": t})),
            Payload::Binary(b) => {
                self.write(json!({"event": "message", "id": id, "bytes": b.len()}))
            }
        }
    }
}

/// Said after a complaint when others like it were not printed.
fn held_back(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more like it not shown)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that came up before its statistics named its pair is
    /// not reported as having no network path (it was, 50 µs before
    /// "connected").
    #[test]
    fn a_connection_that_came_up_is_never_said_to_have_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events");
        let r = Reporter::new("receiver", EventFormat::Human, Some(&file)).unwrap();
        r.ice("peer-a", IceSummary::without_pair(true));
        r.ice("peer-b", IceSummary::without_pair(false));
        let events = std::fs::read_to_string(&file).unwrap();
        assert!(!events.contains("peer-a"), "{events}");
        assert!(
            events.contains(r#""event":"ice""#) && events.contains("peer-b"),
            "{events}"
        );
    }
}
