//! Noticing that this host's addresses changed: a laptop moving from
//! Wi-Fi to a phone's hotspot, a DHCP lease that moved, a VPN that came
//! up. A connection that left from an address that is gone is dead even
//! though nothing has said so yet; the session restarts ICE and remakes
//! its relay connection at once instead of waiting for silence to tell.
//!
//! Sans-IO: the caller lists the addresses (`rtc::local_addresses`) and
//! says when.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often the addresses are listed. One `getifaddrs` a second costs
/// nothing measurable; a change is acted on within this.
pub const EVERY: Duration = Duration::from_millis(500);

/// What changed between two looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The addresses the host has now.
    pub now: Vec<IpAddr>,
    /// Addresses it had and no longer has: connections from them are dead.
    pub gone: Vec<IpAddr>,
    /// Addresses it did not have before.
    pub added: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct Watch {
    last: Option<Vec<IpAddr>>,
    looked: Option<Instant>,
}

impl Watch {
    pub fn new() -> Self {
        Self {
            last: None,
            looked: None,
        }
    }

    /// Is it time to list the addresses again?
    pub fn due(&self, now: Instant) -> bool {
        self.looked.is_none_or(|at| now.duration_since(at) >= EVERY)
    }

    /// The addresses as listed `now`; what changed since the last look
    /// (nothing on the first).
    pub fn observe(&mut self, now: Instant, mut addrs: Vec<IpAddr>) -> Option<Change> {
        self.looked = Some(now);
        addrs.sort();
        addrs.dedup();
        let last = self.last.replace(addrs.clone())?;
        let gone: Vec<IpAddr> = last
            .iter()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        let added: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| !last.contains(a))
            .copied()
            .collect();
        (!gone.is_empty() || !added.is_empty()).then_some(Change {
            now: addrs,
            gone,
            added,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_moved_address_is_one_gone_and_one_added() {
        let t0 = Instant::now();
        let mut w = Watch::new();
        assert!(w.due(t0));
        assert_eq!(w.observe(t0, vec![ip("10.0.0.2"), ip("192.168.1.5")]), None);
        assert!(!w.due(t0 + EVERY / 2));
        assert!(w.due(t0 + EVERY));
        // Same set, listed in another order: nothing changed.
        assert_eq!(
            w.observe(t0 + EVERY, vec![ip("192.168.1.5"), ip("10.0.0.2")]),
            None
        );
        let change = w
            .observe(t0 + EVERY * 2, vec![ip("10.0.0.2"), ip("172.20.10.3")])
            .unwrap();
        assert_eq!(change.gone, vec![ip("192.168.1.5")]);
        assert_eq!(change.added, vec![ip("172.20.10.3")]);
        assert_eq!(change.now, vec![ip("10.0.0.2"), ip("172.20.10.3")]);
        // Only a new address: no connection died, but it is a change.
        let change = w
            .observe(
                t0 + EVERY * 3,
                vec![ip("10.0.0.2"), ip("172.20.10.3"), ip("fd00::1")],
            )
            .unwrap();
        assert!(change.gone.is_empty());
        assert_eq!(change.added, vec![ip("fd00::1")]);
    }
}
