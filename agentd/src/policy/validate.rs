//! From the raw TOML structs to a [`Policy`], collecting every error and
//! warning with its span.
use std::{collections::BTreeMap, ops::Range, path::Path};

use jiff::civil::Date;
use toml::Spanned;

use super::{
    Agent, Audit, Diagnostic, Enforcement, Env, Exec, Filesystem, Limits, Network, Policy,
    PolicyDigest, Secret, Syscalls, UserSpec, VERSION,
    diagnostic::enclosing_table,
    schema::{Environment, RawPolicy, Trust},
    types::{
        AgentName, ByteSize, CpuQuota, EnvName, ExecPattern, Invalid, NetRule, PathBase,
        PathTemplate, ProtectPath, SyscallName, WallDuration, closest,
    },
};

/// Variables agentd sets itself; a policy cannot set or pass them.
const RESERVED_ENV: &[&str] = &["AGENTD_SESSION_ID", "TRACEPARENT"];

/// Directories no policy may make writable as a whole.
const NEVER_WRITABLE: &[&str] = &["/", "/etc", "/usr", "/proc", "/sys", "/dev", "/boot"];
/// Trees nothing below which may be writable (kernel interfaces).
const NEVER_WRITABLE_BELOW: &[&str] = &["/proc", "/sys", "/boot"];

/// Programs that are shells (or run arbitrary commands like one).
const SHELLS: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/bin/dash",
    "/bin/zsh",
    "/bin/ksh",
    "/bin/csh",
    "/bin/busybox",
    "/usr/bin/sh",
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/zsh",
    "/usr/bin/fish",
    "/usr/bin/ksh",
    "/usr/bin/tcsh",
    "/usr/bin/busybox",
];

/// Syscalls the default profile denies; allowing one is worth a warning.
pub(crate) const DANGEROUS_SYSCALLS: &[&str] = &[
    "bpf",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "open_by_handle_at",
    "personality",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
];

/// Substrings that mark a value as a credential (used for warnings only;
/// redaction has its own, stricter list).
const TOKEN_MARKERS: &[&str] = &[
    "sk-",
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "-----BEGIN",
    "Bearer ",
];

struct Validator<'s> {
    source: &'s str,
    diags: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, invalid: Invalid) {
        let mut d = Diagnostic::error(span, invalid.message);
        d.hint = invalid.hint;
        self.diags.push(d);
    }

    fn warn(&mut self, span: impl Into<Option<Range<usize>>>, msg: impl Into<String>, hint: &str) {
        self.diags
            .push(Diagnostic::warning(span, msg).with_hint(hint.to_owned()));
    }

    /// Parses one spanned string, recording the error if any.
    fn value<T>(
        &mut self,
        v: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        match parse(v.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(v.span(), e);
                None
            }
        }
    }

    /// Parses a list, keeping the span of each good value.
    fn list<T>(
        &mut self,
        items: &[Spanned<String>],
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Vec<(T, Range<usize>)> {
        items
            .iter()
            .filter_map(|v| self.value(v, &parse).map(|t| (t, v.span())))
            .collect()
    }

    /// Turns a serde/TOML error into a located diagnostic with a hint.
    fn syntax(&mut self, err: &toml::de::Error) {
        self.diags.push(syntax_diagnostic(self.source, err));
    }
}

