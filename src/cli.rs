//! The raw command line, as clap parses it. `config` turns it into
//! validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Peer-to-peer WebRTC broadcasting: a camera and microphone, a test source
/// or a media file, and text or bytes from stdin, from one machine to many,
/// through one signaling URL.
///
/// Start a relay with `p2p signal` (or use a NATS cluster), then `p2p send`
/// on one machine and `p2p receive` on as many as you like, all with the same
/// --signal URL and --room. The sender encodes its media once, whatever the
/// number of receivers; receivers record it without re-encoding or play it,
/// and write data to stdout. Media and data flow peer to peer; the relay only
/// carries the handshake, and serves a web page through which browsers join
/// the same rooms.
#[derive(Debug, Parser)]
#[command(
    name = "p2p",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = MAIN_AFTER
)]
pub struct Cli {
    /// More logs on stderr (-v p2p debug, -vv all debug, -vvv trace).
    /// RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr: no status lines, no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

const MAIN_AFTER: &str = "Examples (three terminals, no camera needed):
  p2p signal                                   # the relay, on 127.0.0.1:8000
  p2p send --room demo --test-source           # a test picture and tone
  p2p receive --room demo --record out.webm    # record it (Ctrl-C to stop)
  tail -f app.log | p2p send --room ops        # lines to every receiver's stdout

Exit status:
  0  the session ended normally: the sender's stdin or --file ended and was delivered,
     Ctrl-C or SIGTERM, every sender left (receive --once), stdout was closed
  1  a failure while running: relay unreachable, capture or recording failed, WHIP or
     WHEP refused, a sender lost before its data ended (the output is incomplete)
  2  an unusable command line or input, found before anything starts";

const SEND_EXAMPLES: &str = "Examples:
  p2p send --room demo --camera                # camera and microphone
  p2p send --room demo --file talk.mp4 --loop  # a media file, in real time
  tail -f app.log | p2p send --room ops        # lines to every receiver
  p2p send --camera --whip https://sfu.example/whip/cam  # to an SFU (WHIP)
  p2p send --test-source --whep-listen 127.0.0.1:8080    # players watch over WHEP";

const RECEIVE_EXAMPLES: &str = "Examples:
  p2p receive --room demo --record out.webm    # record every sender
  p2p receive --room demo --display            # play live
  p2p receive --room demo --record - | ffplay -   # a live stream on stdout
  p2p receive --room ops                       # lines to stdout
  p2p receive --whep http://127.0.0.1:8080/whep --record out.mkv  # a WHEP stream";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Broadcast to every receiver in a room: camera, microphone, test
    /// source or media file, and/or lines (or bytes) from stdin.
    ///
    /// Media comes from --camera, --mic, --test-source or --file, captured
    /// and encoded once for all receivers; with none of them, stdin is sent
    /// over data channels (with media too when --data is given).
    #[command(after_help = SEND_EXAMPLES)]
    Send(Box<SendArgs>),
    /// Join every sender in a room: record or play its media, write its data
    /// to stdout.
    ///
    /// With --record, each sender's media is written to a file as it arrives
    /// (no re-encoding); with --display, played live. Lines (or, with
    /// --binary, bytes) from senders' data channels go to stdout.
    #[command(after_help = RECEIVE_EXAMPLES)]
    Receive(ReceiveArgs),
    /// Run the WebSocket signaling relay, and serve the web page browsers
    /// join rooms with.
    ///
    /// Prints the ws:// URL it listens on, on stdout, once it accepts
    /// connections. With --nats, relays share rooms through a NATS cluster.
    #[command(after_help = SIGNAL_EXAMPLES)]
    Signal(SignalArgs),
    /// Print a completion script for SHELL on stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout.
    #[command(after_help = "Example:\n  p2p man > p2p.1 && man ./p2p.1")]
    Man,
}

