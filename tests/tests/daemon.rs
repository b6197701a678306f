//! The daemon: its socket survives bad input, it authorizes by credentials
//! and audits refusals, runs sessions for its groups (100 at once) with
//! their resolvers on its `[dns]` settings, and a SIGKILLed daemon leaves
//! its sessions confined and killable by the next one. Each test runs its own daemon on its own socket, one at a time.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    time::Duration,
};

use agentd::daemon::proto::{self, Request, Response};
use agentd_tests::{
    AUDIT_LOG, Bins, Netns, Sandbox, Server, assert_session_gone, eventually, field, finish,
    require_sessions, session_id_from, test_policy, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

/// One daemon at a time: they share the host's programs and collector.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A group every Debian/Ubuntu host has, used as the run group.
const RUN_GROUP: &str = "users";
const RUN_GID: u32 = 100;
/// A uid no account uses.
const STRANGER: u32 = 42_4242;

/// A daemon with its own config and socket, stopped (and its sessions
/// killed) on drop.
struct TestDaemon {
    dir: tempfile::TempDir,
    netns: Option<String>,
    /// Start inside this cgroup, as systemd would start the unit.
    unit: Option<PathBuf>,
    child: Option<Child>,
}

impl TestDaemon {
    fn start(netns: Option<&Netns>) -> Self {
        Self::start_in(netns, None)
    }

    fn start_in(netns: Option<&Netns>, unit: Option<PathBuf>) -> Self {
        Self::start_configured(netns, unit, "")
    }

    /// With `tables` (TOML) after the test settings in its config.
    fn start_configured(netns: Option<&Netns>, unit: Option<PathBuf>, tables: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agentd-test-daemon-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            dir.path().join("agentd.toml"),
            format!(
                "run_group = \"{RUN_GROUP}\"\nadmin_group = \"agentd-test-no-such-group\"\nmetrics_listen = \"unix:{}\"\n{tables}",
                dir.path().join("metrics.sock").display()
            ),
        )
        .unwrap();
        let mut d = Self {
            dir,
            netns: netns.map(|n| n.name().to_owned()),
            unit,
            child: None,
        };
        d.launch();
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agentd.sock")
    }

    fn launch(&mut self) {
        let mut cmd = match (&self.netns, &self.unit) {
            (Some(ns), _) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(BINS.agentd);
                c
            }
            (None, Some(unit)) => {
                // Join the unit's cgroup, then become the daemon, with
                // systemd's marker in the environment.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                        unit.display()
                    ))
                    .arg(BINS.agentd)
                    .env("INVOCATION_ID", "agentd-test");
                c
            }
            (None, None) => Command::new(BINS.agentd),
        };
        let log = fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = cmd
            .arg("daemon")
            .arg("--config")
            .arg(self.dir.path().join("agentd.toml"))
            .env("AGENTD_SOCKET", self.socket())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.socket();
        assert!(
            eventually(Duration::from_secs(20), || UnixStream::connect(&socket)
                .is_ok()),
            "the daemon did not come up: {}",
            self.log()
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An `agentd` command aimed at this daemon.
    fn agentd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BINS.agentd);
        c.args(args).env("AGENTD_SOCKET", self.socket());
        c
    }

    /// The same, as `uid` with only the supplementary groups given.
    fn agentd_as(&self, uid: u32, groups: &[u32], args: &[&str]) -> Command {
        let mut c = as_user(uid, groups);
        c.arg(BINS.agentd)
            .args(args)
            .env("AGENTD_SOCKET", self.socket());
        c
    }

    /// Starts `agentd run ARGS` through this daemon (stdout as given,
    /// stderr kept) and returns it with its session id, once known.
    fn start_run(&self, args: &[String], stdout: Stdio) -> Running {
        let mut child = self
            .agentd(&strs(args))
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let id = session_id_from(&first).unwrap_or_else(|| panic!("{first}{}", self.log()));
        Running { child, stderr, id }
    }

    /// Waits until session `id` has its agent running.
    fn wait_running(&self, id: &str) {
        assert!(eventually(Duration::from_secs(10), || {
            let ps = finish(self.agentd(&["ps", "--json"]));
            ps.stdout.contains(id) && ps.stdout.contains("\"running\"")
        }));
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(self.socket()).unwrap()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            if !eventually(Duration::from_secs(10), || {
                c.try_wait().ok().flatten().is_some()
            }) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// An `agentd run` in progress.
struct Running {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
    id: String,
}

impl Running {
    /// The rest of its stderr and its exit status.
    fn finish(mut self) -> (String, Option<i32>) {
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        (rest, self.child.wait().unwrap().code())
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `setpriv … --`: what follows runs as `uid` (and its gid) with only the
/// supplementary groups given.
fn as_user(uid: u32, groups: &[u32]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg(format!("--groups={}", list.join(",")));
    }
    c.arg("--");
    c
}

/// A workspace (and readable policy) for `uid`, removed on drop.
fn sandbox_for(uid: u32, policy: &str) -> Sandbox {
    let sb = Sandbox::new(policy);
    let top = sb.policy().parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(sb.policy(), fs::Permissions::from_mode(0o644)).unwrap();
    nix::unistd::chown(&sb.workspace(), Some(uid.into()), Some(uid.into())).unwrap();
    sb
}

fn run_args(sb: &Sandbox, argv: &[&str]) -> Vec<String> {
    let mut v = vec![
        "run".to_owned(),
        "--policy".into(),
        sb.policy().display().to_string(),
        "--workspace".into(),
        sb.workspace().display().to_string(),
        "--no-tty".into(),
        "--".into(),
    ];
    v.extend(argv.iter().map(|s| (*s).to_owned()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn malformed_truncated_oversized_and_random_messages_get_errors() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);
    let frame = |body: &[u8]| {
        let mut f = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let answer = |s: &UnixStream| proto::recv::<Response>(s).map(|(r, _)| r);

    // Bad JSON, another version, an unknown request: an error each, and
    // the same connection still serves.
    let mut s = d.connect();
    for bad in [
        &b"{not json"[..],
        br#"{"v":9,"msg":{"type":"ps"}}"#,
        br#"{"v":1,"msg":{"type":"format_disk"}}"#,
        br#"{"v":1,"msg":{"type":"kill","session":["x"]}}"#,
    ] {
        s.write_all(&frame(bad)).unwrap();
        assert!(
            matches!(answer(&s), Ok(Response::Error { code: 2, .. })),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    proto::send(&s, &Request::Ps {}, &[]).unwrap();
    assert!(matches!(answer(&s), Ok(Response::Sessions { .. })));

    // Oversized: refused before anything is read, connection closed.
    let mut s = d.connect();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(matches!(answer(&s), Ok(Response::Error { .. })));
    assert!(answer(&s).is_err());

    // Truncated: the caller vanishes mid-frame.
    let mut s = d.connect();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"v\":1").unwrap();
    drop(s);

    // Random streams (fixed seed): whatever they are, the daemon lives on.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let mut s = d.connect();
        let len = usize::try_from(x % 300).unwrap();
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(u8::try_from(x & 0xff).unwrap());
        }
        if round % 2 == 0 {
            bytes = frame(&bytes);
        }
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let s = d.connect();
    proto::send(&s, &Request::Ps {}, &[]).unwrap();
    assert!(
        matches!(answer(&s), Ok(Response::Sessions { .. })),
        "{}",
        d.log()
    );
    // The configured listener serves the same exposition over HTTP.
    let mut m = UnixStream::connect(d.dir.path().join("metrics.sock")).unwrap();
    m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut http = String::new();
    m.read_to_string(&mut http).unwrap();
    assert!(http.starts_with("HTTP/1.0 200 OK"), "{http}");
    assert!(http.contains("agentd_sessions "), "{http}");
    let metrics = finish(d.agentd(&["metrics"]));
    assert_eq!(metrics.status, 0, "{}", metrics.stderr);
    assert!(
        metrics
            .stdout
            .lines()
            .any(|l| l.starts_with("agentd_requests_malformed_total ") && !l.ends_with(" 0")),
        "{}",
        metrics.stdout
    );
}

#[test]
fn callers_are_authorized_by_their_groups_and_refusals_are_audited() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);

    // Outside the run group: refused (77) before the request is read, and
    // recorded with the uid.
    let out = finish(d.agentd_as(STRANGER, &[], &["ps"]));
    assert_eq!(out.status, 77, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("not in group {RUN_GROUP}")),
        "{}",
        out.stderr
    );
    let trail = fs::read_to_string(AUDIT_LOG).unwrap();
    assert!(
        trail
            .lines()
            .rev()
            .take(50)
            .any(|l| l.contains("\"kind\":\"deny\"")
                && l.contains(&format!("\"caller_uid\":{STRANGER}"))
                && l.contains("\"request\":\"any\"")),
        "no deny record for uid {STRANGER}"
    );

    // A member runs sessions in its own workspace, as a dynamic user,
    // with its files stored as its own.
    let sb = sandbox_for(STRANGER, &test_policy(&BINS, "", ""));
    let args = run_args(&sb, &[BINS.probe, "write", "made-by-agent"]);
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, d.log());
    let id = session_id_from(&out.stderr).unwrap();
    let made = fs::metadata(sb.workspace().join("made-by-agent")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), STRANGER);
    let start = wait_record(&id, |r| field(r, "kind") == "session_start").unwrap();
    assert_eq!(start["caller_uid"], STRANGER);

    // ...but not in someone else's workspace.
    let other = Sandbox::new(&test_policy(&BINS, "", ""));
    let args = run_args(&other, &["/bin/true"]);
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_eq!(out.status, 77, "{}", out.stderr);
    assert!(out.stderr.contains("is not yours"), "{}", out.stderr);

    // Admin requests are refused to members.
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &["disable", "escape-test"]));
    assert_eq!(out.status, 77, "{}", out.stderr);

    // A member reads its own sessions' records through the daemon.
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &["logs", "--session", &id]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("session_start"), "{}", out.stdout);
}