/// Turns a serde/TOML error in `source` into a located diagnostic with a
/// hint (shared by every TOML file agentd reads).
pub(crate) fn syntax_diagnostic(source: &str, err: &toml::de::Error) -> Diagnostic {
    let span = err.span().unwrap_or(0..0);
    let msg = err.message().trim();
    let table = enclosing_table(source, span.start)
        .map(|t| format!(" in [{t}]"))
        .unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let hint = match closest(key, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None if known.is_empty() => "remove it".to_owned(),
            None => format!("known keys here: {}", known.join(", ")),
        };
        let line_start = source[..span.start.min(source.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let in_header = source[line_start..].trim_start().starts_with('[');
        if in_header {
            Diagnostic::error(span, format!("unknown table [{key}]")).with_hint(hint)
        } else {
            Diagnostic::error(span, format!("unknown key `{key}`{table}")).with_hint(hint)
        }
    } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let hint = match closest(value, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of: {}", known.join(", ")),
        };
        Diagnostic::error(span, format!("unknown value `{value}`{table}")).with_hint(hint)
    } else if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        let (what, hint) = match field {
            "version" => (
                "missing `version`".to_owned(),
                format!("add `version = {VERSION}` as the first line"),
            ),
            "agent" => (
                "missing [agent] table".to_owned(),
                "add an [agent] table with at least `name = \"...\"`".to_owned(),
            ),
            "name" => (
                "missing `name` in [agent]".to_owned(),
                "add `name = \"...\"`: the agent's identity on this host".to_owned(),
            ),
            other => (
                format!("missing `{other}`{table}"),
                format!("add `{other} = ...`"),
            ),
        };
        Diagnostic::error(span, what).with_hint(hint)
    } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
        Diagnostic::error(
            span,
            format!("wrong type{table}: found {}", plain_types(rest)),
        )
    } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
        Diagnostic::error(span, format!("invalid value{table}: {rest}"))
    } else if msg == "duplicate key" {
        Diagnostic::error(span, format!("duplicate key{table}"))
            .with_hint("each key may appear once per table")
    } else {
        Diagnostic::error(span, format!("invalid TOML: {}", msg.replace('\n', "; ")))
    }
}

/// serde's type names in the words a policy author uses.
fn plain_types(s: &str) -> String {
    let mut out = s.to_owned();
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a table"),
        ("sequence", "list"),
        ("map", "table"),
    ] {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    out
}

/// The names inside backticks in "expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Validates `source`; returns the policy when there is no error, and every
/// finding.
pub(super) fn validate(
    source: &str,
    digest: PolicyDigest,
    today: Date,
) -> (Option<Policy>, Vec<Diagnostic>) {
    let mut v = Validator {
        source,
        diags: Vec::new(),
    };
    let raw: RawPolicy = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            v.syntax(&e);
            return (None, v.diags);
        }
    };
    if *raw.version.get_ref() != VERSION {
        v.error(
            raw.version.span(),
            Invalid {
                message: format!("unsupported policy version {}", raw.version.get_ref()),
                hint: Some(format!("this agentd reads version {VERSION}")),
            },
        );
    }
    let agent = agent(&mut v, &raw, today);
    let identity = identity(&mut v, &raw);
    let filesystem = filesystem(&mut v, &raw);
    if let (Some(a), Some(trust)) = (&agent, &raw.agent.get_ref().trust)
        && let Some(path) = trust_mismatch(a.trust, &filesystem)
    {
        v.warn(
            trust.span(),
            format!("trust is read-only but {path} is writable"),
            "raise the trust tier or remove the path from read_write",
        );
    }
    let exec = exec(&mut v, &raw, &filesystem, agent.as_ref());
    let network = network(&mut v, &raw, &filesystem.read_write);
    let syscalls = syscalls(&mut v, &raw);
    let limits = limits(&mut v, &raw);
    let (env, secrets) = env_and_secrets(&mut v, &raw);
    let audit = audit(&mut v, &raw);
    let enforcement = Enforcement {
        allow_degraded: raw
            .enforcement
            .as_ref()
            .and_then(|e| e.get_ref().allow_degraded)
            .unwrap_or(false),
    };
    if let (true, Some(a), Some(e)) = (enforcement.allow_degraded, &agent, &raw.enforcement)
        && a.environment == Environment::Production
    {
        v.warn(
            e.span(),
            "production policy allows degraded enforcement",
            "sessions may start with partial confinement on older hosts; prefer failing closed",
        );
    }

    if v.diags.iter().any(Diagnostic::is_error) {
        return (None, v.diags);
    }
    let (Some(agent), Some(identity)) = (agent, identity) else {
        return (None, v.diags);
    };
    let policy = Policy {
        digest,
        agent,
        identity,
        filesystem,
        exec,
        network,
        syscalls,
        limits,
        env,
        secrets,
        audit,
        enforcement,
    };
    (Some(policy), v.diags)
}

