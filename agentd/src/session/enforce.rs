//! The session's kernel-side enforcement (egress, bind and raw-socket rules
//! in the shared eBPF maps) and its audit inputs, derived from the policy.
use std::net::ToSocketAddrs as _;

use ipnet::IpNet;

use crate::{
    audit::collect::SessionAudit,
    ebpf::{
        self, Kernel, Registered, Registration,
        rules::{self, Resolved},
    },
    policy::{FileEvents, HostPattern, NetRule, Policy},
};

/// Resolved network rules and what could not be resolved.
#[derive(Debug, Default)]
pub struct NetworkPlan {
    /// Egress rules with addresses.
    pub egress: Vec<Resolved>,
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

/// The addresses a rule covers now: names are resolved once, at session
/// start (wildcards cannot be resolved and grant nothing).
fn nets_of(rule: &NetRule) -> Option<Vec<IpNet>> {
    match &rule.host {
        HostPattern::Any => Some(everything().to_vec()),
        HostPattern::Net(net) => Some(vec![*net]),
        HostPattern::Domain(name) => {
            let addrs = (name.as_str(), rule.ports.first).to_socket_addrs().ok()?;
            let nets: Vec<IpNet> = addrs.map(|a| IpNet::from(a.ip())).collect();
            (!nets.is_empty()).then_some(nets)
        }
        HostPattern::Wildcard(_) => None,
    }
}

/// Resolves `[network]` for one session.
pub fn network_plan(policy: &Policy) -> NetworkPlan {
    let mut plan = NetworkPlan::default();
    for (rules, bind) in [(&policy.network.allow, false), (&policy.network.bind, true)] {
        for rule in rules {
            let Some(nets) = nets_of(rule) else {
                plan.unresolved.push(rule.to_string());
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
    files | exec
}

/// Puts the session's rules in the kernel maps.
pub fn register(
    kernel: &Kernel,
    cgroup_id: u64,
    policy: &Policy,
    plan: &NetworkPlan,
) -> Result<Registered, super::SessionError> {
    let egress =
        rules::compile(&plan.egress, true).map_err(|e| super::SessionError::Host(e.to_string()))?;
    let bind =
        rules::compile(&plan.bind, false).map_err(|e| super::SessionError::Host(e.to_string()))?;
    Ok(kernel.register(Registration {
        cgroup_id,
        flags: flags(policy),
        egress,
        bind,
    })?)
}

/// Loads (or opens) the shared programs.
pub fn kernel(cgroup_parent: &std::path::Path) -> Result<Kernel, ebpf::EbpfError> {
    Kernel::attach(cgroup_parent)
}

/// The collector's inputs for this session.
pub fn audit_inputs(
    policy: &Policy,
    context: &crate::audit::Context,
    redact_exact: Vec<String>,
    exec_rules: Vec<(String, String)>,
    plan: &NetworkPlan,
) -> SessionAudit {
    SessionAudit {
        session: context.session.clone(),
        agent: context.agent.clone(),
        policy: context.policy.clone(),
        trace_id: context.trace_id.clone(),
        redact_exact,
        redact_patterns: policy
            .audit
            .redact
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        exec_rules,
        net_rules: plan.attribution.clone(),
        exec_enforced: policy.exec.enforced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_at_start_and_wildcards_grant_nothing() {
        let src = "version = 1\n[agent]\nname = \"n\"\n[network]\nallow = [\"localhost:8080\", \"*.example.com:443\", \"10.0.0.0/8:22\", \"*:443\"]\nbind = [\"127.0.0.1:9000\"]\n";
        let checked = crate::policy::check(src.as_bytes(), jiff::civil::date(2026, 1, 1));
        let policy = checked.policy.expect("valid");
        let plan = network_plan(&policy);
        assert_eq!(plan.unresolved, vec!["*.example.com:443".to_owned()]);
        assert!(plan.egress.iter().any(|r| r.net == "127.0.0.1/32".parse::<IpNet>().unwrap() && r.ports.first == 8080));
        assert!(plan.egress.iter().any(|r| r.net.prefix_len() == 0));
        assert_eq!(plan.bind.len(), 1);
        assert_eq!(plan.attribution.len(), 3);
    }
}
