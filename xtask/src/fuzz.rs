//! `cargo xtask fuzz`: cargo-fuzz on the properties in
//! `guardrail_agent::fuzzing`. cargo-fuzz wants a nightly compiler for its
//! sanitizer flags; without a sanitizer (`-s none`) the stable one works
//! when allowed unstable flags (RUSTC_BOOTSTRAP), and Rust's own checks
//! (bounds, overflow, assertions) still turn bugs into crashes.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cargo, root, run};

const TARGETS: &[&str] = &["config", "decoder", "log_verify", "control", "replay_line"];

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        run(cargo().args(["install", "cargo-fuzz", "--version", "0.13.2", "--locked"]))?;
    }
    Ok(())
}

pub fn fuzz(which: &str, seconds: u64) -> Result<()> {
    let targets: Vec<&str> = match which {
        "all" => TARGETS.to_vec(),
        t if TARGETS.contains(&t) => vec![t],
        t => bail!("unknown fuzz target {t:?}: expected all or one of {TARGETS:?}"),
    };
    ensure_cargo_fuzz()?;
    for target in targets {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let mut cmd: Command = cargo();
        // Integer overflow is a crash too (the replay test, a debug build,
        // found one the campaign had not flagged).
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTFLAGS", "-Coverflow-checks=on")
            .args(["fuzz", "run", "--sanitizer", "none", "--release", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=65536")
            .arg("-print_final_stats=1");
        run(&mut cmd)?;
        // Keep only inputs that add coverage: the corpus is committed.
        run(cargo()
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTFLAGS", "-Coverflow-checks=on")
            .args(["fuzz", "cmin", "--sanitizer", "none", "--release", target])
            .arg(&corpus))?;
    }
    Ok(())
}
