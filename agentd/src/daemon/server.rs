//! `agentd daemon`: serves the socket. Each connection gets a thread; each
//! `run` gets its own supervisor process (see [`super::supervise`]), so a
//! daemon crash or restart neither frees nor stops a session.
use std::{
    io,
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::{
            fs::{MetadataExt as _, PermissionsExt as _},
            net::{UnixListener, UnixStream},
            process::CommandExt as _,
        },
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::{SigSet, Signal};

use super::{
    admission::{Admission, REQUEST_DEADLINE, Refused},
    auth::{Peer, Role, gid_of},
    config::{Config, OnStop},
    metrics::Metrics,
    proto::{self, ProtoError, Request, Response, RunRequest},
    supervise::{ASSIGNMENT_FD, Assignment, CLIENT_FD},
};
use crate::{
    audit::{self, Context, Event},
    cgroup, ebpf,
    error::{AtPath as _, PathError},
    paths,
    session::{self, KillRecord, SessionId, disabled, kill, state},
};

/// The socket every client looks for.
pub use crate::paths::SOCKET;

/// Exit status for a request the caller is not allowed to make
/// (sysexits' EX_NOPERM).
pub const EXIT_DENIED: u8 = 77;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Not root.
    #[error("the daemon needs root (it loads eBPF programs and creates users and cgroups)")]
    NotRoot,
    /// Another daemon answers on the socket.
    #[error("another agentd daemon already serves {0}")]
    Running(PathBuf),
    /// The host cannot enforce sessions.
    #[error("cannot load the eBPF programs: {0}")]
    Ebpf(#[from] ebpf::EbpfError),
    /// cgroups.
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    /// The socket or a directory.
    #[error(transparent)]
    Io(#[from] PathError),
}

impl DaemonError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NotRoot => "start it as root (systemctl start agentd)".into(),
            Self::Running(_) => "stop the other daemon first (systemctl stop agentd)".into(),
            Self::Ebpf(e) => return e.hint(),
            Self::Cgroup(_) => "run `agentd doctor` to check the cgroup layout".into(),
            Self::Io(_) => return None,
        })
    }
}

/// What every connection thread shares.
struct Shared {
    config: Config,
    metrics: Metrics,
    admission: Arc<Admission>,
    /// Supervisors started and not yet exited.
    supervisors: AtomicUsize,
}

/// Runs the daemon until SIGTERM or SIGINT. `ready` is called once the
/// socket accepts connections (sd_notify).
pub fn serve(config: Config, socket: &Path) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    // Before any thread: these signals are only ever taken by sigwait.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(s);
    }
    let _ = stop.thread_block();
    let mut config = config;
    if config.dns.upstream.is_empty() {
        // As the host resolves now; a later change needs a restart.
        config.dns.upstream = crate::dns::Settings::from_host().upstream;
    }
    audit::configure(audit::Settings {
        path: config.audit_log.clone(),
        rotate_size: config.rotate_size,
        keep: config.keep,
    });
    paths::create_run_dir().at("mkdir", Path::new(paths::RUN_DIR))?;

    // Enforcement first: the programs are loaded and pinned before any
    // request is taken, and sessions left by an earlier daemon keep theirs.
    let mut layout = cgroup::Layout::discover()?;
    if let Some(delegated) = cgroup::delegate(&layout)? {
        layout = delegated;
    }
    let parent = layout.parent.clone();
    std::fs::create_dir_all(&parent).at("mkdir", &parent)?;
    match ebpf::Kernel::attach(&parent, None) {
        Ok(_) => {}
        Err(ebpf::EbpfError::VersionInUse(n)) => tracing::warn!(
            sessions = n,
            "programs of another agentd build stay loaded while its sessions run; new sessions are refused until they end"
        ),
        Err(e) => return Err(e.into()),
    }
    let orphans = kill::sweep_orphans();
    let adopted = state::list().into_iter().filter_map(Result::ok).count();
    tracing::info!(
        adopted,
        orphans_killed = orphans.len(),
        "sessions found at start"
    );
    let collector = audit::collect::Background::start(audit::Log::default_path());

    let listener = bind(socket, &config)?;
    let shared = Arc::new(Shared {
        config,
        metrics: Metrics::default(),
        admission: Arc::default(),
        supervisors: AtomicUsize::new(0),
    });
    if let Some(listen) = shared.config.metrics_listen.clone() {
        super::metrics::serve(listen, Arc::clone(&shared).metrics_source());
    }
    spawn_stopper(stop, Arc::clone(&shared), socket.to_path_buf(), collector);
    spawn_refusal_flusher(Arc::clone(&shared));
    super::notify_ready(&format!("serving {}", socket.display()));
    tracing::info!(socket = %socket.display(), "ready");

    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // Who it is, before a byte is read (see `super::admission`).
        let Ok(peer) = Peer::of(&conn) else { continue };
        let role = peer.role(&shared.config);
        // Replies here must not wait on a caller that does not read.
        let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
        if role == Role::None {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&conn, &peer, "any", &shared, Role::Run);
            continue;
        }
        let Some(ticket) = shared.admission.admit(peer.uid, role >= Role::Admin) else {
            reply_error(
                &conn,
                "the daemon is busy (too many connections of yours, or of all callers)".into(),
                Some("try again; close connections you do not use".into()),
                75,
            );
            continue;
        };
        let _ = conn.set_write_timeout(None);
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                serve_connection(&conn, &peer, role, &shared);
                drop(ticket);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a connection thread");
        }
    }
    Ok(())
}

