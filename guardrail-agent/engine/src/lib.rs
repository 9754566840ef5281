//! guardrail's engine: everything between a record from the kernel and a
//! decision, with no kernel, network or service I/O of its own.
//!
//! The data path runs one way through it: [`decode`] (ring-buffer bytes to
//! a raw record) → [`interpret`] (raw record to an [`event::Event`], paths
//! made canonical by [`canonical`]) → [`rules`] (the decision) →
//! [`redact`] (what may leave the host) → [`chain`] (the audit log's seal).
//! Beside it: [`kernel_maps`] compiles the rules into the maps the kernel
//! decides on, [`replay`] and [`search`] read recorded logs ([`scan`] is
//! replay's line scanner), [`human`], [`filter`] and [`report`] serve the
//! operator.
//!
//! The agent (`guardrail-agent`) does the I/O around it: loading the
//! probes, reading the ring buffer, writing maps, files and outputs.
pub mod attribution;
pub mod canonical;
pub mod chain;
pub mod decode;
pub mod event;
mod event_json;
mod event_write;
pub mod filter;
pub mod human;
pub mod instants;
pub mod interpret;
pub mod kernel_maps;
pub mod process_join;
pub mod process_json;
pub mod redact;
pub mod replay;
pub mod report;
pub mod rules;
pub mod scan;
pub mod search;
pub mod span;
