//! The event collector: drains the kernel's ring buffer into the audit
//! trail. One process holds the collector lock at a time (any supervisor,
//! later the daemon); events wait in the ring buffer meanwhile.
//!
//! A session's audit inputs (its context, redaction values and rules) are
//! written at start to `/run/agentd/audit/<cgroup id>.json` (root, 0600),
//! so events are attributed and redacted even after the session is gone.
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
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

use agentd_common::{
    ARGV_LEN, Counter, EventHeader, EventKind, FileEvent, NetEvent, PATH_LEN, ProcessEvent,
    file_access, net_op,
};
use aya::maps::{MapData, RingBuf};
use globset::GlobMatcher;
use nix::{
    fcntl::{Flock, FlockArg},
    poll::{PollFd, PollFlags, PollTimeout},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    Path::new(paths::RUN_DIR).join("audit")
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

/// An address a session's DNS answer opened: one line of the session's
/// `<cgroup id>.names` file, which its resolver appends to before the
/// answer is sent, so that connects to the address carry the name asked
/// and the rule that admitted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameOpened {
    /// The answer's address.
    pub address: IpAddr,
    /// The name the session asked for (before any CNAME).
    pub name: String,
    /// The rule the name matched.
    pub rule: String,
}

fn names_path(cgroup_id: u64) -> PathBuf {
    audit_dir().join(format!("{cgroup_id}.names"))
}

/// The appending end of a session's names file.
#[derive(Debug)]
pub struct NamesLog {
    file: fs::File,
}

impl NamesLog {
    /// Creates (or continues) the names file of the session with cgroup id
    /// `cgroup_id`.
    pub fn create(cgroup_id: u64) -> std::io::Result<Self> {
        paths::create_private_dir(&audit_dir())?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(names_path(cgroup_id))?;
        Ok(Self { file })
    }

    /// Appends `opened` in one write (whole lines: a reader never sees
    /// half of one as complete).
    pub fn append(&mut self, opened: &[NameOpened]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut buf = Vec::new();
        for o in opened {
            serde_json::to_writer(&mut buf, o).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)
    }
}

/// The reading end: what a session's answers opened, read as it grows.
/// Consulted for every connect event of an address it does not know yet,
/// so the file stays open and a look is one read at its end.
#[derive(Debug, Default)]
struct Names {
    by_address: HashMap<IpAddr, (String, String)>,
    /// The open file; `None` after a failed open too: a session's resolver
    /// creates the file before its agent starts, so a session whose events
    /// arrive without one never gets one.
    file: Option<Option<fs::File>>,
    /// The end of a line still being written.
    partial: Vec<u8>,
}

impl Names {
    /// Reads the complete lines appended since the last call.
    fn refresh(&mut self, cgroup_id: u64) {
        self.refresh_from(&names_path(cgroup_id));
    }

    fn refresh_from(&mut self, path: &Path) {
        use std::io::Read as _;
        let Some(f) = self.file.get_or_insert_with(|| fs::File::open(path).ok()) else {
            return;
        };
        if f.read_to_end(&mut self.partial).is_err() {
            return;
        }
        let complete = self
            .partial
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in self.partial[..complete].split(|b| *b == b'\n') {
            if let Ok(o) = serde_json::from_slice::<NameOpened>(line) {
                self.by_address.insert(o.address, (o.name, o.rule));
            }
        }
        self.partial.drain(..complete);
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

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY-free: `read_unaligned` on a byte buffer of sufficient length;
    // T is a plain-data repr(C) event type valid for any bit pattern.
    Some(plain_read(bytes))
}

#[expect(
    unsafe_code,
    reason = "events are plain repr(C) data copied out of the ring buffer"
)]
fn plain_read<T: Copy>(bytes: &[u8]) -> T {
    // SAFETY: the caller checked that `bytes` holds at least size_of::<T>()
    // bytes; T is a repr(C) struct of integers and byte arrays, valid for
    // every bit pattern; read_unaligned has no alignment requirement.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn exec_id(pid: u32, ktime: u64) -> Value {
    if ktime == 0 {
        Value::Null
    } else {
        Value::String(format!("{pid}-{ktime}"))
    }
}

fn address(family: u16, addr: &[u8; 16]) -> String {
    if family == 10 {
        Ipv6Addr::from(*addr).to_string()
    } else {
        Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string()
    }
}

