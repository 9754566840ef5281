//! guardrail's agent and CLI, as a library so that tests and benchmarks
//! reach the same code the binaries run.
pub mod audit;
pub mod canonical;
pub mod config;
pub mod control;
pub mod decode;
pub mod doctor;
pub mod event;
pub mod filter;
pub mod fuzzing;
pub mod human;
pub mod interpret;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod outputs;
pub mod pipeline;
pub mod procfs;
pub mod redact;
pub mod reload;
pub mod replay;
pub mod report;
pub mod revert;
pub mod rules;
pub mod search;
pub mod trust;
