//! cgroup2 directories: finding the hierarchy, creating a cgroup, moving
//! processes into it, and tearing it down so that nothing is left.
use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::{
    error::{AtPath as _, PathError},
    host::mountinfo,
};

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No cgroup2 mount in `/proc/self/mountinfo` (nor in PID 1's).
    #[error("no cgroup2 hierarchy is mounted, here or on the host")]
    NoCgroup2,
    /// A file operation on the cgroup failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A limit's controller is missing on this host.
    #[error(transparent)]
    Missing(#[from] MissingController),
    /// Processes were still in the cgroup after the deadline.
    #[error("cgroup {path} still has processes after {waited:?}")]
    NotEmpty {
        /// The cgroup directory.
        path: PathBuf,
        /// How long agentd waited.
        waited: Duration,
    },
}

/// Whether `e` says the path does not exist (a cgroup removed meanwhile:
/// ENOENT, or ENODEV for a file of a cgroup being removed).
fn not_found(e: &CgroupError) -> bool {
    matches!(e, CgroupError::Io(PathError { source, .. })
        if source.kind() == ErrorKind::NotFound || source.raw_os_error() == Some(libc::ENODEV))
}

/// Whether `cgroup.kill` is used where it exists. `AGENTD_NO_CGROUP_KILL=1`
/// makes agentd kill as it does on kernels without it (for tests of that
/// path, and for kernels whose `cgroup.kill` misbehaves).
fn use_cgroup_kill() -> bool {
    std::env::var_os("AGENTD_NO_CGROUP_KILL").is_none_or(|v| v != "1")
}

/// SIGKILLs `pid` (gone already: nothing to do).
fn signal_kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` (see
/// [`mounts`]).
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts = mounts()?;
    mountinfo::of_type(&mounts, "cgroup2")
        .next()
        .map(|m| m.mount_point.clone())
        .ok_or(CgroupError::NoCgroup2)
}

/// This process's mounts, with the host's cgroup hierarchies in them: in a
/// mount namespace of its own that lacks them (`ip netns exec` mounts a
/// fresh /sys), the host's cgroup mounts (PID 1's, or an ancestor's) are
/// mounted again at the same paths
/// (the same hierarchies: a cgroup's path, and so a session's state, means
/// the same thing inside and outside), without propagating anywhere.
pub fn mounts() -> Result<Vec<mountinfo::Mount>, CgroupError> {
    let own = crate::host::mounts();
    if mountinfo::of_type(&own, "cgroup2").next().is_some() {
        return Ok(own);
    }
    let Some(host) = crate::host::host_mounts("cgroup2") else {
        return Err(CgroupError::NoCgroup2);
    };
    adopt_host_hierarchies(&host)?;
    Ok(crate::host::mounts())
}

/// Mounts PID 1's cgroup filesystems (the tmpfs holding them, cgroup2,
/// the v1 hierarchies) here, in mountinfo order (parents first).
fn adopt_host_hierarchies(host: &[mountinfo::Mount]) -> Result<(), CgroupError> {
    use nix::mount::{MsFlags, mount};
    let Some(v2) = mountinfo::of_type(host, "cgroup2").next() else {
        return Err(CgroupError::NoCgroup2);
    };
    // The directory that holds the hierarchies (/sys/fs/cgroup), and the
    // mount it is on: made a slave first, so that nothing mounted below
    // leaves this namespace.
    let top = host
        .iter()
        .filter(|m| m.fs_type == "tmpfs" && v2.mount_point.starts_with(&m.mount_point))
        .map(|m| m.mount_point.clone())
        .next_back()
        .unwrap_or_else(|| v2.mount_point.clone());
    let enclosing = crate::host::mounts()
        .into_iter()
        .filter(|m| top.starts_with(&m.mount_point))
        .map(|m| m.mount_point)
        .next_back()
        .unwrap_or_else(|| PathBuf::from("/"));
    fn failed<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(nix::errno::Errno) -> CgroupError + 'a {
        move |e| CgroupError::Io(PathError::new(op, path, io::Error::from(e)))
    }
    mount(
        None::<&str>,
        &enclosing,
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed("make a slave mount of", &enclosing))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for m in host.iter().filter(|m| m.mount_point.starts_with(&top)) {
        let data = match m.fs_type.as_str() {
            "tmpfs" if m.mount_point == top => "mode=755".to_owned(),
            "cgroup2" => String::new(),
            // The controllers (and name=) select the existing hierarchy.
            "cgroup" => m
                .super_options
                .iter()
                .filter(|o| !matches!(o.as_str(), "rw" | "ro"))
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        fs::create_dir_all(&m.mount_point).at("mkdir", &m.mount_point)?;
        let result = mount(
            Some(m.fs_type.as_str()),
            &m.mount_point,
            Some(m.fs_type.as_str()),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match result {
            Ok(()) => {}
            // A v1 hierarchy that cannot be attached: its limits are
            // reported missing (and refused) like on a host without it.
            Err(e) if m.fs_type == "cgroup" => {
                tracing::warn!(mount = %m.mount_point.display(), error = %e, "cannot mount the host's cgroup v1 hierarchy here");
            }
            Err(e) => return Err(failed("mount", &m.mount_point)(e)),
        }
    }
    Ok(())
}

/// One cgroup2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates the directory `path` (and missing parents) in cgroupfs; an
    /// existing one is reused.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let path = path.into();
        match fs::create_dir_all(&path) {
            Ok(()) => Ok(Self { path }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Self { path }),
            Err(e) => Err(PathError::new("mkdir", &path, e).into()),
        }
    }

    /// An existing cgroup directory.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's cgroup id: the directory's inode number on cgroupfs,
    /// which is what `bpf_get_current_cgroup_id()` returns.
    pub fn id(&self) -> Result<u64, CgroupError> {
        fs::metadata(&self.path)
            .map(|m| m.ino())
            .at("stat", &self.path)
            .map_err(CgroupError::from)
    }

    /// Moves process `pid` (and all its threads) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .at("write", &procs)
            .map_err(CgroupError::from)
    }

    /// The processes in this cgroup (not in its children).
    pub fn processes(&self) -> Result<Vec<u32>, CgroupError> {
        let procs = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&procs).at("read", &procs)?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process in the cgroup and its children (`cgroup.kill`),
    /// then waits until it is empty, at most `deadline`. Without
    /// `cgroup.kill` (Linux < 5.14, or `AGENTD_NO_CGROUP_KILL=1`): see
    /// [`Cgroup::kill_each`].
    pub fn kill(&self, deadline: Duration) -> Result<(), CgroupError> {
        if !self.path.exists() {
            // Removed: a cgroup can only be removed once empty.
            return Ok(());
        }
        let kill = self.path.join("cgroup.kill");
        if use_cgroup_kill() {
            match fs::write(&kill, "1") {
                Ok(()) => return self.wait_empty(deadline),
                // Removed meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound && !self.path.exists() => return Ok(()),
                // This kernel has no cgroup.kill.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(PathError::new("write", &kill, e).into()),
            }
        }
        self.kill_each(deadline)
    }

    /// Kills the subtree one process at a time: freeze (so no process can
    /// fork or exit, and no pid be reused, while the list is read), SIGKILL
    /// every pid in every `cgroup.procs` of the subtree, thaw, and repeat
    /// until it is empty or `deadline` passes.
    pub fn kill_each(&self, deadline: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        loop {
            let frozen = self.set_frozen(true);
            let pids = match self.processes_recursive() {
                Err(e) if not_found(&e) => {
                    return Ok(());
                }
                other => other?,
            };
            for pid in &pids {
                signal_kill(*pid);
            }
            if frozen {
                self.set_frozen(false);
            }
            match self.wait_empty(Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(CgroupError::NotEmpty { .. }) if start.elapsed() < deadline => {}
                Err(CgroupError::NotEmpty { .. }) => {
                    return Err(CgroupError::NotEmpty {
                        path: self.path.clone(),
                        waited: start.elapsed(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `cgroup.freeze`; whether the cgroup has a freezer.
    fn set_frozen(&self, frozen: bool) -> bool {
        let ok = fs::write(
            self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
        .is_ok();
        if ok && frozen {
            let _ = self.wait_event("frozen 1", Duration::from_millis(200));
        }
        ok
    }

    /// Waits until no process is left in the cgroup's subtree (or the
    /// cgroup is gone, which implies it).
    pub fn wait_empty(&self, deadline: Duration) -> Result<(), CgroupError> {
        match self.wait_event("populated 0", deadline) {
            Err(e) if not_found(&e) => Ok(()),
            other => other,
        }
    }

    /// Removes the (empty) cgroup directory; retries briefly because the
    /// kernel may still be releasing the last task.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut delay = Duration::from_millis(1);
        for _ in 0..10 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(PathError::new("rmdir", &self.path, e).into()),
            }
        }
        fs::remove_dir(&self.path)
            .at("rmdir", &self.path)
            .map_err(CgroupError::from)
    }
}

/// A resource controller agentd uses for `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// memory.max / memory.limit_in_bytes.
    Memory,
    /// pids.max.
    Pids,
    /// cpu.max / cpu.cfs_quota_us.
    Cpu,
}

