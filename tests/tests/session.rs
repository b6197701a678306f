//! Sessions under attack: each guarantee of SPEC.md 1, 2, 3, 6, 7 and 8 is
//! tried from inside a real session (a real user, real Landlock, seccomp,
//! cgroups and mounts), the forbidden thing must fail with the right errno,
//! and the allowed thing must work. Every test checks that the session left
//! nothing behind.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Stdio,
    time::Duration,
};

use agentd_tests::{
    Bins, Feature, Sandbox, assert_session_gone, eventually, process_gone, require, test_policy,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

macro_rules! require_sessions {
    () => {
        require!(
            Feature::Root,
            Feature::Landlock,
            Feature::Seccomp,
            Feature::Cgroup2,
            Feature::Limits
        );
    };
}

fn sandbox() -> Sandbox {
    Sandbox::new(&test_policy(
        &BINS,
        "",
        "[limits]\nmax_processes = 64\nmemory = \"256M\"\n",
    ))
}

fn eperm() -> Result<(), String> {
    Err("EPERM".to_owned())
}

#[test]
fn agent_runs_as_an_unprivileged_user_without_capabilities() {
    require_sessions!();
    let sb = sandbox();
    let run = sb.probe(&BINS, &["identity"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let uid: u32 = run.value("uid").unwrap().parse().unwrap();
    assert!((61184..=65519).contains(&uid), "dynamic uid, got {uid}");
    assert_ne!(
        uid,
        nix::unistd::getuid().as_raw(),
        "never the caller's uid"
    );
    for key in ["euid", "suid"] {
        assert_eq!(run.value(key).unwrap(), uid.to_string());
    }
    assert_eq!(run.value("gid").unwrap(), uid.to_string());
    assert_eq!(
        run.value("groups").as_deref(),
        Some(""),
        "no supplementary groups"
    );
    for set in [
        "effective",
        "permitted",
        "inheritable",
        "bounding",
        "ambient",
    ] {
        assert_eq!(
            run.value(&format!("caps_{set}")).as_deref(),
            Some("0"),
            "caps_{set}"
        );
    }
    assert_eq!(run.value("no_new_privs").as_deref(), Some("1"));
    assert_eq!(
        run.value("cwd").map(std::path::PathBuf::from),
        Some(fs::canonicalize(sb.workspace()).unwrap())
    );
    assert_session_gone(&run.session_id().unwrap());
}

#[test]
fn concurrent_sessions_never_share_a_uid() {
    require_sessions!();
    let sb = sandbox();
    let children: Vec<_> = (0..4)
        .map(|_| {
            sb.command(&BINS, &[BINS.probe, "identity"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut uids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix("uid=").map(str::to_owned))
                .unwrap()
        })
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 4, "four concurrent sessions, four UIDs");
}

#[test]
fn setuid_binaries_do_not_elevate() {
    require_sessions!();
    // A setuid-root copy of the probe, in a directory the policy lets run.
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let suid = dir.path().join("suid-probe");
    fs::copy(BINS.probe, &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(fs::metadata(&suid).unwrap().mode() & 0o4000, 0o4000);
    let d = dir.path().display().to_string();
    let sb = Sandbox::new(
        &test_policy(&BINS, "", "").replace("execute = [", &format!("execute = [\"{d}\", ")),
    );
    let run = sb.run(&BINS, &[suid.to_str().unwrap(), "identity"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let uid = run.value("uid").unwrap();
    assert_ne!(uid, "0");
    assert_eq!(
        run.value("euid").unwrap(),
        uid,
        "set-user-ID is ignored (no_new_privs)"
    );
    assert_eq!(run.value("caps_effective").as_deref(), Some("0"));
}

#[test]
fn filesystem_outside_the_policy_is_denied() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    let w = |p: &str| ws.join(p).display().to_string();
    assert_eq!(
        sb.probe(&BINS, &["write", &w("allowed.txt")]).verdict(),
        Ok(())
    );
    assert!(ws.join("allowed.txt").exists());
    assert_eq!(
        sb.probe(&BINS, &["read", "/etc/shadow"]).verdict(),
        Err("EACCES".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["read", "/etc/hostname"]).verdict(),
        Err("EACCES".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["write", "/etc/agentd-escape"]).verdict(),
        Err("EACCES".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["write", "/var/tmp/agentd-escape"])
            .verdict(),
        Err("EACCES".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["write", "/tmp/agentd-escape"]).verdict(),
        Err("EACCES".into())
    );
    assert!(!Path::new("/var/tmp/agentd-escape").exists());
    // Files outside the workspace the agent could reach only by name.
    assert_eq!(
        sb.probe(&BINS, &["truncate", "/etc/hostname"]).verdict(),
        Err("EACCES".into())
    );
}

#[test]
fn links_and_renames_cannot_leave_the_workspace() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    let w = |p: &str| ws.join(p).display().to_string();
    fs::write(ws.join("mine.txt"), "x").unwrap();
    // A symlink to a host file is just a name: following it is still denied.
    assert_eq!(
        sb.probe(&BINS, &["symlink", "/etc/hostname", &w("link")])
            .verdict(),
        Ok(())
    );
    assert_eq!(
        sb.probe(&BINS, &["read", &w("link")]).verdict(),
        Err("EACCES".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["write", &w("link")]).verdict(),
        Err("EACCES".into())
    );
    // Hard links and renames across the workspace boundary.
    assert_eq!(
        sb.probe(&BINS, &["hardlink", "/etc/hostname", &w("h")])
            .verdict(),
        Err("EXDEV".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["rename", &w("mine.txt"), "/var/tmp/stolen"])
            .verdict(),
        Err("EXDEV".into())
    );
    assert_eq!(
        sb.probe(&BINS, &["hardlink", &w("mine.txt"), "/tmp/stolen"])
            .verdict(),
        Err("EXDEV".into())
    );
    assert!(ws.join("mine.txt").exists());
    assert!(!Path::new("/var/tmp/stolen").exists());
}

#[test]
fn dangerous_syscalls_fail_with_eperm() {
    require_sessions!();
    let sb = sandbox();
    for action in [
        &["ptrace-sibling"][..],
        &["unshare", "user"],
        &["unshare", "net"],
        &["unshare", "mount"],
        &["clone-newuser"],
        &["mount"],
        &["bpf"],
        &["io_uring_setup"],
        &["keyctl"],
        &["perf_event_open"],
        &["tiocsti"],
        &["tiocsti-high-bits"],
        &["personality", "0040000"],
    ] {
        assert_eq!(sb.probe(&BINS, action).verdict(), eperm(), "{action:?}");
    }
    assert_eq!(
        sb.probe(&BINS, &["personality", "ffffffff"]).verdict(),
        Ok(()),
        "querying stays possible"
    );
}

#[test]
fn setuid_bits_cannot_be_set_in_the_workspace() {
    require_sessions!();
    let sb = sandbox();
    let f = sb.workspace().join("tool");
    assert_eq!(
        sb.probe(&BINS, &["write", f.to_str().unwrap()]).verdict(),
        Ok(())
    );
    assert_eq!(
        sb.probe(&BINS, &["chmod", f.to_str().unwrap(), "755"])
            .verdict(),
        Ok(())
    );
    assert_eq!(
        sb.probe(&BINS, &["chmod", f.to_str().unwrap(), "4755"])
            .verdict(),
        eperm()
    );
    assert_eq!(
        sb.probe(&BINS, &["chmod", f.to_str().unwrap(), "2755"])
            .verdict(),
        eperm()
    );
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn x32_syscalls_kill_the_process() {
    require_sessions!();
    let run = sandbox().probe(&BINS, &["x32"]);
    assert_eq!(
        run.status,
        128 + libc::SIGSYS,
        "killed by SIGSYS: {}",
        run.stdout
    );
}

#[test]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", "[limits]\nmax_processes = 20\n"));
    let run = sb.probe(&BINS, &["fork-bomb", "1000"]);
    assert_eq!(run.verdict(), Err("EAGAIN".into()));
    let forked: u32 = run.value("forked").unwrap().parse().unwrap();
    assert!(forked < 20, "forked {forked} with max_processes = 20");
    assert_session_gone(&run.session_id().unwrap());
}

#[test]
fn memory_limit_kills_the_hog() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", "[limits]\nmemory = \"64M\"\n"));
    let run = sb.probe(&BINS, &["alloc", "256"]);
    assert_eq!(
        run.status,
        128 + libc::SIGKILL,
        "OOM-killed: {}",
        run.stdout
    );
    let run = sb.probe(&BINS, &["alloc", "16"]);
    assert_eq!(run.status, 0, "a small allocation fits: {}", run.stderr);
}

#[test]
fn environment_is_clean() {
    require_sessions!();
    let policy = test_policy(
        &BINS,
        "",
        "[env]\npass = [\"LANG\"]\nset = { FROM_POLICY = \"yes\" }\n",
    );
    let sb = Sandbox::new(&policy);
    let run = agentd_tests::finish({
        let mut c = sb.command(&BINS, &[BINS.probe, "env"]);
        c.env("CALLER_SECRET", "do-not-leak-4f2a")
            .env("LANG", "C.UTF-8")
            .env("LD_PRELOAD", "/evil.so");
        c
    });
    assert_eq!(run.status, 0, "{}", run.stderr);
    let id = run.session_id().unwrap();
    assert!(
        !run.stdout.contains("do-not-leak-4f2a"),
        "caller variable leaked:\n{}",
        run.stdout
    );
    assert!(!run.stdout.contains("LD_PRELOAD"));
    assert!(run.stdout.contains("LANG=C.UTF-8\n"));
    assert!(run.stdout.contains("FROM_POLICY=yes\n"));
    assert!(run.stdout.contains(&format!("AGENTD_SESSION_ID={id}\n")));
    let tp = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TRACEPARENT="))
        .unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
    for var in [
        "HOME=/var/lib/agentd/sessions/",
        "TMPDIR=/var/lib/agentd/sessions/",
        "PATH=",
        "USER=agentd-escape-test",
        "LOGNAME=",
    ] {
        assert!(run.stdout.contains(var), "{var} missing:\n{}", run.stdout);
    }
    let names: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(names.len(), 9, "exactly the expected variables: {names:?}");
}

#[test]
fn no_network_without_rules() {
    require_sessions!();
    require!(Feature::Ebpf);
    let netns = agentd_tests::Netns::create("nonet");
    let _server = agentd_tests::Server::start(&BINS, &netns, &["serve-tcp", "127.0.0.1", "7001"]);
    let run = sandbox().probe_in(&BINS, &netns, &["connect", "127.0.0.1", "7001"]);
    assert_eq!(
        run.verdict(),
        Err("EPERM".into()),
        "default deny: even loopback"
    );
}

#[test]
fn daemonized_grandchild_dies_with_the_session() {
    require_sessions!();
    let sb = sandbox();
    let pidfile = sb.workspace().join("daemon.pid");
    let run = sb.probe(&BINS, &["daemonize", pidfile.to_str().unwrap()]);
    assert_eq!(run.verdict(), Ok(()));
    let pid: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || process_gone(pid)),
        "daemon {pid} outlived its session"
    );
    assert_session_gone(&run.session_id().unwrap());
}

