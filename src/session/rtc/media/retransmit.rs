//! What a sender spends on answering NACKs: [`RetransmitBudget`] keeps it
//! to a share of what the path takes, and [`RecentResends`] to one answer
//! per packet per repair time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Feedback;

/// Share of what a path takes (its estimate, and no more than it lately
/// delivered) that retransmissions may use. Random loss of a few percent
/// needs a few percent; what is above that is a receiver asking again and
/// again for what a full path dropped, and each answer takes the place of
/// a packet that would have arrived. (The estimate alone is no bound: it
/// climbs while the sender sends less than the path takes, and GCC does
/// not see the repairs, which go on the RTX stream.)
const SHARE: f64 = 0.25;

/// How much unspent budget may pile up, in seconds of it: a loss burst
/// is repaired at once, a storm is not. At 0.25 s, a probe that overran
/// a 1 Mbit/s link with a 4 KB bucket behind a 150 ms round trip lost ~20
/// packets, a budget of ~7 answered a third of them, and the frames they
/// belonged to froze the picture for 0.9 s; with receivers that ask for a
/// packet once per repair time, not three times in 60 ms, a second's
/// depth repairs such a burst.
const DEPTH_SECS: f64 = 1.0;

/// Decides which of the NACK responder's retransmissions go out: those
/// within [`SHARE`] of what the path takes. Kept by [`super::SenderFeedback`],
/// which sits on the wire side of the responder, where its packets pass.
///
/// webrtc-rs answers every NACK, for anything still in its send buffer
/// (1,024 packets, seconds of video), as often as it is asked, with no
/// regard for the path. Chromium asks for a lost packet up to 10 times,
/// once per round trip: a viewer behind 1 Mbit/s that lost half of a
/// 2.5 Mbit/s start asked for ~1,200 packets a second for 13 s, and the
/// answers kept its path full after the sender had stepped down, so its
/// picture sank to the smallest layer for 15 s.
#[derive(Debug, Default)]
pub(super) struct RetransmitBudget {
    /// Bits that may be spent now, and when that was last brought up to date.
    bits: f64,
    at: Option<Instant>,
}

impl RetransmitBudget {
    /// Whether a retransmission of `size` bytes fits at `now`, on a path
    /// `feedback` describes; if it does, it is spent.
    pub fn spend(&mut self, feedback: &Feedback, now: Instant, size: usize) -> bool {
        let Some(estimate) = feedback.estimate() else {
            // No congestion feedback from this receiver: nothing to go by.
            return true;
        };
        let takes = [feedback.delivered(), feedback.carried()]
            .into_iter()
            .flatten()
            .fold(estimate, f64::min);
        let rate = SHARE * takes;
        let elapsed = self.at.map_or(DEPTH_SECS, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        self.at = Some(now);
        self.bits = (self.bits + rate * elapsed).min(rate * DEPTH_SECS);
        let cost = (size * 8) as f64;
        if self.bits < cost {
            return false;
        }
        self.bits -= cost;
        true
    }
}

/// How long a packet's last answer is remembered: past it, asking again
/// is answered whatever the round trip (Chromium asks at most 10 times).
const REMEMBER: Duration = Duration::from_secs(1);

/// Past this many remembered answers, those older than [`REMEMBER`] are
/// forgotten.
const PRUNE_AT: usize = 2_048;

/// Packets answered lately, so a packet asked for again before the last
/// answer could have arrived is not sent twice. libwebrtc's sender does
/// the same (one answer per packet per round trip).
///
/// Chromium asks again for a packet every round trip it knows; a viewer
/// that sends nothing knows none and asks every 100 ms. Behind a queue of
/// 100 ms the first answer has not arrived by then, and the second one
/// takes the place of a packet of video: a viewer behind a 1 Mbit/s link
/// with a 4 KB bucket and a 100 ms queue got ~300 kbit/s of answers in its
/// first two seconds, on top of a 690 kbit/s layer, and lost a third of
/// its packets while they lasted.
#[derive(Debug, Default)]
pub(super) struct RecentResends {
    /// (SSRC, sequence number) of the original packet → its last answer.
    sent: HashMap<(u32, u16), Instant>,
}

impl RecentResends {
    /// Whether an answer for `packet` at `now` comes within `wait` (the
    /// time an answer takes to arrive) of the last one; if it does not,
    /// it is recorded as sent.
    pub fn too_soon(&mut self, packet: (u32, u16), now: Instant, wait: Duration) -> bool {
        if let Some(&last) = self.sent.get(&packet) {
            if now.saturating_duration_since(last) < wait.min(REMEMBER) {
                return true;
            }
        }
        if self.sent.len() >= PRUNE_AT {
            self.sent
                .retain(|_, &mut at| now.saturating_duration_since(at) < REMEMBER);
        }
        self.sent.insert(packet, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 1,000-byte retransmissions against a path that takes 1 Mbit/s:
    /// a quarter of it, 250 kbit/s, with a second of it at hand.
    #[test]
    fn answers_are_kept_to_a_share_of_what_the_path_takes() {
        let f = Feedback::reporting(4_000_000.0, 1_000_000.0);
        let mut budget = RetransmitBudget::default();
        let t = Instant::now();
        // 250,000 bits at hand: 31 packets of 8,000.
        let sent = (0..40).filter(|_| budget.spend(&f, t, 1_000)).count();
        assert_eq!(sent, 31);
        // 100 ms later, 25,000 bits more (plus the 2,000 left): 3.
        let later = t + Duration::from_millis(100);
        let sent = (0..20).filter(|_| budget.spend(&f, later, 1_000)).count();
        assert_eq!(sent, 3);
        // A long pause fills the budget to its depth, no more.
        let idle = later + Duration::from_secs(10);
        let sent = (0..40).filter(|_| budget.spend(&f, idle, 1_000)).count();
        assert_eq!(sent, 31);
    }

    #[test]
    fn a_receiver_without_congestion_feedback_gets_every_answer() {
        let f = Feedback::default();
        let mut budget = RetransmitBudget::default();
        let t = Instant::now();
        assert!((0..1_000).all(|_| budget.spend(&f, t, 1_200)));
    }

    #[test]
    fn a_packet_is_answered_once_per_repair_time() {
        let mut recent = RecentResends::default();
        let t = Instant::now();
        let wait = Duration::from_millis(120);
        assert!(!recent.too_soon((7, 100), t, wait));
        // Asked again 100 ms later (Chromium's pace without a round
        // trip): the first answer is still on its way.
        let again = t + Duration::from_millis(100);
        assert!(recent.too_soon((7, 100), again, wait));
        // Another packet, or the same one on another stream, is answered.
        assert!(!recent.too_soon((7, 101), again, wait));
        assert!(!recent.too_soon((8, 100), again, wait));
        // Once the repair time has passed since the answer, the answer
        // was lost: answer again.
        let later = t + Duration::from_millis(130);
        assert!(!recent.too_soon((7, 100), later, wait));
        assert!(recent.too_soon((7, 100), later + Duration::from_millis(50), wait));
    }

    #[test]
    fn old_answers_are_forgotten() {
        let mut recent = RecentResends::default();
        let t = Instant::now();
        let wait = Duration::from_secs(5);
        for seq in 0..PRUNE_AT as u16 {
            recent.too_soon((1, seq), t, wait);
        }
        // However long the repair time, a second later a packet is
        // answered again, and what was older is gone.
        let later = t + REMEMBER;
        assert!(!recent.too_soon((1, 0), later, wait));
        assert_eq!(recent.sent.len(), 1);
    }
}
