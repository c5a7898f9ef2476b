//! Validated settings, built from the raw command line. Everything a user
//! can get wrong is checked here, once, with a message that says what to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

use crate::cli::{MediaArgs, OutputArgs, PeerArgs, ReceiveArgs, SendArgs};
use crate::media::capture::{frame_size, probe_file, AudioSource, CaptureConfig, VideoSource};
use crate::session::ingest::IngestConfig;
use crate::session::machine::Verify;
use crate::session::rtc::IceServer;
use crate::session::settings::state_object;
pub use crate::session::settings::{read_state_file, PeerConfig, ReceiveConfig, SendConfig};
use crate::session::viewers::ViewersConfig;
use crate::session::whep::WhepConfig;
use crate::session::whip::WhipConfig;
use crate::signaling::SignalOptions;

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v <= 0.0 {
        bail!("--{name} must be a positive number of seconds, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// A value given on the command line: JSON if it parses, else the string.
pub fn json_or_string(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// Parses `stun:host:port`, `turn:user:pass@host:port?transport=udp`, ….
pub fn ice_server(spec: &str) -> anyhow::Result<IceServer> {
    let spec = spec.trim();
    let Some((scheme, rest)) = spec.split_once(':') else {
        bail!("bad --ice-server {spec:?}: expected stun:HOST:PORT or turn:USER:PASS@HOST:PORT");
    };
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        bail!("bad --ice-server {spec:?}: scheme must be stun, stuns, turn or turns");
    }
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    if host.is_empty() {
        bail!("bad --ice-server {spec:?}: no host");
    }
    let (username, credential) = match userinfo {
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            (Some(user.to_owned()), Some(pass.to_owned()))
        }
        None => (None, None),
    };
    if scheme.starts_with("turn") && username.is_none() {
        bail!("bad --ice-server {spec:?}: a TURN server needs USER:PASS@ before the host");
    }
    Ok(IceServer {
        url: format!("{scheme}:{host}"),
        username,
        credential,
    })
}

impl PeerConfig {
    fn from_args(
        a: &PeerArgs,
        out: &OutputArgs,
        binary: bool,
        quiet: bool,
    ) -> anyhow::Result<Self> {
        if a.room.is_empty() {
            bail!("--room must not be empty");
        }
        crate::signaling::check_url(&a.signal)?;
        Ok(Self {
            signal: a.signal.clone(),
            signal_opts: SignalOptions {
                token: a.token.clone().filter(|t| !t.is_empty()),
                secret: a.secret.clone().filter(|t| !t.is_empty()),
                ca_file: a.ca_file.clone(),
                nats_creds: a.nats_creds.clone(),
            },
            room: a.room.clone(),
            ice_servers: a
                .ice_servers
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| ice_server(s))
                .collect::<anyhow::Result<_>>()?,
            connection_timeout: seconds("connection-timeout", a.connection_timeout)?,
            binary,
            events: out.events,
            events_file: out.events_file.clone(),
            quiet,
        })
    }
}

