//! The daemon's socket protocol, version 1.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON:
//! `{"v": 1, "msg": {"type": ..., ...}}`. Frames larger than
//! [`MAX_FRAME`] are refused before anything is allocated for them. File
//! descriptors (the caller's stdio for `run`) travel as `SCM_RIGHTS` with
//! the frame's first bytes. Unknown fields, unknown types and other
//! versions are errors: the daemon answers with an `error` frame and keeps
//! serving.
use std::{
    io::{self, IoSlice, IoSliceMut, Read as _, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::PathBuf,
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// Largest frame body accepted (1 MiB: a policy plus an environment).
pub const MAX_FRAME: usize = 1 << 20;
/// Most descriptors one frame may carry.
pub const MAX_FDS: usize = 3;

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("protocol version {0} is not supported (this agentd speaks {VERSION})")]
    Version(u32),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// A request to the daemon (or, during a run, to the session's supervisor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start a session; the frame carries the caller's stdin, stdout and
    /// stderr.
    Run(RunRequest),
    /// Live sessions.
    Ps {},
    /// Kill a session, or every session of an agent.
    Kill {
        /// Session id.
        session: Option<String>,
        /// Agent name.
        agent: Option<String>,
        /// Why (recorded).
        reason: Option<String>,
    },
    /// Kill an agent's sessions and refuse new ones.
    Disable {
        /// Agent name.
        agent: String,
        /// Why (recorded).
        reason: Option<String>,
    },
    /// Accept sessions of a disabled agent again.
    Enable {
        /// Agent name.
        agent: String,
    },
    /// Audit records, optionally of one session, optionally followed.
    Logs {
        /// Session id.
        session: Option<String>,
        /// Keep sending new records.
        follow: bool,
    },
    /// Prometheus text.
    Metrics {},
    /// During a run: the caller's terminal changed size.
    Resize {},
    /// During a run: deliver this signal to the agent (Ctrl-C without a
    /// terminal).
    Signal {
        /// Signal number.
        signal: i32,
    },
}

/// What `agentd run` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The policy file's path, as the caller named it (absolute).
    pub policy_path: PathBuf,
    /// The policy text, as the caller read it.
    pub policy: String,
    /// `--workspace` (absolute), else the caller's working directory.
    pub workspace: Option<PathBuf>,
    /// The caller's working directory.
    pub cwd: PathBuf,
    /// `--name`.
    pub name: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Give the agent a pty (the caller's stdin is a terminal).
    pub tty: bool,
    /// The caller's environment (for `[env] pass`).
    pub env: Vec<(String, String)>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The request failed; nothing was changed.
    Error {
        /// What failed.
        message: String,
        /// What to do.
        hint: Option<String>,
        /// Exit status the client should use.
        code: u8,
    },
    /// A line for the caller's stderr (warnings, orphans killed).
    Notice {
        /// The text.
        text: String,
    },
    /// The session started.
    Started {
        /// Session id.
        session: String,
        /// Agent name.
        agent: String,
    },
    /// The session ended.
    Exited {
        /// Shell-style status: the code, or 128 + signal.
        status: i32,
        /// Line for stderr when it did not simply exit.
        detail: Option<String>,
    },
    /// Live sessions.
    Sessions {
        /// One per session.
        sessions: Vec<crate::session::Summary>,
    },
    /// A session was killed.
    Killed {
        /// Session id.
        session: String,
        /// Processes that died.
        processes: usize,
        /// Until the last was gone.
        elapsed_us: u64,
        /// What could not be recorded (see `KillReport::unrecorded`).
        #[serde(default)]
        unrecorded: Vec<String>,
    },
    /// An audit record.
    Record {
        /// The record.
        record: serde_json::Map<String, serde_json::Value>,
    },
    /// Prometheus text.
    Metrics {
        /// The exposition.
        text: String,
    },
    /// Done, nothing more to say.
    Done {
        /// A line for stdout.
        text: Option<String>,
    },
}

#[derive(Serialize)]
struct OutFrame<'a, T> {
    v: u32,
    msg: &'a T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InFrame {
    v: u32,
    msg: serde_json::Value,
}

/// A frame's bytes: length prefix and body.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(&OutFrame { v: VERSION, msg }).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A message from a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let frame: InFrame =
        serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if frame.v != VERSION {
        return Err(ProtoError::Version(frame.v));
    }
    serde_json::from_value(frame.msg).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Writes one frame, with `fds` attached.
pub fn send<T: Serialize>(stream: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), ProtoError> {
    let bytes = encode(msg);
    if fds.is_empty() {
        (&*stream).write_all(&bytes)?;
        return Ok(());
    }
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        stream.as_fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    (&*stream).write_all(&bytes[sent..])?;
    Ok(())
}

/// Reads one frame: its message and the descriptors that came with it.
pub fn recv<T: DeserializeOwned>(stream: &UnixStream) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    let (body, fds) = recv_raw(stream, None)?;
    Ok((decode(&body)?, fds))
}

/// [`recv`], failing with `TimedOut` unless the whole frame has arrived by
/// `deadline` (however slowly its bytes come).
pub fn recv_by<T: DeserializeOwned>(
    stream: &UnixStream,
    deadline: std::time::Instant,
) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    let (body, fds) = recv_raw(stream, Some(deadline))?;
    Ok((decode(&body)?, fds))
}

