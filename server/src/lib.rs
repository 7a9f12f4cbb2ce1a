//! Herald: a Matrix federation sender with a Synapse-compatible federation
//! admin API and a web console, in one binary.
//!
//! The binary's library: the only crate that knows the TOML config (`config`
//! turns it into each crate's settings), the HTTP layer for every route
//! (`http`), who is asking (`auth`), the metrics registry (`metrics`), what
//! handlers share (`state`), attached mode's client of Synapse (`synapse`),
//! the listeners (`serve`, `federation_listener`, `accept`)
//! and, behind the `demo` feature, `herald demo`. Signing, the federation
//! client, SQL and the sender live in their own crates (ARCHITECTURE.md).

pub mod accept;
pub mod auth;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod federation_listener;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod state;
pub mod synapse;
