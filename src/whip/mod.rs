//! WHIP (RFC 9725), the HTTP side: publishing to a media server (an SFU)
//! by POSTing an SDP offer and reading the answer, trickling candidates by
//! PATCH, ending with DELETE. No webrtc-rs type appears here:
//! `session::whip` drives a peer connection through this.

mod client;
mod link;
mod sdp;

pub use client::{Client, Created};
pub use link::{ice_servers, LinkServer};
pub use sdp::{candidate_fragment, ice_ufrag, parse_fragment, rejected, Fragment, Rejected};

/// The media type of an SDP offer or answer.
pub const SDP: &str = "application/sdp";

/// The media type of a trickled ICE fragment (RFC 8840).
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
