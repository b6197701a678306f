//! `cargo xtask demo`: what agentd does today, on policies/demo.toml.
use std::process::Command;

use anyhow::Result;

use super::{build, root, setup, sh, step};

pub fn run() -> Result<()> {
    setup::run()?;
    let agentd = build(false)?;
    let policy = root().join("policies/demo.toml");
    let policy = policy.to_string_lossy();

    step("agentd policy check policies/demo.toml");
    sh(Command::new(&agentd).args(["policy", "check", &policy]))?;

    step("agentd policy explain policies/demo.toml");
    sh(Command::new(&agentd).args(["policy", "explain", &policy]))?;

    step("a policy with mistakes is refused, with file:line:col and a hint");
    let bad = std::env::temp_dir().join(format!("agentd-demo-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "version = 1\n[agent]\nname = \"demo\"\n[filesystem]\nreed = [\"/usr\"]\n",
    )?;
    let status = Command::new(&agentd)
        .args(["policy", "check", &bad.to_string_lossy()])
        .status()?;
    let _ = std::fs::remove_file(&bad);
    println!(
        "(exit status {}: invalid policy)",
        status.code().unwrap_or(-1)
    );

    step("agentd doctor: can this host enforce sessions? (loads the eBPF programs)");
    let status = Command::new(&agentd).arg("doctor").status()?;
    println!("(exit status {})", status.code().unwrap_or(-1));
    Ok(())
}
