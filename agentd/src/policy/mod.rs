//! Policy v1: parse a TOML policy into typed, validated values.
//!
//! Pure: no syscalls and no clock. The caller passes today's date (for the
//! review-date warning) and, separately, facts about secret files
//! ([`check_secret_files`]). Every finding carries a byte span so that it
//! renders as `file:line:col`.
mod diagnostic;
pub mod explain;
#[cfg(test)]
mod matrix_tests;
mod schema;
#[cfg(test)]
mod tests;
mod types;
pub(crate) mod validate;

use std::{collections::BTreeMap, ops::Range, path::PathBuf};

pub use diagnostic::{Diagnostic, Location, Severity};
use jiff::civil::Date;
pub use schema::{Environment, FileEvents, SyscallProfile, Trust};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
pub use types::{
    AgentName, ByteSize, CpuQuota, EnvName, ExecPattern, HostPattern, Invalid, NetRule, PathBase,
    PathTemplate, Placeholders, PortRange, ProtectPath, Protocols, SyscallName, WallDuration,
    embedded_v4, judged_address, local_networks,
};

/// The policy schema version this agentd reads.
pub const VERSION: i64 = 1;

/// Names protected at every writable root, whatever the policy says
/// (SPEC.md guarantee 2): files the caller's tools run or trust later.
pub const BUILTIN_PROTECT: &[&str] = &[
    ".envrc",
    ".bashrc",
    ".profile",
    ".zshrc",
    ".vscode/tasks.json",
    ".vscode/settings.json",
    ".idea",
    ".mcp.json",
    ".claude",
    ".codex",
    ".gitmodules",
];

/// Paths protected inside every git repository present at session start
/// (and, without the `.git/` prefix, inside each of its submodules'
/// `.git/modules/*` directories): what makes the caller's git run commands
/// or read another configuration.
pub const BUILTIN_PROTECT_GIT: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".git/config.worktree",
    ".git/commondir",
    ".git/info",
];

/// Files protected in each linked worktree's `.git/worktrees/*` directory
/// (where it finds the shared repository and its own configuration).
pub const BUILTIN_PROTECT_WORKTREE: &[&str] = &["commondir", "gitdir", "config.worktree"];

/// The sha256 of the exact bytes of a policy file, as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PolicyDigest(String);

impl PolicyDigest {
    /// Digests `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let hash = Sha256::digest(bytes);
        Self(hash.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The digest as hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// sha256 of the file's bytes.
    pub digest: PolicyDigest,
    /// `[agent]`.
    pub agent: Agent,
    /// `[identity]`.
    pub identity: UserSpec,
    /// `[filesystem]`.
    pub filesystem: Filesystem,
    /// `[exec]`.
    pub exec: Exec,
    /// `[network]`.
    pub network: Network,
    /// `[syscalls]`.
    pub syscalls: Syscalls,
    /// `[limits]`.
    pub limits: Limits,
    /// `[env]`.
    pub env: Env,
    /// `[secrets]`, by name.
    pub secrets: Vec<Secret>,
    /// `[audit]`.
    pub audit: Audit,
    /// `[enforcement]`.
    pub enforcement: Enforcement,
}

/// `[enforcement]`: what happens when the host cannot enforce everything.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Enforcement {
    /// Start sessions with partial enforcement (older Landlock ABI, missing
    /// limit controllers) instead of refusing; each gap is reported. The
    /// default, false, fails closed.
    pub allow_degraded: bool,
}

/// `[agent]`: who the agent is.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    /// Unique identity on the host.
    pub name: AgentName,
    /// Accountable owner.
    pub owner: Option<String>,
    /// Where it runs.
    pub environment: Environment,
    /// Trust tier.
    pub trust: Trust,
    /// When the policy must be reviewed again.
    #[serde(serialize_with = "serialize_date")]
    pub review_by: Option<Date>,
    /// Kinds of data the agent handles.
    pub data_classes: Vec<String>,
}

fn serialize_date<S: serde::Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(d),
        None => s.serialize_none(),
    }
}

/// `[identity] user`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum UserSpec {
    /// A per-session UID/GID from the daemon's range.
    Dynamic,
    /// A named, non-root user that no other agent uses.
    Named(String),
}

/// `[filesystem]`: Landlock rules; everything not listed is denied.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Filesystem {
    /// Read-only roots.
    pub read: Vec<PathTemplate>,
    /// Read-write roots.
    pub read_write: Vec<PathTemplate>,
    /// Roots whose files may be executed.
    pub execute: Vec<PathTemplate>,
    /// Extra protected paths (added to [`BUILTIN_PROTECT`]).
    pub protect: Vec<ProtectPath>,
}

/// `[exec]`: which programs may run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Exec {
    /// Whether the policy has an `[exec]` table: only then are programs
    /// limited to `allow` (without it, anything under an execute path runs).
    pub enforced: bool,
    /// Run without asking.
    pub allow: Vec<ExecPattern>,
    /// Run after a human approves.
    pub ask: Vec<ExecPattern>,
}

