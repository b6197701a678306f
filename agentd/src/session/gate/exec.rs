//! The exec gate: `[exec]` argument rules and `ask` entries, decided on
//! each `execve`/`execveat` of a session whose policy has them.
//!
//! Why it holds: the supervisor reads the path, argv and environment once,
//! has the broker resolve the path as the agent would (same mounts, uid,
//! Landlock domain), matches the rules on the file's real path and that
//! argv, and writes a one-shot token (the file that will run, and the exact
//! argv and environment bytes) keyed by the calling thread before letting
//! the call continue. The kernel then re-reads everything from the agent's
//! memory, which another thread may have changed meanwhile; but
//! `sched_process_exec` (`agentd-ebpf/src/process.rs`) compares the token
//! with what the new program really got (its file, and the argv and
//! environment in its new memory, which no other thread can touch any
//! more) and kills it before its first instruction on any difference. A
//! thread that execs without a token (the token was used, or never
//! written) is killed the same way. The environment is bound because
//! `GIT_CONFIG_*`, `GIT_SSH_COMMAND` or `LD_PRELOAD` change what an
//! allowed command does while its argv stays the same.
//!
//! For a `#!` script the kernel runs the interpreter: the token names the
//! interpreter's file and the argv the kernel builds (`interpreter [arg]
//! path argv[1..]`); the rules still match the script's path. A script's
//! content is not bound (it is read later, by the interpreter).
use std::{
    ffi::OsStr,
    fs,
    io::Read as _,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use agentd_common::{ExecToken, TOKEN_ARGV_LEN, TOKEN_ENV_LEN};

use crate::{
    policy::{ExecPattern, Placeholders},
    sandbox::{
        broker::{self, Client},
        notify::{self, Notification},
    },
};

/// Most argv or environment entries copied from a gated exec.
const MAX_STRINGS: usize = 4096;
/// Longest path.
const PATH_MAX: usize = 4096;

/// The rules of a session with an exec gate, their program globs compiled
/// once (compiling them per exec cost more than the rest of the gate).
#[derive(Debug)]
pub(crate) struct Rules {
    /// `[exec] allow`.
    allow: Vec<Compiled>,
    /// `[exec] ask`: refused until approvals exist, and before `allow`.
    ask: Vec<Compiled>,
}

/// An entry with its program glob compiled for the session.
#[derive(Debug)]
struct Compiled {
    pattern: ExecPattern,
    /// `None`: the glob is invalid with these placeholders (matches
    /// nothing).
    program: Option<globset::GlobMatcher>,
}

impl Compiled {
    fn names_program(&self, names: &[&Path]) -> bool {
        self.program
            .as_ref()
            .is_some_and(|m| names.iter().any(|n| m.is_match(n)))
    }

    fn matches(&self, names: &[&Path], args: &[&str]) -> bool {
        self.names_program(names) && self.pattern.matches_args(args)
    }
}

/// What the rules say about one exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Allowed by this `allow` entry.
    Allow(String),
    /// Matches this `ask` entry: a person must decide.
    Ask(String),
    /// No entry matches.
    Deny,
    /// Refused for this reason before any entry was considered.
    Refused(String),
}

/// Environment variables that put other code or configuration into a
/// program an argument rule governs (the loader's, git's): such an exec
/// is refused, whatever its arguments.
pub(crate) const INJECTING_ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_EXEC_PATH",
];

/// One exec as the rules see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen<'a> {
    /// The program's real path, and the root-owned name it was called by.
    pub names: &'a [&'a Path],
    /// argv[0].
    pub argv0: &'a str,
    /// argv[1..].
    pub args: &'a [&'a str],
    /// The environment, NUL-terminated strings.
    pub env: &'a [u8],
}

impl Rules {
    /// The session's `allow` and `ask` entries, compiled.
    pub(crate) fn new(allow: &[ExecPattern], ask: &[ExecPattern], p: &Placeholders) -> Self {
        let compile = |v: &[ExecPattern]| {
            v.iter()
                .map(|r| Compiled {
                    pattern: r.clone(),
                    program: r.program_matcher(p).ok(),
                })
                .collect()
        };
        Self {
            allow: compile(allow),
            ask: compile(ask),
        }
    }

