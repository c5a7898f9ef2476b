//! `p2p signal`: the WebSocket relay of PROTOCOL.md §2, and the page it
//! serves to browsers.
//!
//! [`router`] decides who gets what; this module owns the sockets around it:
//! one reader loop and one writer task per connection, joined by a bounded
//! outbox. A client that does not read fills its outbox and is cut off, so
//! one slow consumer never holds up the others.

mod bridge;
mod door;
pub mod grant;
pub mod limit;
mod server;
pub mod turn;

pub use crate::router;
pub use grant::{Issuer, Role};
pub use router::Limits;
pub use server::{resume_key, run, RelayConfig};
pub use turn::TurnIssuer;
