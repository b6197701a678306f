//! Whole-policy tests: typed results, every kind of finding, and a property
//! test that no input panics the parser.
use jiff::civil::date;
use proptest::prelude::*;

use super::*;

const TODAY: Date = date(2026, 11, 27);

const FULL: &str = r#"
version = 1

[agent]
name = "coder"
owner = "platform-team"
environment = "production"
trust = "write-restricted"
review_by = "2027-02-01"
data_classes = ["source-code"]

[identity]
user = "dynamic"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc/ssl", "/etc/resolv.conf"]
read_write = ["{workspace}", "{tmp}"]
execute = ["/usr/bin", "/bin"]
protect = [".github/workflows"]

[exec]
allow = ["/usr/bin/git", "/usr/bin/python3*"]
ask = ["/usr/bin/git push*"]

[network]
allow = ["api.example.com:443", "*.github.com:443", "10.1.2.0/24:5432", "[2001:db8::/32]:443"]
ask = ["*:22"]
dns = true

[syscalls]
profile = "default"
deny = ["ptrace"]
allow = []

[limits]
max_processes = 256
memory = "2G"
cpu = "200%"
max_duration = "2h"
open_files = 4096

[env]
pass = ["LANG", "TERM"]
set = { RUST_LOG = "info" }

[secrets]
OPENAI_API_KEY = { file = "/etc/agentd/secrets/openai" }

[audit]
file_events = "writes"
redact = ['(?i)bearer\s+[a-z0-9._~+/-]+=*']
"#;

fn parse(src: &str) -> Checked {
    check(src.as_bytes(), TODAY)
}

fn messages(c: &Checked, severity: Severity) -> Vec<String> {
    c.diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| d.message.clone())
        .collect()
}

/// The spec's example with `patch` applied (`old` → `new`).
fn full_with(old: &str, new: &str) -> String {
    assert!(FULL.contains(old), "{old}");
    FULL.replacen(old, new, 1)
}

#[test]
fn spec_example_parses_into_typed_values() {
    let c = parse(FULL);
    assert_eq!(messages(&c, Severity::Error), Vec::<String>::new());
    assert_eq!(messages(&c, Severity::Warning), Vec::<String>::new());
    let p = c.policy.expect("valid");
    assert_eq!(p.agent.name.as_str(), "coder");
    assert_eq!(p.agent.environment, Environment::Production);
    assert_eq!(p.agent.trust, Trust::WriteRestricted);
    assert_eq!(p.agent.review_by, Some(date(2027, 2, 1)));
    assert_eq!(p.identity, UserSpec::Dynamic);
    assert_eq!(p.filesystem.read_write[0].base(), PathBase::Workspace);
    assert_eq!(p.exec.ask[0].to_string(), "/usr/bin/git push*");
    assert!(p.exec.ask[0].has_args());
    assert_eq!(p.network.allow.len(), 4);
    assert_eq!(
        p.network.allow[1].host,
        HostPattern::Wildcard("github.com".into())
    );
    assert_eq!(p.network.ask[0].host, HostPattern::Any);
    assert_eq!(p.syscalls.deny[0].as_str(), "ptrace");
    assert_eq!(p.limits.max_processes, Some(256));
    assert_eq!(p.limits.memory, Some(ByteSize(2 << 30)));
    assert_eq!(p.limits.cpu, Some(CpuQuota { percent: 200 }));
    assert_eq!(p.limits.max_duration.map(|d| d.0.as_secs()), Some(7200));
    assert_eq!(p.env.set.values().next().map(String::as_str), Some("info"));
    assert_eq!(p.secrets[0].name.as_str(), "OPENAI_API_KEY");
    assert_eq!(p.audit.file_events, FileEvents::Writes);
    assert_eq!(p.audit.redact.len(), 1);
    assert_eq!(p.digest, PolicyDigest::of(FULL.as_bytes()));
}

