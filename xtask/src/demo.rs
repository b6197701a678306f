//! `cargo xtask demo`: agentd at work on policies/demo.toml.
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
    let dir = std::env::temp_dir().join(format!("agentd-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("workspace"))?;
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[agent]\nname = \"demo\"\n[filesystem]\nreed = [\"/usr\"]\n",
    )?;
    let status = Command::new(&agentd)
        .args(["policy", "check", &bad.to_string_lossy()])
        .status()?;
    println!(
        "(exit status {}: invalid policy)",
        status.code().unwrap_or(-1)
    );

    step("agentd doctor: can this host enforce sessions?");
    let status = Command::new(&agentd).arg("doctor").status()?;
    println!("(exit status {})", status.code().unwrap_or(-1));

    step("agentd run --policy policies/demo.toml -- python3 agent.py");
    let workspace = dir.join("workspace");
    std::fs::copy(
        root().join("xtask/demo/agent.py"),
        workspace.join("agent.py"),
    )?;
    let status = Command::new(&agentd)
        .args(["run", "--policy", &policy, "--workspace"])
        .arg(&workspace)
        .args(["--", "/usr/bin/python3", "agent.py"])
        .env(
            "DEMO_CALLER_TOKEN",
            "the caller's secret, not for the agent",
        )
        .status()?;
    println!("(agent exit status {})", status.code().unwrap_or(-1));
    sh(Command::new("ls").arg("-ln").arg(&workspace))?;
    println!("(notes.md, written by the agent, belongs to the caller, not to the session's UID)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