#[test]
fn a_hundred_concurrent_runs_complete() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let args = run_args(&sb, &[BINS.probe, "echo-args", "hello"]);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| scope.spawn(|| finish(d.agentd(&strs(&args)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = std::collections::HashSet::new();
    for r in &results {
        assert_eq!(r.status, 0, "{}\n{}", r.stderr, d.log());
        assert!(r.stdout.contains("hello"));
        ids.insert(session_id_from(&r.stderr).unwrap());
    }
    assert_eq!(ids.len(), 100);
    for id in &ids {
        assert_session_gone(id);
    }
}

#[test]
fn sessions_it_starts_resolve_through_their_resolver_with_its_dns_settings() {
    require_sessions!();
    let _one = lock();
    let netns = Netns::create("ddns");
    for a in ["203.0.113.10/32", "203.0.113.11/32"] {
        netns.add_loopback_address(a);
    }
    let upstream = tempfile::tempdir_in("/tmp").unwrap();
    let log = upstream.path().join("upstream.log");
    let _servers = [
        Server::start(
            &BINS,
            &netns,
            &[
                "serve-dns",
                "127.0.0.2",
                log.to_str().unwrap(),
                "allowed.test=203.0.113.10@300",
                "other.test=203.0.113.11@300",
            ],
        ),
        Server::start(&BINS, &netns, &["serve-tcp", "0.0.0.0", "443"]),
    ];
    // The upstream and the lifetimes come from the daemon's config only:
    // the host's resolv.conf names no server in this namespace, and the
    // answer's 300 s TTL is cut to 1 s plus 1 s of grace.
    let d = TestDaemon::start_configured(
        Some(&netns),
        None,
        "[dns]\nupstream = [\"127.0.0.2\"]\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"\ngrace = \"1s\"\n",
    );
    let sb = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[network]\nallow = [\"allowed.test:443\"]\n",
    ));
    let probe = |action: &str| format!("{} {action}", BINS.probe);
    let script = [
        probe("dns-query 192.0.2.1 allowed.test A udp"),
        probe("connect 203.0.113.10 443"),
        probe("dns-query 192.0.2.1 other.test A udp"),
        probe("connect 203.0.113.11 443"),
        "sleep 3".to_owned(),
        probe("connect 203.0.113.10 443"),
    ]
    .join("; ");
    let run = finish(d.agentd(&strs(&run_args(&sb, &["/bin/sh", "-c", &script]))));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "rcode No Error",
            "answer A 203.0.113.10",
            "ok",
            "ok",
            "rcode Query Refused",
            "ok",
            "errno EPERM",
            "errno EPERM",
        ],
        "{}\n{}",
        run.stderr,
        d.log()
    );
    let asked = fs::read_to_string(&log).unwrap_or_default();
    assert!(asked.contains("allowed.test. A udp"), "{asked}");
    assert!(!asked.contains("other.test"), "leaked upstream: {asked}");
    let id = session_id_from(&run.stderr).unwrap();
    let refused = wait_record(&id, |r| {
        field(r, "kind") == "dns" && field(r, "name") == "other.test"
    })
    .unwrap();
    assert_eq!(field(&refused, "rcode"), "REFUSED");
    assert_session_gone(&id);
}