    /// The verdict for an exec. `ask` comes first: `allow =
    /// ["/usr/bin/git"]` with `ask = ["/usr/bin/git push*"]` asks for a
    /// push. Which file runs is bound by inode either way (the token, and
    /// Landlock's execute right on the files `allow` named at start).
    ///
    /// A program some argument rule names is held to more than its
    /// arguments, or they would not mean what they say: argv[0] must be
    /// its own name (`git-push` as argv[0] makes git push whatever
    /// argv[1..] says), no argument may hold a line break (`*` would match
    /// past it), and the environment may not inject code or configuration
    /// ([`INJECTING_ENV`]).
    pub(crate) fn verdict(&self, seen: Seen<'_>) -> Verdict {
        let Seen { names, args, .. } = seen;
        let governed = self
            .ask
            .iter()
            .chain(&self.allow)
            .any(|r| r.pattern.has_args() && r.names_program(names));
        if governed && let Some(why) = unbound_meaning(seen) {
            return Verdict::Refused(why);
        }
        if let Some(r) = self.ask.iter().find(|r| r.matches(names, args)) {
            return Verdict::Ask(r.pattern.to_string());
        }
        match self.allow.iter().find(|r| r.matches(names, args)) {
            Some(r) => Verdict::Allow(r.pattern.to_string()),
            None => Verdict::Deny,
        }
    }
}

/// Why an exec of a program argument rules govern would not mean what its
/// arguments say, if so.
fn unbound_meaning(seen: Seen<'_>) -> Option<String> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let own = seen
        .names
        .iter()
        .filter_map(|n| n.file_name())
        .any(|n| n.to_string_lossy() == base(seen.argv0));
    if !own {
        return Some(format!(
            "argv[0] {:?} is not the program's name: argument rules govern it",
            seen.argv0
        ));
    }
    if seen.args.iter().any(|a| a.contains(['\n', '\r'])) {
        return Some(
            "an argument holds a line break: argument rules govern this program".to_owned(),
        );
    }
    let names: Vec<&[u8]> = seen
        .env
        .split(|b| *b == 0)
        .filter_map(|e| e.split(|b| *b == b'=').next())
        .collect();
    let injecting = INJECTING_ENV.iter().find(|v| {
        names.iter().any(|n| {
            *n == v.as_bytes() || (v.starts_with("GIT_CONFIG") && n.starts_with(b"GIT_CONFIG_KEY"))
        })
    });
    injecting.map(|v| format!("the environment sets {v}: argument rules govern this program"))
}

/// Whether every step of the absolute path `called` (each directory and
/// the name itself, symlinks not followed) belongs to root in thread
/// `tid`'s view: then the name it was called by (`/bin/sh`) was not
/// planted by the agent, and rules may match it as well as the real path
/// (`/usr/bin/dash`). A name under a writable directory counts only by
/// its real path.
pub(super) fn root_owned_way(tid: u32, called: &Path) -> bool {
    if !called.is_absolute() {
        return false;
    }
    let root = PathBuf::from(format!("/proc/{tid}/root"));
    let mut at = root.clone();
    for part in called.components().skip(1) {
        match part {
            std::path::Component::Normal(p) => at.push(p),
            _ => return false,
        }
        // Root's, and (but for a symlink, whose mode means nothing)
        // writable by no one else.
        match fs::symlink_metadata(&at) {
            Ok(m) if m.uid() == 0 && (m.file_type().is_symlink() || m.mode() & 0o022 == 0) => {}
            _ => return false,
        }
    }
    true
}

/// A held `execve` or `execveat`, decoded from its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ExecCall {
    dirfd: i64,
    path: u64,
    argv: u64,
    envp: u64,
    flags: u64,
}

