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
