//! What this host can enforce. Probes run once per process and are cached;
//! `agentd doctor`, session setup and the tests all read the same results,
//! so a skipped test and a doctor report never disagree.
//!
//! Everything is discovered from the running system (`/proc/self/mountinfo`,
//! `/sys/kernel/security/lsm`, `/proc/sys/kernel/seccomp/actions_avail`...).
pub mod mountinfo;
mod sys;

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;
pub use sys::{SyscallError, landlock_abi};

use crate::paths;

/// A kernel or host feature a guarantee depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// agentd runs as root (needed for users, cgroups, BPF, mounts).
    Root,
    /// Landlock is enabled.
    Landlock,
    /// seccomp filters with errno and kill actions.
    Seccomp,
    /// seccomp user notification (approval gate for syscalls).
    SeccompUserNotif,
    /// The BPF LSM is active.
    BpfLsm,
    /// Kernel BTF is available.
    Btf,
    /// A cgroup2 hierarchy is mounted.
    Cgroup2,
    /// `cgroup.kill` exists (Linux >= 5.14).
    CgroupKill,
    /// memory, pids and cpu controllers (v2 or v1) for `[limits]`.
    Limits,
    /// A bpf filesystem for pinning (agentd mounts one when absent).
    Bpffs,
    /// agentd's embedded eBPF programs load on this kernel.
    Ebpf,
    /// Whether unprivileged ping sockets are enabled on the host
    /// (informational: sessions' ICMP sockets are refused either way).
    PingSockets,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Self; 12] = [
        Self::Root,
        Self::Landlock,
        Self::Seccomp,
        Self::SeccompUserNotif,
        Self::BpfLsm,
        Self::Btf,
        Self::Cgroup2,
        Self::CgroupKill,
        Self::Limits,
        Self::Bpffs,
        Self::Ebpf,
        Self::PingSockets,
    ];

    /// Short name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Root => "privileges",
            Self::Landlock => "landlock",
            Self::Seccomp => "seccomp",
            Self::SeccompUserNotif => "seccomp-notify",
            Self::BpfLsm => "bpf-lsm",
            Self::Btf => "btf",
            Self::Cgroup2 => "cgroup2",
            Self::CgroupKill => "cgroup-kill",
            Self::Limits => "limits",
            Self::Bpffs => "bpffs",
            Self::Ebpf => "ebpf",
            Self::PingSockets => "ping-sockets",
        }
    }

    /// The guarantee lost without this feature.
    pub const fn disables(self) -> &'static str {
        match self {
            Self::Root => "every session: agentd needs root to create users, cgroups and load BPF",
            Self::Landlock => "filesystem confinement (guarantee 2)",
            Self::Seccomp => "the syscall filter (guarantee 3)",
            Self::SeccompUserNotif => {
                "the gate: pathname unix socket rules (guarantee 4), protected names created \
                 during a session (guarantee 2), approval gates (guarantee 9)"
            }
            Self::BpfLsm => {
                "nothing today: agentd enforces exec with Landlock and traces with tracepoints"
            }
            Self::Btf => "the kernel event trail (BTF tracepoints need it)",
            Self::Cgroup2 => "network egress rules and lifetime (guarantees 4 and 7)",
            Self::CgroupKill => {
                "atomic kill of a session's tree (guarantee 7; freeze-and-kill is used instead)"
            }
            Self::Limits => "resource limits (guarantee 6)",
            Self::Bpffs => "pinning (agentd mounts a bpf filesystem when it needs one)",
            Self::Ebpf => {
                "network egress rules and the kernel event trail (guarantee 4, audit events)"
            }
            Self::PingSockets => "nothing: sessions' ICMP sockets are refused by agentd",
        }
    }

    /// Whether a session cannot be enforced without it.
    pub const fn required(self) -> bool {
        !matches!(self, Self::Bpffs | Self::CgroupKill | Self::PingSockets)
    }
}

/// How a probe came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Absent or not working.
    Missing,
}