fn agent(v: &mut Validator<'_>, raw: &RawPolicy, today: Date) -> Option<Agent> {
    let a = raw.agent.get_ref();
    let name = v.value(&a.name, AgentName::parse);
    let owner = a.owner.as_ref().and_then(|o| {
        v.value(o, |s| {
            if s.trim().is_empty() {
                Err(Invalid {
                    message: "empty owner".into(),
                    hint: Some("name the team or person accountable for this agent".into()),
                })
            } else {
                Ok(s.to_owned())
            }
        })
    });
    if a.owner.is_none() {
        v.warn(
            raw.agent.span().start..raw.agent.span().start,
            "no [agent] owner: nobody is accountable for this agent",
            "add `owner = \"team-name\"`",
        );
    }
    let review_by = a.review_by.as_ref().and_then(|r| {
        let text = match r.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Datetime(d) => d.to_string(),
            other => other.type_str().to_owned(),
        };
        match text.parse::<Date>() {
            Ok(d) => Some(d),
            Err(_) => {
                v.error(
                    r.span(),
                    Invalid {
                        message: format!("invalid date {text}"),
                        hint: Some("write a date as \"YYYY-MM-DD\"".into()),
                    },
                );
                None
            }
        }
    });
    if let (Some(date), Some(r)) = (review_by, &a.review_by)
        && date < today
    {
        v.warn(
            r.span(),
            format!("review date {date} has passed"),
            "review the policy and move review_by forward",
        );
    }
    let data_classes = a.data_classes.iter().map(|c| c.get_ref().clone()).collect();
    Some(Agent {
        name: name?,
        owner,
        environment: a
            .environment
            .as_ref()
            .map(|e| *e.get_ref())
            .unwrap_or_default(),
        trust: a.trust.as_ref().map(|t| *t.get_ref()).unwrap_or_default(),
        review_by,
        data_classes,
    })
}

fn identity(v: &mut Validator<'_>, raw: &RawPolicy) -> Option<UserSpec> {
    let Some(user) = raw.identity.as_ref().and_then(|i| i.user.as_ref()) else {
        return Some(UserSpec::Dynamic);
    };
    v.value(user, |s| match s {
        "dynamic" => Ok(UserSpec::Dynamic),
        "root" | "0" => Err(Invalid {
            message: "an agent cannot run as root".into(),
            hint: Some("use \"dynamic\" or a dedicated unprivileged user".into()),
        }),
        name if is_user_name(name) => Ok(UserSpec::Named(name.to_owned())),
        name => Err(Invalid {
            message: format!("invalid user name {name:?}"),
            hint: Some("use \"dynamic\" or a user name like \"agent-coder\"".into()),
        }),
    })
}