impl Shared {
    fn metrics_source(self: Arc<Self>) -> impl Fn() -> String + Send + Sync + 'static {
        move || self.metrics.render()
    }
}

/// Binds the socket (0666: every request is authorized by the caller's
/// credentials, and refusals are audited; the kernel would otherwise refuse
/// unseen).
fn bind(socket: &Path, config: &Config) -> Result<UnixListener, DaemonError> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::Running(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).at("remove stale", socket)?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).at("mkdir", dir)?;
    }
    let listener = UnixListener::bind(socket).at("bind", socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).at("chmod", socket)?;
    match gid_of(&config.run_group) {
        Some(gid) => {
            let _ = nix::unistd::chown(socket, Some(0.into()), Some(gid.into()));
        }
        None => tracing::warn!(
            group = config.run_group,
            "the run group does not exist: only root can use the daemon"
        ),
    }
    Ok(listener)
}

/// Waits for SIGTERM/SIGINT: kills the sessions daemons started (unless
/// `on_stop = "leave"`), drains the event ring, removes the socket and
/// exits.
fn spawn_stopper(
    set: SigSet,
    shared: Arc<Shared>,
    socket: PathBuf,
    collector: audit::collect::Background,
) {
    let _ = std::thread::Builder::new()
        .name("stop".into())
        .spawn(move || {
            loop {
                match set.wait() {
                    Ok(Signal::SIGHUP) => {
                        tracing::warn!("SIGHUP: the configuration is read at start; restart the daemon to change it");
                    }
                    Ok(sig) => {
                        tracing::info!(signal = %sig, "stopping");
                        break;
                    }
                    Err(_) => return,
                }
            }
            let _ = std::fs::remove_file(&socket);
            if shared.config.on_stop == OnStop::Kill {
                let record = KillRecord {
                    reason: "killed".into(),
                    text: Some("the daemon stopped".into()),
                    by_uid: 0,
                };
                // Until every supervisor this daemon started is gone: a
                // session still being set up becomes killable once its
                // state is written, moments later.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    // Only its own: sessions `agentd run` supervises in
                    // embedded mode are not the daemon's to end.
                    for s in session::list()
                        .into_iter()
                        .filter(|s| s.mode == session::Mode::Daemon)
                    {
                        let _ = kill::kill_session(&s.id, &record);
                    }
                    if shared.supervisors.load(Ordering::SeqCst) == 0 || Instant::now() > deadline
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            collector.stop();
            std::process::exit(0);
        });
}

fn reply_error(conn: &UnixStream, message: String, hint: Option<String>, code: u8) {
    let _ = proto::send(
        conn,
        &Response::Error {
            message,
            hint,
            code,
        },
        &[],
    );
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Run(_) => "run",
        Request::Ps {} => "ps",
        Request::Kill { .. } => "kill",
        Request::Disable { .. } => "disable",
        Request::Enable { .. } => "enable",
        Request::Logs { .. } => "logs",
        Request::Metrics {} => "metrics",
        Request::Resize {} => "resize",
        Request::Signal { .. } => "signal",
    }
}

