//! Raw syscalls of the sandbox. Everything the child runs between fork and
//! exec is here: plain syscalls on data the parent prepared, no allocation,
//! no locks, no logging. Each returns the errno on failure; the caller
//! reports it with the step that failed.
#![expect(
    unsafe_code,
    reason = "raw syscalls between fork and exec, and mount API calls without libc wrappers"
)]

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

/// errno of the last failed call.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// errno of the last failed call, for the broker.
pub fn last_errno() -> i32 {
    errno()
}

fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn check_int(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// `write(2)` all of `bytes`, retrying on EINTR.
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialised slice for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).map_err(|_| libc::EIO)?;
        bytes = bytes.get(n..).ok_or(libc::EIO)?;
    }
    Ok(())
}

/// `read(2)` into `buf`, retrying on EINTR; returns the byte count.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return usize::try_from(n).map_err(|_| libc::EIO);
    }
}

/// `close(2)`.
pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number has no memory effects; the caller
    // owns `fd` in this process.
    unsafe { libc::close(fd) };
}

/// `_exit(2)`: leaves the forked child without running any destructor.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// `setsid(2)`.
pub fn setsid() -> Result<(), i32> {
    // SAFETY: no arguments.
    check_int(unsafe { libc::setsid() }).map(drop)
}

/// Makes `fd` (a terminal) the controlling terminal (`TIOCSCTTY`).
pub fn set_controlling_tty(fd: RawFd) -> Result<(), i32> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointer.
    check_int(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: flags only.
    check_int(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(2)` with optional source, filesystem type and data.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> Result<(), i32> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives
    // the call; data is NULL.
    check_int(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `move_mount(2)`: attaches the detached mount `from` at `target`.
pub fn move_mount(from: RawFd, target: &CStr) -> Result<(), i32> {
    // SAFETY: both paths are NUL-terminated strings living across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `mkdir(path, 0755)`.
pub fn mkdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: NUL-terminated path.
    check_int(unsafe { libc::mkdir(path.as_ptr(), 0o755) }).map(drop)
}

/// Creates an empty file (a mount point), mode 0644.
pub fn create_file(path: &CStr) -> Result<(), i32> {
    // SAFETY: NUL-terminated path; the descriptor is closed at once.
    let fd = check_int(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    })?;
    close(fd);
    Ok(())
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: NUL-terminated path.
    check_int(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `setrlimit(2)` with soft = hard = `value`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), i32> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    check_int(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: every option used here takes integers, not pointers.
    check_int(unsafe { libc::prctl(option, arg2, 0, 0, 0) }).map(drop)
}

/// Clears the ambient capability set.
pub fn clear_ambient_caps() -> Result<(), i32> {
    // SAFETY: integer arguments only.
    check_int(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// The highest capability number the kernel knows.
pub fn last_cap() -> libc::c_ulong {
    // CAP_LAST_CAP is 40 on Linux 6.x; probing with PR_CAPBSET_READ finds
    // the kernel's own value.
    let mut cap: libc::c_ulong = 0;
    // SAFETY: PR_CAPBSET_READ takes an integer and returns 0/1 or EINVAL.
    while unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap + 1, 0, 0, 0) } >= 0 {
        cap += 1;
        if cap > 63 {
            break;
        }
    }
    cap
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the effective, permitted and inheritable sets of this thread.
pub fn clear_caps() -> Result<(), i32> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and two data structs are the v3 ABI's layout and live
    // across the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

/// `setgroups(0, NULL)`, `setresgid`, `setresuid` as raw syscalls: glibc's
/// wrappers broadcast the change to every thread it knows of, and after
/// clone3 the child's copy of that list names threads that do not exist in
/// it (the call would wait for them forever). The child has one thread.
pub fn set_identity(uid: libc::uid_t, gid: libc::gid_t, saved_gid: libc::gid_t) -> Result<(), i32> {
    // SAFETY: a zero-length group list with a NULL pointer is valid.
    check(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, saved_gid) })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    Ok(())
}

/// `setresgid(gid, gid, gid)`: real, effective and saved group ids, as an
/// unprivileged process may (each must be one of the three it has).
pub fn set_gids(gid: libc::gid_t) -> Result<(), i32> {
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// The broker's group ids: `broker` as real and effective group id (the
/// one the kernel's unix socket hooks let through), `session` as saved and
/// file-system group id (the group of the files it creates for the agent).
/// Each is one the process already has (the setup child's saved and real
/// group ids), so no privilege is needed.
pub fn set_broker_gids(broker: libc::gid_t, session: libc::gid_t) -> Result<(), i32> {
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, broker, broker, session) })?;
    // setfsgid returns the previous id, never an error: read it back.
    // SAFETY: integer arguments.
    unsafe { libc::syscall(libc::SYS_setfsgid, session) };
    // SAFETY: an invalid id (-1) only queries.
    let now = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) };
    if now == i64::from(session) {
        Ok(())
    } else {
        Err(libc::EPERM)
    }
}

/// Runs `f` on a thread of its own whose file-system ids are `ids` (uid,
/// gid) with no supplementary groups, so that paths are looked up with
/// that user's permissions (and none of root's file capabilities, which
/// the kernel drops with a non-zero fsuid). The change is per thread: the
/// raw syscalls do not reach the process's other threads, and the thread
/// ends with `f`. Fails with the errno of a refused change.
pub fn with_fs_ids<T: Send>(ids: (u32, u32), f: impl FnOnce() -> T + Send) -> Result<T, i32> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: integer arguments; a zero-length list with a NULL
                // pointer is valid. setfsuid/setfsgid return the previous
                // id, so success is checked by reading it back.
                unsafe {
                    check(libc::syscall(
                        libc::SYS_setgroups,
                        0,
                        std::ptr::null::<libc::gid_t>(),
                    ))?;
                    libc::syscall(libc::SYS_setfsgid, ids.1);
                    libc::syscall(libc::SYS_setfsuid, ids.0);
                    let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX);
                    let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX);
                    if uid != i64::from(ids.0) || gid != i64::from(ids.1) {
                        return Err(libc::EPERM);
                    }
                }
                Ok(f())
            })
            .join()
            .unwrap_or(Err(libc::EIO))
    })
}

/// `landlock_restrict_self(ruleset, 0)`.
pub fn landlock_restrict_self(ruleset: RawFd) -> Result<(), i32> {
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) }).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`.
pub fn seccomp_set_filter(prog: &libc::sock_fprog) -> Result<(), i32> {
    // SAFETY: `prog` points at a filter array the parent built, alive for
    // the whole child (it lives in memory copied by fork).
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            std::ptr::from_ref(prog),
        )
    })
    .map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER | WAIT_KILLABLE_RECV,