fn protocol(p: u16) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "other",
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

    /// The name and rule that opened `ip` for the session, if its answers
    /// did (reading what the resolver appended since the last look).
    fn opened_by(&mut self, cgroup_id: u64, ip: IpAddr) -> Option<(String, String)> {
        self.known(cgroup_id)?;
        let names = &mut self.sessions.get_mut(&cgroup_id)?.as_mut()?.names;
        if !names.by_address.contains_key(&ip) {
            names.refresh(cgroup_id);
        }
        names.by_address.get(&ip).cloned()
    }

    fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        let header: EventHeader = read(bytes)?;
        let ts = self.ts(header.ktime);
        let kind = EventKind::from_u32(header.kind)?;
        let opened = match kind {
            EventKind::Connect | EventKind::SocketDenied => read::<NetEvent>(bytes)
                .and_then(|n| address(n.family, &n.addr).parse::<IpAddr>().ok())
                .and_then(|ip| self.opened_by(header.cgroup_id, ip)),
            _ => None,
        };
        let known = self.known(header.cgroup_id)?;
        let context = known.context.clone();
        let scrub = |s: &str| known.redactor.scrub(s);
        let mut ev = match kind {
            EventKind::Exec | EventKind::ExecDenied | EventKind::Fork | EventKind::Exit => {
                let p: ProcessEvent = read(bytes)?;
                let path = c_string(&p.path[..PATH_LEN]);
                match kind {
                    EventKind::Exec => {
                        let len = (p.argv_len as usize).min(ARGV_LEN);
                        let argv: Vec<Value> = p.argv[..len]
                            .split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| Value::String(scrub(&String::from_utf8_lossy(a))))
                            .collect();
                        let rule = if known.exec_enforced {
                            known
                                .exec_rules
                                .iter()
                                .find(|(_, m)| m.is_match(&path))
                                .map_or(Value::Null, |(t, _)| Value::String(t.clone()))
                        } else {
                            Value::String("filesystem.execute".into())
                        };
                        Event::now(&context, "exec")
                            .with("pid", header.pid)
                            .with("ppid", p.ppid)
                            .with("uid", p.uid)
                            .with("exec_id", exec_id(header.pid, header.exec_ktime))
                            .with("parent_exec_id", exec_id(p.ppid, p.parent_ktime))
                            .with("path", scrub(&path))
                            .with("argv", Value::Array(argv))
                            .with("decision", "allow")
                            .with("rule", rule)
                    }
                    EventKind::ExecDenied => Event::now(&context, "deny")
                        .with("what", "exec")
                        .with("pid", header.pid)
                        .with("uid", p.uid)
                        .with("exec_id", exec_id(header.pid, header.exec_ktime))
                        .with("path", scrub(&path))
                        .with("errno", p.status)
                        .with(
                            "rule",
                            if known.exec_enforced {
                                "exec.allow"
                            } else {
                                "filesystem.execute"
                            },
                        )
                        .with(
                            "reason",
                            if p.status == 0 {
                                "executed anonymous memory (memfd): killed before it ran".to_owned()
                            } else {
                                format!(
                                    "execve refused ({}): not an allowed program",
                                    nix::errno::Errno::from_raw(
                                        i32::try_from(p.status).unwrap_or(0)
                                    )
                                )
                            },
                        ),
                    EventKind::Fork => Event::now(&context, "fork")
                        .with("pid", header.pid)
                        .with("ppid", p.ppid)
                        .with("exec_id", exec_id(header.pid, header.exec_ktime))
                        .with("parent_exec_id", exec_id(p.ppid, p.parent_ktime)),
                    _ => {
                        let status = p.status;
                        let mut e = Event::now(&context, "exit")
                            .with("pid", header.pid)
                            .with("exec_id", exec_id(header.pid, header.exec_ktime));
                        if status & 0x7f == 0 {
                            e = e.with("status", json!({"code": (status >> 8) & 0xff}));
                        } else {
                            e = e.with("status", json!({"signal": status & 0x7f}));
                        }
                        e
                    }
                }
            }
            EventKind::Connect | EventKind::SocketDenied => {
                let n: NetEvent = read(bytes)?;
                let addr = address(n.family, &n.addr);
                let op = match n.op {
                    net_op::CONNECT => "connect",
                    net_op::SENDMSG => "sendmsg",
                    net_op::BIND => "bind",
                    net_op::LISTEN => "listen",
                    _ => "socket",
                };
                if n.op == net_op::SOCKET {
                    Event::now(&context, "deny")
                        .with("what", "socket")
                        .with("pid", header.pid)
                        .with("exec_id", exec_id(header.pid, header.exec_ktime))
                        .with("family", n.family)
                        .with("type", n.protocol)
                        .with("rule", "built-in")
                        .with(
                            "reason",
                            "raw and packet sockets are not allowed in sessions",
                        )
                } else {
                    let ip: Option<IpAddr> = addr.parse().ok();
                    let rule = ip.and_then(|ip| {
                        known
                            .net_rules
                            .iter()
                            .find(|(_, nets, first, last)| {
                                nets.iter().any(|n| n.contains(&ip))
                                    && n.port >= *first
                                    && n.port <= *last
                            })
                            .map(|(t, ..)| t.clone())
                    });
                    let kind = if n.allowed == 1 {
                        if n.op == net_op::SENDMSG {
                            "sendmsg"
                        } else {
                            "connect"
                        }
                    } else {
                        "deny"
                    };
                    let kind = if n.op == net_op::BIND && n.allowed == 1 {
                        "bind"
                    } else {
                        kind
                    };
                    // An address a DNS answer opened: the name asked, and
                    // (when admitted and no static rule did) its rule.
                    let (domain, rule) = match opened {
                        Some((name, by)) => {
                            (Some(scrub(&name)), rule.or((n.allowed == 1).then_some(by)))
                        }
                        None => (None, rule),
                    };
                    let mut e = Event::now(&context, kind)
                        .with("pid", header.pid)
                        .with("exec_id", exec_id(header.pid, header.exec_ktime))
                        .with("protocol", protocol(n.protocol))
                        .with("address", addr.clone())
                        .with("port", n.port);
                    if let Some(d) = domain {
                        e = e.with("domain", d);
                    }
                    e = e
                        .with("decision", if n.allowed == 1 { "allow" } else { "deny" })
                        .with("rule", rule.map_or(Value::Null, Value::String));
                    if n.allowed == 0 {
                        e = e.with("what", op).with(
                            "reason",
                            if op == "bind" {
                                format!("no [network] bind rule allows {addr}:{}", n.port)
                            } else {
                                format!("no [network] allow rule admits {addr}:{}", n.port)
                            },
                        );
                    }
                    e
                }
            }
            EventKind::File => {
                let f: FileEvent = read(bytes)?;
                let path = c_string(&f.path);
                let access = match f.access {
                    file_access::READ => "read",
                    file_access::WRITE => "write",
                    file_access::CREATE => "create",
                    file_access::UNLINK => "unlink",
                    file_access::RENAME => "rename",
                    _ => "other",
                };
                let decision = match f.errno {
                    0 => "allow",
                    1 | 13 | 30 => "deny",
                    _ => "error",
                };
                let mut e = Event::now(&context, "file")
                    .with("pid", header.pid)
                    .with("exec_id", exec_id(header.pid, header.exec_ktime))
                    .with("path", scrub(&path))
                    .with("access", access)
                    .with("decision", decision);
                if f.dirfd != -100 && !path.starts_with('/') {
                    e = e.with("dirfd", f.dirfd);
                }
                if f.errno != 0 {
                    e = e.with("errno", nix::errno::Errno::from_raw(f.errno).to_string());
                }
                e
            }
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
    let lock_path = Path::new(paths::RUN_DIR).join("collector.lock");
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let Ok(file) = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn names_are_read_as_whole_lines_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.names");
        let line = |addr: &str, name: &str| {
            let mut l = serde_json::to_vec(&NameOpened {
                address: addr.parse().unwrap(),
                name: name.into(),
                rule: format!("{name}:443"),
            })
            .unwrap();
            l.push(b'\n');
            l
        };
        let mut f = fs::File::create(&path).unwrap();
        let second = line("2001:db8::10", "b.test");
        f.write_all(&line("203.0.113.10", "a.test")).unwrap();
        f.write_all(&second[..10]).unwrap();
        let mut names = Names::default();
        names.refresh_from(&path);
        assert_eq!(names.by_address.len(), 1, "half a line is not read");
        f.write_all(&second[10..]).unwrap();
        f.write_all(&line("203.0.113.10", "c.test")).unwrap();
        names.refresh_from(&path);
        let get = |a: &str| names.by_address.get(&a.parse::<IpAddr>().unwrap()).cloned();
        assert_eq!(
            get("2001:db8::10"),
            Some(("b.test".into(), "b.test:443".into()))
        );
        assert_eq!(
            get("203.0.113.10"),
            Some(("c.test".into(), "c.test:443".into())),
            "the latest answer names the address"
        );
    }
}
