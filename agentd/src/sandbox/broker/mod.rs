//! The session's broker: a process inside the session (the agent's uid,
//! mount namespace, Landlock domain and cgroup) that connects the agent's
//! own sockets and creates names for the supervisor ([`names`]: creating
//! calls, checked against the protected names).
//!
//! Landlock does not cover `connect(2)` on pathname unix sockets, and a
//! seccomp filter cannot see the family of a socket or the address behind a
//! pointer. So the supervisor takes `connect` (and datagram sends with an
//! address) off the agent through seccomp user notification, copies the
//! address once, and hands the broker the agent's socket and its working
//! directory. The broker resolves the path as the agent would (same mounts,
//! same uid, same Landlock domain), opens it `O_PATH`, decides on *that
//! inode* (its real path, read back from the kernel, and its owner), and
//! connects through `/proc/self/fd/N`, so the inode it checked is the one
//! connected. Nothing the agent does to its memory after the copy changes
//! the outcome, and a symlink or a rename cannot swap the target between
//! check and use. The peer sees the session's uid, as if the agent had
//! connected itself.
//!
//! The broker is forked from the agent's setup child after Landlock and
//! before the seccomp filters, twice (it is reparented away from the agent,
//! whose `wait` must not see it), keeps only its channel, and runs under its
//! own allowlist filter. It never executes anything and allocates nothing:
//! it runs in a fork of a multithreaded process. It makes itself not
//! dumpable (whatever `fs.suid_dumpable` says), so the agent cannot ptrace
//! it or write its memory: the kernel lets the broker's unix connects
//! through ([`crate::ebpf`]'s unix hooks). Killing it only makes the
//! agent's unix connects fail.
#![expect(
    unsafe_code,
    reason = "descriptor passing, and raw syscalls in a forked child that may not allocate"
)]
use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::{protect, seccomp, sys};

mod names;

pub use names::Known;

/// Connect the socket to the address.
pub const OP_CONNECT: u32 = 1;
/// Send the data to the address (`sendto`).
pub const OP_SENDTO: u32 = 2;
/// `openat(dir, path, flags, mode)` with `O_CREAT`; the reply carries the
/// new descriptor.
pub const OP_OPEN: u32 = 3;
/// `mkdirat(dir, path, mode)`.
pub const OP_MKDIR: u32 = 4;
/// `mknodat(dir, path, mode, dev)`.
pub const OP_MKNOD: u32 = 5;
/// `renameat2(dir, path, dir2, path2, flags)`.
pub const OP_RENAME: u32 = 6;
/// `linkat(dir, path, dir2, path2, flags)`.
pub const OP_LINK: u32 = 7;
/// `symlinkat(path, dir2, path2)`.
pub const OP_SYMLINK: u32 = 8;
/// Open `path` (relative to `dir`) `O_PATH` as exec would find it (flags:
/// `AT_EMPTY_PATH`, `AT_SYMLINK_NOFOLLOW`); the reply carries the
/// descriptor and its real path.
pub const OP_RESOLVE: u32 = 9;
/// `sizeof(struct sockaddr_un)`: the kernel refuses longer addresses.
pub const ADDR_MAX: usize = 110;
/// Largest datagram the broker sends for the agent.
pub const DATA_MAX: usize = 64 * 1024;
/// Longest real path the broker reports.
const PATH_MAX: usize = 4096;

/// The address was not a pathname (abstract, unnamed, another family): the
/// broker used it as given (Landlock's scoping covers abstract sockets).
pub const PASSED: u32 = 0;
/// A socket the session created under its own `{tmp}` or `{home}`.
pub const OWN: u32 = 1;
/// A socket the policy lists.
pub const LISTED: u32 = 2;
/// A socket outside both: refused with EACCES.
pub const REFUSED: u32 = 3;
/// The path did not resolve to a socket (the error is the kernel's).
pub const UNRESOLVED: u32 = 4;
/// A creating call refused: the name is protected (EPERM); `path` says
/// which.
pub const PROTECTED: u32 = 5;
/// An open of a FIFO with no reader yet (ENXIO without blocking): the
/// reply carries the FIFO (`O_PATH`) for the supervisor to wait on, so
/// the broker itself never blocks.
pub const FIFO_WAIT: u32 = 6;

