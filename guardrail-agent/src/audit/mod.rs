//! The audit log: every event and decision, appended as JSON lines sealed
//! in a hash chain ([`guardrail_engine::chain`]), rotated by size, written
//! by its own thread so that a slow or full disk never holds up the event
//! path.
pub mod writer;

pub use writer::{held_files, AuditLog, AuditStats, FeedFile, FileId, LogFeed, Reference};
