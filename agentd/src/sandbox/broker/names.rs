//! Creating calls the broker performs for the agent: `open` with
//! `O_CREAT`, `mkdir`, `mknod`, `rename`, `link`, `symlink`, each checked
//! against the protected names ([`crate::sandbox::protect`]).
//!
//! Why it holds:
//! - The supervisor copied the paths once; the agent's memory no longer
//!   matters.
//! - The broker opens the directory a name is created in (`O_PATH`,
//!   following symlinks as the kernel would), decides on *that directory's*
//!   identity and the final name, and creates relative to the same
//!   descriptor: renaming or swapping a path component afterwards cannot
//!   move the creation somewhere it was not checked.
//! - A final symlink is never followed by the kernel on the broker's
//!   behalf (`O_NOFOLLOW`): the broker reads it and checks the directory
//!   and name it points to, as for the original path (a dangling
//!   `x -> .envrc` does not create `.envrc`).
//! - Every call that can create or move a name in a session comes here
//!   (the gate's filter holds them all), one at a time: nothing can move a
//!   name between the broker's check and its call except the broker.
//! - The broker runs as the agent (uid, group, Landlock domain, mounts), so
//!   it can do nothing the agent could not; a descriptor it opens on procfs
//!   (`/proc/self` would be the broker's own) is closed and refused.
//!
//! Runs in the forked broker: no allocation.
#![expect(
    unsafe_code,
    reason = "raw *at system calls in a forked child that may not allocate"
)]
use std::os::fd::RawFd;

use super::{
    FIFO_WAIT, OP_LINK, OP_MKDIR, OP_MKNOD, OP_OPEN, OP_RENAME, OP_RESOLVE, OP_SYMLINK, PATH_MAX,
    PROTECTED, Reply, Request, proc_fd_path,
};
use crate::sandbox::{
    protect::{Dir, MAX_DIRS, Then, Tree},
    sys,
};

/// How many symlinks an open follows (the kernel's limit).
const MAX_LINKS: usize = 40;
/// `PROC_SUPER_MAGIC`.
const PROC_MAGIC: i64 = 0x9fa0;

/// The directories with a kind: those present at start and those the
/// broker created. A fixed table: the broker may not allocate.
#[derive(Debug)]
pub struct Known {
    dirs: [Dir; MAX_DIRS],
    len: usize,
}

impl Known {
    /// The table, starting with `dirs` (at most [`MAX_DIRS`]).
    pub fn new(dirs: &[Dir]) -> Self {
        let mut known = Self {
            dirs: [Dir::default(); MAX_DIRS],
            len: 0,
        };
        for d in dirs.iter().take(MAX_DIRS) {
            known.dirs[known.len] = *d;
            known.len += 1;
        }
        known
    }

    fn kind(&self, dev: u64, ino: u64) -> Option<u16> {
        self.dirs[..self.len]
            .iter()
            .find(|d| d.dev == dev && d.ino == ino)
            .map(|d| d.kind)
    }

    fn add(&mut self, dir: Dir) -> bool {
        if self.len == MAX_DIRS {
            return false;
        }
        // A directory removed and its inode reused: the newest kind wins.
        if let Some(d) = self.dirs[..self.len]
            .iter_mut()
            .find(|d| d.dev == dir.dev && d.ino == dir.ino)
        {
            *d = dir;
            return true;
        }
        self.dirs[self.len] = dir;
        self.len += 1;
        true
    }
}

/// What a request needs besides itself.
pub struct Ctx<'a> {
    /// The protected names.
    pub tree: &'a Tree,
    /// The directories with a kind.
    pub known: &'a mut Known,
}

