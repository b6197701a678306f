//! What `cargo xtask install` puts on a host: the systemd unit passes
//! `systemd-analyze verify` (with the binary and man page it refers to in
//! place), and the shipped configuration is the default one.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{fs, path::Path, process::Command};

const AGENTD: &str = env!("CARGO_BIN_EXE_agentd-under-test");
const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agentd/dist");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !agentd_tests::strict(),
            "systemd-analyze is missing (cargo xtask setup installs systemd)"
        );
        println!("SKIP the_unit_passes_systemd_analyze_verify: systemd-analyze is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, pointing at this build instead of
    // /usr/local/bin (verify checks that the binary exists).
    let unit = fs::read_to_string(Path::new(DIST).join("agentd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/agentd daemon"));
    let path = dir.path().join("agentd.service");
    fs::write(&path, unit.replace("/usr/local/bin/agentd", AGENTD)).unwrap();
    // ...and its Documentation= man page where `man` finds it.
    let man1 = dir.path().join("man/man1");
    fs::create_dir_all(&man1).unwrap();
    let page = Command::new(AGENTD).arg("man").output().unwrap();
    fs::write(man1.join("agentd.1"), page.stdout).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("agentd.service"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn the_shipped_config_is_the_default() {
    let text = fs::read_to_string(Path::new(DIST).join("agentd.toml")).unwrap();
    let parsed = agentd::daemon::config::parse(&text)
        .unwrap_or_else(|e| panic!("{}", e.render("agentd.toml")));
    assert_eq!(parsed, agentd::daemon::config::Config::default());
}

/// The README's first commands work where rustup installs nothing on
/// demand (`RUSTUP_AUTO_INSTALL=0`): its block installs the pinned
/// toolchain before the first cargo command, and with that done cargo
/// runs in the repository without installing anything.
#[test]
fn the_readme_works_where_rustup_installs_nothing_on_demand() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let block: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block in the README")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    let install = block
        .iter()
        .position(|l| *l == "rustup toolchain install")
        .unwrap_or_else(|| panic!("no `rustup toolchain install` in {block:?}"));
    let first_cargo = block
        .iter()
        .position(|l| l.starts_with("cargo "))
        .expect("a cargo command");
    assert!(install < first_cargo, "{block:?}");
    if Command::new("rustup").arg("--version").output().is_err() {
        assert!(!agentd_tests::strict(), "rustup is missing");
        println!("SKIP the_readme_works_where_rustup_installs_nothing_on_demand: no rustup");
        return;
    }
    // As a new user runs them: in the clone, with the toolchain cargo
    // chose for this test out of the environment.
    let run = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(&root)
            .env("RUSTUP_AUTO_INSTALL", "0")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .output()
            .unwrap()
    };
    let installed = run(&["rustup", "toolchain", "install"]);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let cargo = run(&["cargo", "--version"]);
    assert!(
        cargo.status.success(),
        "{}",
        String::from_utf8_lossy(&cargo.stderr)
    );
}