impl SendConfig {
    pub fn from_args(a: &SendArgs, quiet: bool) -> anyhow::Result<Self> {
        let peer = PeerConfig::from_args(&a.peer, &a.output, a.binary, quiet)?;
        let mut state = match &a.state {
            Some(s) => state_object(s, "--state")?,
            None => Map::new(),
        };
        if let Some(path) = &a.state_file {
            state.extend(read_state_file(path)?);
        }
        let mut accepted: Vec<Value> = a.verify.iter().map(|v| json_or_string(v)).collect();
        if let Some(path) = &a.verify_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --verify-file {}", path.display()))?;
            accepted.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(json_or_string),
            );
        }
        let verify =
            (!accepted.is_empty() || a.verify_file.is_some()).then_some(Verify { accepted });
        if a.queue_size == 0 {
            bail!("--queue-size must be at least 1");
        }
        let mut media = capture_config(&a.media)?;
        let whip = match a.whip.whip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                let Some(m) = &mut media else {
                    bail!("--whip publishes media: add --camera, --mic, --test-source or --file");
                };
                if !a.room_given && a.whip.whep_listen.is_none() {
                    // One connection, one encoding: the layers are for
                    // the room's receivers and WHEP viewers.
                    m.layers = 1;
                }
                crate::whip::Client::new(crate::whip::Kind::Whip, url, None, None)?;
                Some(WhipConfig {
                    url: url.to_owned(),
                    token: a.whip.whip_token.clone().filter(|t| !t.is_empty()),
                    ca_file: a.peer.ca_file.clone(),
                    connection_timeout: peer.connection_timeout,
                })
            }
        };
        let ingest = match a.whip.whip_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(listen) => Some(ingest_config(a, listen)?),
        };
        let viewers = match a.whip.whep_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(listen) => {
                let sends: Vec<String> = match (&media, &ingest) {
                    (Some(m), _) => {
                        use crate::media::capture::{audio_spec, video_spec};
                        let video = m.video.as_ref().map(|_| video_spec(m.codec).mime);
                        let audio = m.audio.as_ref().map(|_| audio_spec().mime);
                        video.into_iter().chain(audio).collect()
                    }
                    (None, Some(i)) => i.specs.iter().map(|s| s.mime.clone()).collect(),
                    (None, None) => bail!(
                        "--whep-listen serves media: add --camera, --mic, --test-source, --file \
                         or --whip-listen"
                    ),
                };
                Some(ViewersConfig {
                    listen: listen.to_owned(),
                    token: a.whip.whep_token.clone().filter(|t| !t.is_empty()),
                    max: a.max_receivers.map_or(DEFAULT_MAX_VIEWERS, |n| n as usize),
                    connect_timeout: peer.connection_timeout,
                    sends,
                })
            }
        };
        Ok(Self {
            mesh: (whip.is_none() && viewers.is_none()) || a.room_given,
            whip,
            viewers,
            data: (media.is_none() && ingest.is_none()) || a.media.data,
            ingest,
            media,
            peer,
            to: a.to.clone(),
            state,
            state_file: a.state_file.clone(),
            verify,
            max_receivers: a.max_receivers.map(|n| n as usize),
            queue_size: a.queue_size,
            keep_open: a.keep_open,
        })
    }
}

impl ReceiveConfig {
    pub fn from_args(a: &ReceiveArgs, quiet: bool) -> anyhow::Result<Self> {
        let peer = PeerConfig::from_args(&a.peer, &a.output, a.binary, quiet)?;
        if a.display
            && std::env::var_os("DISPLAY").is_none()
            && std::env::var_os("WAYLAND_DISPLAY").is_none()
        {
            bail!("--display needs a graphical session (DISPLAY or WAYLAND_DISPLAY is not set); use --record to keep the media instead");
        }
        let to_stdout = a
            .record
            .as_deref()
            .is_some_and(crate::media::record::is_stdout);
        if to_stdout && peer.binary {
            bail!("--record - and --binary both write to stdout: record to a file (--record out.webm) or drop one");
        }
        if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            bail!("--record - writes a video stream to stdout, which is a terminal: pipe it into a player (--record - | ffplay -) or record to a file");
        }
        Ok(Self {
            once: a.once || peer.binary,
            peer,
            credentials: a.credentials.as_deref().map(json_or_string),
            plain_credentials: a.plain_credentials,
            ping_interval: seconds("ping-interval", a.ping_interval)?,
            ping_attempts: a.ping_attempts,
            record: a
                .record
                .as_deref()
                .map(|p| record_path(p, a.overwrite))
                .transpose()?,
            display: a.display,
            whep: match a.whep.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(url) => {
                    if a.binary {
                        bail!("--whep watches media; --binary is for data from a room's senders: drop one");
                    }
                    let token = a.whep_token.clone().filter(|t| !t.is_empty());
                    let ca_file = a.peer.ca_file.clone();
                    crate::whip::Client::new(crate::whip::Kind::Whep, url, None, None)?;
                    Some(WhepConfig {
                        url: url.to_owned(),
                        token,
                        ca_file,
                    })
                }
            },
        })
    }
}