/// One probe's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was probed.
    pub feature: Feature,
    /// Outcome.
    pub status: Status,
    /// What was found (versions, paths, the failing call and errno).
    pub detail: String,
    /// What to do when missing.
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(feature: Feature, detail: impl Into<String>) -> Self {
        Self {
            feature,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn missing(feature: Feature, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            feature,
            status: Status::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Everything probed about this host.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// `uname -r` and machine.
    pub kernel: String,
    /// One entry per [`Feature`], in [`Feature::ALL`] order.
    pub checks: Vec<Check>,
    /// Actions taken while probing (e.g. mounting securityfs).
    pub actions: Vec<String>,
}

impl HostReport {
    /// The result for `feature`.
    pub fn check(&self, feature: Feature) -> Option<&Check> {
        self.checks.iter().find(|c| c.feature == feature)
    }

    /// `Ok` when `feature` is present, else why not.
    pub fn require(&self, feature: Feature) -> Result<(), String> {
        match self.check(feature) {
            Some(c) if c.status == Status::Ok => Ok(()),
            Some(c) => Err(format!("{}: {}", feature.name(), c.detail)),
            None => Err(format!("{}: not probed", feature.name())),
        }
    }

    /// Whether a session could be fully enforced here.
    pub fn ready(&self) -> bool {
        self.checks
            .iter()
            .all(|c| c.status == Status::Ok || !c.feature.required())
    }
}

/// How agentd's own kernel programs are probed (see `crate::doctor`, which
/// knows them; this module only knows the host).
pub type ProgramProbe = fn(root: bool) -> Check;

/// Probes every feature; `programs` checks [`Feature::Ebpf`].
pub fn probe_all(programs: ProgramProbe) -> HostReport {
    let mut actions = Vec::new();
    let mounts = read_mounts();
    let kernel = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "Linux {} {}",
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_else(|e| format!("unknown (uname: {e})"));
    let checks = Feature::ALL
        .iter()
        .map(|f| probe_with(*f, &mounts, &mut actions, programs))
        .collect();
    HostReport {
        kernel,
        checks,
        actions,
    }
}

/// Probes one feature now (uncached): what session setup uses, so that a
/// session does not pay for probes it does not need.
/// The programs' probe is `agentd doctor`'s ([`probe_all`]).
pub fn probe(feature: Feature) -> Check {
    let not_here: ProgramProbe =
        |_| Check::missing(Feature::Ebpf, "not probed here", "run `agentd doctor`");
    probe_with(feature, &read_mounts(), &mut Vec::new(), not_here)
}

fn probe_with(
    feature: Feature,
    mounts: &[mountinfo::Mount],
    actions: &mut Vec<String>,
    programs: ProgramProbe,
) -> Check {
    let root = nix::unistd::geteuid().is_root();
    let cgroup2 = || {
        mountinfo::of_type(mounts, "cgroup2")
            .next()
            .map(|m| m.mount_point.clone())
    };
    match feature {
        Feature::Root if root => Check::ok(Feature::Root, "running as root"),
        Feature::Root => Check::missing(
            Feature::Root,
            format!("running as uid {}", nix::unistd::geteuid()),
            "run agentd as root (sudo), or through the agentd daemon",
        ),
        Feature::Landlock => probe_landlock(),
        Feature::Seccomp => probe_seccomp(false),
        Feature::SeccompUserNotif => probe_seccomp(true),
        Feature::BpfLsm => probe_bpf_lsm(mounts, root, actions),
        Feature::Btf => probe_btf(),
        Feature::Cgroup2 => probe_cgroup2(mounts, cgroup2().as_deref()),
        Feature::CgroupKill => probe_cgroup_kill(cgroup2().as_deref()),
        Feature::Limits => probe_limits(mounts, cgroup2().as_deref()),
        Feature::Bpffs => probe_bpffs(mounts),
        Feature::Ebpf => programs(root),
        Feature::PingSockets => probe_ping_sockets(),
    }
}

/// Whether unprivileged ICMP ("ping") sockets are enabled: their sends
/// pass no cgroup hook, which is why sessions may not create them.
fn probe_ping_sockets() -> Check {
    let range = fs::read_to_string(paths::PING_GROUP_RANGE).unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok());
    let detail = match (bounds.next(), bounds.next()) {
        (Some(lo), Some(hi)) if lo <= hi => format!(
            "enabled for groups {lo}-{hi} (net.ipv4.ping_group_range): an ICMP channel outside the egress rules, which agentd refuses in sessions (cgroup_sock_create)"
        ),
        _ => "disabled (net.ipv4.ping_group_range); agentd refuses ICMP sockets in sessions either way".to_owned(),
    };
    Check::ok(Feature::PingSockets, detail)
}

fn read_mounts() -> Vec<mountinfo::Mount> {
    fs::read_to_string(paths::PROC_MOUNTINFO)
        .map(|t| mountinfo::parse(&t))
        .unwrap_or_default()
}

/// The mounts of this process, read now.
pub fn mounts() -> Vec<mountinfo::Mount> {
    read_mounts()
}

/// PID 1, then this process's ancestors (nearest last): the processes
/// whose mount namespace may be the host's when this one is not.
fn host_candidates() -> Vec<u32> {
    let mut chain = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 && chain.len() < 64 {
        let Some(parent) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(") ")?;
                rest.split(' ').nth(1)?.parse::<u32>().ok()
            })
        else {
            break;
        };
        pid = parent;
        if pid > 1 {
            chain.push(pid);
        }
    }
    chain.push(1);
    chain.reverse();
    chain
}

