//! Writing events to the ring buffer. A full buffer is never silent: the
//! loss is counted per CPU and userspace reports it as a `lost` event.
use agentd_common::{Counter, EventHeader, EventKind};

use crate::maps::{EVENTS, count, current_exec_ktime, current_tgid, ktime};

/// A reserved slot for a `T`, or `None` (counted as lost).
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(Counter::Lost);
    }
    entry
}

/// The header for an event of the current task.
#[inline(always)]
pub fn header(kind: EventKind, cgroup_id: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        pid: current_tgid(),
        cgroup_id,
        ktime: ktime(),
        exec_ktime: current_exec_ktime(),
    }
}