const SIGNAL_EXAMPLES: &str = "Examples:
  p2p signal                                   # ws://127.0.0.1:8000, this machine only
  p2p signal --listen 0.0.0.0:8000             # for other machines too
  p2p signal --nats nats://127.0.0.1:4222      # rooms shared with other relays";

const COMPLETIONS_EXAMPLES: &str = "Examples:
  p2p completions bash > ~/.local/share/bash-completion/completions/p2p
  p2p completions zsh > ~/.zfunc/_p2p          # with fpath+=~/.zfunc
  p2p completions fish > ~/.config/fish/completions/p2p.fish";

/// The help headings `send` and `receive` share.
const ROOM: &str = "Room and relay";
const CONNECTION: &str = "Connection";

/// Where peers meet and how they connect (`send` and `receive`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = ROOM)]
pub struct PeerArgs {
    /// Signaling URL: ws://HOST:PORT or wss://… (a `p2p signal` relay;
    /// HOST:PORT alone means ws://HOST:PORT),
    /// nats://HOST:PORT[,nats://…] or tls://… (a NATS cluster; user:pass@ or
    /// token@ before the host), or memory: (in-process, for tests).
    #[arg(long, env = "P2P_SIGNAL", default_value = "ws://127.0.0.1:8000")]
    pub signal: String,

    /// Room to join: senders and receivers meet by room name.
    #[arg(long, env = "P2P_ROOM", default_value = "default")]
    pub room: String,

    /// Token the relay asks for (`p2p signal --token`), or the NATS
    /// server's token.
    #[arg(long, env = "P2P_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// NATS credentials file (JWT and NKey seed, as `nsc` writes it) for
    /// nats:// and tls:// signaling.
    #[arg(long, value_name = "PATH", env = "P2P_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// Extra certificate authority (PEM) to trust for wss://, tls:// and
    /// turns: (e.g. a relay's or TURN server's self-signed certificate).
    #[arg(long, value_name = "PATH", env = "P2P_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// End-to-end secret shared by everyone in the room: namespaces are
    /// hashed and messages encrypted (AES-256-GCM) before they leave, so
    /// the relay or NATS sees no room names, SDP or candidates. Peers with
    /// another secret never connect.
    #[arg(long, env = "P2P_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// STUN/TURN server for NAT traversal, repeatable: stun:HOST:PORT,
    /// turn:USER:PASS@HOST:PORT, turn:…?transport=tcp, turns:…:5349 (TLS;
    /// --ca-file trusts a self-signed certificate). None by default: on one
    /// network, host candidates suffice and nothing is contacted. STUN is
    /// enough across most home NATs; symmetric NATs need TURN, firewalls
    /// that drop UDP TURN over TCP or TLS (docs/networks.md). A
    /// relay run with --turn-secret hands out TURN credentials itself.
    #[arg(
        long = "ice-server",
        value_name = "URL",
        env = "P2P_ICE_SERVERS",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = CONNECTION
    )]
    pub ice_servers: Vec<String>,

    /// Seconds a peer may take to connect before it is given up; also how
    /// long an unreachable relay is retried, with nobody connected, before
    /// p2p exits.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, help_heading = CONNECTION)]
    pub connection_timeout: f64,
}

/// How a session reports what happens (`send` and `receive`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Reporting")]
pub struct OutputArgs {
    /// How events (connect, dispose, sync, …) are reported on stderr:
    /// `human` status lines, or `json`, one object per line.
    #[arg(long, value_enum, default_value_t = EventFormat::Human)]
    pub events: EventFormat,

    /// Write events as JSON lines to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub media: MediaArgs,

    /// Raw bytes instead of lines: stdin is sent byte for byte (receivers
    /// write it as it is with their own --binary). On a terminal, a file on
    /// stdin shows its progress.
    #[arg(long, help_heading = "Data from stdin")]
    pub binary: bool,

    /// Send stdin only to the receiver with this id (default: all).
    #[arg(long, value_name = "ID", help_heading = "Data from stdin")]
    pub to: Option<String>,

