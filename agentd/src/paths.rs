//! Every path agentd reads or creates on the host, in one place.

/// The mount table of this process.
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";
/// This process's cgroup membership.
pub const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
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
/// tracefs (agentd mounts it there when absent).
pub const TRACEFS: &str = "/sys/kernel/tracing";
