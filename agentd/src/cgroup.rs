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

use crate::host::mountinfo;

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No cgroup2 mount in `/proc/self/mountinfo`.
    #[error("no cgroup2 hierarchy is mounted")]
    NoCgroup2,
    /// A file operation on the cgroup failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cgroupfs path.
        path: PathBuf,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// Processes were still in the cgroup after the deadline.
    #[error("cgroup {path} still has processes after {waited:?}")]
    NotEmpty {
        /// The cgroup directory.
        path: PathBuf,
        /// How long agentd waited.
        waited: Duration,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts = crate::host::mounts();
    mountinfo::of_type(&mounts, "cgroup2")
        .next()
        .map(|m| m.mount_point.clone())
        .ok_or(CgroupError::NoCgroup2)
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
            Err(e) => Err(io_err("mkdir", &path)(e)),
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
            .map_err(io_err("stat", &self.path))
    }

    /// Moves process `pid` (and all its threads) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(io_err("write", &procs))
    }

    /// The processes in this cgroup (not in its children).
    pub fn processes(&self) -> Result<Vec<u32>, CgroupError> {
        let procs = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&procs).map_err(io_err("read", &procs))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process in the cgroup and its children (`cgroup.kill`),
    /// then waits until it is empty, at most `deadline`.
    pub fn kill(&self, deadline: Duration) -> Result<(), CgroupError> {
        let kill = self.path.join("cgroup.kill");
        fs::write(&kill, "1").map_err(io_err("write", &kill))?;
        self.wait_empty(deadline)
    }

    /// Waits until no process is left in the cgroup's subtree.
    pub fn wait_empty(&self, deadline: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let events = self.path.join("cgroup.events");
        loop {
            let text = fs::read_to_string(&events).map_err(io_err("read", &events))?;
            if text.lines().any(|l| l == "populated 0") {
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
                Err(e) => return Err(io_err("rmdir", &self.path)(e)),
            }
        }
        fs::remove_dir(&self.path).map_err(io_err("rmdir", &self.path))
    }
}
