//! `policy explain`: the inventory an auditor asks for, derived from a
//! validated policy. Pure data; the CLI renders it.
use serde::Serialize;

use super::{
    BUILTIN_PROTECT, BUILTIN_PROTECT_GIT, FileEvents, HostPattern, Policy, PolicyDigest,
    SyscallProfile, UserSpec, local_networks,
};

/// What this version does not enforce yet, and what holds meanwhile.
const NOT_YET_ENFORCED: &[&str] = &[
    "[exec] ask and [network] ask: denied (no approval queue yet)",
    "[network] ask rules: their names are answered but their addresses are not opened",
];

/// Everything a policy grants, in the terms an auditor uses.
#[derive(Debug, Serialize)]
pub struct Inventory {
    /// Identity and accountability.
    pub identity: IdentitySection,
    /// What it can read, write and execute.
    pub filesystem: FilesystemSection,
    /// Which programs it can run.
    pub exec: ExecSection,
    /// Where it can connect.
    pub network: NetworkSection,
    /// Syscall filter.
    pub syscalls: SyscallSection,
    /// Resource limits ("unlimited" where the policy sets none).
    pub limits: Vec<(String, String)>,
    /// Environment variables it receives.
    pub environment: EnvSection,
    /// What is recorded.
    pub audit: AuditSection,
    /// What happens when the host cannot enforce everything.
    pub enforcement: &'static str,
    /// Parts of the policy this version of agentd does not enforce yet, and
    /// what holds instead.
    pub not_yet_enforced: Vec<&'static str>,
}

/// Who the agent is.
#[derive(Debug, Serialize)]
pub struct IdentitySection {
    /// Agent name.
    pub agent: String,
    /// Accountable owner.
    pub owner: Option<String>,
    /// development | staging | production.
    pub environment: String,
    /// Trust tier.
    pub trust: String,
    /// Review date.
    pub review_by: Option<String>,
    /// Data classes handled.
    pub data_classes: Vec<String>,
    /// The Unix identity sessions run as.
    pub user: String,
    /// sha256 of the policy file.
    pub policy_digest: PolicyDigest,
}

/// Filesystem access.
#[derive(Debug, Serialize)]
pub struct FilesystemSection {
    /// Read-only roots.
    pub read: Vec<String>,
    /// Read-write roots.
    pub read_write: Vec<String>,
    /// Executable roots.
    pub execute: Vec<String>,
    /// Paths that stay unchanged inside writable roots.
    pub protected: Vec<String>,
    /// What happens to everything else.
    pub otherwise: &'static str,
}

/// Programs.
#[derive(Debug, Serialize)]
pub struct ExecSection {
    /// Run without asking.
    pub allow: Vec<String>,
    /// Need a human approval.
    pub ask: Vec<String>,
    /// What happens to everything else.
    pub otherwise: &'static str,
}

/// Egress.
#[derive(Debug, Serialize)]
pub struct NetworkSection {
    /// Reachable without asking.
    pub allow: Vec<String>,
    /// Need a human approval.
    pub ask: Vec<String>,
    /// May bind and listen.
    pub bind: Vec<String>,
    /// Name resolution.
    pub dns: String,
    /// Local ranges that stay unreachable unless a rule names them.
    pub always_denied_unless_listed: Vec<String>,
    /// Pathname unix sockets the session may connect and send to.
    pub unix: Vec<String>,
    /// What happens to other pathname unix sockets.
    pub unix_otherwise: &'static str,
    /// What happens to everything else.
    pub otherwise: &'static str,
}

/// Syscall filtering.
#[derive(Debug, Serialize)]
pub struct SyscallSection {
    /// default | strict.
    pub profile: String,
    /// What the profile does.
    pub summary: &'static str,
    /// Extra denied syscalls.
    pub deny: Vec<String>,
    /// Extra allowed syscalls.
    pub allow: Vec<String>,
}

/// The session's environment.
#[derive(Debug, Serialize)]
pub struct EnvSection {
    /// Passed from the caller.
    pub pass: Vec<String>,
    /// Set by the policy (`NAME=value`; credential-looking values hidden).
    pub set: Vec<String>,
    /// Secrets injected, by name only, with the file they are read from.
    pub secrets: Vec<SecretEntry>,
    /// Set by agentd for every session.
    pub always: Vec<&'static str>,
}

/// A secret's name and source; never its value.
#[derive(Debug, Serialize)]
pub struct SecretEntry {
    /// Variable name.
    pub name: String,
    /// Root-only file it is read from.
    pub file: String,
}

