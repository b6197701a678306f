//! The child between fork and exec: everything that turns a forked copy of
//! the supervisor into a confined agent. The parent prepares every input
//! (descriptors, C strings, the Landlock ruleset, the seccomp program); the
//! child only issues syscalls, in the order [`ChildPlan::apply`] documents,
//! and reports the failing step and errno over a CLOEXEC pipe.
pub mod landlock;
pub mod mounts;
pub mod seccomp;
pub mod sys;

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
};

pub use mounts::Bind;

/// Why a sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The kernel has no Landlock.
    #[error("Landlock is not available (disabled or not built in)")]
    LandlockUnavailable,
    /// The kernel's Landlock lacks rights the policy relies on.
    #[error("Landlock ABI {abi} lacks {missing}")]
    LandlockTooOld {
        /// The kernel's ABI.
        abi: u32,
        /// What is missing.
        missing: String,
    },
    /// Building the ruleset failed.
    #[error("Landlock ruleset: {0}")]
    Landlock(String),
    /// Building the seccomp filter failed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// Preparing the workspace mount failed.
    #[error("workspace: {0}")]
    Workspace(String),
    /// A path could not be used.
    #[error("{}: {why}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl SandboxError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::LandlockUnavailable => {
                "add \"landlock\" to lsm= on the kernel command line; run `agentd doctor`"
            }
            Self::LandlockTooOld { .. } => {
                "upgrade to Linux >= 6.12, or set `allow_degraded = true` in [enforcement]"
            }
            Self::Landlock(_) | Self::Seccomp(_) => "run `agentd doctor` to check the kernel",
            Self::Workspace(_) => {
                "choose a workspace on a local filesystem that supports idmapped mounts"
            }
            Self::Path { .. } => "fix the path in the policy or create it",
        }
    }
}

/// A setup step of the child, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Unblock the signals the supervisor blocks for itself.
    Signals = 1,
    /// Mark every inherited descriptor close-on-exec.
    Descriptors,
    /// Join the session's cgroups.
    Cgroup,
    /// Start a new session (and take the pty as controlling terminal).
    Session,
    /// New mount, network and IPC namespaces.
    Namespaces,
    /// Make every mount private.
    MountPrivate,
    /// Attach the idmapped workspace.
    Workspace,
    /// Pin and protect paths in writable roots.
    Protect,
    /// Bind the session's passwd and group.
    Passwd,
    /// Resource limits (open files, no core dumps).
    Rlimits,
    /// Lock securebits so root never regains capabilities.
    Securebits,
    /// Empty the capability bounding set.
    Bounding,
    /// setgroups([]), setresgid, setresuid.
    Identity,
    /// Empty ambient, inheritable, permitted and effective sets.
    Capabilities,
    /// Set no_new_privs.
    NoNewPrivs,
    /// Die with the supervisor.
    ParentDeath,
    /// Enter the working directory.
    Chdir,
    /// Enforce the Landlock ruleset.
    Landlock,
    /// Load the seccomp filter.
    Seccomp,
}

impl Step {
    const ALL: [Self; 19] = [
        Self::Signals,
        Self::Descriptors,
        Self::Cgroup,
        Self::Session,
        Self::Namespaces,
        Self::MountPrivate,
        Self::Workspace,
        Self::Protect,
        Self::Passwd,
        Self::Rlimits,
        Self::Securebits,
        Self::Bounding,
        Self::Identity,
        Self::Capabilities,
        Self::NoNewPrivs,
        Self::ParentDeath,
        Self::Chdir,
        Self::Landlock,
        Self::Seccomp,
    ];

    /// The step for a reported number.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == n)
    }

    /// What the step does, naming the syscall.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Signals => "unblock signals (pthread_sigmask)",
            Self::Descriptors => "close inherited descriptors on exec (close_range)",
            Self::Cgroup => "join the session cgroups (write cgroup.procs)",
            Self::Session => "start a new session (setsid, TIOCSCTTY)",
            Self::Namespaces => "create mount, network and IPC namespaces (unshare)",
            Self::MountPrivate => "make mounts private (mount MS_PRIVATE)",
            Self::Workspace => "attach the idmapped workspace (move_mount)",
            Self::Protect => "protect paths in writable roots (mount MS_BIND|MS_RDONLY)",
            Self::Passwd => "bind the session's passwd and group (mount MS_BIND)",
            Self::Rlimits => "set resource limits (setrlimit)",
            Self::Securebits => "lock securebits (prctl PR_SET_SECUREBITS)",
            Self::Bounding => "empty the capability bounding set (prctl PR_CAPBSET_DROP)",
            Self::Identity => "switch to the session user (setgroups, setresgid, setresuid)",
            Self::Capabilities => "empty the capability sets (capset, PR_CAP_AMBIENT)",
            Self::NoNewPrivs => "set no_new_privs (prctl PR_SET_NO_NEW_PRIVS)",
            Self::ParentDeath => "die with the supervisor (prctl PR_SET_PDEATHSIG)",
            Self::Chdir => "enter the working directory (chdir)",
            Self::Landlock => "enforce Landlock (landlock_restrict_self)",
            Self::Seccomp => "load the seccomp filter (seccomp SECCOMP_SET_MODE_FILTER)",
        }
    }
}

