//! `cargo xtask test`: every check CI runs.
use std::{fs, process::Command};

use anyhow::{Result, bail};

use super::{cargo, is_root, root, setup, sh, step};

pub fn run(unprivileged: bool) -> Result<()> {
    setup::run()?;

    step("every crate opts into the workspace lints");
    check_lints_opt_in()?;

    step("cargo fmt --check");
    sh(cargo().args(["fmt", "--all", "--check"]))?;

    step("cargo clippy (userspace)");
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "agentd-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("cargo clippy (eBPF programs)");
    sh(Command::new("cargo")
        .args([
            "clippy",
            "--package",
            "agentd-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
        .env("RUSTUP_TOOLCHAIN", setup::EBPF_TOOLCHAIN))?;

    step("unit and CLI tests");
    sh(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "agentd-ebpf",
        "--exclude",
        "agentd-tests",
    ]))?;

    if unprivileged {
        println!("skipping the root integration tests (--unprivileged)");
        return Ok(());
    }
    step("integration tests (root, real kernel features)");
    let mut cmd = if is_root() {
        cargo()
    } else {
        println!("not root: running the integration tests with sudo -E");
        let mut c = Command::new("sudo");
        c.args(["-E", "--preserve-env=PATH"]);
        c.args([
            "env",
            &format!("RUSTUP_TOOLCHAIN={}", setup::USER_TOOLCHAIN),
            "cargo",
        ]);
        c
    };
    // In parallel on purpose: concurrent sessions are part of what is tested.
    cmd.args(["test", "--package", "agentd-tests"]);
    sh(&mut cmd)
}

/// Every member's Cargo.toml must contain `[lints] workspace = true`.
fn check_lints_opt_in() -> Result<()> {
    let mut missing = Vec::new();
    for member in ["agentd", "agentd-common", "agentd-ebpf", "tests", "xtask"] {
        let manifest = root().join(member).join("Cargo.toml");
        let text = fs::read_to_string(&manifest)?;
        if !text.contains("[lints]\nworkspace = true") {
            missing.push(member);
        }
    }
    if !missing.is_empty() {
        bail!(
            "add `[lints]\\nworkspace = true` to: {}",
            missing.join(", ")
        );
    }
    println!("ok");
    Ok(())
}
