//! agentd's kernel programs: loading the embedded object, attaching the
//! egress hooks to a cgroup, and registering sessions in the maps.
use std::{fs::File, path::Path};

use agentd_common::{Counter, SESSION_DEFAULT, SessionEntry, map, program};
use aya::{
    Ebpf,
    maps::{HashMap, MapError, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError},
};

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
    /// Attaching a program to a cgroup failed.
    #[error("cannot attach {program} to {cgroup}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// The cgroup directory.
        cgroup: String,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Opening the cgroup directory failed.
    #[error("cannot open cgroup {cgroup}: {source}")]
    OpenCgroup {
        /// The cgroup directory.
        cgroup: String,
        /// errno.
        #[source]
        source: std::io::Error,
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
}

impl EbpfError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::NoObject => {
                "rebuild agentd without AYA_BUILD_SKIP (run `cargo xtask setup` first)".into()
            }
            Self::Object(_) | Self::Load { .. } => {
                "run as root on Linux >= 5.8 with BPF enabled; see `agentd doctor`".into()
            }
            Self::MissingProgram(_) | Self::MissingMap(_) => {
                "this agentd binary is inconsistent; rebuild it".into()
            }
            Self::Attach { .. } | Self::OpenCgroup { .. } => {
                "the cgroup must be in the cgroup2 hierarchy; see `agentd doctor`".into()
            }
            Self::Map { .. } => "check `agentd doctor`; the map may be full".into(),
        }
    }
}

/// The `cgroup_sock_addr` program `name` of the object.
fn sock_addr_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, EbpfError> {
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|e| EbpfError::Load {
            program: name,
            source: Box::new(e),
        })
}

/// agentd's programs, loaded into the kernel (and verified). Dropping this
/// detaches and unloads everything it attached.
#[derive(Debug)]
pub struct Programs {
    ebpf: Ebpf,
}

impl Programs {
    /// Loads the embedded object and every program in it.
    pub fn load() -> Result<Self, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| EbpfError::Object(Box::new(e)))?;
        for name in [program::CGROUP_CONNECT4, program::CGROUP_CONNECT6] {
            sock_addr_program(&mut ebpf, name)?
                .load()
                .map_err(|e| EbpfError::Load {
                    program: name,
                    source: Box::new(e),
                })?;
        }
        Ok(Self { ebpf })
    }

    /// The names of the loaded programs.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.ebpf.programs().map(|(n, _)| n).collect();
        names.sort_unstable();
        names
    }

    /// Attaches the egress hooks to `cgroup` (a cgroup2 directory). They
    /// then run for every task in it and below it; tasks in a registered
    /// session are denied.
    pub fn attach_egress(&mut self, cgroup: &Path) -> Result<(), EbpfError> {
        let dir = File::open(cgroup).map_err(|source| EbpfError::OpenCgroup {
            cgroup: cgroup.display().to_string(),
            source,
        })?;
        for name in [program::CGROUP_CONNECT4, program::CGROUP_CONNECT6] {
            let prog = sock_addr_program(&mut self.ebpf, name)?;
            // A bpf_link attachment (Linux >= 5.7) always coexists with other
            // programs on the cgroup; the mode flag must be 0 for links.
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| EbpfError::Attach {
                    program: name,
                    cgroup: cgroup.display().to_string(),
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    fn sessions(
        &mut self,
    ) -> Result<HashMap<&mut aya::maps::MapData, u64, SessionEntry>, EbpfError> {
        let m = self
            .ebpf
            .map_mut(map::SESSIONS)
            .ok_or(EbpfError::MissingMap(map::SESSIONS))?;
        HashMap::try_from(m).map_err(|e| EbpfError::Map {
            map: map::SESSIONS,
            source: Box::new(e),
        })
    }

    /// Marks the cgroup with id `cgroup_id` as a session: its egress is
    /// denied from now on.
    pub fn add_session(&mut self, cgroup_id: u64) -> Result<(), EbpfError> {
        let entry = SessionEntry {
            flags: SESSION_DEFAULT,
            reserved: 0,
        };
        self.sessions()?
            .insert(&cgroup_id, &entry, 0)
            .map_err(|e| EbpfError::Map {
                map: map::SESSIONS,
                source: Box::new(e),
            })
    }

    /// Forgets a session's cgroup.
    pub fn remove_session(&mut self, cgroup_id: u64) -> Result<(), EbpfError> {
        match self.sessions()?.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(EbpfError::Map {
                map: map::SESSIONS,
                source: Box::new(e),
            }),
        }
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, EbpfError> {
        let err = |e| EbpfError::Map {
            map: map::COUNTERS,
            source: Box::new(e),
        };
        let m = self
            .ebpf
            .map(map::COUNTERS)
            .ok_or(EbpfError::MissingMap(map::COUNTERS))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(m).map_err(err)?;
        Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = array.get(&(*c as u32), 0).map_err(err)?;
                Ok((*c, per_cpu.iter().sum()))
            })
            .collect()
    }
}
