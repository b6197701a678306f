//! Pathname unix sockets from real sessions: a root-owned listener on the
//! host (mode 0777, under a directory the policy does not grant) stands for
//! D-Bus, Docker or PostgreSQL. The session may reach only the sockets its
//! policy lists and those it creates under its own `{tmp}` and `{home}`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram, net::UnixListener},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agentd_tests::{Bins, Sandbox, audit_records, field, require_sessions, test_policy, unique};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

/// A host service: a root-owned stream listener (answering "pong") and a
/// datagram socket, both mode 0777, in a directory under `base` that is
/// removed (with its sockets) when the guard drops.
struct HostService {
    dir: PathBuf,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostService {
    fn start(tag: &str) -> Self {
        Self::start_in("/run", tag)
    }

    fn start_in(base: &str, tag: &str) -> Self {
        let dir = Path::new(base).join(unique(tag));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let listener = UnixListener::bind(dir.join("svc.sock")).unwrap();
        let dgram = UnixDatagram::bind(dir.join("dgram.sock")).unwrap();
        for name in ["svc.sock", "dgram.sock"] {
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o777)).unwrap();
        }
        listener.set_nonblocking(true).unwrap();
        dgram
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (Arc::clone(&accepted), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Ok((mut c, _)) = listener.accept() {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut buf = [0u8; 64];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(b"pong\n");
                }
                let mut buf = [0u8; 64];
                if dgram.recv(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            dir,
            accepted,
            stop,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Connections and datagrams that reached the service.
    fn reached(&self) -> usize {
        // Give a datagram in flight the time to be counted.
        std::thread::sleep(Duration::from_millis(200));
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn policy(network: &str) -> String {
    test_policy(&BINS, "", &format!("[network]\n{network}\n"))
}

fn sh(sb: &Sandbox, script: &str) -> agentd_tests::Finished {
    sb.run(&BINS, &["/bin/sh", "-c", script])
}

/// The refusals of a session, as (op, path) pairs.
fn unix_denials(id: &str) -> Vec<(String, String)> {
    audit_records(id)
        .iter()
        .filter(|r| field(r, "kind") == "deny" && field(r, "what") == "unix")
        .map(|r| {
            (
                field(r, "op").to_owned(),
                r.get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

/// Runs every attack on `svc` in one session; returns the session id.
fn attack(svc: &HostService) -> String {
    let sb = Sandbox::new(&policy(""));
    let probe = BINS.probe;
    let svc_sock = svc.path("svc.sock");
    let dgram = svc.path("dgram.sock");
    // The socket by its path; through a symlink, a relative path, `..`
    // and a hard link; and the datagram socket by sendto, connect+send
    // and sendmsg.
    let script = format!(
        "P={probe}; S={svc_sock}; D={dgram}
         $P unix-connect $S; echo direct=$?
         ln -s $S $TMPDIR/link && $P unix-connect $TMPDIR/link; echo symlink=$?
         (cd {dir} 2>/dev/null && $P unix-connect ./svc.sock); echo relative=$?
         (cd $TMPDIR; $P unix-connect ../../../../..$S); echo dotdot=$?
         $P unix-dgram $D; echo sendto=$?
         $P unix-dgram-connected $D; echo dgram_connect=$?
         $P unix-sendmsg $D; echo sendmsg=$?
         ln $S $TMPDIR/hard 2>/dev/null && $P unix-connect $TMPDIR/hard; echo hardlink=$?
         true",
        dir = svc.dir.display(),
    );
    let run = sh(&sb, &script);
    assert_eq!(run.status, 0, "{run:?}");
    for attempt in [
        "direct",
        "symlink",
        "relative",
        "dotdot",
        "sendto",
        "dgram_connect",
        "sendmsg",
        "hardlink",
    ] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{attempt}=")))
            .unwrap_or_else(|| panic!("no {attempt} line: {run:?}"));
        assert_ne!(
            line,
            format!("{attempt}=0"),
            "{attempt} reached the host socket: {run:?}"
        );
    }
    assert!(!run.stdout.contains("reply=pong"), "{run:?}");
    assert_eq!(svc.reached(), 0, "the host service was reached: {run:?}");
    run.session_id().unwrap()
}

#[test]
fn host_unix_sockets_are_refused_and_recorded() {
    require_sessions!();
    // Under /run, which the session sees empty, and under a directory it
    // sees, where agentd's gate refuses them.
    let hidden = HostService::start("unix-host");
    let visible = HostService::start_in("/var/lib", "unix-host");
    for svc in [&hidden, &visible] {
        let id = attack(svc);
        // Each refusal is in the trail with the path.
        let denials = unix_denials(&id);
        for (op, path) in [
            ("connect", svc.path("svc.sock")),
            ("sendto", svc.path("dgram.sock")),
        ] {
            assert!(
                denials.iter().any(|(o, p)| *o == op && *p == path),
                "no deny record for {op} {path}: {denials:?}"
            );
        }
        assert!(
            denials.iter().any(|(op, _)| op == "sendmsg"),
            "no deny record for sendmsg: {denials:?}"
        );
    }
}

#[test]
fn a_listed_unix_socket_is_reachable_and_nothing_else() {
    require_sessions!();
    let svc = HostService::start("unix-listed");
    let svc_sock = svc.path("svc.sock");
    let sb = Sandbox::new(&policy(&format!("unix = [\"{svc_sock}\"]")));
    let run = sb.probe(&BINS, &["unix-connect", &svc_sock]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("reply=pong"), "{run:?}");
    assert_eq!(svc.reached(), 1);
    let id = run.session_id().unwrap();
    let connects: Vec<_> = audit_records(&id)
        .into_iter()
        .filter(|r| field(r, "kind") == "connect" && field(r, "protocol") == "unix")
        .collect();
    assert!(
        connects
            .iter()
            .any(|r| field(r, "path") == svc_sock && field(r, "rule") == svc_sock),
        "{connects:?}"
    );
    // Its neighbour is not listed.
    let run = sb.probe(&BINS, &["unix-dgram", &svc.path("dgram.sock")]);
    assert_ne!(run.status, 0, "{run:?}");
    assert_eq!(svc.reached(), 1);
}

#[test]
fn the_sessions_own_unix_sockets_work() {
    require_sessions!();
    // A listener needs `listen`, which a session has only with a bind rule
    // (seccomp cannot tell a unix socket's listen from an IP one's).
    let sb = Sandbox::new(&policy("bind = [\"127.0.0.1:7999\"]"));
    // Servers and clients of the agent's own in {tmp}, by
    // absolute and relative path, stream and datagram, and glibc's
    // getifaddrs over route netlink.
    let probe = BINS.probe;
    let script = format!(
        "P={probe}
         $P unix-own $TMPDIR/own.sock || exit 10
         cd $TMPDIR && $P unix-own rel.sock ./rel.sock || exit 12
         $P unix-own-dgram $TMPDIR/d.sock || exit 13
         $P getifaddrs || exit 15"
    );
    let run = sh(&sb, &script);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout.matches("reply=own").count(), 3, "{run:?}");
    // Without a bind rule, datagrams still work.
    let sb = Sandbox::new(&policy(""));
    let run = sh(&sb, &format!("{probe} unix-own-dgram $TMPDIR/d.sock"));
    assert_eq!(run.status, 0, "{run:?}");
}

#[test]
fn rewriting_the_address_during_the_check_never_reaches_the_host() {
    require_sessions!();
    let svc = HostService::start("unix-swap");
    // A bind rule, for the probe's own listener.
    let sb = Sandbox::new(&policy("bind = [\"127.0.0.1:7999\"]"));
    let svc_sock = svc.path("svc.sock");
    // The whole 110-byte address is rewritten on each flip.
    let script = format!(
        "{probe} unix-swap $TMPDIR/a.sock {svc_sock} 3000",
        probe = BINS.probe,
    );
    let run = sh(&sb, &script);
    assert_eq!(run.status, 0, "{run:?}");
    let connected: u32 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("connected="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(
        connected > 0,
        "the agent's own socket never connected: {run:?}"
    );
    assert_eq!(
        svc.reached(),
        0,
        "a swapped address reached the host socket: {run:?}"
    );
}

/// The descriptor-swap attack on one host socket: `action` swaps
/// descriptor 100 between an IP socket and a unix socket while connecting
/// (or sending) it to `socket` of `svc`.
fn swap_descriptors(svc: &HostService, action: &str, socket: &str) {
    let sb = Sandbox::new(&policy(""));
    let run = sb.probe(&BINS, &[action, &svc.path(socket), "20000"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("connected=0"), "{run:?}");
    assert_eq!(
        svc.reached(),
        0,
        "a swapped descriptor reached the host socket: {run:?}"
    );
}

#[test]
fn swapping_the_descriptor_during_the_check_never_reaches_the_host() {
    require_sessions!();
    let svc = HostService::start("unix-fdswap");
    swap_descriptors(&svc, "unix-fdswap", "svc.sock");
}

/// The same race against sockets the session can name: outside the host's
/// socket directories (which the session sees empty), in a directory it
/// may traverse but not read.
#[test]
fn swapping_the_descriptor_reaches_no_socket_the_session_can_name() {
    require_sessions!();
    let svc = HostService::start_in("/var/tmp", "unix-fdswap-visible");
    swap_descriptors(&svc, "unix-fdswap", "svc.sock");
    swap_descriptors(&svc, "unix-fdswap-dgram", "dgram.sock");
}

/// An agent that stops its own broker (it has the session's uid) does not
/// stall the gate: its unix connect fails with ETIMEDOUT instead of
/// hanging, the gate still answers its IP connects, and once the broker
/// runs again a late answer is not taken for the next one's.
#[test]
fn a_stopped_broker_does_not_stall_the_gate() {
    require_sessions!();
    // A bind rule, for the probe's own listener.
    let sb = Sandbox::new(&policy("bind = [\"127.0.0.1:7999\"]"));
    let run = sh(
        &sb,
        &format!("exec {probe} unix-stall $TMPDIR/s.sock", probe = BINS.probe),
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("unix=ETIMEDOUT"), "{run:?}");
    assert!(run.stdout.contains("ip=EPERM"), "{run:?}");
    assert!(run.stdout.contains("again=ok"), "{run:?}");
}

/// The descriptor race with a socket created outside the session: the
/// caller's stdin is an unconnected unix datagram socket. The kernel runs
/// its socket hooks by the cgroup a socket was created in, so this one must
/// meet them wherever it came from.
#[test]
fn an_inherited_unix_socket_cannot_be_raced_to_the_host() {
    require_sessions!();
    let svc = HostService::start_in("/var/tmp", "unix-fdswap-stdin");
    let sb = Sandbox::new(&policy(""));
    let stdin = UnixDatagram::unbound().unwrap();
    let run = agentd_tests::finish({
        let mut c = sb.command(
            &BINS,
            &[
                BINS.probe,
                "unix-fdswap-stdin",
                &svc.path("dgram.sock"),
                "20000",
            ],
        );
        c.stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(stdin)));
        c
    });
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("connected=0"), "{run:?}");
    assert_eq!(
        svc.reached(),
        0,
        "an inherited socket reached the host socket: {run:?}"
    );
}

/// A host service on an abstract socket (no file to hide): unreachable
/// from the session (Landlock scoping), and the refusal is recorded.
#[test]
fn host_abstract_sockets_are_refused_and_recorded() {
    require_sessions!();
    use std::os::linux::net::SocketAddrExt as _;
    let name = unique("agentd-test-abstract");
    let listener = UnixListener::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap(),
    )
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let sb = Sandbox::new(&policy(""));
    let run = sb.probe(&BINS, &["unix-connect-abstract", &name]);
    assert_eq!(run.verdict(), Err("EPERM".into()), "{run:?}");
    assert!(
        listener.accept().is_err(),
        "the host's abstract socket was reached"
    );
    let id = run.session_id().unwrap();
    let denied = unix_denials(&id);
    assert!(
        denied
            .iter()
            .any(|(op, path)| op == "connect" && path == &format!("@{name}")),
        "{denied:?}"
    );
}
