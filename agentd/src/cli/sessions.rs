//! `agentd kill` and `agentd ps`.
use std::process::ExitCode;

use serde::Serialize;

use super::{fail, print_json};
use crate::session::{self, KillRecord, SessionId, kill, state};

fn require_root() -> Option<ExitCode> {
    (!nix::unistd::geteuid().is_root()).then(|| {
        fail(
            "managing sessions needs root in embedded mode",
            Some("run it with sudo"),
        )
    })
}

pub(super) fn kill(
    session: Option<String>,
    agent: Option<String>,
    reason: Option<String>,
) -> ExitCode {
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
            Ok(r) => println!(
                "killed session {id}: {} processes, gone after {:.1} ms",
                r.processes,
                r.elapsed.as_secs_f64() * 1000.0
            ),
            Err(e) => {
                status = fail(&e, e.hint().as_deref());
            }
        }
    }
    status
}

#[derive(Serialize)]
struct Row {
    id: String,
    agent: String,
    name: Option<String>,
    trust: String,
    uid: u32,
    pid: Option<u32>,
    state: &'static str,
    started_at: String,
    policy_digest: String,
    workspace: String,
    command: Vec<String>,
}

pub(super) fn ps(json: bool) -> ExitCode {
    if let Some(code) = require_root() {
        return code;
    }
    let rows: Vec<Row> = session::list()
        .into_iter()
        .map(|s| Row {
            state: if state::killed(&s.id).is_some() {
                "killing"
            } else if s.pid.is_some() {
                "running"
            } else {
                "starting"
            },
            id: s.id.to_string(),
            agent: s.agent,
            name: s.label,
            trust: s.trust,
            uid: s.uid,
            pid: s.pid,
            started_at: s.started_at,
            policy_digest: s.policy_digest,
            workspace: s.workspace.display().to_string(),
            command: s.argv,
        })
        .collect();
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
    for r in &rows {
        println!(
            "{:<13}  {:<12}  {:<16}  {:>6}  {:>7}  {:<8}  {:<20}  {:<12}  {}",
            r.id,
            r.agent,
            r.trust,
            r.uid,
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.state,
            r.started_at.get(..19).unwrap_or(&r.started_at),
            r.policy_digest.get(..12).unwrap_or(&r.policy_digest),
            r.command.join(" ")
        );
    }
    ExitCode::SUCCESS
}
