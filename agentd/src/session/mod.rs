//! Sessions in embedded mode: `agentd run` as root supervises one confined
//! agent in-process. Setup happens in a fixed order (see [`run`]); every
//! resource created is recorded in the session's state directory so that
//! `agentd kill`, `agentd ps` and the watchdog can find it.
pub mod disabled;
mod enforce;
pub mod env;
pub mod id;
pub mod kill;
pub mod state;

use std::{
    ffi::{CString, OsString},
    fs,
    os::{
        fd::{AsFd as _, AsRawFd as _, OwnedFd},
        unix::{
            ffi::OsStrExt as _,
            fs::{MetadataExt as _, PermissionsExt as _},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use nix::sys::signal::{SigSet, Signal};

pub use self::{id::SessionId, kill::KillReport, state::KillRecord};
use crate::{
    cgroup::{self, SessionCgroups},
    host, identity, paths,
    policy::{PathBase, PathTemplate, Placeholders, Policy},
    pty,
    sandbox::{self, ChildPlan, SandboxError, Step, landlock::FsRules, mounts, seccomp},
};

/// Why a session could not start or be acted on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Embedded mode needs root.
    #[error("running a session needs root (agentd creates users, cgroups and mounts)")]
    NotRoot,
    /// The agent is disabled (`agentd disable`).
    #[error("agent {agent} is disabled (by uid {by_uid}{})", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Disabled {
        /// The agent.
        agent: String,
        /// Who disabled it.
        by_uid: u32,
        /// Why.
        reason: Option<String>,
    },
    /// The workspace cannot be used.
    #[error("workspace {}: {why}", path.display())]
    Workspace {
        /// The directory.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// A kernel feature is missing.
    #[error("this host cannot enforce the session: {0}")]
    Host(String),
    /// No identity could be allocated.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// A cgroup operation failed.
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    /// The sandbox could not be prepared.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A secret could not be read.
    #[error("secret {name} ({}): {why}", path.display())]
    Secret {
        /// Variable name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// The program does not exist.
    #[error("{0}: command not found")]
    NotFound(String),
    /// The program exists but cannot be executed.
    #[error("cannot execute {program}: {}", nix::errno::Errno::from_raw(*errno))]
    CannotExecute {
        /// The program.
        program: String,
        /// errno of execve.
        errno: i32,
    },
    /// A setup step in the child failed.
    #[error("session setup failed at step {}: {}", step.describe(), nix::errno::Errno::from_raw(*errno))]
    Setup {
        /// The step.
        step: Step,
        /// Its errno.
        errno: i32,
    },
    /// A file operation of the supervisor failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// No such session.
    #[error("no session {0}")]
    UnknownSession(SessionId),
    /// Killing failed.
    #[error("cannot kill session {0}: {1}")]
    Kill(SessionId, String),
    /// The kernel programs could not be loaded or fed.
    #[error("eBPF: {0}")]
    Ebpf(#[from] crate::ebpf::EbpfError),
    /// The audit trail could not be written.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl SessionError {
    /// The exit status `agentd run` uses: 125 setup failed, 126 cannot
    /// execute, 127 not found; 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound(_) => 127,
            Self::CannotExecute { .. } => 126,
            Self::UnknownSession(_) | Self::Kill(..) => 1,
            _ => 125,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NotRoot => {
                "run it with sudo, or start the daemon (`systemctl start agentd`), which serves members of its run group".into()
            }
            Self::Disabled { agent, .. } => format!("an admin can re-enable it: agentd enable {agent}"),
            Self::Workspace { .. } => {
                "pass --workspace with a directory you own outside system trees".into()
            }
            Self::Host(_) => "run `agentd doctor` to see what this host lacks".into(),
            Self::Identity(_) => "free UIDs in the dynamic range or set [identity] user".into(),
            Self::Cgroup(_) => "run `agentd doctor` to check the cgroup layout".into(),
            Self::Sandbox(e) => e.hint().into(),
            Self::Secret { path, .. } => {
                format!("create {} owned by root with mode 0600", path.display())
            }
            Self::NotFound(_) => "give the program's absolute path, or check PATH in [env]".into(),
            Self::CannotExecute { .. } => {
                "the program must be under a [filesystem] execute path and executable".into()
            }
            Self::Setup {
                step: Step::Workspace,
                ..
            } => "the workspace filesystem may not support idmapped mounts".into(),
            Self::Setup { .. } => "run `agentd doctor`; this kernel refused a sandbox step".into(),
            Self::Io { .. } => return None,
            Self::UnknownSession(_) => "`agentd ps` lists live sessions".into(),
            Self::Kill(..) => return None,
            Self::Ebpf(e) => e.hint(),
            Self::Audit(_) => "check that /var/log/agentd is writable by root".into(),
        })
    }
}

/// What the caller of [`run`] is told while a session starts.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The id is allocated; printed before anything runs.
    Started {
        /// Session id.
        id: &'a SessionId,
        /// Agent name.
        agent: &'a str,
    },
    /// An orphaned session was found and killed.
    Orphan(&'a kill::Orphan),
    /// Enforcement is partial, as the policy allows.
    Degraded(String),
    /// A policy path does not exist here and grants nothing.
    Skipped(&'a Path),
    /// A network rule could not be resolved and grants nothing.
    Unresolved(&'a str),
}

/// How a session is started.
impl Notice<'_> {
    /// The line `agentd run` prints on stderr for it, if any.
    pub fn line(&self) -> Option<String> {
        match self {
            Self::Started { id, agent } => Some(format!("agentd: session {id} (agent {agent})")),
            Self::Orphan(o) => Some(format!(
                "agentd: killed orphaned session {} (agent {}, {} processes)",
                o.id,
                o.agent,
                o.report.as_ref().map_or(0, |r| r.processes)
            )),
            Self::Degraded(what) => Some(format!("agentd: warning: degraded enforcement: {what}")),
            Self::Unresolved(rule) => Some(format!(
                "agentd: warning: network rule {rule} grants nothing in this session (network.dns = false: names cannot be resolved)"
            )),
            Self::Skipped(path) => {
                tracing::info!(path = %path.display(), "policy path does not exist; not granted");
                None
            }
        }
    }
}

#[derive(Debug)]
pub struct RunOptions<'a> {
    /// The validated policy.
    pub policy: &'a Policy,
    /// Where it was read from.
    pub policy_path: &'a Path,
    /// `--workspace` (default: the current directory).
    pub workspace: Option<PathBuf>,
    /// `--name`: a label for the session, shown by `agentd ps`.
    pub label: Option<String>,
    /// The program and its arguments.
    pub argv: Vec<OsString>,
    /// Give the agent its own pty (stdin is a terminal).
    pub tty: bool,
    /// The caller's environment, for `[env] pass`.
    pub caller_env: Vec<(OsString, OsString)>,
    /// The caller's uid and gid (default: this process's, or sudo's).
    pub caller: Option<(u32, u32)>,
    /// The caller's working directory (default: this process's).
    pub cwd: Option<PathBuf>,
    /// Where dynamic UIDs come from.
    pub uid_range: std::ops::RangeInclusive<u32>,
    /// Drain kernel events into the trail while the session runs (embedded
    /// mode; under the daemon, the daemon collects).
    pub collect: bool,
    /// Where the session's resolver forwards allowed names.
    pub dns: crate::dns::Settings,
}

/// How the agent's root process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// exit(code).
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + signal.
    pub fn status(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

/// Why the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The agent exited.
    Exited,
    /// `agentd kill` (or an orphan sweep).
    Killed(KillRecord),
    /// `[limits] max_duration` passed.
    Ttl,
}

/// A finished session.
#[derive(Debug)]
pub struct Outcome {
    /// Session id.
    pub id: SessionId,
    /// The root process's end.
    pub exit: Exit,
    /// Why it ended.
    pub reason: EndReason,
    /// Wall time.
    pub duration: Duration,
    /// Processes still running when the root exited, killed at teardown.
    pub leftovers: usize,
}

impl Outcome {
    /// The line `agentd run` prints on stderr when the session did not
    /// simply exit.
    pub fn detail(&self) -> Option<String> {
        match &self.reason {
            EndReason::Exited => None,
            EndReason::Ttl => Some(format!(
                "agentd: session {} killed: max_duration reached after {:.1}s",
                self.id,
                self.duration.as_secs_f64()
            )),
            EndReason::Killed(r) => Some(format!(
                "agentd: session {} {} by uid {}{}",
                self.id,
                if r.reason == "disabled" {
                    "killed (agent disabled)"
                } else {
                    "killed"
                },
                r.by_uid,
                r.text
                    .as_ref()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Directories no workspace may be (or be inside).
const SYSTEM_TREES: &[&str] = &[
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib/agentd",
    "/var/log",
];

fn check_workspace(path: &Path) -> Result<PathBuf, SessionError> {
    let err = |why: String| SessionError::Workspace {
        path: path.to_path_buf(),
        why,
    };
    let real = fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
    if !real.is_dir() {
        return Err(err("not a directory".into()));
    }
    if real == Path::new("/") || SYSTEM_TREES.iter().any(|t| real.starts_with(t)) {
        return Err(err(format!("{} is a system tree", real.display())));
    }
    Ok(real)
}

/// Searches `path_var` for `program` (absolute or relative paths are used
/// as given).
fn resolve_program(program: &OsString, path_var: &std::ffi::OsStr, cwd: &Path) -> Option<PathBuf> {
    let p = Path::new(program);
    let executable = |c: &Path| {
        fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if p.as_os_str().as_bytes().contains(&b'/') {
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        };
        return full.exists().then_some(full);
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(p))
        .find(|c| executable(c))
}

/// Reads secret values from their root-only files.
fn read_secrets(policy: &Policy) -> Result<Vec<(String, String)>, SessionError> {
    policy
        .secrets
        .iter()
        .map(|s| {
            let fail = |why: String| SessionError::Secret {
                name: s.name.to_string(),
                path: s.file.clone(),
                why,
            };
            let meta = fs::metadata(&s.file).map_err(|e| fail(e.to_string()))?;
            if meta.uid() != 0 || meta.mode() & 0o077 != 0 || !meta.is_file() {
                return Err(fail(format!(
                    "must be a regular file owned by root with mode 0600 (uid {}, mode {:04o})",
                    meta.uid(),
                    meta.mode() & 0o7777
                )));
            }
            let mut value = fs::read_to_string(&s.file).map_err(|e| fail(e.to_string()))?;
            if value.ends_with('\n') {
                value.pop();
            }
            Ok((s.name.to_string(), value))
        })
        .collect()
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SessionError + 'a {
    move |source| SessionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Everything created for a session, removed on drop unless disarmed (the
/// normal path tears down explicitly, in order).
struct Teardown {
    cgroups: Option<SessionCgroups>,
    dirs: Vec<PathBuf>,
    kernel: Option<(crate::ebpf::Kernel, Option<crate::ebpf::Registered>)>,
    resolver: Option<crate::dns::SessionResolver>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(r) = self.resolver.take() {
            r.stop();
        }
        let gone = self.cgroups.as_ref().is_none_or(|cg| cg.remove().is_ok());
        // Rules go only after the processes: nothing of the session runs
        // unenforced (a cgroup that cannot be removed keeps its rules).
        if gone && let Some((kernel, Some(registered))) = &self.kernel {
            let _ = kernel.unregister(registered);
        }
        // Other sessions' audit inputs, once they are long gone (a stat
        // of the stamp file unless a pruning is due).
        if let Some((kernel, _)) = &self.kernel {
            crate::audit::collect::prune_if_due(kernel);
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

fn resolve_all(paths: &[PathTemplate], ph: &Placeholders) -> Vec<PathBuf> {
    paths.iter().map(|p| p.resolve(ph)).collect()
}

/// Runs one session to its end. Setup order (each step's reason):
///
/// 1. orphan sweep: no unsupervised session survives another agentd run;
/// 2. id and state directory: every later resource is findable by id;
/// 3. identity: a UID/GID leased under a lock, so concurrent runs never
///    share one;
/// 4. {tmp} and {home}, owned by that identity;
/// 5. cgroups with limits, before any process exists;
/// 6. secrets, environment, Landlock ruleset, seccomp program, idmapped
///    workspace: built here, in the parent, so the child does no work that
///    could fail half-way unseen;
/// 7. the state file, then the watchdog (which kills the session if this
///    supervisor dies);
/// 8. the agent, created inside its cgroup (see [`ChildPlan::spawn`] for
///    the child's own order).
pub fn run(
    opts: RunOptions<'_>,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<Outcome, SessionError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SessionError::NotRoot);
    }
    let mut phase = Phases::start();
    for orphan in kill::sweep_orphans() {
        notify(Notice::Orphan(&orphan));
    }
    let policy = opts.policy;
    let degraded = policy.enforcement.allow_degraded;
    // Only the probes a session needs (doctor runs them all).
    for feature in [host::Feature::Seccomp, host::Feature::Landlock] {
        let check = host::probe(feature);
        if check.status != host::Status::Ok {
            return Err(SessionError::Host(format!(
                "{}: {}",
                feature.name(),
                check.detail
            )));
        }
    }
    if let Some(d) = disabled::get(policy.agent.name.as_str()) {
        return Err(SessionError::Disabled {
            agent: policy.agent.name.to_string(),
            by_uid: d.by_uid,
            reason: d.reason,
        });
    }
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(io_err("getcwd", Path::new(".")))?,
    };
    let workspace = check_workspace(opts.workspace.as_deref().unwrap_or(&cwd))?;
    let (caller_uid, caller_gid) = opts.caller.unwrap_or_else(identity::caller);

    phase.mark("preflight");
    // 2. id and state directory
    let id = SessionId::generate();
    notify(Notice::Started {
        id: &id,
        agent: policy.agent.name.as_str(),
    });
    let mut teardown = Teardown {
        cgroups: None,
        dirs: Vec::new(),
        kernel: None,
        resolver: None,
    };
    let state_dir = state::dir(&id);
    paths::create_private_dir(Path::new(paths::SESSIONS_DIR))
        .map_err(io_err("mkdir", Path::new(paths::SESSIONS_DIR)))?;
    fs::create_dir(&state_dir).map_err(io_err("mkdir", &state_dir))?;
    teardown.dirs.push(state_dir.clone());

    phase.mark("state dir");
    // 3. identity
    let ident = identity::acquire(
        &policy.identity,
        policy.agent.name.as_str(),
        caller_uid,
        opts.uid_range.clone(),
    )?;

    phase.mark("identity");
    // 4. {tmp}, {home}
    let data_dir = Path::new(paths::SESSION_DATA_DIR).join(id.as_str());
    paths::create_dir_mode(Path::new(paths::SESSION_DATA_DIR), 0o711)
        .map_err(io_err("mkdir", Path::new(paths::SESSION_DATA_DIR)))?;
    fs::create_dir(&data_dir).map_err(io_err("mkdir", &data_dir))?;
    teardown.dirs.push(data_dir.clone());
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o711))
        .map_err(io_err("chmod", &data_dir))?;
    let placeholders = Placeholders {
        workspace: workspace.clone(),
        tmp: data_dir.join("tmp"),
        home: data_dir.join("home"),
    };
    for dir in [&placeholders.tmp, &placeholders.home] {
        fs::create_dir(dir).map_err(io_err("mkdir", dir))?;
        nix::unistd::chown(dir, Some(ident.uid.into()), Some(ident.gid.into()))
            .map_err(|e| io_err("chown", dir)(e.into()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }

    phase.mark("data dirs");
    // 5. cgroups
    let limits = cgroup::Limits {
        memory: policy.limits.memory.map(|m| m.0),
        pids: policy.limits.max_processes,
        cpu_percent: policy.limits.cpu.map(|c| c.percent),
    };
    let layout = cgroup::Layout::discover()?;
    let (cgroups, skipped) = SessionCgroups::create(&layout, id.as_str(), &limits, degraded)?;
    for missing in skipped {
        notify(Notice::Degraded(format!("limit not enforced: {missing}")));
    }
    let procs_files = cgroups.procs_files();
    let cgroup_id = cgroups.v2.id()?;
    teardown.cgroups = Some(cgroups);

    // Kernel enforcement: the session's egress, bind and socket rules are
    // in the shared maps before any process exists in its cgroup. Without
    // the programs (and only if the policy allows degraded mode) the
    // session gets no network at all instead.
    let net_plan = enforce::network_plan(policy);
    for rule in &net_plan.unresolved {
        notify(Notice::Unresolved(rule));
    }
    let mut resolver_sockets = None;
    let private_netns = match enforce::kernel(&layout.parent, id.as_str()) {
        Ok(kernel) => {
            // The session's resolver address is in its kernel entry from
            // the start: its first DNS packet already goes there.
            // No name rule: nothing to answer, no resolver; DNS is refused
            // in the kernel instead.
            if policy.network.dns && !net_plan.names.is_empty() {
                resolver_sockets = Some(crate::dns::Bound::bind(cgroup_id).map_err(io_err(
                    "bind the session's resolver on",
                    Path::new("127.53.0.0/16 port 53"),
                ))?);
            }
            let registered = enforce::register(
                &kernel,
                cgroup_id,
                policy,
                &net_plan,
                resolver_sockets.as_ref().map(|b| (b.addr(), b.port6())),
                &state_dir,
            )?;
            teardown.kernel = Some((kernel, Some(registered)));
            false
        }
        Err(e) if degraded => {
            notify(Notice::Degraded(format!(
                "eBPF programs unavailable ({e}): no network and no kernel events for this session"
            )));
            true
        }
        Err(e) => return Err(e.into()),
    };

    phase.mark("cgroups");
    // 6. secrets, environment, program
    let secrets = read_secrets(policy)?;
    let trace_id = env::hex(&id::random_bytes::<16>());
    let span_id = env::hex(&id::random_bytes::<8>());
    let traceparent = env::traceparent(&trace_id, &span_id);
    let environment = env::build(&env::Inputs {
        policy: &policy.env,
        caller: &opts.caller_env,
        secrets: &secrets,
        session: id.as_str(),
        traceparent: &traceparent,
        home: &placeholders.home,
        tmp: &placeholders.tmp,
        user: &ident.name,
    });
    let path_var = environment
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| env::DEFAULT_PATH.into());
    let context = crate::audit::Context {
        session: id.to_string(),
        agent: policy.agent.name.to_string(),
        policy: policy.digest.as_str().to_owned(),
        trace_id: trace_id.clone(),
    };
    // Exact values scrubbed from the trail: secrets and whatever the
    // caller's environment passed in.
    let redact_exact: Vec<String> = secrets
        .iter()
        .map(|(_, v)| v.clone())
        .chain(policy.env.pass.iter().filter_map(|name| {
            environment
                .iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.to_string_lossy().into_owned())
        }))
        .collect();
    let Some(program_arg) = opts.argv.first() else {
        return Err(SessionError::NotFound(String::new()));
    };
    let program = resolve_program(program_arg, &path_var, &workspace)
        .ok_or_else(|| SessionError::NotFound(program_arg.to_string_lossy().into_owned()))?;

    phase.mark("environment");
    // Landlock
    let pty = if opts.tty {
        Some(
            pty::open(std::io::stdin().as_fd())
                .map_err(io_err("openpty", Path::new("/dev/ptmx")))?,
        )
    } else {
        None
    };
    let mut rules = FsRules {
        read: resolve_all(&policy.filesystem.read, &placeholders),
        read_write: resolve_all(&policy.filesystem.read_write, &placeholders),
        execute: resolve_all(&policy.filesystem.execute, &placeholders),
        devices: [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect(),
    };
    // The exec allowlist: with an [exec] table only the allowed programs
    // (by inode, as they are now) and `{root}/**` trees may be executed;
    // the execute roots stay readable for libraries.
    let exec_grants = sandbox::exec::resolve(&policy.exec, &placeholders);
    if policy.exec.enforced {
        let roots = std::mem::take(&mut rules.execute);
        rules.read.extend(roots);
        rules.execute = exec_grants
            .dirs
            .iter()
            .chain(&exec_grants.files)
            .cloned()
            .collect();
    }
    if let Some(p) = &pty {
        rules.devices.push(p.slave_path.clone());
    }
    // listen(2) only with [network] bind rules (bind itself is decided by
    // the eBPF bind hooks).
    let mut syscalls = policy.syscalls.clone();
    if policy.network.bind.is_empty()
        && let Ok(listen) = crate::policy::SyscallName::parse("listen")
    {
        syscalls.deny.push(listen);
    }
    let filter = seccomp::build(&syscalls)?;

    phase.mark("seccomp");
    // Mounts: the workspace idmapped to the caller, protected paths, passwd.
    let workspace_c = mounts::cstring(&workspace)?;
    let tree =
        mounts::idmapped_workspace(&workspace, (ident.uid, ident.gid), (caller_uid, caller_gid))?;
    let writable_roots: Vec<PathBuf> = policy
        .filesystem
        .read_write
        .iter()
        .filter(|p| p.base() == PathBase::Workspace || p.base() == PathBase::Root)
        .map(|p| p.resolve(&placeholders))
        .filter(|p| p.is_dir())
        .collect();
    let binds = mounts::protect_binds(&writable_roots, &policy.filesystem.protect)?;
    // The session's user must resolve (whoami, git, python's pwd): a
    // dynamic one gets a passwd/group with its entry bound over /etc's.
    // Landlock rules follow inodes, so the readable files are these.
    let identity_files = if ident.dynamic {
        let (p, g) = mounts::identity_files(
            &state_dir,
            &ident.name,
            ident.uid,
            ident.gid,
            &placeholders.home,
        )?;
        let files = (mounts::cstring(&p)?, mounts::cstring(&g)?);
        rules.read.extend([p, g]);
        Some(files)
    } else {
        rules
            .read
            .extend([PathBuf::from("/etc/passwd"), PathBuf::from("/etc/group")]);
        None
    };
    let abi = host::landlock_abi().map_err(|e| SessionError::Host(e.to_string()))?;
    let ruleset = sandbox::landlock::prepare(&rules, abi, degraded)?;
    for missing in &ruleset.degraded {
        notify(Notice::Degraded(format!(
            "Landlock ABI {abi} lacks {missing}"
        )));
    }
    for path in &ruleset.skipped {
        notify(Notice::Skipped(path));
    }
    let mut rlimits = vec![(libc::RLIMIT_CORE, 0u64)];
    if let Some(n) = policy.limits.open_files {
        rlimits.push((libc::RLIMIT_NOFILE, n));
    }

    phase.mark("landlock+mounts");
    // 7. state file and watchdog
    let (supervisor_pid, supervisor_start) = (
        std::process::id(),
        state::process_start_time(std::process::id()).unwrap_or(0),
    );
    let mut st = state::SessionState {
        id: id.clone(),
        agent: policy.agent.name.to_string(),
        trust: policy.agent.trust.as_str().to_owned(),
        policy_path: opts.policy_path.to_path_buf(),
        policy_digest: policy.digest.as_str().to_owned(),
        trace_id,
        caller_uid,
        uid: ident.uid,
        gid: ident.gid,
        supervisor_pid,
        supervisor_start,
        pid: None,
        cgroup: teardown
            .cgroups
            .as_ref()
            .map(|c| c.v2.path().to_path_buf())
            .unwrap_or_default(),
        v1_cgroups: teardown
            .cgroups
            .as_ref()
            .map(|c| c.v1.iter().map(|v| v.path().to_path_buf()).collect())
            .unwrap_or_default(),
        started_at: now_rfc3339(),
        workspace: workspace.clone(),
        data_dir: data_dir.clone(),
        argv: opts
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        label: opts.label.clone(),
    };
    st.save().map_err(io_err("write", &state_dir))?;
    let log = crate::audit::Log::default_path();
    if teardown.kernel.is_some() {
        enforce::audit_inputs(
            policy,
            &context,
            redact_exact.clone(),
            exec_grants.rules.clone(),
            &net_plan,
        )
        .save(cgroup_id)
        .map_err(io_err("write", Path::new(paths::RUN_DIR)))?;
    }
    let redactor = crate::audit::redact::Redactor::new(redact_exact, &policy.audit.redact);
    log.append(&[crate::audit::Event::now(&context, "session_start")
        .with("caller_uid", caller_uid)
        .with("uid", ident.uid)
        .with(
            "argv",
            st.argv
                .iter()
                .map(|a| redactor.scrub(a))
                .collect::<Vec<_>>(),
        )
        .with(
            "workspace",
            redactor.scrub(&workspace.display().to_string()),
        )
        .with("policy_path", opts.policy_path.display().to_string())
        .with("cgroup_id", cgroup_id)])?;
    let collector = (opts.collect && teardown.kernel.is_some())
        .then(|| crate::audit::collect::Background::start(log.clone()));
    if let (Some(bound), Some((kernel, Some(registered)))) =
        (resolver_sockets.take(), &teardown.kernel)
    {
        let inputs = crate::dns::Inputs {
            rules: net_plan.names.clone(),
            static_egress: net_plan.egress.clone(),
            slot: registered.slot(),
            kernel: kernel.clone(),
            settings: opts.dns.clone(),
            log: log.clone(),
            context: context.clone(),
            redactor: redactor.clone(),
            names: crate::audit::collect::NamesLog::create(cgroup_id)
                .inspect_err(|e| tracing::warn!(error = %e, "connects to answered addresses will be recorded without their names"))
                .ok(),
        };
        teardown.resolver = Some(
            bound
                .serve(inputs)
                .map_err(io_err("start the session's resolver", Path::new("")))?,
        );
    }
    let watchdog = Watchdog::start(&id)?;

    // From here `agentd kill` and `agentd disable` see the session; a
    // disable that came while it was being set up wins.
    if let Some(d) = disabled::get(policy.agent.name.as_str()) {
        watchdog.dismiss();
        if let Some(c) = collector {
            c.stop();
        }
        let _ = log.append(&[crate::audit::Event::now(&context, "session_end")
            .with("reason", "disabled")
            .with("leftovers", 0)]);
        return Err(SessionError::Disabled {
            agent: policy.agent.name.to_string(),
            by_uid: d.by_uid,
            reason: d.reason,
        });
    }

    phase.mark("state+watchdog");
    // 8. the agent
    let cgroup_dir = teardown
        .cgroups
        .as_ref()
        .map(|c| c.v2.path().to_path_buf())
        .unwrap_or_default();
    let open_wr = |p: &PathBuf| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .map(OwnedFd::from)
            .map_err(io_err("open", p))
    };
    let cgroup_v2_procs = open_wr(&procs_files[0])?;
    let cgroup_procs = procs_files[1..]
        .iter()
        .map(open_wr)
        .collect::<Result<Vec<_>, _>>()?;
    let cgroup_dir_fd = fs::File::open(&cgroup_dir)
        .map(OwnedFd::from)
        .map_err(io_err("open", &cgroup_dir))?;
    let (report_read, report_write) = sandbox::sys::pipe().map_err(|e| SessionError::Io {
        op: "pipe",
        path: PathBuf::new(),
        source: std::io::Error::from_raw_os_error(e),
    })?;
    let stdio = match &pty {
        Some(p) => {
            let dup = || p.slave.try_clone().map_err(io_err("dup", &p.slave_path));
            Some([dup()?, dup()?, dup()?])
        }
        None => None,
    };
    let mut argv = opts.argv.clone();
    argv[0] = program_arg.clone();
    let plan = ChildPlan {
        cgroup_dir: cgroup_dir_fd,
        cgroup_v2_procs,
        cgroup_procs,
        stdio,
        exec: sandbox::Exec::new(&program, &argv, &environment)?,
        controlling_tty: pty.is_some(),
        namespaces: libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | if private_netns { libc::CLONE_NEWNET } else { 0 },
        workspace: Some((tree, workspace_c)),
        binds,
        identity_files,
        rlimits,
        uid: ident.uid,
        gid: ident.gid,
        last_cap: sandbox::sys::last_cap(),
        cwd: mounts::cstring(&workspace)?,
        landlock: ruleset.fd,
        seccomp: filter,
        report: report_write,
    };
    // Signals the supervisor handles itself; the child unblocks them.
    let handled = forwarded_signals();
    let _ = handled.thread_block();
    let agent_pid = Arc::new(AtomicI32::new(0));
    spawn_signal_forwarder(
        handled,
        Arc::clone(&agent_pid),
        pty.as_ref().map(|p| p.master.try_clone()),
    );
    let start = Instant::now();
    let pid = match plan.spawn(&report_read) {
        Ok(pid) => pid,
        Err(e) => {
            let err = match e {
                sandbox::SpawnError::Step(Step::Exec, libc::ENOENT) => {
                    SessionError::NotFound(program.display().to_string())
                }
                sandbox::SpawnError::Step(Step::Exec, errno) => SessionError::CannotExecute {
                    program: program.display().to_string(),
                    errno,
                },
                sandbox::SpawnError::Step(step, errno) => SessionError::Setup { step, errno },
                sandbox::SpawnError::Fork(errno) => SessionError::Io {
                    op: "clone3",
                    path: cgroup_dir.clone(),
                    source: std::io::Error::from_raw_os_error(errno),
                },
            };
            watchdog.dismiss();
            if let Some(c) = collector {
                c.stop();
            }
            let _ = log.append(&[crate::audit::Event::now(&context, "session_end")
                .with("reason", "error")
                .with("error", redactor.scrub(&err.to_string()))]);
            return Err(err);
        }
    };
    agent_pid.store(pid, Ordering::SeqCst);
    st.pid = u32::try_from(pid).ok();
    let _ = st.save();
    // A kill that came during setup found an empty cgroup; it left its
    // mark, so the agent it missed dies now.
    if state::killed(&id).is_some()
        && let Some(c) = &teardown.cgroups
    {
        let _ = c.kill_all(kill::KILL_DEADLINE);
    }
    let (raw, relay) = match &pty {
        Some(p) => {
            let raw = pty::RawMode::enter(std::io::stdin().as_fd()).ok();
            (raw, pty::relay(&p.master).ok())
        }
        None => (None, None),
    };
    drop(pty);
    let (ttl_done, ttl) = spawn_ttl(&id, policy.limits.max_duration.map(|d| d.0), &st);

    phase.mark("spawn");
    let exit = wait(pid).map_err(io_err("wait", Path::new("agent")))?;
    let _ = ttl_done.send(());
    let ttl_fired = ttl.and_then(|t| t.join().ok()).unwrap_or(false);

    phase.mark("agent ran");
    // Teardown: every remaining process dies, then the cgroups and dirs go.
    let leftovers = teardown
        .cgroups
        .as_ref()
        .map_or(Ok(0), |c| c.kill_all(kill::KILL_DEADLINE))
        .unwrap_or(0);
    if let Some(relay) = relay {
        let _ = relay.join();
    }
    drop(raw);
    let reason = match state::killed(&id) {
        Some(r) if r.reason == "ttl" => EndReason::Ttl,
        Some(r) => EndReason::Killed(r),
        None if ttl_fired => EndReason::Ttl,
        None => EndReason::Exited,
    };
    watchdog.dismiss();
    if let Some(c) = collector {
        c.stop();
    }
    let duration = start.elapsed();
    let mut end = crate::audit::Event::now(&context, "session_end")
        .with(
            "duration_ms",
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        )
        .with("leftovers", leftovers)
        .with(
            "reason",
            match &reason {
                EndReason::Exited => "exited",
                EndReason::Killed(r) if r.reason == "disabled" => "disabled",
                EndReason::Killed(_) => "killed",
                EndReason::Ttl => "ttl",
            },
        );
    end = match exit {
        Exit::Code(c) => end.with("status", serde_json::json!({ "code": c })),
        Exit::Signal(s) => end.with("status", serde_json::json!({ "signal": s })),
    };
    if let EndReason::Killed(r) = &reason {
        end = end
            .with("killed_by", r.by_uid)
            .with("kill_reason", r.text.as_deref().map(|t| redactor.scrub(t)));
    }
    log.append(&[end])?;
    drop(teardown);
    drop(ident);
    phase.mark("teardown");
    Ok(Outcome {
        id,
        exit,
        reason,
        duration: start.elapsed(),
        leftovers,
    })
}

/// Setup timings, logged at debug level (`AGENTD_LOG=agentd=debug`).
struct Phases {
    last: Instant,
}

impl Phases {
    fn start() -> Self {
        Self {
            last: Instant::now(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            phase,
            micros = now.duration_since(self.last).as_micros() as u64,
            "session setup"
        );
        self.last = now;
    }
}

/// Waits for the agent's root process.
fn wait(pid: libc::pid_t) -> std::io::Result<Exit> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the agent and SIGWINCH to its
/// pty. A signal before the agent exists is delivered once it does.
fn spawn_signal_forwarder(
    set: SigSet,
    pid: Arc<AtomicI32>,
    master: Option<std::io::Result<OwnedFd>>,
) {
    let master = master.and_then(Result::ok);
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { return };
                if sig == Signal::SIGWINCH {
                    if let Some(m) = &master {
                        pty::forward_window_size(std::io::stdin().as_fd(), m.as_fd());
                    }
                    continue;
                }
                loop {
                    let p = pid.load(Ordering::SeqCst);
                    if p > 0 {
                        sandbox::sys::kill(p, sig as i32);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
}

/// The signals a supervisor passes on to its agent (SIGWINCH: the window
/// size), blocked in every thread but the one that forwards them.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Kills the session when `max_duration` passes. Returns a sender that
/// cancels it and a handle that tells whether it fired.
fn spawn_ttl(
    id: &SessionId,
    ttl: Option<Duration>,
    st: &state::SessionState,
) -> (mpsc::Sender<()>, Option<std::thread::JoinHandle<bool>>) {
    let (tx, rx) = mpsc::channel::<()>();
    let Some(ttl) = ttl else {
        return (tx, None);
    };
    let id = id.clone();
    let cgroups = SessionCgroups::open(st.cgroup.clone(), st.v1_cgroups.clone());
    let handle = std::thread::Builder::new()
        .name("ttl".into())
        .spawn(move || match rx.recv_timeout(ttl) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = state::mark_killed(
                    &id,
                    &KillRecord {
                        reason: "ttl".into(),
                        text: Some(format!("max_duration {ttl:?} reached")),
                        by_uid: 0,
                    },
                );
                let _ = cgroups.kill_all(kill::KILL_DEADLINE);
                true
            }
            _ => false,
        })
        .ok();
    (tx, handle)
}

/// A forked process that runs `agentd kill <id>` if this supervisor dies
/// without dismissing it (SIGKILL, crash), so that no session outlives its
/// supervisor.
struct Watchdog {
    pid: libc::pid_t,
    hold: Option<OwnedFd>,
}

impl Watchdog {
    fn start(id: &SessionId) -> Result<Self, SessionError> {
        let fail = |e: i32| SessionError::Io {
            op: "start the session watchdog",
            path: PathBuf::from("/proc/self/exe"),
            source: std::io::Error::from_raw_os_error(e),
        };
        let (hold_read, hold_write) = sandbox::sys::pipe().map_err(fail)?;
        let args: Vec<CString> = ["agentd", "kill", id.as_str(), "--reason", "supervisor died"]
            .iter()
            .filter_map(|a| CString::new(*a).ok())
            .collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = [std::ptr::null()];
        let pid = sandbox::sys::fork_watchdog(hold_read.as_raw_fd(), &argv, &envp).map_err(fail)?;
        drop(hold_read);
        Ok(Self {
            pid,
            hold: Some(hold_write),
        })
    }

    /// The session ended normally: the watchdog exits without killing.
    fn dismiss(mut self) {
        if let Some(hold) = self.hold.take() {
            let _ = sandbox::sys::write_all(hold.as_raw_fd(), b"1");
        }
        sandbox::sys::reap(self.pid);
    }
}

/// Every live session (for `agentd ps`), after sweeping orphans.
pub fn list() -> Vec<state::SessionState> {
    kill::sweep_orphans();
    state::list().into_iter().filter_map(Result::ok).collect()
}

/// What `agentd ps` shows of a session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Session id.
    pub id: String,
    /// Agent name.
    pub agent: String,
    /// `--name`.
    pub name: Option<String>,
    /// Trust tier.
    pub trust: String,
    /// Who started it.
    pub caller_uid: u32,
    /// Session UID.
    pub uid: u32,
    /// Root process.
    pub pid: Option<u32>,
    /// starting, running or killing.
    pub state: String,
    /// RFC 3339.
    pub started_at: String,
    /// sha256 of the policy.
    pub policy_digest: String,
    /// Workspace.
    pub workspace: String,
    /// Program and arguments.
    pub command: Vec<String>,
}

impl From<state::SessionState> for Summary {
    fn from(s: state::SessionState) -> Self {
        Self {
            state: if state::killed(&s.id).is_some() {
                "killing"
            } else if s.pid.is_some() {
                "running"
            } else {
                "starting"
            }
            .into(),
            id: s.id.to_string(),
            agent: s.agent,
            name: s.label,
            trust: s.trust,
            caller_uid: s.caller_uid,
            uid: s.uid,
            pid: s.pid,
            started_at: s.started_at,
            policy_digest: s.policy_digest,
            workspace: s.workspace.display().to_string(),
            command: s.argv,
        }
    }
}
