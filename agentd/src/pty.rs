//! The session's terminal: with a terminal on stdin the agent gets its own
//! pty, so it can never push input into (TIOCSTI) or reconfigure the
//! caller's terminal. The caller's terminal goes raw while the session runs
//! and is restored on exit; window size changes are forwarded.
use std::{
    io::{self, Read as _, Write as _},
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
    thread::JoinHandle,
};

use nix::sys::termios::{self, SetArg, Termios};

/// A pty pair.
#[derive(Debug)]
pub struct Pty {
    /// The side agentd keeps.
    pub master: OwnedFd,
    /// The agent's stdin, stdout and stderr.
    pub slave: OwnedFd,
    /// `/dev/pts/N`.
    pub slave_path: PathBuf,
}

/// Opens a pty with the window size of `like` (the caller's terminal).
pub fn open(like: BorrowedFd<'_>) -> io::Result<Pty> {
    let size = sys::window_size(like.as_raw_fd());
    let pair = nix::pty::openpty(size.as_ref(), None).map_err(io::Error::from)?;
    // Close-on-exec: the agent gets the slave as stdio only.
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    let slave_path = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
        slave_path,
    })
}

/// Copies the window size of `from` to `to`.
pub fn forward_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Some(size) = sys::window_size(from.as_raw_fd()) {
        sys::set_window_size(to.as_raw_fd(), &size);
    }
}

/// The caller's terminal in raw mode; restored when dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal `fd` in raw mode.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let saved = termios::tcgetattr(fd).map_err(io::Error::from)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        Ok(Self {
            fd: fd.try_clone_to_owned()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

/// Relays caller stdin → master and master → caller stdout in two threads.
/// The output thread ends when the last process holding the slave exits;
/// join it to flush everything the agent wrote.
pub fn relay(master: &OwnedFd) -> io::Result<JoinHandle<()>> {
    let mut to_agent = std::fs::File::from(master.try_clone()?);
    std::thread::Builder::new()
        .name("pty-in".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_agent.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })?;
    let mut from_agent = std::fs::File::from(master.try_clone()?);
    std::thread::Builder::new()
        .name("pty-out".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdout = io::stdout();
            // EIO once no process holds the slave any more.
            while let Ok(n) = from_agent.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
        })
}

mod sys {
    #![expect(unsafe_code, reason = "TIOCGWINSZ/TIOCSWINSZ have no safe wrapper")]

    /// TIOCGWINSZ on `fd`.
    pub fn window_size(fd: i32) -> Option<nix::pty::Winsize> {
        let mut ws = nix::pty::Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `struct winsize`, which `ws` is.
        let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        (ret == 0).then_some(ws)
    }

    /// TIOCSWINSZ on `fd`.
    pub fn set_window_size(fd: i32, ws: &nix::pty::Winsize) {
        // SAFETY: TIOCSWINSZ reads one `struct winsize`.
        unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, std::ptr::from_ref(ws)) };
    }
}