/// One request, followed in the same message by `data_len` bytes of data
/// (for creating calls: the paths, each NUL-terminated); the agent's socket
/// and working directory (for creating calls: the two directories the
/// paths are relative to) travel as `SCM_RIGHTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Echoed in the reply: a reply to a request the supervisor stopped
    /// waiting for is told from the current one's.
    pub id: u64,
    /// [`OP_CONNECT`] or [`OP_SENDTO`].
    pub op: u32,
    /// `sendto`, open, rename or link flags.
    pub flags: u32,
    /// The mode of a created file.
    pub mode: u32,
    /// The agent's umask, applied to `mode`.
    pub umask: u32,
    /// `mknod`'s device number.
    pub dev: u64,
    /// Bytes of `addr` in use.
    pub addr_len: u32,
    /// Bytes of data following the request.
    pub data_len: u32,
    /// The address, as the supervisor copied it from the agent.
    pub addr: [u8; ADDR_MAX],
    _pad: [u8; 2],
}

impl Request {
    /// A request for `op` on the copied `addr` (at most [`ADDR_MAX`] bytes).
    pub fn new(op: u32, flags: u32, addr: &[u8], data_len: usize) -> Self {
        let mut req = Self {
            id: 0,
            op,
            flags,
            mode: 0,
            umask: 0o077,
            dev: 0,
            addr_len: 0,
            data_len: u32::try_from(data_len.min(DATA_MAX)).unwrap_or(0),
            addr: [0; ADDR_MAX],
            _pad: [0; 2],
        };
        let n = addr.len().min(ADDR_MAX);
        req.addr[..n].copy_from_slice(&addr[..n]);
        req.addr_len = u32::try_from(n).unwrap_or(0);
        req
    }
}

/// What the broker did.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// The syscall's result: >= 0, or a negated errno.
    pub ret: i64,
    /// [`PASSED`], [`OWN`], [`LISTED`], [`REFUSED`], [`UNRESOLVED`] or
    /// [`PROTECTED`].
    pub outcome: u32,
    /// Bytes of `path` in use.
    pub path_len: u32,
    /// The socket's real path, as the session sees it; for a refused
    /// creating call, the name refused.
    pub path: [u8; PATH_MAX],
}

impl Reply {
    pub(crate) const fn new(ret: i64, outcome: u32) -> Self {
        Self {
            id: 0,
            ret,
            outcome,
            path_len: 0,
            path: [0; PATH_MAX],
        }
    }

    /// The socket's real path (lossy).
    pub fn path(&self) -> String {
        let n = (self.path_len as usize).min(PATH_MAX);
        String::from_utf8_lossy(&self.path[..n]).into_owned()
    }
}

/// What the broker needs, prepared by the parent before the fork.
#[derive(Debug)]
pub struct Plan {
    /// The broker's end of its channel to the supervisor.
    pub chan: OwnedFd,
    /// The session's uid: the owner of the sockets it created itself.
    pub uid: libc::uid_t,
    /// The session's gid: the group of the files it creates.
    pub gid: libc::gid_t,
    /// The protected names.
    pub protected: protect::Tree,
    /// Real paths of the sockets (or directories of sockets) the policy lists.
    pub listed: Vec<CString>,
    /// Real paths of the session's `{tmp}` and `{home}`.
    pub own: Vec<CString>,
    /// The broker's own seccomp filter.
    pub filter: seccomp::Program,
}

/// The supervisor's end of the channel.
#[derive(Debug)]
pub struct Client {
    chan: OwnedFd,
    /// The id of the next request.
    next: std::sync::atomic::AtomicU64,
}

