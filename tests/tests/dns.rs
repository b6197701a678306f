//! Live DNS allowlists: each session's DNS reaches agentd's resolver
//! whatever server it asks, only policy names are answered (the others
//! never reach the upstream), and only answered addresses open, for their
//! TTL. Everything runs in a network namespace the test creates: the
//! upstream is the test's own DNS server on 127.0.0.2, the "internet" is
//! documentation addresses on the namespace's loopback.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "integration test helpers: a failed step fails the test"
)]
use std::{fs, path::PathBuf, process::Command};

use agentd_tests::{
    Bins, Finished, Netns, Sandbox, Server, field, finish, require_sessions, wait_record,
};

const BINS: Bins = Bins {
    agentd: env!("CARGO_BIN_EXE_agentd-under-test"),
    probe: env!("CARGO_BIN_EXE_agentd-probe"),
};

/// The namespace, its upstream DNS server and a TCP server on every
/// address at port 443.
struct World {
    netns: Netns,
    dir: tempfile::TempDir,
    _servers: Vec<Server>,
}

const RECORDS: &[&str] = &[
    "allowed.test=203.0.113.10@300",
    "allowed.test=2001:db8::10@300",
    "other.test=203.0.113.11@300",
    "api.wild.test=203.0.113.12@300",
    "wild.test=203.0.113.13@300",
    "alias.test=cname:target.test@300",
    "target.test=203.0.113.14@300",
    "short.test=203.0.113.15@1",
];

impl World {
    fn new(tag: &str) -> Self {
        let netns = Netns::create(tag);
        for a in [
            "203.0.113.10/32",
            "203.0.113.11/32",
            "203.0.113.12/32",
            "203.0.113.13/32",
            "203.0.113.14/32",
            "203.0.113.15/32",
            "203.0.113.53/32",
            "2001:db8::10/128",
        ] {
            netns.add_loopback_address(a);
        }
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let log = dir.path().join("upstream.log");
        let mut args = vec!["serve-dns", "127.0.0.2", log.to_str().unwrap()];
        args.extend_from_slice(RECORDS);
        let servers = vec![
            Server::start(&BINS, &netns, &args),
            Server::start(&BINS, &netns, &["serve-tcp", "::", "443"]),
        ];
        Self {
            netns,
            dir,
            _servers: servers,
        }
    }

    /// What the upstream server was asked.
    fn upstream_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("upstream.log")).unwrap_or_default()
    }

    /// Runs `script` (sh) in a session with `network` as its policy's
    /// `[network]` table.
    fn run(&self, network: &str, script: &str) -> Finished {
        self.run_with(network, script, &[])
    }

    fn run_with(&self, network: &str, script: &str, env: &[(&str, &str)]) -> Finished {
        let sb = Sandbox::new(&policy(network));
        let mut cmd = sb.command_in(&BINS, &self.netns, &["/bin/sh", "-c", script]);
        cmd.env("AGENTD_DNS_UPSTREAM", "127.0.0.2");
        for (k, v) in env {
            cmd.env(k, v);
        }
        finish(cmd)
    }
}

fn policy(network: &str) -> String {
    let probe_dir = BINS.probe_dir().display().to_string();
    format!(
        r#"version = 1

[agent]
name = "dns-test"
owner = "agentd-tests"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf", "{probe_dir}"]
read_write = ["{{workspace}}", "{{tmp}}"]
execute = ["{probe_dir}", "/usr/bin", "/bin", "/usr/lib", "/lib", "/lib64"]

[network]
{network}
"#
    )
}

fn p() -> PathBuf {
    PathBuf::from(BINS.probe)
}

/// `probe ACTION...` as a line of shell.
fn probe(action: &str) -> String {
    format!("{} {action}", p().display())
}

const ALLOW: &str =
    r#"allow = ["allowed.test:443", "*.wild.test:443", "alias.test:443", "short.test:443"]"#;