fn needed_role(r: &Request) -> Role {
    match r {
        Request::Disable { .. } | Request::Enable { .. } => Role::Admin,
        _ => Role::Run,
    }
}

fn serve_connection(conn: &UnixStream, peer: &Peer, role: Role, shared: &Shared) {
    // A caller gets a while to say what it wants, whole (a byte now and
    // then does not keep the connection); a run's connection then belongs
    // to its supervisor.
    loop {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let (req, fds) = match proto::recv_by::<Request>(conn, deadline) {
            Ok(r) => r,
            Err(e @ (ProtoError::Malformed(_) | ProtoError::Version(_))) => {
                shared.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                reply_error(
                    conn,
                    e.to_string(),
                    Some("client and daemon versions may differ".into()),
                    2,
                );
                continue;
            }
            Err(e @ ProtoError::TooLarge(_)) => {
                shared.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                reply_error(conn, e.to_string(), None, 2);
                return;
            }
            Err(_) => return,
        };
        let needed = needed_role(&req);
        if role < needed {
            refuse(conn, peer, request_name(&req), shared, needed);
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match req {
            Request::Run(run) => {
                handle_run(conn, peer, role, run, fds, shared);
                return;
            }
            Request::Ps {} => {
                let sessions = visible(peer, role)
                    .into_iter()
                    .map(session::Summary::from)
                    .collect();
                let _ = proto::send(conn, &Response::Sessions { sessions }, &[]);
            }
            Request::Kill {
                session,
                agent,
                reason,
            } => handle_kill(conn, peer, role, session, agent, reason, shared),
            Request::Disable { agent, reason } => {
                handle_disable(conn, peer, &agent, reason, shared);
            }
            Request::Enable { agent } => handle_enable(conn, peer, &agent),
            Request::Logs { session, follow } => {
                let _ = conn.set_read_timeout(None);
                stream_logs(conn, peer, role, session.as_deref(), follow, &shared.config);
                return;
            }
            Request::Metrics {} => {
                let _ = proto::send(
                    conn,
                    &Response::Metrics {
                        text: shared.metrics.render(),
                    },
                    &[],
                );
            }
            Request::Resize {} | Request::Signal { .. } => reply_error(
                conn,
                "resize and signal are for a running session's supervisor".into(),
                None,
                2,
            ),
        }
    }
}

/// Refuses a request (`request`: its name, or `any` for a caller refused
/// before it said anything) that the caller's groups do not allow, and
/// records it: at most one record per uid per interval, with the count.
fn refuse(conn: &UnixStream, peer: &Peer, request: &'static str, shared: &Shared, needed: Role) {
    let config = &shared.config;
    let group = if needed == Role::Admin {
        &config.admin_group
    } else {
        &config.run_group
    };
    let why = format!("uid {} is not in group {group}", peer.uid);
    if let Some(refused) = shared.admission.refusal(peer.uid, request, Instant::now()) {
        record_refused(&refused, Some(peer.pid), &why);
    }
    reply_error(
        conn,
        format!("{request} refused: {why}"),
        Some(format!("ask an admin to add you to group {group}")),
        EXIT_DENIED,
    );
}

/// The `deny` record for `refused` (one or more refusals of one uid).
fn record_refused(refused: &Refused, pid: Option<i32>, why: &str) {
    let mut ev = Event::now(&Context::default(), "deny")
        .with("what", "request")
        .with(
            "request",
            refused.requests.first().copied().unwrap_or("any"),
        )
        .with("requests", refused.requests.clone())
        .with("caller_uid", refused.uid)
        .with("count", refused.count);
    if let Some(pid) = pid {
        ev = ev.with("caller_pid", pid);
    }
    let ev = ev
        .with("rule", "daemon.authorization")
        .with("reason", why.to_owned());
    let _ = audit::Log::default_path().append(&[ev]);
}

/// Records, every few seconds, the refusals counted but not recorded
/// whose interval has passed (a caller that stopped trying).
fn spawn_refusal_flusher(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("refusals".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                for refused in shared.admission.due(Instant::now()) {
                    record_refused(
                        &refused,
                        None,
                        &format!(
                            "uid {} was refused {} more times",
                            refused.uid, refused.count
                        ),
                    );
                }
            }
        });
}