/// Performs a creating call; fills `reply` (result, outcome, and the name
/// when refused) and returns the descriptor an open created, or -1.
pub fn handle(
    ctx: Ctx<'_>,
    req: &Request,
    data: &[u8],
    fds: [RawFd; 2],
    reply: &mut Reply,
) -> RawFd {
    let (first, second) = paths(data);
    let mut fd = -1;
    let result = match req.op {
        OP_OPEN => open(&ctx, req, fds[0], first, reply).map(|f| {
            fd = f;
            0
        }),
        OP_MKDIR => mkdir(ctx, req, fds[0], first, reply),
        OP_MKNOD => create_at(&ctx, Made::File, fds[0], first, reply, |dir, name| {
            // SAFETY: `name` is NUL-terminated.
            unsafe {
                libc::umask(req.umask & 0o777);
                libc::mknodat(dir, name.as_ptr().cast(), req.mode, req.dev)
            }
        }),
        OP_SYMLINK => create_at(&ctx, Made::Symlink, fds[1], second, reply, |dir, name| {
            let mut target = [0u8; PATH_MAX + 1];
            let Some(target) = c_path(first, &mut target) else {
                return -libc::ENAMETOOLONG;
            };
            // SAFETY: both are NUL-terminated.
            unsafe { libc::symlinkat(target.as_ptr().cast(), dir, name.as_ptr().cast()) }
        }),
        OP_LINK => create_at(&ctx, Made::File, fds[1], second, reply, |dir, name| {
            let mut old = [0u8; PATH_MAX + 1];
            let Some(old) = c_path(first, &mut old) else {
                return -libc::ENAMETOOLONG;
            };
            // SAFETY: both are NUL-terminated; the flags are the agent's.
            unsafe {
                libc::linkat(
                    fds[0],
                    old.as_ptr().cast(),
                    dir,
                    name.as_ptr().cast(),
                    req.flags as libc::c_int,
                )
            }
        }),
        OP_RENAME => rename(&ctx, req, fds, first, second, reply),
        OP_RESOLVE => resolve(req, fds[0], first, reply).map(|f| {
            fd = f;
            0
        }),
        _ => Err(libc::EINVAL),
    };
    reply.ret = match result {
        Ok(v) => v,
        Err(e) => -i64::from(e),
    };
    fd
}

/// The two NUL-terminated paths of a request (empty when missing).
fn paths(data: &[u8]) -> (&[u8], &[u8]) {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let first = &data[..end];
    let rest = data.get(end + 1..).unwrap_or(&[]);
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    (first, &rest[..end])
}

/// `path` NUL-terminated in `buf`.
fn c_path<'b>(path: &[u8], buf: &'b mut [u8; PATH_MAX + 1]) -> Option<&'b [u8]> {
    if path.len() > PATH_MAX {
        return None;
    }
    buf[..path.len()].copy_from_slice(path);
    buf[path.len()] = 0;
    Some(&buf[..=path.len()])
}

/// A path split into the directory it names an entry of, opened, and the
/// entry's name (NUL-terminated in `name`).
struct Parent {
    fd: RawFd,
    /// Whether `fd` is ours to close (not the caller's `dir`).
    owned: bool,
    len: usize,
    name: [u8; 256],
    /// The path ended with `/`.
    slash: bool,
}

impl Parent {
    fn name(&self) -> &[u8] {
        &self.name[..self.len]
    }

    fn c_name(&self) -> &[u8] {
        &self.name[..=self.len]
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        if self.owned {
            sys::close(self.fd);
        }
    }
}