#[test]
fn allowed_names_resolve_and_connect_others_never_leave_the_host() {
    require_sessions!();
    let w = World::new("dns1");
    let run = w.run(
        ALLOW,
        &[
            probe("resolve allowed.test"),
            probe("connect 203.0.113.10 443"),
            probe("connect 2001:db8::10 443"),
            probe("resolve other.test"),
            probe("connect 203.0.113.11 443"),
            "true".into(),
        ]
        .join("; "),
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"address 203.0.113.10"), "{}", run.stdout);
    assert!(lines.contains(&"address 2001:db8::10"), "{}", run.stdout);
    // resolve, connect v4, connect v6 all ok; other.test unresolved; its
    // address (never answered to this session) refused.
    assert_eq!(
        lines.iter().filter(|l| **l == "ok").count(),
        3,
        "{}",
        run.stdout
    );
    assert!(lines.contains(&"errno UNRESOLVED"), "{}", run.stdout);
    assert_eq!(lines.last(), Some(&"errno EPERM"), "{}", run.stdout);
    let upstream = w.upstream_log();
    assert!(upstream.contains("allowed.test. A"), "{upstream}");
    assert!(
        !upstream.contains("other.test"),
        "leaked upstream: {upstream}"
    );

    let id = run.session_id().unwrap();
    let refused = wait_record(&id, |r| {
        field(r, "kind") == "dns" && field(r, "name") == "other.test"
    })
    .unwrap();
    assert_eq!(field(&refused, "decision"), "deny");
    assert_eq!(field(&refused, "rcode"), "REFUSED");
    let answered = wait_record(&id, |r| {
        field(r, "kind") == "dns" && field(r, "name") == "allowed.test" && field(r, "type") == "A"
    })
    .unwrap();
    assert_eq!(field(&answered, "rule"), "allowed.test:443");
    assert_eq!(answered["answers"][0], "A 203.0.113.10");
    // Connects to answered addresses name what was asked and the rule
    // that admitted it; an address never answered has no name.
    for address in ["203.0.113.10", "2001:db8::10"] {
        let connect = wait_record(&id, |r| {
            field(r, "kind") == "connect" && field(r, "address") == address
        })
        .unwrap();
        assert_eq!(field(&connect, "domain"), "allowed.test", "{connect:?}");
        assert_eq!(field(&connect, "rule"), "allowed.test:443", "{connect:?}");
    }
    let denied = wait_record(&id, |r| {
        field(r, "kind") == "deny" && field(r, "address") == "203.0.113.11"
    })
    .unwrap();
    assert!(denied.get("domain").is_none(), "{denied:?}");
    let logs = finish({
        let mut c = Command::new(BINS.agentd);
        c.args(["logs", "--session", &id]);
        c
    });
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.contains(" dns ") && l.contains("other.test REFUSED")),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.contains("tcp 203.0.113.10:443 [allowed.test] (allowed.test:443)")),
        "{}",
        logs.stdout
    );
}

#[test]
fn wildcards_cover_names_below_not_the_parent_and_cnames_are_followed() {
    require_sessions!();
    let w = World::new("dns2");
    let run = w.run(
        ALLOW,
        &[
            probe("resolve API.Wild.Test."),
            probe("connect 203.0.113.12 443"),
            probe("resolve wild.test"),
            probe("connect 203.0.113.13 443"),
            probe("resolve alias.test"),
            probe("connect 203.0.113.14 443"),
        ]
        .join("; "),
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "address 203.0.113.12",
            "ok",
            "ok",
            "errno UNRESOLVED",
            "errno EPERM",
            "address 203.0.113.14",
            "ok",
            "ok"
        ],
        "{}",
        run.stderr
    );
    assert!(
        !w.upstream_log().contains(" wild.test."),
        "{}",
        w.upstream_log()
    );
}

#[test]
fn any_server_and_tcp_reach_the_same_gate() {
    require_sessions!();
    let w = World::new("dns3");
    // 192.0.2.1 is nowhere in this namespace: only the redirect to the
    // session's resolver can answer.
    let run = w.run(
        ALLOW,
        &[
            probe("dns-query 192.0.2.1 allowed.test A udp"),
            probe("dns-query 192.0.2.1 allowed.test A tcp"),
            probe("dns-query 2001:db8::53 allowed.test AAAA udp"),
            probe("dns-query 192.0.2.1 other.test A tcp"),
            probe("dns-query 127.0.0.2 other.test TXT udp"),
        ]
        .join("; "),
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "rcode No Error",
            "answer A 203.0.113.10",
            "ok",
            "rcode No Error",
            "answer A 203.0.113.10",
            "ok",
            "rcode No Error",
            "answer AAAA 2001:db8::10",
            "ok",
            "rcode Query Refused",
            "ok",
            "rcode Query Refused",
            "ok"
        ],
        "{}",
        run.stderr
    );
    let upstream = w.upstream_log();
    assert!(upstream.contains("allowed.test. A tcp") || upstream.contains("allowed.test. A udp"));
    assert!(
        !upstream.contains("other.test"),
        "leaked upstream: {upstream}"
    );
}

#[test]
fn https_to_a_resolver_not_allowed_is_plain_egress_and_denied() {
    require_sessions!();
    let w = World::new("dns4");
    // A DNS-over-HTTPS endpoint is an HTTPS server like any other.
    let run = w.run(ALLOW, &probe("connect 203.0.113.53 443"));
    assert_eq!(run.verdict(), Err("EPERM".to_owned()), "{}", run.stderr);
}

