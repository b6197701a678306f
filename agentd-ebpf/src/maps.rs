//! Maps shared by every hook family. Userspace fills them by name (see
//! `agentd_common::map`).
use agentd_common::{Counter, MAX_SESSIONS, SessionEntry};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};

/// Live sessions, keyed by the cgroup id of the session's cgroup. A task
/// whose cgroup is not in here is not part of any session and is left alone.
#[map]
pub static SESSIONS: HashMap<u64, SessionEntry> = HashMap::with_max_entries(MAX_SESSIONS, 0);

/// Per-CPU event counters, indexed by `Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::LEN, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it points at this CPU's u64 slot, which nothing else writes while
        // this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// The session the current task belongs to, if any.
#[inline(always)]
pub fn current_session() -> Option<SessionEntry> {
    // SAFETY: the helper takes no arguments and only reads the current task.
    let cgroup_id = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out immediately; no reference outlives the
    // lookup.
    unsafe { SESSIONS.get(&cgroup_id) }.copied()
}
