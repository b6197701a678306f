//! What `agentd doctor` reports (and what the tests' `require!` reads): the
//! host's features, and whether agentd's own kernel programs load here.
//! The host module knows the kernel; this one also knows agentd's programs.
use std::sync::OnceLock;

use crate::host::{self, Check, Feature, HostReport};

/// The host's features, probed on first use.
pub fn report() -> &'static HostReport {
    static REPORT: OnceLock<HostReport> = OnceLock::new();
    REPORT.get_or_init(|| host::probe_all(probe_programs))
}

/// Loads every embedded program without attaching it (the verifier runs).
fn probe_programs(root: bool) -> Check {
    if !root {
        return Check::missing(
            Feature::Ebpf,
            "not probed: loading BPF programs needs root",
            "run `agentd doctor` as root",
        );
    }
    match crate::ebpf::verify() {
        // Sessions refuse to start without them (unless degraded).
        Ok(names)
            if !names
                .iter()
                .any(|n| n == agentd_common::program::CGROUP_CONNECT_UNIX) =>
        {
            let e = crate::ebpf::EbpfError::NoUnixHooks;
            Check::missing(Feature::Ebpf, e.to_string(), e.hint().unwrap_or_default())
        }
        Ok(names) => Check::ok(
            Feature::Ebpf,
            format!("embedded programs load: {}", names.join(", ")),
        ),
        Err(e) => Check::missing(Feature::Ebpf, e.to_string(), e.hint().unwrap_or_default()),
    }
}
