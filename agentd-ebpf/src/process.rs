//! Process tracing: exec (with path and argv), fork and exit of session
//! processes, and the exec ids that tie them together.
use agentd_common::{
    ARGV_LEN, Counter, EXEC_LOADER, EXEC_UNBOUND, EventKind, ExecToken, LoaderKey, Offset,
    PATH_LEN, ProcInfo, ProcessEvent, SESSION_EXEC_ALLOWLIST, SESSION_EXEC_GATE,
};
use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    events::{header, reserve},
    kernel::{ctx_u64, read_kernel_str},
    maps::{
        EXEC_SEEN, EXEC_TOKENS, LOADERS, PROCS, count, current_session, current_tgid, ktime,
        read_at,
    },
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

/// The (device, inode) of the file `bprm` executes.
#[inline(always)]
fn executed_file(bprm: u64) -> Option<(u64, u64)> {
    let inode = read_at::<u64>(bprm, Offset::BinprmFile)
        .and_then(|f| read_at::<u64>(f, Offset::FileInode))?;
    let ino = read_at::<u64>(inode, Offset::InodeIno)?;
    let dev = read_at::<u64>(inode, Offset::InodeSb)
        .and_then(|sb| read_at::<u32>(sb, Offset::SuperBlockDev))?;
    Some((u64::from(dev), ino))
}

/// Whether `bprm` executes, as a program, a file session `slot` may run
/// only as an ELF interpreter: Landlock grants the dynamic loader execute
/// for the programs that need it, and `ld.so /usr/bin/x` would run any
/// readable program.
#[inline(always)]
fn runs_the_loader(slot: u32, bprm: u64) -> bool {
    let Some((dev, ino)) = executed_file(bprm) else {
        return true; // unknown: fail closed
    };
    let key = LoaderKey {
        slot,
        reserved: 0,
        dev,
        ino,
    };
    // SAFETY: only presence is read.
    unsafe { LOADERS.get(&key) }.is_some()
}

/// Whether the exec `bprm` of thread `tid` is the one the gate allowed:
/// the token the supervisor wrote for it names this file and the exact
/// argv and environment now in the new program's memory. The token is
/// used up either way. At this point the new image is in place and its
/// thread is the only one left: nothing can change what is compared.
#[inline(always)]
fn exec_matches_token(tid: u32, task: u64, bprm: u64) -> bool {
    // SAFETY: the value is read before it is removed, within this program.
    let ok = match unsafe { EXEC_TOKENS.get(&tid) } {
        Some(token) => same_file(token, bprm) && same_memory(token, task),
        None => false,
    };
    let _ = EXEC_TOKENS.remove(&tid);
    ok
}

/// The file `bprm` executes (the interpreter, for a script) is the
/// token's.
#[inline(always)]
fn same_file(token: &ExecToken, bprm: u64) -> bool {
    executed_file(bprm) == Some((token.dev, token.ino))
}

/// The argv and environment in `task`'s new memory are the token's, byte
/// for byte.
#[inline(always)]
fn same_memory(token: &ExecToken, task: u64) -> bool {
    let Some(mm) = read_at::<u64>(task, Offset::TaskMm) else {
        return false;
    };
    let span = |start: Offset, end: Offset| -> Option<(u64, u64)> {
        let s = read_at::<u64>(mm, start)?;
        let e = read_at::<u64>(mm, end)?;
        Some((s, e.wrapping_sub(s)))
    };
    let (Some((arg, arg_len)), Some((env, env_len))) = (
        span(Offset::MmArgStart, Offset::MmArgEnd),
        span(Offset::MmEnvStart, Offset::MmEnvEnd),
    ) else {
        return false;
    };
    if arg_len != u64::from(token.argv_len) || env_len != u64::from(token.env_len) {
        return false;
    }
    let Some(seen) = EXEC_SEEN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `seen` is this CPU's scratch slot; the lengths are checked
    // against the buffers before each read.
    unsafe {
        let seen = &mut *seen;
        let argv_len = token.argv_len as usize;
        let env_len = token.env_len as usize;
        if argv_len > seen.argv.len() || env_len > seen.env.len() {
            return false;
        }
        // `len` bytes of the new program's memory at `from` into `to`.
        let read = |to: *mut u8, len: usize, from: u64| {
            len == 0 || generated::bpf_probe_read_user(to.cast(), len as u32, from as *const _) == 0
        };
        if !read(seen.argv.as_mut_ptr(), argv_len, arg)
            || !read(seen.env.as_mut_ptr(), env_len, env)
        {
            return false;
        }
        same_bytes(&token.argv, &seen.argv, argv_len) && same_bytes(&token.env, &seen.env, env_len)
    }
}

