//! The settings a `send` or `receive` session runs with; `config` builds
//! and checks them from the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

use super::machine::Verify;
use super::rtc::IceServer;
use crate::cli::EventFormat;
use crate::media::capture::CaptureConfig;
use crate::signaling::SignalOptions;

/// Settings shared by `send` and `receive`.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub signal: String,
    pub signal_opts: SignalOptions,
    pub room: String,
    pub ice_servers: Vec<IceServer>,
    pub connection_timeout: Duration,
    pub binary: bool,
    pub events: EventFormat,
    pub events_file: Option<PathBuf>,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub struct SendConfig {
    pub peer: PeerConfig,
    pub to: Option<String>,
    pub state: Map<String, Value>,
    pub state_file: Option<PathBuf>,
    pub verify: Option<Verify>,
    pub max_receivers: Option<usize>,
    pub queue_size: usize,
    pub keep_open: bool,
    pub media: Option<CaptureConfig>,
    /// Open data channels (stdin → receivers).
    pub data: bool,
    /// Publish to a WHIP endpoint too (`--whip`).
    pub whip: Option<super::whip::WhipConfig>,
    /// Serve the room's receivers: false when publishing only to WHIP or
    /// serving only WHEP viewers.
    pub mesh: bool,
    /// Take the media from a WHIP publisher (`--whip-listen`).
    pub ingest: Option<super::ingest::IngestConfig>,
    /// Serve WHEP viewers (`--whep-listen`).
    pub viewers: Option<super::viewers::ViewersConfig>,
}

#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    pub peer: PeerConfig,
    pub credentials: Option<Value>,
    pub plain_credentials: bool,
    pub ping_interval: Duration,
    pub ping_attempts: u32,
    pub once: bool,
    pub record: Option<PathBuf>,
    pub display: bool,
    /// Watch a WHEP endpoint instead of a room (`--whep`).
    pub whep: Option<super::whep::WhepConfig>,
}

pub(crate) fn state_object(text: &str, what: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("{what} must be a JSON object, e.g. '{{\"nickname\":\"cam 1\"}}'"),
        Err(e) => bail!("{what} is not valid JSON: {e}"),
    }
}

/// Reads a `--state-file`.
pub fn read_state_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --state-file {}", path.display()))?;
    state_object(&text, &format!("--state-file {}", path.display()))
}
