//! The command line. The only module that prints; everything else returns
//! values and typed errors.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is where agentd talks to its user"
)]

mod daemon;
mod doctor;
mod logs;
mod policy;
mod remote;
mod run;
mod sessions;

use std::{
    ffi::OsString,
    fmt::Display,
    io::{self, IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use clap::{CommandFactory as _, Parser, Subcommand};

/// Exit status for "the input is invalid" (policy errors, unknown session).
pub const EXIT_INVALID: u8 = 1;
/// Exit status for usage errors (what clap uses too).
pub const EXIT_USAGE: u8 = 2;

/// agentd runs AI agents as unprivileged users under Landlock, seccomp and
/// eBPF enforcement, and records what they do.
#[derive(Debug, Parser)]
#[command(name = "agentd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a session: run PROGRAM confined by the policy, as its own
    /// unprivileged user. Exit status is the agent's (128+N when killed by
    /// signal N); 125 setup failed, 126 cannot execute, 127 not found.
    Run {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// A label for the session, shown by `agentd ps`.
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// The workspace ({workspace}); default: the current directory.
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Give the agent its own pty (default: when stdin is a terminal).
        #[arg(long, overrides_with = "no_tty")]
        tty: bool,
        /// Never give the agent a pty.
        #[arg(long)]
        no_tty: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "PROGRAM [ARG]...")]
        argv: Vec<OsString>,
    },
    /// Kill a session's whole process tree; returns once nothing is left.
    Kill {
        /// Session id (from `agentd ps` or `agentd run`).
        #[arg(required_unless_present = "agent", conflicts_with = "agent")]
        session: Option<String>,
        /// Kill every session of this agent instead.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// Why (recorded with the kill).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// List live sessions.
    Ps {
        /// Print the sessions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the audit trail (human-readable; --json for the records).
    Logs {
        /// Only this session's records.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
        /// Print the JSON records.
        #[arg(long)]
        json: bool,
        /// The audit log.
        #[arg(long, value_name = "FILE", default_value = crate::audit::DEFAULT_PATH)]
        file: PathBuf,
    },
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The privileged supervisor: loads the eBPF programs once, collects
    /// events and serves /run/agentd/agentd.sock to the groups its
    /// configuration names.
    Daemon {
        /// Configuration file.
        #[arg(long, value_name = "FILE", default_value = crate::daemon::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Kill an agent's sessions and refuse new ones until it is enabled.
    Disable {
        /// Agent name.
        agent: String,
        /// Why (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Accept sessions of a disabled agent again.
    Enable {
        /// Agent name.
        agent: String,
    },
    /// The daemon's metrics, in Prometheus text format.
    Metrics,
    /// The supervisor of one session started by the daemon (internal).
    #[command(name = "__supervise", hide = true)]
    Supervise,
    /// Validate policies and explain what they grant.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check whether this host can enforce sessions, and what is missing.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions for SHELL to stdout.
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit log; report the first broken or
    /// missing record by line. Exit 1 on any break. Rotated files are
    /// checked as one chain when given oldest first.
    Verify {
        /// The audit log (several: oldest first).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files: errors as file:line:col, warnings for risky
    /// choices. Exit 0 when every file is valid, 1 otherwise.
    Check {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show what a policy grants: identity, files, programs, network,
    /// approvals, limits, environment and secret names.
    Explain {
        /// Print the inventory as JSON.
        #[arg(long)]
        json: bool,
        /// Policy file.
        file: PathBuf,
    },
}

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_tracing(matches!(cli.command, Command::Daemon { .. }));
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::Supervise | Command::Daemon { .. }
    ) {
        // Output commands end quietly when their reader goes away (`| head`);
        // the supervisor keeps ignoring SIGPIPE (it must outlive its output).
        let _ = crate::sandbox::sys::default_sigpipe();
    }
    match cli.command {
        Command::Run {
            policy,
            name,
            workspace,
            tty,
            no_tty,
            argv,
        } => run::run(run::Args {
            policy,
            name,
            workspace,
            tty: if tty {
                Some(true)
            } else if no_tty {
                Some(false)
            } else {
                None
            },
            argv,
        }),
        Command::Kill {
            session,
            agent,
            reason,
        } => sessions::kill(session, agent, reason),
        Command::Ps { json } => sessions::ps(json),
        Command::Logs {
            session,
            follow,
            json,
            file,
        } => {
            if !remote::readable(&file)
                && file == std::path::Path::new(crate::audit::DEFAULT_PATH)
                && let Some(conn) = remote::connect()
            {
                remote::logs(&conn, session, follow, json)
            } else {
                logs::logs(&file, session.as_deref(), follow, json)
            }
        }
        Command::Daemon { config } => daemon::daemon(Some(config)),
        Command::Disable { agent, reason } => daemon::disable(agent, reason),
        Command::Enable { agent } => daemon::enable(agent),
        Command::Metrics => daemon::metrics(),
        Command::Supervise => crate::daemon::supervise::main(),
        Command::Audit(AuditCommand::Verify { files }) => logs::verify(&files),
        Command::Policy(PolicyCommand::Check { json, files }) => policy::check(&files, json),
        Command::Policy(PolicyCommand::Explain { json, file }) => policy::explain(&file, json),
        Command::Doctor { json } => doctor::run(json),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "agentd", &mut io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("cannot write the man page: {e}"), None),
        },
    }
}

/// agentd's own logs go to stderr, filtered by `AGENTD_LOG` (default:
/// warn; info for the daemon). The daemon stamps times unless journald
/// (`JOURNAL_STREAM`) does.
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let _ = if daemon && std::env::var_os("JOURNAL_STREAM").is_none() {
        builder.try_init()
    } else {
        builder.without_time().try_init()
    };
}

/// Prints `error: …` and an optional hint to stderr; returns exit status 1.
/// Prints a kill; returns failure when part of it was not recorded.
fn print_killed(
    id: &str,
    processes: usize,
    elapsed: std::time::Duration,
    unrecorded: &[String],
) -> ExitCode {
    println!(
        "killed session {id}: {processes} processes, gone after {:.1} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    for what in unrecorded {
        eprintln!("agentd: warning: session {id} was killed, but not recorded: {what}");
    }
    if unrecorded.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Refuses a non-root caller of an embedded-mode command.
fn require_root() -> Option<ExitCode> {
    (!nix::unistd::geteuid().is_root()).then(|| {
        fail(
            "managing sessions needs root in embedded mode",
            Some("run it with sudo"),
        )
    })
}

fn fail(error: impl Display, hint: Option<&str>) -> ExitCode {
    print_error("error", &error.to_string(), hint);
    ExitCode::from(EXIT_INVALID)
}

/// Prints an error and its hint on stderr, control characters escaped:
/// messages quote paths, argv and daemon replies.
fn print_error(prefix: &str, message: &str, hint: Option<&str>) {
    eprintln!("{prefix}: {}", crate::text::printable(message));
    if let Some(hint) = hint {
        eprintln!("  hint: {}", crate::text::printable(hint));
    }
}

/// Writes `value` as pretty JSON to stdout. A closed pipe (`| head`) is
/// not an error.
fn print_json(value: &impl serde::Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let result = serde_json::to_writer_pretty(&mut out, value)
        .map_err(io::Error::from)
        .and_then(|()| writeln!(out));
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Whether stdout is a terminal that wants colour (NO_COLOR is honoured).
fn color() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in an ANSI colour when `on`.
fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}
