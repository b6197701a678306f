//! Helpers for agentd's integration tests: feature gates that skip with a
//! printed reason (and fail under `AGENTD_TEST_STRICT=1`), and guards that
//! clean up cgroups and network namespaces even when a test fails.
#![expect(clippy::panic, reason = "test helpers fail the test on broken setup")]

pub mod dns;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use agentd::cgroup::Cgroup;
pub use agentd::host::Feature;

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
    let report = agentd::doctor::report();
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

/// [`require!`] of everything a confined session needs: root, Landlock,
/// seccomp, cgroup2 and the eBPF programs.
#[macro_export]
macro_rules! require_sessions {
    () => {
        $crate::require!(
            $crate::Feature::Root,
            $crate::Feature::Landlock,
            $crate::Feature::Seccomp,
            $crate::Feature::Cgroup2,
            $crate::Feature::Ebpf
        )
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

/// The binaries a session test runs.
#[derive(Clone, Copy, Debug)]
pub struct Bins {
    /// agentd itself.
    pub agentd: &'static str,
    /// The probe run inside sessions.
    pub probe: &'static str,
}

impl Bins {
    /// The directory holding the probe (granted read and execute by test
    /// policies).
    pub fn probe_dir(&self) -> PathBuf {
        Path::new(self.probe)
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }
}

/// A policy granting what the probe needs, plus `extra` TOML appended
/// (tables other than [agent] and [filesystem] may be added there).
pub fn test_policy(bins: &Bins, filesystem_extra: &str, extra: &str) -> String {
    let probe_dir = bins.probe_dir().display().to_string();
    format!(
        r#"version = 1

[agent]
name = "escape-test"
owner = "agentd-tests"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "{probe_dir}"]
read_write = ["{{workspace}}", "{{tmp}}"]
execute = ["{probe_dir}", "/usr/bin", "/bin", "/usr/lib", "/lib", "/lib64"]
{filesystem_extra}

{extra}
"#
    )
}

/// A finished `agentd run`.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (-1 when killed by a signal itself).
    pub status: i32,
    /// The agent's stdout.
    pub stdout: String,
    /// agentd's and the agent's stderr.
    pub stderr: String,
}

impl Finished {
    /// The session id from agentd's first stderr line.
    pub fn session_id(&self) -> Option<String> {
        session_id_from(&self.stderr)
    }

    /// The probe's one-line verdict: `Ok`, or the errno name.
    pub fn verdict(&self) -> ProbeResult {
        let line = self.stdout.lines().last().unwrap_or("").trim();
        match line.split_once(' ') {
            None if line == "ok" => Ok(()),
            Some(("errno", name)) => Err(name.to_owned()),
            _ => panic!(
                "probe printed {:?} (status {}), stderr: {}",
                self.stdout, self.status, self.stderr
            ),
        }
    }

    /// The value of a `key=value` the probe printed.
    pub fn value(&self, key: &str) -> Option<String> {
        self.stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }
}

