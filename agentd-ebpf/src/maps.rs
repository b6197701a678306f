//! Maps shared by every hook family, and the helpers that read them.
//! Userspace fills them by name (see `agentd_common::map`).
use agentd_common::{
    Counter, DnsOrigin, EVENTS_BYTES, ExecToken, LoaderKey, MAX_DNS_SOCKETS, MAX_EGRESS_ENTRIES,
    MAX_EXEC_TOKENS, MAX_PROCS, MAX_SESSIONS, Offset, Pending, PortRules, ProcInfo, RuleKeyV4,
    RuleKeyV6, SessionEntry,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// Live sessions, keyed by the cgroup id of the session's cgroup. A task
/// whose cgroup is not in here is not part of any session and is left alone.
#[map]
pub static SESSIONS: HashMap<u64, SessionEntry> = HashMap::with_max_entries(MAX_SESSIONS, 0);

/// Per-CPU counters, indexed by `Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::LEN, 0);

/// IPv4 egress and bind rules.
#[map]
pub static EGRESS_V4: LpmTrie<RuleKeyV4, PortRules> =
    LpmTrie::with_max_entries(MAX_EGRESS_ENTRIES, 0);

/// IPv6 egress and bind rules.
#[map]
pub static EGRESS_V6: LpmTrie<RuleKeyV6, PortRules> =
    LpmTrie::with_max_entries(MAX_EGRESS_ENTRIES, 0);

/// Syscalls of session processes between enter and exit.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(MAX_PROCS, 0);

/// Per-CPU scratch space to build a `Pending` (too large for the stack).
#[map]
pub static SCRATCH: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Kernel struct offsets from BTF.
#[map]
pub static OFFSETS: Array<u64> = Array::with_max_entries(Offset::LEN, 0);

/// Exec ids of traced processes.
#[map]
pub static PROCS: LruHashMap<u32, ProcInfo> = LruHashMap::with_max_entries(MAX_PROCS, 0);

/// Where redirected DNS sockets meant to go (see
/// `agentd_common::map::DNS_ORIGINS`).
#[map]
pub static DNS_ORIGINS: LruHashMap<u64, DnsOrigin> =
    LruHashMap::with_max_entries(MAX_DNS_SOCKETS, 0);

/// The execs the gate allowed, by calling thread (see
/// `agentd_common::ExecToken`). Not preallocated: each value is 20 KiB.
#[map]
pub static EXEC_TOKENS: HashMap<u32, ExecToken> =
    HashMap::with_max_entries(MAX_EXEC_TOKENS, BPF_F_NO_PREALLOC);

/// Files each session may run only as an ELF interpreter.
#[map]
pub static LOADERS: HashMap<LoaderKey, u8> = HashMap::with_max_entries(MAX_SESSIONS * 4, 0);

/// Per-CPU scratch space for what an exec really runs.
#[map]
pub static EXEC_SEEN: PerCpuArray<ExecToken> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_F_NO_PREALLOC`.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Events for userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup,
        // so it points at this CPU's u64 slot, which nothing else writes
        // while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// The current task's cgroup id.
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: the helper takes no arguments and only reads the current task.
    unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() }
}

/// The session the current task belongs to, if any.
#[inline(always)]
pub fn current_session() -> Option<(u64, SessionEntry)> {
    let cgroup_id = current_cgroup();
    // SAFETY: the value is copied out immediately; no reference outlives
    // the lookup.
    unsafe { SESSIONS.get(&cgroup_id) }.map(|s| (cgroup_id, *s))
}

/// Reads a `T` at `base + offset(which)` from kernel memory.
#[inline(always)]
pub fn read_at<T: Copy>(base: u64, which: Offset) -> Option<T> {
    let off = OFFSETS.get(which as u32).copied()?;
    if base == 0 {
        return None;
    }
    // Offsets are small; bounding them keeps the verifier's range tracking
    // simple.
    let ptr = base.wrapping_add(off & 0xffff) as *const T;
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and fails
    // cleanly on a bad one; the value is plain data.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(ptr) }.ok()
}

/// `bpf_ktime_get_ns()`.
#[inline(always)]
pub fn ktime() -> u64 {
    // SAFETY: no arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// The current thread group id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32
}

/// The current process's exec start ktime (0 when untracked).
#[inline(always)]
pub fn current_exec_ktime() -> u64 {
    let tgid = current_tgid();
    // SAFETY: copied out immediately.
    unsafe { PROCS.get(&tgid) }.map_or(0, |p| p.exec_ktime)
}
