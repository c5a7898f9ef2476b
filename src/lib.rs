//! p2p: peer-to-peer WebRTC broadcasting from the command line.
//!
//! # Architecture
//!
//! - [`protocol`]: the wire types of `PROTOCOL.md`, shared by everything.
//! - [`relay`]: `p2p signal`, a pure router (frames in, deliveries out)
//!   wrapped by an axum WebSocket server.
//! - [`router`]: that router, shared with the `memory:` driver.
//! - [`signaling`]: the client drivers (`ws://`, `memory:`) behind one small
//!   handle + event-stream interface.
//! - `session`: the Sender and Receiver state machines, which take
//!   signaling messages, peer events and time and return actions, and the
//!   one adapter that carries the actions out on webrtc-rs.
//! - `stdio`: stdin → data channels, data channels → stdout.
//!
//! # Errors
//!
//! Typed errors (`thiserror`) inside the library; `anyhow` with context at
//! the edges. Bad input from the network is logged and dropped, never a
//! panic; a user sees one line naming what to fix. A command line that
//! cannot work (a bad value, a `--record` directory that is missing) is a
//! [`UsageError`], found before anything starts: exit code 2, as for the
//! usage errors clap reports; any other failure exits with 1.

pub mod cli;
pub mod config;
pub mod logging;
pub mod media;
pub mod progress;
pub mod protocol;
pub mod relay;
pub mod router;
pub mod session;
pub mod signaling;
pub mod tls;
pub mod whip;

pub use session::stdio;

use std::process::ExitCode;

use anyhow::Context as _;

use cli::{Cli, Command};

/// A command line that cannot work, found while checking it, before joining
/// a room or opening a socket. `main` exits with code 2 for it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageError(#[from] anyhow::Error);

/// Runs one command of the CLI to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // rustls (wss://) needs one process-wide crypto provider; a second
    // install (tests calling run twice) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let job = match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "p2p", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("cannot write the manual page")?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Signal(cli::SignalArgs {
            action: Some(cli::SignalAction::Token(t)),
            ..
        }) => {
            let issuer = relay::Issuer::new(&t.token_secret);
            println!(
                "{}",
                issuer.mint(&t.room, t.role, t.ttl, std::time::SystemTime::now())
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Signal(args) => Job::Signal(relay::RelayConfig {
            turn: match args.turn_secret.filter(|s| !s.is_empty()) {
                Some(secret) => Some(
                    relay::TurnIssuer::new(
                        secret,
                        args.turn_urls,
                        std::time::Duration::from_secs(args.turn_ttl),
                    )
                    .map_err(UsageError)?,
                ),
                None => None,
            },
            listen: args.listen,
            token: args.token,
            limits: relay::Limits {
                max_frame: args.max_frame,
                max_subscriptions: args.max_subscriptions,
                rate: args.rate_limit,
            },
            // The resume key outlives a restart only if its secret does.
            resume_key: {
                let secrets = [&args.resume_secret, &args.token_secret];
                let key = secrets.into_iter().flatten().find(|s| !s.is_empty());
                key.map(|s| relay::resume_key(s))
            },
            nats: args.nats.filter(|n| !n.is_empty()),
            nats_creds: args.nats_creds,
            tls: args.tls_cert.zip(args.tls_key),
            max_per_ip: args.max_per_ip,
            rooms: args
                .token_secret
                .filter(|s| !s.is_empty())
                .map(|s| relay::Issuer::new(&s)),
            handshake_timeout: std::time::Duration::from_secs_f64(args.handshake_timeout),
            // Pings go every third of it: at least a second.
            idle_timeout: std::time::Duration::from_secs_f64(args.idle_timeout.max(1.0)),
        }),
        Command::Send(args) => Job::Send(Box::new(
            config::SendConfig::from_args(&args, cli.quiet).map_err(UsageError)?,
        )),
        Command::Receive(args) => {
            Job::Receive(config::ReceiveConfig::from_args(&args, cli.quiet).map_err(UsageError)?)
        }
    };
    // A data-only peer runs on one thread. webrtc-rs hands every ~1.2 KB
    // SCTP packet between several tasks (SCTP write loop, DTLS writer, ICE
    // and DTLS read loops); across worker threads each hand-off is a futex
    // wake-up and a context switch, on one thread a queue push. Measured on
    // 2 busy cores: `--binary` median 12 → 19 MB/s (bench/NOTES.md). Media
    // sessions and the relay keep the multi-thread runtime: they spread
    // SRTP work over many peers, and GStreamer calls may block briefly.
    let one_thread = match &job {
        Job::Signal(_) => false,
        Job::Send(cfg) => cfg.media.is_none() && cfg.ingest.is_none(),
        Job::Receive(cfg) => cfg.record.is_none() && !cfg.display,
    };
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match job {
            Job::Signal(cfg) => {
                relay::run(cfg).await?;
                Ok(ExitCode::SUCCESS)
            }
            Job::Send(cfg) => session::run_sender(*cfg).await,
            Job::Receive(cfg) => session::run_receiver(cfg).await,
        }
    });
    // A read of stdin may still be blocked in a worker thread (a sender
    // stopped by Ctrl-C while its input is open): do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// A command with its configuration checked, ready to run.
enum Job {
    Signal(relay::RelayConfig),
    Send(Box<config::SendConfig>),
    Receive(config::ReceiveConfig),
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// True when the error comes from writing to a closed stdout (`| head`):
/// that is a normal way for a pipeline to end, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
