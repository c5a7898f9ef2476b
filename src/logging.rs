//! Logs go to stderr through `tracing`; stdout is only for data.

use tracing_subscriber::EnvFilter;

/// `-v` shows p2p's debug logs, `-vv` everything at debug, `-vvv` trace;
/// `-q` only errors. `RUST_LOG` overrides all of it.
pub fn init(verbose: u8, quiet: bool) {
    let default = if quiet {
        // webrtc-rs's own "errors" are its routine chatter (see below).
        "p2p=error,webrtc=off,rtc=off,error"
    } else {
        match verbose {
            // webrtc-rs (the `webrtc` layer and its `rtc*` core crates)
            // logs routine ICE/DTLS/SRTP/TURN chatter up to error level
            // (every local socket tried against every remote candidate, a
            // loopback candidate refused by a TURN server): p2p says what
            // matters about a connection itself; -v shows the rest.
            0 => "p2p=info,webrtc=off,rtc=off,warn",
            1 => "p2p=debug,webrtc=warn,rtc=warn,warn",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::LogWriter)
        .with_target(verbose > 0)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .try_init();
}