#[test]
fn sessions_stay_confined_and_killable_across_a_daemon_crash() {
    require_sessions!();
    let _one = lock();
    let netns = Netns::create("dcrash");
    let mut d = TestDaemon::start(Some(&netns));
    let sb = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[network]\nallow = [\"127.0.0.1:7001/tcp\"]\n",
    ));
    let args = run_args(
        &sb,
        &[BINS.probe, "connect-repeat", "50", "127.0.0.1", "7002"],
    );
    let mut run = d.start_run(&args, Stdio::piped());
    let id = run.id.clone();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = run.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let expect_denied = |when: &str| {
        for _ in 0..3 {
            let l = lines.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(l, "errno EPERM", "{when}");
        }
    };
    expect_denied("with the daemon up");

    d.crash();
    // Drain what was printed meanwhile, then the connects go on denied.
    while lines.try_recv().is_ok() {}
    expect_denied("with the daemon dead");
    assert!(
        Path::new("/run/agentd/sessions").join(&id).exists(),
        "the session outlives its daemon"
    );

    d.launch();
    expect_denied("after the restart");
    let kill = finish(d.agentd(&["kill", &id, "--reason", "test over"]));
    assert_eq!(kill.status, 0, "{}\n{}", kill.stderr, d.log());
    assert!(kill.stdout.contains("killed session"), "{}", kill.stdout);
    assert_eq!(run.finish().1, Some(128 + libc::SIGKILL));
    assert_session_gone(&id);
    let killed = wait_record(&id, |r| field(r, "kind") == "kill").unwrap();
    assert_eq!(field(&killed, "reason"), "test over");
}