    /// Messages queued per receiver until its channel opens; the oldest are
    /// dropped beyond this.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Data from stdin"
    )]
    pub queue_size: usize,

    /// Stay in the room after stdin ends (serve state and media until
    /// Ctrl-C) instead of leaving once everything queued is delivered.
    #[arg(long, help_heading = "Data from stdin")]
    pub keep_open: bool,

    #[command(flatten)]
    pub peer: PeerArgs,

    /// Initial state sent with each offer (a JSON object), e.g.
    /// '{"nickname":"cam 1"}'.
    #[arg(long, value_name = "JSON", help_heading = RECEIVERS)]
    pub state: Option<String>,

    /// File holding the state as a JSON object; re-read on SIGHUP, and the
    /// new state is sent to every receiver (`sync`).
    #[arg(long, value_name = "PATH", help_heading = RECEIVERS)]
    pub state_file: Option<PathBuf>,

    /// Accept only receivers whose credentials equal this value (JSON, or
    /// a plain string). Repeatable: any one matches.
    #[arg(long, value_name = "VALUE", env = "P2P_VERIFY", hide_env_values = true, help_heading = RECEIVERS)]
    pub verify: Vec<String>,

    /// File with accepted credentials, one value per line.
    #[arg(long, value_name = "PATH", help_heading = RECEIVERS)]
    pub verify_file: Option<PathBuf>,

    /// Receivers served at once (connected or connecting); more are
    /// refused until one leaves, or until one that has had 3 s to connect
    /// and has not gives way. However many there are, at most 64 may be
    /// connecting at once, 4 of them opened through one relay connection.
    #[arg(long, value_name = "N", env = "P2P_MAX_RECEIVERS", value_parser = clap::value_parser!(u64).range(1..), help_heading = RECEIVERS)]
    pub max_receivers: Option<u64>,

    #[command(flatten)]
    pub whip: WhipArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Whether --room or --signal was given (on the command line or in the
    /// environment), not left at its default: with --whip, the room is
    /// joined only then. Set by `main` from clap's matches.
    #[arg(skip)]
    pub room_given: bool,
}

const RECEIVERS: &str = "Who receives";

/// WHIP and WHEP (`p2p send`): publishing to an SFU, taking a publisher's
/// media in, serving viewers.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "WHIP and WHEP (SFUs, OBS, players)")]
pub struct WhipArgs {
    /// Publish the media to this WHIP endpoint (RFC 9725), e.g. an SFU's
    /// (Janus, LiveKit, MediaMTX, Cloudflare…) that fans it out to many
    /// viewers: the same encode, over one more connection, which adapts to
    /// its path as a receiver's does. Without --room or --signal, only
    /// there; with either, to the room's receivers too. Ctrl-C ends the
    /// session on the server (DELETE). If the session fails, p2p exits
    /// with the reason; with a room, it says so and serves the room on.
    #[arg(long, value_name = "URL", env = "P2P_WHIP")]
    pub whip: Option<String>,

    /// Bearer token (Authorization: Bearer): the one the --whip endpoint
    /// asks for, or the one --whip-listen asks of publishers.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "P2P_WHIP_TOKEN",
        hide_env_values = true
    )]
    pub whip_token: Option<String>,

    /// Take the media from a WHIP publisher instead of capturing it: OBS,
    /// GStreamer's whipsink, a browser… publish to http://ADDR/whip, and
    /// what they send goes to every receiver in the room as it is, without
    /// decoding or re-encoding (receivers' key-frame requests go back to
    /// the publisher). One publisher at a time; it must send
    /// --video-codec (VP8 by default) and Opus. The URL is printed on
    /// stdout once it listens; port 0 picks a free port.
    #[arg(
        long,
        value_name = "ADDR",
        env = "P2P_WHIP_LISTEN",
        conflicts_with_all = ["camera", "mic", "test_source", "file", "whip"]
    )]
    pub whip_listen: Option<String>,

    /// Serve WHEP (WHIP's playback twin) at http://ADDR/whep: players and
    /// browsers watch the sender's media there (GStreamer's whepsrc, a page
    /// using fetch…). A viewer POSTs a recvonly offer; its connection is
    /// one more receiver of the same encode, on the layer its path
    /// carries, and DELETE ends it. Many viewers at once, at most
    /// --max-receivers (default 100). Without --room or --signal, only
    /// there; with either, to the room's receivers too. The URL is printed
    /// on stdout once it listens; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", env = "P2P_WHEP_LISTEN")]
    pub whep_listen: Option<String>,

    /// Bearer token --whep-listen asks of viewers (Authorization: Bearer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "P2P_WHEP_TOKEN",
        hide_env_values = true
    )]
    pub whep_token: Option<String>,
}

