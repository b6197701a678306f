//! `agentd run`: start a session in embedded mode and supervise it.
use std::{
    ffi::OsString,
    io::IsTerminal as _,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
};

use nix::sys::signal::Signal;

use super::policy::load;
use crate::daemon::proto::{self, Request, Response, RunRequest};
use crate::session::{self, Notice, RunOptions};

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
    super::print_error("agentd: error", msg, hint);
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
    if let Some(conn) = crate::daemon::client::connect() {
        return via_daemon(&conn, args, &checked.source, tty);
    }
    let opts = RunOptions {
        policy,
        policy_path: Path::new(&args.policy),
        policy_from_client: false,
        workspace: args.workspace,
        label: args.name,
        argv: args.argv,
        tty,
        caller_env: std::env::vars_os().collect(),
        caller: None,
        cwd: None,
        uid_range: crate::identity::DEFAULT_RANGE,
        mode: session::Mode::Embedded,
        dns: embedded_dns(),
    };
    let mut notify = |n: Notice<'_>| {
        if let Some(line) = n.line() {
            eprintln!("{line}");
        }
    };
    match session::run(opts, &mut notify) {
        Ok(outcome) => {
            if let Some(line) = outcome.detail() {
                eprintln!("{line}");
            }
            ExitCode::from(u8::try_from(outcome.exit.status().clamp(0, 255)).unwrap_or(255))
        }
        Err(e) => fail(&e.to_string(), e.hint().as_deref(), e.exit_code()),
    }
}

/// The session through the daemon: the policy text, the caller's stdio and
/// environment go over the socket; the session's supervisor answers.
fn via_daemon(conn: &UnixStream, args: Args, policy_text: &str, tty: bool) -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(c) => c,
        Err(e) => {
            return fail(
                &format!("cannot read the working directory: {e}"),
                None,
                EXIT_SETUP,
            );
        }
    };
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| cwd.join(p));
    let mut argv = Vec::with_capacity(args.argv.len());
    for a in &args.argv {
        match a.to_str() {
            Some(s) => argv.push(s.to_owned()),
            None => {
                return fail(
                    &format!("argument {a:?} is not UTF-8"),
                    Some("through the daemon, arguments must be UTF-8"),
                    EXIT_SETUP,
                );
            }
        }
    }
    let request = Request::Run(RunRequest {
        policy_path: absolute(&args.policy),
        policy: policy_text.to_owned(),
        workspace: args.workspace.as_deref().map(absolute),
        cwd: cwd.clone(),
        name: args.name,
        argv,
        tty,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    });
    // Signals for the agent go to its supervisor as messages; they are
    // blocked before the thread that forwards them exists.
    let set = session::forwarded_signals();
    let _ = set.thread_block();
    let stdio = [0, 1, 2];
    if let Err(e) = proto::send(conn, &request, &stdio) {
        return fail(&format!("cannot reach the daemon: {e}"), None, EXIT_SETUP);
    }
    if let Ok(writer) = conn.try_clone() {
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(sig) = set.wait() {
                    let msg = if sig == Signal::SIGWINCH {
                        Request::Resize {}
                    } else {
                        Request::Signal { signal: sig as i32 }
                    };
                    if proto::send(&writer, &msg, &[]).is_err() {
                        return;
                    }
                }
            });
    }
    loop {
        match proto::recv::<Response>(conn) {
            Ok((Response::Started { session, agent }, _)) => {
                say(&format!("agentd: session {session} (agent {agent})"));
            }
            Ok((Response::Notice { text }, _)) => say(&text),
            Ok((Response::Exited { status, detail }, _)) => {
                if let Some(d) = detail {
                    say(&d);
                }
                return ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(255));
            }
            Ok((
                Response::Error {
                    message,
                    hint,
                    code,
                },
                _,
            )) => return fail(&message, hint.as_deref(), code),
            Ok(_) => {}
            Err(e) => {
                return fail(
                    &format!("lost the session's supervisor: {e}"),
                    Some("`agentd ps` shows whether the session still runs"),
                    EXIT_SETUP,
                );
            }
        }
    }
}

/// A line on stderr; a closed stderr (the caller stopped reading) is not a
/// reason to abandon the session's outcome.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The resolver settings of an embedded session: the host's nameservers
/// and the default TTL bounds, or, for a session on a test or special
/// network, `AGENTD_DNS_UPSTREAM` (comma-separated addresses) and
/// `AGENTD_DNS_TTL` (`MIN,MAX,GRACE` seconds). Only root gets here; the
/// daemon takes them from its configuration.
fn embedded_dns() -> crate::dns::Settings {
    let mut s = crate::dns::Settings::from_host();
    if let Ok(list) = std::env::var("AGENTD_DNS_UPSTREAM") {
        s.upstream = list
            .split(',')
            .filter_map(|a| a.trim().parse().ok())
            .collect();
    }
    if let Ok(ttl) = std::env::var("AGENTD_DNS_TTL") {
        let v: Vec<u64> = ttl
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        if let [min, max, grace] = v[..] {
            (s.min_ttl, s.max_ttl, s.grace) = (min, max.max(min), grace);
        }
    }
    s
}