/// prog)`: loads a filter whose `SECCOMP_RET_USER_NOTIF` verdicts go to the
/// returned listener (close-on-exec). Once the supervisor has received a
/// notification, signals other than fatal ones no longer interrupt the
/// waiting call, so the agent cannot make it decide again and again.
pub fn seccomp_listen(prog: &libc::sock_fprog) -> Result<RawFd, i32> {
    let flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    // SAFETY: as for seccomp_set_filter.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::from_ref(prog),
        )
    })?;
    RawFd::try_from(fd).map_err(|_| libc::EBADF)
}

/// The report-pipe record that carries the gate's listener descriptor
/// (failure records carry a [`super::Step`], which is never this).
pub const LISTENER_RECORD: u32 = 0x4c49_5354;

/// Writes one report record: `tag`, then `value`.
pub fn write_record(report: RawFd, tag: u32, value: i32) -> Result<(), i32> {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&tag.to_le_bytes());
    record[4..].copy_from_slice(&value.to_le_bytes());
    write_all(report, &record)
}

/// Loads the gate's filter, reports the listener's descriptor number on
/// `report` and waits for the parent's byte on `ack`: by then the parent
/// holds a duplicate (`pidfd_getfd`), and execve closes the child's copy
/// (close-on-exec), so the agent never holds its own listener. Only
/// `write` and `read` run under the new filter here, and it holds neither.
pub fn gate_listen(prog: &libc::sock_fprog, report: RawFd, ack: RawFd) -> Result<(), i32> {
    let fd = seccomp_listen(prog)?;
    write_record(report, LISTENER_RECORD, fd)?;
    let mut byte = [0u8; 1];
    match read(ack, &mut byte)? {
        1 => Ok(()),
        _ => Err(libc::EPIPE),
    }
}

/// Forks the unix socket broker ([`super::broker::start`]).
pub fn start_broker(plan: &super::broker::Plan) -> Result<(), i32> {
    super::broker::start(plan)
}

/// Unblocks every signal (the supervisor blocks some for its own handling).
pub fn unblock_all_signals() -> Result<(), i32> {
    // SAFETY: `set` is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check_int(libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &set,
            std::ptr::null_mut(),
        ))
        .map(drop)
    }
}

