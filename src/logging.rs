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
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::LogWriter)
        .with_target(verbose > 0)
        .with_ansi(terminal && colour_allowed(std::env::var_os("NO_COLOR")))
        .compact();
    if terminal {
        // A person reading: the local time of day (to the millisecond with
        // -v), not a 27-character UTC stamp. Called before any thread
        // starts, when the local offset can be read.
        let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
        let format = if verbose > 0 {
            time::macros::format_description!("[hour]:[minute]:[second].[subsecond digits:3]")
        } else {
            time::macros::format_description!("[hour]:[minute]:[second]")
        };
        let _ = builder
            .with_timer(tracing_subscriber::fmt::time::OffsetTime::new(
                offset, format,
            ))
            .try_init();
    } else {
        // A file or a journal: full UTC timestamps.
        let _ = builder.try_init();
    }
}

/// Colour unless `NO_COLOR` is set to anything but "" (no-color.org).
fn colour_allowed(no_color: Option<std::ffi::OsString>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_set_to_anything_turns_colour_off() {
        assert!(colour_allowed(None));
        assert!(colour_allowed(Some("".into())));
        assert!(!colour_allowed(Some("1".into())));
        assert!(!colour_allowed(Some("0".into())));
    }
}