/// Media sources and encoding (`p2p send`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Media")]
pub struct MediaArgs {
    /// Send a camera and the microphone: a V4L2 device such as /dev/video0,
    /// or the default camera when no device is named.
    #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "")]
    pub camera: Option<String>,

    /// Send a microphone: a PulseAudio source or ALSA device (hw:0), or the
    /// default when none is named. Alone, it sends audio only.
    #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "")]
    pub mic: Option<String>,

    /// Send a moving test pattern with a clock, and a test tone: for trying
    /// p2p without a camera.
    #[arg(long, conflicts_with_all = ["camera", "file"])]
    pub test_source: bool,

    /// The --test-source picture.
    #[arg(long, value_enum, default_value_t, requires = "test_source")]
    pub test_pattern: crate::media::TestPattern,

    /// Send a media file (anything GStreamer decodes), paced in real time:
    /// its video and audio (what it has of them), at its own picture size
    /// up to 1280×720. It starts when the first receiver connects, and the
    /// sender leaves when it ends (unless --loop).
    #[arg(long, value_name = "PATH", conflicts_with = "camera")]
    pub file: Option<PathBuf>,

    /// Start the file over when it ends.
    #[arg(long = "loop", requires = "file")]
    pub looped: bool,

    /// Leave out the audio of the source.
    #[arg(long)]
    pub no_audio: bool,

    /// Leave out the video of the source.
    #[arg(long, conflicts_with = "no_audio")]
    pub no_video: bool,

    /// Also open data channels (stdin to receivers) when sending media.
    #[arg(long, help_heading = "Data from stdin")]
    pub data: bool,

    /// Video codec: encoded once, whatever the number of receivers.
    #[arg(long, value_enum, default_value_t = crate::media::VideoCodec::Vp8)]
    pub video_codec: crate::media::VideoCodec,

    /// Video width in pixels [default: 640, or a --file's own width].
    /// Given alone, the height follows the picture's shape.
    #[arg(long)]
    pub width: Option<u32>,

    /// Video height in pixels [default: 480, or a --file's own height]. A
    /// picture of another shape than --width × --height is letterboxed.
    #[arg(long)]
    pub height: Option<u32>,

    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,

    /// Video bitrate, kbit/s: the best layer's; smaller layers get a share.
    #[arg(long, value_name = "KBPS", default_value_t = 1000)]
    pub video_bitrate: u32,

    /// Simulcast layers: 3 encodes full, half and quarter size, each
    /// once, and every receiver is
    /// forwarded the best one its path carries, from its bandwidth estimate;
    /// 1 sends one encoding to all. Costs about 1.3× the CPU of one layer.
    /// VP9 is always one layer; layers smaller than 160 pixels wide are
    /// left out.
    #[arg(long, value_name = "N", env = "P2P_LAYERS", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=3))]
    pub layers: u8,

    /// Audio (Opus) bitrate, kbit/s.
    #[arg(long, value_name = "KBPS", default_value_t = 64)]
    pub audio_bitrate: u32,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Record each sender's media, as it arrives (no re-encoding), to PATH:
    /// .webm (VP8/VP9 + Opus), .mkv (anything) or .mp4 (H.264). With several
    /// senders, {id} in PATH is replaced by the sender id; otherwise later
    /// senders get PATH with the id before the extension. `-` writes the
    /// first sender's media to stdout as a live Matroska stream, for a
    /// player or another program to read as it comes (`--record - | ffplay
    /// -`); data is then not written, and p2p exits when that sender leaves.
    #[arg(long, value_name = "PATH", env = "P2P_RECORD", help_heading = "Media")]
    pub record: Option<PathBuf>,