fn is_user_name(s: &str) -> bool {
    s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn filesystem(v: &mut Validator<'_>, raw: &RawPolicy) -> Filesystem {
    let Some(fs) = &raw.filesystem else {
        return Filesystem::default();
    };
    let fs = fs.get_ref();
    let read = v.list(&fs.read, PathTemplate::parse);
    let read_write = v.list(&fs.read_write, PathTemplate::parse);
    let execute = v.list(&fs.execute, PathTemplate::parse);
    let protect = v.list(&fs.protect, ProtectPath::parse);

    for (path, span) in &read_write {
        if let Some(abs) = path.as_absolute() {
            let text = abs.to_string_lossy();
            let whole = NEVER_WRITABLE.contains(&text.as_ref());
            let below = NEVER_WRITABLE_BELOW
                .iter()
                .any(|root| abs.starts_with(root));
            if whole || below {
                v.error(
                    span.clone(),
                    Invalid {
                        message: format!("{text} cannot be writable"),
                        hint: Some(
                            "grant write access to {workspace}, {tmp} or a dedicated directory; \
                             system trees stay read-only"
                                .into(),
                        ),
                    },
                );
            }
        }
    }
    for (path, span) in read.iter().chain(&read_write).chain(&execute) {
        if let Some(why) = path.as_absolute().and_then(sensitive_read) {
            v.warn(
                span.clone(),
                format!("{path} grants read access to {why}"),
                "grant the agent only the directories it needs",
            );
        }
    }
    for (p, span) in &protect {
        if let ProtectPath::Exact(path) = p
            && !read_write.iter().any(|(root, _)| path.starts_with(root))
        {
            v.warn(
                span.clone(),
                format!("protected path {path} is not inside any read_write root"),
                "it is read-only already; remove it or fix the path",
            );
        }
    }
    Filesystem {
        read: read.into_iter().map(|(p, _)| p).collect(),
        read_write: read_write.into_iter().map(|(p, _)| p).collect(),
        execute: execute.into_iter().map(|(p, _)| p).collect(),
        protect: protect.into_iter().map(|(p, _)| p).collect(),
    }
}

/// What sensitive data a readable root `abs` exposes, if any.
fn sensitive_read(abs: &Path) -> Option<&'static str> {
    if abs == Path::new("/") {
        return Some("the whole filesystem, including /home and /root");
    }
    if Path::new("/home").starts_with(abs)
        || abs.starts_with("/home") && abs.components().count() <= 3
    {
        return Some("users' home directories");
    }
    if abs.starts_with("/root") {
        return Some("root's home directory");
    }
    if abs.components().any(|c| c.as_os_str() == ".ssh") {
        return Some("SSH keys");
    }
    None
}

fn exec(v: &mut Validator<'_>, raw: &RawPolicy, fs: &Filesystem, agent: Option<&Agent>) -> Exec {
    let Some(e) = &raw.exec else {
        v.warn(
            None,
            "no [exec] table: every program under a [filesystem] execute path may run",
            "add [exec] allow with the programs the agent needs",
        );
        return Exec::default();
    };
    let allow = v.list(&e.allow, ExecPattern::parse);
    let ask = v.list(&e.ask, ExecPattern::parse);
    if allow.is_empty() {
        v.warn(
            None,
            "[exec] allow is empty: no program may run, not even the agent itself",
            "list the agent's program and the tools it runs",
        );
    }
    let production = agent.is_some_and(|a| a.environment == Environment::Production);
    for (pattern, span) in &allow {
        if production
            && let Some(shell) = SHELLS
                .iter()
                .find(|s| pattern.matches_absolute(Path::new(s)))
        {
            let what = if pattern.to_string() == *shell {
                format!("the shell {shell}")
            } else {
                format!("a shell ({pattern} matches {shell})")
            };
            v.warn(
                span.clone(),
                format!("production policy allows {what}"),
                "list the programs the agent needs instead of a shell",
            );
        }
    }
    // Argument rules and asks are decided by the exec gate (every exec of
    // the session held and bound to what was checked); `ask` comes before
    // `allow`, and is refused until approvals exist (`policy explain`
    // says so).
    for (pattern, span) in allow.iter().chain(&ask) {
        let dir = literal_dir(pattern);
        let covered = fs.execute.iter().any(|root| {
            root.base() == pattern.base() && dir.as_ref().is_some_and(|d| d.starts_with(root))
        });
        if !covered {
            v.warn(
                span.clone(),
                format!("{pattern} is not under any [filesystem] execute path"),
                "Landlock will refuse to run it; add its directory to filesystem.execute",
            );
        }
    }
    Exec {
        enforced: true,
        allow: allow.into_iter().map(|(p, _)| p).collect(),
        ask: ask.into_iter().map(|(p, _)| p).collect(),
    }
}

