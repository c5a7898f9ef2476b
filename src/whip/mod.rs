//! WHIP (RFC 9725) and WHEP, its playback twin, the HTTP side: POSTing an
//! SDP offer and reading the answer, trickling candidates by PATCH, ending
//! with DELETE; and serving the same (`serve`). No webrtc-rs type appears
//! here: `session::whip`, `session::ingest` and `session::viewers` drive
//! peer connections through this.

mod client;
mod link;
mod sdp;
pub mod serve;

pub use client::{Client, Created, Kind};
pub use link::{ice_servers, LinkServer};

pub use sdp::{
    candidate_fragment, ice_ufrag, parse_fragment, receives_codec, receives_media, rejected,
    sending_sections, sends_media, Fragment, Rejected,
};

/// The media type of an SDP offer or answer.
pub const SDP: &str = "application/sdp";

/// The media type of a trickled ICE fragment (RFC 8840).
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