    /// Let --record replace a file that is already there (without it, an
    /// existing file is an error: a recording is not lost to a re-run).
    #[arg(long, requires = "record", help_heading = "Media")]
    pub overwrite: bool,

    /// Play each sender's audio and video live.
    #[arg(long, help_heading = "Media")]
    pub display: bool,

    /// Write what senders send to stdout byte for byte, as it came (for
    /// senders that send with --binary: files, archives); without it, each
    /// message is written as a line. Implies --once.
    #[arg(long, help_heading = "Data to stdout")]
    pub binary: bool,

    /// Exit once every sender that connected has left (implied by --binary,
    /// so `p2p receive --binary > file` ends with the sender's input).
    #[arg(long, help_heading = "Data to stdout")]
    pub once: bool,

    /// Watch a WHEP endpoint instead of a room: an SFU's (Janus, LiveKit,
    /// MediaMTX, Cloudflare…) or another `p2p send --whep-listen`. What
    /// it sends is recorded (--record) or shown (--display) as a room
    /// sender's is, without re-encoding. Ctrl-C ends the session on the
    /// server (DELETE); p2p exits when the stream ends, and with the
    /// reason when the endpoint refuses or the connection fails.
    #[arg(
        long,
        value_name = "URL",
        env = "P2P_WHEP",
        help_heading = "Watch a WHEP endpoint"
    )]
    pub whep: Option<String>,

    /// Bearer token the --whep endpoint asks for (Authorization: Bearer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "P2P_WHEP_TOKEN",
        hide_env_values = true,
        help_heading = "Watch a WHEP endpoint"
    )]
    pub whep_token: Option<String>,

    #[command(flatten)]
    pub peer: PeerArgs,

    /// Seconds between invokes that find senders started later or
    /// restarted.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, help_heading = CONNECTION)]
    pub ping_interval: f64,

    /// Invokes sent after the last sender is gone, before waiting quietly.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = CONNECTION)]
    pub ping_attempts: u32,

    /// Credentials that `p2p send --verify` checks (JSON, or a plain
    /// string). They are never sent: a p2p sender asks for a proof over a
    /// fresh nonce (HMAC-SHA256), which nobody else in the room can reuse.
    /// Use a long random value: a short one can be guessed offline from a
    /// proof.
    #[arg(
        long,
        value_name = "VALUE",
        env = "P2P_CREDENTIALS",
        hide_env_values = true,
        help_heading = "Credentials"
    )]
    pub credentials: Option<String>,

    /// Send --credentials themselves with every invoke, as the seed
    /// library's Sender expects. Anyone in the room can read them then.
    #[arg(
        long,
        requires = "credentials",
        env = "P2P_PLAIN_CREDENTIALS",
        help_heading = "Credentials"
    )]
    pub plain_credentials: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SignalArgs {
    #[command(subcommand)]
    pub action: Option<SignalAction>,

    /// Address to listen on; port 0 picks a free port. Loopback by default:
    /// use 0.0.0.0:8000 to accept other machines.
    #[arg(long, env = "P2P_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,

    /// Require this token from every client (?token=… or Authorization:
    /// Bearer …); others get HTTP 401.
    #[arg(long, env = "P2P_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Require a room token from every client, signed with this key (mint
    /// them with `p2p signal token`): each connection may then act only in
    /// its token's room, and only as its role allows (a subscriber cannot
    /// be a sender). What a public relay needs.
    #[arg(
        long,
        env = "P2P_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "token"
    )]
    pub token_secret: Option<String>,

    /// Sign the names clients resume with this secret, and give the relay
    /// the same one when it restarts: a client that reconnects after the
    /// restart keeps its name, so its peers keep taking its messages (an
    /// ICE restart after an address change works across it). Derived from
    /// --token-secret when that is set. Without either, a restarted relay
    /// gives every client a new name, and a peer whose path went at the
    /// same time is connected anew (~15 s later).
    #[arg(long, env = "P2P_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,

    /// Largest frame accepted, in bytes; larger frames get an error frame.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_frame: usize,

    /// Most subscriptions one connection may hold.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Frames a second one connection may send (and in one burst); a
    /// flood past it is dropped with an error frame. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Connections one address may hold at once (more are turned away at
    /// the door). 0: no cap. Clients behind one NAT, or every client when
    /// the relay sits behind a reverse proxy, share an address: raise it
    /// (or use 0) there.
    #[arg(long, value_name = "N", env = "P2P_MAX_PER_IP", default_value_t = 256)]
    pub max_per_ip: usize,

    /// Seconds a connection has to send its whole HTTP request (and finish
    /// its TLS handshake) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub handshake_timeout: f64,

    /// Seconds a client may stay silent, answering none of the pings the
    /// relay sends it every third of this, before it is disconnected: a
    /// client whose network went away holds its subscriptions (and
    /// messages queued for it) no longer. Browsers and `p2p` answer pings
    /// by themselves.
    #[arg(long, value_name = "SECS", default_value_t = 45.0, value_parser = positive_seconds)]
    pub idle_timeout: f64,

    /// Serve wss:// (and the page over https://) with this certificate
    /// chain (PEM). Needs --tls-key.
    #[arg(long, value_name = "PATH", env = "P2P_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", env = "P2P_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Share rooms with other relays through NATS (nats://HOST:PORT, several
    /// comma-separated): a client on this relay reaches clients on any
    /// relay bridged to the same cluster. Put several relays behind one
    /// load balancer this way.
    #[arg(long, value_name = "URL", env = "P2P_NATS")]
    pub nats: Option<String>,

    /// NATS credentials file (JWT and NKey seed) for --nats.
    #[arg(long, value_name = "PATH", env = "P2P_NATS_CREDS", requires = "nats")]
    pub nats_creds: Option<PathBuf>,

    /// Secret shared with a TURN server run with coturn's `use-auth-secret`
    /// and `static-auth-secret=SECRET`: every client gets TURN credentials
    /// of its own, valid --turn-ttl seconds, with its connection (the page
    /// and `p2p send`/`receive` use them at once). The secret itself never
    /// leaves the relay. Needs --turn-url.
    #[arg(
        long,
        env = "P2P_TURN_SECRET",
        hide_env_values = true,
        requires = "turn_urls"
    )]
    pub turn_secret: Option<String>,

    /// The TURN server(s) sharing --turn-secret, repeatable:
    /// turn:HOST:PORT, turn:HOST:PORT?transport=tcp, turns:HOST:PORT.
    #[arg(
        long = "turn-url",
        value_name = "URL",
        env = "P2P_TURN_URLS",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    pub turn_urls: Vec<String>,

    /// Seconds the credentials of --turn-secret stay valid; clients
    /// connected longer get fresh ones every half of it.
    #[arg(long, value_name = "SECS", default_value_t = 86400)]
    pub turn_ttl: u64,
}

/// A number of seconds above zero, as a flag takes it.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds above 0")),
    }
}

#[derive(Debug, Subcommand)]
pub enum SignalAction {
    /// Mint a room token for a relay run with --token-secret, and print it
    /// on stdout. Clients pass it as --token (or ?token= in the page URL).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The room the token is for.
    #[arg(long)]
    pub room: String,

    /// What its holder may be: publish (a sender), subscribe (a receiver)
    /// or both.
    #[arg(long, value_enum)]
    pub role: crate::relay::Role,

    /// How long it stays valid: 90s, 30m, 1h, 7d…
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,

    /// The relay's --token-secret.
    #[arg(long, env = "P2P_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
}
