//! A session's lifecycle when things go wrong: a kernel without
//! `cgroup.kill`, a stage that fails part-way, a state file that cannot be
//! read, a kernel registration that fails half-way, and a caller inside
//! `ip netns exec`. Each way out leaves nothing behind and a complete
//! trail.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use agentd::{
    ebpf::{Kernel, Registration},
    session::SessionId,
};
use agentd_common::{PortRule, PortRules};
use agentd_tests::{
    Bins, Netns, Sandbox, assert_session_gone, audit_records, field, finish, require_sessions,
    test_policy, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

fn process_gone(pid: u32) -> bool {
    // A zombie has no cmdline left and is as good as gone.
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// A running session: the supervisor, its output (kept open: it reports
/// the kill on stderr) and its id.
type Started = (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    BufReader<std::process::ChildStdout>,
    String,
);

/// Starts `probe spawn-tree n` and returns once the tree is up, with the
/// pids of the session's cgroup.
fn start_tree(sb: &Sandbox, n: &str) -> (Started, Vec<u32>) {
    let agentd_tests::Started {
        mut child,
        stderr,
        id,
    } = agentd_tests::start(
        sb.command(&BINS, &[BINS.probe, "spawn-tree", n])
            .stdout(Stdio::piped()),
    );
    let mut ready = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let pids = agentd_tests::session_pids(&id);
    ((child, stderr, stdout, id), pids)
}

/// Kernels before 5.14 have no `cgroup.kill`. There, a kill must still
/// leave no process behind (and none frozen), and say how many died.
#[test]
fn kill_without_cgroup_kill_leaves_no_process_running_or_frozen() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", "[limits]\nmax_processes = 200\n"));
    let ((mut child, mut stderr, _stdout, id), pids) = start_tree(&sb, "50");
    let _cleanup = agentd_tests::KillOnDrop {
        agentd: BINS.agentd,
        id: id.clone(),
    };
    // The tree, its root and the session's unix socket broker.
    assert_eq!(pids.len(), 52);

    let kill = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["kill", &id, "--reason", "no cgroup.kill"])
            .env("AGENTD_NO_CGROUP_KILL", "1");
        c
    });
    assert_eq!(kill.status, 0, "{}", kill.stderr);
    assert!(
        kill.stdout.contains("52 processes"),
        "the probe and its 50 children: {}",
        kill.stdout
    );
    // `kill` returns only once nothing is left: no waiting here.
    let alive: Vec<u32> = pids.iter().copied().filter(|p| !process_gone(*p)).collect();
    assert!(alive.is_empty(), "still running or frozen: {alive:?}");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{rest}");
    assert!(rest.contains("killed by uid 0: no cgroup.kill"), "{rest}");
    assert_session_gone(&id);
}

/// Every stage of a session can fail. Before `session_start` nothing is
/// recorded; after it, the trail gets `session_end` with reason `error`
/// and the failing step, and no spurious `kill` from the watchdog. Either
/// way nothing is left: state, data, cgroup, processes.
#[test]
fn a_failing_stage_leaves_nothing_and_ends_the_trail() {
    require_sessions!();
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let before_start = [
        "plan",
        "state",
        "identity",
        "data dirs",
        "cgroups",
        "environment",
        "filesystem",
        "state+watchdog",
    ];
    let after_start = ["spawn", "wait", "teardown"];
    for stage in before_start.iter().chain(&after_start) {
        let run = finish({
            let mut c = sb.command(&BINS, &[BINS.probe, "sleep", "0"]);
            c.env("AGENTD_FAIL_STAGE", stage);
            c
        });
        assert_eq!(run.status, 125, "stage {stage}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("stage {stage} failed")),
            "{}",
            run.stderr
        );
        let id = run.session_id().expect("the id is printed before the plan");
        assert_session_gone(&id);
        if before_start.contains(stage) {
            assert!(
                audit_records(&id).is_empty(),
                "stage {stage}: nothing recorded before session_start"
            );
            continue;
        }
        let end = wait_record(&id, |r| field(r, "kind") == "session_end")
            .unwrap_or_else(|| panic!("stage {stage}: no session_end"));
        assert_eq!(field(&end, "reason"), "error", "{end:?}");
        assert_eq!(field(&end, "step"), *stage, "{end:?}");
        assert!(field(&end, "error").contains(stage), "{end:?}");
        let records = audit_records(&id);
        let kinds: Vec<&str> = records.iter().map(|r| field(r, "kind")).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "session_start").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "session_end").count(),
            1,
            "{kinds:?}"
        );
        // The watchdog was dismissed, not left to fire.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !audit_records(&id)
                .iter()
                .any(|r| field(r, "kind") == "kill"),
            "stage {stage}: a spurious kill record"
        );
    }
}

