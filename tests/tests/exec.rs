//! The exec allowlist: only the programs `[exec] allow` names run, as the
//! files they were at session start (Landlock's execute right on those
//! inodes); copies, hard links to other programs and anonymous memory do
//! not. Refusals are audited.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{fs, os::unix::fs::PermissionsExt as _};

use agentd_tests::{
    Bins, Feature, Sandbox, field, require, require_sessions, test_policy, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

fn sandbox(extra_allow: &str) -> Sandbox {
    let probe = BINS.probe;
    Sandbox::new(&test_policy(
        &BINS,
        "",
        &format!("[exec]\nallow = [\"{probe}\"{extra_allow}]\n"),
    ))
}

fn eacces() -> Result<(), String> {
    Err("EACCES".to_owned())
}

#[test]
fn only_allowed_programs_run() {
    require!(
        Feature::Root,
        Feature::Landlock,
        Feature::Seccomp,
        Feature::Cgroup2
    );
    let sb = sandbox(", \"/usr/bin/true\"");
    let ws = sb.workspace();
    // Allowed: the probe itself, and /usr/bin/true.
    assert_eq!(
        sb.probe(&BINS, &["exec", BINS.probe, "echo-args", "again"])
            .verdict(),
        Ok(())
    );
    assert_eq!(sb.probe(&BINS, &["exec", "/usr/bin/true"]).status, 0);
    // Not allowed although /usr/bin is an execute path.
    assert_eq!(
        sb.probe(&BINS, &["exec", "/usr/bin/id"]).verdict(),
        eacces()
    );
    // A copy of an allowed program is another file.
    fs::copy("/usr/bin/true", ws.join("true-copy")).unwrap();
    fs::set_permissions(ws.join("true-copy"), fs::Permissions::from_mode(0o755)).unwrap();
    let copy = ws.join("true-copy");
    assert_eq!(
        sb.probe(&BINS, &["exec", copy.to_str().unwrap()]).verdict(),
        eacces()
    );
    // A hard link to a program that is not allowed stays that program.
    let link = ws.join("true-link");
    fs::hard_link("/usr/bin/id", &link).unwrap();
    assert_eq!(
        sb.probe(&BINS, &["exec", link.to_str().unwrap()]).verdict(),
        eacces()
    );
    // The dynamic loader, granted execute for the programs that need it,
    // would run any readable program: run as a program, it is killed.
    let loader = agentd::sandbox::exec::elf_interpreter(std::path::Path::new("/usr/bin/true"))
        .expect("a dynamically linked /usr/bin/true");
    let loader = loader.to_str().unwrap();
    let run = sb.probe(&BINS, &["exec", loader, "/usr/bin/id"]);
    assert_eq!(run.status, 128 + libc::SIGKILL, "{run:?}");
    assert!(!run.stdout.contains("uid="), "{}", run.stdout);
    // Anonymous memory (memfd_create + fexecve) has no inode Landlock
    // checks; the session's process is killed before the program runs.
    let memfd = sb.probe(&BINS, &["memfd-exec", "/usr/bin/true"]);
    assert_eq!(memfd.status, 128 + libc::SIGKILL, "{memfd:?}");
    let id = memfd.session_id().unwrap();
    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "exec"
    })
    .expect("deny");
    assert!(
        field(&deny, "reason").contains("anonymous memory"),
        "{deny:?}"
    );
    // The agent's own program must be allowed too.
    let run = sb.run(&BINS, &["/usr/bin/id"]);
    assert_eq!(run.status, 126, "{}", run.stderr);
}

#[test]
fn workspace_tree_entries_allow_files_created_during_the_session() {
    require!(
        Feature::Root,
        Feature::Landlock,
        Feature::Seccomp,
        Feature::Cgroup2
    );
    let sb = sandbox(", \"{workspace}/**\"");
    let tool = sb.workspace().join("built-tool");
    assert_eq!(
        sb.probe(&BINS, &["write", tool.to_str().unwrap()])
            .verdict(),
        Ok(())
    );
    fs::copy(BINS.probe, &tool).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        sb.probe(
            &BINS,
            &["exec", tool.to_str().unwrap(), "echo-args", "built"]
        )
        .verdict(),
        Ok(())
    );
}

