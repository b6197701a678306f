//! Syscall tracepoints of session processes: refused execs (Landlock
//! enforces the exec allowlist; its refusals are seen as EACCES at
//! execve's exit) and file events per `[audit] file_events`, each recorded
//! at the syscall's exit with its outcome.
use agentd_common::{
    EventKind, FileEvent, PATH_LEN, Pending, SESSION_FILE_READS, SESSION_FILE_WRITES, file_access,
};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    events::{header, reserve},
    kernel::read_user_str,
    maps::{PENDING, SCRATCH, current_session},
    process::report_exec_denied,
};

/// Offsets of the syscall tracepoints' fields (see
/// /sys/kernel/tracing/events/syscalls/*/format): arguments start at 16,
/// 8 bytes each; `ret` of sys_exit_* is at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;

const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const AT_FDCWD: i32 = -100;
const EACCES: i64 = 13;
const EPERM: i64 = 1;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: the offset is a field of this tracepoint's record.
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

#[inline(always)]
fn pid_tgid() -> u64 {
    aya_ebpf::helpers::bpf_get_current_pid_tgid()
}

/// Records a pending syscall: `access`, `dirfd`, `flags` and the user path.
#[inline(always)]
fn remember(access: u8, dirfd: i32, flags: u32, path: u64) {
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `p` is this CPU's scratch slot, exclusively ours while this
    // program runs.
    unsafe {
        (*p).access = access;
        (*p).reserved = [0; 3];
        (*p).dirfd = dirfd;
        (*p).flags = flags;
        (*p).reserved2 = 0;
        (*p).path[0] = 0;
        read_user_str::<PATH_LEN>(path, core::ptr::addr_of_mut!((*p).path));
        let _ = PENDING.insert(&pid_tgid(), &*p, 0);
    }
}

/// The pending syscall of this thread, removed from the map.
#[inline(always)]
fn take() -> Option<*const Pending> {
    let key = pid_tgid();
    let p = PENDING.get_ptr(&key)?;
    Some(p)
}

#[inline(always)]
fn forget() {
    let _ = PENDING.remove(&pid_tgid());
}

// ---- exec ----

#[tracepoint]
pub fn tp_enter_execve(ctx: TracePointContext) -> u32 {
    if current_session().is_some() {
        remember(file_access::EXEC, AT_FDCWD, 0, arg(&ctx, ARG0));
    }
    0
}

#[tracepoint]
pub fn tp_enter_execveat(ctx: TracePointContext) -> u32 {
    if current_session().is_some() {
        remember(
            file_access::EXEC,
            arg(&ctx, ARG0) as i32,
            0,
            arg(&ctx, ARG1),
        );
    }
    0
}

#[tracepoint]
pub fn tp_exit_execve(ctx: TracePointContext) -> u32 {
    exec_exit(&ctx)
}

#[tracepoint]
pub fn tp_exit_execveat(ctx: TracePointContext) -> u32 {
    exec_exit(&ctx)
}

/// A refused exec (EACCES/EPERM) becomes an `ExecDenied` event. A
/// successful exec never returns here (sched_process_exec reports it).
#[inline(always)]
fn exec_exit(ctx: &TracePointContext) -> u32 {
    let Some((cgroup_id, _)) = current_session() else {
        return 0;
    };
    let ret = arg(ctx, ARG0) as i64;
    if let Some(p) = take()
        && (ret == -EACCES || ret == -EPERM)
    {
        report_exec_denied(cgroup_id, (-ret) as u32, |path| {
            // SAFETY: `p` points at this thread's pending map value; `path`
            // at the reserved event's field.
            unsafe { *path = (*p).path };
        });
    }
    forget();
    0
}

// ---- files ----

#[inline(always)]
fn wants(access: u8) -> bool {
    let Some((_, session)) = current_session() else {
        return false;
    };
    if access == file_access::READ {
        session.flags & SESSION_FILE_READS != 0
    } else {
        session.flags & (SESSION_FILE_WRITES | SESSION_FILE_READS) != 0
    }
}

