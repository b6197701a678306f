//! The session's seccomp filter, compiled by libseccomp in the parent (with
//! binary-tree optimisation) and handed to the child as a BPF program.
use std::{
    io::{Read as _, Seek as _, SeekFrom},
    os::fd::AsFd as _,
};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::SandboxError;
use crate::policy::{Policy, SyscallName, SyscallProfile, Syscalls};

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
    // Not clone3: its flags are in memory, so it gets ENOSYS (`fallbacks`).
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

/// The filters for a session of `policy`, in load order: its
/// `[syscalls]`, and `listen` denied unless `[network]` has bind rules
/// (binding itself is decided by the eBPF bind hooks).
pub fn for_policy(policy: &Policy) -> Result<Vec<Program>, SandboxError> {
    let mut syscalls = policy.syscalls.clone();
    // A literal that parses (the unit tests check that listen is denied).
    if policy.network.bind.is_empty()
        && let Ok(listen) = SyscallName::parse("listen")
    {
        syscalls.deny.push(listen);
    }
    build(&syscalls)
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
            // A name both allowed and denied is denied: the policy cannot
            // say both, but the caller adds denials (listen, without bind
            // rules).
            for name in policy.allow.iter().filter(|n| !denied_extra(n.as_str())) {
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

/// The gate's filter, loaded before the session's own: calls that can name
/// a pathname unix socket go to the supervisor (seccomp cannot see a
/// socket's family or the address behind a pointer). `connect` always;
/// `sendto` only with an address (a NULL address is in a register, which
/// the agent cannot change after the check); `sendmsg` and `sendmmsg`
/// always (the address is inside the message).
///
/// With `exec` (the session has an exec gate), `execve` and `execveat`
/// are held too.
pub fn gate_program(exec: bool) -> Result<Program, SandboxError> {
    let mut ctx = context(ScmpAction::Allow)?;
    let mut notify = |name: &str, cmp: &[ScmpArgCompare]| {
        let Some(sc) = syscall(name) else {
            return Ok(());
        };
        let r = if cmp.is_empty() {
            ctx.add_rule(ScmpAction::Notify, sc)
        } else {
            ctx.add_rule_conditional(ScmpAction::Notify, sc, cmp)
        };
        r.map(drop).map_err(scmp_err(name))
    };
    // Calls that create or move a name: the broker performs them, after
    // checking the protected names. `open`/`openat` only with O_CREAT (a
    // register: ordinary opens never leave the kernel); openat2 fails
    // with ENOSYS in sessions (its flags are in memory), so libc falls
    // back to openat.
    let creat = u64::from(libc::O_CREAT as u32);
    notify(
        "open",
        &[ScmpArgCompare::new(
            1,
            ScmpCompareOp::MaskedEqual(creat),
            creat,
        )],
    )?;
    notify(
        "openat",
        &[ScmpArgCompare::new(
            2,
            ScmpCompareOp::MaskedEqual(creat),
            creat,
        )],
    )?;
    for name in CREATING {
        notify(name, &[])?;
    }
    if exec {
        notify("execve", &[])?;
        notify("execveat", &[])?;
    }
    notify("connect", &[])?;
    notify(
        "sendto",
        &[ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0)],
    )?;
    notify("sendmsg", &[])?;
    notify("sendmmsg", &[])?;
    // Socket families other than unix (1), IPv4 (2), IPv6 (10) and netlink
    // (16): packet, vsock (the hypervisor's services), alg and the rest
    // carry traffic no egress hook sees. The supervisor refuses them
    // (EPERM) and records it; seccomp alone could not say who asked. Only
    // registers are compared, and nothing is ever continued. The family is
    // an int: a value with high bits set is held too.
    let family = |f: u64| ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0xffff_ffff), f);
    for f in REFUSED_FAMILIES {
        notify("socket", &[family(f)])?;
    }
    notify(
        "socket",
        &[ScmpArgCompare::new(0, ScmpCompareOp::Greater, 16)],
    )?;
    // Netlink: only route (0), which getifaddrs needs; sock_diag lists the
    // host's sockets, audit, uevents and generic netlink reach further.
    notify(
        "socket",
        &[
            family(16),
            ScmpArgCompare::new(2, ScmpCompareOp::NotEqual, 0),
        ],
    )?;
    // socketpair creates sockets too (TIPC supports it): only unix pairs.
    notify(
        "socketpair",
        &[ScmpArgCompare::new(0, ScmpCompareOp::NotEqual, 1)],
    )?;
    export(&ctx)
}

/// Calls that create or move a name, always held by the gate (with `open`
/// and `openat` when they carry O_CREAT).
const CREATING: &[&str] = &[
    "creat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
];

