//! The supervisor's side of seccomp user notification: receiving a held
//! syscall, taking the caller's descriptors and memory, answering.
//!
//! What is read from the agent's memory is a copy the agent can change the
//! moment after: callers decide on the copy and perform the operation
//! themselves (the broker), or continue only calls whose outcome the kernel
//! decides again (a socket family that cannot change).
#![expect(
    unsafe_code,
    reason = "seccomp notification ioctls, pidfd_getfd and process_vm_readv have no safe wrappers"
)]

use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

use super::sys::last_errno as errno;

/// A seccomp listener (from `SECCOMP_FILTER_FLAG_NEW_LISTENER`).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

/// One held syscall.
#[derive(Clone, Copy, Debug)]
pub struct Notification {
    /// The kernel's cookie for the answer.
    pub id: u64,
    /// The calling thread, in the supervisor's pid namespace.
    pub pid: u32,
    /// Syscall number (native architecture: the filter kills others).
    pub nr: i64,
    /// Its arguments.
    pub args: [u64; 6],
}

/// The answer to a held syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Let the kernel run the call as the agent made it. Only for calls the
    /// kernel judges again by what cannot change (see the module docs).
    Continue,
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Error(i32),
}

impl Listener {
    /// Takes ownership of a listener descriptor.
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Another handle on the same listener (to answer from another
    /// thread).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
        })
    }

    /// Waits for the next held syscall. ENOENT: the caller died before it
    /// could be received (try again).
    pub fn recv(&self) -> Result<Notification, i32> {
        // SAFETY: the kernel requires a zeroed seccomp_notif and fills it.
        let n = unsafe {
            let mut n: libc::seccomp_notif = std::mem::zeroed();
            if libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) < 0 {
                return Err(errno());
            }
            n
        };
        Ok(Notification {
            id: n.id,
            pid: n.pid,
            nr: i64::from(n.data.nr),
            args: n.data.args,
        })
    }

    /// Whether the held call `id` is still waiting (its thread alive, its
    /// pid not reused): checked after reading the caller's memory or
    /// descriptors, so that what was read belongs to the caller.
    pub fn valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: the ioctl reads one u64.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &mut id,
            ) == 0
        }
    }

    /// Answers the held call `id`.
    pub fn respond(&self, id: u64, response: Response) -> Result<(), i32> {
        let (val, error, flags) = match response {
            Response::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Response::Value(v) => (v, 0, 0),
            Response::Error(e) => (0, -e, 0),
        };
        let mut resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            )
        } < 0
        {
            return Err(errno());
        }
        Ok(())
    }
}

impl Listener {
    /// Answers the held call `id` with a copy of `fd` installed in the
    /// caller (close-on-exec if `cloexec`): the call returns its number.
    /// Installing and answering are one step (`SECCOMP_ADDFD_FLAG_SEND`).
    pub fn respond_fd(&self, id: u64, fd: BorrowedFd<'_>, cloexec: bool) -> Result<i32, i32> {
        let addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: u32::try_from(fd.as_raw_fd()).map_err(|_| libc::EBADF)?,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd.
        let r =
            unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) };
        if r < 0 { Err(errno()) } else { Ok(r) }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A duplicate of descriptor `fd` of thread (or process) `tid`
/// (`pidfd_getfd`: the same open file, sharing its offset and flags).
pub fn take_fd(tid: u32, fd: u64, thread: bool) -> Result<OwnedFd, i32> {
    let flags = if thread { libc::PIDFD_THREAD } else { 0 };
    let fd = i32::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, flags) };
    if pidfd < 0 {
        return Err(errno());
    }
    // SAFETY: pidfd_open returned a new descriptor we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: integer arguments.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    if got < 0 {
        return Err(errno());
    }
    // SAFETY: pidfd_getfd returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

/// Copies `buf.len()` bytes at `addr` of thread `tid`'s memory; the number
/// of bytes copied.
pub fn read_memory(tid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, i32> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let pid = libc::pid_t::try_from(tid).map_err(|_| libc::ESRCH)?;
    // SAFETY: `local` points at `buf`; the kernel checks `remote` against
    // the target's address space.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    usize::try_from(n).map_err(|_| errno())
}

/// Copies the NUL-terminated string at `addr` of thread `tid`'s memory (at
/// most `max` bytes before the NUL: ENAMETOOLONG beyond). Reads page by
/// page, so a string ending just before an unmapped page is read whole.
pub fn read_string(tid: u32, addr: u64, max: usize) -> Result<Vec<u8>, i32> {
    const PAGE: u64 = 4096;
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        let chunk = usize::try_from(PAGE - at % PAGE).unwrap_or(4096);
        let start = out.len();
        out.resize(start + chunk, 0);
        let n = read_memory(tid, at, &mut out[start..])?;
        out.truncate(start + n);
        if let Some(end) = out[start..].iter().position(|b| *b == 0) {
            out.truncate(start + end);
            return Ok(out);
        }
        if n < chunk {
            return Err(libc::EFAULT);
        }
        if out.len() > max {
            return Err(libc::ENAMETOOLONG);
        }
        at += chunk as u64;
    }
}

/// (family, type) of a socket: both fixed when it was created.
pub fn socket_kind(sock: BorrowedFd<'_>) -> Result<(i32, i32), i32> {
    let get = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid out-pointers of the right size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_mut(&mut v).cast(),
                &mut len,
            )
        };
        if r < 0 { Err(errno()) } else { Ok(v) }
    };
    Ok((get(libc::SO_DOMAIN)?, get(libc::SO_TYPE)?))
}
