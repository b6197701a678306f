//! The session's kernel-side enforcement (egress, bind and raw-socket rules
//! in the shared eBPF maps) and its audit inputs, derived from the policy.
use ipnet::IpNet;

use super::plan::SessionPlan;
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
    files | exec | dns
}

/// Puts the session's rules in the kernel maps.
pub fn register(
    kernel: &Kernel,
    cgroup_id: u64,
    session: &SessionPlan,
    dns: Option<(std::net::Ipv4Addr, Option<u16>)>,
    state_dir: &std::path::Path,
) -> Result<Registered, super::SessionError> {
    let plan = &session.network;
    let egress = rules::compile(&plan.egress, true).map_err(ebpf::EbpfError::from)?;
    let bind = rules::compile(&plan.bind, false).map_err(ebpf::EbpfError::from)?;
    Ok(kernel.register(Registration {
        cgroup_id,
        // Port 53 is either the session's resolver or nothing: never
        // ordinary egress, whatever rules like `*:*` say.
        flags: session.kernel_flags
            | if dns.is_some() {
                agentd_common::SESSION_DNS_REDIRECT
            } else {
                agentd_common::SESSION_DNS_OFF
            },
        egress,
        bind,
        dns,
        marker: Some(state_dir.join(ebpf::REGISTERED_MARKER)),
        live_elsewhere: live_cgroups(),
    })?)
}

/// The cgroup ids of every live session, from their state (sessions under
/// an earlier parent cgroup are not below the current one).
fn live_cgroups() -> Vec<u64> {
    super::state::list()
        .into_iter()
        .flatten()
        .filter_map(|st| std::fs::metadata(&st.cgroup).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect()
}

/// Loads (or opens) the shared programs.
pub fn kernel(cgroup_parent: &std::path::Path, session: &str) -> Result<Kernel, ebpf::EbpfError> {
    Kernel::attach(cgroup_parent, Some(session))
}

/// The collector's inputs for this session.
pub fn audit_inputs(
    plan: &SessionPlan,
    context: &crate::audit::Context,
    redact_exact: Vec<String>,
) -> SessionAudit {
    SessionAudit {
        session: context.session.clone(),
        agent: context.agent.clone(),
        policy: context.policy.clone(),
        trace_id: context.trace_id.clone(),
        redact_exact,
        redact_patterns: plan.redact.iter().map(|r| r.as_str().to_owned()).collect(),
        exec_rules: plan.exec_rules.clone(),
        net_rules: plan.network.attribution.clone(),
        exec_enforced: plan.exec_enforced,
    }
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