/// How long the supervisor waits for the broker to take a request and to
/// answer it. The broker performs the agent's call on the agent's socket:
/// a blocking connect to a listener whose backlog is full, or a broker the
/// agent stopped (same uid: it may signal it), must not hold the gate,
/// which also serves the session's IP calls. The agent's call then fails
/// with ETIMEDOUT.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connected channel: (the broker's plan half, the supervisor's client).
pub fn channel() -> Result<(OwnedFd, Client), i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(sys::last_errno());
    }
    // SAFETY: socketpair returned two new descriptors we now own.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let timeout = nix::sys::time::TimeVal::new(i64::try_from(TIMEOUT.as_secs()).unwrap_or(5), 0);
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a timeval of the size passed, for a socket we own.
        let r = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(timeout.as_ref()).cast(),
                libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(16),
            )
        };
        if r < 0 {
            return Err(sys::last_errno());
        }
    }
    Ok((
        a,
        Client {
            chan: b,
            next: std::sync::atomic::AtomicU64::new(1),
        },
    ))
}

impl Client {
    /// Sends `req` with `data`, the agent's socket and its working
    /// directory (or the two directories of a creating call), and waits for
    /// the reply and the descriptor it carries, if any (at most [`TIMEOUT`]
    /// for each: then `ErrorKind::TimedOut`, and a late reply is skipped by
    /// the next call). Any other error means the broker is gone: the caller
    /// refuses the call.
    pub fn call(
        &self,
        req: &Request,
        data: &[u8],
        sock: BorrowedFd<'_>,
        cwd: BorrowedFd<'_>,
    ) -> std::io::Result<(Reply, Option<OwnedFd>)> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = &Request { id, ..*req };
        let fds = [sock.as_raw_fd(), cwd.as_raw_fd()];
        let mut iov = [
            libc::iovec {
                iov_base: std::ptr::from_ref(req).cast_mut().cast(),
                iov_len: size_of::<Request>(),
            },
            libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len().min(DATA_MAX),
            },
        ];
        let mut control = Control::new();
        // SAFETY: the message points at `iov` and `control`, alive for the
        // call; `fds` is copied into the control buffer.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            control.put_fds(&mut msg, &fds[..]);
            libc::sendmsg(self.chan.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            return Err(timed_out(std::io::Error::last_os_error()));
        }
        loop {
            let (reply, fd) = self.receive()?;
            if reply.id == id {
                return Ok((reply, fd));
            }
        }
    }

    /// Receives one reply, and the descriptor sent with it.
    fn receive(&self) -> std::io::Result<(Reply, Option<OwnedFd>)> {
        let mut reply = Box::new(Reply::new(0, 0));
        let mut iov = libc::iovec {
            iov_base: std::ptr::from_mut(&mut *reply).cast(),
            iov_len: size_of::<Reply>(),
        };
        let mut control = Control::new();
        // SAFETY: the message points at `iov` (the reply) and `control`,
        // alive for the call; the kernel writes at most their lengths.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.buf.as_mut_ptr().cast();
            msg.msg_controllen = control.buf.len();
            let n = libc::recvmsg(self.chan.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            let fd = control
                .take_fds::<1>(&msg)
                .map(|[fd]| OwnedFd::from_raw_fd(fd));
            (n, fd)
        };
        match usize::try_from(n) {
            Ok(n) if n == size_of::<Reply>() => Ok((*reply, fd)),
            Ok(_) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Err(_) => Err(timed_out(std::io::Error::last_os_error())),
        }
    }
}

/// A socket timeout (EAGAIN) as `ErrorKind::TimedOut`.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        std::io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

/// A control buffer for one or two descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control {
    buf: [u8; 64],
}

impl Control {
    const fn new() -> Self {
        Self { buf: [0; 64] }
    }

