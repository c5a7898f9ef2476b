//! [`RetransmitBudget`]: what a sender spends on answering NACKs, kept to
//! a share of the path's estimate.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

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
/// is repaired at once, a storm is not.
const DEPTH_SECS: f64 = 0.25;

/// Drops the NACK responder's retransmissions that go over [`SHARE`] of
/// what the path takes.
///
/// webrtc-rs answers every NACK, for anything still in its send buffer
/// (1,024 packets, seconds of video), as often as it is asked, with no
/// regard for the path. Chromium asks for a lost packet up to 10 times,
/// once per round trip: a viewer behind 1 Mbit/s that lost half of a
/// 2.5 Mbit/s start asked for ~1,200 packets a second for 13 s, and the
/// answers kept its path full after the sender had stepped down, so its
/// picture sank to the smallest layer for 15 s. Sits on the wire side of
/// the responder, where its packets pass.
pub(in crate::session::rtc) struct RetransmitBudget {
    feedback: Arc<Feedback>,
    /// Bits that may be spent now, and when that was last brought up to date.
    bits: f64,
    at: Option<Instant>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RetransmitBudget {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            bits: 0.0,
            at: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Whether a retransmission of `size` bytes fits, at `now`.
    fn spend(&mut self, now: Instant, size: usize) -> bool {
        let Some(estimate) = self.feedback.estimate() else {
            // No congestion feedback from this receiver: nothing to go by.
            return true;
        };
        let takes = [self.feedback.delivered(), self.feedback.carried()]
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

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmitBudget {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            if msg.message.has(&Attribute::Retransmission) {
                let size = p.marshal_size();
                if !self.spend(msg.now, size) {
                    self.feedback
                        .resends_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                self.feedback
                    .resent_bytes
                    .fetch_add(size as u64, Ordering::Relaxed);
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RetransmitBudget {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 1,000-byte retransmissions against a path that takes 1 Mbit/s:
    /// a quarter of it, 250 kbit/s, with 250 ms of it at hand.
    #[test]
    fn answers_are_kept_to_a_share_of_what_the_path_takes() {
        let feedback = Arc::new(Feedback::reporting(4_000_000.0, 1_000_000.0));
        let mut budget = RetransmitBudget::new(feedback);
        let t = Instant::now();
        // 62,500 bits at hand: 7 packets of 8,000.
        let sent = (0..20).filter(|_| budget.spend(t, 1_000)).count();
        assert_eq!(sent, 7);
        // 100 ms later, 25,000 bits more (plus the 6,500 left): 3.
        let later = t + Duration::from_millis(100);
        let sent = (0..20).filter(|_| budget.spend(later, 1_000)).count();
        assert_eq!(sent, 3);
        // A long pause fills the budget to its depth, no more.
        let idle = later + Duration::from_secs(10);
        let sent = (0..20).filter(|_| budget.spend(idle, 1_000)).count();
        assert_eq!(sent, 7);
    }

    #[test]
    fn a_receiver_without_congestion_feedback_gets_every_answer() {
        let mut budget = RetransmitBudget::new(Arc::new(Feedback::default()));
        let t = Instant::now();
        assert!((0..1_000).all(|_| budget.spend(t, 1_200)));
    }
}