/// The mounts of process `pid`, if it has a `fs_type` filesystem.
fn mounts_with(pid: u32, fs_type: &str) -> Option<Vec<mountinfo::Mount>> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let mounts = mountinfo::parse(&text);
    let has = mountinfo::of_type(&mounts, fs_type).next().is_some();
    has.then_some(mounts)
}

/// Whether this process has a `fs_type` filesystem mounted.
fn has_mount(fs_type: &str) -> bool {
    mountinfo::of_type(&read_mounts(), fs_type).next().is_some()
}

/// The mounts of another process that has a `fs_type` filesystem this
/// process lacks (PID 1's first): this process is then in a mount
/// namespace of its own, such as the one `ip netns exec` creates with a
/// fresh /sys that hides the host's cgroup and bpf mounts. `None` when
/// this process has one itself.
pub fn host_mounts(fs_type: &str) -> Option<Vec<mountinfo::Mount>> {
    if has_mount(fs_type) {
        return None;
    }
    host_candidates()
        .into_iter()
        .find_map(|pid| mounts_with(pid, fs_type))
}

/// Where another process (see [`host_mounts`]) has a `fs_type`
/// filesystem, as a path that reaches it from here through
/// `/proc/<pid>/root` (the first such process whose root this one may
/// enter).
pub fn host_mount(fs_type: &str) -> Option<PathBuf> {
    if has_mount(fs_type) {
        return None;
    }
    host_candidates().into_iter().find_map(|pid| {
        let mounts = mounts_with(pid, fs_type)?;
        let m = mountinfo::of_type(&mounts, fs_type).next()?;
        let inside = m.mount_point.strip_prefix("/").ok()?;
        let path = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(inside);
        fs::metadata(&path).is_ok().then_some(path)
    })
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> Option<(u32, u32)> {
    let uname = nix::sys::utsname::uname().ok()?;
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn probe_landlock() -> Check {
    match landlock_abi() {
        Ok(abi) => {
            let mut rights = vec!["filesystem"];
            if abi >= 2 {
                rights.push("refer");
            }
            if abi >= 3 {
                rights.push("truncate");
            }
            if abi >= 4 {
                rights.push("tcp");
            }
            if abi >= 5 {
                rights.push("ioctl-dev");
            }
            if abi >= 6 {
                rights.push("scoping");
            }
            if abi >= 7 {
                rights.push("audit-flags");
            }
            Check::ok(
                Feature::Landlock,
                format!("ABI {abi} ({})", rights.join(", ")),
            )
        }
        Err(e) if e.source.raw_os_error() == Some(libc::EOPNOTSUPP) => Check::missing(
            Feature::Landlock,
            format!("disabled at boot ({e})"),
            "add \"landlock\" to lsm= on the kernel command line",
        ),
        Err(e) => Check::missing(
            Feature::Landlock,
            format!("not available ({e})"),
            "use a kernel built with CONFIG_SECURITY_LANDLOCK=y (Linux >= 5.13)",
        ),
    }
}

fn probe_seccomp(notify: bool) -> Check {
    let feature = if notify {
        Feature::SeccompUserNotif
    } else {
        Feature::Seccomp
    };
    let actions = match fs::read_to_string(paths::SECCOMP_ACTIONS) {
        Ok(a) => a,
        Err(e) => {
            return Check::missing(
                feature,
                format!("cannot read {}: {e}", paths::SECCOMP_ACTIONS),
                "use a kernel built with CONFIG_SECCOMP_FILTER=y",
            );
        }
    };
    let has = |a: &str| actions.split_whitespace().any(|x| x == a);
    let needed: &[&str] = if notify {
        &["user_notif"]
    } else {
        &["errno", "kill_process"]
    };
    // The gate takes a held thread's descriptors (pidfd_open with
    // PIDFD_THREAD, 6.9) and answers opens with a descriptor
    // (SECCOMP_ADDFD_FLAG_SEND, 5.14).
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if notify && !at_least(&release, (6, 9)) {
        return Check::missing(
            feature,
            format!(
                "Linux {release}: the gate needs pidfd_open(PIDFD_THREAD) (6.9) and SECCOMP_ADDFD_FLAG_SEND (5.14)"
            ),
            "use Linux >= 6.9",
        );
    }
    match needed.iter().find(|a| !has(a)) {
        None => Check::ok(feature, format!("actions: {}", actions.trim())),
        Some(a) => Check::missing(
            feature,
            format!("the kernel lacks the {a} action (has: {})", actions.trim()),
            "use Linux >= 5.5",
        ),
    }
}

/// Whether a kernel release (`6.18.0-1-amd64`) is at least `(major, minor)`.
fn at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

fn probe_bpf_lsm(mounts: &[mountinfo::Mount], root: bool, actions: &mut Vec<String>) -> Check {
    let mounted = mountinfo::of_type(mounts, "securityfs").next().is_some();
    if !mounted && root {
        match nix::mount::mount(
            Some("securityfs"),
            paths::SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) => actions.push(format!("mounted securityfs at {}", paths::SECURITYFS)),
            Err(e) => {
                return Check::missing(
                    Feature::BpfLsm,
                    format!("securityfs is not mounted and mounting it failed: mount: {e}"),
                    format!("mount -t securityfs securityfs {}", paths::SECURITYFS),
                );
            }
        }
    }
    match fs::read_to_string(paths::LSM_LIST) {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => {
            Check::ok(Feature::BpfLsm, format!("active (lsm={})", list.trim()))
        }
        Ok(list) => Check::missing(
            Feature::BpfLsm,
            format!("not active (lsm={})", list.trim()),
            "add \"bpf\" to lsm= on the kernel command line (CONFIG_BPF_LSM=y)",
        ),
        Err(e) => Check::missing(
            Feature::BpfLsm,
            format!("cannot read {}: {e}", paths::LSM_LIST),
            if root {
                format!("mount -t securityfs securityfs {}", paths::SECURITYFS)
            } else {
                "run `agentd doctor` as root (it mounts securityfs if needed)".to_owned()
            },
        ),
    }
}

fn probe_btf() -> Check {
    match fs::metadata(paths::VMLINUX_BTF) {
        Ok(m) if m.len() > 0 => Check::ok(Feature::Btf, paths::VMLINUX_BTF),
        Ok(_) | Err(_) => Check::missing(
            Feature::Btf,
            format!("{} not found", paths::VMLINUX_BTF),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
    }
}

fn probe_cgroup2(mounts: &[mountinfo::Mount], cgroup2: Option<&Path>) -> Check {
    let Some(mnt) = cgroup2 else {
        return Check::missing(
            Feature::Cgroup2,
            "no cgroup2 filesystem in /proc/self/mountinfo",
            "mount cgroup2 (e.g. boot with systemd.unified_cgroup_hierarchy=1)",
        );
    };
    let controllers = fs::read_to_string(mnt.join("cgroup.controllers")).unwrap_or_default();
    let controllers = controllers.trim();
    let layout = if mountinfo::of_type(mounts, "cgroup").next().is_some() {
        "hybrid host: v1 controllers mounted too"
    } else {
        "unified"
    };
    Check::ok(
        Feature::Cgroup2,
        format!(
            "{} ({layout}); controllers: {}",
            mnt.display(),
            if controllers.is_empty() {
                "none"
            } else {
                controllers
            }
        ),
    )
}

/// The cgroup2 directory this process is in, from `/proc/self/cgroup`.
pub fn own_cgroup2(cgroup2: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(paths::PROC_SELF_CGROUP).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(cgroup2.join(rel.trim_start_matches('/')))
}

fn probe_cgroup_kill(cgroup2: Option<&Path>) -> Check {
    let Some(mnt) = cgroup2 else {
        return Check::missing(Feature::CgroupKill, "no cgroup2 hierarchy", "mount cgroup2");
    };
    // cgroup.kill exists in every non-root cgroup; look at ours, then at
    // any child of the root.
    let own = own_cgroup2(mnt).filter(|p| p != mnt);
    let child = || {
        fs::read_dir(mnt)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_dir())
    };
    match own.or_else(child) {
        Some(dir) if dir.join("cgroup.kill").exists() => {
            Check::ok(Feature::CgroupKill, "cgroup.kill present")
        }
        Some(_) => Check::missing(
            Feature::CgroupKill,
            "cgroup.kill absent (Linux < 5.14): agentd kills a session by freezing it, sending SIGKILL to every process listed and thawing, until none is left",
            "upgrade to Linux >= 5.14 for the kernel's one-step kill",
        ),
        None => match kernel_version() {
            Some(v) if v >= (5, 14) => Check::ok(
                Feature::CgroupKill,
                "no child cgroup to look at; Linux >= 5.14 has cgroup.kill",
            ),
            _ => Check::missing(
                Feature::CgroupKill,
                "no child cgroup to look at and the kernel version is unknown or < 5.14",
                "upgrade to Linux >= 5.14; agentd falls back to freeze-and-kill",
            ),
        },
    }
}

fn probe_limits(mounts: &[mountinfo::Mount], cgroup2: Option<&Path>) -> Check {
    let v2 = cgroup2
        .and_then(|m| fs::read_to_string(m.join("cgroup.controllers")).ok())
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        if v2.split_whitespace().any(|c| c == controller) {
            found.push(format!("{controller} (v2)"));
        } else if let Some(m) = mountinfo::cgroup_v1(mounts, controller) {
            found.push(format!("{controller} (v1 at {})", m.mount_point.display()));
        } else {
            missing.push(controller);
        }
    }
    if missing.is_empty() {
        Check::ok(Feature::Limits, found.join(", "))
    } else {
        Check::missing(
            Feature::Limits,
            format!("no {} controller in cgroup v2 or v1", missing.join(", ")),
            "enable the controllers (cgroup_enable= on the kernel command line)",
        )
    }
}

