//! Federation client pieces. For now: server-name resolution as the
//! server-server specification describes it (`resolve`), with its DNS
//! (`dns`) and `.well-known/matrix/server` delegation (`well_known`).

pub mod dns;
pub mod resolve;
pub mod well_known;
