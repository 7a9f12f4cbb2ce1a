//! Pieces of pages, each in a file named after what it shows.

pub mod bulk_reset;
pub mod destinations_table;
pub mod diagnose;
pub mod error_message;
pub mod forget;
pub mod history;
pub mod pager;
pub mod top_bar;
