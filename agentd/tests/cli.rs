//! The `agentd` binary as a user runs it: exit codes, output, golden error
//! messages, and every shipped policy. Unprivileged.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const AGENTD: &str = env!("CARGO_BIN_EXE_agentd");

fn agentd(args: &[&str]) -> Output {
    Command::new(AGENTD)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run agentd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// `agentd policy check` output for each `tests/golden/*.toml` equals the
/// `.out` file next to it. `UPDATE_GOLDEN=1` rewrites the `.out` files.
#[test]
fn golden_policy_check_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "golden files present");
    let mut mismatches = Vec::new();
    for file in files {
        let rel = format!(
            "tests/golden/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let out = agentd(&["policy", "check", &rel]);
        let actual = format!(
            "exit: {}\n{}",
            out.status.code().unwrap_or(-1),
            stdout(&out)
        );
        let expected_path = file.with_extension("out");
        if update {
            fs::write(&expected_path, &actual).expect("write golden");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            mismatches.push(format!(
                "{rel}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn check_exit_codes() {
    let ok = agentd(&["policy", "check", "tests/golden/valid.toml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("tests/golden/valid.toml: ok (0 warnings, sha256:"));

    let warn = agentd(&["policy", "check", "tests/golden/warnings.toml"]);
    assert_eq!(
        warn.status.code(),
        Some(0),
        "warnings alone keep a policy valid"
    );

    let bad = agentd(&[
        "policy",
        "check",
        "tests/golden/valid.toml",
        "tests/golden/unknown-key.toml",
    ]);
    assert_eq!(bad.status.code(), Some(1), "one invalid file fails the run");

    let missing = agentd(&["policy", "check", "tests/golden/does-not-exist.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("cannot read the file"),
        "{}",
        stderr(&missing)
    );

    let usage = agentd(&["policy", "check"]);
    assert_eq!(usage.status.code(), Some(2), "no file is a usage error");
    let usage = agentd(&["policy", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = agentd(&["no-such-command"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn check_json_reports_each_file() {
    let out = agentd(&[
        "policy",
        "check",
        "--json",
        "tests/golden/valid.toml",
        "tests/golden/bad-values.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let files = v.as_array().expect("array");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["valid"], true);
    assert_eq!(files[0]["errors"], 0);
    assert!(
        files[0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(files[1]["valid"], false);
    let diags = files[1]["diagnostics"].as_array().expect("diagnostics");
    assert!(
        diags.len() >= 15,
        "all errors are reported, not just the first: {}",
        diags.len()
    );
    let first = &diags[0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 8);
    assert_eq!(first["message"], "invalid agent name \"Golden\"");
}

#[test]
fn explain_lists_what_the_policy_grants() {
    let out = agentd(&["policy", "explain", "../policies/coding-agent.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "agent         coder",
        "owner         platform-team",
        "trust         write-restricted",
        "review by     2027-05-01",
        "read-write    {workspace}",
        ".git/hooks (in each git repository present at start, and of its submodules)",
        "missing at start: cannot be created (open, mkdir, rename, link, symlink)",
        "need approval *:22",
        "api.anthropic.com:443",
        "169.254.0.0/16",
        "max_processes 512",
        "ANTHROPIC_API_KEY (from /etc/agentd/secrets/anthropic)",
        "policy        sha256:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn explain_json_and_invalid_input() {
    let out = agentd(&["policy", "explain", "--json", "../policies/mcp-server.toml"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["identity"]["agent"], "docs-mcp");
    assert_eq!(v["identity"]["trust"], "read-only");
    assert_eq!(v["network"]["allow"][0], "api.example.com:443/tcp");
    assert_eq!(v["environment"]["secrets"][0]["name"], "DOCS_API_TOKEN");
    assert_eq!(v["syscalls"]["profile"], "strict");

    let bad = agentd(&["policy", "explain", "tests/golden/bad-values.toml"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("is not a valid policy"));
    assert!(
        stdout(&bad).is_empty(),
        "no inventory for an invalid policy"
    );
}

#[test]
fn every_shipped_policy_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("policies/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        n += 1;
        let p = path.to_string_lossy().into_owned();
        let out = agentd(&["policy", "check", &p]);
        assert_eq!(out.status.code(), Some(0), "{p}:\n{}", stdout(&out));
        assert!(!stdout(&out).contains("error:"), "{p}:\n{}", stdout(&out));
        let out = agentd(&["policy", "explain", &p]);
        assert_eq!(out.status.code(), Some(0), "{p}");
    }
    assert!(
        n >= 5,
        "coding agent, MCP server, CI runner, reviewer, demo"
    );
}

#[test]
fn doctor_reports_every_feature_and_exits_by_readiness() {
    let out = agentd(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ready = v["ready"].as_bool().expect("ready");
    assert_eq!(out.status.code(), Some(if ready { 0 } else { 1 }));
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for name in [
        "privileges",
        "landlock",
        "seccomp",
        "seccomp-notify",
        "bpf-lsm",
        "btf",
        "cgroup2",
        "cgroup-kill",
        "limits",
        "bpffs",
        "ebpf",
        "ping-sockets",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for c in v["checks"].as_array().expect("checks") {
        if c["status"] == "missing" {
            assert!(
                c["disables"].as_str().is_some(),
                "a missing feature names what it disables: {c}"
            );
            assert!(c["fix"].as_str().is_some(), "and what to do: {c}");
        }
    }
    let human = agentd(&["doctor"]);
    assert_eq!(human.status.code(), out.status.code());
    assert!(stdout(&human).contains("verdict"));
    assert!(stdout(&human).contains("landlock"));
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let out = agentd(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("policy"));
    let out = agentd(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with(".ie") || stdout(&out).contains(".TH agentd"));
}
