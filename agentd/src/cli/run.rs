//! `agentd run`: start a session in embedded mode and supervise it.
use std::{
    ffi::OsString,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::policy::load;
use crate::session::{self, EndReason, Notice, RunOptions};

/// Exit status when agentd itself fails before the agent runs.
const EXIT_SETUP: u8 = 125;

pub(super) struct Args {
    pub policy: PathBuf,
    pub name: Option<String>,
    pub workspace: Option<PathBuf>,
    pub tty: Option<bool>,
    pub argv: Vec<OsString>,
}

fn fail(msg: &str, hint: Option<&str>, code: u8) -> ExitCode {
    eprintln!("agentd: error: {msg}");
    if let Some(h) = hint {
        eprintln!("  hint: {h}");
    }
    ExitCode::from(code)
}

pub(super) fn run(args: Args) -> ExitCode {
    let name = args.policy.display().to_string();
    let checked = match load(&args.policy) {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot read policy {name}: {e}"), None, EXIT_SETUP),
    };
    let Some(policy) = &checked.policy else {
        for d in checked.diagnostics.iter().filter(|d| d.is_error()) {
            eprint!("{}", d.render(&name, &checked.source));
        }
        return fail(
            &format!("{name} is not a valid policy"),
            Some("fix the errors above (`agentd policy check` lists them)"),
            EXIT_SETUP,
        );
    };
    let tty = args.tty.unwrap_or_else(|| std::io::stdin().is_terminal());
    let opts = RunOptions {
        policy,
        policy_path: Path::new(&args.policy),
        workspace: args.workspace,
        label: args.name,
        argv: args.argv,
        tty,
        caller_env: std::env::vars_os().collect(),
    };
    let mut notify = |n: Notice<'_>| match n {
        Notice::Started { id, agent } => eprintln!("agentd: session {id} (agent {agent})"),
        Notice::Orphan(o) => eprintln!(
            "agentd: killed orphaned session {} (agent {}, {} processes)",
            o.id,
            o.agent,
            o.report.map_or(0, |r| r.processes)
        ),
        Notice::Degraded(what) => eprintln!("agentd: warning: degraded enforcement: {what}"),
        Notice::Unresolved(rule) => eprintln!(
            "agentd: warning: network rule {rule} grants nothing in this session (its name does not resolve; wildcards need agentd's resolver)"
        ),
        Notice::Skipped(path) => {
            tracing::info!(path = %path.display(), "policy path does not exist; not granted");
        }
    };
    match session::run(opts, &mut notify) {
        Ok(outcome) => {
            match &outcome.reason {
                EndReason::Exited => {}
                EndReason::Ttl => eprintln!(
                    "agentd: session {} killed: max_duration reached after {:.1}s",
                    outcome.id,
                    outcome.duration.as_secs_f64()
                ),
                EndReason::Killed(r) => eprintln!(
                    "agentd: session {} killed by uid {}{}",
                    outcome.id,
                    r.by_uid,
                    r.text
                        .as_ref()
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default()
                ),
            }
            ExitCode::from(u8::try_from(outcome.exit.status().clamp(0, 255)).unwrap_or(255))
        }
        Err(e) => fail(&e.to_string(), e.hint().as_deref(), e.exit_code()),
    }
}
