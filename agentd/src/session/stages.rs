//! The stages of [`super::run`], in order. Each takes the session plan and
//! what earlier stages made, and returns what it made; what must be
//! released is returned as a guard ([`super::guards`]).
use std::{
    ffi::OsString,
    fs,
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use super::{
    Notice, RunOptions, SessionError, SessionId, disabled,
    enforce::{self},
    env,
    guards::{Enforcement, OwnedDir},
    id, kill,
    plan::SessionPlan,
    state,
};
use crate::{
    audit::{Context, redact::Redactor},
    cgroup::{self, SessionCgroups},
    error::{AtPath as _, PathError},
    host,
    identity::Identity,
    paths,
    policy::Placeholders,
    pty,
    sandbox::{self, ChildPlan, Step, mounts},
};

/// What the preflight found out about the caller and the workspace.
#[derive(Debug)]
pub(super) struct Preflight {
    /// The workspace, canonical.
    pub workspace: PathBuf,
    /// The caller's uid and gid.
    pub caller: (u32, u32),
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
    paths::STATE_DIR,
    "/var/log",
];

/// The workspace, canonical. `owner`: a daemon caller other than root,
/// who must own it; the caller runs this with its own file permissions
/// ([`sandbox::sys::with_fs_ids`]), so that nothing only root can see is
/// looked at (or answered about) on its behalf.
fn check_workspace(path: &Path, owner: Option<u32>) -> Result<PathBuf, SessionError> {
    let err = |why: String| SessionError::Workspace {
        path: path.to_path_buf(),
        why,
    };
    let real = fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
    let meta = fs::metadata(&real).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    if let Some(uid) = owner
        && std::os::unix::fs::MetadataExt::uid(&meta) != uid
    {
        return Err(err(format!("not yours (uid {uid})")));
    }
    if real == Path::new("/") || SYSTEM_TREES.iter().any(|t| real.starts_with(t)) {
        return Err(err(format!("{} is a system tree", real.display())));
    }
    Ok(real)
}

/// Root, orphans swept, the kernel features a session needs, the agent not
/// disabled, a usable workspace.
pub(super) fn preflight(
    opts: &RunOptions<'_>,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<Preflight, SessionError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SessionError::NotRoot);
    }
    for orphan in kill::sweep_orphans() {
        notify(Notice::Orphan(&orphan));
    }
    // Only the probes a session needs (doctor runs them all).
    for feature in [host::Feature::Seccomp, host::Feature::Landlock] {
        let check = host::probe(feature);
        if check.status != host::Status::Ok {
            return Err(SessionError::Host {
                feature: feature.name(),
                detail: check.detail,
            });
        }
    }
    let agent = opts.policy.agent.name.as_str();
    check_enabled(agent)?;
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().at("getcwd", Path::new("."))?,
    };
    let path = opts.workspace.as_deref().unwrap_or(&cwd);
    let workspace = match opts.caller {
        Some((uid, gid)) if uid != 0 => {
            sandbox::sys::with_fs_ids((uid, gid), || check_workspace(path, Some(uid))).map_err(
                |errno| SessionError::Workspace {
                    path: path.to_path_buf(),
                    why: std::io::Error::from_raw_os_error(errno).to_string(),
                },
            )??
        }
        _ => check_workspace(path, None)?,
    };
    Ok(Preflight {
        workspace,
        caller: opts.caller.unwrap_or_else(crate::identity::caller),
    })
}

/// Refuses a disabled agent.
pub(super) fn check_enabled(agent: &str) -> Result<(), SessionError> {
    match disabled::get(agent) {
        Some(d) => Err(SessionError::Disabled {
            agent: agent.to_owned(),
            by_uid: d.by_uid,
            reason: d.reason,
        }),
        None => Ok(()),
    }
}

/// The session's data directory, holding `{tmp}` and `{home}`.
fn data_dir(id: &SessionId) -> PathBuf {
    Path::new(paths::SESSION_DATA_DIR).join(id.as_str())
}

