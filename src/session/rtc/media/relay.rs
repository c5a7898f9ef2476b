//! A publisher's track forwarded to the room (`p2p send --whip-listen`):
//! its RTP packets go out to every receiver as they came, without decoding,
//! made into one continuous stream across publishers.

use std::sync::{Arc, Mutex};

use rtc::rtp::packet::Packet as RtpPacket;
use rtc::shared::marshal::{Marshal, Unmarshal};

use super::{RemoteTrack, TrackWriter};

/// Where one outgoing stream stands, across the publishers that feed it
/// one after another: a receiver must see sequence numbers and timestamps
/// go on, not jump back, when a publisher comes back or is replaced.
#[derive(Debug, Default)]
pub struct Continuity {
    /// The last sequence number and timestamp sent; None before any.
    last: Option<(u16, u32)>,
    /// What is added to the current publisher's.
    seq_offset: u16,
    ts_offset: u32,
    /// The current publisher's stream has been seen (its offsets are set).
    started: bool,
}

/// Timestamp step between two publishers' streams: one frame at 30 fps on
/// a 90 kHz clock (about a frame of audio at 48 kHz). Any small step will
/// do; the receiver's jitter buffer only needs time to go forward.
const TS_STEP: u32 = 3_000;

impl Continuity {
    /// A new publisher starts: its first packet continues the stream.
    pub fn restart(&mut self) {
        self.started = false;
    }

    /// A packet is left out (padding): the ones after it close the gap, so
    /// receivers do not count it lost and ask for it again.
    fn skip(&mut self) {
        if self.started {
            self.seq_offset = self.seq_offset.wrapping_sub(1);
        }
    }

    /// Rewrites a packet's sequence number and timestamp.
    fn map(&mut self, seq: u16, ts: u32) -> (u16, u32) {
        if !self.started {
            self.started = true;
            let (next_seq, next_ts) = match self.last {
                Some((s, t)) => (s.wrapping_add(1), t.wrapping_add(TS_STEP)),
                None => (seq, ts),
            };
            self.seq_offset = next_seq.wrapping_sub(seq);
            self.ts_offset = next_ts.wrapping_sub(ts);
        }
        let out = (
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        );
        let newer = self
            .last
            .is_none_or(|(s, _)| out.0.wrapping_sub(s).wrapping_sub(1) < u16::MAX / 2);
        if newer {
            self.last = Some(out);
        }
        out
    }
}

/// Forwards `track` to `writer` until it ends. Header extensions are
/// dropped (their ids are the publisher's, not what the receivers
/// negotiated), and so are packets with no payload (padding that probes
/// bandwidth).
pub async fn relay(track: RemoteTrack, writer: TrackWriter, continuity: Arc<Mutex<Continuity>>) {
    continuity
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restart();
    while let Some(received) = track.read().await {
        let Ok(mut packet) = RtpPacket::unmarshal(&mut &received.rtp[..]) else {
            continue;
        };
        if packet.payload.is_empty() {
            continuity.lock().unwrap_or_else(|e| e.into_inner()).skip();
            continue;
        }
        let (seq, ts) = continuity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(packet.header.sequence_number, packet.header.timestamp);
        packet.header.sequence_number = seq;
        packet.header.timestamp = ts;
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.padding = false;
        let Ok(rtp) = packet.marshal() else {
            continue;
        };
        writer.write(&rtp, received.captured, 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_publisher_keeps_its_numbers() {
        let mut c = Continuity::default();
        assert_eq!(c.map(100, 5000), (100, 5000));
        assert_eq!(c.map(101, 8000), (101, 8000));
    }

    #[test]
    fn a_new_publisher_continues_where_the_last_stopped() {
        let mut c = Continuity::default();
        c.map(65_535, 10);
        c.restart();
        assert_eq!(c.map(7, 1_000_000), (0, 10 + TS_STEP));
        assert_eq!(c.map(8, 1_003_000), (1, 10 + TS_STEP + 3000));
        // A late (reordered) packet maps back without moving the end.
        assert_eq!(c.map(6, 997_000), (65_535, 10 + TS_STEP - 3000));
        c.restart();
        assert_eq!(c.map(500, 42), (2, 10 + 2 * TS_STEP + 3000));
    }

    #[test]
    fn a_padding_packet_left_out_leaves_no_gap() {
        let mut c = Continuity::default();
        assert_eq!(c.map(10, 0), (10, 0));
        c.skip(); // 11 was padding
        assert_eq!(c.map(12, 3000), (11, 3000));
        assert_eq!(c.map(13, 6000), (12, 6000));
    }
}
