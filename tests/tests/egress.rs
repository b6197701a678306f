//! Egress from real sessions: each session runs inside a network namespace
//! the test creates (`nsenter`), so loopback servers there are all it could
//! ever reach; the eBPF programs at the agentd cgroup decide every connect,
//! datagram, bind and socket. Only loopback addresses are used.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{fs, time::Duration};

use agentd_tests::{
    Bins, Netns, Sandbox, Server, assert_session_gone, eventually, field, require_sessions,
    test_policy, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

fn eperm() -> Result<(), String> {
    Err("EPERM".to_owned())
}

/// A namespace with servers: TCP 127.0.0.1:7001 (allowed), 127.0.0.1:7002
/// (not allowed), [::1]:7001, 169.254.169.254:80 (metadata), UDP
/// 127.0.0.1:7003 (allowed) and :7004 (not allowed).
struct World {
    netns: Netns,
    _servers: Vec<Server>,
    udp_log: tempfile::TempDir,
}

impl World {
    fn new(tag: &str) -> Self {
        let netns = Netns::create(tag);
        netns.add_loopback_address("169.254.169.254/32");
        let udp_log = tempfile::tempdir_in("/tmp").unwrap();
        let allowed = udp_log.path().join("7003");
        let denied = udp_log.path().join("7004");
        let servers = vec![
            Server::start(&BINS, &netns, &["serve-tcp", "127.0.0.1", "7001"]),
            Server::start(&BINS, &netns, &["serve-tcp", "127.0.0.1", "7002"]),
            Server::start(&BINS, &netns, &["serve-tcp", "::1", "7001"]),
            Server::start(&BINS, &netns, &["serve-tcp", "169.254.169.254", "80"]),
            Server::start(
                &BINS,
                &netns,
                &["serve-udp", "127.0.0.1", "7003", allowed.to_str().unwrap()],
            ),
            Server::start(
                &BINS,
                &netns,
                &["serve-udp", "127.0.0.1", "7004", denied.to_str().unwrap()],
            ),
        ];
        Self {
            netns,
            _servers: servers,
            udp_log,
        }
    }

    fn datagrams(&self, port: &str) -> String {
        fs::read_to_string(self.udp_log.path().join(port)).unwrap_or_default()
    }
}

fn policy(network: &str) -> String {
    test_policy(&BINS, "", &format!("[network]\n{network}\n"))
}

#[test]
fn connects_follow_the_rules() {
    require_sessions!();
    let world = World::new("egress");
    let sb = Sandbox::new(&policy(
        "allow = [\"127.0.0.1:7001/tcp\", \"127.0.0.1:7003/udp\", \"*:80\"]",
    ));
    let run = |action: &[&str]| sb.probe_in(&BINS, &world.netns, action);

    assert_eq!(
        run(&["connect", "127.0.0.1", "7001"]).verdict(),
        Ok(()),
        "the allowed address and port"
    );
    assert_eq!(
        run(&["connect", "127.0.0.1", "7002"]).verdict(),
        eperm(),
        "another port"
    );
    assert_eq!(
        run(&["connect", "::1", "7001"]).verdict(),
        eperm(),
        "IPv6 without a v6 rule"
    );
    assert_eq!(
        run(&["connect", "::ffff:127.0.0.1", "7002"]).verdict(),
        eperm(),
        "v4-mapped v6 of a denied port"
    );
    assert_eq!(
        run(&["connect", "::ffff:127.0.0.1", "7001"]).verdict(),
        Ok(()),
        "v4-mapped v6 is IPv4"
    );
    assert_eq!(
        run(&["connect", "169.254.169.254", "80"]).verdict(),
        eperm(),
        "cloud metadata stays unreachable even with *:80"
    );
    // From a grandchild too.
    assert_eq!(
        run(&["grandchild", "connect", "127.0.0.1", "7002"]).verdict(),
        eperm()
    );
    assert_eq!(
        run(&["grandchild", "connect", "127.0.0.1", "7001"]).verdict(),
        Ok(())
    );
}

#[test]
fn ipv6_rules_and_names_open_nothing_by_themselves() {
    require_sessions!();
    let world = World::new("egress6");
    let sb = Sandbox::new(&policy("allow = [\"[::1]:7001\", \"localhost:7002\"]"));
    let run = |action: &[&str]| sb.probe_in(&BINS, &world.netns, action);
    assert_eq!(run(&["connect", "::1", "7001"]).verdict(), Ok(()));
    assert_eq!(run(&["connect", "127.0.0.1", "7001"]).verdict(), eperm());
    // A name opens only what agentd's resolver answers for it (tests/dns.rs);
    // /etc/hosts is not asked, and loopback answers are never opened.
    assert_eq!(
        run(&["connect", "127.0.0.1", "7002"]).verdict(),
        eperm(),
        "a name rule is not resolved at start"
    );
}

#[test]
fn udp_datagrams_follow_the_rules() {
    require_sessions!();
    let world = World::new("udp");
    let sb = Sandbox::new(&policy("allow = [\"127.0.0.1:7003/udp\"]"));
    assert_eq!(
        sb.probe_in(&BINS, &world.netns, &["udp-send", "127.0.0.1", "7003"])
            .verdict(),
        Ok(())
    );
    assert_eq!(
        sb.probe_in(&BINS, &world.netns, &["udp-send", "127.0.0.1", "7004"])
            .verdict(),
        eperm()
    );
    assert!(eventually(Duration::from_secs(2), || world
        .datagrams("7003")
        .contains("probe")));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        world.datagrams("7004"),
        "",
        "the refused datagram was not delivered"
    );
}