fn probe_bpffs(mounts: &[mountinfo::Mount]) -> Check {
    match mountinfo::of_type(mounts, "bpf").next() {
        Some(m) => Check::ok(
            Feature::Bpffs,
            format!("mounted at {}", m.mount_point.display()),
        ),
        None => Check::ok(
            Feature::Bpffs,
            format!(
                "not mounted yet; agentd mounts one at {} when it pins programs",
                paths::BPFFS
            ),
        ),
    }
}

/// Facts about a secret file for `policy::check_secret_files`: `None` when
/// it does not exist.
pub fn secret_file_facts(path: &Path) -> std::io::Result<Option<crate::policy::FileFacts>> {
    use std::os::unix::fs::MetadataExt as _;
    match fs::metadata(path) {
        Ok(m) => Ok(Some(crate::policy::FileFacts {
            uid: m.uid(),
            mode: m.mode(),
            is_file: m.is_file(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(at_least("6.18.0-1-amd64", (6, 9)));
        assert!(at_least("6.9", (6, 9)));
        assert!(!at_least("6.8.12", (6, 9)));
        assert!(!at_least("5.15.0-91-generic", (6, 9)));
        assert!(at_least("7.0-rc1", (6, 9)));
        assert!(!at_least("", (6, 9)));
    }
}
