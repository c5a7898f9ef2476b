//! Live status on stderr with indicatif, when stderr is a terminal: peers,
//! bitrate, recorded time. Log lines are printed above the bars, never
//! through them.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// The shared bar area, created on first use.
fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// Whether to draw status lines at all: a terminal, and not `-q`.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// One status line.
pub struct StatusLine {
    bar: ProgressBar,
}

impl StatusLine {
    pub fn new() -> Self {
        let bar = multi().add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {elapsed_precise} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar }
    }

    pub fn set(&self, msg: String) {
        self.bar.set_message(msg);
    }
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        multi().remove(&self.bar);
    }
}

/// A stderr writer for `tracing` that prints above any status lines.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match MULTI.get() {
            Some(m) if !m.is_hidden() => {
                let mut result = Ok(buf.len());
                m.suspend(|| {
                    if let Err(e) = std::io::stderr().write_all(buf) {
                        result = Err(e);
                    }
                });
                result
            }
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Human bit rates: `950 kbit/s`, `1.2 Mbit/s`.
pub fn bitrate(bits_per_sec: f64) -> String {
    if bits_per_sec >= 1e6 {
        format!("{:.1} Mbit/s", bits_per_sec / 1e6)
    } else {
        format!("{:.0} kbit/s", bits_per_sec / 1e3)
    }
}

/// Human sizes: `830 kB`, `12.4 MB`.
pub fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{} kB", bytes / 1000)
    }
}

/// A transfer of `total` bytes, `done` so far at `per_second`:
/// `12.4 MB of 200.0 MB (6 %) · 45.0 MB/s · 4 s left`.
pub fn transfer(done: u64, total: u64, per_second: f64) -> String {
    let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    let mut s = format!("{} of {} ({percent} %)", size(done), size(total));
    if done < total && per_second >= 1.0 {
        let left = (total - done) as f64 / per_second;
        s.push_str(&format!(
            " · {}/s · {} left",
            size(per_second as u64),
            duration(left)
        ));
    }
    s
}

/// Human durations: `45 s`, `3 min 20 s`, `2 h 5 min`.
pub fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rates_and_sizes() {
        assert_eq!(bitrate(950_000.0), "950 kbit/s");
        assert_eq!(bitrate(1_250_000.0), "1.2 Mbit/s");
        assert_eq!(size(830_000), "830 kB");
        assert_eq!(size(12_400_000), "12.4 MB");
    }

    #[test]
    fn a_transfer_says_how_far_how_fast_and_how_long_is_left() {
        assert_eq!(
            transfer(12_400_000, 200_000_000, 45_000_000.0),
            "12.4 MB of 200.0 MB (6 %) · 45.0 MB/s · 4 s left"
        );
        // Stalled, or done: no time left to tell.
        assert_eq!(transfer(1_000, 2_000, 0.0), "1 kB of 2 kB (50 %)");
        assert_eq!(transfer(2_000, 2_000, 5e6), "2 kB of 2 kB (100 %)");
        assert_eq!(transfer(0, 0, 0.0), "0 kB of 0 kB (100 %)");
        assert_eq!(duration(200.0), "3 min 20 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
    }
}