/// A session directory whose state is removed on drop.
struct FakeSession(PathBuf);

impl Drop for FakeSession {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A state file that cannot be read is not "no such session": the caller
/// is told the state is unreadable, and where.
#[test]
fn an_unreadable_state_is_not_reported_as_an_unknown_session() {
    require_sessions!();
    let id = SessionId::generate();
    let dir = Path::new(agentd::paths::SESSIONS_DIR).join(id.as_str());
    fs::create_dir_all(&dir).unwrap();
    let _guard = FakeSession(dir.clone());
    fs::write(dir.join("state.json"), b"{ not json").unwrap();

    let kill = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["kill", id.as_str()]);
        c
    });
    assert_eq!(kill.status, 1, "{}", kill.stderr);
    assert!(
        kill.stderr.contains("state cannot be read"),
        "{}",
        kill.stderr
    );
    assert!(!kill.stderr.contains("no session"), "{}", kill.stderr);

    let unknown = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["kill", SessionId::generate().as_str()]);
        c
    });
    assert_eq!(unknown.status, 1);
    assert!(unknown.stderr.contains("no session"), "{}", unknown.stderr);
}

/// A registration that fails after its rules were written (here: the
/// marker cannot be written) leaves no session entry and no rule.
#[test]
fn a_failed_registration_leaves_no_entry_and_no_rule() {
    require_sessions!();
    let layout = agentd::cgroup::Layout::discover().unwrap();
    fs::create_dir_all(&layout.parent).unwrap();
    let kernel = Kernel::attach(&layout.parent, None).unwrap();
    // A cgroup id no cgroup has (inode numbers are far below), so its
    // slot is its own.
    let cgroup_id = 0x3ff0_0000_u64 + u64::from(std::process::id() & 0xffff);
    let slot = u32::try_from(cgroup_id & 0x3fff_ffff).unwrap();
    let rule = PortRule {
        first: 443,
        last: 443,
        protocols: agentd_common::PROTO_TCP,
        reserved: [0; 3],
    };
    let rules = PortRules {
        count: 1,
        rules: [rule; agentd_common::MAX_PORT_RULES],
    };
    let result = kernel.register(Registration {
        cgroup_id,
        egress: vec![
            ("10.1.2.0/24".parse().unwrap(), rules),
            ("fd00::/64".parse().unwrap(), rules),
        ],
        bind: vec![("127.0.0.1/32".parse().unwrap(), rules)],
        marker: Some(PathBuf::from("/nonexistent/agentd-test/ebpf")),
        ..Registration::default()
    });
    assert!(result.is_err(), "the marker cannot be written");
    assert!(
        !kernel.registered_cgroups().unwrap().contains(&cgroup_id),
        "the session entry was rolled back"
    );
    assert_eq!(
        kernel.slot_rules(slot).unwrap(),
        0,
        "the rules were rolled back"
    );
}

/// `ip netns exec` gives the caller a fresh /sys without the cgroup (and
/// bpf) mounts. A session started there is confined, recorded and ends
/// like any other.
#[test]
fn a_session_inside_ip_netns_exec_runs_and_leaves_nothing() {
    require_sessions!();
    let ns = Netns::create("netns-exec");
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let inner = sb.command(&BINS, &[BINS.probe, "read", "/etc/shadow"]);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("AGENTD_LOG", "warn");
    let run = finish(cmd);
    assert_eq!(run.status, 1, "the probe's refusal: {}", run.stderr);
    assert_eq!(
        run.verdict(),
        Err("EACCES".into()),
        "confined: {}",
        run.stderr
    );
    let id = run.session_id().unwrap();
    assert!(
        wait_record(&id, |r| field(r, "kind") == "session_end").is_some(),
        "recorded"
    );
    assert_session_gone(&id);
}