impl ExecCall {
    /// The call, if `n` is an exec.
    pub(super) fn of(n: &Notification) -> Option<Self> {
        let a = n.args;
        match n.nr {
            libc::SYS_execve => Some(Self {
                dirfd: i64::from(libc::AT_FDCWD),
                path: a[0],
                argv: a[1],
                envp: a[2],
                flags: 0,
            }),
            libc::SYS_execveat => Some(Self {
                dirfd: i64::from(a[0] as i32),
                path: a[1],
                argv: a[2],
                envp: a[3],
                flags: a[4],
            }),
            _ => None,
        }
    }
}

/// What was copied from the caller, once.
#[derive(Debug)]
pub(super) struct Copied {
    /// The path as given.
    pub path: Vec<u8>,
    /// argv, each without its NUL.
    pub argv: Vec<Vec<u8>>,
    /// The environment, as the kernel lays it out (NUL-terminated strings).
    pub env: Vec<u8>,
    /// The directory the path is relative to (`None`: absolute).
    pub dir: Option<OwnedFd>,
    /// The caller's working directory (a `#!` interpreter is looked up
    /// from there).
    pub cwd: OwnedFd,
    /// `execveat` flags.
    pub flags: u64,
    /// The name the kernel gives the program (`bprm->filename`): the path,
    /// or `/dev/fd/N[/path]` for a descriptor.
    pub filename: Vec<u8>,
}

/// Copies the call's path, argv and environment from thread `tid`.
pub(super) fn copy(tid: u32, call: ExecCall) -> Result<Copied, i32> {
    let path = notify::read_string(tid, call.path, PATH_MAX)?;
    // Longer than a token holds: E2BIG, as the kernel says of a command
    // line too long.
    let too_long = |e| {
        if e == libc::ENAMETOOLONG {
            libc::E2BIG
        } else {
            e
        }
    };
    let argv = read_strings(tid, call.argv).map_err(too_long)?;
    let env = read_strings(tid, call.envp).map_err(too_long)?;
    let env: Vec<u8> = env
        .iter()
        .flat_map(|e| e.iter().copied().chain([0]))
        .collect();
    if env.len() > TOKEN_ENV_LEN {
        return Err(libc::E2BIG);
    }
    let cwd = super::names::directory(tid, i64::from(libc::AT_FDCWD))?;
    let empty = call.flags & libc::AT_EMPTY_PATH as u64 != 0 && path.is_empty();
    let dir = if path.starts_with(b"/") {
        None
    } else {
        Some(super::names::directory(tid, call.dirfd)?)
    };
    let filename = if call.dirfd == i64::from(libc::AT_FDCWD) || path.starts_with(b"/") {
        path.clone()
    } else if empty {
        format!("/dev/fd/{}", call.dirfd).into_bytes()
    } else {
        let mut f = format!("/dev/fd/{}/", call.dirfd).into_bytes();
        f.extend_from_slice(&path);
        f
    };
    Ok(Copied {
        path,
        argv,
        env,
        dir,
        cwd,
        flags: call.flags,
        filename,
    })
}

/// The NULL-terminated array of strings at `addr` (NULL: none).
fn read_strings(tid: u32, addr: u64) -> Result<Vec<Vec<u8>>, i32> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut total = 0usize;
    for i in 0..=MAX_STRINGS {
        if i == MAX_STRINGS {
            return Err(libc::E2BIG);
        }
        let mut ptr = [0u8; 8];
        if notify::read_memory(tid, addr + 8 * i as u64, &mut ptr)? != 8 {
            return Err(libc::EFAULT);
        }
        let p = u64::from_ne_bytes(ptr);
        if p == 0 {
            break;
        }
        let s = notify::read_string(tid, p, TOKEN_ENV_LEN)?;
        total += s.len() + 1;
        if total > TOKEN_ENV_LEN {
            return Err(libc::E2BIG);
        }
        out.push(s);
    }
    Ok(out)
}

/// A program resolved by the broker: its descriptor (`O_PATH`) and its
/// real path as the session sees it.
pub(super) struct Resolved {
    fd: OwnedFd,
    /// The real path.
    pub path: PathBuf,
}

