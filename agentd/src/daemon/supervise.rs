//! The supervisor of one session started by the daemon: the daemon runs
//! `agentd __supervise` with the caller's stdin, stdout and stderr as 0-2,
//! the caller's connection as fd 3 and the assignment (JSON) on fd 4. It
//! then supervises exactly as embedded mode does, talking to the caller
//! directly: the session outlives a daemon restart, and the caller learns
//! how it ended whatever happened to the daemon meanwhile.
use std::{
    io::Read as _,
    os::{
        fd::{FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::proto::{self, Request, Response, RunRequest};
use crate::{
    audit,
    session::{self, KillRecord, RunOptions, SessionId, kill},
};

/// The caller's connection in the supervisor.
pub const CLIENT_FD: RawFd = 3;
/// The assignment in the supervisor.
pub const ASSIGNMENT_FD: RawFd = 4;

/// What the daemon hands a supervisor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The caller's request.
    pub run: RunRequest,
    /// The caller, as the kernel vouched for it.
    pub caller_uid: u32,
    /// Its gid.
    pub caller_gid: u32,
    /// Dynamic UID range.
    pub uid_range: (u32, u32),
    /// The trail: path, rotation size, files kept.
    pub audit: (PathBuf, u64, u32),
    /// The session resolver's upstream and TTLs.
    pub dns: crate::dns::Settings,
    /// The policy text is the client's, not the file the daemon read.
    pub policy_from_client: bool,
    /// For callers other than root: the limits' defaults and ceilings.
    pub caller_limits: Option<super::config::CallerLimits>,
}

/// Signals a caller may ask to deliver to its agent.
const FORWARDABLE: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

#[expect(
    unsafe_code,
    reason = "fds 3 and 4 are set up by the daemon for this process alone"
)]
fn inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: the daemon dup2'ed these descriptors into place just before
    // exec; nothing else in this process owns them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn send(client: &UnixStream, msg: &Response) {
    // The caller may be gone; the session's fate does not depend on it.
    let _ = proto::send(client, msg, &[]);
}

fn error(client: &UnixStream, message: String, hint: Option<String>, code: u8) -> ExitCode {
    send(
        client,
        &Response::Error {
            message,
            hint,
            code,
        },
    );
    ExitCode::from(code)
}

/// `agentd __supervise`.
pub fn main() -> ExitCode {
    // Before any thread exists: the signals the session forwards are
    // blocked everywhere, so only its forwarder thread receives them.
    let handled = session::forwarded_signals();
    let _ = handled.thread_block();
    let client = UnixStream::from(inherited(CLIENT_FD));
    let mut text = String::new();
    if std::fs::File::from(inherited(ASSIGNMENT_FD))
        .read_to_string(&mut text)
        .is_err()
    {
        return error(&client, "no assignment from the daemon".into(), None, 125);
    }
    let assignment: Assignment = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(e) => return error(&client, format!("bad assignment: {e}"), None, 125),
    };
    // The agent must not inherit the caller's connection.
    let _ = nix::fcntl::fcntl(
        &client,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let (path, rotate_size, keep) = assignment.audit.clone();
    audit::configure(audit::Settings {
        path,
        rotate_size,
        keep,
    });
    supervise(&client, assignment)
}

fn supervise(client: &UnixStream, a: Assignment) -> ExitCode {
    let run = a.run;
    let today = jiff::Zoned::now().date();
    let checked = crate::policy::check(run.policy.as_bytes(), today);
    let Some(policy) = &checked.policy.map(|mut p| {
        // Sessions of callers other than root run within the daemon's
        // limits, and never degraded.
        if let Some(limits) = &a.caller_limits {
            limits.apply(&mut p.limits);
            p.enforcement.allow_degraded = false;
        }
        p
    }) else {
        let name = run.policy_path.display().to_string();
        let rendered: String = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.render(&name, &checked.source))
            .collect();
        return error(
            client,
            format!("{name} is not a valid policy\n{rendered}"),
            Some("fix the errors above (`agentd policy check` lists them)".into()),
            125,
        );
    };
    let id: Arc<Mutex<Option<SessionId>>> = Arc::new(Mutex::new(None));
    let gone = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    watch_caller(client, &id, &gone, &finished, a.caller_uid);
    let opts = RunOptions {
        policy,
        policy_path: &run.policy_path,
        policy_from_client: a.policy_from_client,
        workspace: run.workspace.clone(),
        label: run.name.clone(),
        argv: run.argv.iter().map(Into::into).collect(),
        tty: run.tty,
        caller_env: run.env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        caller: Some((a.caller_uid, a.caller_gid)),
        cwd: Some(run.cwd.clone()),
        uid_range: a.uid_range.0..=a.uid_range.1,
        mode: session::Mode::Daemon,
        dns: a.dns.clone(),
    };
    let mut notify = |n: session::Notice<'_>| {
        if let session::Notice::Started { id: started, agent } = &n {
            if let Ok(mut slot) = id.lock() {
                *slot = Some((*started).clone());
            }
            send(
                client,
                &Response::Started {
                    session: started.to_string(),
                    agent: (*agent).to_owned(),
                },
            );
        } else if let Some(text) = n.line() {
            send(client, &Response::Notice { text });
        }
    };
    let result = session::run(opts, &mut notify);
    finished.store(true, Ordering::SeqCst);
    match result {
        Ok(outcome) => {
            let status = outcome.exit.status();
            send(
                client,
                &Response::Exited {
                    status,
                    detail: outcome.detail(),
                },
            );
            ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(255))
        }
        Err(e) => error(client, e.to_string(), e.hint(), e.exit_code()),
    }
}

/// Reads the caller's requests during the run: window size changes and
/// signals are delivered; a caller that goes away (Ctrl-C on a client
/// killed before it could say so, a crash) ends the session.
fn watch_caller(
    client: &UnixStream,
    id: &Arc<Mutex<Option<SessionId>>>,
    gone: &Arc<AtomicBool>,
    finished: &Arc<AtomicBool>,
    caller_uid: u32,
) {
    let Ok(reader) = client.try_clone() else {
        return;
    };
    let (id, gone, finished) = (Arc::clone(id), Arc::clone(gone), Arc::clone(finished));
    let me = nix::unistd::getpid().as_raw();
    let _ = std::thread::Builder::new()
        .name("caller".into())
        .spawn(move || {
            loop {
                match proto::recv::<Request>(&reader) {
                    Ok((Request::Resize {}, _)) => {
                        crate::sandbox::sys::kill(me, libc::SIGWINCH);
                    }
                    Ok((Request::Signal { signal }, _)) if FORWARDABLE.contains(&signal) => {
                        crate::sandbox::sys::kill(me, signal);
                    }
                    Ok(_)
                    | Err(proto::ProtoError::Malformed(_) | proto::ProtoError::Version(_)) => {}
                    Err(_) => break,
                }
            }
            gone.store(true, Ordering::SeqCst);
            // Wait for the session to exist (or for the run to fail).
            loop {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                let known = id.lock().ok().and_then(|slot| slot.clone());
                if let Some(id) = known {
                    let record = KillRecord {
                        reason: "killed".into(),
                        text: Some("the caller went away".into()),
                        by_uid: caller_uid,
                    };
                    // Until its state is written the session is unknown to
                    // kill; once marked, it dies even if not yet spawned.
                    if kill::kill_session(&id, &record).is_ok() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
}