/// Sessions the caller may see: all for admins, its own otherwise.
fn visible(peer: &Peer, role: Role) -> Vec<state::SessionState> {
    session::list()
        .into_iter()
        .filter(|s| role >= Role::Admin || s.caller_uid == peer.uid)
        .collect()
}

/// Checks a non-root caller's run request against the config; returns the
/// policy text to use.
/// The policy a run uses, and where its text came from.
struct Vetted {
    text: String,
    /// The file in the policy directory the daemon read it from (its real
    /// path); `None`: the client's text.
    from_file: Option<PathBuf>,
}

/// Checks a run request against the caller's role and the daemon's
/// configuration; the policy to use.
fn vet_run(peer: &Peer, role: Role, run: &RunRequest, config: &Config) -> Result<Vetted, String> {
    if run.argv.is_empty() {
        return Err("no program to run".into());
    }
    if role != Role::Root {
        workspace_is_callers(peer, run.workspace.as_ref().unwrap_or(&run.cwd))?;
    }
    // A policy the daemon reads itself: a file in the policy directory.
    // A claimed path there that is no such file is refused: the trail
    // would otherwise name a vetted policy for text the client made up.
    let dir = std::fs::canonicalize(&config.policy_dir).ok();
    let in_dir = std::fs::canonicalize(&run.policy_path)
        .ok()
        .filter(|p| dir.as_ref().is_some_and(|d| p.starts_with(d)));
    let claims_dir = run.policy_path.starts_with(&config.policy_dir)
        || dir.as_ref().is_some_and(|d| run.policy_path.starts_with(d));
    let trusted = in_dir.and_then(|p| Some((std::fs::read_to_string(&p).ok()?, p)));
    if claims_dir && trusted.is_none() {
        return Err(format!(
            "{} is not a policy file the daemon can read",
            run.policy_path.display()
        ));
    }
    // Root may run its own text under that name; it is then the client's.
    if let Some((text, path)) = trusted
        && (role != Role::Root || text == run.policy)
    {
        return Ok(Vetted {
            text,
            from_file: Some(path),
        });
    }
    if role == Role::Root {
        return Ok(Vetted {
            text: run.policy.clone(),
            from_file: None,
        });
    }
    // Only policies in the policy directory may name a user or receive
    // secrets.
    if config.policies_from_dir_only {
        return Err(format!(
            "only policies from {} may be used",
            config.policy_dir.display()
        ));
    }
    let today = jiff::Zoned::now().date();
    if let Some(p) = crate::policy::check(run.policy.as_bytes(), today).policy {
        if !p.secrets.is_empty() {
            return Err(format!(
                "a policy outside {} cannot receive secrets",
                config.policy_dir.display()
            ));
        }
        if matches!(p.identity, crate::policy::UserSpec::Named(_)) {
            return Err(format!(
                "a policy outside {} cannot name a user",
                config.policy_dir.display()
            ));
        }
    }
    Ok(Vetted {
        text: run.policy.clone(),
        from_file: None,
    })
}

/// The workspace must be a directory the caller owns, looked up with the
/// caller's own permissions: what only root can see answers like what does
/// not exist, so a caller learns nothing of root's files.
fn workspace_is_callers(peer: &Peer, workspace: &Path) -> Result<(), String> {
    let meta = crate::sandbox::sys::with_fs_ids((peer.uid, peer.gid), || {
        std::fs::metadata(workspace).ok()
    })
    .ok()
    .flatten();
    match meta {
        Some(m) if m.uid() == peer.uid && m.is_dir() => Ok(()),
        Some(m) if m.is_dir() => Err(format!(
            "workspace {} is not yours (uid {})",
            workspace.display(),
            peer.uid
        )),
        _ => Err(format!(
            "workspace {} is not a directory you can reach",
            workspace.display()
        )),
    }
}