/// Sets the stream's read timeout to what is left until `deadline`.
fn wait_until(stream: &UnixStream, deadline: Option<std::time::Instant>) -> Result<(), ProtoError> {
    let Some(deadline) = deadline else {
        return Ok(());
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(ProtoError::Io(io::ErrorKind::TimedOut.into()));
    }
    stream.set_read_timeout(Some(left)).map_err(ProtoError::Io)
}

/// Reads one frame's body (size-checked) and descriptors, by `deadline` if
/// one is given.
pub fn recv_raw(
    stream: &UnixStream,
    deadline: Option<std::time::Instant>,
) -> Result<(Vec<u8>, Vec<OwnedFd>), ProtoError> {
    let mut len = [0u8; 4];
    let mut fds = Vec::new();
    wait_until(stream, deadline)?;
    // The first read may carry descriptors.
    let got = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let msg = recvmsg::<()>(
            stream.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        fds.push(owned(fd));
                    }
                }
            }
        }
        msg.bytes
    };
    if got == 0 {
        return Err(ProtoError::Closed);
    }
    read_full(stream, &mut len[got..], deadline)?;
    let n = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if n > MAX_FRAME {
        return Err(ProtoError::TooLarge(n));
    }
    if fds.len() > MAX_FDS {
        return Err(ProtoError::Malformed(format!(
            "{} descriptors (at most {MAX_FDS})",
            fds.len()
        )));
    }
    let mut body = vec![0u8; n];
    read_full(stream, &mut body, deadline)?;
    Ok((body, fds))
}

fn read_full(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<std::time::Instant>,
) -> Result<(), ProtoError> {
    let mut done = 0;
    while done < buf.len() {
        wait_until(stream, deadline)?;
        match (&*stream).read(&mut buf[done..]) {
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::Io(e)),
        }
    }
    Ok(())
}

#[expect(
    unsafe_code,
    reason = "descriptors received with SCM_RIGHTS are new and ours alone"
)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in this process for this message
    // (SCM_RIGHTS); nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    #[test]
    fn messages_round_trip_with_descriptors() {
        let (a, b) = pair();
        let req = Request::Run(RunRequest {
            policy_path: "/etc/agentd/policies/x.toml".into(),
            policy: "version = 1".into(),
            cwd: "/home/u".into(),
            argv: vec!["/bin/true".into()],
            env: vec![("A".into(), "b".into())],
            ..RunRequest::default()
        });
        let file = std::fs::File::open("/dev/null").unwrap();
        send(&a, &req, &[file.as_raw_fd()]).unwrap();
        send(&a, &Request::Ps {}, &[]).unwrap();
        let (got, fds) = recv::<Request>(&b).unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 1);
        let (got, fds) = recv::<Request>(&b).unwrap();
        assert_eq!(got, Request::Ps {});
        assert!(fds.is_empty());
        drop(a);
        assert!(matches!(recv::<Request>(&b), Err(ProtoError::Closed)));
    }

    #[test]
    fn oversized_truncated_and_foreign_frames_are_errors() {
        let (mut a, b) = pair();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(recv_raw(&b, None), Err(ProtoError::TooLarge(_))));

        let (mut a, b) = pair();
        a.write_all(&10u32.to_be_bytes()).unwrap();
        a.write_all(b"{\"v\"").unwrap();
        drop(a);
        assert!(matches!(recv_raw(&b, None), Err(ProtoError::Truncated)));

        assert!(matches!(
            decode::<Request>(br#"{"v":2,"msg":{"type":"ps"}}"#),
            Err(ProtoError::Version(2))
        ));
        for bad in [
            &br#"{"v":1,"msg":{"type":"format_disk"}}"#[..],
            br#"{"v":1,"msg":{"type":"ps","extra":1}}"#,
            br#"{"v":1,"msg":{"type":"kill","session":7}}"#,
            br#"{"v":1}"#,
            b"not json",
            b"",
        ] {
            assert!(
                matches!(decode::<Request>(bad), Err(ProtoError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_message_or_an_error(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&body);
            let _ = decode::<Response>(&body);
        }

        #[test]
        fn any_stream_reads_as_frames_or_an_error(stream in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let (mut a, b) = pair();
            a.write_all(&stream).unwrap();
            drop(a);
            for _ in 0..16 {
                match recv::<Request>(&b) {
                    Ok(_) | Err(ProtoError::Malformed(_) | ProtoError::Version(_)) => {}
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn well_formed_frames_with_json_noise_never_panic(
            kind in "[a-z_]{0,12}",
            session in proptest::option::of("[ -~]{0,20}"),
        ) {
            let text = serde_json::json!({"v": 1, "msg": {"type": kind, "session": session}});
            let _ = decode::<Request>(text.to_string().as_bytes());
        }
    }

    /// A request whose bytes trickle in never outlasts its deadline.
    #[test]
    fn a_trickling_request_ends_at_its_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let mut a = a;
            let _ = a.write_all(&(1u32 << 20).to_be_bytes());
            for _ in 0..40 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if a.write_all(b"x").is_err() {
                    break;
                }
            }
        });
        let start = std::time::Instant::now();
        let deadline = start + std::time::Duration::from_millis(200);
        let r = recv_by::<Request>(&b, deadline);
        assert!(
            matches!(&r, Err(ProtoError::Io(e)) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)),
            "{r:?}"
        );
        drop(b);
        let _ = writer.join();
    }
}
