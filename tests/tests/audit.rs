//! The audit trail: every session's records are chained, secrets never
//! reach it (nor `agentd logs`, nor agentd's own logs), and tampering is
//! found at the right line.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{fs, os::unix::fs::PermissionsExt as _, process::Command};

use agentd_tests::{
    AUDIT_LOG, Bins, Sandbox, field, finish, require_sessions, test_policy, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    use std::io::Read as _;
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn secrets_never_reach_the_trail_or_the_logs() {
    require_sessions!();
    let secret = format!("sekrit-{}", random_hex());
    let caller_value = format!("callerval-{}", random_hex());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let secret_file = dir.path().join("token");
    fs::write(&secret_file, format!("{secret}\n")).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    let policy = test_policy(
        &BINS,
        "",
        &format!(
            "[env]\npass = [\"CALLER_VALUE\"]\n\n[secrets]\nTOKEN_X = {{ file = \"{}\" }}\n\n[audit]\nfile_events = \"all\"\n",
            secret_file.display()
        ),
    );
    let sb = Sandbox::new(&policy);
    let run = finish({
        let mut c = sb.command(&BINS, &[BINS.probe, "echo-args", &secret, &caller_value]);
        c.env("CALLER_VALUE", &caller_value)
            .env("AGENTD_LOG", "agentd=debug");
        c
    });
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&secret),
        "the agent itself received the values"
    );
    let id = run.session_id().unwrap();
    let exec = wait_record(&id, |r| field(r, "kind") == "exec").expect("exec record");
    let argv: Vec<&str> = exec["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(argv, [BINS.probe, "echo-args", "[REDACTED]", "[REDACTED]"]);
    wait_record(&id, |r| field(r, "kind") == "session_end").expect("session end");

    let trail = fs::read_to_string(AUDIT_LOG).unwrap();
    for value in [&secret, &caller_value] {
        assert!(
            !trail.contains(value.as_str()),
            "{value} in the audit trail"
        );
        assert!(
            !run.stderr.contains(value.as_str()),
            "{value} in agentd's own logs"
        );
        for args in [
            vec!["logs", "--session", &id],
            vec!["logs", "--session", &id, "--json"],
        ] {
            let out = finish({
                let mut c = Command::new(BINS.agentd);
                c.args(&args);
                c
            });
            assert_eq!(out.status, 0, "{}", out.stderr);
            assert!(out.stdout.contains("session_start"), "{}", out.stdout);
            assert!(
                !out.stdout.contains(value.as_str()),
                "{value} in agentd {args:?}"
            );
        }
    }
}

#[test]
fn logs_show_a_session_and_verify_finds_tampering() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[audit]\nfile_events = \"writes\"\n",
    ));
    let target = sb.workspace().join("written.txt");
    let run = sb.probe(&BINS, &["write", target.to_str().unwrap()]);
    assert_eq!(run.verdict(), Ok(()));
    let id = run.session_id().unwrap();
    let file = wait_record(&id, |r| field(r, "kind") == "file").expect("file record");
    assert_eq!(field(&file, "access"), "create");
    assert!(field(&file, "path").ends_with("written.txt"));
    wait_record(&id, |r| field(r, "kind") == "session_end").expect("session end");

    let human = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["logs", "--session", &id]);
        c
    });
    let kinds: Vec<&str> = human
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    for kind in ["session_start", "exec", "file", "exit", "session_end"] {
        assert!(
            kinds.contains(&kind),
            "{kind} missing from:\n{}",
            human.stdout
        );
    }
    assert!(
        human
            .stdout
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some(id.as_str()))
    );

    // Work on a copy: the live trail keeps growing.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("audit.jsonl");
    // Complete records only: another test may be appending right now.
    let lines: Vec<String> = fs::read_to_string(AUDIT_LOG)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 4);
    let verify = |content: &[String]| {
        fs::write(&copy, content.join("\n") + "\n").unwrap();
        finish({
            let mut c = Command::new(BINS.agentd);
            c.args(["audit", "verify", copy.to_str().unwrap()]);
            c
        })
    };
    let ok = verify(&lines);
    assert_eq!(ok.status, 0, "{}", ok.stdout);
    assert!(ok.stdout.contains("hash chain intact"));

    let n = lines.len() / 2;
    let mut modified = lines.clone();
    modified[n] =
        modified[n]
            .replacen("\"pid\":", "\"pid\":1", 1)
            .replacen("\"uid\":", "\"uid\":1", 1);
    if modified[n] == lines[n] {
        modified[n] = modified[n].replacen("\"kind\":\"", "\"kind\":\"x", 1);
    }
    // Each tampering breaks the chain at line n + 1, for the reason given.
    let breaks_at = |content: &[String], why: &str| {
        let out = verify(content);
        assert_eq!(out.status, 1, "{}", out.stdout);
        assert!(
            out.stdout.contains(&format!(":{}: chain broken", n + 1)) && out.stdout.contains(why),
            "expected a break at line {} ({why}): {}",
            n + 1,
            out.stdout
        );
    };
    breaks_at(&modified, "was modified");

    let mut deleted = lines.clone();
    deleted.remove(n);
    breaks_at(&deleted, "missing");

    let mut reordered = lines.clone();
    reordered.swap(n, n + 1);
    breaks_at(&reordered, "");
}