#[test]
fn refused_execs_and_process_events_are_audited() {
    require_sessions!();
    let sb = sandbox("");
    let mut cmd = sb.command(&BINS, &[BINS.probe, "grandchild", "exec", "/usr/bin/id"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let supervisor = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = agentd_tests::session_id_from(&stderr).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "errno EACCES");

    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "exec"
    })
    .expect("deny");
    assert_eq!(field(&deny, "path"), "/usr/bin/id");
    assert_eq!(deny["errno"], 13);

    // The agent's own exec: its parent is the supervisor.
    let root = wait_record(&id, |r| {
        field(r, "kind") == "exec" && r["ppid"] == supervisor
    })
    .expect("root exec");
    assert_eq!(field(&root, "path"), BINS.probe);
    let root_pid = root["pid"].as_u64().unwrap();
    let root_exec = field(&root, "exec_id").to_owned();
    assert!(
        root_exec.starts_with(&format!("{root_pid}-")),
        "{root_exec}"
    );
    let argv: Vec<&str> = root["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(argv, [BINS.probe, "grandchild", "exec", "/usr/bin/id"]);
    // Its child (fork) and grandchild (fork, then exec of the probe). The
    // setup child's own forks (the session's unix socket broker) come
    // before its exec and have no parent exec.
    let child = wait_record(&id, |r| {
        field(r, "kind") == "fork"
            && r["ppid"] == root_pid
            && !field(r, "parent_exec_id").is_empty()
    })
    .expect("fork");
    assert_eq!(field(&child, "parent_exec_id"), root_exec);
    let child_pid = child["pid"].as_u64().unwrap();
    let grandchild = wait_record(&id, |r| {
        field(r, "kind") == "exec" && r["ppid"] == child_pid
    })
    .expect("grandchild exec");
    assert_eq!(
        field(&grandchild, "parent_exec_id"),
        field(&child, "exec_id")
    );
    let exit =
        wait_record(&id, |r| field(r, "kind") == "exit" && r["pid"] == root_pid).expect("exit");
    assert_eq!(exit["status"]["code"], 1);
    let rule = field(&root, "rule");
    assert_eq!(rule, BINS.probe, "the exec.allow entry that admitted it");
}

/// A session whose `[exec]` has argument rules: the probe and the given
/// entries.
fn gated(allow: &str, ask: &str) -> Sandbox {
    let probe = BINS.probe;
    Sandbox::new(&test_policy(
        &BINS,
        "",
        &format!("[exec]\nallow = [\"{probe}\", {allow}]\nask = [{ask}]\n"),
    ))
}

/// Argument rules are enforced: `echo safe*` lets `echo safe` run and
/// refuses `echo evil` (EACCES, recorded); an `ask` entry comes before the
/// `allow` entry that also matches, and is refused until approvals exist.
#[test]
fn argument_rules_decide_which_commands_run() {
    require_sessions!();
    let sb = gated(
        "\"/usr/bin/echo safe*\", \"/usr/bin/id\"",
        "\"/usr/bin/id -g*\"",
    );
    let run = sb.run(&BINS, &["/usr/bin/echo", "safe", "words"]);
    assert_eq!(
        (run.status, run.stdout.as_str()),
        (0, "safe words\n"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sb.probe(&BINS, &["exec", "/usr/bin/echo", "evil"])
            .verdict(),
        eacces()
    );
    let refused = sb.probe(&BINS, &["exec", "/usr/bin/echo", "evil"]);
    let id = refused.session_id().unwrap();
    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "exec"
    })
    .expect("a deny record");
    assert_eq!(field(&deny, "rule"), "exec.allow", "{deny:?}");
    assert_eq!(deny["argv"], serde_json::json!(["/usr/bin/echo", "evil"]));
    // ask before allow.
    assert_eq!(sb.run(&BINS, &["/usr/bin/id", "-u"]).status, 0);
    let asked = sb.probe(&BINS, &["exec", "/usr/bin/id", "-g"]);
    assert_eq!(asked.verdict(), eacces());
    let deny = wait_record(&asked.session_id().unwrap(), |r| {
        field(r, "kind") == "deny" && field(r, "what") == "exec"
    })
    .expect("a deny record");
    assert_eq!(field(&deny, "rule"), "/usr/bin/id -g*", "{deny:?}");
    // A program an argument rule names is held to more than its
    // arguments: its own name as argv[0] (git takes `git-push` as the
    // subcommand), no line break in an argument, no injected code.
    for (argv0, env, args) in [
        ("echo-evil", "-", vec!["safe"]),
        ("echo", "-", vec!["safe\nevil"]),
        ("echo", "LD_PRELOAD=/nonexistent.so", vec!["safe"]),
        ("echo", "GIT_CONFIG_COUNT=1", vec!["safe"]),
    ] {
        let mut action = vec!["exec-as", "/usr/bin/echo", argv0, env];
        action.extend(args);
        assert_eq!(sb.probe(&BINS, &action).verdict(), eacces(), "{action:?}");
    }
    let run = sb.probe(
        &BINS,
        &[
            "exec-as",
            "/usr/bin/echo",
            "/usr/bin/echo",
            "LANG=C",
            "safe",
            "ok",
        ],
    );
    assert_eq!(
        (run.status, run.stdout.as_str()),
        (0, "safe ok\n"),
        "{}",
        run.stderr
    );
    // A program no entry names stays refused.
    assert_eq!(
        sb.probe(&BINS, &["exec", "/usr/bin/true"]).verdict(),
        eacces()
    );
}