#[test]
fn raw_sockets_bind_and_listen_are_refused() {
    require_sessions!();
    let world = World::new("bind");
    let sb = Sandbox::new(&policy("allow = []"));
    let run = |action: &[&str]| sb.probe_in(&BINS, &world.netns, action);
    assert_eq!(run(&["raw-socket"]).verdict(), eperm());
    assert_eq!(run(&["packet-socket"]).verdict(), eperm());
    assert_eq!(run(&["bind", "127.0.0.1", "7100"]).verdict(), eperm());
    assert_eq!(run(&["listen"]).verdict(), eperm());

    let with_bind = Sandbox::new(&policy("bind = [\"127.0.0.1:7100\"]"));
    let run = |action: &[&str]| with_bind.probe_in(&BINS, &world.netns, action);
    assert_eq!(
        run(&["bind", "127.0.0.1", "7100"]).verdict(),
        Ok(()),
        "a bind rule allows bind and listen"
    );
    assert_eq!(run(&["bind", "127.0.0.1", "7101"]).verdict(), eperm());
}

#[test]
fn refused_connects_are_audited() {
    require_sessions!();
    let world = World::new("audit");
    let sb = Sandbox::new(&policy("allow = [\"127.0.0.1:7001\"]"));
    let denied = sb.probe_in(&BINS, &world.netns, &["connect", "127.0.0.1", "7002"]);
    assert_eq!(denied.verdict(), eperm());
    let id = denied.session_id().unwrap();
    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "connect"
    })
    .expect("deny record");
    assert_eq!(field(&deny, "address"), "127.0.0.1");
    assert_eq!(deny["port"], 7002);
    assert_eq!(field(&deny, "protocol"), "tcp");
    assert_eq!(field(&deny, "decision"), "deny");
    assert!(field(&deny, "reason").contains("127.0.0.1:7002"));
    let allowed = sb.probe_in(&BINS, &world.netns, &["connect", "127.0.0.1", "7001"]);
    let id = allowed.session_id().unwrap();
    let connect = wait_record(&id, |r| field(r, "kind") == "connect").expect("connect record");
    assert_eq!(field(&connect, "rule"), "127.0.0.1:7001");
    assert_eq!(field(&connect, "decision"), "allow");
    assert_session_gone(&id);
}

/// Enables unprivileged ping sockets in the test namespace, as systemd
/// does on Debian, Ubuntu and Fedora hosts.
fn allow_ping_sockets(netns: &Netns) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns.name(), "sysctl", "-qw"])
        .arg("net.ipv4.ping_group_range=0 2147483647")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The probe run unconfined (as root) in the namespace.
