//! `agentd daemon`, `disable`, `enable`, `metrics`, and talking to a
//! running daemon on behalf of the other commands.
use std::{
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use super::{color, fail, logs::print_record, sessions};
use crate::{
    daemon::{
        client,
        config::{self, LoadError},
        proto::{ProtoError, Request, Response},
        server,
    },
    session::disabled,
};

/// A connection to the running daemon, if any.
pub(super) fn connect() -> Option<UnixStream> {
    client::connect()
}

/// Sends `req` to the daemon and prints what comes back the way the
/// embedded commands print it; `each` sees every answer first.
pub(super) fn exchange(
    conn: &UnixStream,
    req: &Request,
    mut each: impl FnMut(&Response),
) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    let color = color();
    let json = matches!(req, Request::Logs { .. }) && LOGS_JSON.with(std::cell::Cell::get);
    let result = client::exchange(conn, req, |r| {
        each(r);
        match r {
            Response::Error {
                message,
                hint,
                code: c,
            } => {
                eprintln!("error: {message}");
                if let Some(h) = hint {
                    eprintln!("  hint: {h}");
                }
                code = ExitCode::from(*c);
            }
            Response::Notice { text } => eprintln!("{text}"),
            Response::Killed {
                session,
                processes,
                elapsed_us,
            } => sessions::print_killed(session, *processes, Duration::from_micros(*elapsed_us)),
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

thread_local! {
    /// `agentd logs --json` through the daemon.
    static LOGS_JSON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `agentd logs` through the daemon (for callers who cannot read the file).
pub(super) fn logs(
    conn: &UnixStream,
    session: Option<String>,
    follow: bool,
    json: bool,
) -> ExitCode {
    LOGS_JSON.with(|c| c.set(json));
    exchange(conn, &Request::Logs { session, follow }, |_| {})
}

/// `agentd daemon`.
pub(super) fn daemon(config_path: Option<PathBuf>) -> ExitCode {
    let path = config_path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let name = path.display().to_string();
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(LoadError::Invalid(invalid)) => {
            eprint!("{}", invalid.render(&name));
            return fail(format!("{name} is not a valid configuration"), None);
        }
        Err(LoadError::NotUtf8) => return fail(format!("{name} is not UTF-8"), None),
        Err(LoadError::Io(e)) => return fail(format!("cannot read {name}: {e}"), None),
    };
    match server::serve(config, &client::socket_path()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, e.hint().as_deref()),
    }
}

/// `agentd disable AGENT`.
pub(super) fn disable(agent: String, reason: Option<String>) -> ExitCode {
    if let Some(conn) = connect() {
        return exchange(&conn, &Request::Disable { agent, reason }, |_| {});
    }
    if let Some(code) = sessions::require_root() {
        return code;
    }
    if let Err(e) = crate::policy::AgentName::parse(&agent) {
        return fail(e.message, e.hint.as_deref());
    }
    match disabled::disable(&agent, nix::unistd::getuid().as_raw(), reason) {
        Ok(killed) => {
            let mut code = ExitCode::SUCCESS;
            for (id, r) in &killed {
                match r {
                    Ok(r) => sessions::print_killed(&id.to_string(), r.processes, r.elapsed),
                    Err(e) => code = fail(e, e.hint().as_deref()),
                }
            }
            println!("agent {agent} disabled ({} sessions killed)", killed.len());
            code
        }
        Err(e) => fail(format!("cannot record the disable: {e}"), None),
    }
}

/// `agentd enable AGENT`.
pub(super) fn enable(agent: String) -> ExitCode {
    if let Some(conn) = connect() {
        return exchange(&conn, &Request::Enable { agent }, |_| {});
    }
    if let Some(code) = sessions::require_root() {
        return code;
    }
    if let Err(e) = crate::policy::AgentName::parse(&agent) {
        return fail(e.message, e.hint.as_deref());
    }
    match disabled::enable(&agent, nix::unistd::getuid().as_raw()) {
        Ok(true) => {
            println!("agent {agent} enabled");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("agent {agent} was not disabled");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot enable {agent}: {e}"), None),
    }
}

/// `agentd metrics`.
pub(super) fn metrics() -> ExitCode {
    match connect() {
        Some(conn) => exchange(&conn, &Request::Metrics {}, |_| {}),
        None => fail(
            format!("no daemon answers on {}", client::socket_path().display()),
            Some("metrics come from the daemon: systemctl start agentd"),
        ),
    }
}

/// Whether `path` can be read by this process (else `logs` asks the
/// daemon).
pub(super) fn readable(path: &Path) -> bool {
    std::fs::File::open(path).is_ok()
}