/// The directory part of an exec glob before its first metacharacter.
fn literal_dir(pattern: &ExecPattern) -> Option<PathTemplate> {
    let glob = pattern.program_glob();
    let literal_end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    let literal = &glob[..literal_end];
    let dir = literal.rsplit_once('/').map_or("", |(d, _)| d);
    let prefix = match pattern.base() {
        PathBase::Root => String::new(),
        PathBase::Workspace => "{workspace}".into(),
        PathBase::Tmp => "{tmp}".into(),
        PathBase::Home => "{home}".into(),
    };
    let text = if dir.is_empty() && prefix.is_empty() {
        "/".to_owned()
    } else {
        format!("{prefix}{dir}")
    };
    PathTemplate::parse(&text).ok()
}

fn network(v: &mut Validator<'_>, raw: &RawPolicy, writable: &[PathTemplate]) -> Network {
    let Some(n) = &raw.network else {
        return Network {
            allow: Vec::new(),
            ask: Vec::new(),
            bind: Vec::new(),
            dns: true,
            unix: Vec::new(),
        };
    };
    let allow = v.list(&n.allow, NetRule::parse);
    let ask = v.list(&n.ask, NetRule::parse);
    let bind = v.list(&n.bind, |s| {
        let rule = NetRule::parse(s)?;
        if matches!(
            rule.host,
            super::HostPattern::Domain(_) | super::HostPattern::Wildcard(_)
        ) {
            return Err(Invalid {
                message: format!("bind rule {s:?} names a host"),
                hint: Some(
                    "bind rules take addresses: 127.0.0.1:8080, [::1]:8080 or *:8080".into(),
                ),
            });
        }
        Ok(rule)
    });
    let dns = n.dns.unwrap_or(true);
    let unix = v.list(&n.unix, PathTemplate::parse);
    for (path, span) in &unix {
        if let Some(why) = path.as_absolute().and_then(host_socket) {
            v.warn(
                span.clone(),
                format!("{path} lets the agent connect to {why}"),
                "list only the sockets the agent needs, e.g. /run/postgresql/.s.PGSQL.5432",
            );
        }
        // The agent may rename or replace what is there: any socket it can
        // reach in that directory tree can be moved to the listed name.
        if let Some(root) = writable.iter().find(|r| path.starts_with(r)) {
            v.warn(
                span.clone(),
                format!(
                    "{path} is under {root}, which the agent may write: it can move any socket it reaches there to this name"
                ),
                "list sockets in directories the agent cannot write (the session's own sockets under {tmp} and {home} need no entry)",
            );
        }
    }
    for (rule, span) in &allow {
        if rule.is_any_address() {
            v.warn(
                span.clone(),
                format!("{rule} allows egress to every public address"),
                "list the hosts the agent needs (loopback, private ranges and cloud metadata stay refused unless a rule names them)",
            );
        }
    }
    if !dns {
        for (rule, span) in allow.iter().chain(&ask) {
            if matches!(
                rule.host,
                super::HostPattern::Domain(_) | super::HostPattern::Wildcard(_)
            ) {
                v.warn(
                    span.clone(),
                    format!("{rule} names a host but dns = false"),
                    "the agent cannot resolve it; set dns = true or use addresses",
                );
            }
        }
    }
    Network {
        allow: allow.into_iter().map(|(r, _)| r).collect(),
        ask: ask.into_iter().map(|(r, _)| r).collect(),
        bind: bind.into_iter().map(|(r, _)| r).collect(),
        dns,
        unix: unix.into_iter().map(|(p, _)| p).collect(),
    }
}

/// Host services whose sockets a `[network] unix` entry `abs` reaches, if
/// it covers one that amounts to control of the host.
fn host_socket(abs: &Path) -> Option<&'static str> {
    const SOCKETS: &[(&str, &str)] = &[
        ("/run/docker.sock", "the Docker daemon (root on the host)"),
        (
            "/var/run/docker.sock",
            "the Docker daemon (root on the host)",
        ),
        (
            "/run/containerd/containerd.sock",
            "containerd (root on the host)",
        ),
        (
            "/run/podman/podman.sock",
            "the Podman service (root on the host)",
        ),
        ("/run/dbus/system_bus_socket", "the system D-Bus"),
        ("/run/systemd/private", "systemd"),
        ("/run/snapd.socket", "snapd"),
    ];
    SOCKETS
        .iter()
        .find(|(socket, _)| Path::new(socket).starts_with(abs))
        .map(|(_, why)| *why)
}