#[test]
fn a_vanished_caller_leaves_nothing_behind() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let args = run_args(&sb, &[BINS.probe, "sleep", "60"]);
    let mut run = d.start_run(&args, Stdio::null());
    let id = run.id.clone();
    run.child.kill().unwrap();
    let _ = run.child.wait();
    assert_session_gone(&id);
    let killed = wait_record(&id, |r| field(r, "kind") == "kill").unwrap();
    assert_eq!(field(&killed, "reason"), "the caller went away");
}

/// Enables the agent again however the test ends.
struct Reenable(&'static str);

impl Drop for Reenable {
    fn drop(&mut self) {
        let _ = agentd::session::disabled::clear(self.0);
    }
}

#[test]
fn a_disabled_agent_is_killed_and_refused_until_enabled() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);
    const AGENT: &str = "daemon-disable-test";
    let _reenable = Reenable(AGENT);
    let sb = Sandbox::new(&test_policy(&BINS, "", "").replace("escape-test", AGENT));
    let args = run_args(&sb, &[BINS.probe, "sleep", "60"]);
    let run = d.start_run(&args, Stdio::null());
    let id = run.id.clone();
    d.wait_running(&id);

    let out = finish(d.agentd(&["disable", AGENT, "--reason", "incident 7"]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("agent {AGENT} disabled (1 sessions killed)"))
    );
    let (rest, status) = run.finish();
    assert_eq!(status, Some(128 + libc::SIGKILL));
    assert!(rest.contains("killed (agent disabled)"), "{rest}");
    let end = wait_record(&id, |r| field(r, "kind") == "session_end").unwrap();
    assert_eq!(field(&end, "reason"), "disabled");

    let refused = finish(d.agentd(&strs(&run_args(&sb, &["/bin/true"]))));
    assert_eq!(refused.status, 125, "{}", refused.stderr);
    assert!(refused.stderr.contains("is disabled"), "{}", refused.stderr);
    assert!(refused.stderr.contains("incident 7"), "{}", refused.stderr);

    let out = finish(d.agentd(&["enable", AGENT]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let ok = finish(d.agentd(&strs(&run_args(&sb, &["/bin/true"]))));
    assert_eq!(ok.status, 0, "{}", ok.stderr);
}

/// A cgroup standing in for a systemd unit with `Delegate=yes`, and the
/// parent record the daemon writes in it; removed on drop (after the
/// daemon, which is declared later and dropped first).
struct FakeUnit {
    path: PathBuf,
}

impl Drop for FakeUnit {
    fn drop(&mut self) {
        let _ = fs::remove_file(agentd::cgroup::PARENT_RECORD);
        for leaf in ["sessions", "daemon"] {
            let cg = agentd::cgroup::Cgroup::open(self.path.join(leaf));
            let _ = cg.kill(Duration::from_secs(5));
            let _ = cg.remove();
        }
        let _ = agentd::cgroup::Cgroup::open(&self.path).remove();
    }
}

#[test]
fn under_a_delegating_unit_sessions_live_in_the_units_cgroup() {
    require_sessions!();
    let _one = lock();
    let root = agentd::cgroup::cgroup2_root().unwrap();
    let unit = FakeUnit {
        path: root.join(format!("agentd-test-{}.service", std::process::id())),
    };
    fs::create_dir(&unit.path).unwrap();
    let d = TestDaemon::start_in(None, Some(unit.path.clone()));
    let pid = d.child.as_ref().unwrap().id();
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.trim_end().ends_with(".service/daemon"), "{own}");
    assert_eq!(
        fs::read_to_string(agentd::cgroup::PARENT_RECORD).unwrap(),
        unit.path.join("sessions").display().to_string()
    );

    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let args = run_args(&sb, &[BINS.probe, "sleep", "60"]);
    let run = d.start_run(&args, Stdio::null());
    let id = run.id.clone();
    let leaf = unit.path.join("sessions").join(&id);
    assert!(
        eventually(Duration::from_secs(10), || fs::read_to_string(
            leaf.join("cgroup.procs")
        )
        .is_ok_and(|p| !p.trim().is_empty())),
        "the session's processes are not in {}",
        leaf.display()
    );
    let kill = finish(d.agentd(&["kill", &id]));
    assert_eq!(kill.status, 0, "{}", kill.stderr);
    let _ = run.finish();
    assert!(eventually(Duration::from_secs(5), || !leaf.exists()));
}

