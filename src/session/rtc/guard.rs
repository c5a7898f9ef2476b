//! What keeps p2p from being turned against a third party: ICE checks to
//! addresses that have never answered are paced by one budget per process.
//!
//! A remote peer names the addresses our ICE agent checks, and webrtc-rs's
//! agent checks every pair up to eight times, 200 ms apart. An answer with
//! 1,000 candidates at someone else's ports made one sender fire 100,000
//! STUN requests (11 MB) at them in 15 s, 168× the attacker's bytes; one
//! offer broadcast to a room made every receiver do the same. The session
//! caps remote candidates per peer ([`crate::session::machine`]), but many
//! peers, or many rooms, still add up: so every binding request to an
//! address we have never heard from takes a token from one bucket, and
//! what finds it empty is not sent. ICE-TCP's active connects take from
//! it too.
//!
//! A real peer is not slowed: it checks us as we check it, and once any of
//! its STUN reaches us its address no longer needs tokens. The bucket is
//! sized so a crowd of receivers joining at once (a few pairs each, some
//! to addresses that never answer, such as a VPN's or a container
//! bridge's) stays within it: [`BURST`] at once, then [`RATE`] a second.
//! That bounds what any number of hostile peers can make this process send
//! to strangers to 200 packets at once and 50 a second after.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Checks to unheard addresses sent at once before pacing starts.
pub const BURST: f64 = 200.0;
/// Then this many a second.
pub const RATE: f64 = 50.0;
/// Addresses remembered as having sent us STUN. A peer has a few; the
/// oldest are forgotten first (they then take tokens again).
const HEARD: usize = 4096;

/// The STUN magic cookie (RFC 5389), bytes 4..8 of every STUN message.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// A STUN binding request: what an ICE check is.
pub fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == [0x00, 0x01] && datagram[4..8] == COOKIE
}

/// Any STUN message: what a peer that takes part in ICE sends us first.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 2 && datagram[4..8] == COOKIE
}

/// The budget and the addresses it does not apply to. Sans-IO: the caller
/// gives the time.
#[derive(Debug)]
pub struct Budget {
    tokens: f64,
    last: Instant,
    heard: HashSet<SocketAddr>,
    order: VecDeque<SocketAddr>,
    refused: u64,
}

impl Budget {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            last: now,
            heard: HashSet::new(),
            order: VecDeque::new(),
            refused: 0,
        }
    }

    /// `from` sent us STUN: it takes part in ICE with us.
    pub fn heard(&mut self, from: SocketAddr) {
        if self.heard.insert(from) {
            self.order.push_back(from);
            if self.order.len() > HEARD {
                if let Some(old) = self.order.pop_front() {
                    self.heard.remove(&old);
                }
            }
        }
    }

    /// May a check (or a TCP connect) go to `to` now?
    pub fn allow(&mut self, now: Instant, to: SocketAddr) -> bool {
        if self.heard.contains(&to) {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * RATE).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Checks not sent so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// The process's one budget.
pub fn budget() -> std::sync::MutexGuard<'static, Budget> {
    static BUDGET: OnceLock<Mutex<Budget>> = OnceLock::new();
    BUDGET
        .get_or_init(|| Mutex::new(Budget::new(Instant::now())))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Called for each binding request about to leave: false drops it. The
/// first refusal, and every 1,000th after, is logged.
pub fn may_check(to: SocketAddr) -> bool {
    let mut b = budget();
    if b.allow(Instant::now(), to) {
        return true;
    }
    if b.refused() % 1000 == 1 {
        tracing::warn!(
            "ICE checks to addresses that never answered are over budget ({RATE} a second): \
             not checking {to} now ({} held back so far; a peer may have sent many candidates)",
            b.refused()
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_flood_of_strangers_gets_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        // 1,000 candidates × 8 checks each, one round every 200 ms.
        let mut sent = 0;
        for round in 0..8u32 {
            let now = t0 + Duration::from_millis(200) * round;
            sent += (0..1000).filter(|p| b.allow(now, addr(*p))).count();
        }
        let bound = BURST + RATE * 1.4;
        assert!(sent as f64 <= bound + 1.0, "{sent} > {bound}");
        assert!(sent as f64 >= BURST, "{sent}");
        assert_eq!(b.refused(), 8000 - sent as u64);
    }

    #[test]
    fn a_peer_that_answered_is_never_paced() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        for p in 0..(BURST as u16) {
            assert!(b.allow(t0, addr(p)));
        }
        assert!(!b.allow(t0, addr(9999)));
        b.heard(addr(9999));
        assert!((0..100).all(|_| b.allow(t0, addr(9999))));
    }

    #[test]
    fn the_oldest_heard_address_is_forgotten_first() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        for p in 0..=(HEARD as u16) {
            b.heard(addr(p));
        }
        b.tokens = 0.0;
        assert!(!b.allow(t0, addr(0)));
        assert!(b.allow(t0, addr(1)));
        assert!(b.allow(t0, addr(HEARD as u16)));
    }

    #[test]
    fn tells_checks_from_other_stun_and_media() {
        let mut req = [0u8; 20];
        req[1] = 0x01;
        req[4..8].copy_from_slice(&COOKIE);
        assert!(is_binding_request(&req) && is_stun(&req));
        let mut resp = req;
        resp[0] = 0x01;
        assert!(!is_binding_request(&resp) && is_stun(&resp));
        let rtp = [0x80u8; 20];
        assert!(!is_binding_request(&rtp) && !is_stun(&rtp));
        assert!(!is_binding_request(&req[..12]));
    }
}
