//! What p2p asks of webrtc-rs: the ICE, SCTP and RTP constants (with
//! why each has its value), the `SettingEngine`, and the codecs, header
//! extensions and interceptors of each connection.

use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, Registry, Slot,
    TwccSenderBuilder,
};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use webrtc::peer_connection::{
    configure_rtcp_reports, configure_twcc_receiver_only, MediaEngine, SettingEngine,
    SettingEngineBuilder,
};

use super::media::{self, Feedback, ABS_CAPTURE_TIME};
use super::Rtc;

/// SCTP receive window: how much the peer may send ahead of our reading.
/// webrtc-rs's default (1 MiB) halves loopback throughput.
const SCTP_RECEIVE_BUFFER: u32 = 4 * 1024 * 1024;

/// Floor under SCTP's retransmission timeout. RFC 9260's 1 s bounded a data
/// channel over 5 % loss on a LAN to ~65 KB/s: every lost retransmission
/// and every loss at the tail of a burst (too few packets follow it to
/// trigger a fast retransmit) waited the full second. Throughput there goes
/// as the inverse of the floor (200 MB: 167 s at 50 ms, 76 s at 20 ms); the
/// RTO itself still follows the path's RTT samples, so a slow or jittery
/// path keeps a long one. A lone message answered by the peer's 200 ms
/// delayed SACK is sent again a few times until those samples raise the
/// RTO past it. Needs `third_party/rtc*-rto-min.patch` (bench/NOTES.md).
const SCTP_RTO_MIN: Duration = Duration::from_millis(20);

/// How often a receiver looks for video packets it is missing and asks
/// for them (NACK). webrtc-rs's default, 100 ms, is the recorder's whole
/// jitter buffer latency on a display: half the retransmissions came too
/// late to be used. At 20 ms a loss is asked for at once.
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// How long a receiver waits for a packet it asked for before asking
/// again, until it has timed a repair; from then on the wait follows that
/// time (round trip and queueing: `third_party/rtc-interceptor-*-nack-rtx.patch`).
/// Asking every 20 ms, all three NACKs for a packet left within 60 ms, so
/// at a 150 ms round trip each loss was sent three times and a lost
/// repair never asked for again.
const NACK_FIRST_REPAIR_WAIT: Duration = Duration::from_millis(100);

/// How many times a receiver asks for one lost packet. Unlimited (the
/// default) turned a congested path into a storm: every packet the
/// bottleneck dropped was asked for every 20 ms, each answer dropped in
/// turn, until retransmissions alone filled the link (measured: 15,000
/// packets a second dropped on a 1 Mbit/s link carrying 200 kbit/s of
/// video); now a packet is asked for again only a repair time apart, and
/// the sender's answers are budgeted. Through 5 % loss each way a try
/// fails about one time in ten (the NACK or its answer lost): three tries
/// left one lost packet in ~1,000 unrepaired, a key frame asked for and
/// a freeze every few seconds of the full layer (the link matrix's 5 %
/// loss cell); five leave one in ~100,000, and fit in a recording's wait
/// (`media::record`) at round trips up to 150 ms.
const NACKS_PER_PACKET: u16 = 5;

/// ICE: silence before a connection counts as lost (and is restarted),
/// and the keep-alive interval that keeps an idle one from looking
/// silent (three are missed before it does). webrtc-rs's defaults, 5 s
/// and 2 s, left a session whose NAT got a new public address without a
/// path for 5.2 s: nothing on either host changes, so only the silence
/// tells (`nat::when_the_receivers_nat_gets…`). A keep-alive a second
/// costs ~1.6 kbit/s a connection, both ways.
const ICE_DISCONNECTED: Duration = Duration::from_secs(3);
const ICE_KEEPALIVE: Duration = Duration::from_secs(1);

/// ICE: added to `ICE_DISCONNECTED`, how long connectivity checks may go
/// without an answer before a new connection fails. webrtc-rs stops
/// retrying a candidate pair after a few unanswered checks, so an attempt
/// made while the network is down never connects once it is back; it
/// must fail for the peers to try again. webrtc-rs's default, 25 s, kept
/// sessions down for half a minute after a 10 s outage; 15 s in all is
/// still far beyond what checks take on any working path.
///
/// Kept at 15 s in all when `ICE_DISCONNECTED` went from 5 s to 3: at
/// 13 s, a connection whose sender was stopped for ~13 s (the browser
/// test's stall) failed outright as it woke, and was made anew instead of
/// restarted.
const ICE_FAILED: Duration = Duration::from_secs(12);

