//! The session's kernel-side enforcement (egress, bind and raw-socket rules
//! in the shared eBPF maps) and its audit inputs, from its plan.
use super::plan::SessionPlan;
use crate::{
    audit::collect::SessionAudit,
    ebpf::{self, Kernel, Registered, Registration, rules},
};

/// Most kernel rules (per address family) one session may hold: a quarter
/// of a trie.
pub const SESSION_ENTRIES: usize = agentd_common::MAX_EGRESS_ENTRIES as usize / 4;
/// For callers other than root: most kernel rules per session,
pub const CALLER_SESSION_ENTRIES: usize = 1024;
/// across all of the caller's live sessions (rules opened by DNS answers
/// included),
pub const CALLER_ENTRIES: usize = agentd_common::MAX_EGRESS_ENTRIES as usize / 4;
/// and most live sessions at once.
pub const CALLER_SESSIONS: usize = 64;

/// The share of the shared maps a session of `caller` may take, `live`
/// being every live session's (caller, cgroup id).
fn quota(caller: u32, live: &[(u32, u64)]) -> ebpf::Quota {
    if caller == 0 {
        return ebpf::Quota {
            session: SESSION_ENTRIES,
            caller: None,
        };
    }
    let others = live
        .iter()
        .filter(|(c, _)| *c == caller)
        .map(|(_, id)| *id)
        .collect();
    ebpf::Quota {
        session: CALLER_SESSION_ENTRIES,
        caller: Some(ebpf::CallerQuota {
            others,
            entries: CALLER_ENTRIES,
            sessions: CALLER_SESSIONS,
        }),
    }
}

/// Puts the session's rules in the kernel maps, within the caller's quota.
pub fn register(
    kernel: &Kernel,
    cgroup_id: u64,
    session: &SessionPlan,
    dns: Option<(std::net::Ipv4Addr, Option<u16>)>,
    state_dir: &std::path::Path,
    caller: u32,
) -> Result<Registered, super::SessionError> {
    let plan = &session.network;
    let egress = rules::compile(&plan.egress, true).map_err(ebpf::EbpfError::from)?;
    let bind = rules::compile(&plan.bind, false).map_err(ebpf::EbpfError::from)?;
    let live = live_sessions();
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
        loaders: session
            .loaders
            .iter()
            .filter_map(|p| {
                use std::os::unix::fs::MetadataExt as _;
                let m = std::fs::metadata(p).ok()?;
                Some((ebpf::kernel_dev(m.dev()), m.ino()))
            })
            .collect(),
        marker: Some(state_dir.join(ebpf::REGISTERED_MARKER)),
        live_elsewhere: live.iter().map(|(_, id)| *id).collect(),
        quota: quota(caller, &live),
    })?)
}

/// Every live session's (caller uid, cgroup id), from their state
/// (sessions under an earlier parent cgroup are not below the current one).
fn live_sessions() -> Vec<(u32, u64)> {
    super::state::list()
        .into_iter()
        .flatten()
        .filter_map(|st| {
            let m = std::fs::metadata(&st.cgroup).ok()?;
            Some((st.caller_uid, std::os::unix::fs::MetadataExt::ino(&m)))
        })
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