fn handle_run(
    conn: &UnixStream,
    peer: &Peer,
    role: Role,
    mut run: RunRequest,
    fds: Vec<OwnedFd>,
    shared: &Shared,
) {
    if fds.len() != 3 {
        return reply_error(
            conn,
            format!(
                "run needs the caller's stdin, stdout and stderr ({} received)",
                fds.len()
            ),
            None,
            2,
        );
    }
    let policy_from_client = match vet_run(peer, role, &run, &shared.config) {
        Ok(Vetted { text, from_file }) => {
            run.policy = text;
            // The trail names the file read, not the client's spelling.
            if let Some(path) = &from_file {
                run.policy_path.clone_from(path);
            }
            from_file.is_none()
        }
        Err(why) => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return reply_error(
                conn,
                format!("run refused: {why}"),
                Some(format!(
                    "use a policy from {} and a workspace you own",
                    shared.config.policy_dir.display()
                )),
                EXIT_DENIED,
            );
        }
    };
    let c = &shared.config;
    let assignment = Assignment {
        run,
        caller_uid: peer.uid,
        caller_gid: peer.gid,
        uid_range: (*c.uid_range.start(), *c.uid_range.end()),
        audit: (c.audit_log.clone(), c.rotate_size, c.keep),
        dns: c.dns.clone(),
        policy_from_client,
        caller_limits: (role != Role::Root).then(|| c.caller_limits.clone()),
    };
    let _ = conn.set_read_timeout(None);
    match spawn_supervisor(conn, fds, &assignment) {
        Ok(mut child) => {
            shared.supervisors.fetch_add(1, Ordering::SeqCst);
            shared
                .metrics
                .sessions_started
                .fetch_add(1, Ordering::Relaxed);
            let _ = child.wait();
            shared.supervisors.fetch_sub(1, Ordering::SeqCst);
        }
        Err(e) => reply_error(conn, format!("cannot start a supervisor: {e}"), None, 125),
    }
}

/// Starts `agentd __supervise` with the caller's stdio, connection and
/// assignment in place.
fn spawn_supervisor(
    conn: &UnixStream,
    mut fds: Vec<OwnedFd>,
    assignment: &Assignment,
) -> io::Result<std::process::Child> {
    let (assign_read, mut assign_write) = io::pipe()?;
    let stderr = fds.pop().map(Stdio::from);
    let stdout = fds.pop().map(Stdio::from);
    let stdin = fds.pop().map(Stdio::from);
    let client: RawFd = conn.as_raw_fd();
    let assign: RawFd = assign_read.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("__supervise")
        .env_clear()
        .stdin(stdin.unwrap_or_else(Stdio::null))
        .stdout(stdout.unwrap_or_else(Stdio::null))
        .stderr(stderr.unwrap_or_else(Stdio::null))
        .process_group(0);
    if let Some(log) = std::env::var_os("AGENTD_LOG") {
        cmd.env("AGENTD_LOG", log);
    }
    place_fds(&mut cmd, [(client, CLIENT_FD), (assign, ASSIGNMENT_FD)]);
    let child = cmd.spawn()?;
    drop(assign_read);
    use std::io::Write as _;
    let bytes = serde_json::to_vec(assignment).map_err(io::Error::other)?;
    assign_write.write_all(&bytes)?;
    Ok(child)
}