/// The decision binds what runs: a thread rewriting argv (or the path)
/// while another execs never gets a command the rules refuse to run; the
/// kernel kills the exec before its first instruction instead.
#[test]
fn a_thread_rewriting_argv_or_the_path_during_exec_never_runs_a_refused_command() {
    require_sessions!();
    let sb = gated("\"/usr/bin/echo safe*\", \"/usr/bin/true\"", "");
    for what in ["argv", "path"] {
        let run = sb.probe(&BINS, &["exec-race", "300", what]);
        assert_eq!(run.verdict(), Ok(()), "{what}: {}", run.stderr);
        assert!(
            !run.stdout.contains("evil"),
            "{what}: a refused command ran: {}",
            run.stdout
        );
        let counts = race_counts(&run, what);
        // The race is real: some execs were refused or killed.
        assert!(!counts.contains("refused=0 killed=0"), "{what}: {counts}");
    }
}

/// The `ran= refused= killed=` line of an `exec-race` run, named.
fn race_counts(run: &agentd_tests::Finished, what: &str) -> String {
    let counts = run
        .stderr
        .lines()
        .find(|l| l.starts_with("ran="))
        .unwrap_or_default();
    format!("{what}: {counts}")
}

/// The environment is bound too: a thread rewriting an environment
/// variable during an exec gets the exec killed, never run with a value
/// other than the one checked (the checked one is what the record shows).
#[test]
fn the_environment_is_bound_to_the_checked_exec() {
    require_sessions!();
    // An argument rule puts the session behind the gate.
    let sb = gated("\"/usr/bin/env\", \"/usr/bin/echo safe*\"", "");
    let run = sb.probe(&BINS, &["exec-race", "300", "env"]);
    assert_eq!(run.verdict(), Ok(()), "{}", run.stderr);
    let counts = race_counts(&run, "env");
    assert!(!counts.contains("killed=0"), "no exec was killed: {counts}");
}

/// A `#!` script runs its interpreter with the line's argument: the rules
/// must allow that command too (`#!/usr/bin/echo evil` in an allowed
/// script does not make `echo evil` allowed).
#[test]
fn scripts_are_checked_as_the_command_their_interpreter_runs() {
    require_sessions!();
    let sb = gated("\"/usr/bin/echo safe*\", \"{workspace}/*\"", "");
    let ws = sb.workspace();
    for (name, line) in [
        ("evil.sh", "#!/usr/bin/echo evil\n"),
        ("safe.sh", "#!/usr/bin/echo safe\n"),
    ] {
        fs::write(ws.join(name), line).unwrap();
        fs::set_permissions(ws.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let evil = ws.join("evil.sh").display().to_string();
    let safe = ws.join("safe.sh").display().to_string();
    assert_eq!(sb.probe(&BINS, &["exec", &evil]).verdict(), eacces());
    let run = sb.run(&BINS, &[&safe]);
    assert_eq!(
        (run.status, run.stdout.trim()),
        (0, format!("safe {safe}").as_str()),
        "{}",
        run.stderr
    );
}
