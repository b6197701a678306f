//! The event collector: drains the kernel's ring buffer into the audit
//! trail. One process holds the collector lock at a time (any supervisor,
//! later the daemon); events wait in the ring buffer meanwhile.
//!
//! A session's audit inputs (its context, redaction values and rules) are
//! written at start to `/run/agentd/audit/<cgroup id>.json` (root, 0600),
//! so events are attributed and redacted even after the session is gone.
//!
//! Events are decoded by one module per kernel file that emits them, named
//! alike: `egress` (`agentd-ebpf/src/egress.rs`), `process`
//! (`process.rs`), `syscalls` (`syscalls.rs`); `dns` holds what the DNS
//! redirect (`dns.rs`, which emits no events) adds to them: the name that
//! opened a connect's address.
mod dns;
mod egress;
pub(crate) use egress::refused_socket;
mod process;
mod syscalls;

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::{AsFd as _, BorrowedFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agentd_common::{Counter, EventHeader, EventKind, from_bytes};
use aya::maps::{MapData, RingBuf};
use globset::GlobMatcher;
use nix::{
    fcntl::{Flock, FlockArg},
    poll::{PollFd, PollFlags, PollTimeout},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::dns::Names;
pub use self::dns::{NameOpened, NamesLog};
use super::{Context, Event, Log, redact::Redactor};
use crate::{ebpf::Kernel, paths};

/// Per-session inputs of the collector.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionAudit {
    /// Session id.
    pub session: String,
    /// Agent.
    pub agent: String,
    /// Policy digest.
    pub policy: String,
    /// Trace id.
    pub trace_id: String,
    /// Exact values to scrub (secrets, passed environment values).
    pub redact_exact: Vec<String>,
    /// Policy redaction patterns.
    pub redact_patterns: Vec<String>,
    /// exec.allow patterns, as (rule text, resolved absolute glob).
    pub exec_rules: Vec<(String, String)>,
    /// network.allow rules, as (rule text, resolved prefixes, first port, last port).
    pub net_rules: Vec<(String, Vec<String>, u16, u16)>,
    /// Whether `[exec]` is enforced.
    pub exec_enforced: bool,
}

fn audit_dir() -> PathBuf {
    PathBuf::from(paths::AUDIT_INPUTS_DIR)
}

impl SessionAudit {
    /// Writes the inputs for the session with cgroup id `cgroup_id`.
    pub fn save(&self, cgroup_id: u64) -> std::io::Result<()> {
        let dir = audit_dir();
        paths::create_private_dir(&dir)?;
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        paths::replace_private_file(&dir.join(format!("{cgroup_id}.json")), &bytes, false)
    }

    fn load(cgroup_id: u64) -> Option<Self> {
        let bytes = fs::read(audit_dir().join(format!("{cgroup_id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A loaded session: context, redactor, compiled rules.
struct Known {
    context: Context,
    redactor: Redactor,
    exec_rules: Vec<(String, GlobMatcher)>,
    net_rules: Vec<(String, Vec<ipnet::IpNet>, u16, u16)>,
    exec_enforced: bool,
    names: Names,
}

impl Known {
    fn from(a: SessionAudit) -> Self {
        let patterns: Vec<regex::Regex> = a
            .redact_patterns
            .iter()
            .filter_map(|p| regex::Regex::new(p).ok())
            .collect();
        Self {
            context: Context {
                session: a.session,
                agent: a.agent,
                policy: a.policy,
                trace_id: a.trace_id,
            },
            redactor: Redactor::new(a.redact_exact, &patterns),
            exec_rules: a
                .exec_rules
                .into_iter()
                .filter_map(|(text, glob)| {
                    globset::GlobBuilder::new(&glob)
                        .literal_separator(true)
                        .build()
                        .ok()
                        .map(|g| (text, g.compile_matcher()))
                })
                .collect(),
            net_rules: a
                .net_rules
                .into_iter()
                .map(|(text, nets, first, last)| {
                    (
                        text,
                        nets.iter().filter_map(|n| n.parse().ok()).collect(),
                        first,
                        last,
                    )
                })
                .collect(),
            exec_enforced: a.exec_enforced,
            names: Names::default(),
        }
    }
}

/// A session with an exec rule, a network rule and a secret, and the
/// header of one of its events of `kind`, for the decoders' tests.
#[cfg(test)]
fn test_session(kind: EventKind) -> (Known, EventHeader) {
    let known = Known::from(SessionAudit {
        session: "s1".into(),
        agent: "coder".into(),
        redact_exact: vec!["hunter2".into()],
        exec_rules: vec![("/usr/bin/*".into(), "/usr/bin/*".into())],
        net_rules: vec![(
            "203.0.113.0/24:443".into(),
            vec!["203.0.113.0/24".into()],
            443,
            443,
        )],
        exec_enforced: true,
        ..SessionAudit::default()
    });
    let header = EventHeader {
        kind: kind as u32,
        pid: 42,
        cgroup_id: 7,
        ktime: 1,
        exec_ktime: 99,
    };
    (known, header)
}

/// Most events appended (and fsynced) as one batch.
const BATCH: usize = 4096;

/// Drains kernel events into the log.
pub struct Collector {
    ring: RingBuf<MapData>,
    kernel: Kernel,
    log: Log,
    sessions: HashMap<u64, Option<Known>>,
    /// Wall clock minus monotonic clock, in ns.
    boot_offset: i128,
    lost_seen: u64,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn monotonic_ns() -> i128 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

/// Bytes up to the first NUL, lossily as UTF-8.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn exec_id(pid: u32, ktime: u64) -> Value {
    if ktime == 0 {
        Value::Null
    } else {
        Value::String(format!("{pid}-{ktime}"))
    }
}

impl Collector {
    /// A collector over the pinned ring buffer.
    pub fn new(kernel: Kernel, log: Log) -> Result<Self, crate::ebpf::EbpfError> {
        let ring = kernel.events()?;
        let boot_offset = jiff::Timestamp::now().as_nanosecond() - monotonic_ns();
        let lost_seen = lost(&kernel);
        Ok(Self {
            ring,
            kernel,
            log,
            sessions: HashMap::new(),
            boot_offset,
            lost_seen,
        })
    }

    fn known(&mut self, cgroup_id: u64) -> Option<&Known> {
        // Sessions come and go for as long as the daemon lives; inputs are
        // re-read from disk when needed, so the cache stays small.
        if self.sessions.len() >= 256 && !self.sessions.contains_key(&cgroup_id) {
            self.sessions.clear();
        }
        self.sessions
            .entry(cgroup_id)
            .or_insert_with(|| SessionAudit::load(cgroup_id).map(Known::from))
            .as_ref()
    }

    fn ts(&self, ktime: u64) -> jiff::Timestamp {
        let ns = i128::from(ktime) + self.boot_offset;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or_else(|_| jiff::Timestamp::now())
    }

    /// Reads every available event and appends them as one batch.
    pub fn drain(&mut self) -> Result<usize, super::AuditError> {
        let mut raw: Vec<Vec<u8>> = Vec::new();
        while let Some(item) = self.ring.next() {
            raw.push(item.to_vec());
            if raw.len() >= BATCH {
                break;
            }
        }
        let mut events: Vec<Event> = raw.iter().filter_map(|b| self.decode(b)).collect();
        let unattributed = raw.len() - events.len();
        if unattributed > 0 {
            // Only registered sessions emit events, so this means a
            // session's audit inputs are missing or the event is malformed:
            // still a loss the trail must show.
            events.push(
                Event::now(&Context::default(), "lost")
                    .with("count", unattributed)
                    .with(
                        "reason",
                        "events of an unknown session or in an unknown format",
                    ),
            );
        }
        let now_lost = lost(&self.kernel);
        if now_lost > self.lost_seen {
            events.push(
                Event::now(&Context::default(), "lost")
                    .with("count", now_lost - self.lost_seen)
                    .with("reason", "the kernel ring buffer was full"),
            );
            self.lost_seen = now_lost;
        }
        self.log.append(&events)?;
        Ok(raw.len())
    }

    /// One event of the ring buffer as an audit record, decoded by the
    /// module named for the kernel file that emits it; `None` for an event
    /// of an unknown session or in an unknown format.
    fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        let header: EventHeader = from_bytes(bytes)?;
        let ts = self.ts(header.ktime);
        let kind = EventKind::from_u32(header.kind)?;
        let mut ev = match kind {
            EventKind::Exec | EventKind::ExecDenied | EventKind::Fork | EventKind::Exit => {
                process::decode(self.known(header.cgroup_id)?, &header, kind, bytes)?
            }
            EventKind::Connect | EventKind::SocketDenied => egress::decode(self, &header, bytes)?,
            EventKind::File => syscalls::decode(self.known(header.cgroup_id)?, &header, bytes)?,
        };
        ev.ts = ts;
        Some(ev)
    }

    /// Runs until `stop` is set (and `wake` readable): drains whenever the
    /// ring buffer has data (and at least every 200 ms, to report losses),
    /// then until it is empty.
    pub fn run(&mut self, stop: &AtomicBool, wake: BorrowedFd<'_>) {
        let mut looked = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // A daemon collects for as long as it lives.
            if looked.elapsed() > PRUNE_EVERY {
                prune_if_due(&self.kernel);
                looked = Instant::now();
            }
            let mut fds = [
                PollFd::new(self.ring.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake, PollFlags::POLLIN),
            ];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(200u16));
            if let Err(e) = self.drain() {
                tracing::warn!(error = %e, "cannot write audit records");
            }
        }
        // Everything the stopped sessions produced is in the ring now; a
        // batch short of full means the ring was empty when it was taken.
        while matches!(self.drain(), Ok(n) if n >= BATCH) {}
    }
}

fn lost(kernel: &Kernel) -> u64 {
    kernel
        .counters()
        .ok()
        .and_then(|c| {
            c.into_iter()
                .find(|(k, _)| *k == Counter::Lost)
                .map(|(_, n)| n)
        })
        .unwrap_or(0)
}

/// The collector thread of a supervisor: takes the host-wide collector lock
/// when it is free (checking every second) and drains events while it
/// holds it. Stopping drains what is left.
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    /// Written to on stop, so the thread wakes at once.
    wake: Option<std::io::PipeWriter>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts the thread.
    pub fn start(log: Log) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let Ok((wake_read, wake)) = std::io::pipe() else {
            // No thread: the events wait in the ring for the next
            // collector.
            return Self {
                stop,
                wake: None,
                thread: None,
            };
        };
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || collect_while(&flag, wake_read.as_fd(), &log))
            .ok();
        Self {
            stop,
            wake: Some(wake),
            thread,
        }
    }

    /// Stops after a final drain (if this process was the collector).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut w) = self.wake.take() {
            use std::io::Write as _;
            let _ = w.write_all(b"x");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps up to `ms`, or until `wake` is readable.
fn nap(wake: BorrowedFd<'_>, ms: u16) {
    let mut fds = [PollFd::new(wake, PollFlags::POLLIN)];
    let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
}

fn collect_while(stop: &AtomicBool, wake: BorrowedFd<'_>, log: &Log) {
    let lock_path = Path::new(paths::COLLECTOR_LOCK);
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let Ok(file) = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path)
        else {
            return;
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_guard) => {
                let Ok(kernel) = Kernel::open_pinned() else {
                    return;
                };
                prune_if_due(&kernel);
                let Ok(mut collector) = Collector::new(kernel, log.clone()) else {
                    return;
                };
                collector.run(stop, wake);
                return;
            }
            // Another process collects (and drains at its end); look again
            // soon, then every second.
            Err(_) => nap(
                wake,
                if started.elapsed() < Duration::from_secs(2) {
                    100
                } else {
                    1000
                },
            ),
        }
    }
}

/// How long a session's audit inputs (and names) outlive its registration:
/// events still in the ring buffer are attributed until then.
pub const INPUTS_KEPT: Duration = Duration::from_secs(3600);

/// How often the collector looks for inputs to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Prunes (see [`prune`]) when the last pruning on this host is older than
/// [`PRUNE_EVERY`]: one look at a stamp file otherwise.
pub fn prune_if_due(kernel: &Kernel) {
    let stamp = audit_dir().join("pruned");
    let due = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > PRUNE_EVERY);
    if due && fs::write(&stamp, b"").is_ok() {
        prune(kernel, INPUTS_KEPT);
    }
}

/// Removes audit inputs and names files of sessions no longer registered
/// and not written for `older_than`. Nothing when the registrations cannot
/// be read (a live session's inputs must never go).
pub fn prune(kernel: &Kernel, older_than: Duration) {
    let Ok(live) = kernel.registered_cgroups() else {
        return;
    };
    let Ok(dir) = fs::read_dir(audit_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".names"))
            .and_then(|n| n.parse::<u64>().ok());
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > older_than);
        if id.is_some_and(|id| !live.contains(&id)) && old {
            let _ = fs::remove_file(e.path());
        }
    }
}
