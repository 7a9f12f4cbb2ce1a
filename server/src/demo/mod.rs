//! `herald demo`: realistic destinations in every state ([`data`]), and a
//! live federation on 127.0.0.1: simulated remote homeservers over HTTPS
//! that verify Herald's signatures ([`homeserver`]), a certificate they and
//! Herald share ([`tls`]), and a generator sending events through the
//! intake API ([`generator`]). Tests and benchmarks use the same homeservers
//! as receivers.

pub mod data;
pub mod generator;
pub mod homeserver;
pub mod live;
pub mod tls;

pub use data::{destinations, seed, SEED};