/// `--record PATH`, checked now: otherwise a receiver joins the room and
/// fails only when the first sender's media arrives. A file already there
/// is kept unless `overwrite`.
fn record_path(path: &Path, overwrite: bool) -> anyhow::Result<PathBuf> {
    if crate::media::record::is_stdout(path) {
        return Ok(path.to_owned());
    }
    let show = path.display();
    crate::media::record::check_container(path).with_context(|| format!("--record {show}"))?;
    // `{id}` becomes a sender id later; a directory named with it cannot be
    // checked yet, so check the nearest one above it.
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.to_string_lossy().contains("{id}")) {
        dir = d.parent();
    }
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--record {show}: {shown} is not a directory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "--record {show}: directory {shown} does not exist; create it (mkdir -p {shown}) or record elsewhere"
        ),
        Err(e) => bail!("--record {show}: cannot use directory {shown}: {e}"),
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        bail!("--record {show} is a directory: name a file in it, e.g. {show}/out.webm");
    }
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        bail!("--record {show}: the file exists; name another, remove it, or add --overwrite");
    }
    // Permission bits do not tell (root, ACLs, read-only mounts): try.
    let probe = dir.join(format!(".p2p-record-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!(
            "--record {show}: cannot write in directory {shown} ({e}); make it writable or record elsewhere"
        ),
    }
    Ok(path.to_owned())
}

/// WHEP viewers served at once without --max-receivers.
const DEFAULT_MAX_VIEWERS: usize = 100;

/// `--whip-listen`: the tracks publishers must send, from the media flags.
fn ingest_config(a: &SendArgs, listen: &str) -> anyhow::Result<IngestConfig> {
    use crate::media::capture::{audio_spec, video_spec};
    let m = &a.media;
    let mut specs = Vec::new();
    if !m.no_video {
        specs.push(video_spec(m.video_codec));
    }
    if !m.no_audio {
        specs.push(audio_spec());
    }
    if specs.is_empty() {
        bail!("nothing left to take: --no-audio and --no-video together remove every track");
    }
    if m.video_bitrate == 0 || m.audio_bitrate == 0 {
        bail!("--video-bitrate and --audio-bitrate must be positive (kbit/s)");
    }
    Ok(IngestConfig {
        connect_timeout: seconds("connection-timeout", a.peer.connection_timeout)?,
        listen: listen.to_owned(),
        token: a.whip.whip_token.clone().filter(|t| !t.is_empty()),
        specs,
        video_bps: f64::from(m.video_bitrate) * 1000.0,
        audio_bps: if m.no_audio {
            0.0
        } else {
            f64::from(m.audio_bitrate) * 1000.0
        },
    })
}