#[test]
fn sigterm_kills_sessions_unless_told_to_leave_them() {
    require_sessions!();
    let _one = lock();
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let args = run_args(&sb, &[BINS.probe, "sleep", "60"]);
    for leave in [false, true] {
        let mut d = TestDaemon::start(None);
        if leave {
            // Restart with on_stop = "leave".
            d.crash();
            let config = d.dir.path().join("agentd.toml");
            let mut text = fs::read_to_string(&config).unwrap();
            text.push_str("on_stop = \"leave\"\n");
            fs::write(&config, text).unwrap();
            d.launch();
        }
        let mut run = d.start_run(&args, Stdio::null());
        let id = run.id.clone();
        d.wait_running(&id);
        drop(d); // SIGTERM
        if leave {
            assert!(
                run.child.try_wait().unwrap().is_none(),
                "on_stop = leave: the session runs on"
            );
            assert!(Path::new("/run/agentd/sessions").join(&id).exists());
            // No daemon now: root kills it directly.
            let mut kill = Command::new(BINS.agentd);
            kill.args(["kill", &id]);
            let kill = finish(kill);
            assert_eq!(kill.status, 0, "{}", kill.stderr);
        }
        let (rest, status) = run.finish();
        assert_eq!(status, Some(128 + libc::SIGKILL), "{rest}");
        if !leave {
            assert!(rest.contains("the daemon stopped"), "{rest}");
        }
        assert_session_gone(&id);
    }
}

/// A daemon stopping with `on_stop = "kill"` ends the sessions daemons
/// started, not those root runs in embedded mode (they have their own
/// supervisor, and their caller is waiting for them).
#[test]
fn sigterm_spares_sessions_the_daemon_did_not_start() {
    require_sessions!();
    let _one = lock();
    let sb = Sandbox::new(&test_policy(&BINS, "", ""));
    let d = TestDaemon::start(None);
    let run = d.start_run(&run_args(&sb, &[BINS.probe, "sleep", "60"]), Stdio::null());
    let daemon_id = run.id.clone();
    d.wait_running(&daemon_id);
    // Embedded: this process is root and no daemon answers on the default
    // socket.
    let agentd_tests::Started {
        child: mut embedded,
        id: embedded_id,
        stderr: _embedded_stderr,
    } = agentd_tests::start(
        sb.command(&BINS, &[BINS.probe, "sleep", "60"])
            .stdout(Stdio::null()),
    );
    assert!(eventually(Duration::from_secs(10), || {
        fs::read_to_string(
            Path::new("/run/agentd/sessions")
                .join(&embedded_id)
                .join("state.json"),
        )
        .is_ok_and(|s| s.contains("\"pid\": "))
    }));

    drop(d); // SIGTERM, on_stop = "kill"
    let (rest, status) = run.finish();
    assert_eq!(status, Some(128 + libc::SIGKILL), "{rest}");
    assert_session_gone(&daemon_id);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        embedded.try_wait().unwrap().is_none(),
        "the embedded session was killed by a daemon that did not start it"
    );
    let kill = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["kill", &embedded_id]);
        c
    });
    assert_eq!(kill.status, 0, "{}", kill.stderr);
    let status = embedded.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert_session_gone(&embedded_id);
}

