//! The store tests' helpers: the server tests' throwaway PostgreSQL cluster
//! and the backend a test runs on (both files included as they are).
#![allow(dead_code)]

#[path = "../../../../server/tests/common/postgres.rs"]
pub mod postgres;

#[path = "../../../../server/tests/common/backend.rs"]
pub mod backend;

pub use backend::{Backend, TestDb};
