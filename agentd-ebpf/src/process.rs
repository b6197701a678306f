//! Process tracing: exec (with path and argv), fork and exit of session
//! processes, and the exec ids that tie them together.
use agentd_common::{
    ARGV_LEN, Counter, EventKind, Offset, PATH_LEN, ProcInfo, ProcessEvent, SESSION_EXEC_ALLOWLIST,
};
use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    events::{header, reserve},
    kernel::{ctx_u64, read_kernel_str},
    maps::{PROCS, count, current_session, current_tgid, ktime, read_at},
};

/// The tracked exec start of process `tgid` (0 when untracked).
#[inline(always)]
fn exec_ktime_of(tgid: u32) -> u64 {
    // SAFETY: copied out immediately.
    unsafe { PROCS.get(&tgid) }.map_or(0, |p| p.exec_ktime)
}

/// SB_NOUSER: a filesystem userspace cannot mount (memfd, pipes, sockets).
const SB_NOUSER: u64 = 1 << 31;
const SIGKILL: u32 = 9;

/// Whether the file `bprm` executes lives on an internal filesystem
/// (anonymous memory: `memfd_create` + `fexecve`). Landlock does not check
/// those, so a session with an exec allowlist is killed before the new
/// program runs a single instruction.
#[inline(always)]
fn executes_anonymous_memory(bprm: u64) -> bool {
    let flags = read_at::<u64>(bprm, Offset::BinprmFile)
        .and_then(|file| read_at::<u64>(file, Offset::FileInode))
        .and_then(|inode| read_at::<u64>(inode, Offset::InodeSb))
        .and_then(|sb| read_at::<u64>(sb, Offset::SuperBlockFlags));
    // Unreadable means unknown: fail closed.
    flags.is_none_or(|f| f & SB_NOUSER != 0)
}

/// Emits an `ExecDenied` event (`errno` 0: killed at exec); `fill_path`
/// writes the program's path into the event.
#[inline(always)]
pub fn report_exec_denied(cgroup_id: u64, errno: u32, fill_path: impl FnOnce(*mut [u8; PATH_LEN])) {
    count(Counter::ExecDenied);
    if let Some(mut entry) = reserve::<ProcessEvent>() {
        let ev = entry.as_mut_ptr();
        // SAFETY: `ev` is a reserved, exclusively owned ring buffer slot.
        unsafe {
            (*ev).header = header(EventKind::ExecDenied, cgroup_id);
            (*ev).ppid = 0;
            (*ev).uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
            (*ev).parent_ktime = 0;
            (*ev).status = errno;
            (*ev).argv_len = 0;
            (*ev).argv[0] = 0;
            (*ev).path[0] = 0;
            fill_path(core::ptr::addr_of_mut!((*ev).path));
        }
        entry.submit(0);
    }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn tp_sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup_id, session)) = current_session() else {
        return 0;
    };
    let task = ctx_u64(&ctx, 0);
    let bprm = ctx_u64(&ctx, 2);
    if session.flags & SESSION_EXEC_ALLOWLIST != 0 && executes_anonymous_memory(bprm) {
        // SAFETY: SIGKILL to the current task, which is about to return to
        // the new program's first instruction.
        unsafe { generated::bpf_send_signal(SIGKILL) };
        report_exec_denied(cgroup_id, 0, |path| {
            if let Some(name) = read_at::<u64>(bprm, Offset::BinprmFilename) {
                read_kernel_str::<PATH_LEN>(name, path);
            }
        });
        return 0;
    }
    let tgid = current_tgid();
    let ppid = read_at::<u64>(task, Offset::TaskRealParent)
        .and_then(|parent| read_at::<i32>(parent, Offset::TaskTgid))
        .map_or(0, |p| p as u32);
    let now = ktime();
    let info = ProcInfo {
        exec_ktime: now,
        parent_ktime: exec_ktime_of(ppid),
        parent_pid: ppid,
        reserved: 0,
    };
    let _ = PROCS.insert(&tgid, &info, 0);
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*ev).header = header(EventKind::Exec, cgroup_id);
        (*ev).header.exec_ktime = now;
        (*ev).ppid = ppid;
        (*ev).uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
        (*ev).parent_ktime = info.parent_ktime;
        (*ev).status = 0;
        (*ev).path[0] = 0;
        (*ev).argv[0] = 0;
        (*ev).argv_len = 0;
        if let Some(name) = read_at::<u64>(bprm, Offset::BinprmFilename) {
            read_kernel_str::<PATH_LEN>(name, core::ptr::addr_of_mut!((*ev).path));
        }
        if let Some(mm) = read_at::<u64>(task, Offset::TaskMm) {
            let start: u64 = read_at(mm, Offset::MmArgStart).unwrap_or(0);
            let end: u64 = read_at(mm, Offset::MmArgEnd).unwrap_or(0);
            let span = end.wrapping_sub(start);
            let len = if span > ARGV_LEN as u64 {
                ARGV_LEN as u32
            } else {
                span as u32
            };
            if start != 0 && len > 0 && len <= ARGV_LEN as u32 {
                let dst = core::ptr::addr_of_mut!((*ev).argv).cast::<core::ffi::c_void>();
                if generated::bpf_probe_read_user(dst, len, start as *const _) == 0 {
                    (*ev).argv_len = len;
                }
            }
        }
    }
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn tp_sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup_id, _)) = current_session() else {
        return 0;
    };
    let child = ctx_u64(&ctx, 1);
    let (Some(pid), Some(tgid)) = (
        read_at::<i32>(child, Offset::TaskPid),
        read_at::<i32>(child, Offset::TaskTgid),
    ) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a thread, not a process
    }
    let parent = current_tgid();
    let now = ktime();
    let info = ProcInfo {
        exec_ktime: now,
        parent_ktime: exec_ktime_of(parent),
        parent_pid: parent,
        reserved: 0,
    };
    let child_tgid = tgid as u32;
    let _ = PROCS.insert(&child_tgid, &info, 0);
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in tp_sched_process_exec.
    unsafe {
        (*ev).header = header(EventKind::Fork, cgroup_id);
        (*ev).header.pid = child_tgid;
        (*ev).header.exec_ktime = now;
        (*ev).ppid = parent;
        (*ev).uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
        (*ev).parent_ktime = info.parent_ktime;
        (*ev).status = 0;
        (*ev).argv_len = 0;
        (*ev).path[0] = 0;
        (*ev).argv[0] = 0;
    }
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn tp_sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let Some((cgroup_id, _)) = current_session() else {
        return 0;
    };
    let task = ctx_u64(&ctx, 0);
    let (Some(pid), Some(tgid)) = (
        read_at::<i32>(task, Offset::TaskPid),
        read_at::<i32>(task, Offset::TaskTgid),
    ) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a thread ends; the process lives on
    }
    let status: i32 = read_at(task, Offset::TaskExitCode).unwrap_or(0);
    let tgid = tgid as u32;
    // SAFETY: copied out immediately.
    let info = unsafe { PROCS.get(&tgid) }.copied().unwrap_or_default();
    let _ = PROCS.remove(&tgid);
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in tp_sched_process_exec.
    unsafe {
        (*ev).header = header(EventKind::Exit, cgroup_id);
        (*ev).header.exec_ktime = info.exec_ktime;
        (*ev).ppid = info.parent_pid;
        (*ev).uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
        (*ev).parent_ktime = info.parent_ktime;
        (*ev).status = status as u32;
        (*ev).argv_len = 0;
        (*ev).path[0] = 0;
        (*ev).argv[0] = 0;
    }
    entry.submit(0);
    0
}