/// Opens the directory `path` (relative to `dir`) names an entry of.
fn parent(dir: RawFd, path: &[u8]) -> Result<Parent, i32> {
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let trimmed = match path.iter().rposition(|b| *b != b'/') {
        Some(last) => &path[..=last],
        // "/" or "//": the root itself.
        None => return Err(libc::EEXIST),
    };
    let slash = trimmed.len() < path.len();
    let (prefix, name) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(0) => (&b"/"[..], &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    if name == b"." || name == b".." {
        return Err(libc::EEXIST);
    }
    if name.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    let mut p = Parent {
        fd: dir,
        owned: false,
        len: name.len(),
        name: [0; 256],
        slash,
    };
    p.name[..name.len()].copy_from_slice(name);
    if !prefix.is_empty() {
        let mut buf = [0u8; PATH_MAX + 1];
        let c = c_path(prefix, &mut buf).ok_or(libc::ENAMETOOLONG)?;
        // SAFETY: `c` is NUL-terminated.
        let fd = unsafe {
            libc::openat(
                dir,
                c.as_ptr().cast(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(sys::last_errno());
        }
        p.fd = fd;
        p.owned = true;
    }
    Ok(p)
}

/// (device, inode) of `fd`.
fn identity(fd: RawFd) -> Result<(u64, u64), i32> {
    // SAFETY: `st` is a valid out-pointer for fstat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 {
            return Err(sys::last_errno());
        }
        Ok((st.st_dev, st.st_ino))
    }
}

/// What creating `p`'s name leads to: `None` (not protected) or a rule.
fn rule(ctx: &Ctx<'_>, p: &Parent) -> Result<Option<Then>, i32> {
    let (dev, ino) = identity(p.fd)?;
    Ok(ctx
        .known
        .kind(dev, ino)
        .and_then(|kind| ctx.tree.rule(kind, p.name())))
}

/// What a call makes at a name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    /// A file (open, mknod, link, a file renamed in).
    File,
    /// A symlink.
    Symlink,
    /// A directory by mkdir.
    Mkdir,
    /// A directory renamed in.
    MovedDir,
}

/// What the rule for a name allows a call that makes `made` there:
/// `Ok(None)` to go ahead, `Ok(Some(kind))` to go ahead and give the new
/// directory that kind, `Err(())` to refuse.
fn may(then: Option<Then>, made: Made) -> Result<Option<u16>, ()> {
    match (then, made) {
        (None | Some(Then::Free), _) => Ok(None),
        (Some(Then::Dir(k) | Then::AnyDir(k)), Made::Mkdir) => Ok(Some(k)),
        (Some(Then::AnyDir(_)), Made::File) => Ok(None),
        _ => Err(()),
    }
}

/// Refuses: EPERM, with the refused name (the directory's path as the
/// kernel has it, and the name) in the reply.
fn refuse(p: &Parent, reply: &mut Reply) -> Result<i64, i32> {
    reply.outcome = PROTECTED;
    let mut link = [0u8; 32];
    proc_fd_path(&mut link, p.fd);
    // SAFETY: `link` is NUL-terminated; readlink writes at most PATH_MAX.
    let n = unsafe {
        libc::readlink(
            link.as_ptr().cast(),
            reply.path.as_mut_ptr().cast(),
            PATH_MAX,
        )
    };
    let mut len = usize::try_from(n).unwrap_or(0).min(PATH_MAX);
    let name = p.name();
    if len + 1 + name.len() <= PATH_MAX {
        if len > 0 && reply.path[len - 1] != b'/' {
            reply.path[len] = b'/';
            len += 1;
        }
        reply.path[len..len + name.len()].copy_from_slice(name);
        len += name.len();
    }
    reply.path_len = u32::try_from(len).unwrap_or(0);
    Err(libc::EPERM)
}

/// A call creating `path`'s name (relative to `dir`) that may not create a
/// protected one, performed by `call(parent, name)` (a raw result).
fn create_at(
    ctx: &Ctx<'_>,
    made: Made,
    dir: RawFd,
    path: &[u8],
    reply: &mut Reply,
    call: impl FnOnce(RawFd, &[u8]) -> libc::c_int,
) -> Result<i64, i32> {
    let p = parent(dir, path)?;
    if may(rule(ctx, &p)?, made).is_err() {
        // A name present at start: the call would fail anyway.
        return if exists(&p).is_some() {
            Err(libc::EEXIST)
        } else {
            refuse(&p, reply)
        };
    }
    match call(p.fd, p.c_name()) {
        r if r < 0 && r != -1 => Err(-r),
        r if r < 0 => Err(sys::last_errno()),
        _ => Ok(0),
    }
}

