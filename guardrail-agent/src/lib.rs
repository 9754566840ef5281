//! guardrail's agent and CLI, as a library so that tests and benchmarks
//! reach the same code the binaries run.
pub mod audit;
pub mod cgroups;
pub mod clock;
pub mod config;
pub mod control;
pub mod doctor;
pub mod fleet;
pub mod fuzzing;
pub mod idmap;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod outputs;
pub mod pipeline;
pub mod procfs;
pub mod protocol;
pub mod reload;
pub mod revert;
pub mod trust;
pub mod wall_time;
