//! agentd's kernel programs: loaded once per host (first come, under a
//! lock), pinned under bpffs so that every agentd process shares one
//! attachment and a restart keeps enforcing, and fed per-session rules.
//!
//! Program types: `cgroup_sock_addr` and `cgroup_sock` (egress, bind, raw
//! sockets), BTF tracepoints (exec, fork, exit) and syscall tracepoints
//! (refused execs, file events). Trampoline-based types (BPF LSM, fentry)
//! are not used: some kernels (this project's CI among them) refuse to load
//! them; the exec allowlist is enforced by Landlock instead.
mod btf;
pub mod rules;

use std::{
    fs::{self, File},
    os::{fd::AsFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use agentd_common::{
    Counter, Offset, PortRules, RuleKeyV4, RuleKeyV6, SLOT_BIND, SessionEntry, map, program,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, TracePoint,
        links::FdLink,
    },
};
pub use btf::{Btf, BtfError};
use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::{host::mountinfo, paths};

/// The kernel object built by `build.rs`, embedded in the binary. Empty when
/// agentd was built with `AYA_BUILD_SKIP=1`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentd-ebpf"));

/// What went wrong with the kernel programs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EbpfError {
    /// This binary carries no kernel programs.
    #[error("this agentd was built without its eBPF programs (AYA_BUILD_SKIP)")]
    NoObject,
    /// The embedded object could not be parsed or its maps created.
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The object lacks a program agentd needs.
    #[error("eBPF program {0} is missing from the embedded object")]
    MissingProgram(&'static str),
    /// The object lacks a map agentd needs.
    #[error("eBPF map {0} is missing from the embedded object")]
    MissingMap(&'static str),
    /// The verifier or the kernel refused a program.
    #[error("cannot load eBPF program {program}: {source}")]
    Load {
        /// Program name.
        program: &'static str,
        /// aya's error, with the verifier log when there is one.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching a program failed.
    #[error("cannot attach {program}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
    /// Kernel BTF lacks what the programs read.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// Pinning, mounting bpffs or the lock failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path involved.
        path: PathBuf,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// Programs of another agentd version are loaded and sessions use them.
    #[error("programs of another agentd build are loaded and {0} sessions use them")]
    VersionInUse(usize),
    /// Too many live sessions.
    #[error("no free session slot")]
    NoSlot,
}

impl EbpfError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::NoObject => "rebuild agentd without AYA_BUILD_SKIP (run `cargo xtask setup` first)".into(),
            Self::Object(_) | Self::Load { .. } | Self::Attach { .. } | Self::Btf(_) => {
                "run as root on a kernel with BPF, BTF and cgroup2; see `agentd doctor`".into()
            }
            Self::MissingProgram(_) | Self::MissingMap(_) => "this agentd binary is inconsistent; rebuild it".into(),
            Self::Map { .. } | Self::NoSlot => "check `agentd doctor`; a map may be full".into(),
            Self::Io { .. } => "check that bpffs can be mounted at /sys/fs/bpf".into(),
            Self::VersionInUse(_) => "stop the running sessions (agentd ps / agentd kill) before switching agentd versions".into(),
        }
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |e| EbpfError::Map {
        map,
        source: Box::new(e),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EbpfError + 'a {
    move |source| EbpfError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

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
const SYSCALL_TRACEPOINTS: [(&str, &str); 10] = [
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
];

/// BTF tracepoints.
const TRACEPOINTS: [(&str, &str); 3] = [
    (program::TP_SCHED_PROCESS_EXEC, "sched_process_exec"),
    (program::TP_SCHED_PROCESS_FORK, "sched_process_fork"),
    (program::TP_SCHED_PROCESS_EXIT, "sched_process_exit"),
];

/// Every map userspace opens by pin.
const PINNED_MAPS: [&str; 5] = [
    map::SESSIONS,
    map::COUNTERS,
    map::EGRESS_V4,
    map::EGRESS_V6,
    map::EVENTS,
];

/// The offsets the programs read, from kernel BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<Vec<(Offset, u64)>, BtfError> {
    let table: [(Offset, &str, &[&str]); 12] = [
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
    ];
    table
        .iter()
        .map(|(which, outer, path)| btf.offset_of(outer, path).map(|o| (*which, u64::from(o))))
        .collect()
}

/// Mounts tracefs at /sys/kernel/tracing if no tracefs is mounted (the
/// syscall tracepoints are found there).
fn ensure_tracefs() -> Result<(), EbpfError> {
    let mounts = crate::host::mounts();
    if mountinfo::of_type(&mounts, "tracefs").next().is_some() {
        return Ok(());
    }
    let target = Path::new(paths::TRACEFS);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| io_err("mount tracefs at", target)(e.into()))
}

/// The bpffs directory holding agentd's pins (bpffs is mounted there,
/// `nosuid,nodev,noexec`, when no bpf filesystem is mounted).
pub fn pin_dir() -> Result<PathBuf, EbpfError> {
    let mounts = crate::host::mounts();
    if let Some(m) = mountinfo::of_type(&mounts, "bpf").next() {
        return Ok(m.mount_point.join("agentd"));
    }
    let target = Path::new(paths::BPFFS);
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| io_err("mount bpffs at", target)(e.into()))?;
    Ok(target.join("agentd"))
}

