//! Helpers for agentd's integration tests: feature gates that skip with a
//! printed reason (and fail under `AGENTD_TEST_STRICT=1`), and guards that
//! clean up cgroups and network namespaces even when a test fails.
#![expect(clippy::panic, reason = "test helpers fail the test on broken setup")]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

pub use agentd::host::Feature;
use agentd::{cgroup::Cgroup, host};

/// Whether skips are failures (CI sets `AGENTD_TEST_STRICT=1`).
pub fn strict() -> bool {
    std::env::var("AGENTD_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_owned()
}

/// `Ok` when every feature is present; otherwise the reason to skip.
pub fn missing(features: &[Feature]) -> Result<(), String> {
    let report = host::probes();
    features.iter().try_for_each(|f| report.require(*f))
}

/// Returns from the test (printing `SKIP <test>: <reason>`) unless the host
/// has every feature; under `AGENTD_TEST_STRICT=1` a missing feature fails.
#[macro_export]
macro_rules! require {
    ($($feature:expr),+ $(,)?) => {
        if let Err(reason) = $crate::missing(&[$($feature),+]) {
            if $crate::strict() {
                panic!("{}: required feature missing under AGENTD_TEST_STRICT=1: {reason}", $crate::test_name());
            }
            eprintln!("SKIP {}: {reason}", $crate::test_name());
            return;
        }
    };
}

/// A unique, short name for something a test creates.
pub fn unique(tag: &str) -> String {
    format!("agentd-t{}-{tag}", std::process::id())
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with loopback up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add` + `ip link set lo up` inside it.
    pub fn create(tag: &str) -> Self {
        let name = unique(tag);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// The namespace's name (`/run/netns/<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `addr/len` to the namespace's loopback.
    pub fn add_loopback_address(&self, cidr: &str) {
        run(Command::new("ip").args(["-n", &self.name, "addr", "add", cidr, "dev", "lo"]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A cgroup2 directory for a test, killed and removed on drop (children
/// first).
#[derive(Debug)]
pub struct TestCgroup {
    cgroup: Cgroup,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `<cgroup2 root>/<unique tag>`.
    pub fn create(tag: &str) -> Self {
        let root = agentd::cgroup::cgroup2_root().unwrap_or_else(|e| panic!("{e}"));
        let cgroup = Cgroup::create(root.join(unique(tag))).unwrap_or_else(|e| panic!("{e}"));
        Self {
            cgroup,
            children: Vec::new(),
        }
    }

    /// Creates a child cgroup named `name`.
    pub fn child(&mut self, name: &str) -> Cgroup {
        let path = self.cgroup.path().join(name);
        let child = Cgroup::create(&path).unwrap_or_else(|e| panic!("{e}"));
        self.children.push(path);
        child
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.cgroup.path()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cgroup.kill(Duration::from_secs(5));
        for child in self.children.iter().rev() {
            let _ = Cgroup::open(child).remove();
        }
        let _ = self.cgroup.remove();
    }
}

/// What a probe reported: `Ok`, or the errno name of the failed call.
pub type ProbeResult = Result<(), String>;

/// Runs `agentd-probe` with `args` and parses its one-line report.
pub fn probe(probe_bin: &str, args: &[&str]) -> ProbeResult {
    let out = Command::new(probe_bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {probe_bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("").trim();
    match line.split_once(' ') {
        None if line == "ok" => Ok(()),
        Some(("errno", name)) => Err(name.to_owned()),
        _ => panic!(
            "probe {args:?} printed {stdout:?} (status {}), stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