/// ICE: time between connectivity checks, and how many a candidate pair
/// gets. webrtc-rs's 200 ms tick also paces every handshake step after
/// ICE (DTLS, SCTP, the channel's open): a data channel took 400–600 ms
/// to open. At 20 ms it opens in 50–70 ms; 100 checks keep a pair alive
/// for the same 2 s a slow path needs.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
const ICE_CHECKS_PER_PAIR: u16 = 100;

/// Interceptor slot of [`media::SenderFeedback`]: application-ward of
/// congestion control (1,000), so it sees the estimate on feedback, and of
/// transport-wide numbering (2,000), so a retransmission it drops leaves
/// no gap in the numbers; wire-ward of the NACK responder (4,000), so the
/// responder's retransmissions pass it.
const FEEDBACK_SLOT: usize = 3_500;

/// Where the prober sits: wire-ward of [`FEEDBACK_SLOT`] (its probes are
/// not NACK answers to budget, and the answers that budget drops leave no
/// gap in its RTX numbering), application-ward of transport-wide
/// numbering and congestion control (its probes are numbered, recorded
/// and reported like any packet).
const PROBE_SLOT: usize = 3_200;

/// Where the pacer sits: wire-ward of the NACK responder and of
/// [`FEEDBACK_SLOT`] (the NACK answers it lets through spend its budget),
/// application-ward of [`PROBE_SLOT`] (probe copies fill what the paced
/// video leaves) and of transport-wide numbering (which records when a
/// packet left the pacer, so its wait is not counted as the path's).
const PACE_SLOT: usize = 3_300;

/// The transport-wide congestion control extension and feedback.
const TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Lowest bandwidth estimate: below it, even audio and the smallest
/// layer do not fit, and a lower number would only slow the recovery.
const MIN_ESTIMATE: f64 = 100_000.0;

/// How long ICE waits before it may take a server-reflexive or a relayed
/// pair (see `settings`).
const SRFLX_ACCEPTANCE: Duration = Duration::from_millis(100);
const RELAY_ACCEPTANCE: Duration = Duration::from_millis(250);

