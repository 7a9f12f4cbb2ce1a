//! The federation sender. So far its intake: [`intake`] serves
//! `POST /_herald/v1/send/pdus` and `POST /_herald/v1/send/edus` on the admin
//! listener, authenticated by `sender_api_token`, and stores what it accepts
//! through the store's outbox (`crate::store::outbox`) before answering.
//! The per-destination queues that deliver it come next.

pub mod intake;

pub use intake::router;