/// A policy allowing `n` single addresses (each its own kernel rule).
fn many_rules_policy(n: u32) -> String {
    let many: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "\"10.{}.{}.{}:443\"",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    test_policy(
        &BINS,
        "",
        &format!("[network]\nallow = [{}]\n", many.join(", ")),
    )
}

/// One caller cannot take the shared kernel maps for itself: a member of
/// the run group whose policy compiles to thousands of rules is refused
/// with a clear error, root's sessions have a ceiling too, and a session
/// started next to them runs.
#[test]
fn one_caller_cannot_fill_the_shared_maps() {
    require_sessions!();
    let _one = lock();
    let d = TestDaemon::start(None);
    let sb = sandbox_for(STRANGER, &many_rules_policy(3000));
    let args = run_args(&sb, &["/bin/true"]);
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_ne!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("kernel rules") && out.stderr.contains("at most 1024"),
        "{}",
        out.stderr
    );
    let root = Sandbox::new(&many_rules_policy(17_000));
    let out = finish(d.agentd(&strs(&run_args(&root, &["/bin/true"]))));
    assert_ne!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("at most 16384"), "{}", out.stderr);

    // Within its share, the member's session runs, and so does another
    // caller's next to it.
    let sb = sandbox_for(STRANGER, &many_rules_policy(1000));
    let args = run_args(&sb, &[BINS.probe, "echo-args", "member"]);
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, d.log());
    let other = Sandbox::new(&test_policy(
        &BINS,
        "",
        "[network]\nallow = [\"10.9.9.9:443\"]\n",
    ));
    let out = finish(d.agentd(&strs(&run_args(&other, &[BINS.probe, "echo-args", "fine"]))));
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, d.log());
    assert!(out.stdout.contains("fine"), "{}", out.stdout);

    // Together, a member's sessions hold at most a quarter of a trie: with
    // sixteen of 1000 rules running, a seventeenth is refused.
    let sb = sandbox_for(STRANGER, &many_rules_policy(1000));
    let args = run_args(&sb, &[BINS.probe, "sleep", "60"]);
    let running: Vec<Child> = (0..16)
        .map(|_| {
            d.agentd_as(STRANGER, &[RUN_GID], &strs(&args))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(60), || {
            let ps = finish(d.agentd(&["ps", "--json"]));
            ps.stdout.matches("\"running\"").count() >= 16
        }),
        "{}",
        d.log()
    );
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_ne!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("all sessions of a caller other than root together"),
        "{}",
        out.stderr
    );
    let out = finish(d.agentd(&strs(&run_args(&other, &[BINS.probe, "echo-args", "fine"]))));
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, d.log());
    for mut c in running {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The trail says where a session's policy came from. The attack: a
/// client claims a policy file in the policy directory that does not
/// exist, with text of its own, so that `session_start` would name a
/// vetted policy. Refused; a policy from outside the directory is
/// recorded as the client's text.
#[test]
fn a_claimed_policy_path_is_verified_or_recorded_as_the_clients() {
    require_sessions!();
    let _serial = lock();
    let d = TestDaemon::start(None);
    let sb = sandbox_for(STRANGER, &test_policy(&BINS, "", ""));
    let stdio: Vec<std::os::fd::OwnedFd> = (0..3)
        .map(|_| fs::File::open("/dev/null").unwrap().into())
        .collect();
    let claimed = Path::new(agentd::paths::POLICY_DIR).join("agentd-test-no-such-policy.toml");
    let s = d.connect();
    let run = proto::RunRequest {
        policy_path: claimed.clone(),
        policy: fs::read_to_string(sb.policy()).unwrap(),
        workspace: Some(sb.workspace()),
        cwd: sb.workspace(),
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    let fds: Vec<i32> = stdio.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    proto::send(&s, &Request::Run(run), &fds).unwrap();
    match proto::recv::<Response>(&s).map(|(r, _)| r) {
        Ok(Response::Error { message, code, .. }) => {
            assert_eq!(code, 77, "{message}");
            assert!(message.contains("is not a policy file"), "{message}");
        }
        other => panic!("a made-up policy path was accepted: {other:?}"),
    }

    // The legitimate use: a policy of the caller's own, recorded as such.
    let args = run_args(&sb, &["/bin/true"]);
    let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
    assert_eq!(out.status, 0, "{}\n{}", out.stderr, d.log());
    let id = session_id_from(&out.stderr).unwrap();
    let start = wait_record(&id, |r| field(r, "kind") == "session_start").unwrap();
    assert_eq!(start["policy_source"], "client", "{start:?}");
    assert_eq!(
        start["policy_path"],
        sb.policy().display().to_string(),
        "{start:?}"
    );
}

/// The daemon resolves a caller's program with the caller's permissions.
/// The attack: naming files in a directory only root can read, to learn
/// from the answer which of them exist ("cannot execute" against "not
/// found"). Both answers are the same; a program the caller can reach
/// still runs.
#[test]
fn a_callers_program_is_looked_up_with_the_callers_permissions() {
    require_sessions!();
    let _serial = lock();
    let d = TestDaemon::start(None);
    let secret_dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(secret_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let exists = secret_dir.path().join("exists");
    fs::write(&exists, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&exists, fs::Permissions::from_mode(0o755)).unwrap();
    let sb = sandbox_for(STRANGER, &test_policy(&BINS, "", ""));
    let answer = |program: &Path| {
        let args = run_args(&sb, &[&program.display().to_string()]);
        let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &strs(&args)));
        (out.status, out.stderr)
    };
    let (present, present_err) = answer(&exists);
    let (absent, _) = answer(&secret_dir.path().join("nothing"));
    assert_eq!(present, 127, "{present_err}");
    assert_eq!(absent, 127);
    assert!(present_err.contains("command not found"), "{present_err}");
    let (status, stderr) = answer(Path::new("/bin/true"));
    assert_eq!(status, 0, "{stderr}");
}

/// Connections of one caller, held open with a request that never ends.
struct Flood(Child);

impl Flood {
    /// `n` connections as `uid` with `groups`, each sending the length of a
    /// 1 MiB request and nothing more; returns once it reports how many are
    /// still open after the daemon's answers.
    fn start(d: &TestDaemon, uid: u32, groups: &[u32], n: usize) -> (Self, usize) {
        let script = r#"
import socket, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError:
        continue
    try:
        s.sendall(struct.pack('>I', 1 << 20))
    except OSError:
        continue
    held.append(s)
time.sleep(1)
alive = 0
for s in held:
    s.setblocking(False)
    try:
        s.recv(65536)
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
print(f"alive={alive}", flush=True)
time.sleep(120)
"#;
        let mut child = as_user(uid, groups)
            .args(["/usr/bin/python3", "-c", script])
            .arg(d.socket())
            .arg(n.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let alive = line
            .trim()
            .strip_prefix("alive=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        (Self(child), alive)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon cannot be locked out. The attack: hundreds of connections
/// that announce a 1 MiB request and never finish it, from a caller in the
/// run group and from one in no group (a session's user is such a one).
/// The first holds at most its share, the second nothing; root and other
/// members are still served; the outsider's refusals make a record or
/// two with a count, not one per connection.
#[test]
fn one_caller_cannot_lock_the_daemon() {
    require_sessions!();
    let _serial = lock();
    let d = TestDaemon::start(None);
    // A uid of this run's own: the trail keeps earlier runs' records.
    let outsider = STRANGER + 100 + std::process::id() % 100_000;
    let (_member, held) = Flood::start(&d, STRANGER, &[RUN_GID], 100);
    assert_eq!(
        held, 32,
        "a member's connections beyond its share are refused"
    );
    let (_outsider, held) = Flood::start(&d, outsider, &[], 600);
    assert_eq!(held, 0, "a caller in no group is refused before it is read");

    let ps = finish(d.agentd(&["ps"]));
    assert_eq!(ps.status, 0, "root: {}", ps.stderr);
    let ps = finish(d.agentd_as(STRANGER + 1, &[RUN_GID], &["ps"]));
    assert_eq!(ps.status, 0, "another member: {}", ps.stderr);

    let trail = fs::read_to_string(AUDIT_LOG).unwrap_or_default();
    let records: Vec<&str> = trail
        .lines()
        .filter(|l| {
            l.contains("\"kind\":\"deny\"") && l.contains(&format!("\"caller_uid\":{outsider}"))
        })
        .collect();
    assert!(
        (1..=2).contains(&records.len()),
        "{} records for 600 refusals",
        records.len()
    );
    assert!(records[0].contains("\"count\":"), "{}", records[0]);
}

/// Sessions of callers other than root run within the daemon's
/// `[caller_limits]`: a policy without limits gets them, one asking for
/// more is lowered; root's sessions keep the policy's.
#[test]
fn members_sessions_run_within_the_daemons_limits() {
    require_sessions!();
    let _serial = lock();
    let d = TestDaemon::start_configured(
        None,
        None,
        "[caller_limits]\nopen_files = 1000\nmax_processes = 300\n",
    );
    let script = "ulimit -n; sleep 1";
    let limits_of = |sb: &Sandbox, uid: Option<u32>| {
        let args = run_args(sb, &["/bin/sh", "-c", script]);
        let mut cmd = match uid {
            Some(uid) => d.agentd_as(uid, &[RUN_GID], &strs(&args)),
            None => d.agentd(&strs(&args)),
        };
        let agentd_tests::Started {
            mut child,
            id,
            stderr: _stderr,
        } = agentd_tests::start(cmd.stdout(Stdio::piped()));
        // pids.max where the host keeps it (cgroup2, or v1 on hybrid hosts).
        let layout = agentd::cgroup::Layout::discover().unwrap();
        let dir = match layout.locate(agentd::cgroup::Controller::Pids) {
            Some(Some(v1)) => v1.join("agentd").join(&id),
            _ => layout.parent.join(&id),
        };
        let mut pids = String::new();
        let _ = eventually(Duration::from_secs(5), || {
            pids = fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
            !pids.is_empty()
        });
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success(), "{out}");
        (out.trim().to_owned(), pids.trim().to_owned())
    };
    let unlimited = sandbox_for(STRANGER, &test_policy(&BINS, "", ""));
    assert_eq!(
        limits_of(&unlimited, Some(STRANGER)),
        ("1000".to_owned(), "300".to_owned())
    );
    let greedy = test_policy(
        &BINS,
        "",
        "[limits]\nopen_files = 5000\nmax_processes = 4000\n",
    );
    let greedy = sandbox_for(STRANGER, &greedy);
    assert_eq!(
        limits_of(&greedy, Some(STRANGER)),
        ("1000".to_owned(), "300".to_owned())
    );
    assert_eq!(
        limits_of(&greedy, None),
        ("5000".to_owned(), "4000".to_owned()),
        "root's sessions keep the policy's limits"
    );
}

/// A member's workspace is looked at with the member's permissions and
/// must be its own, whatever policy it names (one in the policy directory
/// included). The attack: naming `--workspace` paths in a directory only
/// root can read, to learn from the answers which exist and which are
/// directories.
#[test]
fn a_members_workspace_tells_nothing_of_roots_files() {
    require_sessions!();
    let _serial = lock();
    let policies = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(policies.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let vetted = policies.path().join("vetted.toml");
    fs::write(&vetted, test_policy(&BINS, "", "")).unwrap();
    fs::set_permissions(&vetted, fs::Permissions::from_mode(0o644)).unwrap();
    let d = TestDaemon::start_configured(
        None,
        None,
        &format!("policy_dir = \"{}\"\n", policies.path().display()),
    );
    let secret_dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(secret_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(secret_dir.path().join("file"), "").unwrap();
    fs::create_dir(secret_dir.path().join("dir")).unwrap();
    let answer = |workspace: &Path| {
        let args = [
            "run",
            "--policy",
            &vetted.display().to_string(),
            "--workspace",
            &workspace.display().to_string(),
            "--no-tty",
            "--",
            "/bin/true",
        ];
        let out = finish(d.agentd_as(STRANGER, &[RUN_GID], &args));
        let message = out.stderr.replace(&workspace.display().to_string(), "WS");
        (out.status, message)
    };
    let answers: Vec<_> = ["file", "dir", "nothing"]
        .iter()
        .map(|n| answer(&secret_dir.path().join(n)))
        .collect();
    assert_eq!(answers[0].0, 77, "{answers:?}");
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "the answers differ: {answers:?}"
    );
    // Someone else's directory, with a vetted policy: refused too.
    let (status, message) = answer(secret_dir.path());
    assert_eq!(status, 77, "{message}");
}
