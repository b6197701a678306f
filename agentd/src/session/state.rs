//! What agentd records about a live session in `/run/agentd/sessions/<id>/`,
//! so that `ps`, `kill` and the next agentd process (or the daemon) can find
//! it, tell whether its supervisor still lives, and clean up after it.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::id::SessionId;
use crate::paths;

/// The state file of one session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionState {
    /// Session id.
    pub id: SessionId,
    /// Agent name from the policy.
    pub agent: String,
    /// Trust tier.
    pub trust: String,
    /// Policy file as given.
    pub policy_path: PathBuf,
    /// The policy text came from a daemon client (see
    /// [`super::RunOptions::policy_from_client`]).
    #[serde(default)]
    pub policy_from_client: bool,
    /// sha256 of the policy file.
    pub policy_digest: String,
    /// W3C trace id (32 hex digits).
    pub trace_id: String,
    /// UID of whoever started the session.
    pub caller_uid: u32,
    /// Session UID/GID.
    pub uid: u32,
    /// Session GID.
    pub gid: u32,
    /// Supervising process and its start time (clock ticks since boot),
    /// which together survive PID reuse.
    pub supervisor_pid: u32,
    /// See `supervisor_pid`.
    pub supervisor_start: u64,
    /// The agent's root process, once started.
    pub pid: Option<u32>,
    /// cgroup2 leaf.
    pub cgroup: PathBuf,
    /// v1 leaves (hybrid hosts).
    pub v1_cgroups: Vec<PathBuf>,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// The workspace.
    pub workspace: PathBuf,
    /// Per-session data directory ({tmp}, {home}).
    pub data_dir: PathBuf,
    /// The command.
    pub argv: Vec<String>,
    /// `--name` given to `agentd run`.
    #[serde(default)]
    pub label: Option<String>,
    /// Who supervises the session.
    #[serde(default)]
    pub mode: Mode,
}

/// Who supervises a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `agentd run` as root, in-process.
    #[default]
    Embedded,
    /// A supervisor process the daemon started.
    Daemon,
}

/// Why a session ended by force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KillRecord {
    /// killed | ttl | disabled | error.
    pub reason: String,
    /// What the caller said.
    pub text: Option<String>,
    /// UID of whoever killed it.
    pub by_uid: u32,
}

/// `/run/agentd/sessions/<id>`.
pub fn dir(id: &SessionId) -> PathBuf {
    Path::new(paths::SESSIONS_DIR).join(id.as_str())
}

const STATE_FILE: &str = "state.json";
const KILLED_FILE: &str = "killed.json";

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

impl SessionState {
    /// Writes the state file (atomically).
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&dir(&self.id).join(STATE_FILE), &bytes)
    }

    /// Reads a session's state file.
    pub fn load(id: &SessionId) -> std::io::Result<Self> {
        let bytes = fs::read(dir(id).join(STATE_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Whether the supervisor recorded here is still running (a zombie,
    /// whose descriptors are already closed, counts as dead).
    pub fn supervisor_alive(&self) -> bool {
        matches!(process_stat(self.supervisor_pid), Some((state, start))
            if start == self.supervisor_start && state != 'Z' && state != 'X')
    }
}

/// Records why a session is being killed (first writer wins).
pub fn mark_killed(id: &SessionId, record: &KillRecord) -> std::io::Result<()> {
    let path = dir(id).join(KILLED_FILE);
    if path.exists() {
        return Ok(());
    }
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    write_atomic(&path, &bytes)
}

/// Why the session was killed, if it was.
pub fn killed(id: &SessionId) -> Option<KillRecord> {
    let bytes = fs::read(dir(id).join(KILLED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every session with a state directory, oldest first. Directories without
/// a readable state file are returned as `Err` with their id.
pub fn list() -> Vec<Result<SessionState, SessionId>> {
    let Ok(entries) = fs::read_dir(paths::SESSIONS_DIR) else {
        return Vec::new();
    };
    let mut ids: Vec<SessionId> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|id| SessionState::load(&id).map_err(|_| id))
        .collect()
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks.
pub fn process_start_time(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

/// Fields 3 (state) and 22 (start time) of `/proc/<pid>/stat`.
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and ')': parse after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}
