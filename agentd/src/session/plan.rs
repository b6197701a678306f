//! The session plan: everything a policy means for one session, compiled
//! once before any stage acquires anything. The stages of [`super::run`]
//! consume the plan and never reach back into the policy, so a policy line
//! has one place where it turns into enforcement (and one place a cache of
//! prepared policies can hold).
use std::{path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::{
    cgroup,
    ebpf::rules::Resolved,
    policy::{
        Env, FileEvents, HostPattern, NetRule, PathBase, PathTemplate, Placeholders, Policy,
        ProtectPath, Secret, UserSpec,
    },
    sandbox::{
        SandboxError,
        landlock::FsRules,
        mounts::{self, Bind},
        protect, seccomp,
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
    /// Protected names the broker refuses to create.
    pub protected: protect::Tree,
    /// Repositories under the writable roots at start.
    pub repositories: protect::Repositories,
    /// ELF interpreters the exec allowlist grants only as such: the kernel
    /// kills an exec of one as a program.
    pub loaders: Vec<PathBuf>,
    /// `[exec]` entries the exec gate decides on (argument rules or `ask`
    /// entries present): (allow, ask).
    pub exec_gate: Option<(
        Vec<crate::policy::ExecPattern>,
        Vec<crate::policy::ExecPattern>,
    )>,
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
    /// `[network] unix`: (rule text, path with placeholders resolved).
    pub unix: Vec<(String, PathBuf)>,
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
fn filesystem(
    policy: &Policy,
    ph: &Placeholders,
) -> (FsRules, Vec<(String, String)>, Vec<PathBuf>) {
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
    let loaders = if policy.exec.enforced {
        grants.loaders
    } else {
        Vec::new()
    };
    (rules, grants.rules, loaders)
}

/// Protected paths under the writable roots in the workspace (or
/// anywhere, for absolute roots): those that exist now as binds, and all
/// of them as names the broker refuses to create.
fn protected(
    policy: &Policy,
    ph: &Placeholders,
) -> Result<(Vec<Bind>, protect::Tree, protect::Repositories), SandboxError> {
    let writable_roots: Vec<PathBuf> = policy
        .filesystem
        .read_write
        .iter()
        .filter(|p| p.base() == PathBase::Workspace || p.base() == PathBase::Root)
        .map(|p| p.resolve(ph))
        .filter(|p| p.is_dir())
        .collect();
    let mut names = Vec::new();
    let mut exact = Vec::new();
    for p in &policy.filesystem.protect {
        match p {
            ProtectPath::AtEachRoot(name) => names.push(name.clone()),
            ProtectPath::Exact(path) => exact.push(path.resolve(ph)),
        }
    }
    // A symlink on the way to a protected name (`.bashrc -> d/bashrc`,
    // `d -> real`, `.vscode -> shared/vscode`) protects where it leads
    // (bound, or refused when created), and its own name cannot be made
    // again once removed: else a new `d` would hold new content.
    let lexical: Vec<PathBuf> = writable_roots
        .iter()
        .flat_map(|root| {
            crate::policy::BUILTIN_PROTECT
                .iter()
                .copied()
                .chain(names.iter().map(String::as_str))
                .map(|n| root.join(n))
                .collect::<Vec<_>>()
        })
        .chain(exact.iter().cloned())
        .collect();
    let writable = |p: &PathBuf| writable_roots.iter().any(|r| p.starts_with(r) && p != r);
    for path in lexical {
        let (links, target) = mounts::links_on_the_way(&path);
        if links.is_empty() {
            continue;
        }
        exact.extend(links.into_iter().filter(writable));
        if writable(&target) {
            exact.push(target);
        }
    }
    exact.sort();
    exact.dedup();
    let binds = mounts::protect_binds(&writable_roots, &names, &exact)?;
    let tree = protect::Tree::build(&writable_roots, &names, &exact);
    Ok((
        binds,
        tree,
        protect::Repositories::at_start(&writable_roots),
    ))
}

impl SessionPlan {
    /// Compiles `policy` for a session with these placeholders. Reads the
    /// filesystem (exec allowlist, protected paths) but changes nothing.
    pub fn compile(policy: &Policy, placeholders: Placeholders) -> Result<Self, SandboxError> {
        let (fs, exec_rules, loaders) = filesystem(policy, &placeholders);
        let (binds, protected, repositories) = protected(policy, &placeholders)?;
        let seccomp = seccomp::for_policy(policy)?;
        let unix = (policy.network.unix.iter())
            .map(|p| (p.to_string(), p.resolve(&placeholders)))
            .collect();
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
            protected,
            repositories,
            exec_gate: exec_gate(policy),
            loaders,
            exec_rules,
            exec_enforced: policy.exec.enforced,
            seccomp,
            network: network_plan(policy),
            dns: policy.network.dns,
            unix,
            kernel_flags: flags(policy),
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

/// Resolved network rules and what could not be resolved.
#[derive(Debug, Default)]
pub struct NetworkPlan {
    /// Egress rules with addresses (names are opened live by the
    /// session's resolver, not here).
    pub egress: Vec<Resolved>,
    /// Rules by name, for the resolver.
    pub names: Vec<crate::dns::names::NameRule>,
    /// Bind rules.
    pub bind: Vec<Resolved>,
    /// (rule text, prefixes, first port, last port) for event attribution.
    pub attribution: Vec<(String, Vec<String>, u16, u16)>,
    /// Rules that grant nothing this session (unresolvable names).
    pub unresolved: Vec<String>,
}

fn everything() -> [IpNet; 2] {
    // Both parse; written out to avoid a fallible parse at runtime.
    [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

/// The addresses a rule covers by itself (names: none; the session's
/// resolver opens what their answers hold).
fn nets_of(rule: &NetRule) -> Option<Vec<IpNet>> {
    match &rule.host {
        HostPattern::Any => Some(everything().to_vec()),
        HostPattern::Net(net) => Some(vec![*net]),
        HostPattern::Domain(_) | HostPattern::Wildcard(_) => None,
    }
}

/// The session's network rules, compiled where they are addresses.
pub fn network_plan(policy: &Policy) -> NetworkPlan {
    let mut plan = NetworkPlan {
        names: if policy.network.dns {
            crate::dns::names::rules(&policy.network)
        } else {
            Vec::new()
        },
        ..NetworkPlan::default()
    };
    for (rules, bind) in [(&policy.network.allow, false), (&policy.network.bind, true)] {
        for rule in rules {
            let Some(nets) = nets_of(rule) else {
                if !policy.network.dns {
                    plan.unresolved.push(rule.to_string());
                }
                continue;
            };
            if !bind {
                plan.attribution.push((
                    rule.to_string(),
                    nets.iter().map(ToString::to_string).collect(),
                    rule.ports.first,
                    rule.ports.last,
                ));
            }
            let target = if bind {
                &mut plan.bind
            } else {
                &mut plan.egress
            };
            target.extend(nets.into_iter().map(|net| Resolved {
                net,
                ports: rule.ports,
                protocols: rule.protocols,
            }));
        }
    }
    plan
}

/// The entries the exec gate needs: with argument rules or `ask` entries
/// in an `[exec]` table, every exec of the session is held and decided.
fn exec_gate(
    policy: &Policy,
) -> Option<(
    Vec<crate::policy::ExecPattern>,
    Vec<crate::policy::ExecPattern>,
)> {
    let e = &policy.exec;
    let gated = e.enforced && (!e.ask.is_empty() || e.allow.iter().any(|p| p.has_args()));
    gated.then(|| (e.allow.clone(), e.ask.clone()))
}

/// Session flags for the kernel.
pub fn flags(policy: &Policy) -> u32 {
    let files = match policy.audit.file_events {
        FileEvents::None => 0,
        FileEvents::Writes => agentd_common::SESSION_FILE_WRITES,
        FileEvents::All => agentd_common::SESSION_FILE_WRITES | agentd_common::SESSION_FILE_READS,
    };
    let exec = if policy.exec.enforced {
        agentd_common::SESSION_EXEC_ALLOWLIST
    } else {
        0
    };
    let dns = if policy.network.dns {
        0
    } else {
        agentd_common::SESSION_DNS_OFF
    };
    let gate = if exec_gate(policy).is_some() {
        agentd_common::SESSION_EXEC_GATE
    } else {
        0
    };
    files | exec | dns | gate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(network: &str) -> NetworkPlan {
        let src = format!("version = 1\n[agent]\nname = \"n\"\n[network]\n{network}");
        let checked = crate::policy::check(src.as_bytes(), jiff::civil::date(2026, 1, 1));
        network_plan(&checked.policy.expect("valid"))
    }

    #[test]
    fn names_go_to_the_resolver_addresses_to_the_maps() {
        let p = plan(
            "allow = [\"localhost:8080\", \"*.example.com:443\", \"10.0.0.0/8:22\", \"*:443\"]\nbind = [\"127.0.0.1:9000\"]\n",
        );
        assert!(p.unresolved.is_empty());
        assert_eq!(p.names.len(), 2, "localhost and *.example.com");
        assert!(
            !p.egress.iter().any(|r| r.ports.first == 8080),
            "names are not resolved at start"
        );
        assert!(p.egress.iter().any(|r| r.net.prefix_len() == 0));
        assert_eq!(p.bind.len(), 1);
        assert_eq!(p.attribution.len(), 2);
    }

    #[test]
    fn without_dns_names_grant_nothing() {
        let p = plan("allow = [\"api.example.com:443\", \"10.0.0.0/8:22\"]\ndns = false\n");
        assert!(p.names.is_empty());
        assert_eq!(p.unresolved, vec!["api.example.com:443".to_owned()]);
        assert_eq!(p.egress.len(), 1);
    }
}
