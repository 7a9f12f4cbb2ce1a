//! Herald: a Matrix federation sender with a Synapse-compatible federation
//! admin API and a web console, in one binary.
//!
//! Modules follow the data flow (see ARCHITECTURE.md): `config` is read once,
//! `store` owns all SQL, `auth` knows who is asking, `admin` answers the
//! federation admin API, `web` assembles the listener and the console,
//! `serve` runs it, and `demo` seeds realistic data.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod federation;
pub mod federation_listener;
pub mod keys;
pub mod metrics;
pub mod sender;
pub mod serve;
pub mod state;
pub mod store;
pub mod web;