/// One comparison run by `bpf_loop`: the callback is verified once, not
/// once per word, whatever the length.
#[repr(C)]
struct Compare {
    a: *const u8,
    b: *const u8,
    len: u64,
}

/// Whether the first `len` (<= N) bytes of `a` and `b` are equal.
#[inline(always)]
fn same_bytes<const N: usize>(a: &[u8; N], b: &[u8; N], len: usize) -> bool {
    if len > N {
        return false;
    }
    let mut c = Compare {
        a: a.as_ptr(),
        b: b.as_ptr(),
        len: len as u64,
    };
    // One more round than there are words, which compares nothing: the
    // loop runs to its end only if no word differed (the count `bpf_loop`
    // returns says so; nothing is read back from `c`).
    let words = len.div_ceil(8) as u32 + 1;
    let callback: extern "C" fn(u64, *mut core::ffi::c_void) -> i64 = compare_word::<N>;
    // SAFETY: `c` lives on this stack for the whole loop; the callback
    // reads at most N bytes from each array.
    let r = unsafe {
        generated::bpf_loop(
            words,
            callback as *mut core::ffi::c_void,
            core::ptr::addr_of_mut!(c).cast(),
            0,
        )
    };
    r == i64::from(words)
}

/// Compares word `i` of a [`Compare`] (bytes past its length masked off);
/// stops the loop at the first difference.
extern "C" fn compare_word<const N: usize>(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the caller's `Compare`, alive during the loop.
    let c = unsafe { &*ctx.cast::<Compare>() };
    if i.saturating_mul(8) >= c.len {
        return 0;
    }
    if i >= (N / 8) as u64 {
        return 1;
    }
    let off = (i as usize) * 8;
    // Read with the helper: the compiler may compute the offset before the
    // bound above, where the verifier cannot follow it; the helper checks
    // the address itself. off + 8 <= N: inside both arrays.
    let word = |p: *const u8| {
        // SAFETY: bpf_probe_read_kernel copies 8 bytes from any kernel
        // address and fails cleanly on a bad one.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(p.wrapping_add(off).cast::<u64>()) }
    };
    let (Ok(x), Ok(y)) = (word(c.a), word(c.b)) else {
        return 1;
    };
    let rest = c.len.wrapping_sub(off as u64);
    let mask = if rest >= 8 {
        u64::MAX
    } else {
        (1u64 << (rest * 8)) - 1
    };
    i64::from((x ^ y) & mask != 0)
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
    // The thread that called execve, by its id before the exec (the new
    // program may have taken its leader's).
    let old_tid = ctx_u64(&ctx, 1) as u32;
    let refused = if session.flags & SESSION_EXEC_ALLOWLIST != 0 && executes_anonymous_memory(bprm)
    {
        Some(0)
    } else if session.flags & SESSION_EXEC_ALLOWLIST != 0 && runs_the_loader(session.slot, bprm) {
        Some(EXEC_LOADER)
    } else if session.flags & SESSION_EXEC_GATE != 0 && !exec_matches_token(old_tid, task, bprm) {
        Some(EXEC_UNBOUND)
    } else {
        None
    };
    if let Some(status) = refused {
        // SAFETY: SIGKILL to the current task, which is about to return to
        // the new program's first instruction.
        unsafe { generated::bpf_send_signal(SIGKILL) };
        report_exec_denied(cgroup_id, status, |path| {
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
    // A token of an exec that failed after the gate allowed it goes with
    // its thread.
    let _ = EXEC_TOKENS.remove(&(pid as u32));
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
