//! `cargo xtask setup`: idempotent installation of everything the build,
//! the tests and the benchmarks need.
use std::{process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use super::{is_root, step};

/// The nightly that builds the eBPF programs (LLVM 22, which bpf-linker 0.13
/// reads; newer nightlies emit LLVM 23 bitcode it cannot).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-06-15";
/// The userspace toolchain (also pinned in rust-toolchain.toml).
pub const USER_TOOLCHAIN: &str = "1.98.0";
/// bpf-linker, built against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: LLVM 22 for bpf-linker, libseccomp, iproute2 for the
/// network tests, the peers the benchmarks compare against, and systemd
/// and man-db for checking the unit (setpriv and nsenter come with
/// util-linux).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libseccomp-dev",
    "pkg-config",
    "iproute2",
    "git",
    "python3",
    "bubblewrap",
    "firejail",
    "hyperfine",
    "systemd",
    "man-db",
    "util-linux",
];

/// What setup did.
#[derive(Debug, Default)]
pub struct Report {
    /// Components installed by this run.
    pub installed: Vec<String>,
}

pub fn run() -> Result<Report> {
    step("setup");
    let start = Instant::now();
    let mut report = Report::default();
    apt(&mut report)?;
    toolchains(&mut report)?;
    bpf_linker(&mut report)?;
    let elapsed = start.elapsed();
    if report.installed.is_empty() {
        println!(
            "setup: everything is present ({:.1}s)",
            elapsed.as_secs_f64()
        );
    } else {
        println!(
            "setup: installed {} ({:.1}s)",
            report.installed.join(", "),
            elapsed.as_secs_f64()
        );
    }
    Ok(report)
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn apt(report: &mut Report) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("apt packages: ok");
        return Ok(());
    }
    println!("apt packages: installing {}", missing.join(" "));
    let sudo = |args: &[&str]| -> Command {
        if is_root() {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        } else {
            let mut c = Command::new("sudo");
            c.args(args);
            c
        }
    };
    let status = sudo(&["apt-get", "update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get (Debian/Ubuntu hosts only)")?;
    if !status.success() {
        bail!("apt-get update failed; check the network and /etc/apt/sources.list");
    }
    let mut install = sudo(&["apt-get", "install", "-y", "-q", "--no-install-recommends"]);
    install
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = install.status().context("cannot run apt-get install")?;
    if !status.success() {
        bail!(
            "apt-get install {} failed; llvm-22-dev comes from bookworm-security or apt.llvm.org",
            missing.join(" ")
        );
    }
    report.installed.push(format!("apt: {}", missing.join(" ")));
    Ok(())
}

fn toolchains(report: &mut Report) -> Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required: install it from https://rustup.rs")?;
    for (toolchain, components) in [
        (USER_TOOLCHAIN, &["rustfmt", "clippy"][..]),
        (EBPF_TOOLCHAIN, &["rust-src", "clippy"][..]),
    ] {
        let present = installed.lines().any(|l| l.starts_with(toolchain));
        let have = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            toolchain,
        ]))
        .unwrap_or_default();
        let lacking: Vec<&str> = components
            .iter()
            .copied()
            .filter(|c| !have.lines().any(|l| l.starts_with(c)))
            .collect();
        if present && lacking.is_empty() {
            println!("toolchain {toolchain}: ok");
            continue;
        }
        println!("toolchain {toolchain}: installing");
        let mut cmd = Command::new("rustup");
        cmd.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
        for c in components {
            cmd.args(["--component", c]);
        }
        let status = cmd.status().context("cannot run rustup")?;
        if !status.success() {
            bail!("rustup toolchain install {toolchain} failed");
        }
        report.installed.push(format!("toolchain {toolchain}"));
    }
    Ok(())
}

fn bpf_linker(report: &mut Report) -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.trim() == format!("bpf-linker {BPF_LINKER_VERSION}") {
        println!("bpf-linker {BPF_LINKER_VERSION}: ok");
        return Ok(());
    }
    println!("bpf-linker {BPF_LINKER_VERSION}: installing (against {LLVM_PREFIX})");
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("RUSTUP_TOOLCHAIN", USER_TOOLCHAIN)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!(
            "cargo install bpf-linker failed; is llvm-22-dev installed? (cargo xtask setup installs it)"
        );
    }
    report
        .installed
        .push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}
