//! The session plan: everything a policy means for one session, compiled
//! once before any stage acquires anything. The stages of [`super::run`]
//! consume the plan and never reach back into the policy, so a policy line
//! has one place where it turns into enforcement (and one place a cache of
//! prepared policies can hold).
use std::{path::PathBuf, time::Duration};

use super::enforce::{self, NetworkPlan};
use crate::{
    cgroup,
    policy::{Env, PathBase, PathTemplate, Placeholders, Policy, Secret, UserSpec},
    sandbox::{
        SandboxError,
        landlock::FsRules,
        mounts::{self, Bind},
        seccomp,
    },
};

/// Device files every session may use.
const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What the audit trail and the kernel programs need to know about the
/// agent.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// `[agent] name`.
    pub name: String,
    /// `[agent] trust`.
    pub trust: String,
    /// sha256 of the policy file.
    pub digest: String,
}

/// One session's compiled policy.
#[derive(Debug)]
pub struct SessionPlan {
    /// Who the agent is.
    pub agent: AgentInfo,
    /// `[identity]`.
    pub identity: UserSpec,
    /// `[enforcement] allow_degraded`.
    pub degraded: bool,
    /// `{workspace}`, `{tmp}`, `{home}`.
    pub placeholders: Placeholders,
    /// Landlock rules, the exec allowlist applied (the session's passwd and
    /// pty are added by the stages that create them).
    pub fs: FsRules,
    /// Protected paths under writable roots, as binds (pins first).
    pub binds: Vec<Bind>,
    /// (rule text, absolute glob) of `[exec] allow`, for attribution.
    pub exec_rules: Vec<(String, String)>,
    /// Whether `[exec]` restricts what runs.
    pub exec_enforced: bool,
    /// seccomp programs, loaded in order (`listen` denied without bind
    /// rules).
    pub seccomp: Vec<seccomp::Program>,
    /// Egress, bind and name rules.
    pub network: NetworkPlan,
    /// `[network] dns`.
    pub dns: bool,
    /// Session flags for the kernel programs.
    pub kernel_flags: u32,
    /// cgroup limits.
    pub limits: cgroup::Limits,
    /// (resource, value) pairs set in the child.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// `[limits] max_duration`.
    pub max_duration: Option<Duration>,
    /// `[env]`.
    pub env: Env,
    /// `[secrets]`.
    pub secrets: Vec<Secret>,
    /// `[audit] redact` patterns.
    pub redact: Vec<regex::Regex>,
}

fn resolve_all(paths: &[PathTemplate], ph: &Placeholders) -> Vec<PathBuf> {
    paths.iter().map(|p| p.resolve(ph)).collect()
}

/// Filesystem rules with the exec allowlist applied: with an `[exec]` table
/// only the allowed programs (by inode, as they are now) and `{root}/**`
/// trees may be executed; the execute roots stay readable for libraries.
fn filesystem(policy: &Policy, ph: &Placeholders) -> (FsRules, Vec<(String, String)>) {
    let mut rules = FsRules {
        read: resolve_all(&policy.filesystem.read, ph),
        read_write: resolve_all(&policy.filesystem.read_write, ph),
        execute: resolve_all(&policy.filesystem.execute, ph),
        devices: DEVICES.into_iter().map(PathBuf::from).collect(),
    };
    let grants = crate::sandbox::exec::resolve(&policy.exec, ph);
    if policy.exec.enforced {
        let roots = std::mem::take(&mut rules.execute);
        rules.read.extend(roots);
        rules.execute = grants.dirs.iter().chain(&grants.files).cloned().collect();
    }
    (rules, grants.rules)
}

/// Protected paths that exist now under the writable roots in the
/// workspace (or anywhere, for absolute roots).
fn protected(policy: &Policy, ph: &Placeholders) -> Result<Vec<Bind>, SandboxError> {
    let writable_roots: Vec<PathBuf> = policy
        .filesystem
        .read_write
        .iter()
        .filter(|p| p.base() == PathBase::Workspace || p.base() == PathBase::Root)
        .map(|p| p.resolve(ph))
        .filter(|p| p.is_dir())
        .collect();
    mounts::protect_binds(&writable_roots, &policy.filesystem.protect)
}

impl SessionPlan {
    /// Compiles `policy` for a session with these placeholders. Reads the
    /// filesystem (exec allowlist, protected paths) but changes nothing.
    pub fn compile(policy: &Policy, placeholders: Placeholders) -> Result<Self, SandboxError> {
        let (fs, exec_rules) = filesystem(policy, &placeholders);
        let binds = protected(policy, &placeholders)?;
        let seccomp = seccomp::for_policy(policy)?;
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0u64)];
        if let Some(n) = policy.limits.open_files {
            rlimits.push((libc::RLIMIT_NOFILE, n));
        }
        Ok(Self {
            agent: AgentInfo {
                name: policy.agent.name.to_string(),
                trust: policy.agent.trust.as_str().to_owned(),
                digest: policy.digest.as_str().to_owned(),
            },
            identity: policy.identity.clone(),
            degraded: policy.enforcement.allow_degraded,
            placeholders,
            fs,
            binds,
            exec_rules,
            exec_enforced: policy.exec.enforced,
            seccomp,
            network: enforce::network_plan(policy),
            dns: policy.network.dns,
            kernel_flags: enforce::flags(policy),
            limits: cgroup::Limits {
                memory: policy.limits.memory.map(|m| m.0),
                pids: policy.limits.max_processes,
                cpu_percent: policy.limits.cpu.map(|c| c.percent),
            },
            rlimits,
            max_duration: policy.limits.max_duration.map(|d| d.0),
            env: policy.env.clone(),
            secrets: policy.secrets.clone(),
            redact: policy.audit.redact.clone(),
        })
    }

    /// Whether the session runs the resolver: names to answer, and DNS on.
    pub fn wants_resolver(&self) -> bool {
        self.dns && !self.network.names.is_empty()
    }
}