impl Rtc {
    /// Codecs, header extensions and interceptors, split by direction.
    /// Both sides: RTCP sender and receiver reports, and video codecs with
    /// `nack`, `nack pli` and `ccm fir` feedback. The sending side keeps
    /// what it sent to answer NACKs, hands key-frame requests to the
    /// encoder, numbers its packets for transport-wide feedback and runs
    /// Google Congestion Control on that feedback, one estimate per
    /// receiver (into `feedback`). The receiving side asks for what it lost
    /// and sends that transport-wide feedback. Each of those two wakes up
    /// on a timer per connection (NACK every 20 ms, TWCC every 100 ms)
    /// whether or not media comes in: on a sender with 20 receivers that
    /// was 1,200 idle wake-ups a second, so a sender runs neither.
    ///
    /// Each receiver is kept under its estimate by the layer it is
    /// forwarded, and its video is paced at a multiple of that layer's
    /// rate (`pacer.rs`), so a key frame does not reach a shallow
    /// bottleneck as one burst.
    pub(super) fn engines(
        &self,
        feedback: &Arc<Feedback>,
    ) -> anyhow::Result<(MediaEngine, Registry)> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: ABS_CAPTURE_TIME.into(),
                },
                kind,
                None,
            )?;
        }
        for parameter in ["", "pli"] {
            media.register_feedback(
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: parameter.into(),
                },
                RtpCodecKind::Video,
            );
        }
        let registry = configure_rtcp_reports(Registry::new());
        if !self.receives_media {
            let mut registry = registry
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
                .with(
                    Slot::from(FEEDBACK_SLOT),
                    media::SenderFeedback::new(feedback.clone()),
                );
            if self.send_bps > 0.0 {
                for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                    media.register_feedback(
                        RTCPFeedback {
                            typ: "transport-cc".into(),
                            parameter: String::new(),
                        },
                        kind,
                    );
                    media.register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: TRANSPORT_CC.into(),
                        },
                        kind,
                        None,
                    )?;
                }
                // Starts above the full rate: a path is assumed to carry
                // the stream until its feedback shows otherwise (GCC has no
                // probing here, and ramping up from a guess takes tens of
                // seconds), with room for the first key frames' burst.
                let start = (self.send_bps * 2.0).max(MIN_ESTIMATE);
                let estimator =
                    media::Estimator::new(start, MIN_ESTIMATE, start * 2.0, feedback.clone());
                registry = registry
                    .with(
                        Slot::CongestionControl,
                        CongestionControlBuilder::new(estimator).build(),
                    )
                    .with(Slot::TwccSender, TwccSenderBuilder::new().build())
                    .with(Slot::from(PROBE_SLOT), media::Prober::new(feedback.clone()))
                    .with(Slot::from(PACE_SLOT), media::Pacer::new(feedback.clone()));
            }
            return Ok((media, registry));
        }
        receiving(media, registry)
    }

    /// Codecs and interceptors of a connection that takes a WHIP
    /// publisher's media in: only `specs`' codecs, at their payload types,
    /// so what the publisher sends is what the room's receivers take,
    /// forwarded untouched; no RTX, so lost packets come back on the
    /// media's own SSRC; the receiving side's NACK and transport-wide
    /// feedback, so the publisher adapts to the path.
    pub(super) fn ingest_engines(
        specs: &[crate::media::TrackSpec],
    ) -> anyhow::Result<(MediaEngine, Registry)> {
        let mut media = MediaEngine::default();
        for spec in specs {
            let mut codec = media::codec_of(spec);
            if spec.kind == crate::media::MediaKind::Video {
                codec.rtcp_feedback = [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
                    .into_iter()
                    .map(|(typ, parameter)| RTCPFeedback {
                        typ: typ.into(),
                        parameter: parameter.into(),
                    })
                    .collect();
            }
            media.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec,
                    payload_type: spec.payload_type,
                },
                media::codec_kind(spec.kind),
            )?;
        }
        receiving(media, configure_rtcp_reports(Registry::new()))
    }

    pub(crate) fn settings() -> SettingEngine {
        SettingEngineBuilder::new()
            // No multicast: nothing leaves this machine unless told to.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // Two processes on one machine meet over loopback.
            .with_include_loopback_candidate(true)
            // An ICE restart binds afresh to the addresses the host has
            // then: after a network change the old ones may be gone.
            .with_discard_local_candidates_during_ice_restart(true)
            // Browsers that hide their addresses show up as peer-reflexive
            // candidates; accept them at once instead of after 1 s.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // A working server-reflexive pair is taken 0.1 s after ICE
            // starts, a relayed one after 0.25 s, not after webrtc-rs's
            // defaults of 0.5 s and 2 s: across NATs those waits were most
            // of the time to connect (bench/NOTES.md, "TURN"; Chromium does
            // not wait at all). A host pair that works is found within
            // milliseconds on one network, and a relayed pair needs an
            // allocation and a permission first, so a better pair that
            // works has almost always been found by then.
            .with_srflx_acceptance_min_wait(Some(SRFLX_ACCEPTANCE))
            .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE))
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS_PER_PAIR))
            .with_sctp_max_receive_buffer_size(SCTP_RECEIVE_BUFFER)
            .with_sctp_rto_min(SCTP_RTO_MIN)
            // Answer as the DTLS server, so the offerer (a sender) is the
            // side that finishes the handshake last: webrtc-rs takes its
            // SRTP keys in an event handled after the rest of the packets
            // read with the last flight, and SRTP that arrives with it is
            // dropped. A sender that finished first sent its first picture
            // into that gap; the receiver then waited ~0.5 s for another
            // (bench/NOTES.md, "first key frame").
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .build()
    }
}

/// The receiving side's interceptors: NACKs for what was lost, and
/// transport-wide feedback for the sender's congestion control.
fn receiving(
    mut media: MediaEngine,
    registry: Registry,
) -> anyhow::Result<(MediaEngine, Registry)> {
    let registry = registry.with(
        Slot::NackGenerator,
        NackGeneratorBuilder::new()
            .with_interval(NACK_INTERVAL)
            .with_max_nacks_per_packet(NACKS_PER_PACKET)
            .with_initial_repair_time(NACK_FIRST_REPAIR_WAIT)
            .build(),
    );
    let registry = configure_twcc_receiver_only(registry, &mut media)?;
    Ok((media, registry))
}
