//! Types that Herald's server and its console both use.
//!
//! This crate owns the shapes of the Synapse-compatible federation admin API:
//! the rows it returns ([`Destination`], [`DestinationRoom`]), the pages that
//! wrap them, the query parameters and their exact Synapse validation rules
//! ([`params`]), the Matrix error body, and a destination's derived health
//! ([`status`]). It compiles to native code and to
//! wasm32, so it holds no I/O, no async runtime and no database code.

pub mod action;
pub mod api;
pub mod diagnose;
pub mod health;
pub mod instances;
pub mod params;
pub mod sender;
pub mod status;

pub use action::Action;
pub use api::*;
pub use diagnose::*;
pub use health::*;
pub use instances::*;
pub use params::*;
pub use sender::*;
pub use status::*;