/// `{workspace}`, and `{tmp}`, `{home}` in the session's data directory.
pub(super) fn placeholders(workspace: &Path, id: &SessionId) -> Placeholders {
    let data_dir = data_dir(id);
    Placeholders {
        workspace: workspace.to_path_buf(),
        tmp: data_dir.join("tmp"),
        home: data_dir.join("home"),
    }
}

/// The session's state directory, which makes every later resource
/// findable by id.
pub(super) fn state_dir(id: &SessionId) -> Result<OwnedDir, SessionError> {
    let parent = Path::new(paths::SESSIONS_DIR);
    paths::create_private_dir(parent).at("mkdir", parent)?;
    let dir = state::dir(id);
    fs::create_dir(&dir).at("mkdir", &dir)?;
    Ok(OwnedDir::new(dir))
}

/// `{tmp}` and `{home}`, owned by the session's identity.
pub(super) fn data_dirs(
    plan: &SessionPlan,
    id: &SessionId,
    ident: &Identity,
) -> Result<OwnedDir, SessionError> {
    let parent = Path::new(paths::SESSION_DATA_DIR);
    paths::create_dir_mode(parent, 0o711).at("mkdir", parent)?;
    let ph = &plan.placeholders;
    let data_dir = data_dir(id);
    fs::create_dir(&data_dir).at("mkdir", &data_dir)?;
    let owned = OwnedDir::new(data_dir);
    fs::set_permissions(owned.path(), fs::Permissions::from_mode(0o711))
        .at("chmod", owned.path())?;
    for dir in [&ph.tmp, &ph.home] {
        fs::create_dir(dir).at("mkdir", dir)?;
        nix::unistd::chown(dir, Some(ident.uid.into()), Some(ident.gid.into()))
            .map_err(std::io::Error::from)
            .at("chown", dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).at("chmod", dir)?;
    }
    Ok(owned)
}

/// The session's cgroups (limits applied before any process exists) and
/// its egress, bind and socket rules in the kernel maps. Without the
/// programs (and only if the policy allows degraded mode) the session gets
/// no network at all instead (`private_netns`).
pub(super) struct Cgroups {
    pub enforcement: Enforcement,
    pub cgroup_id: u64,
    pub private_netns: bool,
    /// The resolver's sockets, bound before the rules that name them.
    pub resolver: Option<crate::dns::Bound>,
}

