//! The agent-level kill switch: `agentd disable AGENT` persists a marker in
//! `/var/lib/agentd/disabled/<agent>.json`; sessions of a disabled agent are
//! refused, in embedded mode as through the daemon, until
//! `agentd enable AGENT` removes it.
use std::{fs, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths;

/// Why an agent is disabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// Who disabled it.
    pub by_uid: u32,
    /// What they said.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

fn dir() -> PathBuf {
    PathBuf::from(paths::DISABLED_DIR)
}

/// The marker file of `agent` (agent names are `[a-z0-9-]`, checked by
/// the caller).
fn file(agent: &str) -> PathBuf {
    dir().join(format!("{agent}.json"))
}

/// Whether `agent` is disabled, and why.
pub fn get(agent: &str) -> Option<Disabled> {
    let bytes = fs::read(file(agent)).ok()?;
    // An unreadable marker still disables: fail closed.
    Some(serde_json::from_slice(&bytes).unwrap_or(Disabled {
        by_uid: 0,
        reason: Some("unreadable disable marker".into()),
        at: String::new(),
    }))
}

/// Disables `agent` (durably: the marker is fsync'ed).
pub fn set(agent: &str, d: &Disabled) -> std::io::Result<()> {
    paths::create_private_dir(&dir())?;
    let bytes = serde_json::to_vec(d).map_err(std::io::Error::other)?;
    paths::replace_private_file(&file(agent), &bytes, true)
}

/// Enables `agent`; returns whether it was disabled.
pub fn clear(agent: &str) -> std::io::Result<bool> {
    match fs::remove_file(file(agent)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Disables `agent` and kills its live sessions (reason `disabled`),
/// recording it in the trail. Returns each session's kill.
pub fn disable(
    agent: &str,
    by_uid: u32,
    reason: Option<String>,
) -> std::io::Result<
    Vec<(
        super::SessionId,
        Result<super::kill::KillReport, super::SessionError>,
    )>,
> {
    set(
        agent,
        &Disabled {
            by_uid,
            reason: reason.clone(),
            at: super::now_rfc3339(),
        },
    )?;
    let record = super::KillRecord {
        reason: "disabled".into(),
        text: reason.clone(),
        by_uid,
    };
    let killed: Vec<_> = super::list()
        .into_iter()
        .filter(|s| s.agent == agent)
        .map(|s| {
            let r = super::kill::kill_session(&s.id, &record);
            (s.id, r)
        })
        .collect();
    let _ = crate::audit::Log::default_path().append(&[crate::audit::Event::now(
        &crate::audit::Context {
            agent: agent.to_owned(),
            ..crate::audit::Context::default()
        },
        "disable",
    )
    .with("caller_uid", by_uid)
    .with("reason", reason)
    .with("sessions_killed", killed.len())]);
    Ok(killed)
}

/// Enables `agent` again, recording it; returns whether it was disabled.
pub fn enable(agent: &str, by_uid: u32) -> std::io::Result<bool> {
    let was = clear(agent)?;
    let _ = crate::audit::Log::default_path().append(&[crate::audit::Event::now(
        &crate::audit::Context {
            agent: agent.to_owned(),
            ..crate::audit::Context::default()
        },
        "enable",
    )
    .with("caller_uid", by_uid)
    .with("was_disabled", was)]);
    Ok(was)
}