/// What the audit trail records.
#[derive(Debug, Serialize)]
pub struct AuditSection {
    /// Which file accesses become events.
    pub file_events: String,
    /// Extra redaction patterns.
    pub redact: Vec<String>,
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

impl Inventory {
    /// The inventory of `policy`.
    pub fn of(policy: &Policy) -> Self {
        Self {
            identity: IdentitySection::of(policy),
            filesystem: FilesystemSection::of(policy),
            exec: ExecSection::of(policy),
            network: NetworkSection::of(policy),
            syscalls: SyscallSection::of(policy),
            limits: limits(policy),
            environment: EnvSection::of(policy),
            audit: AuditSection::of(policy),
            enforcement: if policy.enforcement.allow_degraded {
                "degraded mode allowed: on hosts lacking a feature the session starts with what is \
                 available, and each gap is reported"
            } else {
                "fail closed: the session does not start unless every guarantee can be enforced"
            },
            not_yet_enforced: NOT_YET_ENFORCED.to_vec(),
        }
    }
}

impl IdentitySection {
    fn of(policy: &Policy) -> Self {
        let a = &policy.agent;
        let user = match &policy.identity {
            UserSpec::Dynamic => {
                "dynamic: a fresh unprivileged UID/GID per session, never root or the caller"
                    .to_owned()
            }
            UserSpec::Named(n) => format!("{n} (a dedicated non-root user)"),
        };
        Self {
            agent: a.name.to_string(),
            owner: a.owner.clone(),
            environment: a.environment.as_str().to_owned(),
            trust: a.trust.as_str().to_owned(),
            review_by: a.review_by.map(|d| d.to_string()),
            data_classes: a.data_classes.clone(),
            user,
            policy_digest: policy.digest.clone(),
        }
    }
}

impl FilesystemSection {
    fn of(policy: &Policy) -> Self {
        let mut protected: Vec<String> = BUILTIN_PROTECT
            .iter()
            .map(|p| format!("{p} (at each writable root)"))
            .collect();
        protected.extend(BUILTIN_PROTECT_GIT.iter().map(|p| {
            format!("{p} (in each git repository present at start, and of its submodules)")
        }));
        protected.extend([
            "commondir, gitdir, config.worktree of each linked worktree (.git/worktrees/*)".to_owned(),
            ".git files (worktree and submodule checkouts) at a writable root and one level below".to_owned(),
            "present at start: read-only; missing at start: cannot be created (open, mkdir, rename, link, symlink), nor written through a protected name that is a symlink".to_owned(),
            "repositories created during the session, and linked worktrees added in it, are the agent's own".to_owned(),
        ]);
        protected.extend(policy.filesystem.protect.iter().map(ToString::to_string));
        Self {
            read: strings(&policy.filesystem.read),
            read_write: strings(&policy.filesystem.read_write),
            execute: strings(&policy.filesystem.execute),
            protected,
            otherwise: "denied (read, write, execute, truncate, rename, device ioctl)",
        }
    }
}

impl ExecSection {
    fn of(policy: &Policy) -> Self {
        Self {
            allow: strings(&policy.exec.allow),
            ask: strings(&policy.exec.ask),
            otherwise: if policy.exec.enforced
                && (!policy.exec.ask.is_empty() || policy.exec.allow.iter().any(|p| p.has_args()))
            {
                "denied: only the files allow matches when the session starts may run (copies, \
                 links to other programs and anonymous memory cannot); {root}/** entries allow \
                 files created there during the session. Every exec is held by the exec gate: \
                 argument patterns are matched on argv[1..] joined by spaces, ask entries come \
                 first and are refused, and the kernel kills an exec whose file, argv or \
                 environment differ from what was checked"
            } else if policy.exec.enforced {
                "denied: only the files allow matches when the session starts may run (copies, \
                 links to other programs and anonymous memory cannot); {root}/** entries allow \
                 files created there during the session"
            } else {
                "no [exec] table: any program under a [filesystem] execute path may run"
            },
        }
    }
}

impl NetworkSection {
    fn of(policy: &Policy) -> Self {
        let has_domains = policy
            .network
            .allow
            .iter()
            .chain(&policy.network.ask)
            .any(|r| matches!(r.host, HostPattern::Domain(_) | HostPattern::Wildcard(_)));
        let dns = match (policy.network.dns, has_domains) {
            (false, _) => {
                "off: every DNS query of the session is refused; only address rules apply"
                    .to_owned()
            }
            (true, true) => "live: every DNS query of the session (UDP and TCP port 53, to any \
                             address) goes to agentd's resolver, which answers only the names \
                             above (others are REFUSED and never forwarded) and opens exactly \
                             the answered addresses, with the rule's ports, for the answer's TTL \
                             (clamped, plus a grace period); answers pointing at local ranges \
                             are not opened"
                .to_owned(),
            (true, false) => "no rule names a host: every DNS query of the session is refused \
                              (EPERM), whatever server it is sent to"
                .to_owned(),
        };
        let listed =
            |net: &ipnet::IpNet| {
                policy.network.allow.iter().chain(&policy.network.ask).any(
                |r| matches!(&r.host, HostPattern::Net(n) if n.contains(net) || net.contains(n)),
            ) || policy.network.allow.iter().any(|r| r.host == HostPattern::Any)
            };
        Self {
            allow: strings(&policy.network.allow),
            ask: strings(&policy.network.ask),
            bind: strings(&policy.network.bind),
            dns,
            always_denied_unless_listed: local_networks()
                .iter()
                .filter(|n| !listed(n))
                .map(ToString::to_string)
                .collect(),
            unix: policy
                .network
                .unix
                .iter()
                .map(|p| format!("{p} (and every socket below it, if a directory)"))
                .chain(["sockets the session creates under {tmp} and {home}".to_owned()])
                .collect(),
            unix_otherwise: "/run, /var/run, /tmp/.X11-unix and /tmp/.ICE-unix are empty in the \
                             session (except granted and listed paths below them); other \
                             pathname sockets refused (EACCES, recorded as deny): connects and \
                             datagram sends are performed by agentd after checking the socket's \
                             real path; sendmsg/sendmmsg on unix datagram sockets refused \
                             (EPERM); abstract sockets only within the session (Landlock \
                             scoping); in the kernel, only agentd's broker may connect a \
                             session's unix socket (Linux >= 6.7)",
            otherwise: "denied (TCP and UDP, IPv4 and IPv6; IPv6 forms of IPv4 addresses (v4-mapped, NAT64, 6to4) as IPv4; ICMP, raw and packet sockets, other IP protocols and other address families than unix and route netlink, binds and listening sockets denied)",
        }
    }
}

impl SyscallSection {
    fn of(policy: &Policy) -> Self {
        Self {
            profile: policy.syscalls.profile.as_str().to_owned(),
            summary: match policy.syscalls.profile {
                SyscallProfile::Default => {
                    "all syscalls except the dangerous set (ptrace, bpf, mount, namespaces, \
                     keyctl, io_uring, module loading, ...), which fail with EPERM; foreign \
                     architectures are killed"
                }
                SyscallProfile::Strict => {
                    "only an allowlist sufficient for git, python and a shell; everything \
                     else fails with EPERM"
                }
            },
            deny: strings(&policy.syscalls.deny),
            allow: strings(&policy.syscalls.allow),
        }
    }
}

/// `[limits]`, each as set or "unlimited".
fn limits(policy: &Policy) -> Vec<(String, String)> {
    let l = &policy.limits;
    let or_unlimited = |v: Option<String>| v.unwrap_or_else(|| "unlimited".to_owned());
    vec![
        (
            "max_processes".to_owned(),
            or_unlimited(l.max_processes.map(|n| n.to_string())),
        ),
        (
            "memory".to_owned(),
            or_unlimited(l.memory.map(|m| m.to_string())),
        ),
        ("cpu".to_owned(), or_unlimited(l.cpu.map(|c| c.to_string()))),
        (
            "max_duration".to_owned(),
            or_unlimited(l.max_duration.map(|d| d.to_string())),
        ),
        (
            "open_files".to_owned(),
            or_unlimited(l.open_files.map(|n| n.to_string())),
        ),
        ("core_dumps".to_owned(), "disabled".to_owned()),
    ]
}

impl EnvSection {
    fn of(policy: &Policy) -> Self {
        Self {
            pass: strings(&policy.env.pass),
            set: policy
                .env
                .set
                .iter()
                .map(|(k, v)| {
                    if k.looks_secret() {
                        format!("{k}=<hidden>")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect(),
            secrets: policy
                .secrets
                .iter()
                .map(|s| SecretEntry {
                    name: s.name.to_string(),
                    file: s.file.display().to_string(),
                })
                .collect(),
            always: vec![
                "AGENTD_SESSION_ID",
                "TRACEPARENT",
                "HOME",
                "PATH",
                "USER",
                "LOGNAME",
                "TMPDIR",
            ],
        }
    }
}

impl AuditSection {
    fn of(policy: &Policy) -> Self {
        Self {
            file_events: match policy.audit.file_events {
                FileEvents::None => "none".to_owned(),
                FileEvents::Writes => "writes (open for write, create, unlink, rename)".to_owned(),
                FileEvents::All => "all (reads and writes)".to_owned(),
            },
            redact: policy
                .audit
                .redact
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
        }
    }
}
