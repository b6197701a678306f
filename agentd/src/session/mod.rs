//! Sessions in embedded mode: `agentd run` as root supervises one confined
//! agent in-process. Setup happens in a fixed order (see [`run`]); every
//! resource created is recorded in the session's state directory so that
//! `agentd kill`, `agentd ps` and the watchdog can find it.
mod agent;
pub mod disabled;
mod enforce;
pub mod env;
mod gate;
mod guards;
pub mod id;
pub mod kill;
pub mod plan;
mod stages;
pub mod state;

use std::{
    ffi::OsString,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use self::guards::{Stages, Trail};
pub use self::{
    agent::forwarded_signals,
    id::SessionId,
    kill::KillReport,
    plan::SessionPlan,
    state::{KillRecord, Mode},
};
use crate::{
    audit::redact::Redactor,
    cgroup::{self, SessionCgroups},
    error::{AtPath as _, PathError},
    identity,
    policy::Policy,
    pty,
    sandbox::{self, SandboxError, Step},
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
    #[error("this host cannot enforce the session: {feature}: {detail}")]
    Host {
        /// The feature (as `agentd doctor` names it).
        feature: &'static str,
        /// What the probe found.
        detail: String,
    },
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
    #[error(transparent)]
    Io(#[from] PathError),
    /// No such session.
    #[error("no session {0}")]
    UnknownSession(SessionId),
    /// The session's state file exists but cannot be read.
    #[error("session {id}: its state cannot be read: {source}")]
    StateUnreadable {
        /// The session.
        id: SessionId,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Killing failed.
    #[error("cannot kill session {0}: {1}")]
    Kill(SessionId, #[source] cgroup::CgroupError),
    /// A stage failed on purpose (`fault-injection` builds only).
    #[error("stage {0} failed (AGENTD_FAIL_STAGE)")]
    Injected(&'static str),
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
            Self::UnknownSession(_) | Self::StateUnreadable { .. } | Self::Kill(..) => 1,
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
            Self::Host { .. } => "run `agentd doctor` to see what this host lacks".into(),
            Self::Identity(_) => "free UIDs in the dynamic range or set [identity] user".into(),
            Self::Cgroup(_) => "run `agentd doctor` to check the cgroup layout".into(),
            Self::Sandbox(e) => return e.hint(),
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
            Self::Io(_) | Self::Injected(_) => return None,
            Self::UnknownSession(_) => "`agentd ps` lists live sessions".into(),
            Self::StateUnreadable { id, .. } => format!(
                "inspect {} (root only); `agentd ps` lists live sessions",
                state::dir(id).display()
            ),
            Self::Kill(..) => "run `agentd doctor` to check the cgroup layout; the processes may still run".into(),
            Self::Ebpf(e) => return e.hint(),
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
    /// The text came from a client of the daemon, not from `policy_path`
    /// as the daemon read it (the path is only what the client claimed).
    pub policy_from_client: bool,
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
    /// Who supervises: embedded mode drains kernel events into the trail
    /// itself; under the daemon, the daemon collects (and, stopping with
    /// `on_stop = "kill"`, kills only the sessions it started).
    pub mode: Mode,
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
    /// The `session_end` record of a session that ran.
    fn end_record(&self, trail: &Trail<'_>) -> crate::audit::Event {
        let mut end = trail
            .end_record()
            .with(
                "duration_ms",
                u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            )
            .with("leftovers", self.leftovers)
            .with(
                "reason",
                match &self.reason {
                    EndReason::Exited => "exited",
                    EndReason::Killed(r) if r.reason == "disabled" => "disabled",
                    EndReason::Killed(_) => "killed",
                    EndReason::Ttl => "ttl",
                },
            );
        end = match self.exit {
            Exit::Code(c) => end.with("status", serde_json::json!({ "code": c })),
            Exit::Signal(s) => end.with("status", serde_json::json!({ "signal": s })),
        };
        if let EndReason::Killed(r) = &self.reason {
            end = end.with("killed_by", r.by_uid).with(
                "kill_reason",
                r.text.as_deref().map(|t| trail.redactor.scrub(t)),
            );
        }
        end
    }

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

/// RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Runs one session to its end. It is a list of stages, each named (the
/// trail's `session_end` names the one that failed, and
/// `AGENTD_LOG=agentd=debug` times them):
///
/// 1. preflight: root, orphans swept (no unsupervised session survives
///    another agentd run), kernel features, agent enabled, workspace;
/// 2. plan: the policy compiled for this session before anything is
///    acquired ([`plan::SessionPlan`]);
/// 3. state: the state directory, so every later resource is findable by
///    id;
/// 4. identity: a UID/GID leased under a lock, so concurrent runs never
///    share one;
/// 5. data dirs: `{tmp}` and `{home}`, owned by that identity;
/// 6. cgroups: limits applied before any process exists, the session's
///    kernel rules in place before its first packet;
/// 7. environment: secrets, variables, the program;
/// 8. filesystem: the Landlock ruleset, idmapped workspace, protected
///    paths and passwd, built in the parent so the child does no work that
///    could fail half-way unseen;
/// 9. state+watchdog: the state file, `session_start`, the watchdog that
///    kills the session if this supervisor dies;
/// 10. spawn: the agent, created inside its cgroup (see
///     [`sandbox::ChildPlan::spawn`] for the child's own order);
/// 11. wait, 12. teardown: leftovers killed, `session_end`, then every
///     guard in reverse order.
///
/// What a stage acquires is a guard ([`guards`]): an early return releases
/// it, and once `session_start` is written every way out writes
/// `session_end`.
pub fn run(
    opts: RunOptions<'_>,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<Outcome, SessionError> {
    let stages = Stages::start();
    let pre = stages::preflight(&opts, notify)?;
    let id = SessionId::generate();
    let agent = opts.policy.agent.name.as_str();
    let span = tracing::info_span!("session", session = %id, agent);
    let _in_span = span.enter();
    notify(Notice::Started { id: &id, agent });
    stages.begin("plan")?;
    let plan = SessionPlan::compile(opts.policy, stages::placeholders(&pre.workspace, &id))?;
    for rule in &plan.network.unresolved {
        notify(Notice::Unresolved(rule));
    }
    stages.begin("state")?;
    let state_dir = stages::state_dir(&id)?;
    stages.begin("identity")?;
    let ident = identity::acquire(
        &plan.identity,
        &plan.agent.name,
        pre.caller.0,
        opts.uid_range.clone(),
    )?;
    stages.begin("data dirs")?;
    let data_dir = stages::data_dirs(&plan, &id, &ident)?;
    stages.begin("cgroups")?;
    let cgroups = stages::cgroups(&plan, &id, pre.caller.0, state_dir.path(), notify)?;
    stages.begin("environment")?;
    let env = stages::environment(&plan, &opts, &id, &ident)?;
    stages.begin("filesystem")?;
    let fs_view = stages::filesystem(
        &plan,
        opts.tty,
        &ident,
        pre.caller,
        state_dir.path(),
        notify,
    )?;
    stages.begin("state+watchdog")?;
    let st = stages::session_state(
        &plan,
        &opts,
        &id,
        &ident,
        pre.caller.0,
        &env.context.trace_id,
        &cgroups.enforcement.cgroups,
    )?;
    if cgroups.enforcement.kernel.is_some() {
        stages::audit_inputs(&plan, &env, cgroups.cgroup_id)?;
    }
    let redactor = Redactor::new(env.redact_exact.clone(), &plan.redact);
    let start = stages::start_record(&env, &redactor, &st, cgroups.cgroup_id);
    let trail = Trail::start(
        crate::audit::Log::default_path(),
        env.context.clone(),
        redactor,
        &stages,
        start,
    )?;
    let ready = Ready {
        plan: &plan,
        opts: &opts,
        ident: &ident,
        env: &env,
        cgroups,
        trail: &trail,
        stages: &stages,
    };
    match supervise(ready, st, fs_view) {
        Ok((outcome, end)) => {
            trail.end(end)?;
            // The rest of the teardown, in order: data, identity, state.
            drop(data_dir);
            drop(ident);
            drop(state_dir);
            stages.begin("done")?;
            Ok(outcome)
        }
        Err(e) => {
            trail.fail(&e);
            Err(e)
        }
    }
}

/// A session set up and recorded as started, ready for its agent.
struct Ready<'a> {
    plan: &'a SessionPlan,
    opts: &'a RunOptions<'a>,
    ident: &'a identity::Identity,
    env: &'a stages::Environment,
    cgroups: stages::Cgroups,
    trail: &'a Trail<'a>,
    stages: &'a Stages,
}

/// Starts the session's resolver (when its plan has names to answer).
fn start_resolver(
    ready: &Ready<'_>,
    bound: Option<crate::dns::Bound>,
) -> Result<Option<crate::dns::SessionResolver>, SessionError> {
    let (Some(bound), Some((kernel, registered))) = (bound, &ready.cgroups.enforcement.kernel)
    else {
        return Ok(None);
    };
    let cgroup_id = ready.cgroups.cgroup_id;
    let inputs = crate::dns::Inputs {
        rules: ready.plan.network.names.clone(),
        static_egress: ready.plan.network.egress.clone(),
        slot: registered.slot(),
        kernel: kernel.clone(),
        settings: ready.opts.dns.clone(),
        log: ready.trail.log.clone(),
        context: ready.trail.context.clone(),
        redactor: ready.trail.redactor.clone(),
        names: crate::audit::collect::NamesLog::create(cgroup_id)
            .inspect_err(|e| tracing::warn!(error = %e, "connects to answered addresses will be recorded without their names"))
            .ok(),
        uid: ready.ident.uid,
    };
    let resolver = bound.serve(inputs).at(
        "start the session's resolver on",
        Path::new("127.53.0.0/16 port 53"),
    )?;
    Ok(Some(resolver))
}

/// From `session_start` to the agent's end: the collector, resolver and
/// watchdog, the agent itself, and its teardown. Returns the outcome and
/// the `session_end` record.
fn supervise(
    mut ready: Ready<'_>,
    mut st: state::SessionState,
    fs_view: stages::Filesystem,
) -> Result<(Outcome, crate::audit::Event), SessionError> {
    let (plan, id, stages) = (ready.plan, &st.id.clone(), ready.stages);
    let collector = guards::Collector(
        (ready.opts.mode == Mode::Embedded && ready.cgroups.enforcement.kernel.is_some())
            .then(|| crate::audit::collect::Background::start(ready.trail.log.clone())),
    );
    let bound = ready.cgroups.resolver.take();
    let _resolver = start_resolver(&ready, bound)?;
    let watchdog = agent::Watchdog::start(id)?;
    // From here `agentd kill` and `agentd disable` see the session; a
    // disable that came while it was being set up wins.
    stages::check_enabled(&plan.agent.name)?;

    stages.begin("spawn")?;
    let cgroups = &ready.cgroups.enforcement.cgroups;
    let (report_read, report_write) = sandbox::sys::pipe()
        .map_err(std::io::Error::from_raw_os_error)
        .at("pipe", Path::new("report"))?;
    let (child, pty, gate) = stages::child_plan(
        plan,
        ready.opts,
        ready.ident,
        ready.env,
        fs_view,
        &ready.cgroups,
        report_write,
    )?;
    // Signals the supervisor handles itself; the child unblocks them.
    let handled = forwarded_signals();
    let _ = handled.thread_block();
    let agent_pid = Arc::new(AtomicI32::new(0));
    agent::spawn_signal_forwarder(
        handled,
        Arc::clone(&agent_pid),
        pty.as_ref().map(|p| p.master.try_clone()),
    );
    let start = Instant::now();
    // The exec gate binds its decisions in the kernel: without the
    // programs, argument rules and asks cannot be enforced at all.
    let exec_gate =
        match &plan.exec_gate {
            None => None,
            Some((allow, ask)) => {
                let kernel = ready.cgroups.enforcement.kernel.as_ref().ok_or_else(|| {
                    SessionError::Host {
                        feature: crate::host::Feature::Ebpf.name(),
                        detail:
                            "[exec] argument rules and ask entries need agentd's eBPF programs \
                             (the exec gate binds each decision in sched_process_exec)"
                                .to_owned(),
                    }
                })?;
                let tokens = kernel.0.exec_tokens().map_err(|e| SessionError::Host {
                    feature: crate::host::Feature::Ebpf.name(),
                    detail: e.to_string(),
                })?;
                Some(gate::ExecGate {
                    rules: gate::exec::Rules::new(allow, ask, &plan.placeholders),
                    tokens,
                    redactor: ready.trail.redactor.clone(),
                })
            }
        };
    let (ack, gate) = gate.split();
    // The gate serves before the child goes on: its exec may be held.
    let mut gate_error = None;
    let serve = |listener| {
        gate.start(
            listener,
            ready.trail.log.clone(),
            ready.trail.context.clone(),
            exec_gate,
        )
        .map_err(|e| gate_error = Some(e))
        .ok()
    };
    let spawned =
        child
            .spawn(&report_read, Some(ack), serve)
            .map_err(|e| match gate_error.take() {
                Some(io) => SessionError::from(PathError::new(
                    "start the gate for",
                    Path::new("the agent"),
                    io,
                )),
                None => stages::spawn_error(e, &ready.env.program, cgroups.v2.path()),
            })?;
    let pid = spawned.pid;
    agent_pid.store(pid, Ordering::SeqCst);
    // Without its listener the agent's held calls would wait forever: the
    // session ends instead.
    let _gate = spawned
        .gate
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        .inspect_err(|_| {
            let _ = cgroups.kill_all(kill::KILL_DEADLINE);
        })
        .at("start the gate for", Path::new("the agent"))?;
    st.pid = u32::try_from(pid).ok();
    if let Err(e) = st.save() {
        tracing::warn!(error = %e, "cannot record the agent's pid; `agentd ps` shows the session as starting");
    }
    // A kill that came during setup found an empty cgroup; it left its
    // mark, so the agent it missed dies now.
    if state::killed(id).is_some() {
        let _ = cgroups.kill_all(kill::KILL_DEADLINE);
    }
    let (raw, relay) = match &pty {
        Some(p) => {
            let raw = pty::RawMode::enter(std::io::stdin().as_fd()).ok();
            (raw, pty::relay(&p.master).ok())
        }
        None => (None, None),
    };
    drop(pty);
    let ttl_cgroups = SessionCgroups::open(st.cgroup.clone(), st.v1_cgroups.clone());
    let (ttl_done, ttl) = agent::spawn_ttl(id, plan.max_duration, ttl_cgroups);

    stages.begin("wait")?;
    let exit = agent::wait(pid).at("wait for", Path::new("the agent"))?;
    let _ = ttl_done.send(());
    let ttl_fired = ttl.and_then(|t| t.join().ok()).unwrap_or(false);

    stages.begin("teardown")?;
    // Every remaining process dies, then the cgroups and dirs go (guards).
    let leftovers = cgroups.kill_all(kill::KILL_DEADLINE).unwrap_or(0);
    if let Some(relay) = relay {
        let _ = relay.join();
    }
    drop(raw);
    let reason = match state::killed(id) {
        Some(r) if r.reason == "ttl" => EndReason::Ttl,
        Some(r) => EndReason::Killed(r),
        None if ttl_fired => EndReason::Ttl,
        None => EndReason::Exited,
    };
    watchdog.dismiss();
    collector.stop();
    let outcome = Outcome {
        id: id.clone(),
        exit,
        reason,
        duration: start.elapsed(),
        leftovers,
    };
    let mut end = outcome.end_record(ready.trail);
    // Repositories the agent created are its own; the caller is told what
    // in them would run when they use git there.
    let created = ready.plan.repositories.created();
    if !created.is_empty() {
        end = end.with(
            "new_repositories",
            serde_json::to_value(created).unwrap_or_default(),
        );
    }
    Ok((outcome, end))
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