/// The media a sender captures, from `--camera`, `--mic`, `--test-source`
/// and `--file`; `None` when it sends data only.
fn capture_config(m: &MediaArgs) -> anyhow::Result<Option<CaptureConfig>> {
    let dev = |d: &Option<String>| d.clone().filter(|d| !d.is_empty());
    let mut probed = None;
    let (mut video, mut audio) = if m.test_source {
        (Some(VideoSource::Test), Some(AudioSource::Test))
    } else if let Some(path) = &m.file {
        let info = probe_file(path)?;
        probed = Some(info);
        let shown = path.display();
        let (has_video, has_audio) = (info.video.is_some(), info.audio);
        if !has_video && !has_audio {
            bail!("--file {shown}: it has neither video nor audio GStreamer can decode");
        }
        if !has_video && m.no_audio {
            bail!("--file {shown} has no video, and --no-audio leaves nothing to send");
        }
        if !has_audio && m.no_video {
            bail!("--file {shown} has no audio, and --no-video leaves nothing to send");
        }
        if !has_video && !m.no_video {
            tracing::info!("--file {shown} has no video: sending its audio only");
        }
        if !has_audio && !m.no_audio {
            tracing::info!("--file {shown} has no audio: sending its video only");
        }
        (
            has_video.then_some(VideoSource::File),
            has_audio.then_some(AudioSource::File),
        )
    } else if m.camera.is_some() {
        (
            Some(VideoSource::Camera(dev(&m.camera))),
            Some(AudioSource::Mic(dev(&m.mic))),
        )
    } else if m.mic.is_some() {
        (None, Some(AudioSource::Mic(dev(&m.mic))))
    } else {
        if m.no_audio || m.no_video || m.looped {
            bail!("--no-audio, --no-video and --loop need a media source: --camera, --mic, --test-source or --file");
        }
        return Ok(None);
    };
    if m.no_audio {
        audio = None;
    }
    if m.no_video {
        video = None;
    }
    if video.is_none() && audio.is_none() {
        bail!("nothing left to send: --no-audio and --no-video together remove every track");
    }
    if m.width == Some(0) || m.height == Some(0) || m.fps == 0 {
        bail!("--width, --height and --fps must be positive");
    }
    if m.width.is_some_and(|w| w % 2 == 1) || m.height.is_some_and(|h| h % 2 == 1) {
        bail!("--width and --height must be even numbers (encoders need it)");
    }
    if m.video_bitrate == 0 || m.audio_bitrate == 0 {
        bail!("--video-bitrate and --audio-bitrate must be positive (kbit/s)");
    }
    let (width, height) = frame_size((m.width, m.height), probed.and_then(|p| p.video));
    Ok(Some(CaptureConfig {
        video,
        audio,
        file: m.file.clone(),
        looped: m.looped,
        pattern: m.test_pattern,
        codec: m.video_codec,
        width,
        height,
        fps: m.fps,
        video_kbps: m.video_bitrate,
        audio_kbps: m.audio_bitrate,
        layers: usize::from(m.layers),
        file_duration: probed.and_then(|p| p.duration),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ice_servers() {
        let s = ice_server("stun:stun.example.org:3478").unwrap();
        assert_eq!(s.url, "stun:stun.example.org:3478");
        assert_eq!(s.username, None);
        let t = ice_server("turn:alice:pa:ss@turn.example.org:3478?transport=udp").unwrap();
        assert_eq!(t.url, "turn:turn.example.org:3478?transport=udp");
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.credential.as_deref(), Some("pa:ss"));
        for bad in ["", "stun", "http://x", "turn:host:3478", "stun:"] {
            assert!(ice_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_paths_are_checked_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = |p: &Path| format!("{:#}", record_path(p, false).unwrap_err());
        for ok in ["out.webm", "rec-{id}.mkv", "{id}/x.mp4", "{id}/{id}/x.webm"] {
            let p = dir.join(ok);
            assert_eq!(record_path(&p, false).unwrap(), p, "{ok}");
        }
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "probe left");

        let missing = dir.join("no/such");
        let e = err(&missing.join("x.webm"));
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        let e = err(&missing.join("{id}").join("x.webm"));
        assert!(e.contains("does not exist"), "{e}");

        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(err(&file.join("x.webm")).contains("is not a directory"));
        assert!(err(dir).contains("is a directory"));
        assert!(err(&dir.join("x.avi")).contains(".webm, .mkv or .mp4"));

        // A recording already there is kept, unless --overwrite.
        let earlier = dir.join("earlier.webm");
        std::fs::write(&earlier, b"a recording").unwrap();
        let e = err(&earlier);
        assert!(
            e.contains(&earlier.display().to_string()) && e.contains("--overwrite"),
            "{e}"
        );
        assert_eq!(record_path(&earlier, true).unwrap(), earlier);
        assert_eq!(std::fs::read(&earlier).unwrap(), b"a recording");
    }

    #[test]
    fn values_are_json_or_strings() {
        assert_eq!(json_or_string("abc"), Value::String("abc".into()));
        assert_eq!(json_or_string("{\"k\":1}"), serde_json::json!({"k":1}));
        assert_eq!(json_or_string("42"), serde_json::json!(42));
    }

    #[test]
    fn state_must_be_an_object() {
        assert!(state_object("{\"a\":1}", "--state").is_ok());
        let e = state_object("[1]", "--state").unwrap_err().to_string();
        assert!(e.contains("JSON object"), "{e}");
        let e = state_object("{", "--state").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
