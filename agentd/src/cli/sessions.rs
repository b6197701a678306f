//! `agentd kill` and `agentd ps`.
use std::process::ExitCode;

use super::{fail, print_json, print_killed, remote, require_root};
use crate::{
    daemon::proto::{Request, Response},
    session::{self, KillRecord, SessionId, Summary, kill},
};

pub(super) fn kill(
    session: Option<String>,
    agent: Option<String>,
    reason: Option<String>,
) -> ExitCode {
    if let Some(conn) = remote::connect() {
        return remote::exchange(
            &conn,
            &Request::Kill {
                session,
                agent,
                reason,
            },
            |_| {},
        );
    }
    if let Some(code) = require_root() {
        return code;
    }
    let record = KillRecord {
        reason: "killed".into(),
        text: reason,
        by_uid: nix::unistd::getuid().as_raw(),
    };
    let targets: Vec<SessionId> = match (session, agent) {
        (Some(s), _) => match s.parse::<SessionId>() {
            Ok(id) => vec![id],
            Err(e) => return fail(e, Some("`agentd ps` lists live sessions")),
        },
        (None, Some(agent)) => {
            let ids: Vec<SessionId> = session::list()
                .into_iter()
                .filter(|s| s.agent == agent)
                .map(|s| s.id)
                .collect();
            if ids.is_empty() {
                return fail(
                    format!("no live session of agent {agent}"),
                    Some("`agentd ps` lists live sessions"),
                );
            }
            ids
        }
        (None, None) => return fail("name a session or --agent", None),
    };
    let mut status = ExitCode::SUCCESS;
    for id in targets {
        match kill::kill_session(&id, &record) {
            Ok(r) => {
                if print_killed(&id.to_string(), r.processes, r.elapsed, &r.unrecorded)
                    != ExitCode::SUCCESS
                {
                    status = ExitCode::FAILURE;
                }
            }
            Err(e) => {
                status = fail(&e, e.hint().as_deref());
            }
        }
    }
    status
}

pub(super) fn ps(json: bool) -> ExitCode {
    if let Some(conn) = remote::connect() {
        let mut rows = Vec::new();
        let code = remote::exchange(&conn, &Request::Ps {}, |r| {
            if let Response::Sessions { sessions } = r {
                rows = sessions.clone();
            }
        });
        return if code == ExitCode::SUCCESS {
            print_ps(&rows, json)
        } else {
            code
        };
    }
    if let Some(code) = require_root() {
        return code;
    }
    let rows: Vec<Summary> = session::list().into_iter().map(Summary::from).collect();
    print_ps(&rows, json)
}

fn print_ps(rows: &[Summary], json: bool) -> ExitCode {
    if json {
        return match print_json(&rows) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("cannot write output: {e}"), None),
        };
    }
    println!(
        "{:<13}  {:<12}  {:<16}  {:>6}  {:>7}  {:<8}  {:<20}  {:<12}  COMMAND",
        "SESSION", "AGENT", "TRUST", "UID", "PID", "STATE", "STARTED", "POLICY"
    );
    for r in rows {
        let p = crate::text::printable;
        println!(
            "{:<13}  {:<12}  {:<16}  {:>6}  {:>7}  {:<8}  {:<20}  {:<12}  {}",
            p(&r.id),
            p(&r.agent),
            p(&r.trust),
            r.uid,
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.state,
            r.started_at.get(..19).unwrap_or(&r.started_at),
            r.policy_digest.get(..12).unwrap_or(&r.policy_digest),
            crate::text::shell_words(r.command.iter().map(String::as_str))
        );
    }
    ExitCode::SUCCESS
}