fn bare(netns: &Netns, action: &[&str]) -> String {
    let out = std::process::Command::new(BINS.probe)
        .args(["--netns", netns.name()])
        .args(action)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// ICMP ("ping") sockets send with no egress hook on the way: refused at
/// creation and recorded, whatever the rules; so are raw sockets, other IP
/// protocols and every family but unix, IPv4, IPv6 and route netlink
/// (vsock reaches a VM's hypervisor). getifaddrs keeps working.
#[test]
fn icmp_sockets_and_other_families_are_refused() {
    require_sessions!();
    let world = World::new("families");
    allow_ping_sockets(&world.netns);
    assert_eq!(
        bare(&world.netns, &["socket", "2", "2", "1"]),
        "ok",
        "the host allows ping sockets: the channel exists"
    );
    // `agentd doctor` says so.
    let doctor = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", world.netns.name()))
        .args(["--", BINS.agentd, "doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let ping = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ping-sockets")
        .expect("a ping-sockets line");
    assert!(
        ping["detail"]
            .as_str()
            .unwrap()
            .starts_with("enabled for groups 0-2147483647"),
        "{ping}"
    );
    let sb = Sandbox::new(&policy("allow = [\"*:*\"]"));
    let run = |action: &[&str]| sb.probe_in(&BINS, &world.netns, action);
    let icmp = run(&["socket", "2", "2", "1"]);
    assert_eq!(icmp.verdict(), eperm(), "ICMP over IPv4, even with *:*");
    let id = icmp.session_id().unwrap();
    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "socket"
    })
    .expect("the refusal is recorded");
    assert_eq!(deny["protocol"], 1);
    assert!(field(&deny, "reason").starts_with("ICMP"), "{deny:?}");
    for (family, ty, protocol, what) in [
        ("10", "2", "58", "ICMPv6"),
        ("2", "3", "1", "raw ICMP"),
        ("2", "1", "132", "SCTP"),
        ("2", "2", "136", "UDP-Lite"),
        ("40", "1", "0", "vsock"),
        ("17", "2", "0", "packet"),
        ("38", "5", "0", "alg"),
        ("16", "3", "4", "netlink sock_diag"),
        ("16", "3", "9", "netlink audit"),
        ("16", "3", "15", "netlink uevents"),
    ] {
        let action = ["socket", family, ty, protocol];
        let finished = run(&action);
        let confined = finished.verdict();
        if bare(&world.netns, &action) == "ok" {
            assert_eq!(confined, eperm(), "{what}");
        } else {
            // This kernel lacks it (no SCTP, vsock module...): still no.
            assert!(confined.is_err(), "{what}");
        }
        // Every refusal is recorded, whether the cgroup hook or seccomp
        // refused it, with the family, type and protocol asked for.
        if confined == eperm() {
            let id = finished.session_id().unwrap();
            let deny = wait_record(&id, |r| {
                field(r, "kind") == "deny" && field(r, "what") == "socket"
            })
            .unwrap_or_else(|| panic!("{what}: no deny record"));
            assert_eq!(deny["family"].to_string(), family, "{what}: {deny:?}");
            assert_eq!(deny["type"].to_string(), ty, "{what}: {deny:?}");
            assert_eq!(deny["protocol"].to_string(), protocol, "{what}: {deny:?}");
        }
    }
    // socketpair of another family (TIPC supports it): refused and recorded.
    let pair = run(&["socketpair", "30", "4"]);
    assert_eq!(pair.verdict(), eperm(), "TIPC socketpair");
    let id = pair.session_id().unwrap();
    let deny = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "what") == "socket"
    })
    .expect("the TIPC socketpair refusal is recorded");
    assert_eq!(deny["family"], 30);
    assert_eq!(
        run(&["socketpair", "1", "1"]).verdict(),
        Ok(()),
        "unix socketpair"
    );
    // What agents use.
    for (family, ty, protocol, what) in [
        ("1", "1", "0", "unix stream"),
        ("2", "1", "0", "TCP"),
        ("2", "2", "0", "UDP"),
        ("10", "1", "6", "TCPv6"),
        ("16", "3", "0", "route netlink"),
    ] {
        assert_eq!(
            run(&["socket", family, ty, protocol]).verdict(),
            Ok(()),
            "{what}"
        );
    }
    let ifaddrs = run(&["getifaddrs"]);
    assert_eq!(ifaddrs.verdict(), Ok(()), "{}", ifaddrs.stderr);
    assert!(ifaddrs.value("interfaces").is_some_and(|n| n != "0"));
    assert_session_gone(&id);
}

