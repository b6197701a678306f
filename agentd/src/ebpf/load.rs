//! Loading the kernel programs: parsing the embedded object with this
//! kernel's offsets, the verifier, attaching, and pinning maps and links
//! under bpffs (all-or-nothing), once per host and build.
use std::{
    fs::{self, File},
    os::{fd::AsFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use agentd_common::{Offset, map, program};
use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, TracePoint,
        links::FdLink,
    },
};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use super::{Btf, BtfError, EbpfError, Kernel, REGISTERED_MARKER, map_err, unix};
use crate::{error::AtPath as _, host::mountinfo, paths};

/// The kernel object built by `build.rs`, embedded in the binary. Empty when
/// agentd was built with `AYA_BUILD_SKIP=1`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentd-ebpf"));

/// Digest of the loaded programs and their cgroup parent.
pub(super) const VERSION_FILE: &str = paths::EBPF_VERSION;

/// Where the programs attach, part of the loaded version: a build that
/// attaches elsewhere replaces the pins, even with the same object.
const ATTACH_POINTS: &str = "sock_addr+unix@cgroup2-root,sock_create@parent";

/// The `cgroup_sock_addr` programs and their attach points.
const SOCK_ADDR: [&str; 10] = [
    program::CGROUP_CONNECT4,
    program::CGROUP_CONNECT6,
    program::CGROUP_SENDMSG4,
    program::CGROUP_SENDMSG6,
    program::CGROUP_BIND4,
    program::CGROUP_BIND6,
    program::CGROUP_RECVMSG4,
    program::CGROUP_RECVMSG6,
    program::CGROUP_GETPEERNAME4,
    program::CGROUP_GETPEERNAME6,
];

/// Syscall tracepoints (category `syscalls`).
const SYSCALL_TRACEPOINTS: [(&str, &str); 12] = [
    (program::TP_ENTER_EXECVE, "sys_enter_execve"),
    (program::TP_EXIT_EXECVE, "sys_exit_execve"),
    (program::TP_ENTER_EXECVEAT, "sys_enter_execveat"),
    (program::TP_EXIT_EXECVEAT, "sys_exit_execveat"),
    (program::TP_ENTER_OPENAT, "sys_enter_openat"),
    (program::TP_EXIT_OPENAT, "sys_exit_openat"),
    (program::TP_ENTER_UNLINKAT, "sys_enter_unlinkat"),
    (program::TP_EXIT_UNLINKAT, "sys_exit_unlinkat"),
    (program::TP_ENTER_RENAMEAT2, "sys_enter_renameat2"),
    (program::TP_EXIT_RENAMEAT2, "sys_exit_renameat2"),
    (program::TP_ENTER_SOCKET, "sys_enter_socket"),
    (program::TP_EXIT_SOCKET, "sys_exit_socket"),
];

/// BTF tracepoints.
const TRACEPOINTS: [(&str, &str); 3] = [
    (program::TP_SCHED_PROCESS_EXEC, "sched_process_exec"),
    (program::TP_SCHED_PROCESS_FORK, "sched_process_fork"),
    (program::TP_SCHED_PROCESS_EXIT, "sched_process_exit"),
];

/// Every map userspace opens by pin.
const PINNED_MAPS: [&str; 7] = [
    map::SESSIONS,
    map::COUNTERS,
    map::EGRESS_V4,
    map::EGRESS_V6,
    map::EVENTS,
    map::EXEC_TOKENS,
    map::LOADERS,
];

