//! Ending sessions by force: `agentd kill`, TTLs, and orphaned sessions
//! whose supervisor died.
use std::{
    fs,
    time::{Duration, Instant},
};

use super::{
    SessionError,
    id::SessionId,
    state::{self, KillRecord, SessionState},
};
use crate::cgroup::SessionCgroups;

/// How long a kill waits for the last process to go.
pub const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// What a kill did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillReport {
    /// Processes that were in the session when it was killed.
    pub processes: usize,
    /// From the request to the moment no process was left.
    pub elapsed: Duration,
    /// What could not be recorded (the killed mark, the `kill` record),
    /// and why: the kill happened, but the trail or the session's end
    /// reason may not show it.
    pub unrecorded: Vec<String>,
}

/// Kills every process of session `id` and returns once none is left. The
/// first recorded reason is kept; a session is never resumed. When no
/// supervisor is alive to clean up, this cleans up too.
pub fn kill_session(id: &SessionId, record: &KillRecord) -> Result<KillReport, SessionError> {
    let start = Instant::now();
    let st = SessionState::load(id).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SessionError::UnknownSession(id.clone())
        } else {
            SessionError::StateUnreadable {
                id: id.clone(),
                source,
            }
        }
    })?;
    // In a mount namespace without the cgroup mounts, a missing cgroup
    // directory would mean nothing: bring the hierarchies in first.
    crate::cgroup::mounts().map_err(|e| SessionError::Kill(id.clone(), e))?;
    let mut unrecorded = Vec::new();
    if let Err(e) = state::mark_killed(id, record) {
        unrecorded.push(format!(
            "the killed mark in {} ({e}): the session's end may be recorded as exited",
            state::dir(id).display()
        ));
    }
    let cgroups = SessionCgroups::open(st.cgroup.clone(), st.v1_cgroups.clone());
    let context = crate::audit::Context {
        session: st.id.to_string(),
        agent: st.agent.clone(),
        policy: st.policy_digest.clone(),
        trace_id: st.trace_id.clone(),
    };
    let processes = if st.cgroup.exists() {
        cgroups
            .kill_all(KILL_DEADLINE)
            .map_err(|e| SessionError::Kill(id.clone(), e))?
    } else {
        0
    };
    let elapsed = start.elapsed();
    let log = crate::audit::Log::default_path();
    let appended = log.append(&[crate::audit::Event::now(&context, "kill")
        .with("caller_uid", record.by_uid)
        .with(
            "reason",
            record.text.clone().unwrap_or_else(|| record.reason.clone()),
        )
        .with("processes_killed", processes)
        // Integers only in records: a float's text need not parse back to
        // the same bits everywhere, and the hash covers the text.
        .with(
            "elapsed_us",
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        )]);
    if let Err(e) = appended {
        unrecorded.push(format!("the kill record ({e})"));
    }
    if !st.supervisor_alive() {
        cleanup(&st, &cgroups);
    }
    Ok(KillReport {
        processes,
        elapsed,
        unrecorded,
    })
}

/// Removes everything a session left: cgroups, data and state directories.
pub fn cleanup(st: &SessionState, cgroups: &SessionCgroups) {
    let cgroup_id = cgroups.v2.id();
    // Rules go only once the cgroup (and so every process) is gone.
    if cgroups.remove().is_ok()
        && let (Ok(id), Ok(kernel)) = (cgroup_id, crate::ebpf::Kernel::open_pinned())
        && let Err(e) = kernel.unregister_cgroup(id)
    {
        // The next registration prunes it.
        tracing::warn!(error = %e, "cannot remove the session's eBPF rules");
    }
    let _ = fs::remove_dir_all(&st.data_dir);
    let _ = fs::remove_dir_all(state::dir(&st.id));
}

/// A session found without a living supervisor, and what was done.
#[derive(Debug)]
pub struct Orphan {
    /// The session.
    pub id: SessionId,
    /// Its agent.
    pub agent: String,
    /// The kill, if processes were left.
    pub report: Option<KillReport>,
}

/// Kills and removes every session whose supervisor is gone. Run by every
/// agentd command that touches sessions, so that none lives on unsupervised
/// for longer than it takes to run one.
pub fn sweep_orphans() -> Vec<Orphan> {
    let mut swept = Vec::new();
    for entry in state::list() {
        match entry {
            Ok(st) if !st.supervisor_alive() => {
                let record = KillRecord {
                    reason: "killed".into(),
                    text: Some("its supervisor died (orphaned session)".into()),
                    by_uid: nix::unistd::getuid().as_raw(),
                };
                let report = kill_session(&st.id, &record).ok();
                swept.push(Orphan {
                    id: st.id.clone(),
                    agent: st.agent.clone(),
                    report,
                });
            }
            Ok(_) => {}
            Err(id) => {
                // A directory without state: a session being created right
                // now, or debris from a crash before its state was written.
                let dir = state::dir(&id);
                let old = fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(30));
                if old {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
    }
    swept
}