fn mkdir(
    ctx: Ctx<'_>,
    req: &Request,
    dir: RawFd,
    path: &[u8],
    reply: &mut Reply,
) -> Result<i64, i32> {
    let p = parent(dir, path)?;
    let kind = match may(rule(&ctx, &p)?, Made::Mkdir) {
        Ok(kind) => kind,
        Err(()) if exists(&p).is_some() => return Err(libc::EEXIST),
        Err(()) => return refuse(&p, reply),
    };
    // SAFETY: the name is NUL-terminated.
    let r = unsafe {
        libc::umask(req.umask & 0o777);
        libc::mkdirat(p.fd, p.c_name().as_ptr().cast(), req.mode)
    };
    if r < 0 {
        return Err(sys::last_errno());
    }
    if let Some(kind) = kind {
        // The new directory can hold protected names. Nothing else can
        // create or move a name in the session meanwhile (every such call
        // waits for this broker): what is there is what was just made.
        // SAFETY: `st` is a valid out-pointer; the name is NUL-terminated.
        let registered = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstatat(
                p.fd,
                p.c_name().as_ptr().cast(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
                && ctx.known.add(Dir {
                    dev: st.st_dev,
                    ino: st.st_ino,
                    kind,
                })
        };
        if !registered {
            // SAFETY: the name is NUL-terminated.
            unsafe { libc::unlinkat(p.fd, p.c_name().as_ptr().cast(), libc::AT_REMOVEDIR) };
            return Err(libc::ENOSPC);
        }
    }
    Ok(0)
}

fn rename(
    ctx: &Ctx<'_>,
    req: &Request,
    fds: [RawFd; 2],
    from: &[u8],
    to: &[u8],
    reply: &mut Reply,
) -> Result<i64, i32> {
    let old = parent(fds[0], from)?;
    let new = parent(fds[1], to)?;
    // The destination gets whatever the source holds; an exchange moves
    // the destination's content to the source's name too.
    let made = |p: &Parent| {
        if is_dir(p) {
            Made::MovedDir
        } else {
            Made::File
        }
    };
    if may(rule(ctx, &new)?, made(&old)).is_err() {
        return refuse(&new, reply);
    }
    if req.flags & libc::RENAME_EXCHANGE != 0 && may(rule(ctx, &old)?, made(&new)).is_err() {
        return refuse(&old, reply);
    }
    // SAFETY: both names are NUL-terminated.
    let r = unsafe {
        libc::renameat2(
            old.fd,
            old.c_name().as_ptr().cast(),
            new.fd,
            new.c_name().as_ptr().cast(),
            req.flags,
        )
    };
    if r < 0 { Err(sys::last_errno()) } else { Ok(0) }
}

/// `open` with `O_CREAT`: the new descriptor.
fn open(
    ctx: &Ctx<'_>,
    req: &Request,
    dir: RawFd,
    path: &[u8],
    reply: &mut Reply,
) -> Result<RawFd, i32> {
    let flags = req.flags as libc::c_int;
    let mut buf = [0u8; PATH_MAX + 1];
    let n = path.len().min(PATH_MAX);
    buf[..n].copy_from_slice(&path[..n]);
    let mut len = n;
    // The directory the current path is relative to, once a symlink was
    // read (owned).
    let mut base: Option<Parent> = None;
    for _ in 0..MAX_LINKS {
        let p = parent(base.as_ref().map_or(dir, |b| b.fd), &buf[..len])?;
        if p.slash {
            return Err(libc::EISDIR);
        }
        if may(rule(ctx, &p)?, Made::File).is_err() {
            // A protected name present at start (bound read-only) is
            // opened, not created: reading it works, writing fails as
            // without the broker.
            return match exists(&p) {
                Some(false) if flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
                // SAFETY: the name is NUL-terminated; no O_CREAT, so
                // nothing can be created.
                Some(false) => finish(
                    unsafe {
                        libc::openat(
                            p.fd,
                            p.c_name().as_ptr().cast(),
                            (flags & !libc::O_CREAT)
                                | libc::O_NOFOLLOW
                                | libc::O_NONBLOCK
                                | libc::O_CLOEXEC,
                        )
                    },
                    flags,
                ),
                _ => refuse(&p, reply).map(|_| -1),
            };
        }
        // SAFETY: the name is NUL-terminated. O_NONBLOCK: a FIFO without
        // a reader must not hold the broker (cleared below).
        let fd = unsafe {
            libc::umask(req.umask & 0o777);
            libc::openat(
                p.fd,
                p.c_name().as_ptr().cast(),
                flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                req.mode,
            )
        };
        if fd >= 0 {
            return finish(fd, flags);
        }
        let e = sys::last_errno();
        // A FIFO nobody reads yet: the open would block, which the broker
        // may not. Its permission checks passed (ENXIO comes after them):
        // hand the FIFO to the supervisor, which waits for a reader.
        if e == libc::ENXIO && flags & libc::O_NONBLOCK == 0 && is_fifo(&p) {
            // SAFETY: the name is NUL-terminated.
            let fifo = unsafe {
                libc::openat(
                    p.fd,
                    p.c_name().as_ptr().cast(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fifo >= 0 {
                reply.outcome = FIFO_WAIT;
                return Ok(fifo);
            }
        }
        // A final symlink the agent's call would follow: read it and check
        // where it leads.
        if e != libc::ELOOP || flags & (libc::O_NOFOLLOW | libc::O_EXCL) != 0 {
            return Err(e);
        }
        // A link in procfs (`/proc/<tid>/fd/2` for `/dev/stderr`) leads to
        // a file that exists (an open file of the agent, its working
        // directory): following it creates nothing, and its text
        // (`pipe:[7]`) is no path. What it opens must not be in procfs.
        if on_procfs(p.fd) {
            // SAFETY: the name is NUL-terminated.
            let fd = unsafe {
                libc::openat(
                    p.fd,
                    p.c_name().as_ptr().cast(),
                    flags | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    req.mode,
                )
            };
            return finish(fd, flags);
        }
        // SAFETY: the name is NUL-terminated; at most PATH_MAX bytes.
        let r = unsafe {
            libc::readlinkat(
                p.fd,
                p.c_name().as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                PATH_MAX,
            )
        };
        len = match usize::try_from(r) {
            Ok(l) if l < PATH_MAX => l,
            Ok(_) => return Err(libc::ENAMETOOLONG),
            Err(_) => return Err(sys::last_errno()),
        };
        // The link is relative to its own directory: keep that open (a
        // directory not opened here is `dir` or the current base already).
        if p.owned {
            base = Some(p);
        }
    }
    Err(libc::ELOOP)
}

/// The program an exec of `path` (relative to `dir`) would run, opened
/// `O_PATH`, with its real path (as the session sees it) in the reply.
fn resolve(req: &Request, dir: RawFd, path: &[u8], reply: &mut Reply) -> Result<RawFd, i32> {
    let flags = req.flags as libc::c_int;
    let fd = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        // SAFETY: integer arguments.
        unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) }
    } else {
        let mut buf = [0u8; PATH_MAX + 1];
        let c = c_path(path, &mut buf).ok_or(libc::ENAMETOOLONG)?;
        let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            libc::O_NOFOLLOW
        } else {
            0
        };
        // SAFETY: `c` is NUL-terminated.
        unsafe {
            libc::openat(
                dir,
                c.as_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC | nofollow,
            )
        }
    };
    if fd < 0 {
        return Err(sys::last_errno());
    }
    let mut link = [0u8; 32];
    proc_fd_path(&mut link, fd);
    // SAFETY: `link` is NUL-terminated; readlink writes at most PATH_MAX.
    let n = unsafe {
        libc::readlink(
            link.as_ptr().cast(),
            reply.path.as_mut_ptr().cast(),
            PATH_MAX,
        )
    };
    reply.path_len = u32::try_from(n).unwrap_or(0).min(PATH_MAX as u32);
    Ok(fd)
}

