//! Repeated complaints about input from the network, kept to a trickle: a
//! flood of bad or forged messages wrote 2–4 MB/s to stderr, one warning
//! each, which buries everything else a user needs to read. Sans-IO: the
//! caller gives the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lines of one kind printed per [`WINDOW`].
pub const PER_WINDOW: u32 = 5;
/// The window those are counted over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Kinds followed at once; past it, the quietest are forgotten.
const KINDS: usize = 64;

#[derive(Debug, Default)]
pub struct Throttle {
    kinds: HashMap<String, Kind>,
}

#[derive(Debug)]
struct Kind {
    since: Instant,
    printed: u32,
    held: u64,
}

impl Throttle {
    /// Whether to print a complaint of `kind` now: `Some(n)`, `n` being
    /// how many of this kind were held back since the last one printed,
    /// or `None` to hold this one back too.
    pub fn admit(&mut self, now: Instant, kind: &str) -> Option<u64> {
        if !self.kinds.contains_key(kind) && self.kinds.len() >= KINDS {
            let cutoff = now.checked_sub(WINDOW).unwrap_or(now);
            self.kinds.retain(|_, k| k.since > cutoff);
            if self.kinds.len() >= KINDS {
                self.kinds.clear();
            }
        }
        let k = self.kinds.entry(kind.to_owned()).or_insert(Kind {
            since: now,
            printed: 0,
            held: 0,
        });
        if now.duration_since(k.since) >= WINDOW {
            k.since = now;
            k.printed = 0;
        }
        if k.printed < PER_WINDOW {
            k.printed += 1;
            return Some(std::mem::take(&mut k.held));
        }
        k.held += 1;
        None
    }
}

/// What makes two complaints the same kind: their text up to the first
/// `:` (what follows is the detail that differs).
pub fn kind_of(text: &str) -> &str {
    text.split(':').next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_prints_a_few_lines_a_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let printed: Vec<_> = (0..1000)
            .filter_map(|i| t.admit(t0 + Duration::from_millis(i), "ignored a dispose"))
            .collect();
        assert_eq!(printed, vec![0; PER_WINDOW as usize]);
        // Another kind is not held back by the first.
        assert_eq!(t.admit(t0, "refused a receiver"), Some(0));
        // The next window's first line says how many were held back.
        let next = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(t.admit(next, "ignored a dispose"), Some(995));
        assert_eq!(t.admit(next, "ignored a dispose"), Some(0));
    }

    #[test]
    fn many_kinds_stay_bounded() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for i in 0..10_000 {
            assert_eq!(t.admit(t0, &format!("kind {i}")), Some(0));
        }
        assert!(t.kinds.len() <= KINDS);
    }

    #[test]
    fn the_kind_is_the_text_before_its_detail() {
        assert_eq!(
            kind_of("ignored a signaling message: expected value at line 1"),
            "ignored a signaling message"
        );
        assert_eq!(kind_of("no detail"), "no detail");
    }
}