    /// Attaches `fds` (one or two) to `msg` as one `SCM_RIGHTS` message.
    ///
    /// # Safety
    /// `msg` must be used while `self` is alive and not moved.
    unsafe fn put_fds(&mut self, msg: &mut libc::msghdr, fds: &[RawFd]) {
        let n = fds.len().min(2);
        let bytes = (n * size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE of at most two ints (24) fits the 64-byte
        // buffer; CMSG_FIRSTHDR is non-null for a buffer that large.
        unsafe {
            msg.msg_control = self.buf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), n);
        }
    }

    /// The `N` descriptors of a received `SCM_RIGHTS` message, if that is
    /// what came.
    ///
    /// # Safety
    /// `msg` must have been filled by `recvmsg` with this buffer.
    unsafe fn take_fds<const N: usize>(&self, msg: &libc::msghdr) -> Option<[RawFd; N]> {
        // SAFETY: the kernel wrote the control messages into `buf`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
                || (*cmsg).cmsg_len != libc::CMSG_LEN((N * size_of::<RawFd>()) as u32) as usize
            {
                return None;
            }
            let mut fds = [-1; N];
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(cmsg).cast(), fds.as_mut_ptr(), N);
            Some(fds)
        }
    }
}

/// Forks the broker (twice: the intermediate exits at once, so the broker
/// is nobody's child in the session). Runs in the setup child, with bare
/// forks ([`sys::fork_raw`]): glibc's would deadlock on locks copied held.
pub fn start(plan: &Plan) -> Result<(), i32> {
    match sys::fork_raw()? {
        sys::Forked::Child => match sys::fork_raw() {
            Ok(sys::Forked::Child) => serve(plan),
            Ok(sys::Forked::Parent(_)) => sys::exit_now(0),
            Err(_) => sys::exit_now(1),
        },
        sys::Forked::Parent(pid) => match sys::wait_status(pid) {
            0 => Ok(()),
            _ => Err(libc::ECHILD),
        },
    }
}

/// The broker's loop: never returns. Exits when the supervisor's end
/// closes.
fn serve(plan: &Plan) -> ! {
    // Only the channel stays open, as descriptor 0.
    if sys::dup2(plan.chan.as_raw_fd(), 0).is_err() {
        sys::exit_now(1);
    }
    sys::close_all_from(1, 0);
    // The group the kernel's unix socket hooks let through (the real
    // group id they read; the setup child left it as the saved one); the
    // session's group stays the saved and file-system group id, which
    // files it creates get.
    if sys::set_broker_gids(agentd_common::BROKER_GID, plan.gid).is_err()
        || sys::prctl(libc::PR_SET_DUMPABLE, 0).is_err()
    {
        sys::exit_now(1);
    }
    // Its name in `ps`, instead of the supervisor's command line.
    let _ = sys::prctl(
        libc::PR_SET_NAME,
        c"agentd-broker".as_ptr() as libc::c_ulong,
    );
    // SAFETY: SIG_IGN is a valid disposition. A hangup of the agent's
    // terminal or a closed peer must not end the broker.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    if sys::seccomp_set_filter(&plan.filter.fprog()).is_err() {
        sys::exit_now(1);
    }
    let mut req = Request::new(0, 0, &[], 0);
    let mut data = [0u8; DATA_MAX];
    let mut known = Known::new(&plan.protected.dirs);
    // The same Reply for every answer: 4 KiB, on the stack once.
    let mut reply = Reply::new(0, PASSED);
    loop {
        let Some((fds, n)) = receive(0, &mut req, &mut data) else {
            sys::exit_now(0);
        };
        let mut fd = -1;
        if n < size_of::<Request>() {
            reply = Reply::new(-i64::from(libc::EINVAL), PASSED);
        } else {
            let len = (req.data_len as usize).min(n - size_of::<Request>());
            match req.op {
                OP_CONNECT | OP_SENDTO => {
                    reply = handle(plan, &req, &data[..len], fds[0], fds[1]);
                }
                _ => {
                    reply.ret = 0;
                    reply.outcome = PASSED;
                    reply.path_len = 0;
                    let ctx = names::Ctx {
                        tree: &plan.protected,
                        known: &mut known,
                    };
                    fd = names::handle(ctx, &req, &data[..len], fds, &mut reply);
                }
            }
        }
        reply.id = req.id;
        sys::close(fds[0]);
        sys::close(fds[1]);
        let sent = send_reply(0, &reply, fd);
        if fd >= 0 {
            sys::close(fd);
        }
        if sent.is_err() {
            sys::exit_now(0);
        }
    }
}

