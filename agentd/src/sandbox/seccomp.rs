//! The session's seccomp filter, compiled by libseccomp in the parent (with
//! binary-tree optimisation) and handed to the child as a BPF program.
use std::{
    io::{Read as _, Seek as _, SeekFrom},
    os::fd::AsFd as _,
};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::SandboxError;
use crate::policy::{SyscallProfile, Syscalls};

/// Denied with EPERM by the default profile (and never allowlisted by the
/// strict one): escape, introspection and host-administration syscalls.
pub const DANGEROUS: &[&str] = &[
    // other processes' memory and state
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    // mounts and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    // host administration
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "syslog",
    "vhangup",
    "uselib",
];

/// The strict profile's allowlist: what git, python, a POSIX shell and the
/// usual build tools need.
const STRICT_ALLOW: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "close",
    "close_range",
    "creat",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "ioctl",
    "access",
    "faccessat",
    "faccessat2",
    "pipe",
    "pipe2",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "dup",
    "dup2",
    "dup3",
    "pause",
    "nanosleep",
    "clock_nanosleep",
    "getitimer",
    "setitimer",
    "alarm",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getpgrp",
    "getpgid",
    "setpgid",
    "getsid",
    "setsid",
    "sendfile",
    "socket",
    "socketpair",
    "connect",
    "accept",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tkill",
    "tgkill",
    "uname",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "umask",
    "gettimeofday",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "sysinfo",
    "times",
    "time",
    "clock_gettime",
    "clock_getres",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "set_tid_address",
    "arch_prctl",
    "prctl",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "memfd_create",
    "getrandom",
    "rseq",
    "membarrier",
    "copy_file_range",
    "splice",
    "tee",
    "fadvise64",
    "fallocate",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "mlock",
    "munlock",
    "mlock2",
    "getpriority",
    "setpriority",
    "capget",
    "sync",
    "syncfs",
    "sync_file_range",
    "pidfd_open",
    "pidfd_send_signal",
    "waitpid",
    "readahead",
    "statmount",
    "listmount",
    "uretprobe",
    "map_shadow_stack",
];

/// A compiled filter.
#[derive(Clone)]
pub struct Program {
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.filter.len())
    }
}

impl Program {
    /// The `sock_fprog` for `seccomp(2)`; borrows `self`.
    pub fn fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: u16::try_from(self.filter.len()).unwrap_or(u16::MAX),
            filter: self.filter.as_ptr().cast_mut(),
        }
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Whether the program is empty (it never is once built).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }
}

const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// Personality flags that weaken ASLR or memory protection
/// (ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO, ADDR_COMPAT_LAYOUT,
/// READ_IMPLIES_EXEC, ADDR_LIMIT_32BIT, ADDR_LIMIT_3GB).
const PERSONALITY_FLAGS: &[u64] = &[
    0x004_0000, 0x010_0000, 0x020_0000, 0x040_0000, 0x080_0000, 0x800_0000,
];

/// (syscall, index of its mode argument): creating files or changing modes.
const MODE_ARGS: &[(&str, u32)] = &[
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("creat", 1),
    ("open", 2),
    ("openat", 3),
    ("mknod", 1),
    ("mknodat", 2),
    ("mkdir", 1),
    ("mkdirat", 2),
];

fn scmp_err(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> SandboxError + '_ {
    move |source| SandboxError::Seccomp {
        what: what.to_owned(),
        source,
    }
}

fn syscall(name: &str) -> Option<ScmpSyscall> {
    ScmpSyscall::from_name(name).ok()
}

type Add<'a> = dyn Fn(&mut ScmpFilterContext, ScmpAction, &str, &[ScmpArgCompare]) -> Result<(), SandboxError>
    + 'a;

/// A filter context with agentd's common settings.
fn context(default: ScmpAction) -> Result<ScmpFilterContext, SandboxError> {
    let mut ctx = ScmpFilterContext::new(default).map_err(scmp_err("seccomp_init"))?;
    // Foreign architectures (and x32 on x86_64) are killed, not filtered.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(scmp_err("set bad-arch action"))?;
    // Binary-tree dispatch: O(log n) per syscall instead of a linear scan.
    ctx.set_ctl_optimize(2)
        .map_err(scmp_err("set optimize level"))?;
    // agentd sets no_new_privs itself, at the step it chooses.
    ctx.set_ctl_nnp(false)
        .map_err(scmp_err("clear the NNP control"))?;
    Ok(ctx)
}

