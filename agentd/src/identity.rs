//! The Unix identity a session runs as: a dynamic UID/GID leased from a
//! range (as systemd's DynamicUser), or a named non-root user. Never root,
//! never the caller.
use std::{
    fs::{self, File, OpenOptions},
    ops::RangeInclusive,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    unistd::{Gid, Group, Uid, User},
};

use crate::{
    error::{AtPath as _, PathError},
    paths,
    policy::UserSpec,
};

/// systemd's DynamicUser range, the default for dynamic identities.
pub const DEFAULT_RANGE: RangeInclusive<u32> = 61184..=65519;

/// Why no identity could be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Every UID in the range is taken.
    #[error(
        "no free UID in {first}-{last}: every one is used by a passwd entry, a group, a process or a live session"
    )]
    Exhausted {
        /// First UID of the range.
        first: u32,
        /// Last UID of the range.
        last: u32,
    },
    /// The named user does not exist.
    #[error("user {0:?} does not exist on this host")]
    NoSuchUser(String),
    /// The named user is root or the caller.
    #[error("user {name:?} (uid {uid}) cannot run an agent: {why}")]
    Forbidden {
        /// User name.
        name: String,
        /// Its UID.
        uid: u32,
        /// Why not.
        why: &'static str,
    },
    /// Reading the user database or the lock directory failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// A UID/GID held for one session. Dropping it releases a dynamic lease.
#[derive(Debug)]
pub struct Identity {
    /// The session's UID.
    pub uid: u32,
    /// The session's GID.
    pub gid: u32,
    /// The user name programs see (`whoami`).
    pub name: String,
    /// Whether the UID is a dynamic lease (no passwd entry on the host).
    pub dynamic: bool,
    _lease: Option<Flock<File>>,
}

/// Gives the identity `spec` asks for; `caller` is never returned.
pub fn acquire(
    spec: &UserSpec,
    agent: &str,
    caller: u32,
    range: RangeInclusive<u32>,
) -> Result<Identity, IdentityError> {
    match spec {
        UserSpec::Named(name) => named(name, caller),
        UserSpec::Dynamic => dynamic(agent, range),
    }
}

fn named(name: &str, caller: u32) -> Result<Identity, IdentityError> {
    let user = User::from_name(name)
        .map_err(std::io::Error::from)
        .at("getpwnam", Path::new("/etc/passwd"))?
        .ok_or_else(|| IdentityError::NoSuchUser(name.to_owned()))?;
    let uid = user.uid.as_raw();
    let why = if uid == 0 {
        Some("it is root")
    } else if uid == caller {
        Some("it is the caller's own identity")
    } else if user.gid.as_raw() == 0 {
        Some("its primary group is root")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(IdentityError::Forbidden {
            name: name.to_owned(),
            uid,
            why,
        });
    }
    Ok(Identity {
        uid,
        gid: user.gid.as_raw(),
        name: name.to_owned(),
        dynamic: false,
        _lease: None,
    })
}

fn lock_dir() -> PathBuf {
    PathBuf::from(paths::UID_LEASES)
}

fn dynamic(agent: &str, range: RangeInclusive<u32>) -> Result<Identity, IdentityError> {
    let dir = lock_dir();
    paths::create_private_dir(&dir).at("mkdir", &dir)?;
    // Scanned once, after the first lock is held: a process that takes a
    // UID later than that belongs to a session holding its lock.
    let mut used_by_processes = None;
    let (first, last) = (*range.start(), *range.end());
    let span = u64::from(last - first) + 1;
    // Start at a varying offset so consecutive sessions rarely reuse a UID.
    let start = u64::from(std::process::id()) ^ nanos();
    for i in 0..span {
        let Ok(uid) = u32::try_from(u64::from(first) + (start.wrapping_add(i) % span)) else {
            continue;
        };
        if used_by_processes
            .as_ref()
            .is_some_and(|u: &std::collections::HashSet<u32>| u.contains(&uid))
            || User::from_uid(Uid::from_raw(uid)).ok().flatten().is_some()
            || Group::from_gid(Gid::from_raw(uid)).ok().flatten().is_some()
        {
            continue;
        }
        let path = dir.join(uid.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .at("open", &path)?;
        let Ok(lease) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // held by a live session
        };
        // A leftover process of a crashed session (or any other) may run
        // with this UID without holding its lock.
        if used_by_processes
            .get_or_insert_with(process_uids)
            .contains(&uid)
        {
            continue;
        }
        return Ok(Identity {
            uid,
            gid: uid,
            name: format!("agentd-{agent}"),
            dynamic: true,
            _lease: Some(lease),
        });
    }
    Err(IdentityError::Exhausted { first, last })
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

/// The effective UID of every process on the host: the owner of its
/// `/proc/<pid>` directory, one stat per process (reading every `status`
/// file costs ten times more).
fn process_uids() -> std::collections::HashSet<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(dir) = fs::read_dir("/proc") else {
        return std::collections::HashSet::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        })
        .filter_map(|e| e.metadata().ok().map(|m| m.uid()))
        .collect()
}

/// The caller to whom workspace files belong: the invoking user behind
/// `sudo` (SUDO_UID/SUDO_GID, trusted only when running as root), else the
/// real UID/GID.
pub fn caller() -> (u32, u32) {
    let real = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    if real.0 != 0 {
        return real;
    }
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    match (var("SUDO_UID"), var("SUDO_GID")) {
        (Some(u), Some(g)) => (u, g),
        _ => real,
    }
}