/// Receives one request; `None` at EOF or on a broken channel. A message
/// without exactly two descriptors is answered EINVAL (descriptors -1).
fn receive(chan: RawFd, req: &mut Request, data: &mut [u8]) -> Option<([RawFd; 2], usize)> {
    loop {
        let mut iov = [
            libc::iovec {
                iov_base: std::ptr::from_mut(req).cast(),
                iov_len: size_of::<Request>(),
            },
            libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            },
        ];
        let mut control = Control::new();
        // SAFETY: the message points at `iov` and `control`, alive for the
        // call; the kernel writes at most their lengths.
        let (n, fds) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            msg.msg_control = control.buf.as_mut_ptr().cast();
            msg.msg_controllen = control.buf.len();
            let n = libc::recvmsg(chan, &mut msg, libc::MSG_CMSG_CLOEXEC);
            (n, control.take_fds::<2>(&msg))
        };
        match usize::try_from(n) {
            Ok(0) => return None,
            Ok(n) => return Some((fds.unwrap_or([-1, -1]), if fds.is_some() { n } else { 0 })),
            Err(_) if sys::last_errno() == libc::EINTR => {}
            Err(_) => return None,
        }
    }
}

/// Sends `reply`, with descriptor `fd` when it is one (>= 0).
fn send_reply(chan: RawFd, reply: &Reply, fd: RawFd) -> Result<(), i32> {
    let mut iov = libc::iovec {
        iov_base: std::ptr::from_ref(reply).cast_mut().cast(),
        iov_len: size_of::<Reply>(),
    };
    let mut control = Control::new();
    // SAFETY: the message points at `iov` (the reply) and `control`, alive
    // for the call. A seqpacket channel sends the reply whole or not at
    // all.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if fd >= 0 {
            control.put_fds(&mut msg, &[fd]);
        }
        libc::sendmsg(chan, &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        Err(sys::last_errno())
    } else {
        Ok(())
    }
}

/// Performs one request; see the module documentation for why the inode
/// checked is the inode connected.
fn handle(plan: &Plan, req: &Request, data: &[u8], sock: RawFd, cwd: RawFd) -> Reply {
    let addr = &req.addr[..(req.addr_len as usize).min(ADDR_MAX)];
    let Some(path) = pathname(addr) else {
        return Reply::new(perform(req, sock, addr, data), PASSED);
    };
    let mut name = [0u8; ADDR_MAX + 1];
    name[..path.len()].copy_from_slice(path);
    // SAFETY: `name` is NUL-terminated (path is at most ADDR_MAX - 2 bytes).
    let target = unsafe { libc::openat(cwd, name.as_ptr().cast(), libc::O_PATH | libc::O_CLOEXEC) };
    if target < 0 {
        return Reply::new(-i64::from(sys::last_errno()), UNRESOLVED);
    }
    let reply = decide_and_perform(plan, req, data, sock, target);
    sys::close(target);
    reply
}

fn decide_and_perform(
    plan: &Plan,
    req: &Request,
    data: &[u8],
    sock: RawFd,
    target: RawFd,
) -> Reply {
    // SAFETY: `st` is a valid out-pointer for fstat.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(target, &mut st) < 0 {
            return Reply::new(-i64::from(sys::last_errno()), UNRESOLVED);
        }
        st
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Reply::new(-i64::from(libc::ECONNREFUSED), UNRESOLVED);
    }
    let mut link = [0u8; 32];
    let link_len = proc_fd_path(&mut link, target);
    let mut reply = Reply::new(0, REFUSED);
    // SAFETY: `link` is NUL-terminated; readlink writes at most PATH_MAX bytes.
    let n = unsafe {
        libc::readlink(
            link.as_ptr().cast(),
            reply.path.as_mut_ptr().cast(),
            PATH_MAX,
        )
    };
    let real = match usize::try_from(n) {
        Ok(n) if n < PATH_MAX => &reply.path[..n],
        _ => return Reply::new(-i64::from(libc::EACCES), REFUSED),
    };
    reply.outcome = if plan.listed.iter().any(|p| under(real, p.as_bytes())) {
        LISTED
    } else if st.st_uid == plan.uid && plan.own.iter().any(|p| under(real, p.as_bytes())) {
        OWN
    } else {
        REFUSED
    };
    reply.path_len = u32::try_from(real.len()).unwrap_or(0);
    reply.ret = if reply.outcome == REFUSED {
        -i64::from(libc::EACCES)
    } else {
        // sockaddr_un { AF_UNIX, "/proc/self/fd/N" }: the checked inode.
        let mut addr = [0u8; 2 + 32];
        addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        addr[2..2 + link_len].copy_from_slice(&link[..link_len]);
        perform(req, sock, &addr[..2 + link_len + 1], data)
    };
    reply
}

