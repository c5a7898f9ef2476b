//! What a sender learns from each receiver's RTCP: [`Feedback`], and the
//! [`SenderFeedback`] interceptor that fills it in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::is_keyframe_request;

/// What one receiver's feedback says about its path, written by the
/// connection's interceptors and read by the tracks' writers.
#[derive(Debug, Default)]
pub struct Feedback {
    /// Bandwidth estimate in bit/s (as f64 bits); 0 until the first
    /// transport-wide feedback.
    estimate: AtomicU64,
    /// Fraction lost in the latest receiver report, in 1/256.
    loss: AtomicU32,
}

impl Feedback {
    pub fn estimate(&self) -> Option<f64> {
        let e = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        (e > 0.0).then_some(e)
    }

    /// Fraction of packets lost, 0..=1.
    pub fn loss(&self) -> f64 {
        f64::from(self.loss.load(Ordering::Relaxed)) / 256.0
    }
}

/// A sender's view of one receiver's RTCP: marks key-frame requests for
/// delivery to the application (webrtc-rs keeps RTCP to its interceptors
/// otherwise), and keeps the bandwidth estimate that congestion control
/// attaches to transport feedback, and the loss receiver reports tell.
/// Sits application-ward of congestion control, so it sees the estimate.
pub(in crate::session::rtc) struct SenderFeedback {
    feedback: Arc<Feedback>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SenderFeedback {
    pub fn new(feedback: Arc<Feedback>) -> Self {
        Self {
            feedback,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut deliver = false;
        if let Packet::Rtcp(packets) = &msg.message.packet {
            deliver = packets.iter().any(|p| is_keyframe_request(p.as_ref()));
            let lost = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
                .flat_map(|rr| rr.reports.iter().map(|r| r.fraction_lost))
                .max();
            if let Some(lost) = lost {
                self.feedback.loss.store(u32::from(lost), Ordering::Relaxed);
            }
        }
        if deliver {
            msg.message.add(Attribute::DeliverToApplication);
        }
        let changed = Attribute::TargetBitrateChanged {
            bits_per_second: 0.0,
        };
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) = msg.message.get(&changed)
        {
            self.feedback
                .estimate
                .store(bits_per_second.to_bits(), Ordering::Relaxed);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for SenderFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
