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
    let mut child = Command::new(&agentd)
        .args(["run", "--policy", &policy, "--workspace"])
        .arg(&workspace)
        .args(["--", "/usr/bin/python3", "agent.py"])
        .env(
            "DEMO_CALLER_TOKEN",
            "the caller's secret, not for the agent",
        )
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // agentd's first stderr line names the session; pass everything on.
    let mut session = String::new();
    if let Some(stderr) = child.stderr.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("agentd: session ") {
                session = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            eprintln!("{line}");
        }
    }
    let status = child.wait()?;
    println!("(agent exit status {})", status.code().unwrap_or(-1));
    sh(Command::new("ls").arg("-ln").arg(&workspace))?;
    println!("(notes.md, written by the agent, belongs to the caller, not to the session's UID)");

    step("agentd logs --session: the session's audit trail (hash-chained, secrets redacted)");
    sh(Command::new(&agentd).args(["logs", "--session", &session]))?;
    step("agentd audit verify /var/log/agentd/audit.jsonl");
    sh(Command::new(&agentd).args(["audit", "verify", "/var/log/agentd/audit.jsonl"]))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
