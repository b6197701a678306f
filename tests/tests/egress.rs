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
