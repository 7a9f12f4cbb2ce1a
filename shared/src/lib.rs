//! Types that Herald's server and its console both use.
//!
//! This crate owns the shapes of the Synapse-compatible federation admin API:
//! the rows it returns ([`Destination`], [`DestinationRoom`]), the pages that
//! wrap them, the query parameters and their exact Synapse validation rules
//! ([`params`]), and the Matrix error body. It compiles to native code and to
//! wasm32, so it holds no I/O, no async runtime and no database code.

pub mod api;
pub mod params;

pub use api::*;
pub use params::*;
