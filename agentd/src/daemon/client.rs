//! The client side: commands that go through the daemon when one runs.
use std::{io, os::unix::net::UnixStream, path::PathBuf};

use super::proto::{self, ProtoError, Request, Response};

/// The daemon's socket (`AGENTD_SOCKET` overrides it, for a second
/// instance or a test).
pub fn socket_path() -> PathBuf {
    std::env::var_os("AGENTD_SOCKET")
        .map_or_else(|| PathBuf::from(crate::paths::SOCKET), PathBuf::from)
}

/// A connection to the daemon, or `None` when no daemon answers.
pub fn connect() -> Option<UnixStream> {
    match UnixStream::connect(socket_path()) {
        Ok(s) => Some(s),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the daemon");
            None
        }
    }
}

/// Sends `req` and returns the answers until one ends the exchange
/// (`Done`, `Error`, `Exited`, `Sessions`, `Metrics`), calling `each` on
/// every answer.
pub fn exchange(
    stream: &UnixStream,
    req: &Request,
    mut each: impl FnMut(&Response),
) -> Result<(), ProtoError> {
    proto::send(stream, req, &[])?;
    loop {
        let (resp, _) = proto::recv::<Response>(stream)?;
        each(&resp);
        if matches!(
            resp,
            Response::Done { .. }
                | Response::Error { .. }
                | Response::Exited { .. }
                | Response::Sessions { .. }
                | Response::Metrics { .. }
        ) {
            return Ok(());
        }
    }
}
