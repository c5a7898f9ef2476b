//! Sender and Receiver sessions: the state machines and the run loops that
//! carry out their actions.

pub mod machine;