/// The offsets the programs read, from kernel BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<Vec<(Offset, u64)>, BtfError> {
    let table: [(Offset, &str, &[&str]); 16] = [
        (Offset::BinprmFilename, "linux_binprm", &["filename"]),
        (Offset::BinprmFile, "linux_binprm", &["file"]),
        (Offset::FileInode, "file", &["f_inode"]),
        (Offset::InodeSb, "inode", &["i_sb"]),
        (Offset::SuperBlockFlags, "super_block", &["s_flags"]),
        (Offset::TaskMm, "task_struct", &["mm"]),
        (Offset::TaskRealParent, "task_struct", &["real_parent"]),
        (Offset::TaskTgid, "task_struct", &["tgid"]),
        (Offset::TaskExitCode, "task_struct", &["exit_code"]),
        (Offset::MmArgStart, "mm_struct", &["arg_start"]),
        (Offset::MmArgEnd, "mm_struct", &["arg_end"]),
        (Offset::TaskPid, "task_struct", &["pid"]),
        (Offset::InodeIno, "inode", &["i_ino"]),
        (Offset::SuperBlockDev, "super_block", &["s_dev"]),
        (Offset::MmEnvStart, "mm_struct", &["env_start"]),
        (Offset::MmEnvEnd, "mm_struct", &["env_end"]),
    ];
    table
        .iter()
        .map(|(which, outer, path)| btf.offset_of(outer, path).map(|o| (*which, u64::from(o))))
        .collect()
}

