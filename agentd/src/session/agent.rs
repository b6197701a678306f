//! The supervisor's side of a running agent: waiting for it, passing
//! signals on, ending it at `max_duration`, and the watchdog that kills the
//! session if this supervisor dies without saying goodbye.
use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
        mpsc,
    },
    time::Duration,
};

use nix::sys::signal::{SigSet, Signal};

use super::{Exit, SessionError, SessionId, kill, state, state::KillRecord};
use crate::{cgroup::SessionCgroups, error::PathError, pty, sandbox};

/// Waits for the agent's root process.
pub(super) fn wait(pid: libc::pid_t) -> std::io::Result<Exit> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the agent and SIGWINCH to its
/// pty. A signal before the agent exists is delivered once it does.
pub(super) fn spawn_signal_forwarder(
    set: SigSet,
    pid: Arc<AtomicI32>,
    master: Option<std::io::Result<OwnedFd>>,
) {
    let master = master.and_then(Result::ok);
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { return };
                if sig == Signal::SIGWINCH {
                    if let Some(m) = &master {
                        pty::forward_window_size(std::io::stdin().as_fd(), m.as_fd());
                    }
                    continue;
                }
                loop {
                    let p = pid.load(Ordering::SeqCst);
                    if p > 0 {
                        sandbox::sys::kill(p, sig as i32);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
}

/// The signals a supervisor passes on to its agent (SIGWINCH: the window
/// size), blocked in every thread but the one that forwards them.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Kills the session when `max_duration` passes. Returns a sender that
/// cancels it and a handle that tells whether it fired.
pub(super) fn spawn_ttl(
    id: &SessionId,
    ttl: Option<Duration>,
    cgroups: SessionCgroups,
) -> (mpsc::Sender<()>, Option<std::thread::JoinHandle<bool>>) {
    let (tx, rx) = mpsc::channel::<()>();
    let Some(ttl) = ttl else {
        return (tx, None);
    };
    let id = id.clone();
    let handle = std::thread::Builder::new()
        .name("ttl".into())
        .spawn(move || match rx.recv_timeout(ttl) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = state::mark_killed(
                    &id,
                    &KillRecord {
                        reason: "ttl".into(),
                        text: Some(format!("max_duration {ttl:?} reached")),
                        by_uid: 0,
                    },
                );
                let _ = cgroups.kill_all(kill::KILL_DEADLINE);
                true
            }
            _ => false,
        })
        .ok();
    (tx, handle)
}

/// A forked process that runs `agentd kill <id>` if this supervisor dies
/// without dismissing it (SIGKILL, crash), so that no session outlives its
/// supervisor. Dropping it dismisses it: every way out of a supervisor that
/// is still alive has cleaned up itself, so no `kill` record is spurious.
pub(super) struct Watchdog {
    pid: libc::pid_t,
    hold: Option<OwnedFd>,
}

impl Watchdog {
    pub(super) fn start(id: &SessionId) -> Result<Self, SessionError> {
        let fail = |e: i32| {
            SessionError::Io(PathError {
                op: "start the session watchdog",
                path: PathBuf::from("/proc/self/exe"),
                source: std::io::Error::from_raw_os_error(e),
            })
        };
        let (hold_read, hold_write) = sandbox::sys::pipe().map_err(fail)?;
        let args: Vec<CString> = ["agentd", "kill", id.as_str(), "--reason", "supervisor died"]
            .iter()
            .filter_map(|a| CString::new(*a).ok())
            .collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = [std::ptr::null()];
        let pid = sandbox::sys::fork_watchdog(hold_read.as_raw_fd(), &argv, &envp).map_err(fail)?;
        drop(hold_read);
        Ok(Self {
            pid,
            hold: Some(hold_write),
        })
    }

    /// The session ended: the watchdog exits without killing, and is
    /// reaped.
    pub(super) fn dismiss(self) {
        drop(self);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            let _ = sandbox::sys::write_all(hold.as_raw_fd(), b"1");
        }
        sandbox::sys::reap(self.pid);
    }
}
