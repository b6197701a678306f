//! The policy file as written: serde structs mirroring SPEC.md's schema,
//! with spans on every value that is validated afterwards. Unknown keys are
//! errors everywhere (`deny_unknown_fields`).
use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub version: Spanned<i64>,
    pub agent: Spanned<RawAgent>,
    #[serde(default)]
    pub identity: Option<RawIdentity>,
    #[serde(default)]
    pub filesystem: Option<Spanned<RawFilesystem>>,
    #[serde(default)]
    pub exec: Option<RawExec>,
    #[serde(default)]
    pub network: Option<RawNetwork>,
    #[serde(default)]
    pub syscalls: Option<RawSyscalls>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub env: Option<RawEnv>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<Text, Spanned<RawSecret>>>,
    #[serde(default)]
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub enforcement: Option<Spanned<RawEnforcement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub name: Text,
    #[serde(default)]
    pub owner: Option<Text>,
    #[serde(default)]
    pub environment: Option<Spanned<Environment>>,
    #[serde(default)]
    pub trust: Option<Spanned<Trust>>,
    #[serde(default)]
    pub review_by: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub data_classes: Vec<Text>,
}

/// Where the agent runs; production tightens `policy check`'s warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine.
    #[default]
    Development,
    /// Pre-production.
    Staging,
    /// Production hosts.
    Production,
}

/// The agent's trust tier, from the production checklists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Reads only; writes nothing outside its private tmp and home.
    ReadOnly,
    /// Writes where the policy says, without asking.
    #[default]
    WriteRestricted,
    /// Writes, with risky actions gated on human approval.
    WriteApproved,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    #[serde(default)]
    pub user: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilesystem {
    #[serde(default)]
    pub read: Vec<Text>,
    #[serde(default)]
    pub read_write: Vec<Text>,
    #[serde(default)]
    pub execute: Vec<Text>,
    #[serde(default)]
    pub protect: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    #[serde(default)]
    pub allow: Vec<Text>,
    #[serde(default)]
    pub ask: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    #[serde(default)]
    pub allow: Vec<Text>,
    #[serde(default)]
    pub ask: Vec<Text>,
    #[serde(default)]
    pub bind: Vec<Text>,
    #[serde(default)]
    pub dns: Option<bool>,
    #[serde(default)]
    pub unix: Vec<Text>,
}

/// The base seccomp profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyscallProfile {
    /// Everything except the dangerous set, which fails with EPERM.
    #[default]
    Default,
    /// Only an allowlist sufficient for git, python and a shell.
    Strict,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSyscalls {
    #[serde(default)]
    pub profile: Option<SyscallProfile>,
    #[serde(default)]
    pub deny: Vec<Text>,
    #[serde(default)]
    pub allow: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default)]
    pub max_processes: Option<Spanned<i64>>,
    #[serde(default)]
    pub memory: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub cpu: Option<Text>,
    #[serde(default)]
    pub max_duration: Option<Text>,
    #[serde(default)]
    pub open_files: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnv {
    #[serde(default)]
    pub pass: Vec<Text>,
    #[serde(default)]
    pub set: BTreeMap<Text, Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub file: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnforcement {
    #[serde(default)]
    pub allow_degraded: Option<bool>,
}

/// Which file accesses become audit events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileEvents {
    /// No file events.
    None,
    /// Opens for writing, creates, unlinks, renames.
    #[default]
    Writes,
    /// Writes and reads.
    All,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    pub file_events: Option<FileEvents>,
    #[serde(default)]
    pub redact: Vec<Text>,
}

/// The words a policy uses for each enum value.
macro_rules! as_str {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The value as written in a policy.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
    };
}

as_str!(Environment { Development => "development", Staging => "staging", Production => "production" });
as_str!(Trust { ReadOnly => "read-only", WriteRestricted => "write-restricted", WriteApproved => "write-approved" });
as_str!(SyscallProfile { Default => "default", Strict => "strict" });
as_str!(FileEvents { None => "none", Writes => "writes", All => "all" });
