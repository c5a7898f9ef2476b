//! One integration-test binary: the real `p2p` executable, real relays and
//! real peers on this machine. One module per behaviour.

mod bandwidth;
mod cli;
mod data;
mod drivers;
mod eos;
mod faults;
mod harness;
mod hostile;
mod interop;
mod load;
mod media;
mod mediafile;
mod nat;
mod nats;
mod netfaults;
mod relay;
mod whep;
mod whip;
mod whip_janus;
mod whip_listen;
