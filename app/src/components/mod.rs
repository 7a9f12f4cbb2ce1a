//! Pieces of pages, each in a file named after what it shows.

pub mod destinations_table;
pub mod error_message;
pub mod health_summary;
pub mod top_bar;