fn object_digest() -> String {
    Sha256::digest(OBJECT)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const VERSION_FILE: &str = "/run/agentd/ebpf.version";
/// In a session's state directory: the session is registered (see
/// [`Registration::marker`]).
pub const REGISTERED_MARKER: &str = "ebpf";

/// The maps of the loaded programs, opened from their pins.
#[derive(Clone, Debug)]
pub struct Kernel {
    pin_dir: PathBuf,
    /// Where session cgroups live (known when attached, not when only
    /// opened): registrations of cgroups no longer there are stale.
    cgroup_parent: Option<PathBuf>,
}

/// Everything the kernel needs to know about one session.
#[derive(Debug, Default, Clone)]
pub struct Registration {
    /// The session's cgroup2 id.
    pub cgroup_id: u64,
    /// Session flags (`agentd_common::SESSION_*`).
    pub flags: u32,
    /// Egress trie entries.
    pub egress: Vec<(IpNet, PortRules)>,
    /// Bind trie entries.
    pub bind: Vec<(IpNet, PortRules)>,
    /// A file written, under the loader's lock, once the session is
    /// registered: the session now relies on the loaded programs, which a
    /// different build must not replace while it lives.
    pub marker: Option<PathBuf>,
    /// The session's resolver, where its DNS is redirected (with
    /// `SESSION_DNS_REDIRECT`): its IPv4 address (port 53) and its port
    /// on `::1`, if any.
    pub dns: Option<(std::net::Ipv4Addr, Option<u16>)>,
}

/// What was registered, to remove it again.
#[derive(Debug, Clone)]
pub struct Registered {
    registration: Registration,
    slot: u32,
}

impl Registered {
    /// The session's slot in every map.
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

fn open_map(dir: &Path, name: &'static str) -> Result<MapData, EbpfError> {
    MapData::from_pin(dir.join(name)).map_err(map_err(name))
}

fn lpm_key_v4(slot: u32, net: &ipnet::Ipv4Net) -> Key<RuleKeyV4> {
    Key::new(
        32 + u32::from(net.prefix_len()),
        RuleKeyV4 {
            slot: slot.to_be_bytes(),
            addr: net.network().octets(),
        },
    )
}

fn lpm_key_v6(slot: u32, net: &ipnet::Ipv6Net) -> Key<RuleKeyV6> {
    Key::new(
        32 + u32::from(net.prefix_len()),
        RuleKeyV6 {
            slot: slot.to_be_bytes(),
            addr: net.network().octets(),
        },
    )
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
        let digest = format!("{} {}", object_digest(), cgroup_parent.display());
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
        fs::write(VERSION_FILE, &digest).map_err(io_err("write", Path::new(VERSION_FILE)))?;
        Ok(kernel)
    }

    /// Opens already pinned programs (no loading): for readers such as
    /// `agentd doctor` or the event collector.
    pub fn open_pinned() -> Result<Self, EbpfError> {
        let dir = pin_dir()?;
        if !dir.join(map::SESSIONS).exists() {
            return Err(EbpfError::Io {
                op: "open",
                path: dir.join(map::SESSIONS),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(Self {
            pin_dir: dir,
            cgroup_parent: None,
        })
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn sessions(&self) -> Result<HashMap<MapData, u64, SessionEntry>, EbpfError> {
        HashMap::try_from(Map::HashMap(open_map(&self.pin_dir, map::SESSIONS)?))
            .map_err(map_err(map::SESSIONS))
    }

    /// Puts a session's rules in the maps, then the session itself (so that
    /// its cgroup is enforced from the moment it is known, with every rule
    /// in place). The slot is chosen under the lock file.
    pub fn register(&self, reg: Registration) -> Result<Registered, EbpfError> {
        let _lock = lock()?;
        self.prune_stale()?;
        let mut sessions = self.sessions()?;
        let used: Vec<u32> = sessions
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.slot)
            .collect();
        let start = u32::try_from(reg.cgroup_id & 0x3fff_ffff).unwrap_or(0);
        let slot = (0..agentd_common::MAX_SESSIONS * 4)
            .map(|i| (start + i) & 0x3fff_ffff)
            .find(|s| !used.contains(s))
            .ok_or(EbpfError::NoSlot)?;
        let registered = Registered {
            registration: reg,
            slot,
        };
        // A free slot has no rules; clear it anyway in case a registration
        // died half-way, so no stale rule can apply to this session.
        self.clear_slot(slot)?;
        if let Err(e) = self.write_rules(&registered, true) {
            let _ = self.write_rules(&registered, false);
            return Err(e);
        }
        let entry = SessionEntry {
            slot,
            flags: registered.registration.flags,
            dns_ip4: registered
                .registration
                .dns
                .map_or([0; 4], |(a, _)| a.octets()),
            dns_port6_be: registered
                .registration
                .dns
                .and_then(|(_, p)| p)
                .map_or(0, u16::to_be),
            reserved: 0,
        };
        sessions
            .insert(&registered.registration.cgroup_id, &entry, 0)
            .map_err(map_err(map::SESSIONS))?;
        if let Some(m) = &registered.registration.marker {
            fs::write(m, fs::read_to_string(VERSION_FILE).unwrap_or_default())
                .map_err(io_err("write", m))?;
        }
        Ok(registered)
    }

    /// Removes a session and its rules.
    pub fn unregister(&self, registered: &Registered) -> Result<(), EbpfError> {
        let _lock = lock()?;
        let mut sessions = self.sessions()?;
        match sessions.remove(&registered.registration.cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map::SESSIONS)(e)),
        }
        // Every rule of the slot, including those DNS answers added.
        self.clear_slot(registered.slot)
    }

    /// Replaces a session's egress entries `old` with `new` (entries for
    /// DNS answers come and go): new and changed entries are written
    /// first, then the ones no longer wanted removed.
    pub fn replace_egress(
        &self,
        slot: u32,
        old: &[(IpNet, PortRules)],
        new: &[(IpNet, PortRules)],
    ) -> Result<(), EbpfError> {
        let (changed, gone) = rules::diff(old, new);
        self.write_entries(slot, &changed, true)?;
        self.write_entries(slot, &gone, false)
    }

    /// Removes the registration of the session with cgroup id
    /// `cgroup_id`, and every rule of its slot (for sessions torn down by
    /// someone other than their supervisor).
    pub fn unregister_cgroup(&self, cgroup_id: u64) -> Result<(), EbpfError> {
        let _lock = lock()?;
        let mut sessions = self.sessions()?;
        let Ok(entry) = sessions.get(&cgroup_id, 0) else {
            return Ok(());
        };
        let _ = sessions.remove(&cgroup_id);
        self.clear_slot(entry.slot)
    }

    /// Drops registrations whose cgroup is gone (their supervisor and
    /// whoever killed the session failed to), with their rules. Returns
    /// how many live registrations remain. Needs the lock and a known
    /// cgroup parent (else nothing is pruned).
    fn prune_stale(&self) -> Result<usize, EbpfError> {
        let mut sessions = self.sessions()?;
        let all: Vec<(u64, SessionEntry)> = sessions.iter().filter_map(Result::ok).collect();
        let Some(parent) = &self.cgroup_parent else {
            return Ok(all.len());
        };
        // Live: the cgroups under the parent (sessions being set up are
        // there before their state names them), and every cgroup a
        // session's state names (sessions under an earlier parent).
        let ino = |m: fs::Metadata| std::os::unix::fs::MetadataExt::ino(&m);
        let mut live: std::collections::HashSet<u64> = fs::read_dir(parent)
            .map_err(io_err("read", parent))?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(fs::Metadata::is_dir)
            .map(ino)
            .collect();
        live.extend(
            crate::session::state::list()
                .into_iter()
                .flatten()
                .filter_map(|st| fs::metadata(&st.cgroup).ok())
                .map(ino),
        );
        let mut remaining = 0;
        for (id, entry) in all {
            if live.contains(&id) {
                remaining += 1;
            } else {
                tracing::info!(cgroup_id = id, "removing a stale session registration");
                let _ = sessions.remove(&id);
                self.clear_slot(entry.slot)?;
            }
        }
        Ok(remaining)
    }

    /// The pinned IPv4 and IPv6 egress tries.
    fn egress_tries(&self) -> Result<(EgressTrie<RuleKeyV4>, EgressTrie<RuleKeyV6>), EbpfError> {
        Ok((
            egress_trie(&self.pin_dir, map::EGRESS_V4)?,
            egress_trie(&self.pin_dir, map::EGRESS_V6)?,
        ))
    }

    /// Removes every egress and bind rule of `slot`.
    fn clear_slot(&self, slot: u32) -> Result<(), EbpfError> {
        let ours = |key_slot: [u8; 4]| u32::from_be_bytes(key_slot) & !SLOT_BIND == slot;
        let (mut v4, mut v6) = self.egress_tries()?;
        let keys: Vec<_> = v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ours(k.data().slot))
            .collect();
        for k in keys {
            ignore_missing(v4.remove(&k), false, map::EGRESS_V4)?;
        }
        let keys: Vec<_> = v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ours(k.data().slot))
            .collect();
        for k in keys {
            ignore_missing(v6.remove(&k), false, map::EGRESS_V6)?;
        }
        Ok(())
    }

    fn write_rules(&self, r: &Registered, insert: bool) -> Result<(), EbpfError> {
        self.write_entries(r.slot, &r.registration.egress, insert)?;
        self.write_entries(r.slot | SLOT_BIND, &r.registration.bind, insert)
    }

    /// Inserts (or removes) `entries` under `slot` (with `SLOT_BIND` for
    /// bind rules).
    fn write_entries(
        &self,
        slot: u32,
        entries: &[(IpNet, PortRules)],
        insert: bool,
    ) -> Result<(), EbpfError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (mut v4, mut v6) = self.egress_tries()?;
        for (net, rules) in entries {
            let (result, which) = match net {
                IpNet::V4(n) => {
                    let key = lpm_key_v4(slot, n);
                    let r = if insert {
                        v4.insert(&key, rules, 0)
                    } else {
                        v4.remove(&key)
                    };
                    (r, map::EGRESS_V4)
                }
                IpNet::V6(n) => {
                    let key = lpm_key_v6(slot, n);
                    let r = if insert {
                        v6.insert(&key, rules, 0)
                    } else {
                        v6.remove(&key)
                    };
                    (r, map::EGRESS_V6)
                }
            };
            ignore_missing(result, insert, which)?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, EbpfError> {
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open_map(&self.pin_dir, map::COUNTERS)?))
                .map_err(map_err(map::COUNTERS))?;
        Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = array.get(&(*c as u32), 0).map_err(map_err(map::COUNTERS))?;
                Ok((*c, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The event ring buffer (one consumer at a time: see `audit::collect`).
    pub fn events(&self) -> Result<RingBuf<MapData>, EbpfError> {
        RingBuf::try_from(Map::RingBuf(open_map(&self.pin_dir, map::EVENTS)?))
            .map_err(map_err(map::EVENTS))
    }

    /// The cgroup ids of every registered session.
    pub fn registered_cgroups(&self) -> Result<Vec<u64>, EbpfError> {
        Ok(self.sessions()?.keys().filter_map(Result::ok).collect())
    }
}

/// An egress trie keyed by `K` (IPv4 or IPv6 rule keys).
type EgressTrie<K> = LpmTrie<MapData, K, PortRules>;

fn egress_trie<K: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<EgressTrie<K>, EbpfError> {
    LpmTrie::try_from(Map::LpmTrie(open_map(pin_dir, name)?)).map_err(map_err(name))
}

fn ignore_missing(
    result: Result<(), MapError>,
    insert: bool,
    map: &'static str,
) -> Result<(), EbpfError> {
    match result {
        Ok(()) => Ok(()),
        Err(MapError::KeyNotFound) if !insert => Ok(()),
        Err(MapError::SyscallError(e))
            if !insert && e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(map_err(map)(e)),
    }
}

/// Serialises loading, registration and pruning across agentd processes.
fn lock() -> Result<Flock<File>, EbpfError> {
    paths::create_run_dir().map_err(io_err("mkdir", Path::new(paths::RUN_DIR)))?;
    let path = Path::new(paths::RUN_DIR).join("ebpf.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io_err("flock", &path)(e.into()))
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
                fs::remove_file(e.path()).map_err(io_err("unpin", &e.path()))?;
            }
        }
    }
    Ok(())
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), EbpfError> {
    link.pin(path).map(drop).map_err(|e| EbpfError::Io {
        op: "pin",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
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
    fs::create_dir_all(dir.join("links")).map_err(io_err("mkdir", dir))?;
    for name in PINNED_MAPS {
        let path = dir.join(name);
        ebpf.map(name)
            .ok_or(EbpfError::MissingMap(name))?
            .pin(&path)
            .map_err(|e| EbpfError::Io {
                op: "pin",
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
    }
    let links = dir.join("links");
    let cgroup = File::open(cgroup_parent).map_err(io_err("open", cgroup_parent))?;
    let to_fd = |name: &'static str| {
        move |e: aya::programs::links::LinkError| EbpfError::Attach {
            program: name,
            source: Box::new(ProgramError::IOError(std::io::Error::other(e.to_string()))),
        }
    };
    // The cgroup program types share no trait for attaching; the steps are
    // the same for each.
    macro_rules! attach_to_cgroup {
        ($ty:ty, $name:expr) => {{
            let name = $name;
            let prog = typed::<$ty>(&mut ebpf, name)?;
            // bpf_link attachments always coexist with other programs; the
            // mode flag must be 0 for links.
            let id = prog
                .attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(attach_err(name))?;
            let link: FdLink = prog
                .take_link(id)
                .map_err(attach_err(name))?
                .try_into()
                .map_err(to_fd(name))?;
            pin_link(link, &links.join(name))?;
        }};
    }
    for name in SOCK_ADDR {
        attach_to_cgroup!(CgroupSockAddr, name);
    }
    attach_to_cgroup!(CgroupSock, program::CGROUP_SOCK_CREATE);
    ensure_tracefs()?;
    for (name, tracepoint) in SYSCALL_TRACEPOINTS {
        let prog = typed::<TracePoint>(&mut ebpf, name)?;
        let id = prog
            .attach("syscalls", tracepoint)
            .map_err(attach_err(name))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(attach_err(name))?
            .try_into()
            .map_err(to_fd(name))?;
        pin_link(link, &links.join(name))?;
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

/// Loads every program into the kernel without attaching anything (the
/// verifier check `agentd doctor` runs); returns their names.
pub fn verify() -> Result<Vec<String>, EbpfError> {
    let (ebpf, _) = load_object()?;
    let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    names.sort();
    Ok(names)
}
