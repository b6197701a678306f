//! `agentd daemon`, `disable`, `enable` and `metrics`.
use std::{path::PathBuf, process::ExitCode};

use super::{
    fail, print_killed,
    remote::{connect, exchange},
    require_root,
};
use crate::{
    daemon::{
        client,
        config::{self, LoadError},
        proto::Request,
        server,
    },
    session::disabled,
};

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
    if let Some(code) = require_root() {
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
                    Ok(r) => {
                        let printed =
                            print_killed(&id.to_string(), r.processes, r.elapsed, &r.unrecorded);
                        if printed != ExitCode::SUCCESS {
                            code = printed;
                        }
                    }
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
    if let Some(code) = require_root() {
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