#[test]
fn answers_stop_opening_after_their_ttl_and_grace() {
    require_sessions!();
    let w = World::new("dns5");
    // short.test has a 1 s TTL; bounds 1..1 s plus 1 s grace.
    let run = w.run_with(
        ALLOW,
        &[
            probe("resolve short.test"),
            probe("connect 203.0.113.15 443"),
            "sleep 4".into(),
            probe("connect 203.0.113.15 443"),
        ]
        .join("; "),
        &[("AGENTD_DNS_TTL", "1,1,1")],
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        ["address 203.0.113.15", "ok", "ok", "errno EPERM"],
        "{}",
        run.stderr
    );
}

#[test]
fn without_dns_nothing_is_resolved_or_asked() {
    require_sessions!();
    let w = World::new("dns6");
    let run = w.run(
        &format!("{ALLOW}\ndns = false"),
        &[
            probe("resolve allowed.test"),
            probe("dns-query 127.0.0.2 allowed.test A udp"),
            probe("dns-query 127.0.0.2 allowed.test A tcp"),
        ]
        .join("; "),
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        ["errno UNRESOLVED", "errno EPERM", "errno EPERM"],
        "{}",
        run.stderr
    );
    assert!(w.upstream_log().is_empty(), "{}", w.upstream_log());
}

#[test]
fn port_53_is_never_ordinary_egress() {
    require_sessions!();
    let w = World::new("dns7");
    // A resolver on an address `*:*` reaches: still refused when the
    // policy names no host (no resolver for the session) or says dns =
    // false.
    let log = w.dir.path().join("public.log");
    let _public = Server::start(
        &BINS,
        &w.netns,
        &[
            "serve-dns",
            "203.0.113.53",
            log.to_str().unwrap(),
            "allowed.test=203.0.113.10",
        ],
    );
    for network in ["allow = [\"*:*\"]", "allow = [\"*:*\"]\ndns = false"] {
        let run = w.run(
            network,
            &[
                probe("dns-query 203.0.113.53 allowed.test A udp"),
                probe("dns-query 203.0.113.53 allowed.test A tcp"),
                probe("connect 203.0.113.53 443"),
            ]
            .join("; "),
        );
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(
            lines,
            ["errno EPERM", "errno EPERM", "ok"],
            "{network}: {}",
            run.stderr
        );
    }
    assert!(fs::read_to_string(&log).unwrap_or_default().is_empty());
}

/// The session's resolver listens where any local process can reach it;
/// it answers only the session's own processes. An outsider's flood gets
/// no answer, writes nothing to the session's trail, opens nothing and
/// evicts nothing the session resolved.
#[test]
fn the_resolver_answers_only_its_sessions_processes() {
    use std::io::BufRead as _;
    require_sessions!();
    let w = World::new("dns-out");
    let sb = Sandbox::new(&policy(ALLOW));
    let script = [
        probe("resolve allowed.test"),
        "echo resolved".into(),
        "sleep 6".into(),
        probe("connect 203.0.113.10 443"),
    ]
    .join("; ");
    let mut cmd = sb.command_in(&BINS, &w.netns, &["/bin/sh", "-c", &script]);
    cmd.env("AGENTD_DNS_UPSTREAM", "127.0.0.2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("resolved") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    // The session's resolver: the 127.53.0.0/16 address bound to port 53.
    let ss = finish({
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", w.netns.name())).args([
            "--",
            "ss",
            "-Hlun",
            "sport = :53",
        ]);
        c
    });
    let resolver = ss
        .stdout
        .split_whitespace()
        .find_map(|f| f.strip_suffix(":53").filter(|a| a.starts_with("127.53.")))
        .unwrap_or_else(|| panic!("no resolver in {ss:?}"))
        .to_owned();
    // The outsider is root in the same namespace: still not the session.
    let flood = finish({
        let mut c = Command::new(BINS.probe);
        c.args([
            "--netns",
            w.netns.name(),
            "dns-flood",
            "1500",
            &resolver,
            "allowed.test",
        ]);
        c
    });
    assert!(
        flood.stdout.contains("udp_answered=0 tcp_answered=0"),
        "{flood:?}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}{rest}");
    // The session's own connect still works after the flood.
    assert!(rest.lines().any(|l| l == "ok"), "{seen}{rest}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let id = agentd_tests::session_id_from(&stderr).unwrap();
    let records = agentd_tests::audit_records(&id);
    assert!(
        !records
            .iter()
            .any(|r| field(r, "kind") == "dns" && field(r, "name").starts_with('q')),
        "an outsider's query is in the session's trail"
    );
    assert!(
        !w.upstream_log().contains("q1.allowed.test"),
        "{}",
        w.upstream_log()
    );
}