fn syscalls(v: &mut Validator<'_>, raw: &RawPolicy) -> Syscalls {
    let Some(s) = &raw.syscalls else {
        return Syscalls::default();
    };
    let deny = v.list(&s.deny, SyscallName::parse);
    let allow = v.list(&s.allow, SyscallName::parse);
    for (name, span) in &allow {
        if deny.iter().any(|(d, _)| d == name) {
            v.error(
                span.clone(),
                Invalid {
                    message: format!("syscall {name} is both allowed and denied"),
                    hint: Some("keep it in one list".into()),
                },
            );
        } else if name.as_str().starts_with("io_uring") {
            v.error(
                span.clone(),
                Invalid {
                    message: format!(
                        "{name} cannot be allowed: io_uring performs connects, sends, opens and \
                         socket creation without seccomp seeing them"
                    ),
                    hint: Some(
                        "remove it; programs fall back to ordinary syscalls when io_uring is refused"
                            .into(),
                    ),
                },
            );
        } else if DANGEROUS_SYSCALLS.contains(&name.as_str()) {
            v.warn(
                span.clone(),
                format!("allowing {name} re-opens a syscall the default profile denies"),
                "an agent with it can escape or attack the sandbox; allow it only if you must",
            );
        }
    }
    Syscalls {
        profile: s.profile.unwrap_or_default(),
        deny: deny.into_iter().map(|(n, _)| n).collect(),
        allow: allow.into_iter().map(|(n, _)| n).collect(),
    }
}

fn int_in_range(v: &mut Validator<'_>, value: &Spanned<i64>, what: &str, max: i64) -> Option<u64> {
    let n = *value.get_ref();
    if (1..=max).contains(&n) {
        u64::try_from(n).ok()
    } else {
        v.error(
            value.span(),
            Invalid {
                message: format!("{what} must be between 1 and {max}, not {n}"),
                hint: None,
            },
        );
        None
    }
}

fn limits(v: &mut Validator<'_>, raw: &RawPolicy) -> Limits {
    let Some(l) = &raw.limits else {
        v.warn(
            None,
            "no [limits]: the agent can fork, allocate and run without bound",
            "add [limits] with max_processes, memory, cpu and max_duration",
        );
        return Limits::default();
    };
    let max_processes = l
        .max_processes
        .as_ref()
        .and_then(|n| int_in_range(v, n, "max_processes", 4_194_304))
        .and_then(|n| u32::try_from(n).ok());
    let open_files = l
        .open_files
        .as_ref()
        .and_then(|n| int_in_range(v, n, "open_files", 1 << 20));
    let memory = l.memory.as_ref().and_then(|m| {
        let parsed = match m.get_ref() {
            toml::Value::String(s) => ByteSize::parse(s),
            toml::Value::Integer(n) => u64::try_from(*n)
                .map_err(|_| Invalid {
                    message: format!("invalid size {n}"),
                    hint: None,
                })
                .and_then(|n| ByteSize::parse(&n.to_string())),
            other => Err(Invalid {
                message: format!(
                    "wrong type: found {}, expected a size like \"2G\"",
                    other.type_str()
                ),
                hint: None,
            }),
        };
        parsed.map_err(|e| v.error(m.span(), e)).ok()
    });
    let cpu = l.cpu.as_ref().and_then(|c| v.value(c, CpuQuota::parse));
    let max_duration = l
        .max_duration
        .as_ref()
        .and_then(|d| v.value(d, WallDuration::parse));
    Limits {
        present: true,
        max_processes,
        memory,
        cpu,
        max_duration,
        open_files,
    }
}