/// Local addresses hidden in IPv6 forms (NAT64, 6to4, IPv4-compatible)
/// are judged by the IPv4 address they carry; multicast, broadcast and
/// reserved space are never covered by `*`. A public address through
/// NAT64 passes the filter like the address itself.
#[test]
fn local_ranges_in_other_forms_and_multicast_stay_closed() {
    require_sessions!();
    let world = World::new("forms");
    world.netns.add_loopback_address("93.184.216.34/32");
    let _public = Server::start(&BINS, &world.netns, &["serve-tcp", "93.184.216.34", "7001"]);
    let sb = Sandbox::new(&policy("allow = [\"*:7001\", \"*:1900/udp\", \"*:9/udp\"]"));
    let run = |action: &[&str]| sb.probe_in(&BINS, &world.netns, action);
    for addr in [
        "64:ff9b::7f00:1",
        "64:ff9b::a63:1",
        "64:ff9b:1::7f00:1",
        "2002:7f00:1::1",
        "::127.0.0.1",
        "::ffff:127.0.0.1",
        "fec0::1",
        "ff02::1",
    ] {
        assert_eq!(run(&["connect", addr, "7001"]).verdict(), eperm(), "{addr}");
    }
    for (addr, port) in [
        ("239.255.255.250", "1900"),
        ("224.0.0.251", "1900"),
        ("255.255.255.255", "9"),
        ("240.0.0.1", "9"),
        ("198.18.0.1", "9"),
        ("ff02::fb", "1900"),
    ] {
        assert_eq!(run(&["udp-send", addr, port]).verdict(), eperm(), "{addr}");
    }
    // The legitimate use: a public address, and the same address as a
    // DNS64 answer would give it (no route here: the filter let it pass).
    assert_eq!(run(&["connect", "93.184.216.34", "7001"]).verdict(), Ok(()));
    let nat64 = run(&["connect", "64:ff9b::5db8:d822", "7001"]);
    assert_ne!(
        nat64.verdict(),
        eperm(),
        "judged as 93.184.216.34: {}",
        nat64.stdout
    );
}

/// A UDP socket created outside the session (the caller's stdin, in the
/// same network namespace) is judged like the session's own: the kernel
/// picks its hooks by the socket's cgroup, so they must be where every
/// socket meets them.
#[test]
fn an_inherited_udp_socket_follows_the_rules() {
    require_sessions!();
    let world = World::new("inherit");
    let sb = Sandbox::new(&policy("allow = [\"127.0.0.1:7003/udp\"]"));
    // A socket made in the namespace, handed to `agentd run` as stdin.
    let send = |port: &str| {
        let inner = sb.command(&BINS, &[BINS.probe, "udp-send-stdin", "127.0.0.1", port]);
        let script = "import socket, subprocess, sys\n\
                      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                      sys.exit(subprocess.run(sys.argv[1:], stdin=s.fileno()).returncode)\n";
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", world.netns.name()))
            .args(["--", "/usr/bin/python3", "-c", script])
            .arg(inner.get_program())
            .args(inner.get_args());
        agentd_tests::finish(cmd)
    };
    assert_eq!(send("7003").verdict(), Ok(()));
    assert_eq!(send("7004").verdict(), eperm());
    assert!(eventually(Duration::from_secs(2), || world
        .datagrams("7003")
        .contains("probe")));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        world.datagrams("7004"),
        "",
        "the refused datagram was not delivered"
    );
}