/// The type bits (`S_IFMT`) of `p`'s name, not through a symlink.
fn file_type(p: &Parent) -> Option<libc::mode_t> {
    // SAFETY: `st` is a valid out-pointer; the name is NUL-terminated.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstatat(
            p.fd,
            p.c_name().as_ptr().cast(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0)
            .then_some(st.st_mode & libc::S_IFMT)
    }
}

/// Whether `p`'s name is a directory (not through a symlink).
fn is_dir(p: &Parent) -> bool {
    file_type(p) == Some(libc::S_IFDIR)
}

/// Whether `p`'s name is a FIFO.
fn is_fifo(p: &Parent) -> bool {
    file_type(p) == Some(libc::S_IFIFO)
}

/// Whether `p`'s name exists: `Some(is a symlink)`, or `None`.
fn exists(p: &Parent) -> Option<bool> {
    file_type(p).map(|t| t == libc::S_IFLNK)
}

/// Whether `fd` is on procfs (or cannot be told).
fn on_procfs(fd: RawFd) -> bool {
    // SAFETY: `fs` is a valid out-pointer.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::fstatfs(fd, &mut fs) < 0 || fs.f_type == PROC_MAGIC
    }
}

/// Refuses a descriptor on procfs (the broker's own `/proc/self/mem`
/// reached through a symlink must not go to the agent), and clears the
/// `O_NONBLOCK` the agent did not ask for. `fd` < 0: the open's error.
fn finish(fd: RawFd, flags: libc::c_int) -> Result<RawFd, i32> {
    if fd < 0 {
        return Err(sys::last_errno());
    }
    if on_procfs(fd) {
        sys::close(fd);
        return Err(libc::EACCES);
    }
    // SAFETY: integer fcntl arguments.
    unsafe {
        if flags & libc::O_NONBLOCK == 0 {
            let now = libc::fcntl(fd, libc::F_GETFL);
            if now >= 0 {
                libc::fcntl(fd, libc::F_SETFL, now & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_two_paths() {
        assert_eq!(paths(b"a/b\0c\0"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(paths(b"only\0"), (&b"only"[..], &b""[..]));
        assert_eq!(paths(b""), (&b""[..], &b""[..]));
    }

    #[test]
    fn paths_split_into_a_directory_and_a_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        use std::os::fd::AsRawFd as _;
        let fd = root.as_raw_fd();
        let p = parent(fd, b"name").unwrap();
        assert_eq!((p.name(), p.owned, p.slash), (&b"name"[..], false, false));
        assert_eq!(p.c_name(), b"name\0");
        let p = parent(fd, b"sub//x/").unwrap();
        assert_eq!((p.name(), p.owned, p.slash), (&b"x"[..], true, true));
        assert_eq!(parent(fd, b"missing/x").err(), Some(libc::ENOENT));
        assert_eq!(parent(fd, b"sub/..").err(), Some(libc::EEXIST));
        assert_eq!(parent(fd, b"/").err(), Some(libc::EEXIST));
        assert_eq!(parent(fd, b"").err(), Some(libc::ENOENT));
        let p = parent(fd, b"/tmp").unwrap();
        assert_eq!(p.name(), b"tmp");
    }

    #[test]
    fn the_table_of_directories_is_bounded() {
        let mut known = Known::new(&[Dir {
            dev: 1,
            ino: 2,
            kind: 3,
        }]);
        assert_eq!(known.kind(1, 2), Some(3));
        assert!(known.add(Dir {
            dev: 1,
            ino: 2,
            kind: 4
        }));
        assert_eq!(
            known.kind(1, 2),
            Some(4),
            "a reused inode takes the new kind"
        );
        for i in 0..MAX_DIRS as u64 {
            known.add(Dir {
                dev: 9,
                ino: i,
                kind: 0,
            });
        }
        assert!(!known.add(Dir {
            dev: 10,
            ino: 0,
            kind: 0
        }));
    }
}
