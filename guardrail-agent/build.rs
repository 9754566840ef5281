//! Builds the eBPF object that the agent embeds.
//!
//! The probes need `-Z build-std=core` for `bpfel-unknown-none`, which the
//! stable toolchain that builds the agent cannot do; Debian's `rustc-web`
//! (with `RUSTC_BOOTSTRAP`) and `bpf-linker` can. `cargo xtask build`
//! installs both; this script only uses them, and says how to get them when
//! they are missing.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("guardrail-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for dir in ["guardrail-ebpf/src", "guardrail-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in ["guardrail-ebpf/Cargo.toml", "guardrail-ebpf/Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=GUARDRAIL_EBPF_RUSTC");
    println!("cargo:rerun-if-env-changed=GUARDRAIL_EBPF_CARGO");
    // `--features upgrade-test-variant`: the probes of the upgrade test's
    // second build, in a target directory of their own so that neither
    // build undoes the other's.
    let variant = env::var_os("CARGO_FEATURE_UPGRADE_TEST_VARIANT").is_some();

    let rustc = env::var("GUARDRAIL_EBPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    let cargo = env::var("GUARDRAIL_EBPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let have_linker = Command::new("bpf-linker").arg("--version").output().is_ok();
    if !PathBuf::from(&rustc).exists() || !PathBuf::from(&cargo).exists() || !have_linker {
        // As in aya's template: without the toolchain, and unless a build
        // that ships the agent asks for the probes (`cargo xtask` does),
        // empty objects stand in, so that `cargo check`, clippy and the
        // unit tests work with a plain stable toolchain. An agent built so
        // refuses to start and says why.
        if env::var_os("GUARDRAIL_REQUIRE_PROBES").is_none() {
            println!(
                "cargo:warning=the eBPF toolchain is missing: this build has no probes and its \
                 agent will not start; `cargo xtask build` installs the toolchain and builds them"
            );
            for object in ["guardrail.bpf.o", "guardrail-floor.bpf.o"] {
                std::fs::write(out.join(object), []).expect("writing a stub object");
            }
            // Run again on every build until the toolchain is there (a
            // path that does not exist is never up to date).
            println!("cargo:rerun-if-env-changed=GUARDRAIL_REQUIRE_PROBES");
            println!("cargo:rerun-if-env-changed=PATH");
            println!(
                "cargo:rerun-if-changed={}",
                out.join("toolchain-missing").display()
            );
            return;
        }
        panic!(
            "the eBPF toolchain is missing ({rustc}, {cargo} and bpf-linker on PATH are needed).\n\
             Run `cargo xtask build` once: it installs Debian's rustc-web, rust-web-src and \
             llvm-22-dev and builds bpf-linker (or prints the commands when not root on Debian)."
        );
    }
    // The probes share this workspace's target directory so repeated builds
    // are incremental, but in a folder of their own.
    let target_dir = root
        .join("target")
        .join(if variant { "ebpf-variant" } else { "ebpf" });
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir)
        .args(
            variant
                .then_some(["--features", "upgrade-test-variant"])
                .into_iter()
                .flatten(),
        )
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1");
    // What the outer (stable) build set must not leak into the inner one.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTC",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_FEATURE_") || key.starts_with("CARGO_CFG_") {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("running cargo for the eBPF probes");
    assert!(status.success(), "building guardrail-ebpf failed");
    // LLVM's `llvm-objcopy` comes with the toolchain (Debian's llvm-22).
    let objcopy = ["/usr/lib/llvm-22/bin/llvm-objcopy", "llvm-objcopy"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_ok());
    for (built, embedded) in [
        ("guardrail-ebpf", "guardrail.bpf.o"),
        ("guardrail-floor", "guardrail-floor.bpf.o"),
    ] {
        let object = target_dir.join("bpfel-unknown-none/release").join(built);
        embed(objcopy, &object, &out.join(embedded));
    }
}

/// Copy the probes' object to where the agent embeds it, without its
/// DWARF: the probes are built with full debug information only because
/// their BTF (kept) is made from it, and the DWARF would add 2.5 MB to
/// the agent. Without `objcopy` (or when it fails) the object is embedded
/// as built, with a warning.
fn embed(objcopy: Option<&str>, object: &Path, to: &Path) {
    let stripped = objcopy.is_some_and(|tool| {
        Command::new(tool)
            .arg("--strip-debug")
            .arg(object)
            .arg(to)
            .status()
            .is_ok_and(|s| s.success())
    });
    if !stripped {
        println!(
            "cargo:warning={} is embedded with its debug information (no working llvm-objcopy)",
            object.display()
        );
        std::fs::copy(object, to).expect("copying the eBPF object");
    }
}
