//! The store tests' helpers: the server tests' throwaway PostgreSQL cluster
//! and the backend a test runs on (both files included as they are), and
//! the event the tests queue.
#![allow(dead_code)]

#[path = "../../../../server/tests/common/postgres.rs"]
pub mod postgres;

#[path = "../../../../server/tests/common/backend.rs"]
pub mod backend;

pub use backend::{Backend, TestDb};

use herald_store::NewEvent;

/// An event of `room` for `destinations`, its PDU a stub naming it.
pub fn event(id: &str, room: &str, destinations: &[&str]) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        room_id: room.into(),
        pdu_json: format!(r#"{{"event_id":"{id}"}}"#),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}