pub(super) fn cgroups(
    plan: &SessionPlan,
    id: &SessionId,
    caller: u32,
    state_dir: &Path,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<Cgroups, SessionError> {
    let layout = cgroup::Layout::discover()?;
    let (cgroups, skipped) =
        SessionCgroups::create(&layout, id.as_str(), &plan.limits, plan.degraded)?;
    let mut enforcement = Enforcement {
        cgroups,
        kernel: None,
    };
    for missing in skipped {
        notify(Notice::Degraded(format!("limit not enforced: {missing}")));
    }
    let cgroup_id = enforcement.cgroups.v2.id()?;
    let mut resolver = None;
    let private_netns = match enforce::kernel(&layout.parent, id.as_str()) {
        Ok(kernel) => {
            if !kernel.unix_hooks() {
                if !plan.degraded {
                    return Err(crate::ebpf::EbpfError::NoUnixHooks.into());
                }
                notify(Notice::Degraded(format!(
                    "{}; the session's view hides only the host's socket directories",
                    crate::ebpf::EbpfError::NoUnixHooks
                )));
            }
            // The session's resolver address is in its kernel entry from
            // the start: its first DNS packet already goes there. No name
            // rule: nothing to answer, no resolver; DNS is refused in the
            // kernel instead.
            if plan.wants_resolver() {
                resolver = Some(crate::dns::Bound::bind(cgroup_id).at(
                    "bind the session's resolver on",
                    Path::new("127.53.0.0/16 port 53"),
                )?);
            }
            let registered = enforce::register(
                &kernel,
                cgroup_id,
                plan,
                resolver.as_ref().map(|b| (b.addr(), b.port6())),
                state_dir,
                caller,
            )?;
            enforcement.kernel = Some((kernel, registered));
            false
        }
        Err(e) if plan.degraded => {
            notify(Notice::Degraded(format!(
                "eBPF programs unavailable ({e}): no network and no kernel events for this session"
            )));
            true
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Cgroups {
        enforcement,
        cgroup_id,
        private_netns,
        resolver,
    })
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
fn read_secrets(plan: &SessionPlan) -> Result<Vec<(String, String)>, SessionError> {
    plan.secrets
        .iter()
        .map(|s| {
            let fail = |why: String| SessionError::Secret {
                name: s.name.to_string(),
                path: s.file.clone(),
                why,
            };
            let mut value = read_secret_file(&s.file).map_err(fail)?;
            if value.ends_with('\n') {
                value.pop();
            }
            Ok((s.name.to_string(), value))
        })
        .collect()
}

/// Reads a secret file that only root can have put there: every directory
/// on the way from `/` is root's and not writable by others (or sticky, as
/// /tmp is: then only root may replace root's entries), no component is a
/// symlink, and the file is root's, regular, mode 0600 or stricter. The
/// checks are made on the descriptors that are then read: nothing is
/// looked up twice, so nobody can swap what was checked.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use nix::{
        fcntl::{OFlag, open, openat},
        sys::stat::{Mode, fstat},
    };
    use std::path::Component;
    let dir_ok = |fd: &OwnedFd, shown: &Path| -> Result<(), String> {
        let st = fstat(fd).map_err(|e| format!("{}: {e}", shown.display()))?;
        let sticky = st.st_mode & libc::S_ISVTX != 0;
        if st.st_uid != 0 || (st.st_mode & 0o022 != 0 && !sticky) {
            return Err(format!(
                "directory {} must be root's and writable only by root (uid {}, mode {:04o})",
                shown.display(),
                st.st_uid,
                st.st_mode & 0o7777
            ));
        }
        Ok(())
    };
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .ok()
        .filter(|_| path.is_absolute())
        .ok_or("must be an absolute path without `.` or `..`")?;
    let (file_name, dirs) = names.split_last().ok_or("names no file")?;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open("/", dir_flags, Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let mut shown = PathBuf::from("/");
    dir_ok(&dir, &shown)?;
    for name in dirs {
        shown.push(name);
        dir = openat(&dir, *name, dir_flags, Mode::empty())
            .map_err(|e| format!("{}: {e} (symlinks are not followed)", shown.display()))?;
        dir_ok(&dir, &shown)?;
    }
    // O_NONBLOCK: a FIFO planted there must not hang the session's start.
    let file = openat(
        &dir,
        *file_name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| format!("{e} (symlinks are not followed)"))?;
    let st = fstat(&file).map_err(|e| e.to_string())?;
    if st.st_uid != 0 || st.st_mode & 0o077 != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!(
            "must be a regular file owned by root with mode 0600 (uid {}, mode {:04o})",
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    let mut value = String::new();
    std::io::Read::read_to_string(&mut fs::File::from(file), &mut value)
        .map_err(|e| e.to_string())?;
    Ok(value)
}

/// The agent's environment, the program it names, and what the trail
/// needs to attribute and scrub.
pub(super) struct Environment {
    pub vars: Vec<(String, OsString)>,
    pub program: PathBuf,
    pub context: Context,
    /// Exact values scrubbed from the trail: secrets and whatever the
    /// caller's environment passed in.
    pub redact_exact: Vec<String>,
}

pub(super) fn environment(
    plan: &SessionPlan,
    opts: &RunOptions<'_>,
    id: &SessionId,
    ident: &Identity,
) -> Result<Environment, SessionError> {
    let secrets = read_secrets(plan)?;
    let trace_id = env::hex(&id::random_bytes::<16>());
    let span_id = env::hex(&id::random_bytes::<8>());
    let traceparent = env::traceparent(&trace_id, &span_id);
    let ph = &plan.placeholders;
    let vars = env::build(&env::Inputs {
        policy: &plan.env,
        caller: &opts.caller_env,
        secrets: &secrets,
        session: id.as_str(),
        traceparent: &traceparent,
        home: &ph.home,
        tmp: &ph.tmp,
        user: &ident.name,
    });
    let path_var = vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or_else(|| env::DEFAULT_PATH.into(), |(_, v)| v.clone());
    let redact_exact = secrets
        .iter()
        .map(|(_, v)| v.clone())
        .chain(plan.env.pass.iter().filter_map(|name| {
            vars.iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.to_string_lossy().into_owned())
        }))
        .collect();
    let Some(program_arg) = opts.argv.first() else {
        return Err(SessionError::NotFound(String::new()));
    };
    // With the caller's file access when a daemon client asked: what root
    // alone can see must look absent (else 126 "cannot execute" against 127
    // "not found" tells the caller which root-only files exist).
    let resolve = || resolve_program(program_arg, &path_var, &ph.workspace);
    let program = match opts.caller {
        Some(ids) => sandbox::sys::with_fs_ids(ids, resolve).unwrap_or(None),
        None => resolve(),
    }
    .ok_or_else(|| SessionError::NotFound(program_arg.to_string_lossy().into_owned()))?;
    Ok(Environment {
        vars,
        program,
        context: Context {
            session: id.to_string(),
            agent: plan.agent.name.clone(),
            policy: plan.agent.digest.clone(),
            trace_id,
        },
        redact_exact,
    })
}

/// The filesystem view: the pty, the Landlock ruleset, the idmapped
/// workspace, protected paths and the session's passwd.
pub(super) struct Filesystem {
    pub pty: Option<pty::Pty>,
    pub landlock: OwnedFd,
    pub workspace: (OwnedFd, std::ffi::CString),
    pub identity_files: Option<(std::ffi::CString, std::ffi::CString)>,
}

pub(super) fn filesystem(
    plan: &SessionPlan,
    tty: bool,
    ident: &Identity,
    caller: (u32, u32),
    state_dir: &Path,
    notify: &mut dyn FnMut(Notice<'_>),
) -> Result<Filesystem, SessionError> {
    let pty = if tty {
        Some(pty::open(std::io::stdin().as_fd()).at("openpty", Path::new("/dev/ptmx"))?)
    } else {
        None
    };
    let mut rules = plan.fs.clone();
    if let Some(p) = &pty {
        rules.devices.push(p.slave_path.clone());
    }
    let workspace = &plan.placeholders.workspace;
    // Policy paths inside the workspace must be reached without symlinks,
    // which the agent may have planted (fail closed).
    let fs = &plan.fs;
    for p in fs.read.iter().chain(&fs.read_write).chain(&fs.execute) {
        if let Some(link) = mounts::symlink_on_the_way(workspace, p) {
            return Err(SessionError::Workspace {
                path: p.clone(),
                why: format!(
                    "{} is a symlink; paths the policy names inside the workspace are not reached through symlinks",
                    link.display()
                ),
            });
        }
    }
    let workspace_c = mounts::cstring(workspace)?;
    // Read-only unless the policy makes the whole workspace writable; its
    // writable subtrees are bound read-write over it (`workspace_binds`).
    let writable = plan.fs.read_write.iter().any(|p| workspace.starts_with(p));
    let tree = mounts::idmapped_workspace(workspace, (ident.uid, ident.gid), caller, !writable)?;
    // The session's user must resolve (whoami, git, python's pwd): a
    // dynamic one gets a passwd/group with its entry bound over /etc's.
    // Landlock rules follow inodes, so the readable files are these.
    let identity_files = if ident.dynamic {
        let (p, g) = mounts::identity_files(
            state_dir,
            &ident.name,
            ident.uid,
            ident.gid,
            &plan.placeholders.home,
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
    let abi = host::landlock_abi().map_err(|e| SessionError::Host {
        feature: host::Feature::Landlock.name(),
        detail: e.to_string(),
    })?;
    let ruleset = sandbox::landlock::prepare(&rules, abi, plan.degraded)?;
    for missing in &ruleset.degraded {
        notify(Notice::Degraded(format!(
            "Landlock ABI {abi} lacks {missing}"
        )));
    }
    for path in &ruleset.skipped {
        notify(Notice::Skipped(path));
    }
    Ok(Filesystem {
        pty,
        landlock: ruleset.fd,
        workspace: (tree, workspace_c),
        identity_files,
    })
}

/// The state file: from here `agentd ps`, `kill` and the watchdog know the
/// session.
pub(super) fn session_state(
    plan: &SessionPlan,
    opts: &RunOptions<'_>,
    id: &SessionId,
    ident: &Identity,
    caller_uid: u32,
    trace_id: &str,
    cgroups: &SessionCgroups,
) -> Result<state::SessionState, SessionError> {
    let supervisor_pid = std::process::id();
    let st = state::SessionState {
        id: id.clone(),
        agent: plan.agent.name.clone(),
        trust: plan.agent.trust.clone(),
        policy_path: opts.policy_path.to_path_buf(),
        policy_from_client: opts.policy_from_client,
        policy_digest: plan.agent.digest.clone(),
        trace_id: trace_id.to_owned(),
        caller_uid,
        uid: ident.uid,
        gid: ident.gid,
        supervisor_pid,
        supervisor_start: state::process_start_time(supervisor_pid).unwrap_or(0),
        pid: None,
        cgroup: cgroups.v2.path().to_path_buf(),
        v1_cgroups: cgroups.v1.iter().map(|v| v.path().to_path_buf()).collect(),
        started_at: super::now_rfc3339(),
        workspace: plan.placeholders.workspace.clone(),
        data_dir: data_dir(id),
        argv: opts
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        label: opts.label.clone(),
        mode: opts.mode,
    };
    st.save().at("write", &state::dir(id))?;
    Ok(st)
}

/// The collector's inputs for this session (only when the kernel programs
/// see it).
pub(super) fn audit_inputs(
    plan: &SessionPlan,
    env: &Environment,
    cgroup_id: u64,
) -> Result<(), SessionError> {
    enforce::audit_inputs(plan, &env.context, env.redact_exact.clone())
        .save(cgroup_id)
        .at("write", Path::new(paths::AUDIT_INPUTS_DIR))?;
    Ok(())
}

/// The `session_start` record.
pub(super) fn start_record(
    env: &Environment,
    redactor: &Redactor,
    st: &state::SessionState,
    cgroup_id: u64,
) -> crate::audit::Event {
    crate::audit::Event::now(&env.context, "session_start")
        .with("caller_uid", st.caller_uid)
        .with("uid", st.uid)
        .with(
            "argv",
            st.argv
                .iter()
                .map(|a| redactor.scrub(a))
                .collect::<Vec<_>>(),
        )
        .with(
            "workspace",
            redactor.scrub(&st.workspace.display().to_string()),
        )
        .with("policy_path", st.policy_path.display().to_string())
        // Whether agentd read the file itself, or was handed the text (by
        // a client of the daemon, which only claims the path).
        .with(
            "policy_source",
            if st.policy_from_client {
                "client"
            } else {
                "file"
            },
        )
        .with("cgroup_id", cgroup_id)
}

/// The binds in the workspace: when only parts of it are writable, those
/// parts read-write over its read-only mount, first; then the protected
/// paths (read-only) and the directories pinned above them.
fn workspace_binds(plan: &SessionPlan) -> Result<Vec<sandbox::Bind>, SessionError> {
    let workspace = &plan.placeholders.workspace;
    let whole = plan.fs.read_write.iter().any(|p| workspace.starts_with(p));
    let mut binds = if whole {
        Vec::new()
    } else {
        mounts::writable_subtrees(workspace, &plan.fs.read_write)?
    };
    binds.extend(plan.binds.iter().cloned());
    Ok(binds)
}

/// The child's plan: everything it applies between fork and exec,
/// prepared here so that it does no work that could fail half-way unseen.
pub(super) fn child_plan(
    plan: &SessionPlan,
    opts: &RunOptions<'_>,
    ident: &Identity,
    env: &Environment,
    fs_view: Filesystem,
    cgroups: &Cgroups,
    report: OwnedFd,
) -> Result<(ChildPlan, Option<pty::Pty>, super::gate::Pending), SessionError> {
    let cg = &cgroups.enforcement.cgroups;
    let procs_files = cg.procs_files();
    let open_wr = |p: &PathBuf| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .map(OwnedFd::from)
            .at("open", p)
    };
    let cgroup_v2_procs = open_wr(&procs_files[0])?;
    let cgroup_procs = procs_files[1..]
        .iter()
        .map(open_wr)
        .collect::<Result<Vec<_>, _>>()?;
    let cgroup_dir = cg.v2.path();
    let cgroup_dir_fd = fs::File::open(cgroup_dir)
        .map(OwnedFd::from)
        .at("open", cgroup_dir)?;
    let stdio = match &fs_view.pty {
        Some(p) => {
            let dup = || p.slave.try_clone().at("dup", &p.slave_path);
            Some([dup()?, dup()?, dup()?])
        }
        None => None,
    };
    // What the policy grants below the host's socket directories stays
    // visible over the session's empty ones.
    let keep: Vec<PathBuf> = (plan.fs.read.iter())
        .chain(&plan.fs.read_write)
        .chain(&plan.fs.execute)
        .chain(plan.unix.iter().map(|(_, p)| p))
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    let hidden = mounts::hidden_socket_dirs(&keep)?;
    let ph = &plan.placeholders;
    let (gate, pending) = super::gate::prepare(
        &plan.unix,
        [&ph.tmp, &ph.home],
        (ident.uid, ident.gid),
        plan.protected.clone(),
        plan.exec_gate.is_some(),
    )?;
    let child = ChildPlan {
        cgroup_dir: cgroup_dir_fd,
        cgroup_v2_procs,
        cgroup_procs,
        stdio,
        exec: sandbox::Exec::new(&env.program, &opts.argv, &env.vars)?,
        controlling_tty: fs_view.pty.is_some(),
        namespaces: libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | if cgroups.private_netns {
                libc::CLONE_NEWNET
            } else {
                0
            },
        workspace: Some(fs_view.workspace),
        binds: workspace_binds(plan)?,
        identity_files: fs_view.identity_files,
        hidden,
        rlimits: plan.rlimits.clone(),
        uid: ident.uid,
        gid: ident.gid,
        last_cap: sandbox::sys::last_cap(),
        cwd: mounts::cstring(&plan.placeholders.workspace)?,
        landlock: fs_view.landlock,
        gate: Some(gate),
        seccomp: plan.seccomp.clone(),
        report,
    };
    Ok((child, fs_view.pty, pending))
}

/// What a failed spawn means to the caller.
pub(super) fn spawn_error(e: sandbox::SpawnError, program: &Path, cgroup: &Path) -> SessionError {
    match e {
        sandbox::SpawnError::Step(Step::Exec, libc::ENOENT) => {
            SessionError::NotFound(program.display().to_string())
        }
        sandbox::SpawnError::Step(Step::Exec, errno) => SessionError::CannotExecute {
            program: program.display().to_string(),
            errno,
        },
        sandbox::SpawnError::Step(step, errno) => SessionError::Setup { step, errno },
        sandbox::SpawnError::Fork(errno) => SessionError::Io(PathError {
            op: "clone3",
            path: cgroup.to_path_buf(),
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}