#[tracepoint]
pub fn tp_enter_openat(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, ARG2) as u32;
    let access = if flags & O_CREAT != 0 {
        file_access::CREATE
    } else if flags & (O_WRONLY | O_RDWR | O_TRUNC) != 0 {
        file_access::WRITE
    } else {
        file_access::READ
    };
    if wants(access) {
        remember(access, arg(&ctx, ARG0) as i32, flags, arg(&ctx, ARG1));
    }
    0
}

#[tracepoint]
pub fn tp_enter_unlinkat(ctx: TracePointContext) -> u32 {
    if wants(file_access::UNLINK) {
        remember(
            file_access::UNLINK,
            arg(&ctx, ARG0) as i32,
            arg(&ctx, ARG2) as u32,
            arg(&ctx, ARG1),
        );
    }
    0
}

#[tracepoint]
pub fn tp_enter_renameat2(ctx: TracePointContext) -> u32 {
    if wants(file_access::RENAME) {
        remember(
            file_access::RENAME,
            arg(&ctx, ARG0) as i32,
            0,
            arg(&ctx, ARG1),
        );
    }
    0
}

#[tracepoint]
pub fn tp_exit_openat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint]
pub fn tp_exit_unlinkat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint]
pub fn tp_exit_renameat2(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[inline(always)]
fn file_exit(ctx: &TracePointContext) -> u32 {
    let Some((cgroup_id, _)) = current_session() else {
        return 0;
    };
    let Some(p) = take() else {
        return 0;
    };
    let ret = arg(ctx, ARG0) as i64;
    if let Some(mut entry) = reserve::<FileEvent>() {
        let ev = entry.as_mut_ptr();
        // SAFETY: as in exec_exit.
        unsafe {
            (*ev).header = header(EventKind::File, cgroup_id);
            (*ev).access = (*p).access;
            (*ev).reserved = [0; 3];
            (*ev).errno = if ret < 0 { (-ret) as i32 } else { 0 };
            (*ev).dirfd = (*p).dirfd;
            (*ev).flags = (*p).flags;
            (*ev).path = (*p).path;
        }
        entry.submit(0);
    }
    forget();
    0
}

// ---- sockets ----

/// `socket(2)`: family, type and protocol, kept until the call's exit.
#[tracepoint]
pub fn tp_enter_socket(ctx: TracePointContext) -> u32 {
    if current_session().is_none() {
        return 0;
    }
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `p` is this CPU's scratch slot, exclusively ours while this
    // program runs.
    unsafe {
        (*p).access = file_access::SOCKET;
        (*p).reserved = [0; 3];
        (*p).dirfd = arg(&ctx, ARG0) as i32;
        (*p).flags = arg(&ctx, ARG1) as u32;
        (*p).reserved2 = arg(&ctx, ARG2) as u32;
        let _ = PENDING.insert(&pid_tgid(), &*p, 0);
    }
    0
}

/// A socket refused with EPERM before `cgroup_sock_create` could see it
/// becomes the same `SocketDenied` event as those that program refuses:
/// the families the session's seccomp filter refuses (all but unix, IPv4,
/// IPv6 and route netlink), and raw IP sockets, which the kernel refuses
/// for want of CAP_NET_RAW first. Other IPv4 and IPv6 refusals are that
/// program's, and recorded there.
#[tracepoint]
pub fn tp_exit_socket(ctx: TracePointContext) -> u32 {
    const AF_INET: i32 = 2;
    const AF_INET6: i32 = 10;
    const SOCK_TYPE_MASK: u32 = 0xf;
    const SOCK_RAW: u32 = 3;
    let Some((cgroup_id, _)) = current_session() else {
        return 0;
    };
    let ret = arg(&ctx, ARG0) as i64;
    if ret == -EPERM
        && let Some(p) = take()
    {
        // SAFETY: `p` points at this thread's pending map value.
        let (access, family, ty, protocol) =
            unsafe { ((*p).access, (*p).dirfd, (*p).flags, (*p).reserved2) };
        let inet = family == AF_INET || family == AF_INET6;
        if access == file_access::SOCKET && (!inet || ty & SOCK_TYPE_MASK == SOCK_RAW) {
            crate::egress::socket_denied(
                cgroup_id,
                family as u16,
                (ty & SOCK_TYPE_MASK) as u16,
                protocol as u16,
            );
        }
    }
    forget();
    0
}
