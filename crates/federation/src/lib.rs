//! Talking to other Matrix servers, as Synapse's `MatrixFederationHttpClient`
//! does: the signed client with retries and typed errors (`client`), TLS and
//! the keep-alive pool (`connect`), the IP range filter (`ip_filter`),
//! server-name resolution (`resolve`) with DNS (`dns`) and
//! `.well-known/matrix/server` delegation (`well_known`), and per-destination
//! backoff, Synapse's retry limiter (`backoff`); and a destination's
//! diagnosis, step by step (`diagnose`).
//!
//! It takes plain settings (`settings`), keeps backoff timings through the
//! [`backoff::BackoffStore`] trait and reports through the
//! [`metrics::ClientMetrics`] trait: it knows neither Herald's config file,
//! nor its database, nor its metrics registry (ARCHITECTURE.md's rules).

pub mod backoff;
pub mod client;
pub mod clock;
pub mod connect;
pub mod diagnose;
pub mod dns;
pub mod failure;
pub mod ip_filter;
pub mod metrics;
pub mod resolve;
pub mod settings;
pub mod well_known;

pub use backoff::{BackoffPolicy, BackoffStore, RetryTimings, StorageError};
pub use client::{ClientSettings, FederationClient, FederationError};
pub use settings::FederationSettings;
