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
mod load;
mod registry;
pub mod rules;
mod unix;

use std::path::PathBuf;

use agentd_common::PortRules;
use aya::{maps::MapError, programs::ProgramError};
pub use btf::{Btf, BtfError};
use ipnet::IpNet;
pub use registry::ExecTokens;

/// A device number as the kernel encodes it inside (`MAJOR << 20 |
/// MINOR`, what BPF programs read from `super_block.s_dev`), from the
/// `st_dev` userspace sees.
pub fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

pub use self::load::{kernel_offsets, pin_dir, verify};
use crate::error::PathError;

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
    /// Mounting bpffs or tracefs, the lock or a marker file failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Pinning a map or link failed.
    #[error("cannot pin {}: {source}", path.display())]
    Pin {
        /// The pin's path.
        path: PathBuf,
        /// aya's error.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A program's link could not be made pinnable.
    #[error("cannot pin the link of {program}: {source}")]
    Link {
        /// Program name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// The programs are not loaded (nothing pinned yet).
    #[error("agentd's eBPF programs are not loaded ({} does not exist)", .0.display())]
    NotLoaded(PathBuf),
    /// The session's rules do not fit in the maps.
    #[error(transparent)]
    Rules(#[from] rules::TooManyRules),
    /// Programs of another agentd version are loaded and sessions use them.
    #[error("programs of another agentd build are loaded and {0} sessions use them")]
    VersionInUse(usize),
    /// The unix socket hooks could not be loaded or attached.
    #[error("cannot {op} the unix socket hook {program}: {detail}")]
    Unix {
        /// Program name.
        program: &'static str,
        /// What failed (`load`, `attach`).
        op: &'static str,
        /// errno and the verifier's log.
        detail: String,
    },
    /// The kernel has no cgroup hooks for unix sockets.
    #[error(
        "this kernel has no cgroup hooks for unix sockets (connect_unix, sendmsg_unix: Linux >= 6.7), \
         so a thread swapping descriptors during the gate's check could connect a unix socket \
         the session can name"
    )]
    NoUnixHooks,
    /// Too many live sessions.
    #[error("no free session slot")]
    NoSlot,
    /// The session would take more of the shared maps than its quota.
    #[error("{0}")]
    Quota(String),
}

impl EbpfError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NoObject => "rebuild agentd without AYA_BUILD_SKIP (run `cargo xtask setup` first)".into(),
            Self::NoUnixHooks => "upgrade to Linux >= 6.7, or set `allow_degraded = true` in [enforcement]".into(),
            Self::Object(_) | Self::Load { .. } | Self::Attach { .. } | Self::Unix { .. } | Self::Btf(_) => {
                "run as root on a kernel with BPF, BTF and cgroup2; see `agentd doctor`".into()
            }
            Self::MissingProgram(_) | Self::MissingMap(_) => "this agentd binary is inconsistent; rebuild it".into(),
            Self::Map { .. } | Self::NoSlot => "check `agentd doctor`; a map may be full".into(),
            Self::Quota(_) => "use fewer, wider rules (a CIDR range instead of single addresses), \
                               end some of your sessions, or have root start it"
                .into(),
            Self::Io(_) | Self::Pin { .. } | Self::Link { .. } => {
                "check that bpffs can be mounted at /sys/fs/bpf".into()
            }
            Self::NotLoaded(_) => "run a session or start the daemon: the programs load with the first one".into(),
            Self::Rules(_) => "use fewer or wider network rules".into(),
            Self::VersionInUse(_) => "stop the running sessions (agentd ps / agentd kill) before switching agentd versions".into(),
        })
    }
}

pub(crate) fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |e| EbpfError::Map {
        map,
        source: Box::new(e),
    }
}

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
    /// cgroup ids of live sessions not under the parent cgroup (from
    /// their state): registrations of any other cgroup that is gone are
    /// pruned, this one's never.
    pub live_elsewhere: Vec<u64>,
    /// The session's cgroup2 id.
    pub cgroup_id: u64,
    /// Session flags (`agentd_common::SESSION_*`).
    pub flags: u32,
    /// Files the session may run only as an ELF interpreter: (device as
    /// the kernel encodes it, inode).
    pub loaders: Vec<(u64, u64)>,
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
    /// How much of the shared maps the session may take.
    pub quota: Quota,
}

/// A session's share of the shared maps (counted per trie: IPv4, IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Most entries (egress and bind rules) the session itself may hold.
    pub session: usize,
    /// For a caller other than root: the cgroup ids of its other live
    /// sessions, the most entries all of them together (this one
    /// included) may hold, and the most sessions it may run at once.
    pub caller: Option<CallerQuota>,
}

impl Default for Quota {
    /// A trie's size: no share beyond the map itself.
    fn default() -> Self {
        Self {
            session: agentd_common::MAX_EGRESS_ENTRIES as usize,
            caller: None,
        }
    }
}

/// The share of one (non-root) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerQuota {
    /// cgroup ids of the caller's other live sessions.
    pub others: Vec<u64>,
    /// Most entries per trie across the caller's sessions.
    pub entries: usize,
    /// Most live sessions.
    pub sessions: usize,
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