impl Resolved {
    /// (device as the kernel encodes it, inode).
    fn identity(&self) -> Result<(u64, u64), i32> {
        let meta = fs::File::from(self.fd.try_clone().map_err(|_| libc::EMFILE)?)
            .metadata()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))?;
        if !meta.is_file() {
            return Err(libc::EACCES);
        }
        let dev = meta.dev();
        Ok((crate::ebpf::kernel_dev(dev), meta.ino()))
    }

    /// The first bytes of the file (read by the supervisor through its
    /// descriptor).
    fn head(&self) -> Vec<u8> {
        let mut head = Vec::new();
        if let Ok(f) = fs::File::open(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) {
            let _ = f.take(256).read_to_end(&mut head);
        }
        head
    }
}

/// Has the broker open `path` (relative to `dir`) `O_PATH` as the agent
/// would for exec.
pub(super) fn resolve(
    client: &Client,
    path: &[u8],
    dir: BorrowedFd<'_>,
    flags: u64,
) -> Result<Resolved, i32> {
    let mut data = path.to_vec();
    data.push(0);
    let req = broker::Request::new(broker::OP_RESOLVE, flags as u32, &[], data.len());
    let (reply, fd) = client.call(&req, &data, dir, dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            libc::ETIMEDOUT
        } else {
            libc::EACCES
        }
    })?;
    if reply.ret < 0 {
        return Err(i32::try_from(-reply.ret).unwrap_or(libc::EACCES));
    }
    let fd = fd.ok_or(libc::EACCES)?;
    Ok(Resolved {
        fd,
        path: PathBuf::from(OsStr::from_bytes(reply.path().as_bytes())),
    })
}

/// A `#!` line: (interpreter, optional argument), as the kernel splits it.
pub(super) fn shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    let (interp, arg) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], Some(line[i..].trim_ascii())),
        None => (line, None),
    };
    Some((
        interp.to_vec(),
        arg.filter(|a| !a.is_empty()).map(<[u8]>::to_vec),
    ))
}

/// A `#!` script's interpreter, as the kernel will run it.
pub(super) struct Interpreter {
    /// Its real path.
    pub path: PathBuf,
    /// The name the `#!` line gives it.
    pub called: PathBuf,
    /// Its arguments: the line's argument, the script, argv[1..].
    pub args: Vec<String>,
}