impl Controller {
    /// The kernel's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
        }
    }
}

/// The limits to apply to a session's cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (no swap on top).
    pub memory: Option<u64>,
    /// Tasks.
    pub pids: Option<u32>,
    /// Percent of one CPU.
    pub cpu_percent: Option<u32>,
}

/// CPU period used for quotas, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Where each controller lives on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The cgroup2 mount.
    pub v2_root: PathBuf,
    /// agentd's parent cgroup, where sessions' cgroups are created and the
    /// egress programs attach: `<cgroup2>/agentd`, or `<unit>/sessions`
    /// under a systemd unit with `Delegate=yes` (see [`delegate`]).
    pub parent: PathBuf,
    /// Controllers available to the parent (`cgroup.controllers` of the
    /// cgroup above it).
    pub v2_controllers: Vec<String>,
    /// v1 mounts by controller name, for hybrid hosts.
    pub v1: Vec<(Controller, PathBuf)>,
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo` and cgroupfs.
    pub fn discover() -> Result<Self, CgroupError> {
        let mounts = mounts()?;
        let v2_root = mountinfo::of_type(&mounts, "cgroup2")
            .next()
            .map(|m| m.mount_point.clone())
            .ok_or(CgroupError::NoCgroup2)?;
        let parent =
            recorded_parent(&v2_root).unwrap_or_else(|| v2_root.join(crate::paths::CGROUP_PARENT));
        let above = parent.parent().unwrap_or(&v2_root);
        let controllers = fs::read_to_string(above.join("cgroup.controllers")).unwrap_or_default();
        let v1 = [Controller::Memory, Controller::Pids, Controller::Cpu]
            .into_iter()
            .filter_map(|c| {
                mountinfo::cgroup_v1(&mounts, c.name()).map(|m| (c, m.mount_point.clone()))
            })
            .collect();
        Ok(Self {
            v2_root,
            parent,
            v2_controllers: controllers.split_whitespace().map(str::to_owned).collect(),
            v1,
        })
    }

    /// Where `controller` is: `Some(None)` in cgroup2, `Some(Some(mount))`
    /// in a v1 hierarchy, `None` nowhere.
    pub fn locate(&self, controller: Controller) -> Option<Option<&Path>> {
        if self.v2_controllers.iter().any(|c| c == controller.name()) {
            return Some(None);
        }
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| Some(p.as_path()))
    }
}

/// Where the daemon recorded agentd's parent cgroup when it is not the
/// default (under a systemd unit).
pub const PARENT_RECORD: &str = crate::paths::CGROUP_PARENT_RECORD;

/// The recorded parent, if it still exists inside the cgroup2 mount.
fn recorded_parent(v2_root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(PARENT_RECORD).ok()?;
    let p = PathBuf::from(text.trim());
    (p.starts_with(v2_root) && p != v2_root && p.is_dir()).then_some(p)
}

/// Under a systemd service with `Delegate=yes` (`INVOCATION_ID` set, this
/// process in `<unit>.service`): moves this process into `<unit>/daemon`
/// (a cgroup with processes cannot hand controllers to children) and makes
/// `<unit>/sessions` agentd's parent, recorded for every later agentd
/// command. Returns the new layout, or `None` when not under such a unit.
pub fn delegate(layout: &Layout) -> Result<Option<Layout>, CgroupError> {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return Ok(None);
    }
    let Some(unit) = crate::host::own_cgroup2(&layout.v2_root)
        .filter(|u| u != &layout.v2_root && u.extension().is_some_and(|e| e == "service"))
    else {
        return Ok(None);
    };
    let daemon = Cgroup::create(unit.join("daemon"))?;
    daemon.add_process(std::process::id())?;
    let parent = unit.join("sessions");
    fs::create_dir_all(&parent).at("mkdir", &parent)?;
    crate::paths::create_run_dir().at("mkdir", Path::new(crate::paths::RUN_DIR))?;
    fs::write(PARENT_RECORD, parent.display().to_string()).at("write", Path::new(PARENT_RECORD))?;
    let controllers = fs::read_to_string(unit.join("cgroup.controllers")).unwrap_or_default();
    Ok(Some(Layout {
        v2_root: layout.v2_root.clone(),
        parent,
        v2_controllers: controllers.split_whitespace().map(str::to_owned).collect(),
        v1: layout.v1.clone(),
    }))
}

/// A limit the host cannot enforce.
#[derive(Debug, thiserror::Error)]
#[error("the {} controller is available neither in cgroup2 nor as a v1 hierarchy", .0.name())]
pub struct MissingController(pub Controller);

/// A session's cgroups: its cgroup2 leaf (membership, kill, freeze, BPF)
/// and, on hybrid hosts, the v1 leaves that carry its limits.
#[derive(Debug)]
pub struct SessionCgroups {
    /// `<cgroup2>/agentd/<session>`.
    pub v2: Cgroup,
    /// v1 leaves (`<mount>/agentd/<session>`).
    pub v1: Vec<Cgroup>,
}

/// Enables `names` in `dir`'s `cgroup.subtree_control` (for its children).
fn enable_controllers(dir: &Path, names: &[&str]) -> Result<(), CgroupError> {
    if names.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !current.split_whitespace().any(|c| c == **n))
        .map(|n| format!("+{n}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&path, missing.join(" "))
        .at("write", &path)
        .map_err(CgroupError::from)
}

fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value)
        .at("write", &path)
        .map_err(CgroupError::from)
}

/// The files (and values) that set `controller`'s limit, in writing order;
/// `optional` files are skipped where the kernel lacks them (no swap
/// accounting).
fn limit_files(
    controller: Controller,
    v1: bool,
    limits: &Limits,
) -> Vec<(&'static str, String, bool)> {
    let memory = limits.memory.unwrap_or(u64::MAX).to_string();
    let pids = limits.pids.unwrap_or(u32::MAX).to_string();
    let quota = (u64::from(limits.cpu_percent.unwrap_or(100)) * CPU_PERIOD_US / 100).to_string();
    match (controller, v1) {
        // No swap on top of the memory limit.
        (Controller::Memory, false) => vec![
            ("memory.max", memory, false),
            ("memory.swap.max", "0".into(), true),
        ],
        (Controller::Memory, true) => vec![
            ("memory.limit_in_bytes", memory.clone(), false),
            ("memory.memsw.limit_in_bytes", memory, true),
        ],
        (Controller::Pids, _) => vec![("pids.max", pids, false)],
        (Controller::Cpu, false) => vec![("cpu.max", format!("{quota} {CPU_PERIOD_US}"), false)],
        (Controller::Cpu, true) => vec![
            ("cpu.cfs_period_us", CPU_PERIOD_US.to_string(), false),
            ("cpu.cfs_quota_us", quota, false),
        ],
    }
}

fn write_limit(
    dir: &Path,
    controller: Controller,
    v1: bool,
    limits: &Limits,
) -> Result<(), CgroupError> {
    for (file, value, optional) in limit_files(controller, v1, limits) {
        if optional && !dir.join(file).exists() {
            continue;
        }
        write_file(dir, file, &value)?;
    }
    Ok(())
}

impl SessionCgroups {
    /// Creates the session's cgroups below `agentd/` and applies `limits`.
    /// Fails (creating nothing that stays) when a limit's controller is
    /// missing, unless `degraded` accepts it; returns what was skipped.
    pub fn create(
        layout: &Layout,
        session: &str,
        limits: &Limits,
        degraded: bool,
    ) -> Result<(Self, Vec<MissingController>), CgroupError> {
        let mut wanted = Vec::new();
        if limits.memory.is_some() {
            wanted.push(Controller::Memory);
        }
        if limits.pids.is_some() {
            wanted.push(Controller::Pids);
        }
        if limits.cpu_percent.is_some() {
            wanted.push(Controller::Cpu);
        }
        let mut skipped = Vec::new();
        let mut v2_wanted = Vec::new();
        let mut v1_wanted = Vec::new();
        for c in wanted {
            match layout.locate(c) {
                Some(None) => v2_wanted.push(c),
                Some(Some(mount)) => v1_wanted.push((c, mount.to_path_buf())),
                None if degraded => skipped.push(MissingController(c)),
                None => return Err(CgroupError::Missing(MissingController(c))),
            }
        }
        let names: Vec<&str> = v2_wanted.iter().map(|c| c.name()).collect();
        enable_controllers(layout.parent.parent().unwrap_or(&layout.v2_root), &names)?;
        let parent = Cgroup::create(layout.parent.clone())?;
        enable_controllers(parent.path(), &names)?;
        let v2 = Cgroup::create(parent.path().join(session))?;
        let mut this = Self { v2, v1: Vec::new() };
        if let Err(e) = this.apply(&v2_wanted, &v1_wanted, session, limits) {
            let _ = this.remove();
            return Err(e);
        }
        Ok((this, skipped))
    }

    fn apply(
        &mut self,
        v2: &[Controller],
        v1: &[(Controller, PathBuf)],
        session: &str,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        for c in v2 {
            write_limit(self.v2.path(), *c, false, limits)?;
        }
        for (c, mount) in v1 {
            let cg = Cgroup::create(mount.join(crate::paths::CGROUP_PARENT).join(session))?;
            let dir = cg.path().to_path_buf();
            self.v1.push(cg);
            write_limit(&dir, *c, true, limits)?;
        }
        Ok(())
    }

    /// Re-opens a session's cgroups from their recorded paths.
    pub fn open(v2: PathBuf, v1: Vec<PathBuf>) -> Self {
        Self {
            v2: Cgroup::open(v2),
            v1: v1.into_iter().map(Cgroup::open).collect(),
        }
    }

    /// Every `cgroup.procs` a session process must join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.v2)
            .chain(&self.v1)
            .map(|c| c.path().join("cgroup.procs"))
            .collect()
    }

    /// Kills every process of the session and waits until none is left.
    /// Returns how many processes there were. Freezing first makes the
    /// count exact and stops a fork bomb from racing the kill.
    pub fn kill_all(&self, deadline: Duration) -> Result<usize, CgroupError> {
        if self.v2.is_empty() {
            return Ok(0);
        }
        let freeze = self.v2.path().join("cgroup.freeze");
        let frozen = fs::write(&freeze, "1").is_ok();
        if frozen {
            let _ = self.v2.wait_event("frozen 1", Duration::from_millis(200));
        }
        let count = self.v2.processes_recursive().map(|p| p.len()).unwrap_or(0);
        self.v2.kill(deadline)?;
        // Every process is in the v2 leaf too; whatever a v1 leaf still
        // lists (only ever a process on its way out) gets the same.
        for pid in self
            .v1
            .iter()
            .flat_map(|v1| v1.processes().unwrap_or_default())
        {
            signal_kill(pid);
        }
        Ok(count)
    }

    /// Kills anything left and removes every cgroup of the session.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if self.v2.path().exists() {
            self.v2.kill(Duration::from_secs(10))?;
        }
        let mut first_error = None;
        for cg in std::iter::once(&self.v2).chain(&self.v1) {
            if let Err(e) = cg.remove() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Cgroup {
    /// Waits until `cgroup.events` has the line `line`, at most `deadline`.
    pub fn wait_event(&self, line: &str, deadline: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let events = self.path.join("cgroup.events");
        loop {
            let text = fs::read_to_string(&events).at("read", &events)?;
            if text.lines().any(|l| l == line) {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.path.clone(),
                    waited: start.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether no process is left in the cgroup's subtree (or it is gone).
    pub fn is_empty(&self) -> bool {
        fs::read_to_string(self.path.join("cgroup.events"))
            .map_or(true, |t| t.lines().any(|l| l == "populated 0"))
    }

    /// Processes in this cgroup and every descendant.
    pub fn processes_recursive(&self) -> Result<Vec<u32>, CgroupError> {
        let mut out = self.processes()?;
        if let Ok(dir) = fs::read_dir(&self.path) {
            for entry in dir.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.extend(Cgroup::open(entry.path()).processes_recursive()?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(v2: &[&str], v1: &[Controller]) -> Layout {
        Layout {
            v2_root: PathBuf::from("/sys/fs/cgroup"),
            parent: PathBuf::from("/sys/fs/cgroup/agentd"),
            v2_controllers: v2.iter().map(|s| (*s).to_owned()).collect(),
            v1: v1
                .iter()
                .map(|c| (*c, PathBuf::from(format!("/sys/fs/cgroup/{}", c.name()))))
                .collect(),
        }
    }

    #[test]
    fn controllers_are_found_in_v2_first_then_v1() {
        let hybrid = layout(&["hugetlb"], &[Controller::Memory, Controller::Pids]);
        assert_eq!(
            hybrid.locate(Controller::Memory),
            Some(Some(Path::new("/sys/fs/cgroup/memory")))
        );
        assert_eq!(hybrid.locate(Controller::Cpu), None);
        let unified = layout(&["cpu", "memory", "pids"], &[Controller::Memory]);
        assert_eq!(unified.locate(Controller::Memory), Some(None));
    }

    #[test]
    fn limit_files_per_hierarchy() {
        let limits = Limits {
            memory: Some(2 << 30),
            pids: Some(64),
            cpu_percent: Some(150),
        };
        let names = |c, v1| -> Vec<(String, String)> {
            limit_files(c, v1, &limits)
                .into_iter()
                .map(|(f, v, _)| (f.to_owned(), v))
                .collect()
        };
        assert_eq!(
            names(Controller::Memory, false),
            [
                ("memory.max".into(), "2147483648".into()),
                ("memory.swap.max".into(), "0".into())
            ]
        );
        assert_eq!(
            names(Controller::Memory, true)[1].0,
            "memory.memsw.limit_in_bytes"
        );
        assert_eq!(
            names(Controller::Cpu, false),
            [("cpu.max".into(), "150000 100000".into())]
        );
        assert_eq!(
            names(Controller::Cpu, true),
            [
                ("cpu.cfs_period_us".into(), "100000".into()),
                ("cpu.cfs_quota_us".into(), "150000".into())
            ]
        );
        assert_eq!(
            names(Controller::Pids, true),
            [("pids.max".into(), "64".into())]
        );
    }

    /// A cgroupfs faked with plain files in a temporary directory (as
    /// youki tests its managers): a hybrid host with memory and pids in
    /// cgroup2 and cpu as a v1 hierarchy.
    fn fake_host(root: &Path) -> Layout {
        let v2_root = root.join("unified");
        fs::create_dir_all(v2_root.join("agentd")).unwrap();
        fs::create_dir_all(root.join("cpu")).unwrap();
        Layout {
            v2_root: v2_root.clone(),
            parent: v2_root.join("agentd"),
            v2_controllers: vec!["memory".into(), "pids".into()],
            v1: vec![(Controller::Cpu, root.join("cpu"))],
        }
    }

    #[test]
    fn limits_are_written_where_each_controller_lives() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_host(dir.path());
        // The kernel offers swap accounting here.
        let leaf = layout.parent.join("s1");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(leaf.join("memory.swap.max"), "max").unwrap();
        let limits = Limits {
            memory: Some(1 << 30),
            pids: Some(100),
            cpu_percent: Some(50),
        };
        let (cgroups, skipped) = SessionCgroups::create(&layout, "s1", &limits, false).unwrap();
        assert!(skipped.is_empty());
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(leaf.join("memory.max")), "1073741824");
        assert_eq!(read(leaf.join("memory.swap.max")), "0");
        assert_eq!(read(leaf.join("pids.max")), "100");
        // Controllers handed down to the parent and to the leaves.
        assert_eq!(
            read(layout.v2_root.join("cgroup.subtree_control")),
            "+memory +pids"
        );
        assert_eq!(
            read(layout.parent.join("cgroup.subtree_control")),
            "+memory +pids"
        );
        let cpu = dir.path().join("cpu/agentd/s1");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(cgroups.v1.len(), 1);
        assert_eq!(
            cgroups.procs_files(),
            [leaf.join("cgroup.procs"), cpu.join("cgroup.procs")]
        );
    }

    #[test]
    fn a_missing_controller_fails_closed_unless_degraded() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = fake_host(dir.path());
        layout.v1.clear();
        let limits = Limits {
            cpu_percent: Some(50),
            ..Limits::default()
        };
        let err = SessionCgroups::create(&layout, "s2", &limits, false).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::Missing(MissingController(Controller::Cpu))
        ));
        assert!(!layout.parent.join("s2").exists(), "nothing created");
        let (_, skipped) = SessionCgroups::create(&layout, "s3", &limits, true).unwrap();
        assert_eq!(
            skipped.len(),
            1,
            "degraded: the cpu limit is reported skipped"
        );
        assert!(!layout.parent.join("s3").join("cpu.max").exists());
    }
}
