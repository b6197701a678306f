//! The child between fork and exec: everything that turns a forked copy of
//! the supervisor into a confined agent. The parent prepares every input
//! (descriptors, C strings, the Landlock ruleset, the seccomp program); the
//! child only issues syscalls, in the order `ChildPlan::steps` documents,
//! and reports the failing step and errno over a CLOEXEC pipe.
pub mod broker;
pub mod exec;
pub mod landlock;
pub mod mounts;
pub mod notify;
pub mod protect;
pub mod seccomp;
pub mod sys;

use std::{
    ffi::{CStr, CString},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
};

pub use mounts::{Access, Bind};

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
    Landlock(#[from] ::landlock::RulesetError),
    /// libseccomp refused to build the filter.
    #[error("seccomp filter: {what}: {source}")]
    Seccomp {
        /// The step (`seccomp_rule_add read`, ...).
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The compiled filter could not be read back.
    #[error("seccomp filter: {what}: {source}")]
    SeccompExport {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Preparing the idmapped workspace mount failed.
    #[error("workspace {}: {step}: {source}", path.display())]
    Workspace {
        /// The workspace.
        path: PathBuf,
        /// The step (`open_tree`, `write uid_map`...).
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// The workspace's filesystem cannot be idmapped.
    #[error("the filesystem of {} does not support idmapped mounts (mount_setattr: {source})", path.display())]
    NoIdmap {
        /// The workspace.
        path: PathBuf,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
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
    pub fn hint(&self) -> Option<String> {
        Some(
            match self {
                Self::LandlockUnavailable => {
                    "add \"landlock\" to lsm= on the kernel command line; run `agentd doctor`"
                }
                Self::LandlockTooOld { .. } => {
                    "upgrade to Linux >= 6.12, or set `allow_degraded = true` in [enforcement]"
                }
                Self::Landlock(_) | Self::Seccomp { .. } | Self::SeccompExport { .. } => {
                    "run `agentd doctor` to check the kernel"
                }
                Self::Workspace { .. } => {
                    "choose a workspace on a local filesystem that supports idmapped mounts"
                }
                Self::NoIdmap { .. } => {
                    "use a workspace on ext4, xfs, btrfs or tmpfs (Linux >= 6.3)"
                }
                Self::Path { .. } => "fix the path in the policy or create it",
            }
            .into(),
        )
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
    /// Cover the host's socket directories with empty tmpfs.
    Hide,
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
    /// Fork the unix socket broker.
    Broker,
    /// Load the gate's filter and hand its listener to the supervisor.
    Listener,
    /// Load the seccomp filter.
    Seccomp,
    /// Execute the program.
    Exec,
}

impl Step {
    const ALL: [Self; 23] = [
        Self::Signals,
        Self::Descriptors,
        Self::Cgroup,
        Self::Session,
        Self::Namespaces,
        Self::MountPrivate,
        Self::Workspace,
        Self::Protect,
        Self::Passwd,
        Self::Hide,
        Self::Rlimits,
        Self::Securebits,
        Self::Bounding,
        Self::Identity,
        Self::Capabilities,
        Self::NoNewPrivs,
        Self::ParentDeath,
        Self::Chdir,
        Self::Landlock,
        Self::Broker,
        Self::Listener,
        Self::Seccomp,
        Self::Exec,
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
            Self::Hide => "cover the host's socket directories (mount tmpfs, mkdir, move_mount)",
            Self::Rlimits => "set resource limits (setrlimit)",
            Self::Securebits => "lock securebits (prctl PR_SET_SECUREBITS)",
            Self::Bounding => "empty the capability bounding set (prctl PR_CAPBSET_DROP)",
            Self::Identity => "switch to the session user (setgroups, setresgid, setresuid)",
            Self::Capabilities => "empty the capability sets (capset, PR_CAP_AMBIENT)",
            Self::NoNewPrivs => "set no_new_privs (prctl PR_SET_NO_NEW_PRIVS)",
            Self::ParentDeath => "die with the supervisor (prctl PR_SET_PDEATHSIG)",
            Self::Chdir => "enter the working directory (chdir)",
            Self::Landlock => "enforce Landlock (landlock_restrict_self)",
            Self::Broker => "start the unix socket broker (fork)",
            Self::Listener => {
                "load the gate's filter and hand over its listener (seccomp SECCOMP_FILTER_FLAG_NEW_LISTENER, pidfd_getfd)"
            }
            Self::Seccomp => "load the seccomp filter (seccomp SECCOMP_SET_MODE_FILTER)",
            Self::Exec => "execute the program (execve)",
        }
    }
}

// securebits (linux/securebits.h)
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

/// The program to execute, as execve wants it.
#[derive(Debug)]
pub struct Exec {
    program: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Exec {
    /// `program` with `argv` (argv[0] included) and `env` (NAME, value).
    pub fn new(
        program: &std::path::Path,
        argv: &[std::ffi::OsString],
        env: &[(String, std::ffi::OsString)],
    ) -> Result<Self, SandboxError> {
        use std::os::unix::ffi::OsStrExt as _;
        let nul = |what: &str| SandboxError::Path {
            path: program.to_path_buf(),
            why: format!("{what} contains a NUL byte"),
        };
        let program_c = mounts::cstring(program)?;
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for a in argv {
            strings.push(CString::new(a.as_bytes()).map_err(|_| nul("an argument"))?);
        }
        for (k, v) in env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(CString::new(kv).map_err(|_| nul("an environment variable"))?);
        }
        let (a, e) = strings.split_at(argv.len());
        let argv = a
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = e
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(Self {
            program: program_c,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// How the child came out, seen from the parent.
#[derive(Debug)]
pub enum SpawnError {
    /// fork/clone3 failed.
    Fork(i32),
    /// A setup step (or execve itself, as [`Step::Exec`]) failed in the child.
    Step(Step, i32),
}

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    /// The session's cgroup2 directory: the child is created in it
    /// (clone3 CLONE_INTO_CGROUP).
    pub cgroup_dir: OwnedFd,
    /// `cgroup.procs` of the cgroup2 leaf, written only when clone3 is
    /// unavailable.
    pub cgroup_v2_procs: OwnedFd,
    /// `cgroup.procs` of each v1 cgroup (hybrid hosts), open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// stdin, stdout, stderr for the agent (`None`: inherit).
    pub stdio: Option<[OwnedFd; 3]>,
    /// What to execute.
    pub exec: Exec,
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
    /// Socket directories to cover (after the passwd binds, whose sources
    /// may live below one).
    pub hidden: Vec<mounts::Hidden>,
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
    /// The unix socket gate (broker and listener), when the session has one.
    pub gate: Option<GateChild>,
    /// seccomp programs, loaded in order.
    pub seccomp: Vec<seccomp::Program>,
    /// Write end of the report pipe (CLOEXEC).
    pub report: OwnedFd,
}

/// The child's part of the unix socket gate.
#[derive(Debug)]
pub struct GateChild {
    /// The broker to fork.
    pub broker: broker::Plan,
    /// The gate's filter ([`seccomp::gate_program`]).
    pub filter: seccomp::Program,
    /// Read end of the pipe on which the parent says it holds the listener.
    pub ack: OwnedFd,
}

/// The agent, started.
#[derive(Debug)]
pub struct Spawned<G> {
    /// Its pid.
    pub pid: libc::pid_t,
    /// What `serve` made of the gate's listener, when the plan had a gate.
    pub gate: Option<G>,
}

impl ChildPlan {
    /// Forks the agent into the session cgroup, applies every step in the
    /// child and executes the program. Returns the pid once execve has
    /// succeeded, or the failing step and errno. `ack` is the write end of
    /// the gate's `ack` pipe; `serve` starts serving the gate's listener,
    /// taken from the child before it executes, and before the child goes
    /// on: its exec may be one of the calls the gate holds.
    pub fn spawn<G>(
        self,
        report_read: &OwnedFd,
        ack: Option<OwnedFd>,
        serve: impl FnOnce(OwnedFd) -> Option<G>,
    ) -> Result<Spawned<G>, SpawnError> {
        let (forked, migrate) = match sys::fork_into_cgroup(self.cgroup_dir.as_raw_fd()) {
            Ok(f) => (f, false),
            // Linux < 5.7: fork, and the child writes its own cgroup.procs.
            Err(libc::ENOSYS) => (sys::fork().map_err(SpawnError::Fork)?, true),
            Err(e) => return Err(SpawnError::Fork(e)),
        };
        match forked {
            sys::Forked::Child => self.child(migrate),
            sys::Forked::Parent(pid) => {
                // Our copy of the report pipe's write end must go: EOF then
                // means the child's execve succeeded (CLOEXEC closed it).
                drop(self);
                let mut serve = Some(serve);
                let mut gate = None;
                let fail = |step: Step, errno: i32| {
                    sys::kill(pid, libc::SIGKILL);
                    sys::reap(pid);
                    Err(SpawnError::Step(step, errno))
                };
                loop {
                    match read_report(report_read) {
                        Report::Listener(fd) => {
                            match (&ack, notify::take_fd(pid.unsigned_abs(), fd, false)) {
                                (Some(ack), Ok(l)) => {
                                    gate = serve.take().and_then(|s| s(l));
                                    if gate.is_none() {
                                        return fail(Step::Listener, libc::EPROTO);
                                    }
                                    let _ = sys::write_all(ack.as_raw_fd(), b"1");
                                }
                                (_, taken) => {
                                    return fail(
                                        Step::Listener,
                                        taken.err().unwrap_or(libc::EPROTO),
                                    );
                                }
                            }
                        }
                        Report::Failed(step, errno) => {
                            sys::reap(pid);
                            return Err(SpawnError::Step(step, errno));
                        }
                        Report::Executed => return Ok(Spawned { pid, gate }),
                    }
                }
            }
        }
    }

    /// The child side: never returns.
    fn child(&self, migrate: bool) -> ! {
        let failure = match self.steps(&mut RealSys, migrate) {
            Err(failure) => failure,
            Ok(()) => (
                Step::Exec,
                sys::execve(&self.exec.program, &self.exec.argv, &self.exec.envp),
            ),
        };
        let (step, errno) = failure;
        let _ = sys::write_record(self.report.as_raw_fd(), step as u32, errno);
        sys::exit_now(127)
    }

    /// Runs in the forked child, right before `execve`. The order matters:
    ///
    /// 0. the child was created inside the session's cgroup2 leaf
    ///    (clone3), so everything is accounted and killable from the start;
    /// 1. signals and descriptors: nothing the supervisor blocked, ignored
    ///    or holds (pty master, sockets, lock files) leaks into the agent;
    /// 2. v1 cgroups (hybrid hosts) next, for the same reason;
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
    fn steps<S: ChildSys>(&self, os: &mut S, migrate: bool) -> Result<(), (Step, i32)> {
        let at = |step: Step| move |errno: i32| (step, errno);
        os.unblock_all_signals().map_err(at(Step::Signals))?;
        os.default_sigpipe().map_err(at(Step::Signals))?;
        if let Some(stdio) = &self.stdio {
            for (target, fd) in stdio.iter().enumerate() {
                let target = i32::try_from(target).map_err(|_| (Step::Descriptors, libc::EBADF))?;
                os.dup2(fd.as_raw_fd(), target)
                    .map_err(at(Step::Descriptors))?;
            }
        }
        os.cloexec_all_from(3).map_err(at(Step::Descriptors))?;
        if migrate {
            os.write_all(self.cgroup_v2_procs.as_raw_fd(), b"0")
                .map_err(at(Step::Cgroup))?;
        }
        for fd in &self.cgroup_procs {
            os.write_all(fd.as_raw_fd(), b"0")
                .map_err(at(Step::Cgroup))?;
        }
        os.setsid().map_err(at(Step::Session))?;
        if self.controlling_tty {
            os.set_controlling_tty(0).map_err(at(Step::Session))?;
        }
        if self.namespaces != 0 {
            os.unshare(self.namespaces).map_err(at(Step::Namespaces))?;
            os.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE)
                .map_err(at(Step::MountPrivate))?;
        }
        if let Some((tree, target)) = &self.workspace {
            os.move_mount(tree.as_raw_fd(), target)
                .map_err(at(Step::Workspace))?;
        }
        for bind in &self.binds {
            os.mount(Some(&bind.source), &bind.target, None, libc::MS_BIND)
                .map_err(at(Step::Protect))?;
            let remount = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
            let flags = match bind.access {
                Access::AsBelow => None,
                Access::ReadOnly => Some(remount | libc::MS_RDONLY),
                Access::Writable => Some(remount),
            };
            if let Some(flags) = flags {
                os.mount(None, &bind.target, None, flags)
                    .map_err(at(Step::Protect))?;
            }
        }
        if let Some((passwd, group)) = &self.identity_files {
            os.mount(Some(passwd), c"/etc/passwd", None, libc::MS_BIND)
                .map_err(at(Step::Passwd))?;
            os.mount(Some(group), c"/etc/group", None, libc::MS_BIND)
                .map_err(at(Step::Passwd))?;
        }
        let sealed = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        for h in &self.hidden {
            os.mount(Some(c"tmpfs"), &h.dir, Some(c"tmpfs"), sealed)
                .map_err(at(Step::Hide))?;
            for dir in &h.mkdirs {
                os.mkdir(dir).map_err(at(Step::Hide))?;
            }
            for file in &h.files {
                os.create_file(file).map_err(at(Step::Hide))?;
            }
            for (tree, target) in &h.exposed {
                os.move_mount(tree.as_raw_fd(), target)
                    .map_err(at(Step::Hide))?;
            }
            os.mount(
                None,
                &h.dir,
                None,
                libc::MS_REMOUNT | libc::MS_RDONLY | sealed,
            )
            .map_err(at(Step::Hide))?;
        }
        for (resource, value) in &self.rlimits {
            os.set_rlimit(*resource, *value)
                .map_err(at(Step::Rlimits))?;
        }
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        os.prctl(libc::PR_SET_SECUREBITS, bits)
            .map_err(at(Step::Securebits))?;
        for cap in 0..=self.last_cap {
            os.prctl(libc::PR_CAPBSET_DROP, cap)
                .map_err(at(Step::Bounding))?;
        }
        // With a broker to start, the saved group id is the broker's: it
        // takes it without privilege, and the agent drops it below.
        let saved_gid = if self.gate.is_some() {
            agentd_common::BROKER_GID
        } else {
            self.gid
        };
        os.set_identity(self.uid, self.gid, saved_gid)
            .map_err(at(Step::Identity))?;
        os.clear_ambient_caps().map_err(at(Step::Capabilities))?;
        os.clear_caps().map_err(at(Step::Capabilities))?;
        os.prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
            .map_err(at(Step::NoNewPrivs))?;
        os.prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::ParentDeath))?;
        os.chdir(&self.cwd).map_err(at(Step::Chdir))?;
        os.landlock_restrict_self(self.landlock.as_raw_fd())
            .map_err(at(Step::Landlock))?;
        // The broker shares everything above (uid, mounts, Landlock domain)
        // and none of the filters below: the gate's holds the very calls it
        // makes. The gate's filter goes before the session's, which may
        // deny seccomp(2) itself.
        if let Some(gate) = &self.gate {
            os.start_broker(&gate.broker).map_err(at(Step::Broker))?;
            os.set_gids(self.gid).map_err(at(Step::Broker))?;
            os.gate_listen(
                &gate.filter.fprog(),
                self.report.as_raw_fd(),
                gate.ack.as_raw_fd(),
            )
            .map_err(at(Step::Listener))?;
        }
        for program in &self.seccomp {
            os.seccomp_set_filter(&program.fprog())
                .map_err(at(Step::Seccomp))?;
        }
        Ok(())
    }
}

/// Declares [`ChildSys`], the system calls the child makes between fork
/// and exec, and [`RealSys`], which makes them through [`sys`]: one list,
/// so the two cannot drift apart.
macro_rules! child_sys {
    ($( fn $name:ident($($arg:ident: $ty:ty),*); )*) => {
        /// The child's system calls: [`RealSys`], or a recording fake in
        /// the unit tests, which check the order of the steps without
        /// root. Statically dispatched: no allocation.
        trait ChildSys {
            $( fn $name(&mut self, $($arg: $ty),*) -> Result<(), i32>; )*
        }

        /// The real calls.
        struct RealSys;

        impl ChildSys for RealSys {
            $(
                fn $name(&mut self, $($arg: $ty),*) -> Result<(), i32> {
                    sys::$name($($arg),*)
                }
            )*
        }
    };
}

child_sys! {
    fn unblock_all_signals();
    fn default_sigpipe();
    fn dup2(from: RawFd, to: RawFd);
    fn cloexec_all_from(from: u32);
    fn write_all(fd: RawFd, bytes: &[u8]);
    fn setsid();
    fn set_controlling_tty(fd: RawFd);
    fn unshare(flags: libc::c_int);
    fn mount(source: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong);
    fn move_mount(from: RawFd, target: &CStr);
    fn mkdir(path: &CStr);
    fn create_file(path: &CStr);
    fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64);
    fn prctl(option: libc::c_int, arg2: libc::c_ulong);
    fn set_identity(uid: libc::uid_t, gid: libc::gid_t, saved_gid: libc::gid_t);
    fn set_gids(gid: libc::gid_t);
    fn clear_ambient_caps();
    fn clear_caps();
    fn chdir(path: &CStr);
    fn landlock_restrict_self(ruleset: RawFd);
    fn start_broker(plan: &broker::Plan);
    fn gate_listen(prog: &libc::sock_fprog, report: RawFd, ack: RawFd);
    fn seccomp_set_filter(prog: &libc::sock_fprog);
}

/// One record of the child's report pipe.
enum Report {
    /// The gate's listener is at this descriptor of the child.
    Listener(u64),
    /// A step failed.
    Failed(Step, i32),
    /// EOF: execve succeeded (or the child died without a word, which
    /// the caller's wait reports).
    Executed,
}

/// Reads the next record of the child's report pipe.
fn read_report(read_end: &OwnedFd) -> Report {
    let mut record = [0u8; 8];
    match sys::read(read_end.as_raw_fd(), &mut record) {
        Ok(8) => {
            let step = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
            let value = i32::from_le_bytes([record[4], record[5], record[6], record[7]]);
            if step == sys::LISTENER_RECORD {
                return Report::Listener(u64::from(value.unsigned_abs()));
            }
            Step::from_u32(step).map_or(Report::Executed, |s| Report::Failed(s, value))
        }
        _ => Report::Executed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call by name (with the prctl option or the mount
    /// target) and fails the one named `fail_at`.
    #[derive(Default)]
    struct Recording {
        calls: Vec<String>,
        fail_at: Option<&'static str>,
    }

    impl Recording {
        fn call(&mut self, name: impl Into<String>) -> Result<(), i32> {
            let name = name.into();
            let fail = self.fail_at.is_some_and(|f| name.starts_with(f));
            self.calls.push(name);
            if fail { Err(libc::EPERM) } else { Ok(()) }
        }
    }

    impl ChildSys for Recording {
        fn unblock_all_signals(&mut self) -> Result<(), i32> {
            self.call("unblock_all_signals")
        }
        fn default_sigpipe(&mut self) -> Result<(), i32> {
            self.call("default_sigpipe")
        }
        fn dup2(&mut self, _: RawFd, to: RawFd) -> Result<(), i32> {
            self.call(format!("dup2 {to}"))
        }
        fn cloexec_all_from(&mut self, _: u32) -> Result<(), i32> {
            self.call("cloexec_all_from")
        }
        fn write_all(&mut self, _: RawFd, _: &[u8]) -> Result<(), i32> {
            self.call("write cgroup.procs")
        }
        fn setsid(&mut self) -> Result<(), i32> {
            self.call("setsid")
        }
        fn set_controlling_tty(&mut self, _: RawFd) -> Result<(), i32> {
            self.call("set_controlling_tty")
        }
        fn unshare(&mut self, _: libc::c_int) -> Result<(), i32> {
            self.call("unshare")
        }
        fn mount(
            &mut self,
            _: Option<&CStr>,
            target: &CStr,
            _: Option<&CStr>,
            flags: libc::c_ulong,
        ) -> Result<(), i32> {
            let kind = if flags & libc::MS_REMOUNT != 0 {
                "remount"
            } else {
                "mount"
            };
            self.call(format!("{kind} {}", target.to_string_lossy()))
        }
        fn move_mount(&mut self, _: RawFd, target: &CStr) -> Result<(), i32> {
            self.call(format!("move_mount {}", target.to_string_lossy()))
        }
        fn mkdir(&mut self, path: &CStr) -> Result<(), i32> {
            self.call(format!("mkdir {}", path.to_string_lossy()))
        }
        fn create_file(&mut self, path: &CStr) -> Result<(), i32> {
            self.call(format!("create {}", path.to_string_lossy()))
        }
        fn set_rlimit(&mut self, _: libc::__rlimit_resource_t, _: u64) -> Result<(), i32> {
            self.call("set_rlimit")
        }
        fn prctl(&mut self, option: libc::c_int, _: libc::c_ulong) -> Result<(), i32> {
            let name = match option {
                libc::PR_SET_SECUREBITS => "prctl securebits",
                libc::PR_CAPBSET_DROP => "prctl capbset_drop",
                libc::PR_SET_NO_NEW_PRIVS => "prctl no_new_privs",
                libc::PR_SET_PDEATHSIG => "prctl pdeathsig",
                _ => "prctl other",
            };
            self.call(name)
        }
        fn set_gids(&mut self, _: libc::gid_t) -> Result<(), i32> {
            self.call("set_gids")
        }
        fn set_identity(
            &mut self,
            _: libc::uid_t,
            _: libc::gid_t,
            _: libc::gid_t,
        ) -> Result<(), i32> {
            self.call("set_identity")
        }
        fn clear_ambient_caps(&mut self) -> Result<(), i32> {
            self.call("clear_ambient_caps")
        }
        fn clear_caps(&mut self) -> Result<(), i32> {
            self.call("clear_caps")
        }
        fn chdir(&mut self, _: &CStr) -> Result<(), i32> {
            self.call("chdir")
        }
        fn landlock_restrict_self(&mut self, _: RawFd) -> Result<(), i32> {
            self.call("landlock_restrict_self")
        }
        fn start_broker(&mut self, _: &broker::Plan) -> Result<(), i32> {
            self.call("start_broker")
        }
        fn gate_listen(&mut self, _: &libc::sock_fprog, _: RawFd, _: RawFd) -> Result<(), i32> {
            self.call("gate_listen")
        }
        fn seccomp_set_filter(&mut self, _: &libc::sock_fprog) -> Result<(), i32> {
            self.call("seccomp_set_filter")
        }
    }

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn plan() -> ChildPlan {
        let c = |s: &str| CString::new(s).unwrap();
        ChildPlan {
            cgroup_dir: fd(),
            cgroup_v2_procs: fd(),
            cgroup_procs: vec![fd()],
            stdio: Some([fd(), fd(), fd()]),
            exec: Exec::new(std::path::Path::new("/bin/true"), &["true".into()], &[]).unwrap(),
            controlling_tty: true,
            namespaces: libc::CLONE_NEWNS,
            workspace: Some((fd(), c("/ws"))),
            binds: vec![Bind {
                source: c("/ws/.git/hooks"),
                target: c("/ws/.git/hooks"),
                access: Access::ReadOnly,
            }],
            identity_files: Some((c("/state/passwd"), c("/state/group"))),
            hidden: vec![mounts::Hidden {
                dir: c("/run"),
                mkdirs: vec![c("/run/pg")],
                files: vec![c("/run/pg/s")],
                exposed: vec![(fd(), c("/run/pg/s"))],
            }],
            rlimits: vec![(libc::RLIMIT_CORE, 0)],
            uid: 61_184,
            gid: 61_184,
            last_cap: 1,
            cwd: c("/ws"),
            landlock: fd(),
            gate: Some(GateChild {
                broker: broker::Plan {
                    chan: fd(),
                    uid: 61_184,
                    gid: 61_184,
                    protected: protect::Tree::default(),
                    listed: Vec::new(),
                    own: vec![c("/tmp/s")],
                    filter: seccomp::broker_program().unwrap(),
                },
                filter: seccomp::gate_program(false).unwrap(),
                ack: fd(),
            }),
            seccomp: seccomp::build(&crate::policy::Syscalls::default()).unwrap(),
            report: fd(),
        }
    }

    fn position(calls: &[String], name: &str) -> usize {
        calls
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{name} not called: {calls:?}"))
    }

    #[test]
    fn the_child_steps_run_in_their_security_order() {
        let mut os = Recording::default();
        plan().steps(&mut os, true).unwrap();
        let calls = &os.calls;
        let at = |name| position(calls, name);
        let order = [
            "unblock_all_signals",
            "dup2 0",
            "cloexec_all_from",
            "write cgroup.procs",
            "setsid",
            "set_controlling_tty",
            "unshare",
            "mount /",
            "move_mount /ws",
            "mount /ws/.git/hooks",
            "remount /ws/.git/hooks",
            "mount /etc/passwd",
            "mount /run",
            "mkdir /run/pg",
            "create /run/pg/s",
            "move_mount /run/pg/s",
            "remount /run",
            "set_rlimit",
            "prctl securebits",
            "prctl capbset_drop",
            "set_identity",
            "clear_caps",
            "prctl no_new_privs",
            "prctl pdeathsig",
            "chdir",
            "landlock_restrict_self",
            "start_broker",
            "set_gids",
            "gate_listen",
            "seccomp_set_filter",
        ];
        for pair in order.windows(2) {
            assert!(
                at(pair[0]) < at(pair[1]),
                "{} before {}: {calls:?}",
                pair[0],
                pair[1]
            );
        }
        // Every capability is dropped from the bounding set while still
        // privileged, and seccomp is the very last thing.
        let drops = calls.iter().filter(|c| *c == "prctl capbset_drop").count();
        assert_eq!(drops, 2, "caps 0..=last_cap");
        assert_eq!(calls.last().map(String::as_str), Some("seccomp_set_filter"));
    }

    #[test]
    fn a_failing_step_is_reported_and_nothing_after_it_runs() {
        for (fail, step) in [
            ("unshare", Step::Namespaces),
            ("remount", Step::Protect),
            ("set_identity", Step::Identity),
            ("landlock_restrict_self", Step::Landlock),
            ("start_broker", Step::Broker),
            ("set_gids", Step::Broker),
            ("gate_listen", Step::Listener),
        ] {
            let mut os = Recording {
                fail_at: Some(fail),
                ..Recording::default()
            };
            let err = plan().steps(&mut os, false).unwrap_err();
            assert_eq!(err, (step, libc::EPERM));
            assert!(os.calls.last().unwrap().starts_with(fail), "{:?}", os.calls);
            assert!(!os.calls.iter().any(|c| c == "seccomp_set_filter"));
        }
        // Without migration, the cgroup2 leaf is not written (clone3 put
        // the child there); v1 leaves are.
        let mut os = Recording::default();
        plan().steps(&mut os, false).unwrap();
        let writes = os
            .calls
            .iter()
            .filter(|c| *c == "write cgroup.procs")
            .count();
        assert_eq!(writes, 1);
    }
}