fn env_name(s: &str) -> Result<EnvName, Invalid> {
    let name = EnvName::parse(s)?;
    if RESERVED_ENV.contains(&s) {
        return Err(Invalid {
            message: format!("{s} is set by agentd"),
            hint: Some("remove it; every session gets its own value".into()),
        });
    }
    Ok(name)
}

fn env_and_secrets(v: &mut Validator<'_>, raw: &RawPolicy) -> (Env, Vec<Secret>) {
    let mut env = Env::default();
    let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
    let mut duplicate = |v: &mut Validator<'_>, name: &EnvName, span: &Range<usize>| {
        if seen
            .insert(name.as_str().to_owned(), span.clone())
            .is_some()
        {
            v.error(
                span.clone(),
                Invalid {
                    message: format!("{name} is given more than once in [env] and [secrets]"),
                    hint: Some("keep one source for each variable".into()),
                },
            );
            true
        } else {
            false
        }
    };
    if let Some(e) = &raw.env {
        for (name, span) in v.list(&e.pass, env_name) {
            if duplicate(v, &name, &span) {
                continue;
            }
            if name.looks_secret() {
                v.warn(
                    span,
                    format!("{name} looks like a credential passed from the caller's environment"),
                    "move it to [secrets] so its value is read from a root-only file and redacted",
                );
            }
            env.pass.push(name);
        }
        for (key, value) in &e.set {
            let Some(name) = v.value(key, env_name) else {
                continue;
            };
            if duplicate(v, &name, &key.span()) {
                continue;
            }
            let text = value.get_ref();
            if text.contains('\0') {
                v.error(
                    value.span(),
                    Invalid {
                        message: format!("the value of {name} contains a NUL byte"),
                        hint: None,
                    },
                );
                continue;
            }
            if TOKEN_MARKERS.iter().any(|m| text.contains(m)) {
                v.warn(
                    value.span(),
                    format!("the value of {name} looks like a credential in the policy file"),
                    "move it to [secrets]: policies are versioned and shared, secrets are not",
                );
            }
            env.set.insert(name, text.clone());
        }
    }
    let mut secrets = Vec::new();
    for (key, secret) in raw.secrets.iter().flatten() {
        let Some(name) = v.value(key, env_name) else {
            continue;
        };
        if duplicate(v, &name, &key.span()) {
            continue;
        }
        let file = &secret.get_ref().file;
        let Some(path) = v.value(file, |s| {
            let p = PathTemplate::parse(s)?;
            p.as_absolute().map(Path::to_path_buf).ok_or(Invalid {
                message: format!("secret file {s} must be an absolute host path"),
                hint: Some("secrets are read by agentd before the session exists".into()),
            })
        }) else {
            continue;
        };
        secrets.push(Secret {
            name,
            file: path,
            span: file.span(),
        });
    }
    (env, secrets)
}

fn audit(v: &mut Validator<'_>, raw: &RawPolicy) -> Audit {
    let Some(a) = &raw.audit else {
        return Audit::default();
    };
    let redact = v.list(&a.redact, |s| {
        regex::Regex::new(s).map_err(|e| Invalid {
            message: format!("invalid redaction pattern: {}", first_line(&e.to_string())),
            hint: Some("patterns use Rust regex syntax, e.g. '(?i)bearer\\s+\\S+'".into()),
        })
    });
    Audit {
        file_events: a.file_events.unwrap_or_default(),
        redact: redact.into_iter().map(|(r, _)| r).collect(),
    }
}

fn first_line(s: &str) -> String {
    let last = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// Whether a trust tier's promise and the writable roots disagree.
fn trust_mismatch(trust: Trust, fs: &Filesystem) -> Option<&PathTemplate> {
    (trust == Trust::ReadOnly)
        .then(|| {
            fs.read_write
                .iter()
                .find(|p| !matches!(p.base(), PathBase::Tmp | PathBase::Home))
        })
        .flatten()
}
