//! The Landlock ruleset of a session, built in the parent. The child only
//! calls `landlock_restrict_self` on the prepared descriptor.
use std::{os::fd::OwnedFd, path::PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

use super::SandboxError;

/// Filesystem access, resolved to concrete paths for one session.
#[derive(Clone, Debug, Default)]
pub struct FsRules {
    /// Read-only roots.
    pub read: Vec<PathBuf>,
    /// Read-write roots (everything but execute).
    pub read_write: Vec<PathBuf>,
    /// Roots whose files may be executed (and read).
    pub execute: Vec<PathBuf>,
    /// Device files the session may read, write and ioctl.
    pub devices: Vec<PathBuf>,
}

/// A ruleset ready to be enforced.
#[derive(Debug)]
pub struct Prepared {
    /// The ruleset descriptor (`landlock_restrict_self` takes it).
    pub fd: OwnedFd,
    /// The ABI the ruleset uses.
    pub abi: u32,
    /// Policy paths that do not exist here and were skipped.
    pub skipped: Vec<PathBuf>,
    /// Rights the kernel lacks and that were accepted as degraded.
    pub degraded: Vec<&'static str>,
}

/// Every right of the ABI versions agentd knows, the kernel's `abi` mapped
/// onto the landlock crate's.
fn crate_abi(abi: u32) -> ABI {
    match abi {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        _ => ABI::V10,
    }
}

/// The ABI at which every guarantee of SPEC.md is available (truncate,
/// refer, device ioctl, abstract-socket and signal scoping).
pub const FULL_ABI: u32 = 6;

/// What an ABI below [`FULL_ABI`] lacks.
pub fn missing_rights(abi: u32) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if abi < 2 {
        missing.push("refer (rename/link across rules)");
    }
    if abi < 3 {
        missing.push("truncate");
    }
    if abi < 5 {
        missing.push("ioctl on devices");
    }
    if abi < 6 {
        missing.push("abstract unix socket and signal scoping");
    }
    missing
}

/// Builds the ruleset for `rules` at the kernel's ABI `kernel_abi`. Below
/// [`FULL_ABI`] this fails unless `degraded` is allowed.
pub fn prepare(rules: &FsRules, kernel_abi: u32, degraded: bool) -> Result<Prepared, SandboxError> {
    if kernel_abi == 0 {
        return Err(SandboxError::LandlockUnavailable);
    }
    let missing = missing_rights(kernel_abi);
    if !missing.is_empty() && !degraded {
        return Err(SandboxError::LandlockTooOld {
            abi: kernel_abi,
            missing: missing.join(", "),
        });
    }
    let abi = crate_abi(kernel_abi);
    let all = AccessFs::from_all(abi);
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let read_write = all & !AccessFs::Execute;
    let execute = read | AccessFs::Execute;
    let device = (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev) & all;

    let err = SandboxError::Landlock;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(err)?;
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    let mut skipped = Vec::new();
    let groups: [(&[PathBuf], BitFlags<AccessFs>); 4] = [
        (&rules.read, read),
        (&rules.read_write, read_write),
        (&rules.execute, execute),
        (&rules.devices, device),
    ];
    for (paths, access) in groups {
        for path in paths {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                Err(_) if !path.exists() => {
                    skipped.push(path.clone());
                    continue;
                }
                Err(e) => {
                    return Err(SandboxError::Path {
                        path: path.clone(),
                        why: e.to_string(),
                    });
                }
            };
            // Directory-only rights are invalid on files.
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(err)?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    let fd = fd.ok_or(SandboxError::LandlockUnavailable)?;
    Ok(Prepared {
        fd,
        abi: kernel_abi,
        skipped,
        degraded: missing,
    })
}
