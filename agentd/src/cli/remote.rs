//! Talking to a running daemon on behalf of the other commands, printing
//! its answers the way the embedded commands print their own.
use std::{os::unix::net::UnixStream, path::Path, process::ExitCode, time::Duration};

use super::{color, fail, logs::print_record, print_killed};
use crate::daemon::{
    client,
    proto::{ProtoError, Request, Response},
};

/// A connection to the running daemon, if any.
pub(super) fn connect() -> Option<UnixStream> {
    client::connect()
}

/// Sends `req` to the daemon and prints what comes back the way the
/// embedded commands print it; `each` sees every answer first.
pub(super) fn exchange(conn: &UnixStream, req: &Request, each: impl FnMut(&Response)) -> ExitCode {
    exchange_as(conn, req, false, each)
}

/// [`exchange`], printing records as JSON lines when `json`.
fn exchange_as(
    conn: &UnixStream,
    req: &Request,
    json: bool,
    mut each: impl FnMut(&Response),
) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    let color = color();
    let result = client::exchange(conn, req, |r| {
        each(r);
        match r {
            Response::Error {
                message,
                hint,
                code: c,
            } => {
                super::print_error("error", message, hint.as_deref());
                code = ExitCode::from(*c);
            }
            Response::Notice { text } => eprintln!("{}", crate::text::printable(text)),
            Response::Killed {
                session,
                processes,
                elapsed_us,
                unrecorded,
            } => {
                let printed = print_killed(
                    session,
                    *processes,
                    Duration::from_micros(*elapsed_us),
                    unrecorded,
                );
                if printed != ExitCode::SUCCESS {
                    code = printed;
                }
            }
            Response::Record { record } => {
                let line = serde_json::to_string(record).unwrap_or_default();
                print_record(&line, record, json, color);
            }
            Response::Metrics { text } => print!("{text}"),
            Response::Done { text: Some(t) } => println!("{t}"),
            _ => {}
        }
    });
    match result {
        Ok(()) => code,
        Err(ProtoError::Closed | ProtoError::Truncated) => fail(
            "the daemon closed the connection",
            Some("see the daemon's log (journalctl -u agentd)"),
        ),
        Err(e) => fail(format!("talking to the daemon: {e}"), None),
    }
}

/// `agentd logs` through the daemon (for callers who cannot read the file).
pub(super) fn logs(
    conn: &UnixStream,
    session: Option<String>,
    follow: bool,
    json: bool,
) -> ExitCode {
    exchange_as(conn, &Request::Logs { session, follow }, json, |_| {})
}

/// Whether `path` can be read by this process (else `logs` asks the
/// daemon).
pub(super) fn readable(path: &Path) -> bool {
    std::fs::File::open(path).is_ok()
}