/// The mount point of a `fs_type` filesystem: this process's; else the
/// host's, reached through `/proc/<pid>/root` of PID 1 or an ancestor (in a
/// mount namespace of its own, as `ip netns exec` makes, the host's
/// instance is still the one to share); else a new one mounted at
/// `target`, `nosuid,nodev,noexec`.
fn mount_if_absent(fs_type: &str, target: &Path) -> Result<PathBuf, EbpfError> {
    let mounts = crate::host::mounts();
    if let Some(m) = mountinfo::of_type(&mounts, fs_type).next() {
        return Ok(m.mount_point.clone());
    }
    if let Some(host) = crate::host::host_mount(fs_type) {
        return Ok(host);
    }
    nix::mount::mount(
        Some(fs_type),
        target,
        Some(fs_type),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(std::io::Error::from)
    .at("mount", target)?;
    Ok(target.to_path_buf())
}

/// Makes sure tracefs is mounted (the syscall tracepoints are found there;
/// aya looks at /sys/kernel/tracing).
fn ensure_tracefs() -> Result<(), EbpfError> {
    let mounts = crate::host::mounts();
    if mountinfo::of_type(&mounts, "tracefs").next().is_some() {
        return Ok(());
    }
    // A namespace's own mount: aya reads tracepoint ids through it.
    nix::mount::mount(
        Some("tracefs"),
        Path::new(paths::TRACEFS),
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(std::io::Error::from)
    .at("mount tracefs at", Path::new(paths::TRACEFS))?;
    Ok(())
}

/// The bpffs directory holding agentd's pins (see [`mount_if_absent`]).
pub fn pin_dir() -> Result<PathBuf, EbpfError> {
    Ok(mount_if_absent("bpf", Path::new(paths::BPFFS))?.join("agentd"))
}

fn object_digest() -> String {
    Sha256::digest(OBJECT)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Kernel {
    /// Loads, attaches and pins the programs if no agentd did yet on this
    /// boot (or a different build did and no session uses it), then opens
    /// the pinned maps. `cgroup_parent` is the agentd parent cgroup in the
    /// cgroup2 hierarchy, where the egress hooks attach.
    ///
    /// `own_session` is the session calling (its state directory exists
    /// already); every other session directory counts as a session that
    /// relies on the loaded programs, whatever their maps look like.
    pub fn attach(cgroup_parent: &Path, own_session: Option<&str>) -> Result<Self, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        let _lock = lock()?;
        let dir = pin_dir()?;
        // Programs of this build attached at this parent: anything else
        // (another build, or another parent such as a systemd unit's) is
        // replaced when no session relies on it.
        let digest = format!(
            "{} {ATTACH_POINTS} {}",
            object_digest(),
            cgroup_parent.display()
        );
        let current = fs::read_to_string(VERSION_FILE).unwrap_or_default();
        let pinned = dir.join(map::SESSIONS).exists();
        let kernel = Self {
            pin_dir: dir,
            cgroup_parent: Some(cgroup_parent.to_path_buf()),
        };
        if pinned && current.trim() == digest {
            return Ok(kernel);
        }
        if pinned {
            // Another build's programs (whose maps may have another
            // layout): replace them only if no session registered with
            // them lives (sessions still being set up register with
            // whatever is loaded when they get there).
            let live = fs::read_dir(paths::SESSIONS_DIR)
                .map(|d| {
                    d.flatten()
                        .filter(|e| Some(e.file_name().to_string_lossy().as_ref()) != own_session)
                        .filter(|e| e.path().join(REGISTERED_MARKER).exists())
                        .count()
                })
                .unwrap_or(0);
            if live > 0 {
                return Err(EbpfError::VersionInUse(live));
            }
            unpin_all(&kernel.pin_dir)?;
        }
        load_and_pin(&kernel.pin_dir, cgroup_parent)?;
        fs::write(VERSION_FILE, &digest).at("write", Path::new(VERSION_FILE))?;
        Ok(kernel)
    }

    /// Opens already pinned programs (no loading): for readers such as
    /// `agentd doctor` or the event collector.
    pub fn open_pinned() -> Result<Self, EbpfError> {
        let dir = pin_dir()?;
        if !dir.join(map::SESSIONS).exists() {
            return Err(EbpfError::NotLoaded(dir.join(map::SESSIONS)));
        }
        Ok(Self {
            pin_dir: dir,
            cgroup_parent: None,
        })
    }
}

/// Serialises loading, registration and pruning across agentd processes.
pub(super) fn lock() -> Result<Flock<File>, EbpfError> {
    paths::create_run_dir().at("mkdir", Path::new(paths::RUN_DIR))?;
    let path = Path::new(paths::EBPF_LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .at("open", path)?;
    Ok(Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
        .at("flock", path)?)
}

/// Removes every pin of an earlier build (links detach with their last
/// reference).
fn unpin_all(dir: &Path) -> Result<(), EbpfError> {
    for sub in ["", "links"] {
        let d = dir.join(sub);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                fs::remove_file(e.path()).at("unpin", &e.path())?;
            }
        }
    }
    Ok(())
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), EbpfError> {
    link.pin(path).map(drop).map_err(|e| EbpfError::Pin {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Program `name` of the object as its type `T`.
fn typed<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|e| EbpfError::Load {
            program: name,
            source: Box::new(e),
        })
}

fn load_err(program: &'static str) -> impl Fn(ProgramError) -> EbpfError {
    move |e| EbpfError::Load {
        program,
        source: Box::new(e),
    }
}

fn attach_err(program: &'static str) -> impl Fn(ProgramError) -> EbpfError {
    move |e| EbpfError::Attach {
        program,
        source: Box::new(e),
    }
}

/// Parses the object with this kernel's struct offsets and loads every
/// program into the kernel (the verifier runs here).
fn load_object() -> Result<(Ebpf, aya::Btf), EbpfError> {
    if OBJECT.is_empty() {
        return Err(EbpfError::NoObject);
    }
    let kernel_btf = aya::Btf::from_sys_fs()
        .map_err(|e| EbpfError::Object(Box::new(aya::EbpfError::BtfError(e))))?;
    let offsets = kernel_offsets(&Btf::from_sys_fs()?)?;
    let mut ebpf: Ebpf = EbpfLoader::new()
        .btf(&kernel_btf)
        .load(OBJECT)
        .map_err(|e| EbpfError::Object(Box::new(e)))?;
    {
        let m = ebpf
            .map_mut(map::OFFSETS)
            .ok_or(EbpfError::MissingMap(map::OFFSETS))?;
        let mut array: Array<_, u64> = Array::try_from(m).map_err(map_err(map::OFFSETS))?;
        for (which, value) in offsets {
            array
                .set(which as u32, &value, 0)
                .map_err(map_err(map::OFFSETS))?;
        }
    }
    for name in SOCK_ADDR {
        typed::<CgroupSockAddr>(&mut ebpf, name)?
            .load()
            .map_err(load_err(name))?;
    }
    let name = program::CGROUP_SOCK_CREATE;
    typed::<CgroupSock>(&mut ebpf, name)?
        .load()
        .map_err(load_err(name))?;
    for (name, _) in SYSCALL_TRACEPOINTS {
        typed::<TracePoint>(&mut ebpf, name)?
            .load()
            .map_err(load_err(name))?;
    }
    for (name, tracepoint) in TRACEPOINTS {
        typed::<BtfTracePoint>(&mut ebpf, name)?
            .load(tracepoint, &kernel_btf)
            .map_err(load_err(name))?;
    }
    Ok((ebpf, kernel_btf))
}

/// Loads every program (all-or-nothing: on failure nothing stays pinned),
/// attaches it, and pins maps and links.
fn load_and_pin(dir: &Path, cgroup_parent: &Path) -> Result<(), EbpfError> {
    let result = try_load_and_pin(dir, cgroup_parent);
    if result.is_err() {
        let _ = unpin_all(dir);
    }
    result
}

fn try_load_and_pin(dir: &Path, cgroup_parent: &Path) -> Result<(), EbpfError> {
    let (mut ebpf, _btf) = load_object()?;
    fs::create_dir_all(dir.join("links")).at("mkdir", dir)?;
    for name in PINNED_MAPS {
        let path = dir.join(name);
        ebpf.map(name)
            .ok_or(EbpfError::MissingMap(name))?
            .pin(&path)
            .map_err(|e| EbpfError::Pin {
                path: path.clone(),
                source: Box::new(e),
            })?;
    }
    let links = dir.join("links");
    let cgroup = File::open(cgroup_parent).at("open", cgroup_parent)?;
    // The socket address hooks attach at the root of the cgroup2 hierarchy:
    // the kernel runs them by the cgroup the *socket* was created in, so a
    // socket a session inherited (its caller's stdio) would meet none below
    // the agentd parent. They judge by the calling task's cgroup, so tasks
    // outside sessions pass (one map lookup).
    let root_path = crate::cgroup::cgroup2_root().map_err(|e| {
        EbpfError::Io(crate::error::PathError::new(
            "find the cgroup2 root for",
            Path::new("the socket address hooks"),
            std::io::Error::other(e.to_string()),
        ))
    })?;
    let root = File::open(&root_path).at("open", &root_path)?;
    let to_fd = |name: &'static str| {
        move |e: aya::programs::links::LinkError| EbpfError::Link {
            program: name,
            source: Box::new(e),
        }
    };
    // The program types share no trait for attaching; the steps around it
    // are the same for each: attach, take the link, pin it.
    macro_rules! attach_and_pin {
        ($ty:ty, $name:expr, $prog:ident => $attach:expr) => {{
            let name = $name;
            let $prog = typed::<$ty>(&mut ebpf, name)?;
            let id = $attach.map_err(attach_err(name))?;
            let link: FdLink = $prog
                .take_link(id)
                .map_err(attach_err(name))?
                .try_into()
                .map_err(to_fd(name))?;
            pin_link(link, &links.join(name))?;
        }};
    }
    // bpf_link attachments always coexist with other programs; the mode
    // flag must be 0 for links.
    for name in SOCK_ADDR {
        attach_and_pin!(CgroupSockAddr, name, p => p.attach(root.as_fd(), CgroupAttachMode::Single));
    }
    // Sockets are created in the creating task's cgroup: the parent will do.
    attach_and_pin!(CgroupSock, program::CGROUP_SOCK_CREATE, p => p.attach(cgroup.as_fd(), CgroupAttachMode::Single));
    attach_unix(dir, &root)?;
    ensure_tracefs()?;
    for (name, tracepoint) in SYSCALL_TRACEPOINTS {
        attach_and_pin!(TracePoint, name, p => p.attach("syscalls", tracepoint));
    }
    for (name, _) in TRACEPOINTS {
        let prog = typed::<BtfTracePoint>(&mut ebpf, name)?;
        let id = prog.attach().map_err(attach_err(name))?;
        pin_link(
            prog.take_link(id).map_err(attach_err(name))?.into(),
            &links.join(name),
        )?;
    }
    Ok(())
}

/// The unix socket hooks and their attach types.
const UNIX_HOOKS: [(&str, u32); 2] = [
    (program::CGROUP_CONNECT_UNIX, unix::ATTACH_CONNECT_UNIX),
    (program::CGROUP_SENDMSG_UNIX, unix::ATTACH_SENDMSG_UNIX),
];

/// Loads the unix socket hooks (see [`unix`]) with the pinned maps, or
/// nothing when this kernel has none (sessions then refuse to start
/// unless degraded mode is allowed: [`Kernel::unix_hooks`]).
fn load_unix(dir: &Path) -> Result<Vec<(&'static str, u32, std::os::fd::OwnedFd)>, EbpfError> {
    let sessions = super::registry::open_map(dir, map::SESSIONS)?;
    let counters = super::registry::open_map(dir, map::COUNTERS)?;
    let mut loaded = Vec::new();
    for (name, attach_type) in UNIX_HOOKS {
        match unix::load(attach_type, sessions.fd().as_fd(), counters.fd().as_fd()) {
            Ok(fd) => loaded.push((name, attach_type, fd)),
            Err(e) if e.unsupported() => {
                tracing::warn!("this kernel has no cgroup hooks for unix sockets (Linux < 6.7)");
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(EbpfError::Unix {
                    program: name,
                    op: "load",
                    detail: e.to_string(),
                });
            }
        }
    }
    Ok(loaded)
}

fn attach_unix(dir: &Path, cgroup: &File) -> Result<(), EbpfError> {
    for (name, attach_type, prog) in load_unix(dir)? {
        unix::attach_and_pin(
            prog.as_fd(),
            attach_type,
            cgroup.as_fd(),
            &dir.join("links").join(name),
        )
        .map_err(|(call, errno)| EbpfError::Unix {
            program: name,
            op: "attach",
            detail: format!("{call}: {}", std::io::Error::from_raw_os_error(errno)),
        })?;
    }
    Ok(())
}

impl Kernel {
    /// Whether the unix socket hooks are attached (this kernel has them).
    pub fn unix_hooks(&self) -> bool {
        UNIX_HOOKS
            .iter()
            .all(|(name, _)| self.pin_dir.join("links").join(name).exists())
    }
}

/// Loads every program into the kernel without attaching anything (the
/// verifier check `agentd doctor` runs); returns their names. The unix
/// socket hooks are named only where this kernel has them.
pub fn verify() -> Result<Vec<String>, EbpfError> {
    let (ebpf, _) = load_object()?;
    let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    let maps = |name: &'static str| -> Result<std::os::fd::OwnedFd, EbpfError> {
        let m = ebpf.map(name).ok_or(EbpfError::MissingMap(name))?;
        let data = match m {
            aya::maps::Map::HashMap(d) | aya::maps::Map::PerCpuArray(d) => d,
            _ => return Err(EbpfError::MissingMap(name)),
        };
        data.fd()
            .as_fd()
            .try_clone_to_owned()
            .at("dup", Path::new(name))
            .map_err(EbpfError::from)
    };
    let (sessions, counters) = (maps(map::SESSIONS)?, maps(map::COUNTERS)?);
    for (name, attach_type) in UNIX_HOOKS {
        match unix::load(attach_type, sessions.as_fd(), counters.as_fd()) {
            Ok(_) => names.push(name.to_owned()),
            Err(e) if e.unsupported() => {}
            Err(e) => {
                return Err(EbpfError::Unix {
                    program: name,
                    op: "load",
                    detail: e.to_string(),
                });
            }
        }
    }
    names.sort();
    Ok(names)
}
