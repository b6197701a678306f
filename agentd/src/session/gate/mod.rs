//! The session's gate: the supervisor's end of the seccomp listener,
//! deciding on each held `connect`, `sendto` with an address, `sendmsg` and
//! `sendmmsg` (pathname unix sockets, below), and on each creating call
//! (`open` with `O_CREAT`, `mkdir`, `rename`, `link`, `symlink` …: the
//! broker performs them, refusing protected names; see [`names`]).
//!
//! Why it holds: the decision never rests on the agent's memory at the time
//! the kernel runs the call.
//! - The socket's family and type come from the socket itself
//!   (`pidfd_getfd`, then `SO_DOMAIN`/`SO_TYPE`), fixed at creation. Calls
//!   on IPv4/IPv6/netlink sockets continue: the cgroup hooks and the
//!   session's filter judge them in the kernel, whatever the memory says
//!   by then. Sends on unix stream and seqpacket sockets continue too: the
//!   kernel ignores or refuses their addresses.
//! - A unix `connect` and a unix datagram `sendto` with an address are not
//!   continued: the address (and data) are copied once, and the broker
//!   performs the call on the agent's own socket with that copy, after
//!   checking the inode it resolves to ([`crate::sandbox::broker`]).
//! - `sendmsg`/`sendmmsg` on unix datagram sockets are refused: their
//!   address lives in a structure the agent could rewrite after the check,
//!   and a connected datagram socket can still send elsewhere.
//!
//! If the supervisor dies, the listener closes and every held call fails
//! with ENOSYS: nothing passes unchecked.
//!
//! A continued call looks its descriptor up again when it runs, so a
//! thread may swap descriptor N between an IP socket (which the gate lets
//! continue) and a unix socket. The kernel closes that race: its cgroup
//! hooks for unix sockets refuse every unix `connect` and addressed unix
//! send of the session's processes except the broker's, which alone has
//! the broker group (`crate::ebpf`, `unix` hooks). The host's socket
//! directories are also empty in the session (`sandbox::mounts::SOCKET_DIRS`),
//! a second wall where those hooks are missing (Linux < 6.7, degraded
//! mode only).
use std::{
    ffi::OsStr,
    fs,
    os::{
        fd::{AsFd, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    thread::JoinHandle,
};

pub(super) mod exec;
mod names;

use crate::{
    audit::{Context, Event, Log},
    sandbox::{
        GateChild,
        broker::{self, Client, Reply},
        notify::{self, Listener, Notification, Response},
        seccomp,
    },
};

/// The parent's part of a gate not started yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// Write end of the child's `ack` pipe.
    ack: OwnedFd,
    client: Client,
    rules: Vec<(String, PathBuf)>,
}

/// The parent's part once the ack pipe has gone to `spawn`.
#[derive(Debug)]
pub(super) struct Ready {
    client: Client,
    rules: Vec<(String, PathBuf)>,
}

impl Pending {
    /// (the ack pipe for `spawn`, the rest for [`Ready::start`]).
    pub(super) fn split(self) -> (OwnedFd, Ready) {
        (
            self.ack,
            Ready {
                client: self.client,
                rules: self.rules,
            },
        )
    }
}

impl Ready {
    /// Starts serving the listener taken from the agent; `exec` is the
    /// exec gate's rules and token map, when the session has one.
    pub(super) fn start(
        self,
        listener: OwnedFd,
        log: Log,
        context: Context,
        exec: Option<ExecGate>,
    ) -> std::io::Result<Gate> {
        Gate::start(listener, self.client, self.rules, log, context, exec)
    }
}

/// Prepares the gate: the child's part (broker and filter) and the
/// parent's. `unix` is `[network] unix` (text, resolved path); `own` the
/// session's `{tmp}` and `{home}`.
pub(super) fn prepare(
    unix: &[(String, PathBuf)],
    own: [&Path; 2],
    (uid, gid): (libc::uid_t, libc::gid_t),
    protected: crate::sandbox::protect::Tree,
    exec: bool,
) -> Result<(GateChild, Pending), super::SessionError> {
    use crate::error::AtPath as _;
    let io = |e: i32| std::io::Error::from_raw_os_error(e);
    let (chan, client) = broker::channel()
        .map_err(io)
        .at("socketpair", Path::new("the unix socket broker"))?;
    let (ack_read, ack_write) = crate::sandbox::sys::pipe()
        .map_err(io)
        .at("pipe", Path::new("the gate's listener"))?;
    // Real paths: the broker compares the real path of the socket it
    // resolved, so a listed symlink (/var/run -> /run) must be followed
    // here too. A path that does not exist yet stays as written.
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let c = |p: PathBuf| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
    let rules: Vec<(String, PathBuf)> = unix.iter().map(|(t, p)| (t.clone(), real(p))).collect();
    let child = GateChild {
        broker: broker::Plan {
            chan,
            uid,
            gid,
            protected,
            listed: rules.iter().filter_map(|(_, p)| c(p.clone())).collect(),
            own: own.iter().filter_map(|p| c(real(p))).collect(),
            filter: seccomp::broker_program()?,
        },
        filter: seccomp::gate_program(exec)?,
        ack: ack_read,
    };
    Ok((
        child,
        Pending {
            ack: ack_write,
            client,
            rules,
        },
    ))
}

/// The exec gate of a session: its rules, where its tokens go, and how
/// its records are redacted.
#[derive(Debug)]
pub(super) struct ExecGate {
    /// The `[exec]` rules.
    pub rules: exec::Rules,
    /// The kernel's token map.
    pub tokens: crate::ebpf::ExecTokens,
    /// Redacts argv and paths in records, as the trail does.
    pub redactor: crate::audit::redact::Redactor,
}

/// The running gate; stops (and joins its thread) when dropped.
pub(super) struct Gate {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    /// Serves `listener` until the gate is dropped or no process of the
    /// session is left.
    fn start(
        listener: OwnedFd,
        client: Client,
        rules: Vec<(String, PathBuf)>,
        log: Log,
        context: Context,
        exec: Option<ExecGate>,
    ) -> std::io::Result<Self> {
        let (stop_read, stop_write) =
            crate::sandbox::sys::pipe().map_err(std::io::Error::from_raw_os_error)?;
        let root = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open("/")
            .map(OwnedFd::from)?;
        let deciding = Deciding {
            root,
            listener: Listener::new(listener),
            client,
            rules,
            log,
            context,
            exec: exec.map(std::cell::RefCell::new),
        };
        let thread = std::thread::Builder::new()
            .name("gate".into())
            .spawn(move || deciding.serve(&stop_read))?;
        Ok(Self {
            stop: Some(stop_write),
            thread: Some(thread),
        })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        drop(self.stop.take()); // EOF on the stop pipe
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// For a script: whether the rules refuse the command its `#!` line makes
/// (`#!/usr/bin/git push` in an allowed script): (rule, reason) if so.
fn interpreter_refused(
    rules: &exec::Rules,
    tid: u32,
    i: &exec::Interpreter,
    env: &[u8],
) -> Option<(String, String)> {
    let mut names = vec![i.path.as_path()];
    if exec::root_owned_way(tid, &i.called) {
        names.push(i.called.as_path());
    }
    let args: Vec<&str> = i.args.iter().map(String::as_str).collect();
    let argv0 = i.called.to_string_lossy();
    let seen = exec::Seen {
        names: &names,
        argv0: &argv0,
        args: &args,
        env,
    };
    match rules.verdict(seen) {
        exec::Verdict::Allow(_) => None,
        exec::Verdict::Refused(why) => Some((
            "exec.allow".to_owned(),
            format!("its #! interpreter: {why}"),
        )),
        exec::Verdict::Ask(r) => Some((
            r,
            "its #! interpreter's command needs a person's approval, and approvals are not \
             available yet: refused"
                .to_owned(),
        )),
        exec::Verdict::Deny => Some((
            "exec.allow".to_owned(),
            format!(
                "no [exec] allow entry matches its #! interpreter {} with these arguments",
                i.path.display()
            ),
        )),
    }
}

/// What a creating call came to, when it did not fail.
enum Created {
    /// An open's new descriptor, to install in the caller.
    Fd(OwnedFd),
    /// Answered later, by another thread.
    Later,
}

/// The gate's thread state.
struct Deciding {
    /// A directory descriptor sent for absolute paths, which the broker
    /// resolves from its own root whatever descriptor it gets.
    root: OwnedFd,
    listener: Listener,
    client: Client,
    rules: Vec<(String, PathBuf)>,
    log: Log,
    context: Context,
    /// The exec gate (its token map needs `&mut`).
    exec: Option<std::cell::RefCell<ExecGate>>,
}

/// A held call, by what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Connect {
        fd: u64,
        addr: u64,
        len: u64,
    },
    SendTo {
        fd: u64,
        data: u64,
        len: u64,
        flags: u64,
        addr: u64,
        addr_len: u64,
    },
    SendMsg {
        fd: u64,
    },
    /// A socket of a family sessions may not create (the filter holds only
    /// those).
    Socket {
        family: u64,
        ty: u64,
        protocol: u64,
    },
}

impl Call {
    fn of(n: &Notification) -> Option<Self> {
        let a = n.args;
        match n.nr {
            libc::SYS_connect => Some(Self::Connect {
                fd: a[0],
                addr: a[1],
                len: a[2],
            }),
            libc::SYS_sendto => Some(Self::SendTo {
                fd: a[0],
                data: a[1],
                len: a[2],
                flags: a[3],
                addr: a[4],
                addr_len: a[5],
            }),
            libc::SYS_sendmsg | libc::SYS_sendmmsg => Some(Self::SendMsg { fd: a[0] }),
            libc::SYS_socket | libc::SYS_socketpair => Some(Self::Socket {
                family: a[0],
                ty: a[1],
                protocol: a[2],
            }),
            _ => None,
        }
    }

    fn fd(self) -> u64 {
        match self {
            Self::Connect { fd, .. } | Self::SendTo { fd, .. } | Self::SendMsg { fd } => fd,
            Self::Socket { .. } => u64::MAX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::SendTo { .. } => "sendto",
            Self::SendMsg { .. } => "sendmsg",
            Self::Socket { .. } => "socket",
        }
    }
}

impl Deciding {
    fn serve(&self, stop: &OwnedFd) {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        loop {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            let revents = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
            // Stop asked, or no process of the session is left (the
            // listener hangs up when the last filter user is gone).
            if !revents(1).is_empty() || revents(0).contains(PollFlags::POLLHUP) {
                return;
            }
            if !revents(0).contains(PollFlags::POLLIN) {
                continue;
            }
            let n = match self.listener.recv() {
                Ok(n) => n,
                Err(libc::ENOENT | libc::EINTR) => continue,
                Err(e) => {
                    tracing::error!(errno = e, "the gate cannot receive; held calls fail");
                    return;
                }
            };
            // ENOENT: the caller died meanwhile.
            if let Some(call) = exec::ExecCall::of(&n) {
                let response = self.exec(&n, call);
                let _ = self.listener.respond(n.id, response);
                continue;
            }
            if let Some(call) = names::Creating::of(&n) {
                match self.create(&n, call) {
                    Ok(Created::Later) => {}
                    Ok(Created::Fd(fd)) => {
                        // Installing can fail (the caller's descriptor
                        // table full): the open fails with that error.
                        if let Err(e) = self.listener.respond_fd(n.id, fd.as_fd(), call.cloexec())
                            && e != libc::ENOENT
                        {
                            let _ = self.listener.respond(n.id, Response::Error(e));
                        }
                    }
                    Err(response) => {
                        let _ = self.listener.respond(n.id, response);
                    }
                }
                continue;
            }
            let response = self.decide(&n);
            let _ = self.listener.respond(n.id, response);
        }
    }

    fn decide(&self, n: &Notification) -> Response {
        let Some(call) = Call::of(n) else {
            return Response::Error(libc::ENOSYS);
        };
        if let Call::Socket {
            family,
            ty,
            protocol,
        } = call
        {
            self.socket_denied(n, family, ty, protocol);
            return Response::Error(libc::EPERM);
        }
        let sock = match notify::take_fd(n.pid, call.fd(), true) {
            Ok(s) => s,
            Err(libc::EBADF) => return Response::Error(libc::EBADF),
            Err(_) => return Response::Error(libc::EPERM),
        };
        let (family, ty) = match notify::socket_kind(sock.as_fd()) {
            Ok(k) => k,
            Err(e) => return Response::Error(e),
        };
        if family != libc::AF_UNIX {
            return Response::Continue;
        }
        match call {
            Call::SendMsg { .. } if ty == libc::SOCK_DGRAM => {
                self.deny(
                    n,
                    call,
                    None,
                    "sendmsg and sendmmsg on unix datagram sockets are not allowed in sessions \
                     (use connect and send)",
                );
                Response::Error(libc::EPERM)
            }
            Call::SendMsg { .. } => Response::Continue,
            Call::SendTo { .. } if ty != libc::SOCK_DGRAM => Response::Continue,
            Call::SendTo { .. } | Call::Connect { .. } => self.broker(n, call, &sock),
            Call::Socket { .. } => Response::Error(libc::EPERM),
        }
    }

    /// Copies the address (and data), and has the broker perform the call.
    fn broker(&self, n: &Notification, call: Call, sock: &OwnedFd) -> Response {
        let (op, flags, addr, addr_len, data, data_len) = match call {
            Call::Connect { addr, len, .. } => (broker::OP_CONNECT, 0, addr, len, 0, 0),
            Call::SendTo {
                data,
                len,
                flags,
                addr,
                addr_len,
                ..
            } => (broker::OP_SENDTO, flags, addr, addr_len, data, len),
            Call::SendMsg { .. } | Call::Socket { .. } => return Response::Error(libc::EPERM),
        };
        let Ok(addr_len) = usize::try_from(addr_len) else {
            return Response::Error(libc::EINVAL);
        };
        if addr_len > broker::ADDR_MAX {
            return Response::Error(libc::EINVAL);
        }
        let Ok(data_len) = usize::try_from(data_len) else {
            return Response::Error(libc::EMSGSIZE);
        };
        if data_len > broker::DATA_MAX {
            return Response::Error(libc::EMSGSIZE);
        }
        let mut address = [0u8; broker::ADDR_MAX];
        let mut payload = vec![0u8; data_len];
        let copied = notify::read_memory(n.pid, addr, &mut address[..addr_len])
            .and_then(|_| notify::read_memory(n.pid, data, &mut payload));
        if copied.is_err() {
            return Response::Error(libc::EFAULT);
        }
        // The caller's working directory, for a relative path only (the
        // broker resolves absolute ones from its root, whatever directory
        // descriptor it gets).
        let relative = broker::pathname(&address[..addr_len]).is_some_and(|p| !p.starts_with(b"/"));
        let cwd = if relative {
            match names::directory(n.pid, i64::from(libc::AT_FDCWD)) {
                Ok(c) => Some(c),
                Err(_) => return Response::Error(libc::EPERM),
            }
        } else {
            None
        };
        // What was read belongs to the caller only if it still waits.
        if !self.listener.valid(n.id) {
            return Response::Error(libc::EPERM);
        }
        let req = broker::Request::new(
            op,
            u32::try_from(flags).unwrap_or(0),
            &address[..addr_len],
            data_len,
        );
        let dir = cwd.as_ref().map_or(sock.as_fd(), AsFd::as_fd);
        let reply = match self.client.call(&req, &payload, sock.as_fd(), dir) {
            Ok((r, _)) => r,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::warn!(
                    pid = n.pid,
                    "the session's unix socket broker did not answer in {:?}",
                    broker::TIMEOUT
                );
                return Response::Error(libc::ETIMEDOUT);
            }
            Err(e) => {
                let reason = format!("the session's unix socket broker is gone ({e})");
                self.deny(n, call, None, &reason);
                return Response::Error(libc::EACCES);
            }
        };
        self.record(n, call, &reply, &address[..addr_len]);
        if reply.ret < 0 {
            Response::Error(i32::try_from(-reply.ret).unwrap_or(libc::EIO))
        } else {
            Response::Value(reply.ret)
        }
    }

    /// An exec: decided on a copy of its path, argv and environment, and
    /// bound to them by a token the kernel checks (see [`exec`]).
    fn exec(&self, n: &Notification, call: exec::ExecCall) -> Response {
        let Some(gate) = &self.exec else {
            return Response::Error(libc::ENOSYS);
        };
        let copied = match exec::copy(n.pid, call) {
            Ok(c) => c,
            Err(e) => return Response::Error(e),
        };
        if !self.listener.valid(n.id) {
            return Response::Error(libc::EPERM);
        }
        let dir = copied.dir.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
        let program = match exec::resolve(&self.client, &copied.path, dir, copied.flags) {
            Ok(p) => p,
            Err(e) => return Response::Error(e),
        };
        let args: Vec<String> = copied
            .argv
            .iter()
            .skip(1)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let called = Path::new(OsStr::from_bytes(&copied.path));
        let mut names = vec![program.path.as_path()];
        if exec::root_owned_way(n.pid, called) {
            names.push(called);
        }
        let argv0 = copied
            .argv
            .first()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        let seen = exec::Seen {
            names: &names,
            argv0: &argv0,
            args: &args,
            env: &copied.env,
        };
        let mut gate = gate.borrow_mut();
        let mut errno = libc::EACCES;
        let (rule, reason) = match gate.rules.verdict(seen) {
            exec::Verdict::Allow(rule) => match exec::token(&self.client, &copied, &program) {
                Ok((token, interpreter)) => {
                    let refused = interpreter
                        .and_then(|i| interpreter_refused(&gate.rules, n.pid, &i, &copied.env));
                    match refused {
                        Some(refused) => refused,
                        None => match gate.tokens.insert(n.pid, &token) {
                            Ok(()) => return Response::Continue,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot write an exec token; the exec is refused");
                                (
                                    rule,
                                    "the exec gate could not record its decision in the kernel"
                                        .to_owned(),
                                )
                            }
                        },
                    }
                }
                Err(e) => {
                    errno = e;
                    (
                        rule,
                        format!(
                            "the exec cannot be bound to what was checked ({}): argv is limited to {} bytes and the environment to {} bytes for gated programs, and a #! interpreter may not be a script",
                            nix::errno::Errno::from_raw(e),
                            agentd_common::TOKEN_ARGV_LEN,
                            agentd_common::TOKEN_ENV_LEN
                        ),
                    )
                }
            },
            exec::Verdict::Ask(rule) => (
                rule,
                "needs a person's approval, and approvals are not available yet: refused"
                    .to_owned(),
            ),
            exec::Verdict::Deny => (
                "exec.allow".to_owned(),
                "no [exec] allow entry matches this program with these arguments".to_owned(),
            ),
            exec::Verdict::Refused(why) => ("exec.allow".to_owned(), why),
        };
        let argv: Vec<serde_json::Value> = copied
            .argv
            .iter()
            .map(|a| serde_json::Value::String(gate.redactor.scrub(&String::from_utf8_lossy(a))))
            .collect();
        let ev = Event::now(&self.context, "deny")
            .with("what", "exec")
            .with("pid", n.pid)
            .with("path", gate.redactor.scrub(&program.path.to_string_lossy()))
            .with("argv", serde_json::Value::Array(argv))
            .with("rule", rule)
            .with("reason", reason);
        self.append(ev);
        Response::Error(errno)
    }

    /// A creating call: the broker performs it on a copy of the paths,
    /// refusing protected names. An open's new descriptor, or the answer.
    fn create(&self, n: &Notification, call: names::Creating) -> Result<Created, Response> {
        let copied = names::copy(n.pid, call).map_err(Response::Error)?;
        // What was read belongs to the caller only if it still waits.
        if !self.listener.valid(n.id) {
            return Err(Response::Error(libc::EPERM));
        }
        let [first, second] = names::dir_fds(&copied, self.root.as_fd());
        let (reply, fd) = match self
            .client
            .call(&copied.request, &copied.data, first, second)
        {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::warn!(
                    pid = n.pid,
                    "the session's broker did not answer in {:?}",
                    broker::TIMEOUT
                );
                return Err(Response::Error(libc::ETIMEDOUT));
            }
            Err(e) => {
                tracing::warn!(pid = n.pid, error = %e, "the session's broker is gone");
                return Err(Response::Error(libc::EACCES));
            }
        };
        if reply.outcome == broker::PROTECTED {
            let ev = Event::now(&self.context, "deny")
                .with("what", "file")
                .with("op", call.name())
                .with("pid", n.pid)
                .with("path", reply.path())
                .with("asked", copied.shown)
                .with("rule", "protect")
                .with(
                    "reason",
                    "a protected name: the caller's tools run or trust it (SPEC guarantee 2)",
                );
            self.append(ev);
        }
        if let (broker::FIFO_WAIT, Some(fifo)) = (reply.outcome, &fd) {
            self.wait_for_reader(n, call, fifo)?;
            return Ok(Created::Later);
        }
        match (reply.ret, fd) {
            (r, _) if r < 0 => Err(Response::Error(i32::try_from(-r).unwrap_or(libc::EIO))),
            (_, Some(fd)) => Ok(Created::Fd(fd)),
            (_, None) if call.op == broker::OP_OPEN => Err(Response::Error(libc::EIO)),
            (r, None) => Err(Response::Value(r)),
        }
    }

    /// Opens a FIFO that has no reader yet on a thread of its own, which
    /// blocks as the agent's open would and then answers it; the gate
    /// goes on serving. The broker checked the name and its permissions
    /// (ENXIO comes after them); reopening the checked inode creates
    /// nothing.
    fn wait_for_reader(
        &self,
        n: &Notification,
        call: names::Creating,
        fifo: &OwnedFd,
    ) -> Result<(), Response> {
        let listener = self
            .listener
            .try_clone()
            .map_err(|_| Response::Error(libc::EMFILE))?;
        let fifo = fifo
            .try_clone()
            .map_err(|_| Response::Error(libc::EMFILE))?;
        let id = n.id;
        let flags = call.flags as libc::c_int
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOFOLLOW);
        std::thread::Builder::new()
            .name("gate-fifo".into())
            .spawn(move || {
                use std::os::fd::AsRawFd as _;
                let opened = fs::OpenOptions::new()
                    .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
                    .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
                    .custom_flags(flags & !libc::O_ACCMODE)
                    .open(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
                let answered = match opened {
                    Ok(f) => listener.respond_fd(id, OwnedFd::from(f).as_fd(), call.cloexec()),
                    Err(e) => listener
                        .respond(id, Response::Error(e.raw_os_error().unwrap_or(libc::EIO)))
                        .map(|()| 0),
                };
                let _ = answered;
            })
            .map(drop)
            .map_err(|_| Response::Error(libc::EAGAIN))
    }

    fn record(&self, n: &Notification, call: Call, reply: &Reply, address: &[u8]) {
        let path = reply.path();
        match reply.outcome {
            // A host socket directory, which the session sees empty.
            broker::UNRESOLVED => {
                let named = broker::pathname(address).map(|p| String::from_utf8_lossy(p).into_owned());
                if let Some(named) = named.filter(|p| {
                    crate::sandbox::mounts::SOCKET_DIRS
                        .iter()
                        .any(|d| Path::new(p).starts_with(d))
                }) {
                    self.deny(
                        n,
                        call,
                        Some(&named),
                        "the host's socket directories are empty in sessions; list the socket in [network] unix",
                    );
                }
            }
            // An abstract socket outside the session's Landlock domain.
            broker::PASSED if reply.ret == -i64::from(libc::EPERM) => {
                if let Some(name) = address.get(3..).filter(|_| address.get(2) == Some(&0)) {
                    let shown = format!("@{}", String::from_utf8_lossy(name));
                    self.deny(
                        n,
                        call,
                        Some(&shown),
                        "abstract unix sockets are reachable only within the session (Landlock scoping)",
                    );
                }
            }
            broker::REFUSED => self.deny(
                n,
                call,
                Some(&path),
                &format!("no [network] unix entry allows {path}, and it is not a socket the session created under its {{tmp}} or {{home}}"),
            ),
            broker::LISTED => {
                let rule = self
                    .rules
                    .iter()
                    .find(|(_, p)| Path::new(&path).starts_with(p))
                    .map(|(t, _)| t.clone());
                let ev = Event::now(&self.context, "connect")
                    .with("pid", n.pid)
                    .with("protocol", "unix")
                    .with("path", path)
                    .with("what", call.name())
                    .with("decision", "allow")
                    .with("rule", rule.map_or(serde_json::Value::Null, serde_json::Value::String));
                self.append(ev);
            }
            _ => {}
        }
    }

    /// The same record as for the sockets the kernel's `cgroup_sock_create`
    /// refuses.
    fn socket_denied(&self, n: &Notification, family: u64, ty: u64, protocol: u64) {
        // The kernel takes them as ints; the type carries flags above 0xf.
        let int = |v: u64| u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
        let (family, ty, protocol) = (int(family), int(ty) & 0xf, int(protocol));
        let short = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        let reason =
            crate::audit::collect::refused_socket(short(family), short(ty), short(protocol));
        let ev = Event::now(&self.context, "deny")
            .with("what", "socket")
            .with("pid", n.pid)
            .with("family", family)
            .with("type", ty)
            .with("protocol", protocol)
            .with("rule", "built-in")
            .with("reason", reason);
        self.append(ev);
    }

    fn deny(&self, n: &Notification, call: Call, path: Option<&str>, reason: &str) {
        let mut ev = Event::now(&self.context, "deny")
            .with("what", "unix")
            .with("op", call.name())
            .with("pid", n.pid);
        if let Some(p) = path {
            ev = ev.with("path", p);
        }
        self.append(ev.with("rule", "built-in").with("reason", reason));
    }

    fn append(&self, ev: Event) {
        if let Err(e) = self.log.append(&[ev]) {
            tracing::warn!(error = %e, "cannot write a unix socket record");
        }
    }
}
