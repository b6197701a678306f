//! Every path agentd reads or creates on the host, in one place.

/// The mount table of this process.
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";
/// This process's cgroup membership.
pub const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
/// Which groups may create unprivileged ICMP sockets.
pub const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";
/// seccomp actions the kernel supports.
pub const SECCOMP_ACTIONS: &str = "/proc/sys/kernel/seccomp/actions_avail";
/// Where securityfs is mounted (agentd mounts it there when absent).
pub const SECURITYFS: &str = "/sys/kernel/security";
/// Active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";
/// Kernel BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where agentd mounts a bpf filesystem when none is mounted
/// (`nosuid,nodev,noexec`).
pub const BPFFS: &str = "/sys/fs/bpf";
/// tracefs (agentd mounts it there when absent).
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Name of agentd's parent cgroup in the cgroup2 hierarchy.
pub const CGROUP_PARENT: &str = "agentd";
/// Runtime state (tmpfs, gone at reboot).
pub const RUN_DIR: &str = "/run/agentd";
/// Live sessions' state directories.
pub const SESSIONS_DIR: &str = "/run/agentd/sessions";
/// Persistent state.
pub const STATE_DIR: &str = "/var/lib/agentd";
/// Per-session data directories ({tmp}, {home}).
pub const SESSION_DATA_DIR: &str = "/var/lib/agentd/sessions";
/// Disabled agents, one marker file each (survives reboots).
pub const DISABLED_DIR: &str = "/var/lib/agentd/disabled";
/// The daemon's socket.
pub const SOCKET: &str = "/run/agentd/agentd.sock";
/// The daemon's configuration.
pub const CONFIG: &str = "/etc/agentd/agentd.toml";
/// Policies the daemon accepts by name.
pub const POLICY_DIR: &str = "/etc/agentd/policies";
/// The audit trail's directory.
pub const LOG_DIR: &str = "/var/log/agentd";
/// The audit trail.
pub const AUDIT_LOG: &str = "/var/log/agentd/audit.jsonl";
/// Per-session inputs of the event collector (attribution, redaction).
pub const AUDIT_INPUTS_DIR: &str = "/run/agentd/audit";
/// Held by the process that drains the kernel's event ring.
pub const COLLECTOR_LOCK: &str = "/run/agentd/collector.lock";
/// Held while the kernel programs are loaded or the shared maps changed.
pub const EBPF_LOCK: &str = "/run/agentd/ebpf.lock";
/// Digest of the loaded kernel programs (reloaded when it differs).
pub const EBPF_VERSION: &str = "/run/agentd/ebpf.version";
/// Dynamic UID leases, one lock file per UID.
pub const UID_LEASES: &str = "/run/agentd/uids";
/// The cgroup2 parent agentd delegated itself (systemd hosts).
pub const CGROUP_PARENT_RECORD: &str = "/run/agentd/cgroup.parent";

/// Creates `/run/agentd` (0711: the daemon's socket inside is reachable,
/// nothing is listable).
pub fn create_run_dir() -> std::io::Result<()> {
    create_dir_mode(std::path::Path::new(RUN_DIR), 0o711)
}

/// Creates `dir` (and parents) and makes it root-only (0700).
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    create_dir_mode(dir, 0o700)
}

/// Replaces `path` with `bytes` as a root-only (0600) file, atomically
/// (written beside it, then renamed over it); with `durable`, fsync'ed
/// before the rename.
pub fn replace_private_file(
    path: &std::path::Path,
    bytes: &[u8],
    durable: bool,
) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(tmp, path)
}

/// Creates `dir` (and parents) and sets its mode to `mode`.
pub fn create_dir_mode(dir: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dist/agentd.tmpfiles` creates the directories agentd uses, with
    /// the modes the code sets.
    #[test]
    fn tmpfiles_agree_with_the_code() {
        let tmpfiles = include_str!("../dist/agentd.tmpfiles");
        let entries: Vec<(&str, &str)> = tmpfiles
            .lines()
            .filter(|l| l.starts_with("d "))
            .filter_map(|l| {
                let mut f = l.split_whitespace().skip(1);
                Some((f.next()?, f.next()?))
            })
            .collect();
        let parent = |p: &'static str| {
            std::path::Path::new(p)
                .parent()
                .and_then(|p| p.to_str())
                .unwrap_or_default()
                .to_owned()
        };
        for (dir, mode) in [
            (RUN_DIR.to_owned(), "0711"),
            (STATE_DIR.to_owned(), "0711"),
            (LOG_DIR.to_owned(), "0750"),
            (parent(CONFIG), "0755"),
            (POLICY_DIR.to_owned(), "0755"),
        ] {
            assert!(
                entries.contains(&(dir.as_str(), mode)),
                "dist/agentd.tmpfiles lacks `d {dir} {mode}`"
            );
        }
        for (dir, _) in &entries {
            let known = [RUN_DIR, STATE_DIR, LOG_DIR, POLICY_DIR, &parent(CONFIG)]
                .iter()
                .any(|k| k == dir);
            assert!(
                known,
                "dist/agentd.tmpfiles creates {dir}, which paths.rs does not name"
            );
        }
        // Everything else lives below those.
        for p in [
            SESSIONS_DIR,
            SESSION_DATA_DIR,
            DISABLED_DIR,
            SOCKET,
            AUDIT_LOG,
            AUDIT_INPUTS_DIR,
            COLLECTOR_LOCK,
            EBPF_LOCK,
            EBPF_VERSION,
            UID_LEASES,
            CGROUP_PARENT_RECORD,
        ] {
            assert!(
                [RUN_DIR, STATE_DIR, LOG_DIR]
                    .iter()
                    .any(|d| p.starts_with(d)),
                "{p} is outside every directory tmpfiles creates"
            );
        }
    }
}