/// Parses `agentd: session <id> (agent <name>)`.
pub fn session_id_from(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("agentd: session "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// A policy file and a workspace for one test, removed on drop.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A fresh directory holding `policy.toml` and `workspace/`.
    pub fn new(policy: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agentd-test-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::write(dir.path().join("policy.toml"), policy)
            .unwrap_or_else(|e| panic!("write policy: {e}"));
        fs::create_dir(dir.path().join("workspace")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        Self { dir }
    }

    /// The policy file.
    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// The workspace.
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// A command `agentd run --policy … --workspace … --no-tty -- args…`.
    pub fn command(&self, bins: &Bins, args: &[&str]) -> Command {
        let mut cmd = Command::new(bins.agentd);
        cmd.arg("run")
            .arg("--policy")
            .arg(self.policy())
            .arg("--workspace")
            .arg(self.workspace())
            .arg("--no-tty")
            .arg("--")
            .args(args)
            .env("AGENTD_LOG", "warn");
        cmd
    }

    /// Runs a session to its end.
    pub fn run(&self, bins: &Bins, args: &[&str]) -> Finished {
        finish(self.command(bins, args))
    }

    /// Runs the probe with `action` in a session.
    pub fn probe(&self, bins: &Bins, action: &[&str]) -> Finished {
        let mut args = vec![bins.probe];
        args.extend_from_slice(action);
        self.run(bins, &args)
    }
}

/// Runs `cmd` and collects its output.
pub fn finish(mut cmd: Command) -> Finished {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Finished {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Polls `f` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Cgroup ids registered with the kernel programs whose cgroup no longer
/// exists.
fn stale_registrations() -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(kernel) = agentd::ebpf::Kernel::open_pinned() else {
        return Vec::new();
    };
    let parent = agentd::cgroup::cgroup2_root()
        .map(|r| r.join("agentd"))
        .unwrap_or_default();
    let live: Vec<u64> = fs::read_dir(parent)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(fs::Metadata::is_dir)
                .map(|m| m.ino())
                .collect()
        })
        .unwrap_or_default();
    kernel
        .registered_cgroups()
        .unwrap_or_default()
        .into_iter()
        .filter(|id| !live.contains(id))
        .collect()
}

/// A session started in the background, once it has said its id.
#[derive(Debug)]
pub struct Started {
    /// The `agentd run` process.
    pub child: std::process::Child,
    /// The rest of its stderr.
    pub stderr: std::io::BufReader<std::process::ChildStderr>,
    /// The session id (from the first line of stderr).
    pub id: String,
}

/// Spawns `cmd` (an `agentd run`; stderr piped, stdout as `cmd` has it)
/// and waits for the line that names its session.
pub fn start(cmd: &mut Command) -> Started {
    use std::io::BufRead as _;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let Some(pipe) = child.stderr.take() else {
        panic!("stderr is piped")
    };
    let mut stderr = std::io::BufReader::new(pipe);
    let mut first = String::new();
    let _ = stderr.read_line(&mut first);
    let id = session_id_from(&first)
        .unwrap_or_else(|| panic!("no session id first on stderr: {first:?}"));
    Started { child, stderr, id }
}

/// Every process of live session `id` (its cgroup2 leaf's).
pub fn session_pids(id: &str) -> Vec<u32> {
    let procs = agentd::cgroup::cgroup2_root()
        .unwrap_or_default()
        .join("agentd")
        .join(id)
        .join("cgroup.procs");
    fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Asserts that nothing of session `id` is left on the host: state
/// directory, data directory, cgroups, and (for any session) kernel
/// registrations of cgroups that are gone.
pub fn assert_session_gone(id: &str) {
    let state = Path::new("/run/agentd/sessions").join(id);
    let data = Path::new("/var/lib/agentd/sessions").join(id);
    let cgroup = agentd::cgroup::cgroup2_root()
        .map(|r| r.join("agentd").join(id))
        .unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || !state.exists()
            && !data.exists()
            && !cgroup.exists()),
        "session {id} left state {} data {} cgroup {}",
        state.exists(),
        data.exists(),
        cgroup.exists()
    );
    // Registrations in the kernel maps whose cgroup is gone must go too
    // (soon: teardown removes the cgroup, then the registration).
    let stale = stale_registrations();
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = stale_registrations();
            stale.iter().all(|s| !now.contains(s))
        }),
        "eBPF registrations of removed cgroups stay: {stale:?}"
    );
}

impl Sandbox {
    /// `command`, run inside network namespace `netns` (the session then
    /// lives there: the test's loopback servers are all it could reach).
    pub fn command_in(&self, bins: &Bins, netns: &Netns, args: &[&str]) -> Command {
        let inner = self.command(bins, args);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", netns.name()))
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Runs the probe with `action` in a session inside `netns`.
    pub fn probe_in(&self, bins: &Bins, netns: &Netns, action: &[&str]) -> Finished {
        let mut args = vec![bins.probe];
        args.extend_from_slice(action);
        finish(self.command_in(bins, netns, &args))
    }
}

/// A probe server (TCP or UDP) in a test network namespace, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: std::process::Child,
}

impl Server {
    /// `agentd-probe --netns NS serve-tcp|serve-udp ADDR PORT [FILE]`,
    /// returned once it listens.
    pub fn start(bins: &Bins, netns: &Netns, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new(bins.probe)
            .args(["--netns", netns.name()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start server: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "server {args:?} did not start");
        Self { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The audit trail all sessions write to.
pub const AUDIT_LOG: &str = "/var/log/agentd/audit.jsonl";

/// Every record of session `id` in the audit trail.
pub fn audit_records(id: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    agentd::audit::Log::new(AUDIT_LOG)
        .read_all()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.get("session").and_then(|s| s.as_str()) == Some(id))
        .collect()
}

/// Waits (up to 10 s: another process may be collecting events) until
/// session `id` has a record matching `pred`, and returns it.
pub fn wait_record(
    id: &str,
    mut pred: impl FnMut(&serde_json::Map<String, serde_json::Value>) -> bool,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = audit_records(id).into_iter().find(|r| pred(r));
        found.is_some()
    });
    found
}

/// The string value of `key` in a record.
pub fn field<'a>(r: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> &'a str {
    r.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// Kills session `id` when dropped (whether the test passed or not), so a
/// failed assertion leaves no session behind. Killing a session that has
/// already ended does nothing.
#[derive(Debug)]
pub struct KillOnDrop<'a> {
    /// `agentd` to run.
    pub agentd: &'a str,
    /// The session.
    pub id: String,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.agentd)
            .args(["kill", &self.id, "--reason", "test cleanup"])
            .output();
    }
}
