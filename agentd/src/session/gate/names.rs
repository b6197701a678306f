//! Creating calls at the gate: `open`/`openat` with `O_CREAT`, `creat`,
//! `mkdir*`, `mknod*`, `rename*`, `link*`, `symlink*`. The gate copies the
//! paths once and the broker performs the call on that copy, after checking
//! the protected names ([`crate::sandbox::broker`], `names`); nothing the
//! agent writes to its memory afterwards is read again.
use std::{
    fs,
    os::{
        fd::{AsFd as _, BorrowedFd, OwnedFd},
        unix::fs::OpenOptionsExt as _,
    },
};

use crate::sandbox::{
    broker,
    notify::{self, Notification},
};

/// `PATH_MAX`: longer paths fail with ENAMETOOLONG, as in the kernel.
const PATH_MAX: usize = 4096;

/// A creating call, decoded from its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Creating {
    /// A broker `OP_*`.
    pub op: u32,
    /// The directory descriptors the paths are relative to.
    pub dirs: [i64; 2],
    /// The paths' addresses (0: none). For `symlink`, the first is the
    /// link's text, not a path.
    pub paths: [u64; 2],
    /// Open, rename or link flags.
    pub flags: u64,
    /// Mode of the new file.
    pub mode: u64,
    /// `mknod`'s device.
    pub dev: u64,
}

impl Creating {
    /// The call, if `n` is a creating one.
    pub(super) fn of(n: &Notification) -> Option<Self> {
        let a = n.args;
        let cwd = i64::from(libc::AT_FDCWD);
        let at = |fd: u64| i64::from(fd as i32);
        let c = |op, dirs, paths, flags, mode, dev| {
            Some(Self {
                op,
                dirs,
                paths,
                flags,
                mode,
                dev,
            })
        };
        use broker::{OP_LINK, OP_MKDIR, OP_MKNOD, OP_OPEN, OP_RENAME, OP_SYMLINK};
        let creat = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
        match n.nr {
            libc::SYS_open => c(OP_OPEN, [cwd, cwd], [a[0], 0], a[1], a[2], 0),
            libc::SYS_openat => c(OP_OPEN, [at(a[0]), cwd], [a[1], 0], a[2], a[3], 0),
            libc::SYS_creat => c(OP_OPEN, [cwd, cwd], [a[0], 0], creat, a[1], 0),
            libc::SYS_mkdir => c(OP_MKDIR, [cwd, cwd], [a[0], 0], 0, a[1], 0),
            libc::SYS_mkdirat => c(OP_MKDIR, [at(a[0]), cwd], [a[1], 0], 0, a[2], 0),
            libc::SYS_mknod => c(OP_MKNOD, [cwd, cwd], [a[0], 0], 0, a[1], a[2]),
            libc::SYS_mknodat => c(OP_MKNOD, [at(a[0]), cwd], [a[1], 0], 0, a[2], a[3]),
            libc::SYS_rename => c(OP_RENAME, [cwd, cwd], [a[0], a[1]], 0, 0, 0),
            libc::SYS_renameat => c(OP_RENAME, [at(a[0]), at(a[2])], [a[1], a[3]], 0, 0, 0),
            libc::SYS_renameat2 => c(OP_RENAME, [at(a[0]), at(a[2])], [a[1], a[3]], a[4], 0, 0),
            libc::SYS_link => c(OP_LINK, [cwd, cwd], [a[0], a[1]], 0, 0, 0),
            libc::SYS_linkat => c(OP_LINK, [at(a[0]), at(a[2])], [a[1], a[3]], a[4], 0, 0),
            libc::SYS_symlink => c(OP_SYMLINK, [cwd, cwd], [a[0], a[1]], 0, 0, 0),
            libc::SYS_symlinkat => c(OP_SYMLINK, [cwd, at(a[1])], [a[0], a[2]], 0, 0, 0),
            _ => None,
        }
    }

    /// The syscall's name, for records.
    pub(super) fn name(self) -> &'static str {
        match self.op {
            broker::OP_OPEN => "open",
            broker::OP_MKDIR => "mkdir",
            broker::OP_MKNOD => "mknod",
            broker::OP_RENAME => "rename",
            broker::OP_LINK => "link",
            _ => "symlink",
        }
    }

    /// Whether the call uses a mode (and so the umask).
    fn has_mode(self) -> bool {
        matches!(
            self.op,
            broker::OP_OPEN | broker::OP_MKDIR | broker::OP_MKNOD
        )
    }

    /// Whether an open asked for a close-on-exec descriptor.
    pub(super) fn cloexec(self) -> bool {
        self.flags & libc::O_CLOEXEC as u64 != 0
    }
}

/// What the gate hands the broker for one creating call.
pub(super) struct Copied {
    /// The request (flags, mode, umask, device).
    pub request: broker::Request,
    /// The paths, each NUL-terminated.
    pub data: Vec<u8>,
    /// The directories relative paths are resolved from (`None`: absolute,
    /// or no path).
    pub dirs: [Option<OwnedFd>; 2],
    /// The first path as the agent gave it (after `/proc/self` and
    /// `/dev/fd` were made the caller's), for records.
    pub shown: String,
}