/// The token for an exec the rules allowed: the file that will run (the
/// interpreter, for a script) and the argv and environment the new program
/// gets; and, for a script, the interpreter's command line, which the
/// rules must allow too (`#!/usr/bin/git push` in an allowed script).
/// E2BIG when the argv is longer than a token holds.
pub(super) fn token(
    client: &Client,
    copied: &Copied,
    program: &Resolved,
) -> Result<(Box<ExecToken>, Option<Interpreter>), i32> {
    let (identity, argv, interpreter) = match shebang(&program.head()) {
        Some((interp, arg)) => {
            let resolved = resolve(client, &interp, copied.cwd.as_fd(), 0)?;
            if shebang(&resolved.head()).is_some() {
                // The kernel would go on to the interpreter's interpreter;
                // one level is what a token binds.
                return Err(libc::ENOEXEC);
            }
            let mut argv = vec![interp.clone()];
            argv.extend(arg);
            argv.push(copied.filename.clone());
            argv.extend(copied.argv.iter().skip(1).cloned());
            let args = argv[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let interpreter = Interpreter {
                path: resolved.path.clone(),
                called: PathBuf::from(OsStr::from_bytes(&interp)),
                args,
            };
            (resolved.identity()?, argv, Some(interpreter))
        }
        None => (program.identity()?, copied.argv.clone(), None),
    };
    let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    Ok((build(identity, &argv, &copied.env)?, interpreter))
}

fn build((dev, ino): (u64, u64), argv: &[&[u8]], env: &[u8]) -> Result<Box<ExecToken>, i32> {
    // An empty argv gets "" from the kernel.
    let argv: Vec<u8> = if argv.is_empty() {
        vec![0]
    } else {
        argv.iter()
            .flat_map(|a| a.iter().copied().chain([0]))
            .collect()
    };
    if argv.len() > TOKEN_ARGV_LEN || env.len() > TOKEN_ENV_LEN {
        return Err(libc::E2BIG);
    }
    let mut t = Box::new(ExecToken {
        dev,
        ino,
        argv_len: u32::try_from(argv.len()).map_err(|_| libc::E2BIG)?,
        env_len: u32::try_from(env.len()).map_err(|_| libc::E2BIG)?,
        argv: [0; TOKEN_ARGV_LEN],
        env: [0; TOKEN_ENV_LEN],
    });
    t.argv[..argv.len()].copy_from_slice(&argv);
    t.env[..env.len()].copy_from_slice(env);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], ask: &[&str]) -> Rules {
        let parse = |v: &[&str]| -> Vec<ExecPattern> {
            v.iter().map(|s| ExecPattern::parse(s).unwrap()).collect()
        };
        let p = Placeholders {
            workspace: PathBuf::from("/work/repo"),
            tmp: PathBuf::from("/tmp/s1"),
            home: PathBuf::from("/home/s1"),
        };
        Rules::new(&parse(allow), &parse(ask), &p)
    }

    #[test]
    fn argument_rules_decide_and_ask_comes_first() {
        let git = &[Path::new("/usr/bin/git")][..];
        let r = rules(&["/usr/bin/git status*", "/usr/bin/ls"], &[]);
        let v = |r: &Rules, names: &[&Path], argv0: &str, args: &[&str], env: &[u8]| {
            r.verdict(Seen {
                names,
                argv0,
                args,
                env,
            })
        };
        assert!(matches!(
            v(&r, git, "git-push", &["status"], b""),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            v(&r, git, "git", &["status\nx"], b""),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            v(&r, git, "git", &["status"], b"A=1\0LD_PRELOAD=./x.so\0"),
            Verdict::Refused(_)
        ));
        assert_eq!(
            v(&r, git, "/usr/bin/git", &["status"], b"A=1\0"),
            Verdict::Allow("/usr/bin/git status*".into())
        );
        assert_eq!(
            v(
                &r,
                &[Path::new("/usr/bin/ls")],
                "anything",
                &["-l"],
                b"LD_PRELOAD=x\0"
            ),
            Verdict::Allow("/usr/bin/ls".into()),
            "programs no argument rule names are not held to it"
        );
        assert_eq!(
            v(&r, git, "git", &["status", "--short"], b""),
            Verdict::Allow("/usr/bin/git status*".into())
        );
        assert_eq!(v(&r, git, "git", &["push", "origin"], b""), Verdict::Deny);
        assert_eq!(v(&r, git, "git", &[], b""), Verdict::Deny);
        let r = rules(&["/usr/bin/git"], &["/usr/bin/git push*"]);
        assert_eq!(
            v(&r, git, "git", &["push", "origin", "main"], b""),
            Verdict::Ask("/usr/bin/git push*".into())
        );
        assert_eq!(
            v(&r, git, "git", &["log"], b""),
            Verdict::Allow("/usr/bin/git".into())
        );
        assert!(
            matches!(
                v(&r, git, "git-push", &["origin"], b""),
                Verdict::Refused(_)
            ),
            "an ask is not dodged by another argv[0]"
        );
    }

    #[test]
    fn shebang_lines_split_as_the_kernel_does() {
        assert_eq!(
            shebang(b"#!/bin/sh\necho"),
            Some((b"/bin/sh".to_vec(), None))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 -u\n"),
            Some((b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec())))
        );
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }

    #[test]
    fn tokens_hold_argv_as_the_kernel_lays_it_out() {
        let t = build((1 << 20 | 3, 42), &[b"git", b"status"], b"A=1\0").unwrap();
        assert_eq!(&t.argv[..t.argv_len as usize], b"git\0status\0");
        assert_eq!(&t.env[..t.env_len as usize], b"A=1\0");
        let t = build((0, 0), &[], b"").unwrap();
        assert_eq!(&t.argv[..t.argv_len as usize], b"\0");
        let long = vec![b'a'; TOKEN_ARGV_LEN];
        assert_eq!(build((0, 0), &[&long], b"").err(), Some(libc::E2BIG));
    }
}