#[test]
fn minimal_policy_gets_safe_defaults() {
    let c = parse("version = 1\n[agent]\nname = \"min\"\n");
    let p = c.policy.as_ref().expect("valid");
    assert_eq!(p.identity, UserSpec::Dynamic);
    assert!(p.filesystem.read.is_empty());
    assert!(p.exec.allow.is_empty());
    assert!(p.network.allow.is_empty());
    assert!(p.network.dns);
    assert_eq!(p.syscalls.profile, SyscallProfile::Default);
    assert!(!p.limits.present);
    let warnings = messages(&c, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.starts_with("no [limits]")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with("no [agent] owner")),
        "{warnings:?}"
    );
}

#[test]
fn digest_is_over_exact_bytes() {
    let a = parse(FULL).digest;
    let b = parse(&format!("{FULL}\n")).digest;
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 64);
    assert_eq!(
        PolicyDigest::of(b"").as_str(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn required_fields() {
    let c = parse("[agent]\nname = \"x\"\n");
    assert_eq!(messages(&c, Severity::Error), ["missing `version`"]);
    let c = parse("version = 1\n");
    assert_eq!(messages(&c, Severity::Error), ["missing [agent] table"]);
    let c = parse("version = 1\n[agent]\nowner = \"x\"\n");
    assert_eq!(messages(&c, Severity::Error), ["missing `name` in [agent]"]);
    let c = parse("version = 2\n[agent]\nname = \"x\"\n");
    assert_eq!(
        messages(&c, Severity::Error),
        ["unsupported policy version 2"]
    );
}

#[test]
fn unknown_keys_everywhere_are_errors_with_suggestions() {
    for (old, new, key, table, hint) in [
        (
            "[limits]\n",
            "[limits]\nmax_proceses = 3\n",
            "max_proceses",
            "limits",
            "did you mean `max_processes`?",
        ),
        (
            "[network]\n",
            "[network]\nallwo = []\n",
            "allwo",
            "network",
            "did you mean `allow`?",
        ),
        (
            "[agent]\n",
            "[agent]\ntrusted = 1\n",
            "trusted",
            "agent",
            "did you mean `trust`?",
        ),
        (
            "[audit]\n",
            "[audit]\nredaction = []\n",
            "redaction",
            "audit",
            "did you mean `redact`?",
        ),
    ] {
        let c = parse(&full_with(old, new));
        let d = &c.diagnostics[0];
        assert_eq!(d.message, format!("unknown key `{key}` in [{table}]"));
        assert_eq!(d.hint.as_deref(), Some(hint));
        assert!(c.policy.is_none());
    }
    let c = parse(&full_with("[limits]", "[limit]"));
    assert_eq!(c.diagnostics[0].message, "unknown table [limit]");
    assert_eq!(
        c.diagnostics[0].hint.as_deref(),
        Some("did you mean `limits`?")
    );
    let c = parse(&full_with(
        "OPENAI_API_KEY = { file = \"/etc/agentd/secrets/openai\" }",
        "OPENAI_API_KEY = { file = \"/x\", mode = 1 }",
    ));
    assert_eq!(c.diagnostics[0].message, "unknown key `mode` in [secrets]");
}

#[test]
fn wrong_types_and_values() {
    let c = parse(&full_with(
        "max_processes = 256",
        "max_processes = \"many\"",
    ));
    assert_eq!(
        messages(&c, Severity::Error),
        ["wrong type in [limits]: found string \"many\", expected an integer"]
    );
    let c = parse(&full_with(
        "environment = \"production\"",
        "environment = \"prod\"",
    ));
    assert_eq!(
        messages(&c, Severity::Error),
        ["unknown value `prod` in [agent]"]
    );
    assert_eq!(
        c.diagnostics[0].hint.as_deref(),
        Some("did you mean `production`?")
    );
    let c = parse(&full_with("dns = true", "dns = \"yes\""));
    assert_eq!(
        messages(&c, Severity::Error),
        ["wrong type in [network]: found string \"yes\", expected a boolean"]
    );
}

#[test]
fn semantic_errors_are_all_reported_with_spans() {
    let src = full_with(
        "read_write = [\"{workspace}\", \"{tmp}\"]",
        "read_write = [\"/\", \"/usr\", \"{tmpdir}\", \"/sys/kernel\"]",
    );
    let c = parse(&src);
    let errors = messages(&c, Severity::Error);
    assert_eq!(
        errors,
        [
            "/ cannot be writable",
            "/usr cannot be writable",
            "unknown placeholder {tmpdir}",
            "/sys/kernel cannot be writable"
        ]
    );
    for d in c.diagnostics.iter().filter(|d| d.is_error()) {
        let span = d.span.clone().expect("span");
        assert!(src[span].starts_with('"'), "span points at the value");
    }
}

#[test]
fn identity_refuses_root() {
    for user in ["root", "0"] {
        let c = parse(&full_with(
            "user = \"dynamic\"",
            &format!("user = \"{user}\""),
        ));
        assert_eq!(
            messages(&c, Severity::Error),
            ["an agent cannot run as root"]
        );
    }
    let c = parse(&full_with("user = \"dynamic\"", "user = \"agent-coder\""));
    assert_eq!(
        c.policy.map(|p| p.identity),
        Some(UserSpec::Named("agent-coder".into()))
    );
}

#[test]
fn env_and_secret_conflicts() {
    let c = parse(&full_with(
        "pass = [\"LANG\", \"TERM\"]",
        "pass = [\"LANG\", \"OPENAI_API_KEY\"]",
    ));
    assert_eq!(
        messages(&c, Severity::Error),
        ["OPENAI_API_KEY is given more than once in [env] and [secrets]"]
    );
    let c = parse(&full_with(
        "set = { RUST_LOG = \"info\" }",
        "set = { TRACEPARENT = \"x\" }",
    ));
    assert_eq!(
        messages(&c, Severity::Error),
        ["TRACEPARENT is set by agentd"]
    );
    let c = parse(&full_with(
        "{ file = \"/etc/agentd/secrets/openai\" }",
        "{ file = \"{home}/key\" }",
    ));
    assert_eq!(
        messages(&c, Severity::Error),
        ["secret file {home}/key must be an absolute host path"]
    );
}

#[test]
fn warnings_for_risky_but_legal_choices() {
    let cases = [
        (
            "review_by = \"2027-02-01\"",
            "review_by = \"2026-01-01\"",
            "review date 2026-01-01 has passed",
        ),
        (
            "allow = [\"/usr/bin/git\", ",
            "allow = [\"/usr/bin/*\", ",
            "production policy allows a shell (/usr/bin/* matches /usr/bin/sh)",
        ),
        (
            "allow = [\"/usr/bin/git\", ",
            "allow = [\"/bin/bash\", ",
            "production policy allows the shell /bin/bash",
        ),
        (
            "allow = [\"api.example.com:443\"",
            "allow = [\"*:*\"",
            "*:* allows egress to every public address",
        ),
        (
            "allow = [\"api.example.com:443\"",
            "allow = [\"0.0.0.0/0:443\"",
            "0.0.0.0/0:443 allows egress to every public address",
        ),
        (
            "read = [\"/usr\"",
            "read = [\"/home\"",
            "/home grants read access to users' home directories",
        ),
        (
            "read = [\"/usr\"",
            "read = [\"/root/project\"",
            "/root/project grants read access to root's home directory",
        ),
        (
            "read = [\"/usr\"",
            "read = [\"/srv/keys/.ssh\"",
            "/srv/keys/.ssh grants read access to SSH keys",
        ),
        (
            "pass = [\"LANG\"",
            "pass = [\"GITHUB_TOKEN\"",
            "GITHUB_TOKEN looks like a credential passed from the caller's environment",
        ),
        (
            "RUST_LOG = \"info\"",
            "RUST_LOG = \"ghp_abc\"",
            "the value of RUST_LOG looks like a credential in the policy file",
        ),
        (
            "trust = \"write-restricted\"",
            "trust = \"read-only\"",
            "trust is read-only but {workspace} is writable",
        ),
        (
            "allow = [\"/usr/bin/git\", ",
            "allow = [\"/opt/tool\", ",
            "/opt/tool is not under any [filesystem] execute path",
        ),
        (
            "allow = []\n",
            "allow = [\"ptrace\"]\n",
            "syscall ptrace is both allowed and denied",
        ),
        (
            "allow = []\n",
            "allow = [\"bpf\"]\n",
            "allowing bpf re-opens a syscall the default profile denies",
        ),
        (
            "dns = true",
            "dns = false",
            "api.example.com:443 names a host but dns = false",
        ),
    ];
    for (old, new, expected) in cases {
        let c = parse(&full_with(old, new));
        let all: Vec<String> = c.diagnostics.iter().map(|d| d.message.clone()).collect();
        assert!(
            all.iter().any(|m| m == expected),
            "{new}: expected {expected:?} in {all:?}"
        );
    }
    // Warnings alone keep the policy valid.
    let c = parse(&full_with(
        "review_by = \"2027-02-01\"",
        "review_by = \"2026-01-01\"",
    ));
    assert!(c.policy.is_some());
}

#[test]
fn toml_dates_are_accepted() {
    let c = parse(&full_with(
        "review_by = \"2027-02-01\"",
        "review_by = 2027-02-01",
    ));
    assert_eq!(
        c.policy.and_then(|p| p.agent.review_by),
        Some(date(2027, 2, 1))
    );
    let c = parse(&full_with(
        "review_by = \"2027-02-01\"",
        "review_by = \"next year\"",
    ));
    assert_eq!(messages(&c, Severity::Error), ["invalid date next year"]);
}

#[test]
fn non_utf8_is_an_error() {
    let c = check(b"version = 1\n\xff\n", TODAY);
    assert_eq!(
        messages(&c, Severity::Error),
        ["the file is not valid UTF-8"]
    );
}

#[test]
fn secret_files_must_be_root_only() {
    let p = parse(FULL).policy.expect("valid");
    let facts =
        |uid, mode, is_file| move |_: &std::path::Path| Ok(Some(FileFacts { uid, mode, is_file }));
    assert!(check_secret_files(&p, facts(0, 0o100600, true)).is_empty());
    let d = check_secret_files(&p, facts(0, 0o100644, true));
    assert_eq!(
        d[0].message,
        "secret file /etc/agentd/secrets/openai is readable by group or others (mode 0644)"
    );
    assert_eq!(
        d[0].hint.as_deref(),
        Some("chmod 600 /etc/agentd/secrets/openai")
    );
    let d = check_secret_files(&p, facts(0, 0o100640, true));
    assert!(d[0].is_error());
    let d = check_secret_files(&p, facts(1000, 0o100600, true));
    assert_eq!(
        d[0].message,
        "secret file /etc/agentd/secrets/openai is not owned by root (uid 1000)"
    );
    let d = check_secret_files(&p, facts(0, 0o040700, false));
    assert_eq!(
        d[0].message,
        "secret file /etc/agentd/secrets/openai is not a regular file"
    );
    let d = check_secret_files(&p, |_| Ok(None));
    assert_eq!(d[0].severity, Severity::Warning);
    // The span points at the file name in the source.
    let span = d[0].span.clone().expect("span");
    assert_eq!(&FULL[span], "\"/etc/agentd/secrets/openai\"");
}

/// Lines built from the schema's own keys and plausible values, so that the
/// property test reaches validation, not just TOML syntax errors.
fn policy_like() -> impl Strategy<Value = String> {
    let tables = prop::sample::select(vec![
        "agent",
        "identity",
        "filesystem",
        "exec",
        "network",
        "syscalls",
        "limits",
        "env",
        "audit",
        "secrets",
        "bogus",
    ]);
    let keys = prop::sample::select(vec![
        "name",
        "owner",
        "environment",
        "trust",
        "review_by",
        "user",
        "read",
        "read_write",
        "execute",
        "protect",
        "allow",
        "ask",
        "dns",
        "profile",
        "deny",
        "max_processes",
        "memory",
        "cpu",
        "max_duration",
        "open_files",
        "pass",
        "set",
        "file_events",
        "redact",
        "version",
    ]);
    let values = prop::sample::select(vec![
        "1",
        "0",
        "-1",
        "true",
        "\"\"",
        "\"x\"",
        "\"/usr\"",
        "[\"/usr\", \"{workspace}\"]",
        "[\"*:*\"]",
        "[\"a:0\"]",
        "\"2G\"",
        "\"200%\"",
        "\"1h\"",
        "{ A = \"b\" }",
        "[\"(\"]",
        "2027-01-01",
        "[1, 2]",
        "\"production\"",
        "\"dynamic\"",
        "[\"{x}/y\"]",
        "[\"[::1]:1\"]",
    ]);
    let line = (tables, prop::collection::vec((keys, values), 0..4)).prop_map(|(t, kv)| {
        let mut s = format!("[{t}]\n");
        for (k, v) in kv {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    });
    prop::collection::vec(line, 0..6)
        .prop_map(|tables| format!("version = 1\n[agent]\nname = \"p\"\n{}", tables.concat()))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let c = check(&bytes, TODAY);
        for d in &c.diagnostics {
            let _ = d.render("p.toml", &c.source);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let c = check(text.as_bytes(), TODAY);
        for d in &c.diagnostics {
            let _ = d.render("p.toml", &c.source);
        }
    }

    #[test]
    fn policy_shaped_input_never_panics(src in policy_like()) {
        let c = check(src.as_bytes(), TODAY);
        prop_assert_eq!(c.policy.is_some(), !c.has_errors());
        for d in &c.diagnostics {
            let _ = d.render("p.toml", &c.source);
        }
        if let Some(p) = &c.policy {
            let _ = explain::Inventory::of(p);
        }
    }
}

#[test]
fn io_uring_cannot_be_allowed() {
    let c = parse(&full_with("allow = []", "allow = [\"io_uring_setup\"]"));
    let errors = messages(&c, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("io_uring performs connects")),
        "{errors:?}"
    );
}

#[test]
fn unix_entries_warn_about_host_services_and_writable_directories() {
    let policy = |unix: &str| {
        format!(
            "version = 1\n[agent]\nname = \"u\"\n[filesystem]\nread_write = [\"{{workspace}}\"]\n\
             [network]\nunix = [{unix}]\n"
        )
    };
    let warnings = |unix: &str| messages(&parse(&policy(unix)), Severity::Warning);
    let w = warnings("\"{workspace}/app.sock\"");
    assert!(
        w.iter().any(|m| m.contains("which the agent may write")),
        "{w:?}"
    );
    let w = warnings("\"/run/docker.sock\"");
    assert!(w.iter().any(|m| m.contains("Docker daemon")), "{w:?}");
    let w = warnings("\"/run/postgresql/.s.PGSQL.5432\"");
    assert!(
        !w.iter()
            .any(|m| m.contains("may write") || m.contains("connect to")),
        "{w:?}"
    );
}

#[test]
fn argument_patterns_and_asks_next_to_allow_are_accepted() {
    // The exec gate enforces both: ask before allow.
    let c = parse(&full_with(
        "allow = [\"/usr/bin/git\", \"/usr/bin/python3*\"]",
        "allow = [\"/usr/bin/git\", \"/usr/bin/git status*\", \"/usr/bin/python3*\"]",
    ));
    assert_eq!(messages(&c, Severity::Error), Vec::<String>::new());
    let p = c.policy.expect("valid");
    assert!(p.exec.allow[1].has_args());
}

#[test]
fn diagnostics_show_the_policy_text_with_controls_escaped() {
    for (src, shown) in [
        ("version = 1\n[agent]\nname = \"a\u{1b}[31m\"\n", "a\\e[31m"),
        (
            "version = 1\n# x \u{1b}]0;PWNED\u{7}\u{1b}[2K\rFAKE LINE\n",
            "\\e]0;PWNED\\x07\\e[2K\\rFAKE LINE",
        ),
    ] {
        let c = parse(src);
        let rendered: String = c
            .diagnostics
            .iter()
            .map(|d| d.render("p.toml", &c.source))
            .collect();
        assert!(
            !rendered.chars().any(|ch| ch.is_control() && ch != '\n'),
            "{rendered:?}"
        );
        assert!(rendered.contains(shown), "{rendered}");
    }
}