/// `[network]`: default-deny egress.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    /// Reachable without asking.
    pub allow: Vec<NetRule>,
    /// Reachable after a human approves.
    pub ask: Vec<NetRule>,
    /// Addresses and ports the session may bind and listen on.
    pub bind: Vec<NetRule>,
    /// Whether the session may resolve names (through agentd's resolver).
    pub dns: bool,
    /// Pathname unix sockets (or directories of them) the session may
    /// connect and send to, besides its own under `{tmp}` and `{home}`.
    pub unix: Vec<PathTemplate>,
}

/// `[syscalls]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Syscalls {
    /// Base profile.
    pub profile: SyscallProfile,
    /// Extra syscalls to deny.
    pub deny: Vec<SyscallName>,
    /// Syscalls to allow on top of the profile.
    pub allow: Vec<SyscallName>,
}

/// `[limits]`; `None` means no limit from the policy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Limits {
    /// Whether the policy has a `[limits]` table at all.
    pub present: bool,
    /// pids limit.
    pub max_processes: Option<u32>,
    /// Memory limit.
    pub memory: Option<ByteSize>,
    /// CPU quota.
    pub cpu: Option<CpuQuota>,
    /// Wall-clock limit of the session.
    pub max_duration: Option<WallDuration>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
}

/// `[env]`: the session's environment is clean except for these.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Env {
    /// Passed through from the caller's environment.
    pub pass: Vec<EnvName>,
    /// Set to fixed values.
    pub set: BTreeMap<EnvName, String>,
}

/// One `[secrets]` entry: injected as an environment variable, read by
/// agentd from a root-only file.
#[derive(Clone, Debug, Serialize)]
pub struct Secret {
    /// Variable name.
    pub name: EnvName,
    /// Root-owned file holding the value.
    pub file: PathBuf,
    #[serde(skip)]
    span: Range<usize>,
}

/// `[audit]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Audit {
    /// Which file accesses are recorded.
    pub file_events: FileEvents,
    /// Extra redaction patterns.
    #[serde(serialize_with = "serialize_regexes")]
    pub redact: Vec<regex::Regex>,
}

fn serialize_regexes<S: serde::Serializer>(r: &[regex::Regex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(r.iter().map(regex::Regex::as_str))
}

/// The result of reading a policy file.
#[derive(Debug)]
pub struct Checked {
    /// The policy, when it has no errors.
    pub policy: Option<Policy>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The file's text (for rendering diagnostics).
    pub source: String,
    /// sha256 of the bytes read.
    pub digest: PolicyDigest,
}

impl Checked {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and validates a policy file's bytes. `today` drives the
/// review-date warning.
pub fn check(bytes: &[u8], today: Date) -> Checked {
    let digest = PolicyDigest::of(bytes);
    let source = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) => {
            let at = e.valid_up_to();
            return Checked {
                policy: None,
                diagnostics: vec![
                    Diagnostic::error(at..at + 1, "the file is not valid UTF-8")
                        .with_hint("policies are UTF-8 TOML files"),
                ],
                source: String::from_utf8_lossy(bytes).into_owned(),
                digest,
            };
        }
    };
    let (policy, mut diagnostics) = validate::validate(&source, digest.clone(), today);
    diagnostics.sort_by_key(|d| (d.span.as_ref().map_or(0, |s| s.start), d.severity));
    Checked {
        policy,
        diagnostics,
        source,
        digest,
    }
}

/// What agentd knows about a secret file on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Whether it is a regular file.
    pub is_file: bool,
}

/// Checks each secret file: it must exist here, be a regular file owned by
/// root and not readable by group or others. `inspect` returns `None` when
/// the file does not exist.
pub fn check_secret_files(
    policy: &Policy,
    mut inspect: impl FnMut(&std::path::Path) -> std::io::Result<Option<FileFacts>>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for secret in &policy.secrets {
        let file = secret.file.display();
        let span = secret.span.clone();
        match inspect(&secret.file) {
            Ok(None) => out.push(
                Diagnostic::warning(
                    span,
                    format!("secret file {file} does not exist on this host"),
                )
                .with_hint("sessions with this policy will not start here until it exists"),
            ),
            Err(e) => out.push(
                Diagnostic::error(span, format!("cannot inspect secret file {file}: {e}"))
                    .with_hint("run `agentd policy check` as root to check secret files"),
            ),
            Ok(Some(facts)) if !facts.is_file => out.push(Diagnostic::error(
                span,
                format!("secret file {file} is not a regular file"),
            )),
            Ok(Some(facts)) if facts.uid != 0 => out.push(
                Diagnostic::error(
                    span,
                    format!(
                        "secret file {file} is not owned by root (uid {})",
                        facts.uid
                    ),
                )
                .with_hint(format!("chown root:root {file}")),
            ),
            Ok(Some(facts)) if facts.mode & 0o077 != 0 => out.push(
                Diagnostic::error(
                    span,
                    format!(
                        "secret file {file} is readable by group or others (mode {:04o})",
                        facts.mode & 0o7777
                    ),
                )
                .with_hint(format!("chmod 600 {file}")),
            ),
            Ok(Some(_)) => {}
        }
    }
    out
}