// securebits (linux/securebits.h)
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    /// `cgroup.procs` of each session cgroup, open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Whether stdin is the session's pty (becomes the controlling tty).
    pub controlling_tty: bool,
    /// `unshare` flags.
    pub namespaces: libc::c_int,
    /// The idmapped workspace tree and where to attach it.
    pub workspace: Option<(OwnedFd, CString)>,
    /// Pins and read-only binds, in order.
    pub binds: Vec<Bind>,
    /// Session passwd and group files to bind over /etc's.
    pub identity_files: Option<(CString, CString)>,
    /// (resource, value) pairs.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// Session UID.
    pub uid: libc::uid_t,
    /// Session GID.
    pub gid: libc::gid_t,
    /// Highest capability number.
    pub last_cap: libc::c_ulong,
    /// Working directory.
    pub cwd: CString,
    /// Landlock ruleset.
    pub landlock: OwnedFd,
    /// seccomp program.
    pub seccomp: seccomp::Program,
    /// Write end of the report pipe (CLOEXEC).
    pub report: OwnedFd,
}

impl ChildPlan {
    /// Runs in the forked child, right before `execve`. The order matters:
    ///
    /// 1. signals and descriptors: nothing the supervisor blocked or holds
    ///    (pty master, sockets, lock files) leaks into the agent;
    /// 2. cgroups first, so that everything after is accounted and killable;
    /// 3. a new session: the agent leaves the caller's terminal and job
    ///    control (with a pty, the pty is its controlling terminal);
    /// 4. namespaces and mounts while still root: private mounts, the
    ///    idmapped workspace, protected paths, the session's passwd;
    /// 5. rlimits, then securebits and the bounding set, which need
    ///    CAP_SETPCAP and so come before the identity switch;
    /// 6. setgroups/setresgid/setresuid, after which the kernel clears the
    ///    permitted and effective sets; ambient and inheritable are cleared
    ///    explicitly; no_new_privs so that no exec can regain privilege;
    /// 7. PDEATHSIG after the UID change (which resets it), chdir after the
    ///    workspace mount (so cwd is the idmapped view);
    /// 8. Landlock after the mounts (a Landlock domain may not mount);
    /// 9. seccomp last: it denies syscalls used by the steps above.
    ///
    /// No allocation, locking or logging happens here.
    pub fn apply(&self) -> io::Result<()> {
        self.steps().map_err(|(step, errno)| {
            let mut record = [0u8; 8];
            record[..4].copy_from_slice(&(step as u32).to_le_bytes());
            record[4..].copy_from_slice(&errno.to_le_bytes());
            let _ = sys::write_all(self.report.as_raw_fd(), &record);
            io::Error::from_raw_os_error(errno)
        })
    }

    fn steps(&self) -> Result<(), (Step, i32)> {
        let at = |step: Step| move |errno: i32| (step, errno);
        sys::unblock_all_signals().map_err(at(Step::Signals))?;
        sys::cloexec_all_from(3).map_err(at(Step::Descriptors))?;
        for fd in &self.cgroup_procs {
            sys::write_all(fd.as_raw_fd(), b"0").map_err(at(Step::Cgroup))?;
        }
        sys::setsid().map_err(at(Step::Session))?;
        if self.controlling_tty {
            sys::set_controlling_tty(0).map_err(at(Step::Session))?;
        }
        if self.namespaces != 0 {
            sys::unshare(self.namespaces).map_err(at(Step::Namespaces))?;
            sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE)
                .map_err(at(Step::MountPrivate))?;
        }
        if let Some((tree, target)) = &self.workspace {
            sys::move_mount(tree.as_raw_fd(), target).map_err(at(Step::Workspace))?;
        }
        for bind in &self.binds {
            sys::mount(Some(&bind.source), &bind.target, None, libc::MS_BIND)
                .map_err(at(Step::Protect))?;
            if bind.read_only {
                let flags = libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV;
                sys::mount(None, &bind.target, None, flags).map_err(at(Step::Protect))?;
            }
        }
        if let Some((passwd, group)) = &self.identity_files {
            sys::mount(Some(passwd), c"/etc/passwd", None, libc::MS_BIND)
                .map_err(at(Step::Passwd))?;
            sys::mount(Some(group), c"/etc/group", None, libc::MS_BIND)
                .map_err(at(Step::Passwd))?;
        }
        for (resource, value) in &self.rlimits {
            sys::set_rlimit(*resource, *value).map_err(at(Step::Rlimits))?;
        }
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        sys::prctl(libc::PR_SET_SECUREBITS, bits).map_err(at(Step::Securebits))?;
        for cap in 0..=self.last_cap {
            sys::prctl(libc::PR_CAPBSET_DROP, cap).map_err(at(Step::Bounding))?;
        }
        sys::set_identity(self.uid, self.gid).map_err(at(Step::Identity))?;
        sys::clear_ambient_caps().map_err(at(Step::Capabilities))?;
        sys::clear_caps().map_err(at(Step::Capabilities))?;
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(at(Step::NoNewPrivs))?;
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::ParentDeath))?;
        sys::chdir(&self.cwd).map_err(at(Step::Chdir))?;
        sys::landlock_restrict_self(self.landlock.as_raw_fd()).map_err(at(Step::Landlock))?;
        sys::seccomp_set_filter(&self.seccomp.fprog()).map_err(at(Step::Seccomp))?;
        Ok(())
    }
}

/// Reads the child's failure report, if it wrote one.
pub fn read_report(read_end: &OwnedFd) -> Option<(Step, i32)> {
    let mut record = [0u8; 8];
    match sys::read(read_end.as_raw_fd(), &mut record) {
        Ok(8) => {
            let step = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
            let errno = i32::from_le_bytes([record[4], record[5], record[6], record[7]]);
            Step::from_u32(step).map(|s| (s, errno))
        }
        _ => None,
    }
}