#[test]
fn no_event_vanishes_in_a_storm() {
    require_sessions!();
    // Every open is either a record of the session or counted in a `lost`
    // record (host-wide, so other tests' losses may add to it): the
    // invariant holds whether or not this run overflows the ring buffer.
    const OPENS: u64 = 50_000;
    let sb = Sandbox::new(&test_policy(&BINS, "", "[audit]\nfile_events = \"all\"\n"));
    let target = sb.workspace().join("storm.txt");
    fs::write(&target, "x").unwrap();
    let start = fs::metadata(AUDIT_LOG).map_or(0, |m| m.len());
    let run = sb.probe(
        &BINS,
        &["open-loop", &OPENS.to_string(), target.to_str().unwrap()],
    );
    assert_eq!(run.verdict(), Ok(()), "{}", run.stderr);
    let id = run.session_id().unwrap();
    let target = target.to_str().unwrap().to_owned();
    let count = || {
        let mut file = fs::File::open(AUDIT_LOG).unwrap();
        use std::io::{Read as _, Seek as _};
        file.seek(std::io::SeekFrom::Start(start)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let (mut recorded, mut lost) = (0u64, 0u64);
        for r in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            if r["kind"] == "lost" {
                lost += r["count"].as_u64().unwrap_or(0);
            } else if r["session"] == id.as_str() && r["kind"] == "file" && r["path"] == target {
                recorded += 1;
            }
        }
        (recorded, lost)
    };
    // Another process may still be draining the ring for this session.
    let mut seen = (0, 0);
    for _ in 0..150 {
        seen = count();
        if seen.0 + seen.1 >= OPENS {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (recorded, lost) = seen;
    assert!(
        recorded + lost >= OPENS,
        "{OPENS} opens, {recorded} recorded, {lost} reported lost"
    );
    assert!(recorded <= OPENS, "{recorded} records for {OPENS} opens");
}

/// Files put in the collector's inputs directory, removed on drop.
struct Planted(Vec<std::path::PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn inputs_of_sessions_long_gone_are_pruned() {
    require_sessions!();
    let dir = std::path::Path::new("/run/agentd/audit");
    fs::create_dir_all(dir).unwrap();
    // Ids no cgroup has: an hour-old pair, and a recent one.
    let old = [
        dir.join("18446744073709551000.json"),
        dir.join("18446744073709551000.names"),
    ];
    let recent = dir.join("18446744073709551001.json");
    let planted = Planted(old.iter().chain([&recent]).cloned().collect());
    for p in &planted.0 {
        fs::write(p, b"{}").unwrap();
    }
    for p in &old {
        let touched = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(p)
            .status()
            .unwrap();
        assert!(touched.success());
    }
    // The last pruning was long ago.
    let _ = fs::remove_file(dir.join("pruned"));

    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let run = finish(sb.command(&BINS, &[BINS.probe, "echo-args", "x"]));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        agentd_tests::eventually(std::time::Duration::from_secs(10), || old
            .iter()
            .all(|p| !p.exists())),
        "stale inputs were kept"
    );
    assert!(recent.exists(), "recent inputs must stay (late events)");
    drop(planted);
}

/// A secret's file is read only if root alone could have put it there. The
/// attack: in a directory another user controls, a symlink named in the
/// policy points at a root-only file (another session's audit inputs, a
/// key): following it would hand that file to the agent. Variants: the
/// same file copied there (root's, 0600, but in a directory its owner may
/// swap entries in), and a symlinked directory on the way.
#[test]
fn secret_files_are_read_only_from_directories_only_root_controls() {
    require_sessions!();
    let private = tempfile::tempdir_in("/tmp").unwrap();
    let target = private.path().join("root-only");
    let content = format!("root-only-{}", random_hex());
    fs::write(&target, &content).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    let theirs = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(theirs.path(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
    let token = theirs.path().join("token");
    let linked_dir = theirs.path().join("dir");
    std::os::unix::fs::symlink(private.path(), &linked_dir).unwrap();
    let attempt = |file: &std::path::Path| {
        let policy = test_policy(
            &BINS,
            "",
            &format!("[secrets]\nTOKEN_X = {{ file = \"{}\" }}\n", file.display()),
        );
        Sandbox::new(&policy).run(&BINS, &["/bin/sh", "-c", "echo \"got=$TOKEN_X\""])
    };

    std::os::unix::fs::symlink(&target, &token).unwrap();
    let run = attempt(&token);
    assert_ne!(run.status, 0, "{run:?}");
    assert!(!run.stdout.contains(&content), "{run:?}");
    assert!(run.stderr.contains("must be root's"), "{run:?}");
    // The same symlink in a directory of root's: not followed either.
    let roots = tempfile::tempdir_in("/tmp").unwrap();
    std::os::unix::fs::symlink(&target, roots.path().join("token")).unwrap();
    let run = attempt(&roots.path().join("token"));
    assert_ne!(run.status, 0, "{run:?}");
    assert!(!run.stdout.contains(&content), "{run:?}");
    assert!(run.stderr.contains("symlinks are not followed"), "{run:?}");

    fs::remove_file(&token).unwrap();
    fs::copy(&target, &token).unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let run = attempt(&token);
    assert_ne!(run.status, 0, "{run:?}");
    assert!(!run.stdout.contains(&content), "{run:?}");
    assert!(run.stderr.contains("must be root's"), "{run:?}");

    let run = attempt(&linked_dir.join("root-only"));
    assert_ne!(run.status, 0, "{run:?}");
    assert!(!run.stdout.contains(&content), "{run:?}");

    // The legitimate use: root's file in root's directory.
    let run = attempt(&target);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("got={content}")), "{run:?}");
}

/// An agent's argv and file names reach an administrator's terminal
/// through `agentd logs` and `agentd ps`: escape sequences (erase the line,
/// move the cursor, retitle the window) and newlines that would forge a
/// record or a row arrive escaped.
#[test]
fn terminal_escapes_and_newlines_never_reach_logs_or_ps() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[audit]\nfile_events = \"writes\"\n",
    ));
    let forged = "x\u{1b}[2K\u{1b}[1G2026-01-01 FAKE allow\u{1b}]0;TITLE\u{7}";
    let row = "arg\nFAKE-ROW 1 2 3";
    // A file named with colour escapes, then a pause for `ps`.
    let script = "touch \"$TMPDIR/$(printf '\\033[31mred')\"; sleep 2";
    let agentd_tests::Started {
        mut child,
        id,
        stderr: _stderr,
    } = agentd_tests::start(
        sb.command(&BINS, &["/bin/sh", "-c", script, forged, row])
            .stdout(std::process::Stdio::null()),
    );
    let _kill = agentd_tests::KillOnDrop {
        agentd: BINS.agentd,
        id: id.clone(),
    };
    // Listed once it runs.
    let ps = (0..50)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            finish({
                let mut c = Command::new(BINS.agentd);
                c.arg("ps");
                c
            })
        })
        .find(|ps| ps.stdout.contains(&id))
        .expect("the session in ps");
    assert_eq!(ps.status, 0, "{ps:?}");
    assert!(
        !ps.stdout.lines().any(|l| l.starts_with("FAKE-ROW")),
        "{ps:?}"
    );
    assert!(!ps.stdout.contains('\u{1b}'), "{ps:?}");
    assert!(child.wait().unwrap().success());
    wait_record(&id, |r| field(r, "kind") == "session_end").expect("session end");
    let logs = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["logs", "--session", &id]);
        c
    });
    assert_eq!(logs.status, 0, "{logs:?}");
    for bad in ['\u{1b}', '\u{7}'] {
        assert!(!logs.stdout.contains(bad), "{bad:?} in {}", logs.stdout);
    }
    assert!(
        logs.stdout.contains("\\e[2K\\e[1G2026-01-01 FAKE"),
        "the argv is shown, escaped: {}",
        logs.stdout
    );
    assert!(logs.stdout.contains("\\e[31mred"), "{}", logs.stdout);
    assert!(
        !logs.stdout.lines().any(|l| l.starts_with("FAKE-ROW")),
        "{}",
        logs.stdout
    );
}
