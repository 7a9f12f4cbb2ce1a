//! Federation client pieces: server-name resolution as the server-server
//! specification describes it (`resolve`), with its DNS (`dns`) and
//! `.well-known/matrix/server` delegation (`well_known`); per-destination
//! backoff, Synapse's retry limiter (`backoff`).

pub mod backoff;
pub mod client;
pub mod connect;
pub mod dns;
pub mod ip_filter;
pub mod resolve;
pub mod well_known;