// ---- parent side: idmapped mounts ----

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`).
pub fn open_tree_clone(path: &CStr) -> Result<OwnedFd, i32> {
    // SAFETY: NUL-terminated path; the returned fd is owned by us.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })?;
    let fd = RawFd::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the detached mount `tree` idmapped through `userns`, nosuid and
/// nodev, and read-only with `read_only` (`mount_setattr(2)`).
pub fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, read_only: bool) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP
            | MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).map_err(|_| libc::EBADF)?,
    };
    // SAFETY: `attr` is the kernel's mount_attr layout (size 32) and lives
    // across the call; the path is empty with AT_EMPTY_PATH.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::from_ref(&attr),
            size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Forks a process into a new user namespace and returns its pid, after it
/// signalled readiness on `ready`. It waits until `hold` reaches EOF.
pub fn fork_userns_holder(
    ready: RawFd,
    hold_read: RawFd,
    hold_write: RawFd,
) -> Result<libc::pid_t, i32> {
    // SAFETY: the child only calls async-signal-safe functions (unshare,
    // write, read, close, _exit) on descriptors it inherited.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        close(hold_write);
        let ok = unshare(libc::CLONE_NEWUSER).is_ok();
        let _ = write_all(ready, if ok { b"1" } else { b"0" });
        close(ready);
        let mut buf = [0u8; 1];
        let _ = read(hold_read, &mut buf);
        exit_now(0);
    }
    Ok(pid)
}

/// `waitpid(pid, 0)`, ignoring the status.
pub fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// `waitpid(pid, 0)`: the exit code, or 128 + the signal that ended it.
pub fn wait_status(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || errno() != libc::EINTR {
            break;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Creates a pipe with O_CLOEXEC; returns (read, write).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two new descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks the session watchdog. The child leaves the caller's session,
/// blocks on `hold_read` and, if it reaches EOF (the supervisor died without
/// saying goodbye), execs `/proc/self/exe` with `argv` (`agentd kill …`).
/// A byte on the pipe means the session ended normally: it just exits.
/// `argv` and `envp` are NULL-terminated arrays of pointers into C strings
/// the caller keeps alive across the fork.
pub fn fork_watchdog(
    hold_read: RawFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Result<libc::pid_t, i32> {
    if argv.last().is_none_or(|p| !p.is_null()) || envp.last().is_none_or(|p| !p.is_null()) {
        return Err(libc::EINVAL);
    }
    // SAFETY: the child calls only async-signal-safe functions (close,
    // setsid, read, execve, _exit) on memory that fork copied.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        // Hold nothing of the supervisor's but stdio and the pipe: a
        // copied pty slave or socket would outlive the session.
        close_all_from(3, hold_read);
        let _ = setsid();
        let mut byte = [0u8; 1];
        if matches!(read(hold_read, &mut byte), Ok(1)) {
            exit_now(0);
        }
        // SAFETY: NULL-terminated argv/envp of valid C strings (checked above).
        unsafe { libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        exit_now(127);
    }
    Ok(pid)
}

/// Closes every descriptor >= `from` except `keep` (`close_range(2)`).
pub fn close_all_from(from: u32, keep: RawFd) {
    let keep = u32::try_from(keep).unwrap_or(u32::MAX);
    // SAFETY: integer arguments; closing descriptors has no memory effects.
    unsafe {
        if keep > from {
            libc::syscall(libc::SYS_close_range, from, keep - 1, 0u32);
        }
        libc::syscall(
            libc::SYS_close_range,
            keep.saturating_add(1).max(from),
            u32::MAX,
            0u32,
        );
    }
}

/// Marks every descriptor >= `from` close-on-exec, so that nothing of the
/// supervisor leaks into the agent.
pub fn cloexec_all_from(from: u32) -> Result<(), i32> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, CLOSE_RANGE_CLOEXEC) })
        .map(drop)
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: integer arguments.
    unsafe { libc::kill(pid, signal) };
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What a fork-like call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `clone3(CLONE_INTO_CGROUP)` without a new stack: fork(2), except that
/// the child starts in the cgroup2 directory `cgroup`, with no migration
/// (which costs a writer lock and an RCU grace period per process).
/// The child must only make async-signal-safe calls before execve.
pub fn fork_into_cgroup(cgroup: RawFd) -> Result<Forked, i32> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::try_from(cgroup).map_err(|_| libc::EBADF)?,
    };
    // SAFETY: `args` is a valid clone_args (v2, 88 bytes); without CLONE_VM
    // and with a NULL stack the child runs on a copy of this stack, as after
    // fork(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_ref(&args),
            size_of::<CloneArgs>(),
        )
    };
    match ret {
        r if r < 0 => Err(errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(
            libc::pid_t::try_from(pid).map_err(|_| libc::EIO)?,
        )),
    }
}

/// fork(2) (the fallback when clone3 is missing).
pub fn fork() -> Result<Forked, i32> {
    // SAFETY: the caller makes only async-signal-safe calls in the child.
    match unsafe { libc::fork() } {
        r if r < 0 => Err(errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// fork(2) as a bare system call, for the child between fork and exec: its
/// copy of the C library's locks (malloc's, stdio's) may be held by threads
/// that do not exist in it, and glibc's `fork()` takes them (atfork
/// handlers): it would wait forever. No handler runs here.
pub fn fork_raw() -> Result<Forked, i32> {
    // SAFETY: clone with only SIGCHLD and no new stack is fork(2); the
    // child continues on a copy of this stack and makes only raw calls.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::try_from(libc::SIGCHLD).unwrap_or(17),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        r if r < 0 => Err(errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(
            libc::pid_t::try_from(pid).map_err(|_| libc::EIO)?,
        )),
    }
}

/// `dup2(2)`; the new descriptor is not close-on-exec.
pub fn dup2(from: RawFd, to: RawFd) -> Result<(), i32> {
    // SAFETY: integer arguments.
    check_int(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Resets SIGPIPE to its default (Rust ignores it; ignored dispositions
/// survive execve).
pub fn default_sigpipe() -> Result<(), i32> {
    // SAFETY: SIG_DFL is a valid disposition.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(errno());
    }
    Ok(())
}

/// `execve(2)`; returns only on failure.
pub fn execve(program: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> i32 {
    // SAFETY: the caller passes NULL-terminated arrays of C strings that
    // outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}