#[test]
fn kill_ends_a_1000_process_tree() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", "[limits]\nmax_processes = 2000\n"));
    let agentd_tests::Started {
        mut child,
        mut stderr,
        id,
    } = agentd_tests::start(
        sb.command(&BINS, &[BINS.probe, "spawn-tree", "1000"])
            .stdout(Stdio::piped()),
    );
    let _cleanup = agentd_tests::KillOnDrop {
        agentd: BINS.agentd,
        id: id.clone(),
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");

    let kill = agentd_tests::finish({
        let mut c = std::process::Command::new(BINS.agentd);
        c.args(["kill", &id, "--reason", "test"]);
        c
    });
    assert_eq!(kill.status, 0, "{}", kill.stderr);
    let killed: usize = kill
        .stdout
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kill output {:?}", kill.stdout));
    assert_eq!(
        killed, 1002,
        "the probe, its 1000 children and the session's unix socket broker: {}",
        kill.stdout
    );
    let cgroup = agentd::cgroup::cgroup2_root()
        .unwrap()
        .join("agentd")
        .join(&id);
    assert!(
        !cgroup.exists()
            || fs::read_to_string(cgroup.join("cgroup.procs"))
                .unwrap_or_default()
                .is_empty(),
        "kill returns only when no process is left"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("killed by uid 0: test"), "{rest}");
    assert_session_gone(&id);

    let again = agentd_tests::finish({
        let mut c = std::process::Command::new(BINS.agentd);
        c.args(["kill", &id]);
        c
    });
    assert_eq!(again.status, 1, "a finished session is unknown");
    assert!(again.stderr.contains("no session"), "{}", again.stderr);
}

