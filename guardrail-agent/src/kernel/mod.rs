//! Everything that talks to the kernel: BTF, tracefs, loading the probes.
pub mod attach;
pub mod btf;
mod btf_format;
pub mod capabilities;
pub mod enforce;
pub mod floor;
mod kfunc;
pub mod lineage;
pub mod pins;
pub mod probes;
pub mod ring;
pub mod tracefs;
pub mod uring;
pub mod watch;
