//! Developer tasks: `cargo xtask setup | build | test | demo`.
//!
//! Each task installs what it needs first (`setup` is idempotent and takes
//! seconds when everything is present), so a fresh machine needs nothing
//! but rustup and this repository.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask reports progress"
)]

mod bench;
mod demo;
mod install;
mod setup;
mod test;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "agentd developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: apt packages, the pinned
    /// toolchains, bpf-linker.
    Setup,
    /// Build agentd (with its embedded eBPF programs).
    Build {
        /// Build the release binary.
        #[arg(long)]
        release: bool,
    },
    /// Run every check: fmt, clippy, unit tests, CLI tests, and the root
    /// integration tests against the real kernel.
    Test {
        /// Skip the integration tests that need root.
        #[arg(long)]
        unprivileged: bool,
    },
    /// Build agentd and show it at work on policies/demo.toml.
    Demo,
    /// Install the release binary, systemd unit, tmpfiles/sysusers
    /// snippets, man page and default config (as root).
    Install {
        /// Stage under this directory instead of /.
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
    },
    /// Measure launch time, syscall overhead and kill latency side by side
    /// with bare execution, bubblewrap and firejail; writes docs/benchmarks.md.
    Bench,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|_| ()),
        Task::Build { release } => setup::run().and_then(|_| build(release).map(|_| ())),
        Task::Test { unprivileged } => test::run(unprivileged),
        Task::Demo => demo::run(),
        Task::Bench => bench::run(),
        Task::Install { dest } => install::run(dest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Prints a step heading.
fn step(what: &str) {
    println!("\n\x1b[1m==> {what}\x1b[0m");
}

/// Runs `cmd` in the workspace root with inherited stdio; fails unless it
/// exits 0.
fn sh(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(root());
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A `cargo` command on the workspace's pinned toolchain. RUSTUP_TOOLCHAIN
/// is set explicitly: cargo runs rustc from each package's directory, where
/// rust-toolchain.toml does not apply.
fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.env("RUSTUP_TOOLCHAIN", setup::USER_TOOLCHAIN);
    cmd
}

/// Builds agentd; returns the binary's path.
fn build(release: bool) -> Result<PathBuf> {
    step(if release {
        "build agentd (release)"
    } else {
        "build agentd"
    });
    let mut cmd = cargo();
    cmd.args(["build", "--package", "agentd", "--bin", "agentd"]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    let bin = root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("agentd");
    Ok(bin)
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // The effective uid is the second field of the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