/// What the broker may do: receive a request, resolve and inspect a path,
/// connect or send, create a name, answer, exit. Anything else kills it.
const BROKER_ALLOW: &[&str] = &[
    "recvmsg",
    "sendmsg",
    "write",
    "openat",
    "fstat",
    "newfstatat",
    "fstatfs",
    "fcntl",
    "readlink",
    "readlinkat",
    "connect",
    "sendto",
    "umask",
    "mkdirat",
    "mknodat",
    "renameat",
    "renameat2",
    "linkat",
    "symlinkat",
    "unlinkat",
    "close",
    "exit",
    "exit_group",
    "rt_sigreturn",
    "restart_syscall",
];

/// The broker's own filter (it does not run the session's: it must make
/// the calls the gate holds, and needs far fewer).
pub fn broker_program() -> Result<Program, SandboxError> {
    let mut ctx = context(ScmpAction::KillProcess)?;
    for name in BROKER_ALLOW {
        if let Some(sc) = syscall(name) {
            ctx.add_rule(ScmpAction::Allow, sc)
                .map_err(scmp_err(name))?;
        }
    }
    export(&ctx)
}

/// `socket(2)` families below netlink (16) a session may not create: all
/// but unix (1), IPv4 (2) and IPv6 (10). Above 16, every family is refused.
const REFUSED_FAMILIES: [u64; 13] = [0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

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

#[cfg(test)]
mod tests {
    //! The compiled filters, run by a small classic-BPF interpreter against
    //! made-up `seccomp_data`: what each policy lets through, without root
    //! and without loading anything.
    use libc::{
        BPF_ABS, BPF_ALU, BPF_AND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K,
        BPF_LD, BPF_RET, BPF_W, EPERM, SECCOMP_RET_ACTION_FULL, SECCOMP_RET_ALLOW,
        SECCOMP_RET_DATA, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS,
    };

    use super::*;

    /// `AUDIT_ARCH_*` of the architecture the tests run on.
    #[cfg(target_arch = "x86_64")]
    const NATIVE: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const NATIVE: u32 = 0xc000_00b7;

    // The classic-BPF instructions libseccomp emits.
    const LD_W_ABS: u16 = (BPF_LD | BPF_W | BPF_ABS) as u16;
    const AND_K: u16 = (BPF_ALU | BPF_AND | BPF_K) as u16;
    const JA: u16 = (BPF_JMP | BPF_JA) as u16;
    const JEQ_K: u16 = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
    const JGT_K: u16 = (BPF_JMP | BPF_JGT | BPF_K) as u16;
    const JGE_K: u16 = (BPF_JMP | BPF_JGE | BPF_K) as u16;
    const JSET_K: u16 = (BPF_JMP | BPF_JSET | BPF_K) as u16;
    const RET_K: u16 = (BPF_RET | BPF_K) as u16;

    /// What a filter decided.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Action {
        Allow,
        Errno(i32),
        KillProcess,
        Other(u32),
    }

    impl Action {
        fn of(ret: u32) -> Self {
            match ret & SECCOMP_RET_ACTION_FULL {
                SECCOMP_RET_ALLOW => Self::Allow,
                SECCOMP_RET_ERRNO => Self::Errno(i32::try_from(ret & SECCOMP_RET_DATA).unwrap()),
                SECCOMP_RET_KILL_PROCESS => Self::KillProcess,
                _ => Self::Other(ret),
            }
        }
    }

    /// `struct seccomp_data`: what a filter sees of a syscall.
    struct Data {
        nr: i32,
        arch: u32,
        instruction_pointer: u64,
        args: [u64; 6],
    }

    impl Data {
        /// The 32-bit word at `offset`, as `BPF_LD|BPF_W|BPF_ABS` loads it.
        fn word(&self, offset: u32) -> u32 {
            let mut bytes = Vec::with_capacity(64);
            bytes.extend(self.nr.to_ne_bytes());
            bytes.extend(self.arch.to_ne_bytes());
            bytes.extend(self.instruction_pointer.to_ne_bytes());
            for a in self.args {
                bytes.extend(a.to_ne_bytes());
            }
            let at = usize::try_from(offset).unwrap();
            assert!(
                at % 4 == 0 && at + 4 <= bytes.len(),
                "load at {at} is outside seccomp_data or unaligned"
            );
            u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
        }
    }

    /// Runs one program as the kernel would. Only the instructions
    /// libseccomp emits are interpreted; any other panics, so that a new
    /// one is noticed (and interpreted) rather than misread.
    fn run(program: &Program, data: &Data) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0;
        loop {
            let Some(ins) = program.filter.get(pc) else {
                panic!("ran past the end of the program at {pc}");
            };
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
            match ins.code {
                LD_W_ABS => a = data.word(ins.k),
                AND_K => a &= ins.k,
                JA => pc += usize::try_from(ins.k).unwrap(),
                JEQ_K => pc += jump(a == ins.k),
                JGT_K => pc += jump(a > ins.k),
                JGE_K => pc += jump(a >= ins.k),
                JSET_K => pc += jump(a & ins.k != 0),
                RET_K => return ins.k,
                code => panic!("instruction {code:#06x} at {} is not interpreted", pc - 1),
            }
        }
    }

    /// The verdict of a stack of filters: the kernel runs every one, the
    /// last loaded first, and keeps the first of the most restrictive
    /// actions (the lowest action bits as a signed number).
    fn verdict(filters: &[Program], data: &Data) -> Action {
        let rank = |ret: u32| (ret & SECCOMP_RET_ACTION_FULL).cast_signed();
        let mut ret = SECCOMP_RET_ALLOW;
        for f in filters.iter().rev() {
            let r = run(f, data);
            if rank(r) < rank(ret) {
                ret = r;
            }
        }
        Action::of(ret)
    }

    fn nr(name: &str) -> i32 {
        ScmpSyscall::from_name(name).unwrap().as_raw_syscall()
    }

    /// The verdict on the native syscall `name` with `args` (the rest 0).
    fn call(filters: &[Program], name: &str, args: &[u64]) -> Action {
        call_nr(filters, NATIVE, nr(name), args)
    }

    fn call_nr(filters: &[Program], arch: u32, nr: i32, args: &[u64]) -> Action {
        let mut all = [0; 6];
        all[..args.len()].copy_from_slice(args);
        let data = Data {
            nr,
            arch,
            instruction_pointer: 0x7f00_0000_1000,
            args: all,
        };
        verdict(filters, &data)
    }

    fn policy(extra: &str) -> Policy {
        let src = format!("version = 1\n[agent]\nname = \"t\"\n{extra}");
        let checked = crate::policy::check(src.as_bytes(), jiff::civil::date(2026, 1, 1));
        checked
            .policy
            .unwrap_or_else(|| panic!("{src}: {:?}", checked.diagnostics))
    }

    fn filters(extra: &str) -> Vec<Program> {
        for_policy(&policy(extra)).unwrap()
    }

    const STRICT: &str = "[syscalls]\nprofile = \"strict\"\n";
    const BIND: &str = "[network]\nbind = [\"127.0.0.1:8080\"]\n";
    const DENIED: Action = Action::Errno(EPERM);

    #[test]
    fn every_syscall_number_reaches_a_verdict() {
        for extra in ["", STRICT, BIND] {
            for f in filters(extra) {
                for n in 0..1024 {
                    for args in [[0; 6], [u64::MAX; 6]] {
                        let data = Data {
                            nr: n,
                            arch: NATIVE,
                            instruction_pointer: 0,
                            args,
                        };
                        run(&f, &data);
                    }
                }
            }
        }
    }

    #[test]
    fn listen_needs_a_bind_rule() {
        for profile in ["", STRICT] {
            let without = filters(profile);
            assert_eq!(call(&without, "listen", &[3, 128]), DENIED, "{profile}");
            assert_eq!(call(&without, "bind", &[3]), Action::Allow, "{profile}");
            let with = filters(&format!("{profile}{BIND}"));
            assert_eq!(call(&with, "listen", &[3, 128]), Action::Allow, "{profile}");
        }
        // Allowing the syscall does not stand in for a bind rule.
        let allowed = filters("[syscalls]\nprofile = \"strict\"\nallow = [\"listen\"]\n");
        assert_eq!(call(&allowed, "listen", &[3, 128]), DENIED);
        let allowed = filters("[syscalls]\nallow = [\"listen\"]\n");
        assert_eq!(call(&allowed, "listen", &[3, 128]), DENIED);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_and_foreign_architectures_are_killed() {
        use libseccomp::ScmpArch;
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        /// `__X32_SYSCALL_BIT`.
        const X32: i32 = 0x4000_0000;
        let i386_getpid = ScmpSyscall::from_name_by_arch("getpid", ScmpArch::X86)
            .unwrap()
            .as_raw_syscall();
        for extra in ["", STRICT, BIND] {
            let f = filters(extra);
            assert_eq!(call(&f, "getpid", &[]), Action::Allow);
            for name in ["getpid", "listen", "unshare", "ioctl"] {
                assert_eq!(
                    call_nr(&f, AUDIT_ARCH_X86_64, nr(name) | X32, &[]),
                    Action::KillProcess,
                    "x32 {name} ({extra})"
                );
            }
            assert_eq!(
                call_nr(&f, AUDIT_ARCH_I386, i386_getpid, &[]),
                Action::KillProcess,
                "i386 getpid ({extra})"
            );
        }
    }

    #[test]
    fn terminal_input_ioctls_are_denied_whatever_the_high_bits() {
        for extra in ["", STRICT] {
            let f = filters(extra);
            for cmd in [libc::TIOCSTI, libc::TIOCLINUX] {
                let cmd = u64::from(cmd as u32);
                assert_eq!(call(&f, "ioctl", &[0, cmd]), DENIED, "{cmd:#x} ({extra})");
                let high = 0xdead_beef_0000_0000 | cmd;
                assert_eq!(call(&f, "ioctl", &[0, high]), DENIED, "{high:#x} ({extra})");
            }
            let tcgets = u64::from(libc::TCGETS as u32);
            assert_eq!(call(&f, "ioctl", &[0, tcgets]), Action::Allow, "{extra}");
            assert_eq!(
                call(&f, "ioctl", &[0, 0xdead_beef_0000_0000 | tcgets]),
                Action::Allow,
                "{extra}"
            );
        }
    }

    #[test]
    fn only_unix_ip_and_route_netlink_sockets_can_be_created() {
        // The gate's filter holds the others; the supervisor refuses them.
        const DENIED: Action = Action::Other(libc::SECCOMP_RET_USER_NOTIF);
        for extra in ["", STRICT] {
            let mut f = filters(extra);
            f.insert(0, gate_program(false).unwrap());
            for (family, protocol) in [(1, 0), (2, 6), (2, 17), (10, 0), (16, 0)] {
                assert_eq!(
                    call(&f, "socket", &[family, 1, protocol]),
                    Action::Allow,
                    "family {family} ({extra})"
                );
            }
            // packet, vsock, alg, bluetooth, can; route netlink's siblings.
            for family in [17, 40, 38, 31, 29, 0, 3, 15] {
                assert_eq!(
                    call(&f, "socket", &[family, 1, 0]),
                    DENIED,
                    "family {family}"
                );
            }
            for high in [0x1_0000_0002_u64, 0xffff_ffff_0000_0028] {
                assert_eq!(call(&f, "socket", &[high, 1, 0]), DENIED, "{high:#x}");
            }
            for protocol in [4, 9, 15, 16] {
                assert_eq!(
                    call(&f, "socket", &[16, 3, protocol]),
                    DENIED,
                    "netlink {protocol}"
                );
            }
        }
    }

    #[test]
    fn creating_calls_go_to_the_supervisor_and_ordinary_opens_do_not() {
        const HELD: Action = Action::Other(libc::SECCOMP_RET_USER_NOTIF);
        let creat = u64::from(libc::O_CREAT as u32);
        let rdwr = u64::from(libc::O_RDWR as u32);
        for extra in ["", STRICT] {
            let mut f = filters(extra);
            f.insert(0, gate_program(false).unwrap());
            assert_eq!(call(&f, "openat", &[0, 0, rdwr]), Action::Allow, "{extra}");
            assert_eq!(call(&f, "openat", &[0, 0, rdwr | creat]), HELD, "{extra}");
            assert_eq!(
                call(&f, "openat", &[0, 0, 0xffff_0000_0000_0000 | creat]),
                HELD,
                "high bits ({extra})"
            );
            assert_eq!(call(&f, "open", &[0, creat | rdwr]), HELD, "{extra}");
            assert_eq!(call(&f, "open", &[0, rdwr]), Action::Allow, "{extra}");
            for name in CREATING {
                // Or denied outright: the strict profile has no mknod.
                let action = call(&f, name, &[0, 0, 0, 0, 0]);
                assert!(
                    action == HELD || (extra == STRICT && action == DENIED),
                    "{name} ({extra}): {action:?}"
                );
            }
        }
    }

    #[test]
    fn clone_with_namespace_flags_is_denied_and_clone3_falls_back() {
        let thread = u64::try_from(
            libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID,
        )
        .unwrap();
        let fork = u64::try_from(libc::SIGCHLD).unwrap();
        for extra in ["", STRICT] {
            let f = filters(extra);
            assert_eq!(call(&f, "clone", &[thread]), Action::Allow, "{extra}");
            assert_eq!(call(&f, "clone", &[fork]), Action::Allow, "{extra}");
            for flag in CLONE_NS_FLAGS {
                assert_eq!(call(&f, "clone", &[fork | flag]), DENIED, "{flag:#x}");
                let high = 0xffff_ffff_0000_0000 | fork | flag;
                assert_eq!(call(&f, "clone", &[high]), DENIED, "{high:#x}");
            }
            assert_eq!(call(&f, "unshare", &[0]), DENIED, "{extra}");
            let enosys = Action::Errno(libc::ENOSYS);
            assert_eq!(call(&f, "clone3", &[]), enosys, "{extra}");
            assert_eq!(call(&f, "openat2", &[]), enosys, "{extra}");
        }
        // Allowing unshare allows namespaces through clone too.
        let f = filters("[syscalls]\nallow = [\"unshare\"]\n");
        let newuser = u64::try_from(libc::CLONE_NEWUSER).unwrap();
        assert_eq!(call(&f, "clone", &[fork | newuser]), Action::Allow);
    }

    #[test]
    fn denied_syscalls_get_eperm_and_others_pass() {
        let f = filters("[syscalls]\ndeny = [\"flock\"]\n");
        assert_eq!(call(&f, "flock", &[3, 2]), DENIED);
        assert_eq!(call(&f, "ptrace", &[]), DENIED, "dangerous by default");
        assert_eq!(call(&f, "mount", &[]), DENIED, "dangerous by default");
        assert_eq!(call(&f, "getpid", &[]), Action::Allow);
        assert_eq!(call(&f, "personality", &[0xffff_ffff]), Action::Allow);
        assert_eq!(call(&filters(""), "flock", &[3, 2]), Action::Allow);
        let allowed = filters("[syscalls]\nallow = [\"ptrace\"]\n");
        assert_eq!(call(&allowed, "ptrace", &[]), Action::Allow);

        let strict = filters("[syscalls]\nprofile = \"strict\"\ndeny = [\"flock\"]\n");
        assert_eq!(call(&strict, "flock", &[3, 2]), DENIED);
        assert_eq!(call(&strict, "read", &[0, 0, 0]), Action::Allow);
        assert_eq!(call(&strict, "ptrace", &[]), DENIED);
        assert_eq!(call(&strict, "mknod", &[]), DENIED, "not on the allowlist");
        let extra = filters("[syscalls]\nprofile = \"strict\"\nallow = [\"mknod\"]\n");
        assert_eq!(call(&extra, "mknod", &[0, 0o644]), Action::Allow);
    }

    #[test]
    fn denying_an_argument_checked_syscall_denies_it_outright() {
        for name in ["ioctl", "clone", "clone3", "personality", "chmod"] {
            for profile in ["default", "strict"] {
                let f = filters(&format!(
                    "[syscalls]\nprofile = \"{profile}\"\ndeny = [\"{name}\"]\n"
                ));
                // The strict allowlist's fallback for clone3 still applies.
                let expected = if (name, profile) == ("clone3", "strict") {
                    Action::Errno(libc::ENOSYS)
                } else {
                    DENIED
                };
                assert_eq!(call(&f, name, &[0, 0, 0]), expected, "{name} ({profile})");
            }
        }
    }

    #[test]
    fn weakening_personalities_and_setuid_modes_are_denied() {
        let f = filters("");
        assert_eq!(
            call(&f, "personality", &[0xffff_ffff]),
            Action::Allow,
            "query"
        );
        assert_eq!(call(&f, "personality", &[0]), Action::Allow);
        for flag in PERSONALITY_FLAGS {
            assert_eq!(call(&f, "personality", &[*flag]), DENIED, "{flag:#x}");
            let high = 0xffff_ffff_0000_0000 | flag;
            assert_eq!(call(&f, "personality", &[high]), DENIED, "{high:#x}");
        }
        let strict = filters(STRICT);
        assert_eq!(
            call(&strict, "personality", &[0]),
            DENIED,
            "not on the allowlist"
        );
        for extra in ["", STRICT] {
            let f = filters(extra);
            assert_eq!(call(&f, "chmod", &[0, 0o755]), Action::Allow, "{extra}");
            assert_eq!(call(&f, "chmod", &[0, 0o4755]), DENIED, "{extra}");
            assert_eq!(call(&f, "fchmodat", &[0, 0, 0o2755]), DENIED, "{extra}");
            let creat = u64::try_from(libc::O_CREAT).unwrap();
            assert_eq!(call(&f, "openat", &[0, 0, creat, 0o644]), Action::Allow);
            assert_eq!(call(&f, "openat", &[0, 0, creat, 0o6644]), DENIED);
            assert_eq!(call(&f, "mkdirat", &[0, 0, 0o2775]), DENIED, "{extra}");
        }
    }
}