#[test]
fn killed_supervisor_does_not_leave_the_session_running() {
    require_sessions!();
    let sb = sandbox();
    let agentd_tests::Started {
        mut child,
        stderr: _stderr,
        id,
    } = agentd_tests::start(
        sb.command(&BINS, &[BINS.probe, "spawn-tree", "10"])
            .stdout(Stdio::piped()),
    );
    let _cleanup = agentd_tests::KillOnDrop {
        agentd: BINS.agentd,
        id: id.clone(),
    };
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let procs = agentd_tests::session_pids(&id);
    // The tree and the session's unix socket broker.
    assert_eq!(procs.len(), 12);

    child.kill().unwrap(); // SIGKILL to the supervisor
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || procs
            .iter()
            .all(|p| process_gone(*p))),
        "session processes outlived their supervisor"
    );
    assert_session_gone(&id);
}

#[test]
fn ttl_kills_the_session() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", "[limits]\nmax_duration = \"1s\"\n"));
    let start = std::time::Instant::now();
    let run = sb.probe(&BINS, &["sleep", "60"]);
    assert_eq!(run.status, 128 + libc::SIGKILL);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        run.stderr.contains("max_duration reached"),
        "{}",
        run.stderr
    );
    assert_session_gone(&run.session_id().unwrap());
}

#[test]
fn exit_statuses_follow_the_shell_convention() {
    require_sessions!();
    let sb = sandbox();
    assert_eq!(
        sb.probe(&BINS, &["read", "/etc/shadow"]).status,
        1,
        "the agent's own status"
    );
    let run = sb.run(&BINS, &["no-such-program-here"]);
    assert_eq!(run.status, 127, "{}", run.stderr);
    assert!(run.stderr.contains("command not found"));
    // Exists but is outside every execute path: Landlock refuses the exec.
    let run = sb.run(&BINS, &["/usr/sbin/nologin"]);
    assert_eq!(run.status, 126, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot execute /usr/sbin/nologin: EACCES"),
        "{}",
        run.stderr
    );
    let bad = Sandbox::new("version = 1\n[agent]\nname = \"x\"\nbogus = 1\n");
    let run = bad.run(&BINS, &["/bin/true"]);
    assert_eq!(run.status, 125);
    assert!(run.stderr.contains("unknown key `bogus`"), "{}", run.stderr);
}

#[test]
fn the_agent_gets_its_own_pty() {
    require_sessions!();
    let sb = sandbox();
    let mut cmd = sb.command(&BINS, &[BINS.probe, "tiocsti"]);
    // Replace --no-tty by --tty: a pty although stdin is not a terminal.
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().replace("--no-tty", "--tty"))
        .collect();
    let mut tty = std::process::Command::new(BINS.agentd);
    tty.args(&args);
    cmd = tty;
    let run = agentd_tests::finish(cmd);
    assert_eq!(
        run.verdict(),
        eperm(),
        "stdout through the pty: {}",
        run.stdout
    );
}

