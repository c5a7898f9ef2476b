//! Logs go to stderr through `tracing`; stdout is only for data.

use tracing_subscriber::EnvFilter;

/// `-v` shows p2p's debug logs, `-vv` everything at debug, `-vvv` trace;
/// `-q` only errors. `RUST_LOG` overrides all of it.
pub fn init(verbose: u8, quiet: bool) {
    let default = if quiet {
        "error"
    } else {
        match verbose {
            // webrtc-rs logs routine ICE/DTLS chatter at info and warn.
            0 => "p2p=info,webrtc=error,webrtc_ice=error,webrtc_dtls=error,webrtc_sctp=error,webrtc_data=error,webrtc_srtp=error,webrtc_mdns=error,warn",
            1 => "p2p=debug,webrtc=warn,webrtc_ice=warn,webrtc_dtls=error,webrtc_sctp=warn,warn",
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