/// Builds the filters for `policy`, in load order: one for the default
/// profile; for the strict profile a default-allow filter with the argument
/// checks, then the allowlist (the kernel applies the most restrictive verdict of all
/// filters; libseccomp cannot express "allowed except these argument
/// values" inside an allowlist).
pub fn build(policy: &Syscalls) -> Result<Vec<Program>, SandboxError> {
    let eperm = ScmpAction::Errno(libc::EPERM);
    let allowed_extra = |name: &str| policy.allow.iter().any(|a| a.as_str() == name);
    let denied_extra = |name: &str| policy.deny.iter().any(|d| d.as_str() == name);
    let add: &Add<'_> = &|ctx, action, name, cmp| {
        let Some(sc) = syscall(name) else {
            return Ok(()); // not on this architecture
        };
        let r = if cmp.is_empty() {
            ctx.add_rule(action, sc)
        } else {
            ctx.add_rule_conditional(action, sc, cmp)
        };
        r.map(drop).map_err(scmp_err(name))
    };
    match policy.profile {
        SyscallProfile::Default => {
            let mut ctx = context(ScmpAction::Allow)?;
            for name in DANGEROUS.iter().filter(|n| !allowed_extra(n)) {
                add(&mut ctx, eperm, name, &[])?;
            }
            for name in &policy.deny {
                add(&mut ctx, eperm, name.as_str(), &[])?;
            }
            argument_checks(&mut ctx, add, &allowed_extra)?;
            fallbacks(&mut ctx, add, &allowed_extra)?;
            Ok(vec![export(&ctx)?])
        }
        SyscallProfile::Strict => {
            let mut allow = context(eperm)?;
            for name in STRICT_ALLOW.iter().filter(|n| !denied_extra(n)) {
                add(&mut allow, ScmpAction::Allow, name, &[])?;
            }
            for name in &policy.allow {
                add(&mut allow, ScmpAction::Allow, name.as_str(), &[])?;
            }
            fallbacks(&mut allow, add, &allowed_extra)?;
            let mut checks = context(ScmpAction::Allow)?;
            argument_checks(&mut checks, add, &allowed_extra)?;
            // The allowlist goes last: loading a filter is itself a syscall.
            Ok(vec![export(&checks)?, export(&allow)?])
        }
    }
}

/// Denials that depend on arguments (EPERM).
fn argument_checks(
    ctx: &mut ScmpFilterContext,
    add: &Add<'_>,
    allowed_extra: &dyn Fn(&str) -> bool,
) -> Result<(), SandboxError> {
    let eperm = ScmpAction::Errno(libc::EPERM);
    // Namespaces: clone with any CLONE_NEW* flag.
    if !allowed_extra("unshare") {
        for flag in CLONE_NS_FLAGS {
            add(
                ctx,
                eperm,
                "clone",
                &[ScmpArgCompare::new(
                    0,
                    ScmpCompareOp::MaskedEqual(*flag),
                    *flag,
                )],
            )?;
        }
    }
    // TIOCSTI / TIOCLINUX push input into a terminal. The kernel takes the
    // command as 32 bits; compare only those.
    for cmd in [libc::TIOCSTI, libc::TIOCLINUX] {
        add(
            ctx,
            eperm,
            "ioctl",
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                u64::from(cmd as u32),
            )],
        )?;
    }
    // Personality flags that weaken the address space. The query
    // (0xffffffff) has bit 31 set, which no flag uses, so "flag set and bit
    // 31 clear" matches changes but not the query.
    if !allowed_extra("personality") {
        for flag in PERSONALITY_FLAGS {
            add(
                ctx,
                eperm,
                "personality",
                &[ScmpArgCompare::new(
                    0,
                    ScmpCompareOp::MaskedEqual(flag | 0x8000_0000),
                    *flag,
                )],
            )?;
        }
    }
    // Files that could become set-user-ID or set-group-ID: on an idmapped
    // workspace they would belong to the caller.
    for (name, arg) in MODE_ARGS {
        for bit in [u64::from(libc::S_ISUID), u64::from(libc::S_ISGID)] {
            add(
                ctx,
                eperm,
                name,
                &[ScmpArgCompare::new(
                    *arg,
                    ScmpCompareOp::MaskedEqual(bit),
                    bit,
                )],
            )?;
        }
    }
    Ok(())
}

/// clone3 takes its flags in memory seccomp cannot read: ENOSYS makes libc
/// fall back to clone, whose flags are checked. openat2 (its mode is in
/// memory too) gets the same treatment.
fn fallbacks(
    ctx: &mut ScmpFilterContext,
    add: &Add<'_>,
    allowed_extra: &dyn Fn(&str) -> bool,
) -> Result<(), SandboxError> {
    if !allowed_extra("clone3") {
        add(ctx, ScmpAction::Errno(libc::ENOSYS), "clone3", &[])?;
    }
    add(ctx, ScmpAction::Errno(libc::ENOSYS), "openat2", &[])
}

/// Exports the compiled BPF program through a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Program, SandboxError> {
    let fd =
        nix::sys::memfd::memfd_create(c"agentd-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SandboxError::SeccompExport {
                what: "memfd_create",
                source: e.into(),
            })?;
    ctx.export_bpf(fd.as_fd())
        .map_err(scmp_err("seccomp_export_bpf"))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|source| SandboxError::SeccompExport {
            what: "read the exported filter",
            source,
        })?;
    let size = size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 {
        return Err(SandboxError::SeccompExport {
            what: "the exported filter is not a whole number of instructions",
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    let filter = bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Ok(Program { filter })
}