#[expect(
    unsafe_code,
    reason = "dup2 between fork and exec, the one way to place descriptors at fixed numbers"
)]
fn place_fds(cmd: &mut Command, moves: [(RawFd, RawFd); 2]) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2 and fcntl, which are async-signal-safe; it allocates
    // nothing. A source already at its target only loses close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            // Sources might sit on each other's targets: move them out of
            // the way first.
            let mut tmp = [0; 2];
            for (i, (from, _)) in moves.iter().enumerate() {
                let t = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 10);
                if t < 0 {
                    return Err(io::Error::last_os_error());
                }
                tmp[i] = t;
            }
            for (i, (_, to)) in moves.iter().enumerate() {
                if libc::dup2(tmp[i], *to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn handle_kill(
    conn: &UnixStream,
    peer: &Peer,
    role: Role,
    session: Option<String>,
    agent: Option<String>,
    reason: Option<String>,
    shared: &Shared,
) {
    let mine = visible(peer, role);
    let targets: Vec<SessionId> = match (&session, &agent) {
        (Some(s), _) => match s.parse::<SessionId>() {
            Ok(id) if mine.iter().any(|m| m.id == id) => vec![id],
            Ok(id) => {
                return reply_error(
                    conn,
                    format!("no live session {id} of yours"),
                    Some("`agentd ps` lists the sessions you can kill".into()),
                    1,
                );
            }
            Err(e) => return reply_error(conn, e.to_string(), None, 1),
        },
        (None, Some(a)) => mine
            .iter()
            .filter(|s| &s.agent == a)
            .map(|s| s.id.clone())
            .collect(),
        (None, None) => return reply_error(conn, "name a session or an agent".into(), None, 2),
    };
    if targets.is_empty() {
        return reply_error(
            conn,
            format!("no live session of agent {}", agent.unwrap_or_default()),
            Some("`agentd ps` lists live sessions".into()),
            1,
        );
    }
    let record = KillRecord {
        reason: "killed".into(),
        text: reason,
        by_uid: peer.uid,
    };
    kill_all(conn, &targets, &record, shared);
    let _ = proto::send(conn, &Response::Done { text: None }, &[]);
}

fn kill_all(conn: &UnixStream, targets: &[SessionId], record: &KillRecord, shared: &Shared) {
    for id in targets {
        let start = Instant::now();
        match kill::kill_session(id, record) {
            Ok(r) => {
                shared.metrics.kill(start.elapsed());
                send_killed(conn, id, &r);
            }
            Err(e) => reply_error(conn, e.to_string(), e.hint(), 1),
        }
    }
}

fn send_killed(conn: &UnixStream, id: &SessionId, r: &kill::KillReport) {
    let _ = proto::send(
        conn,
        &Response::Killed {
            session: id.to_string(),
            processes: r.processes,
            elapsed_us: u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
            unrecorded: r.unrecorded.clone(),
        },
        &[],
    );
}

fn handle_disable(
    conn: &UnixStream,
    peer: &Peer,
    agent: &str,
    reason: Option<String>,
    shared: &Shared,
) {
    if let Err(e) = crate::policy::AgentName::parse(agent) {
        return reply_error(conn, e.message, e.hint, 2);
    }
    let start = Instant::now();
    match disabled::disable(agent, peer.uid, reason) {
        Ok(killed) => {
            for (id, result) in &killed {
                match result {
                    Ok(r) => {
                        shared.metrics.kill(start.elapsed());
                        send_killed(conn, id, r);
                    }
                    Err(e) => reply_error(conn, e.to_string(), e.hint(), 1),
                }
            }
            let _ = proto::send(
                conn,
                &Response::Done {
                    text: Some(format!(
                        "agent {agent} disabled ({} sessions killed)",
                        killed.len()
                    )),
                },
                &[],
            );
        }
        Err(e) => reply_error(conn, format!("cannot record the disable: {e}"), None, 1),
    }
}

fn handle_enable(conn: &UnixStream, peer: &Peer, agent: &str) {
    if let Err(e) = crate::policy::AgentName::parse(agent) {
        return reply_error(conn, e.message, e.hint, 2);
    }
    match disabled::enable(agent, peer.uid) {
        Ok(was) => {
            let _ = proto::send(
                conn,
                &Response::Done {
                    text: Some(if was {
                        format!("agent {agent} enabled")
                    } else {
                        format!("agent {agent} was not disabled")
                    }),
                },
                &[],
            );
        }
        Err(e) => reply_error(conn, format!("cannot enable {agent}: {e}"), None, 1),
    }
}

/// Streams records: every record for admins; for others, the records of
/// sessions they started (as their `session_start` says).
fn stream_logs(
    conn: &UnixStream,
    peer: &Peer,
    role: Role,
    session: Option<&str>,
    follow: bool,
    config: &Config,
) {
    let mut records = match audit::read::Records::open(&config.audit_log, follow) {
        Ok(r) => r,
        Err(e) => {
            return reply_error(
                conn,
                format!("cannot read {}: {e}", config.audit_log.display()),
                None,
                1,
            );
        }
    };
    let mut mine = std::collections::HashSet::new();
    while let Some(Ok((_, record))) = records.next_record() {
        let sid = record.get("session").and_then(|v| v.as_str()).unwrap_or("");
        if role < Role::Admin {
            if record.get("kind").and_then(|v| v.as_str()) == Some("session_start")
                && record.get("caller_uid").and_then(serde_json::Value::as_u64)
                    == Some(u64::from(peer.uid))
            {
                mine.insert(sid.to_owned());
            }
            if !mine.contains(sid) {
                continue;
            }
        }
        if session.is_some_and(|s| s != sid) {
            continue;
        }
        if proto::send(conn, &Response::Record { record }, &[]).is_err() {
            return;
        }
    }
    let _ = proto::send(conn, &Response::Done { text: None }, &[]);
}