/// Copies what the broker needs from thread `tid`: the paths (once), the
/// directories they are relative to, the umask. An errno when the call
/// cannot be performed as asked.
pub(super) fn copy(tid: u32, call: Creating) -> Result<Copied, i32> {
    let mut data = Vec::new();
    let mut dirs: [Option<OwnedFd>; 2] = [None, None];
    let mut shown = String::new();
    for (i, (&addr, &dirfd)) in call.paths.iter().zip(&call.dirs).enumerate() {
        if addr == 0 {
            if i == 0 || call.op == broker::OP_RENAME || call.op == broker::OP_LINK {
                return Err(libc::EFAULT);
            }
            data.push(0);
            continue;
        }
        let raw = notify::read_string(tid, addr, PATH_MAX)?;
        // A symlink's text is stored as it is; it names nothing now.
        let is_text = call.op == broker::OP_SYMLINK && i == 0;
        let path = if is_text { raw } else { callers_own(&raw, tid) };
        if path.len() >= PATH_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if i == 0 {
            shown = String::from_utf8_lossy(&path).into_owned();
        }
        if !is_text && !path.starts_with(b"/") {
            dirs[i] = Some(directory(tid, dirfd)?);
        }
        data.extend_from_slice(&path);
        data.push(0);
    }
    let mut request = broker::Request::new(call.op, call.flags as u32, &[], data.len());
    request.mode = call.mode as u32;
    request.dev = call.dev;
    if call.has_mode() {
        request.umask = umask(tid)?;
    }
    Ok(Copied {
        request,
        data,
        dirs,
        shown,
    })
}

/// `path` with the names that mean "the calling process" spelled with its
/// thread id: the broker resolving `/proc/self` or `/dev/stdout` would
/// reach its own. (A symlink to them made by the agent still leads to the
/// broker's: the broker refuses descriptors on procfs, and its own
/// descriptors are its channel and the agent's directories.)
fn callers_own(path: &[u8], tid: u32) -> Vec<u8> {
    let proc = |rest: &[u8]| {
        let mut p = format!("/proc/{tid}").into_bytes();
        p.extend_from_slice(rest);
        p
    };
    for (name, fd) in [
        (&b"/dev/stdin"[..], "0"),
        (b"/dev/stdout", "1"),
        (b"/dev/stderr", "2"),
    ] {
        if path == name {
            return proc(format!("/fd/{fd}").as_bytes());
        }
    }
    for prefix in [&b"/proc/self"[..], b"/proc/thread-self"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with(b"/"))
        {
            return proc(rest);
        }
    }
    if let Some(rest) = path.strip_prefix(b"/dev/fd")
        && (rest.is_empty() || rest.starts_with(b"/"))
    {
        let mut p = proc(b"/fd");
        p.extend_from_slice(rest);
        return p;
    }
    path.to_vec()
}

/// The directory descriptor `fd` of thread `tid` (its working directory
/// for `AT_FDCWD`).
pub(super) fn directory(tid: u32, fd: i64) -> Result<OwnedFd, i32> {
    if fd == i64::from(libc::AT_FDCWD) {
        return fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{tid}/cwd"))
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM));
    }
    let fd = u64::try_from(fd).map_err(|_| libc::EBADF)?;
    notify::take_fd(tid, fd, true).map_err(|e| if e == libc::EBADF { e } else { libc::EPERM })
}

/// Thread `tid`'s umask (`Umask:` in its status).
fn umask(tid: u32) -> Result<u32, i32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| libc::ESRCH)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or(libc::ESRCH)
}

/// The descriptors to send: the two directories, or `fallback` (any
/// descriptor: the broker ignores it for absolute paths).
pub(super) fn dir_fds<'a>(copied: &'a Copied, fallback: BorrowedFd<'a>) -> [BorrowedFd<'a>; 2] {
    let pick = |d: &'a Option<OwnedFd>| d.as_ref().map_or(fallback, |f| f.as_fd());
    [pick(&copied.dirs[0]), pick(&copied.dirs[1])]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notif(nr: i64, args: [u64; 6]) -> Notification {
        Notification {
            id: 1,
            pid: 1,
            nr,
            args,
        }
    }

    #[test]
    fn calls_are_decoded_with_their_directories() {
        let cwd = i64::from(libc::AT_FDCWD);
        let c = Creating::of(&notif(libc::SYS_openat, [5, 0x1000, 0o100, 0o644, 0, 0])).unwrap();
        assert_eq!(
            (c.op, c.dirs[0], c.paths[0], c.mode),
            (broker::OP_OPEN, 5, 0x1000, 0o644)
        );
        let c = Creating::of(&notif(libc::SYS_creat, [0x1000, 0o600, 0, 0, 0, 0])).unwrap();
        assert_eq!(c.dirs[0], cwd);
        assert_ne!(c.flags & libc::O_CREAT as u64, 0);
        let c = Creating::of(&notif(libc::SYS_symlinkat, [0x1, 7, 0x2, 0, 0, 0])).unwrap();
        assert_eq!((c.dirs, c.paths), ([cwd, 7], [0x1, 0x2]));
        let at_fdcwd = u64::from(libc::AT_FDCWD as u32);
        let c = Creating::of(&notif(libc::SYS_renameat2, [at_fdcwd, 1, 3, 2, 4, 0])).unwrap();
        assert_eq!((c.dirs, c.flags), ([cwd, 3], 4), "AT_FDCWD as a 32-bit int");
        assert!(Creating::of(&notif(libc::SYS_connect, [0; 6])).is_none());
    }

    #[test]
    fn the_callers_own_names_are_spelled_with_its_id() {
        let own = |p: &str| String::from_utf8(callers_own(p.as_bytes(), 42)).unwrap();
        assert_eq!(own("/dev/stdout"), "/proc/42/fd/1");
        assert_eq!(own("/dev/fd/63"), "/proc/42/fd/63");
        assert_eq!(own("/proc/self/fd/3"), "/proc/42/fd/3");
        assert_eq!(own("/proc/thread-self/attr"), "/proc/42/attr");
        assert_eq!(own("/proc/selfish"), "/proc/selfish");
        assert_eq!(own("/dev/stdout2"), "/dev/stdout2");
        assert_eq!(own("rel/x"), "rel/x");
    }
}