/// The path of a pathname address (`None` for abstract and unnamed ones
/// and other families).
pub fn pathname(addr: &[u8]) -> Option<&[u8]> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]);
    let path = &addr[2..];
    if i32::from(family) != libc::AF_UNIX || path.first().is_none_or(|b| *b == 0) {
        return None;
    }
    Some(
        path.iter()
            .position(|b| *b == 0)
            .map_or(path, |end| &path[..end]),
    )
}

/// Whether `path` is `dir` or below it.
fn under(path: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// Writes `/proc/self/fd/N` NUL-terminated into `out`; returns its length
/// without the NUL.
fn proc_fd_path(out: &mut [u8; 32], fd: RawFd) -> usize {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[PREFIX.len() + i] = digits[len - 1 - i];
    }
    out[PREFIX.len() + len] = 0;
    PREFIX.len() + len
}

/// `connect` or `sendto` on the agent's socket; the result or a negated
/// errno.
fn perform(req: &Request, sock: RawFd, addr: &[u8], data: &[u8]) -> i64 {
    let len = libc::socklen_t::try_from(addr.len()).unwrap_or(0);
    // SAFETY: `addr` and `data` are valid for their lengths.
    let r = unsafe {
        match req.op {
            OP_CONNECT => libc::c_long::from(libc::connect(sock, addr.as_ptr().cast(), len)),
            OP_SENDTO => libc::sendto(
                sock,
                data.as_ptr().cast(),
                data.len(),
                i32::try_from(req.flags).unwrap_or(0),
                addr.as_ptr().cast(),
                len,
            ) as libc::c_long,
            _ => return -i64::from(libc::EINVAL),
        }
    };
    if r < 0 {
        -i64::from(sys::last_errno())
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(path: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a
    }

    #[test]
    fn pathnames_are_told_from_abstract_and_unnamed_addresses() {
        assert_eq!(pathname(&un(b"/run/x.sock\0")), Some(&b"/run/x.sock"[..]));
        assert_eq!(pathname(&un(b"rel/x.sock")), Some(&b"rel/x.sock"[..]));
        assert_eq!(pathname(&un(b"\0abstract")), None);
        assert_eq!(pathname(&un(b"")), None);
        assert_eq!(pathname(&[2, 0, 1, 2]), None, "another family");
        assert_eq!(pathname(&[1]), None);
    }

    #[test]
    fn under_means_the_directory_or_below_it() {
        assert!(under(b"/run/pg/.s.PGSQL.5432", b"/run/pg"));
        assert!(under(b"/run/pg", b"/run/pg"));
        assert!(!under(b"/run/pgx/s", b"/run/pg"));
        assert!(!under(b"/run", b"/run/pg"));
        assert!(under(b"/anything", b"/"));
    }

    #[test]
    fn proc_fd_paths_are_spelled_out() {
        let mut out = [0u8; 32];
        for (fd, text) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234, "/proc/self/fd/1234"),
        ] {
            let n = proc_fd_path(&mut out, fd);
            assert_eq!(&out[..n], text.as_bytes());
            assert_eq!(out[n], 0);
        }
    }
}
