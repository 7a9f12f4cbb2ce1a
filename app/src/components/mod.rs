//! Pieces of pages, each in a file named after what it shows.

pub mod bulk_reset;
pub mod destinations_table;
#[cfg(feature = "full")]
pub mod diagnose;
pub mod error_message;
pub mod forget;
#[cfg(feature = "full")]
pub mod history;
pub mod pager;
pub mod top_bar;