#[test]
fn workspace_files_belong_to_the_caller_and_git_and_python_work() {
    require_sessions!();
    let policy = test_policy(&BINS, "", "[exec]\nallow = [\"/usr/bin/git\", \"/usr/lib/git-core/*\", \"/usr/bin/python3*\"]\n\n[env]\nset = { GIT_AUTHOR_NAME = \"agent\", GIT_AUTHOR_EMAIL = \"agent@example.com\", GIT_COMMITTER_NAME = \"agent\", GIT_COMMITTER_EMAIL = \"agent@example.com\", GIT_CONFIG_NOSYSTEM = \"1\" }\n")
        .replace("read = [", "read = [\"/etc/gitconfig\", ");
    let sb = Sandbox::new(&policy);
    // The caller is user 4242 (as `sudo` would record it).
    let caller = 4242;
    nix::unistd::chown(&sb.workspace(), Some(caller.into()), Some(caller.into())).unwrap();
    let run_as_caller = |args: &[&str]| {
        let mut c = sb.command(&BINS, args);
        c.env("SUDO_UID", caller.to_string())
            .env("SUDO_GID", caller.to_string());
        agentd_tests::finish(c)
    };
    let run = run_as_caller(&[
        "/usr/bin/python3",
        "-c",
        "open('hello.py','w').write('print(42)\\n')",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let meta = fs::metadata(sb.workspace().join("hello.py")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (caller, caller),
        "created files belong to the caller"
    );

    let run = run_as_caller(&["/usr/bin/git", "init", "-q"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let run = run_as_caller(&["/usr/bin/git", "add", "hello.py"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let run = run_as_caller(&["/usr/bin/git", "commit", "-q", "-m", "from the agent"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let run = run_as_caller(&["/usr/bin/git", "log", "--format=%s %an"]);
    assert_eq!(run.stdout.trim(), "from the agent agent");
    let git = fs::metadata(sb.workspace().join(".git/HEAD")).unwrap();
    assert_eq!(git.uid(), caller);
    let run = run_as_caller(&["/usr/bin/python3", "hello.py"]);
    assert_eq!(run.stdout.trim(), "42");
}

#[test]
fn protected_paths_cannot_be_changed() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    fs::write(ws.join(".git/config"), "[core]\n").unwrap();
    fs::write(ws.join(".envrc"), "echo hi\n").unwrap();
    fs::create_dir_all(ws.join(".vscode")).unwrap();
    fs::write(ws.join(".vscode/tasks.json"), "{}\n").unwrap();
    let w = |p: &str| ws.join(p).display().to_string();
    for action in [
        vec!["write", &w(".envrc")],
        vec!["write", &w(".git/config")],
        vec!["write", &w(".git/hooks/pre-commit")],
        vec!["write", &w(".vscode/tasks.json")],
    ] {
        assert_eq!(
            sb.probe(&BINS, &action).verdict(),
            Err("EROFS".into()),
            "{action:?}"
        );
    }
    for action in [
        vec!["unlink", &w(".envrc")],
        vec!["rename", &w(".git"), &w("git-moved")],
        vec!["rename", &w(".vscode"), &w("vscode-moved")],
    ] {
        assert_eq!(
            sb.probe(&BINS, &action).verdict(),
            Err("EBUSY".into()),
            "{action:?}"
        );
    }
    // The rest of the repository stays writable.
    assert_eq!(
        sb.probe(&BINS, &["write", &w(".git/index")]).verdict(),
        Ok(())
    );
    assert_eq!(fs::read_to_string(ws.join(".envrc")).unwrap(), "echo hi\n");
    assert!(!ws.join(".git/hooks/pre-commit").exists());
}

/// Protected names that do not exist at session start cannot be created
/// either: not by open, mkdir, rename, link or symlink, not through a
/// symlink, not with a path another thread swaps during the call. The
/// attacks of a repository hijack (a new `.git/commondir`, a submodule's
/// `config`, a prepared directory renamed into place) and their
/// legitimate neighbours.
#[test]
fn protected_names_cannot_be_created_during_the_session() {
    require_sessions!();
    let policy = test_policy(
        &BINS,
        "protect = [\"{workspace}/ci/deploy.sh\", \"{workspace}/ci/keep.sh\"]",
        "",
    );
    let sb = Sandbox::new(&policy);
    let ws = sb.workspace();
    // A repository present at start, without the optional names.
    fs::create_dir_all(ws.join(".git/objects")).unwrap();
    fs::write(ws.join(".git/config"), "[core]\n").unwrap();
    fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::create_dir_all(ws.join("ci")).unwrap();
    fs::write(ws.join("ci/keep.sh"), "true\n").unwrap();
    let w = |p: &str| ws.join(p).display().to_string();
    let refused = |action: &[&str]| {
        assert_eq!(
            sb.probe(&BINS, action).verdict(),
            Err("EPERM".into()),
            "{action:?}"
        );
    };
    let allowed = |action: &[&str]| {
        assert_eq!(sb.probe(&BINS, action).verdict(), Ok(()), "{action:?}");
    };
    // Names at the root, absolute and relative.
    refused(&["write", &w(".envrc")]);
    refused(&["write", ".bashrc"]);
    refused(&["mkdir", &w(".claude")]);
    refused(&["mkfifo", &w(".mcp.json")]);
    // A directory of protected names may be made; the names in it not.
    allowed(&["mkdir", &w(".vscode")]);
    refused(&["write", &w(".vscode/tasks.json")]);
    allowed(&["write", &w(".vscode/launch.json")]);
    // A directory prepared elsewhere cannot be renamed or linked into place.
    allowed(&["mkdir", &w("prep")]);
    allowed(&["write", &w("prep/tasks.json")]);
    refused(&["rename", &w("prep"), &w(".idea")]);
    refused(&["rename", &w("prep"), &w(".vscode")]);
    refused(&["symlink", &w("prep"), &w(".codex")]);
    // Through a symlink, a hard link, a rename of a file.
    allowed(&["symlink", ".envrc", &w("dangling")]);
    refused(&["write", &w("dangling")]);
    allowed(&["write", &w("plain")]);
    refused(&["hardlink", &w("plain"), &w(".zshrc")]);
    refused(&["rename", &w("plain"), &w(".profile")]);
    // The repository: what makes the caller's git run something.
    refused(&["write", &w(".git/commondir")]);
    refused(&["write", &w(".git/config.worktree")]);
    refused(&["mkdir", &w(".git/hooks")]);
    refused(&["mkdir", &w(".git/info")]);
    allowed(&["write", &w(".git/e-config")]);
    refused(&["rename", &w(".git/e-config"), &w(".git/commondir")]);
    refused(&["symlink", "e", &w(".git/commondir")]);
    // A submodule's repository added later: its directory may be made,
    // its configuration and hooks not.
    allowed(&["mkdir", &w(".git/modules")]);
    allowed(&["mkdir", &w(".git/modules/sub")]);
    refused(&["write", &w(".git/modules/sub/config")]);
    refused(&["mkdir", &w(".git/modules/sub/hooks")]);
    allowed(&["mkdir", &w("prep2")]);
    allowed(&["write", &w("prep2/config")]);
    refused(&["rename", &w("prep2"), &w(".git/modules/other")]);
    // [filesystem] protect paths: one missing at start, one present.
    allowed(&["write", &w("ci/build.sh")]);
    refused(&["write", &w("ci/deploy.sh")]);
    assert_eq!(
        sb.probe(&BINS, &["write", &w("ci/keep.sh")]).verdict(),
        Err("EROFS".into())
    );
    // Another thread swapping the path during the call.
    allowed(&["create-race", "3000", ".envrc", "racy"]);
    assert!(ws.join("racy").exists(), "the decoy was created");
    for name in [
        ".envrc",
        ".bashrc",
        ".claude",
        ".mcp.json",
        ".vscode/tasks.json",
        ".idea",
        ".codex",
        ".zshrc",
        ".profile",
        ".git/commondir",
        ".git/config.worktree",
        ".git/hooks",
        ".git/info",
        ".git/modules/sub/config",
        ".git/modules/sub/hooks",
        ".git/modules/other",
        "ci/deploy.sh",
    ] {
        assert!(
            fs::symlink_metadata(ws.join(name)).is_err(),
            "{name} was created"
        );
    }
    assert_eq!(fs::read_to_string(ws.join("ci/keep.sh")).unwrap(), "true\n");
}

/// A protected name that is a symlink at start (a dotfile manager's
/// `.bashrc`) protects what it leads to, present or not: writing through
/// the link, or to its target directly, fails.
#[test]
fn protected_symlinks_protect_their_targets() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    fs::create_dir_all(ws.join("dotfiles")).unwrap();
    fs::write(ws.join("dotfiles/bashrc"), "alias ll='ls -l'\n").unwrap();
    std::os::unix::fs::symlink("dotfiles/bashrc", ws.join(".bashrc")).unwrap();
    std::os::unix::fs::symlink("dotfiles/envrc", ws.join(".envrc")).unwrap();
    let w = |p: &str| ws.join(p).display().to_string();
    for (action, errno) in [
        (vec!["truncate", &w(".bashrc")], "EROFS"),
        (vec!["write", &w("dotfiles/bashrc")], "EROFS"),
        (vec!["truncate", &w("dotfiles/bashrc")], "EROFS"),
        (vec!["write", &w(".envrc")], "EPERM"),
        (vec!["write", &w("dotfiles/envrc")], "EPERM"),
    ] {
        assert_eq!(
            sb.probe(&BINS, &action).verdict(),
            Err(errno.into()),
            "{action:?}"
        );
    }
    assert_eq!(
        fs::read_to_string(ws.join("dotfiles/bashrc")).unwrap(),
        "alias ll='ls -l'\n"
    );
    assert!(!ws.join("dotfiles/envrc").exists());
    // The rest of the directory stays writable.
    assert_eq!(
        sb.probe(&BINS, &["write", &w("dotfiles/other")]).verdict(),
        Ok(())
    );
}

/// Repositories git finds in other ways are protected too: a submodule
/// named with a slash (`.git/modules/libs/foo`, its checkout's `.git`
/// file two levels down), a `.git` file pointing at a git directory in the
/// workspace (`.bare`), a `.git` symlink that could be replaced, and
/// symlinks on the way to protected names.
#[test]
fn git_layouts_and_symlinks_present_at_start_are_protected() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    let write = |p: &str, text: &str| {
        let path = ws.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    // A repository at the root with a submodule named libs/foo.
    write(".git/HEAD", "ref: refs/heads/main\n");
    write(".git/config", "[core]\n");
    write(
        ".gitmodules",
        "[submodule \"libs/foo\"]\n\tpath = libs/foo\n\turl = x\n",
    );
    write(".git/modules/libs/foo/HEAD", "ref: refs/heads/main\n");
    write(".git/modules/libs/foo/config", "[core]\n");
    write("libs/foo/.git", "gitdir: ../../.git/modules/libs/foo\n");
    // A bare-style checkout one level down, and a .git symlink.
    write("b/.git", "gitdir: .bare\n");
    write("b/.bare/HEAD", "ref: refs/heads/main\n");
    write("b/.bare/config", "[core]\n");
    write("gd/HEAD", "ref: refs/heads/main\n");
    write("gd/config", "[core]\n");
    fs::create_dir_all(ws.join("p")).unwrap();
    std::os::unix::fs::symlink("../gd", ws.join("p/.git")).unwrap();
    // Symlinks on the way to protected names.
    write("real/zshrc", "alias x=y\n");
    std::os::unix::fs::symlink("real", ws.join("d")).unwrap();
    std::os::unix::fs::symlink("d/zshrc", ws.join(".zshrc")).unwrap();
    fs::create_dir_all(ws.join("shared/vscode")).unwrap();
    std::os::unix::fs::symlink("shared/vscode", ws.join(".vscode")).unwrap();
    let w = |p: &str| ws.join(p).display().to_string();
    for (action, errno) in [
        (vec!["write", &w(".git/modules/libs/foo/config")], "EROFS"),
        (vec!["mkdir", &w(".git/modules/libs/foo/hooks")], "EPERM"),
        (vec!["write", &w("libs/foo/.git")], "EROFS"),
        (vec!["write", &w("b/.bare/config")], "EROFS"),
        (vec!["write", &w("b/.bare/commondir")], "EPERM"),
        (vec!["write", &w("b/.git")], "EROFS"),
        (vec!["write", &w("gd/config")], "EROFS"),
        (vec!["write", &w(".vscode/tasks.json")], "EPERM"),
        (vec!["write", &w("shared/vscode/tasks.json")], "EPERM"),
        (vec!["write", &w("real/zshrc")], "EROFS"),
    ] {
        assert_eq!(
            sb.probe(&BINS, &action).verdict(),
            Err(errno.into()),
            "{action:?}"
        );
    }
    // A link removed cannot be made again (in the same session; the next
    // one starts without it).
    let run = sb.run(
        &BINS,
        &[
            "/bin/sh",
            "-c",
            "rm p/.git && ln -s ../evil p/.git; rm d && mkdir d; ls -d p/.git d",
        ],
    );
    assert!(
        run.stderr.contains("p/.git") && run.stderr.contains("Operation not permitted"),
        "{}",
        run.stderr
    );
    assert!(fs::symlink_metadata(ws.join("p/.git")).is_err());
    assert!(fs::symlink_metadata(ws.join("d")).is_err());
    // A submodule repository made during the session, any depth.
    let run = sb.run(
        &BINS,
        &["/bin/sh", "-c", "mkdir -p .git/modules/x/y && echo ok > .git/modules/x/y/HEAD && echo '[core]' > .git/modules/x/y/config"],
    );
    assert_ne!(run.status, 0);
    assert!(!ws.join(".git/modules/x/y/config").exists());
    assert!(
        ws.join(".git/modules/x/y/HEAD").exists(),
        "other files stay writable"
    );
    for (path, text) in [
        (".git/modules/libs/foo/config", "[core]\n"),
        ("b/.bare/config", "[core]\n"),
        ("real/zshrc", "alias x=y\n"),
    ] {
        assert_eq!(fs::read_to_string(ws.join(path)).unwrap(), text, "{path}");
    }
}

/// The broker creates files as the agent would: the agent's umask, its
/// FIFOs, its standard streams by name, a new repository of its own.
#[test]
fn files_created_for_the_agent_keep_their_usual_meaning() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    let w = |p: &str| ws.join(p).display().to_string();
    let ok = |action: &[&str]| {
        assert_eq!(sb.probe(&BINS, action).verdict(), Ok(()), "{action:?}");
    };
    ok(&["umask-write", "077", &w("private")]);
    ok(&["umask-write", "022", &w("shared")]);
    let mode = |p: &str| fs::metadata(ws.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("private"), mode("shared")), (0o600, 0o644));
    ok(&["mkfifo", &w("fifo")]);
    assert!(
        fs::symlink_metadata(ws.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // A writer that opens a FIFO before its reader waits for it, as
    // without the broker.
    let run = sb.run(
        &BINS,
        &[
            "/bin/sh",
            "-c",
            "(sleep 0.3; cat fifo > out) & echo data > fifo; wait; cat out",
        ],
    );
    assert_eq!(
        (run.status, run.stdout.as_str()),
        (0, "data\n"),
        "{}",
        run.stderr
    );
    // A repository made in the session is the agent's own: its
    // configuration and hooks may be written (in that session; the next
    // one finds it present at start).
    let run = sb.run(
        &BINS,
        &[
            "/bin/sh",
            "-c",
            "echo out > /dev/null && echo err > fromsh && cat fromsh && mkdir -p a/b/c && echo deep > a/b/c/f && mv a/b/c/f a/g && ln -s g a/h && cat a/h \
             && mkdir -p new/.git/hooks && echo '[core]' > new/.git/config && echo true > new/.git/hooks/pre-commit",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "err\ndeep\n");
    assert!(ws.join("new/.git/hooks/pre-commit").exists());
    // session_end tells the caller about it before they run git there.
    let id = run.session_id().unwrap();
    let end = agentd_tests::audit_records(&id)
        .into_iter()
        .find(|r| r["kind"] == "session_end")
        .unwrap();
    let repos = end["new_repositories"]
        .as_array()
        .expect("new_repositories");
    assert_eq!(repos.len(), 1, "{end:?}");
    assert_eq!(repos[0]["path"], w("new"));
    assert_eq!(repos[0]["hooks"], serde_json::json!(["pre-commit"]));
    assert_eq!(
        sb.probe(&BINS, &["write", &w("new/.git/commondir")])
            .verdict(),
        Err("EPERM".into()),
        "present at the next session's start"
    );
}

#[test]
fn strict_profile_runs_a_shell_python_and_git_but_not_the_dangerous_set() {
    require_sessions!();
    let policy = test_policy(
        &BINS,
        "",
        "[syscalls]\nprofile = \"strict\"\n\n[env]\nset = { GIT_CONFIG_NOSYSTEM = \"1\" }\n",
    );
    let sb = Sandbox::new(&policy);
    let run = sb.run(&BINS, &["/bin/sh", "-c", "echo shell; /usr/bin/python3 -c 'import subprocess; print(subprocess.run([\"/bin/echo\", \"child\"], capture_output=True, text=True).stdout.strip())'"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "shell\nchild\n");
    let run = sb.run(&BINS, &["/usr/bin/git", "init", "-q"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(sb.workspace().join(".git/HEAD").exists());
    for action in [
        &["bpf"][..],
        &["ptrace-sibling"],
        &["unshare", "user"],
        &["tiocsti"],
        &["io_uring_setup"],
        &["mount"],
    ] {
        assert_eq!(sb.probe(&BINS, action).verdict(), eperm(), "{action:?}");
    }
    let f = sb.workspace().join("f");
    fs::write(&f, "").unwrap();
    assert_eq!(
        sb.probe(&BINS, &["chmod", f.to_str().unwrap(), "4755"])
            .verdict(),
        eperm()
    );
    assert_eq!(
        sb.probe(&BINS, &["chmod", f.to_str().unwrap(), "0755"])
            .verdict(),
        Ok(())
    );
}

#[test]
fn policy_syscall_adjustments_apply() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[syscalls]\ndeny = [\"memfd_create\"]\n",
    ));
    let run = sb.run(&BINS, &["/usr/bin/python3", "-c", "import os\ntry:\n    os.memfd_create('x')\n    print('ok')\nexcept OSError as e:\n    print(e.errno)"]);
    assert_eq!(run.stdout.trim(), libc::EPERM.to_string(), "{}", run.stderr);
}

/// A workspace the policy only lets the agent read (a code reviewer's):
/// the agent owns its files through the idmapped mount, so it could change
/// their mode, times and extended attributes (Landlock does not cover
/// metadata). The attack: chmod a file and the directory, backdate a file,
/// set a `user.*` xattr. All fail; reading still works.
#[test]
fn a_read_only_workspace_keeps_its_metadata() {
    require_sessions!();
    let policy = test_policy(&BINS, "", "")
        .replace(
            "read_write = [\"{workspace}\", \"{tmp}\"]",
            "read_write = [\"{tmp}\"]",
        )
        .replace("read = [", "read = [\"{workspace}\", ");
    assert!(
        !policy.contains("read_write = [\"{workspace}\""),
        "{policy}"
    );
    let sb = Sandbox::new(&policy);
    let ws = sb.workspace();
    fs::write(ws.join("file"), "content\n").unwrap();
    fs::set_permissions(ws.join("file"), fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::metadata(ws.join("file")).unwrap();
    let script = "chmod 0666 file && echo chmod-file
        chmod 0777 . && echo chmod-dir
        touch -d @0 file && echo backdated
        python3 -c \"import os; os.setxattr('file', 'user.x', b'1')\" 2>/dev/null && echo xattr
        cat file";
    let run = sb.run(&BINS, &["/bin/sh", "-c", script]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, "content\n", "{run:?}");
    let after = fs::metadata(ws.join("file")).unwrap();
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(
        fs::metadata(&ws).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

/// Only a subtree of the workspace is writable (`{workspace}/out`): the
/// rest keeps its metadata (the attack of the read-only workspace, from
/// inside the writable part's session), and the subtree works as usual.
#[test]
fn a_writable_subtree_leaves_the_rest_of_the_workspace_read_only() {
    require_sessions!();
    let policy = test_policy(&BINS, "", "")
        .replace(
            "read_write = [\"{workspace}\", \"{tmp}\"]",
            "read_write = [\"{workspace}/out\", \"{tmp}\"]",
        )
        .replace("read = [", "read = [\"{workspace}\", ");
    let sb = Sandbox::new(&policy);
    let ws = sb.workspace();
    fs::write(ws.join("file"), "content\n").unwrap();
    fs::set_permissions(ws.join("file"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(ws.join("out")).unwrap();
    let script = "chmod 0666 file && echo chmod-file
        touch -d @0 file && echo backdated
        echo made > out/new && chmod 0600 out/new && echo out-ok
        cat file";
    let run = sb.run(&BINS, &["/bin/sh", "-c", script]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, "out-ok\ncontent\n", "{run:?}");
    assert_eq!(
        fs::metadata(ws.join("file")).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(fs::read_to_string(ws.join("out/new")).unwrap(), "made\n");
}

/// A symlink an agent planted in an earlier session, on the way to a path
/// the policy names inside the workspace (`out/cache -> ..` for a writable
/// `{workspace}/out/cache/sub`), would make the next session's rules grant
/// another directory (`{workspace}/sub`, or any directory the link names).
/// The session is refused instead.
#[test]
fn policy_paths_inside_the_workspace_are_not_reached_through_symlinks() {
    require_sessions!();
    let policy = test_policy(&BINS, "", "")
        .replace(
            "read_write = [\"{workspace}\", \"{tmp}\"]",
            "read_write = [\"{workspace}/out\", \"{workspace}/out/cache/sub\", \"{tmp}\"]",
        )
        .replace("read = [", "read = [\"{workspace}\", ");
    let sb = Sandbox::new(&policy);
    let ws = sb.workspace();
    fs::create_dir_all(ws.join("out")).unwrap();
    fs::create_dir_all(ws.join("sub")).unwrap();
    fs::write(ws.join("sub/g"), "kept\n").unwrap();
    std::os::unix::fs::symlink("..", ws.join("out/cache")).unwrap();
    let run = sb.run(&BINS, &["/bin/sh", "-c", "echo PWNED > sub/g"]);
    assert_eq!(run.status, 125, "{run:?}");
    assert!(run.stderr.contains("is a symlink"), "{run:?}");
    assert_eq!(fs::read_to_string(ws.join("sub/g")).unwrap(), "kept\n");
    // Without the link the session runs, and `sub` stays read-only.
    fs::remove_file(ws.join("out/cache")).unwrap();
    fs::create_dir_all(ws.join("out/cache/sub")).unwrap();
    let run = sb.run(
        &BINS,
        &[
            "/bin/sh",
            "-c",
            "echo ok > out/cache/sub/f && cat out/cache/sub/f",
        ],
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(fs::read_to_string(ws.join("sub/g")).unwrap(), "kept\n");
}

/// The git metadata that makes the caller's git run commands, present at
/// start in other forms than `.git/config`: a worktree checkout whose
/// `.git` is a file (`gitdir: …`), a submodule's `.git/modules/<sub>/config`
/// and hooks, a linked worktree's `commondir`, `.git/info` and
/// `config.worktree`. The attack rewrites each; all stay as they were, and
/// the repository itself stays usable.
#[test]
fn worktree_and_submodule_git_metadata_is_protected() {
    require_sessions!();
    let sb = sandbox();
    let ws = sb.workspace();
    for dir in [
        ".git/hooks",
        ".git/info",
        ".git/modules/sub/hooks",
        ".git/worktrees/w",
        "checkout",
    ] {
        fs::create_dir_all(ws.join(dir)).unwrap();
    }
    let files = [
        (".git/config", "[core]\n"),
        (".git/config.worktree", "[core]\n"),
        (".git/info/exclude", "\n"),
        (".git/modules/sub/config", "[core]\n"),
        (".git/worktrees/w/commondir", "../..\n"),
        ("checkout/.git", "gitdir: ../.git/worktrees/w\n"),
    ];
    for (path, text) in files {
        fs::write(ws.join(path), text).unwrap();
    }
    let w = |p: &str| ws.join(p).display().to_string();
    for (path, _) in files {
        let verdict = sb.probe(&BINS, &["write", &w(path)]).verdict();
        assert_eq!(verdict, Err("EROFS".into()), "{path}");
    }
    for hook in [
        ".git/modules/sub/hooks/post-checkout",
        ".git/info/attributes",
    ] {
        let verdict = sb.probe(&BINS, &["write", &w(hook)]).verdict();
        assert_eq!(verdict, Err("EROFS".into()), "{hook}");
    }
    // Pinned (a mount point: EXDEV, EBUSY), or a submodule's repository put in place
    // by a rename (refused: only mkdir may make one).
    for (from, to, errno) in [
        (".git/modules/sub", ".git/modules/other", "EPERM"),
        (".git/modules/sub", "elsewhere", "EXDEV"),
        ("checkout/.git", "checkout/old", "EBUSY"),
    ] {
        let verdict = sb.probe(&BINS, &["rename", &w(from), &w(to)]).verdict();
        assert_eq!(verdict, Err(errno.into()), "{from} -> {to}");
    }
    for (path, text) in files {
        assert_eq!(fs::read_to_string(ws.join(path)).unwrap(), text, "{path}");
    }
    // New worktrees and the rest of the repository stay writable.
    assert_eq!(
        sb.probe(&BINS, &["write", &w(".git/worktrees/new-one")])
            .verdict(),
        Ok(())
    );
}
