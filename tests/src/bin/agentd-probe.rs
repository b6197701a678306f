//! A helper the integration tests run — inside sessions, or inside cgroups
//! and network namespaces they create — to attempt one action and report
//! the outcome on stdout: `ok`, or `errno <NAME>`, plus `key=value` lines
//! for actions that report data.
//!
//! Usage: `agentd-probe [--netns NAME] [--cgroup DIR] ACTION [ARGS]`
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the probe reports on stdout"
)]

use std::{
    ffi::CString,
    fs::{self, File},
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{PermissionsExt as _, symlink},
    process::ExitCode,
    time::Duration,
};

use caps::CapSet;
use nix::{errno::Errno, sched::CloneFlags};

fn report(result: Result<(), Errno>) -> ExitCode {
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("errno {e:?}");
            ExitCode::from(1)
        }
    }
}

fn io(r: std::io::Result<impl Sized>) -> Result<(), Errno> {
    r.map(drop)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn ret(r: libc::c_long) -> Result<(), Errno> {
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn join_cgroup(cgroup: Option<&str>) -> Result<(), String> {
    if let Some(dir) = cgroup {
        fs::write(
            format!("{dir}/cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("join cgroup {dir}: {e}"))?;
    }
    Ok(())
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("agentd-probe: {msg}");
    ExitCode::from(2)
}

fn identity() -> ExitCode {
    let caps = |set| caps::read(None, set).map(|c| c.len()).unwrap_or(usize::MAX);
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer arguments.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let (r, e, s) = nix::unistd::getresuid()
        .map(|u| (u.real.as_raw(), u.effective.as_raw(), u.saved.as_raw()))
        .unwrap_or((u32::MAX, u32::MAX, u32::MAX));
    let groups: Vec<String> = nix::unistd::getgroups()
        .unwrap_or_default()
        .iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    println!("uid={r} euid={e} suid={s}");
    println!(
        "gid={} egid={}",
        nix::unistd::getgid(),
        nix::unistd::getegid()
    );
    println!("groups={}", groups.join(","));
    println!(
        "caps_effective={} caps_permitted={} caps_inheritable={} caps_bounding={} caps_ambient={}",
        caps(CapSet::Effective),
        caps(CapSet::Permitted),
        caps(CapSet::Inheritable),
        caps(CapSet::Bounding),
        caps(CapSet::Ambient)
    );
    println!("no_new_privs={nnp}");
    println!("pid={} ppid={}", std::process::id(), nix::unistd::getppid());
    println!(
        "cwd={}",
        std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// Opens with O_CREAT `n` times a path that another thread flips, in the
/// same buffer, between `decoy` and `name`: a check made on the memory
/// and a call reading it again would be fooled some of the time. Reports
/// ok when every open was answered (whatever the answers).
fn create_race(n: &str, name: &str, decoy: &str) -> ExitCode {
    let Ok(n) = n.parse::<u32>() else {
        return usage("bad count");
    };
    if name.len() >= 255 || decoy.len() >= 255 {
        return usage("names too long");
    }
    let fill = |text: &str| {
        let mut b = [0u8; 256];
        b[..text.len()].copy_from_slice(text.as_bytes());
        b
    };
    let (ptr, stop, flipper) = flipping(fill(decoy), fill(name));
    for _ in 0..n {
        // SAFETY: the buffer is NUL-terminated whichever name it holds.
        let fd = unsafe {
            libc::open(
                ptr as *const libc::c_char,
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor we own.
            unsafe { libc::close(fd) };
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flipper.join();
    report(Ok(()))
}

/// A leaked 256-byte buffer holding `a`, and a thread that rewrites it
/// with `b`, `a`, `b`… until the flag is set: (its address, the flag, the
/// thread). The race with another thread's syscall reading it is the
/// point.
fn flipping(
    a: [u8; 256],
    b: [u8; 256],
) -> (
    usize,
    &'static std::sync::atomic::AtomicBool,
    std::thread::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let buf: &'static mut [u8; 256] = Box::leak(Box::new(a));
    let ptr = buf.as_mut_ptr() as usize;
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let flipper = std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let src = if i.is_multiple_of(2) { &b } else { &a };
            for (k, byte) in src.iter().enumerate() {
                // SAFETY: `ptr` points at the leaked 256-byte buffer.
                unsafe { std::ptr::write_volatile((ptr as *mut u8).add(k), *byte) };
            }
            i += 1;
        }
    });
    (ptr, stop, flipper)
}

/// `n` times: a child execs while a second thread of it flips what the
/// exec reads. `argv`: `/usr/bin/echo safe` <-> `/usr/bin/echo evil`;
/// `path`: `/usr/bin/true evil` <-> `/usr/bin/echo evil`; `env`:
/// `/usr/bin/env` with `V=safe` <-> `V=evil`. Prints how the children
/// ended (`ran=`, `refused=`, `killed=`); what they printed goes to stdout.
fn exec_race(n: &str, what: &str) -> ExitCode {
    let Ok(n) = n.parse::<u32>() else {
        return usage("bad count");
    };
    let (a, b): (&[u8], &[u8]) = match what {
        "argv" => (b"safe\0", b"evil\0"),
        "path" => (b"/usr/bin/true\0", b"/usr/bin/echo\0"),
        "env" => (b"V=safe\0", b"V=evil\0"),
        _ => return usage("exec-race N argv|path|env"),
    };
    let (mut ran, mut refused, mut killed) = (0, 0, 0);
    for _ in 0..n {
        // SAFETY: the probe is single-threaded here; the child execs or
        // exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let fill = |text: &[u8]| {
                let mut buf = [0u8; 256];
                buf[..text.len()].copy_from_slice(text);
                buf
            };
            let (ptr, _, _) = flipping(fill(a), fill(b));
            std::thread::sleep(Duration::from_micros(200));
            let echo = c"/usr/bin/echo".as_ptr();
            let envp_safe = c"V=safe".as_ptr();
            let flipped = ptr as *const libc::c_char;
            let (path, argv, envp): (
                *const libc::c_char,
                [*const libc::c_char; 3],
                [*const libc::c_char; 2],
            ) = match what {
                "argv" => (
                    echo,
                    [echo, flipped, std::ptr::null()],
                    [envp_safe, std::ptr::null()],
                ),
                "path" => (
                    flipped,
                    [echo, c"evil".as_ptr(), std::ptr::null()],
                    [envp_safe, std::ptr::null()],
                ),
                _ => (
                    c"/usr/bin/env".as_ptr(),
                    [c"/usr/bin/env".as_ptr(), std::ptr::null(), std::ptr::null()],
                    [flipped, std::ptr::null()],
                ),
            };
            // SAFETY: NULL-terminated arrays of NUL-terminated strings.
            unsafe { libc::execve(path, argv.as_ptr(), envp.as_ptr()) };
            // SAFETY: leaving the child.
            unsafe { libc::_exit(126) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            killed += 1;
        } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 126 {
            refused += 1;
        } else {
            ran += 1;
        }
    }
    eprintln!("ran={ran} refused={refused} killed={killed}");
    report(Ok(()))
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// fork(2) without exec; the child runs `child` and then exits.
fn fork_then(child: impl FnOnce()) -> Result<libc::pid_t, Errno> {
    // SAFETY: the probe is single-threaded; the child only runs `child`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::last()),
        0 => {
            child();
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        p => Ok(p),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one short arm per probe action: a table of attacks, not logic"
)]
fn run(action: &[&str], cgroup: Option<&str>) -> ExitCode {
    if let Err(e) = join_cgroup(cgroup) {
        return usage(&e);
    }
    match action {
        ["identity"] => identity(),
        ["env"] => {
            for (k, v) in std::env::vars_os() {
                println!("{}={}", k.to_string_lossy(), v.to_string_lossy());
            }
            ExitCode::SUCCESS
        }
        ["read", path] => report(io(File::open(path).and_then(|mut f| {
            let mut s = Vec::new();
            f.read_to_end(&mut s)
        }))),
        ["write", path] => report(io(fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"probe\n")))),
        ["truncate", path] => report(io(fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path))),
        ["mkdir", path] => report(io(fs::create_dir(path))),
        ["symlink", target, link] => report(io(symlink(target, link))),
        ["hardlink", src, dst] => report(io(fs::hard_link(src, dst))),
        ["rename", src, dst] => report(io(fs::rename(src, dst))),
        ["unlink", path] => report(io(fs::remove_file(path))),
        ["mkfifo", path] => report(nix::unistd::mkfifo(
            *path,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )),
        ["umask-write", mask, path] => {
            let Ok(mask) = u32::from_str_radix(mask, 8) else {
                return usage("bad umask");
            };
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(mask) };
            report(io(File::create(path)))
        }
        ["create-race", n, name, decoy] => create_race(n, name, decoy),
        ["exec-race", n, what] => exec_race(n, what),
        ["chmod", path, mode] => {
            let Ok(mode) = u32::from_str_radix(mode, 8) else {
                return usage("bad mode");
            };
            report(io(fs::set_permissions(
                path,
                fs::Permissions::from_mode(mode),
            )))
        }
        ["exec", path, args @ ..] => {
            let Ok(p) = CString::new(*path) else {
                return usage("bad path");
            };
            let mut argv: Vec<CString> = vec![p.clone()];
            argv.extend(args.iter().filter_map(|a| CString::new(*a).ok()));
            let err = nix::unistd::execv(&p, &argv)
                .err()
                .unwrap_or(Errno::UnknownErrno);
            report(Err(err))
        }
        ["exec-as", path, argv0, env, args @ ..] => {
            // execve with a chosen argv[0] and environment (`-`: empty).
            let c = |s: &str| CString::new(s).ok();
            let (Some(p), Some(a0)) = (c(path), c(argv0)) else {
                return usage("bad path");
            };
            let mut argv = vec![a0];
            argv.extend(args.iter().filter_map(|a| c(a)));
            let envp: Vec<CString> = if *env == "-" {
                Vec::new()
            } else {
                env.split(',').filter_map(c).collect()
            };
            let err = nix::unistd::execve(&p, &argv, &envp)
                .err()
                .unwrap_or(Errno::UnknownErrno);
            report(Err(err))
        }
        ["ptrace-sibling"] => {
            let child = match fork_then(|| {
                sleep_forever();
            }) {
                Ok(p) => p,
                Err(e) => return report(Err(e)),
            };
            // SAFETY: PTRACE_ATTACH takes a pid and ignores the pointers.
            let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) };
            let result = ret(r);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
            report(result)
        }
        ["unshare", what] => {
            let flags = match *what {
                "user" => CloneFlags::CLONE_NEWUSER,
                "net" => CloneFlags::CLONE_NEWNET,
                "mount" => CloneFlags::CLONE_NEWNS,
                "pid" => CloneFlags::CLONE_NEWPID,
                _ => return usage("unshare user|net|mount|pid"),
            };
            report(nix::sched::unshare(flags))
        }
        ["clone-newuser"] => {
            // SAFETY: raw clone with SIGCHLD and CLONE_NEWUSER, no stack: the
            // child returns 0 here and exits at once.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::SIGCHLD | libc::CLONE_NEWUSER,
                    0,
                    0,
                    0,
                    0,
                )
            };
            if r == 0 {
                // SAFETY: leaving the child immediately.
                unsafe { libc::_exit(0) };
            }
            report(ret(r))
        }
        ["mount"] => report(nix::mount::mount(
            Some("none"),
            "/tmp",
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )),
        ["bpf"] => {
            // SAFETY: BPF_PROG_LOAD with a NULL attr; the kernel (or seccomp)
            // rejects it before reading memory.
            report(ret(unsafe { libc::syscall(libc::SYS_bpf, 5, 0, 0) }))
        }
        ["io_uring_setup"] => {
            let mut params = [0u8; 120];
            // SAFETY: `params` is a zeroed io_uring_params-sized buffer.
            report(ret(unsafe {
                libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr())
            }))
        }
        ["keyctl"] => {
            // SAFETY: KEYCTL_GET_KEYRING_ID (0) of the session keyring; integers only.
            report(ret(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }))
        }
        ["perf_event_open"] => {
            let mut attr = [0u8; 128];
            // SAFETY: a zeroed perf_event_attr buffer.
            report(ret(unsafe {
                libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0)
            }))
        }
        ["tiocsti"] => {
            let c: u8 = b'x';
            // SAFETY: TIOCSTI reads one byte from the pointer.
            report(ret(unsafe { libc::ioctl(0, libc::TIOCSTI, &c) }.into()))
        }
        ["tiocsti-high-bits"] => {
            let c: u8 = b'x';
            let cmd = 0x1_0000_0000u64 | u64::from(libc::TIOCSTI as u32);
            // SAFETY: as above; the upper bits are ignored by the kernel.
            report(ret(unsafe { libc::syscall(libc::SYS_ioctl, 0, cmd, &c) }))
        }
        ["x32"] => {
            // getpid through the x32 ABI: the filter kills the process.
            // SAFETY: getpid takes no arguments.
            let r = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
            report(ret(r))
        }
        ["personality", value] => {
            let Ok(v) = u64::from_str_radix(value.trim_start_matches("0x"), 16) else {
                return usage("personality HEX");
            };
            // SAFETY: integer argument.
            report(ret(unsafe { libc::syscall(libc::SYS_personality, v) }))
        }
        ["fork-bomb", n] => {
            let n: u32 = n.parse().unwrap_or(0);
            let mut made = 0;
            let mut failure = None;
            for _ in 0..n {
                match fork_then(|| {
                    sleep_forever();
                }) {
                    Ok(_) => made += 1,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            println!("forked={made}");
            report(failure.map_or(Ok(()), Err))
        }
        ["alloc", mb] => {
            let mb: usize = mb.parse().unwrap_or(0);
            let mut v: Vec<u8> = Vec::with_capacity(mb << 20);
            for i in 0..(mb << 20) {
                if i % 4096 == 0 {
                    v.push(1);
                } else {
                    v.push(0);
                }
            }
            println!("touched={}", v.len() >> 20);
            report(Ok(()))
        }
        ["daemonize", pidfile] => {
            let pidfile = (*pidfile).to_owned();
            let r = fork_then(move || {
                let _ = nix::unistd::setsid();
                let _ = fork_then(move || {
                    let _ = fs::write(&pidfile, std::process::id().to_string());
                    sleep_forever();
                });
            });
            std::thread::sleep(Duration::from_millis(200));
            report(r.map(drop))
        }
        ["spawn-tree", n] => {
            let n: u32 = n.parse().unwrap_or(0);
            for _ in 0..n {
                if let Err(e) = fork_then(|| {
                    sleep_forever();
                }) {
                    return report(Err(e));
                }
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            sleep_forever()
        }
        ["create-loop", n, dir] => {
            // Creating calls: open with O_CREAT|O_TRUNC + close of 100
            // files in turn (created on the first round, truncated after).
            let n: u64 = n.parse().unwrap_or(0);
            let names: Vec<String> = (0..100).map(|i| format!("{dir}/c{i}")).collect();
            let start = std::time::Instant::now();
            for i in 0..n {
                let name = &names[usize::try_from(i % 100).unwrap_or(0)];
                if let Err(e) = File::create(name) {
                    return report(io(Err::<(), _>(e)));
                }
            }
            let ns = start.elapsed().as_nanos() / u128::from(n.max(1));
            println!("ns_per_iteration={ns}");
            report(Ok(()))
        }
        ["stat-loop", n, path] => {
            // The syscall-heavy benchmark: stat + open + read + close.
            let n: u64 = n.parse().unwrap_or(0);
            let start = std::time::Instant::now();
            let mut buf = [0u8; 64];
            for _ in 0..n {
                if let Err(e) = fs::metadata(path) {
                    return report(io(Err::<(), _>(e)));
                }
                match File::open(path) {
                    Ok(mut f) => {
                        let _ = f.read(&mut buf);
                    }
                    Err(e) => return report(io(Err::<(), _>(e))),
                }
            }
            let ns = start.elapsed().as_nanos() / u128::from(n.max(1));
            println!("ns_per_iteration={ns}");
            report(Ok(()))
        }
        ["open-loop", n, path, rest @ ..] => {
            // The file-event throughput benchmark: open + close, n times,
            // as fast as possible or paced to `rate` per second.
            let (Ok(n), Ok(rate)) = (
                n.parse::<u64>(),
                rest.first().map_or(Ok(0), |r| r.parse::<u64>()),
            ) else {
                return usage("open-loop N PATH [RATE]");
            };
            let start = std::time::Instant::now();
            for i in 0..n {
                if rate > 0 && i % 100 == 0 {
                    let due = Duration::from_nanos(i * 1_000_000_000 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if let Err(e) = File::open(path) {
                    return report(io(Err::<(), _>(e)));
                }
            }
            println!("elapsed_ns={}", start.elapsed().as_nanos());
            report(Ok(()))
        }
        ["connect-loop", n, addr, port] => {
            // The per-connect benchmark: connect + abortive close, n times.
            let (Ok(n), Ok(a), Ok(p)) = (
                n.parse::<u64>(),
                addr.parse::<IpAddr>(),
                port.parse::<u16>(),
            ) else {
                return usage("connect-loop N ADDR PORT");
            };
            let target = SocketAddr::new(a, p);
            // Closing with a zero linger sends RST instead of FIN, so no
            // TIME_WAIT 4-tuple is left to collide with a later SYN (which
            // would cost a one-second SYN retransmit and drown the figure).
            let abort = nix::sys::socket::sockopt::Linger;
            let zero = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // Each connect is timed alone and the median reported: a SYN
            // dropped on a full accept queue costs a one-second retransmit,
            // which would swamp a mean.
            let mut each = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                let start = std::time::Instant::now();
                match TcpStream::connect(target) {
                    Ok(s) => {
                        each.push(start.elapsed().as_nanos());
                        let _ = nix::sys::socket::setsockopt(&s, abort, &zero);
                    }
                    Err(e) => return report(io(Err::<(), _>(e))),
                }
            }
            print_median(each)
        }
        ["unix-connect-loop", n, path] => {
            // The per-connect benchmark for unix sockets: a listener of
            // its own at PATH, connect + close n times; median connect.
            let Ok(n) = n.parse::<u64>() else {
                return usage("unix-connect-loop N PATH");
            };
            let _ = fs::remove_file(path);
            let listener = match std::os::unix::net::UnixListener::bind(path) {
                Ok(l) => l,
                Err(e) => return report(io(Err::<(), _>(e))),
            };
            std::thread::spawn(move || {
                for c in listener.incoming() {
                    drop(c);
                }
            });
            let mut each = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                let start = std::time::Instant::now();
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => each.push(start.elapsed().as_nanos()),
                    Err(e) => return report(io(Err::<(), _>(e))),
                }
            }
            print_median(each)
        }
        ["exec-storm", n, program] => {
            // The event-throughput benchmark: fork + exec + exit, n times.
            let Ok(n) = n.parse::<u64>() else {
                return usage("exec-storm N PROGRAM");
            };
            let Ok(prog) = CString::new(*program) else {
                return usage("bad program");
            };
            let start = std::time::Instant::now();
            for _ in 0..n {
                let argv = [prog.clone()];
                match fork_then(|| {
                    let _ = nix::unistd::execv(&argv[0], &argv);
                }) {
                    Ok(pid) => {
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                    }
                    Err(e) => return report(Err(e)),
                }
            }
            println!("elapsed_ns={}", start.elapsed().as_nanos());
            report(Ok(()))
        }
        ["sleep", secs] => {
            std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(1)));
            report(Ok(()))
        }
        // A datagram on the UDP socket inherited as stdin.
        ["udp-send-stdin", addr, port] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("udp-send-stdin ADDR PORT");
            };
            let to = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(a, p));
            report(
                nix::sys::socket::sendto(0, b"probe", &to, nix::sys::socket::MsgFlags::empty())
                    .map(drop),
            )
        }
        ["udp-send", addr, port] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("udp-send ADDR PORT");
            };
            let bind: IpAddr = if a.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            report(io(std::net::UdpSocket::bind((bind, 0))
                .and_then(|s| s.send_to(b"probe", SocketAddr::new(a, p)))))
        }
        ["bind", addr, port] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("bind ADDR PORT");
            };
            report(io(TcpListener::bind((a, p))))
        }
        ["listen"] => {
            // listen(2) on a socket that was never bound (autobind).
            let fd = match nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            ) {
                Ok(fd) => fd,
                Err(e) => return report(Err(e)),
            };
            report(nix::sys::socket::listen(
                &fd,
                nix::sys::socket::Backlog::new(1).unwrap_or(nix::sys::socket::Backlog::MAXCONN),
            ))
        }
        ["socket", family, ty, protocol] => {
            let (Ok(f), Ok(t), Ok(p)) = (
                family.parse::<i32>(),
                ty.parse::<i32>(),
                protocol.parse::<i32>(),
            ) else {
                return usage("socket FAMILY TYPE PROTOCOL (numbers)");
            };
            // SAFETY: socket(2) takes integers; a descriptor it returns is
            // closed right away.
            let fd = unsafe { libc::socket(f, t, p) };
            if fd >= 0 {
                // SAFETY: fd was just returned by socket(2) and is ours.
                unsafe { libc::close(fd) };
            }
            report(ret(i64::from(fd)))
        }
        ["socketpair", family, ty] => {
            let (Ok(f), Ok(t)) = (family.parse::<i32>(), ty.parse::<i32>()) else {
                return usage("socketpair FAMILY TYPE (numbers)");
            };
            let mut sv = [-1; 2];
            // SAFETY: socketpair(2) writes two descriptors into `sv`; they
            // are closed right away.
            let r = unsafe { libc::socketpair(f, t, 0, sv.as_mut_ptr()) };
            for fd in sv.into_iter().filter(|fd| *fd >= 0) {
                // SAFETY: the descriptor was just returned and is ours.
                unsafe { libc::close(fd) };
            }
            report(ret(i64::from(r)))
        }
        ["getifaddrs"] => match nix::ifaddrs::getifaddrs() {
            Ok(addrs) => {
                println!("interfaces={}", addrs.count());
                report(Ok(()))
            }
            Err(e) => report(Err(e)),
        },
        ["raw-socket"] => report(
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Raw,
                nix::sys::socket::SockFlag::empty(),
                nix::sys::socket::SockProtocol::Icmp,
            )
            .map(drop),
        ),
        ["packet-socket"] => report(
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Packet,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::empty(),
                None,
            )
            .map(drop),
        ),
        ["serve-tcp", addr, port] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("serve-tcp ADDR PORT");
            };
            let listener = match TcpListener::bind((a, p)) {
                Ok(l) => l,
                Err(e) => return report(io(Err::<(), _>(e))),
            };
            println!("ready");
            let _ = std::io::stdout().flush();
            for conn in listener.incoming() {
                drop(conn);
            }
            ExitCode::SUCCESS
        }
        ["serve-udp", addr, port, file] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("serve-udp ADDR PORT FILE");
            };
            let socket = match std::net::UdpSocket::bind((a, p)) {
                Ok(s) => s,
                Err(e) => return report(io(Err::<(), _>(e))),
            };
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .and_then(|mut f| writeln!(f, "{from} {}", String::from_utf8_lossy(&buf[..n])));
            }
            ExitCode::SUCCESS
        }
        ["memfd-exec", path] => {
            // Copy a program into anonymous memory and fexecve it.
            let Ok(bytes) = fs::read(path) else {
                return usage("cannot read the program");
            };
            let fd =
                match nix::sys::memfd::memfd_create(c"probe", nix::sys::memfd::MFdFlags::empty()) {
                    Ok(fd) => fd,
                    Err(e) => return report(Err(e)),
                };
            let mut f = File::from(fd);
            if f.write_all(&bytes).is_err() {
                return usage("cannot fill the memfd");
            }
            let argv = [c"probe".to_owned()];
            let env: [CString; 0] = [];
            let err = nix::unistd::fexecve(&f, &argv, &env)
                .err()
                .unwrap_or(Errno::UnknownErrno);
            report(Err(err))
        }
        ["grandchild", rest @ ..] => {
            // Run the rest as an action of a grandchild (fork, fork, exec
            // this probe) and pass on its verdict.
            let Ok(me) = std::env::current_exe() else {
                return usage("no current exe");
            };
            let Ok(me) = CString::new(me.as_os_str().as_encoded_bytes()) else {
                return usage("bad exe");
            };
            let mut argv = vec![me.clone()];
            argv.extend(rest.iter().filter_map(|a| CString::new(*a).ok()));
            let status = |pid: libc::pid_t| {
                let mut st = 0;
                // SAFETY: `st` is a valid out-pointer.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    128 + libc::WTERMSIG(st)
                }
            };
            let child = fork_then(move || {
                let grandchild = fork_then(|| {
                    let _ = nix::unistd::execv(&me, &argv);
                });
                let code = grandchild.map_or(2, status);
                // SAFETY: the intermediate child leaves with the grandchild's status.
                unsafe { libc::_exit(code) };
            });
            match child {
                Ok(pid) => ExitCode::from(u8::try_from(status(pid)).unwrap_or(2)),
                Err(e) => report(Err(e)),
            }
        }
        ["echo-args", rest @ ..] => {
            println!("{}", rest.join(" "));
            report(Ok(()))
        }
        ["serve-dns", addr, log, entries @ ..] => {
            // A test upstream resolver on ADDR:53 (UDP and TCP), logging
            // every query it is asked.
            let Ok(a) = addr.parse::<IpAddr>() else {
                return usage("serve-dns ADDR LOG NAME=VALUE[@TTL]...");
            };
            let table: Vec<_> = entries
                .iter()
                .filter_map(|e| agentd_tests::dns::Entry::parse(e))
                .collect();
            // Bind first, then say so.
            let log = std::path::PathBuf::from(*log);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let r = agentd_tests::dns::serve(a, log, table);
                let _ = tx.send(r);
            });
            match rx.recv_timeout(Duration::from_millis(300)) {
                Ok(Err(e)) => report(io(Err::<(), _>(e))),
                _ => {
                    println!("ready");
                    let _ = std::io::stdout().flush();
                    sleep_forever()
                }
            }
        }
        ["dns-query", server, name, qtype, transport] => {
            // One query straight to SERVER:53; prints the code and answers.
            let Ok(server) = server.parse::<IpAddr>() else {
                return usage("dns-query SERVER NAME TYPE udp|tcp");
            };
            match agentd_tests::dns::query(server, name, qtype, *transport == "tcp") {
                Ok((code, answers)) => {
                    println!("rcode {code}");
                    for a in answers {
                        println!("answer {a}");
                    }
                    report(Ok(()))
                }
                Err(e) if e.raw_os_error().is_none() => {
                    println!("error {e}");
                    ExitCode::from(1)
                }
                Err(e) => report(io(Err::<(), _>(e))),
            }
        }
        ["dns-loop", n, server, name, qtype] => {
            // The resolver benchmark: N queries, one at a time; NAME may
            // hold {i} (a new name each time: nothing cached).
            let (Ok(n), Ok(server)) = (n.parse::<u64>(), server.parse::<IpAddr>()) else {
                return usage("dns-loop N SERVER NAME TYPE");
            };
            let mut each = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            let start = std::time::Instant::now();
            for i in 0..n {
                let q = name.replace("{i}", &i.to_string());
                let t = std::time::Instant::now();
                if let Err(e) = agentd_tests::dns::query(server, &q, qtype, false) {
                    println!("error {e}");
                    return ExitCode::from(1);
                }
                each.push(t.elapsed().as_nanos());
            }
            let total = start.elapsed().as_secs_f64();
            each.sort_unstable();
            println!(
                "median_ns={} qps={:.0}",
                each.get(each.len() / 2).copied().unwrap_or(0),
                n as f64 / total
            );
            report(Ok(()))
        }
        ["resolve", name] => {
            // Through the system resolver (getaddrinfo), as programs do.
            use std::net::ToSocketAddrs as _;
            match (*name, 0u16).to_socket_addrs() {
                Ok(addrs) => {
                    for a in addrs {
                        println!("address {}", a.ip());
                    }
                    report(Ok(()))
                }
                Err(_) => {
                    println!("errno UNRESOLVED");
                    ExitCode::from(1)
                }
            }
        }
        ["connect-repeat", interval_ms, addr, port] => {
            // One connect every interval, its verdict on a line, until killed.
            let (Ok(ms), Ok(a), Ok(p)) = (
                interval_ms.parse::<u64>(),
                addr.parse::<IpAddr>(),
                port.parse::<u16>(),
            ) else {
                return usage("connect-repeat INTERVAL_MS ADDR PORT");
            };
            loop {
                let r = io(TcpStream::connect_timeout(
                    &SocketAddr::new(a, p),
                    Duration::from_secs(2),
                ));
                match r {
                    Ok(()) => println!("ok"),
                    Err(e) => println!("errno {e:?}"),
                }
                let _ = std::io::stdout().flush();
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        ["connect", addr, port] => {
            let (Ok(a), Ok(p)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
                return usage("connect ADDR PORT");
            };
            report(io(TcpStream::connect_timeout(
                &SocketAddr::new(a, p),
                Duration::from_secs(2),
            )))
        }
        [first, ..] if first.starts_with("unix-") => unix(action),
        ["dns-flood", n, server, name] => dns_flood(n, server, name),
        other => usage(&format!("unknown action {other:?}")),
    }
}

/// A DNS query for `name` (type A, id `id`), as bytes.
fn dns_message(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(u8::try_from(label.len()).unwrap_or(63));
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// An outsider's flood: `n` UDP queries for `q<i>.NAME` to SERVER:53
/// without waiting, then one over TCP; prints how many were answered.
fn dns_flood(n: &str, server: &str, name: &str) -> ExitCode {
    let (Ok(n), Ok(server)) = (n.parse::<u16>(), server.parse::<IpAddr>()) else {
        return usage("dns-flood N SERVER NAME");
    };
    let to = SocketAddr::new(server, 53);
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(udp) = std::net::UdpSocket::bind(bind) else {
        return usage("cannot bind a UDP socket");
    };
    for i in 0..n {
        let _ = udp.send_to(&dns_message(i, &format!("q{i}.{name}")), to);
    }
    let _ = udp.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while udp.recv(&mut buf).is_ok() {
        answered += 1;
    }
    let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(2)).and_then(|mut s| {
        let q = dns_message(1, name);
        let mut framed = u16::try_from(q.len()).unwrap_or(0).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
    });
    println!(
        "udp_answered={answered} tcp_answered={}",
        u8::from(tcp.is_ok())
    );
    report(Ok(()))
}

/// Pathname unix socket actions.
fn unix(action: &[&str]) -> ExitCode {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    match action {
        // Connect, send a line, print the reply.
        ["unix-connect", path] => report(io(UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"ping\n")?;
            let mut reply = [0u8; 64];
            let n = s.read(&mut reply)?;
            println!("reply={}", String::from_utf8_lossy(&reply[..n]).trim());
            Ok(())
        }))),
        ["unix-dgram", path] => report(io(
            UnixDatagram::unbound().and_then(|s| s.send_to(b"probe", path))
        )),
        ["unix-dgram-connected", path] => report(io(UnixDatagram::unbound().and_then(|s| {
            s.connect(path)?;
            s.send(b"probe")
        }))),
        ["unix-sendmsg", path] => {
            let Ok(addr) = nix::sys::socket::UnixAddr::new(*path) else {
                return usage("unix-sendmsg PATH");
            };
            let sock = match nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::empty(),
                None,
            ) {
                Ok(s) => s,
                Err(e) => return report(Err(e)),
            };
            let iov = [std::io::IoSlice::new(b"probe")];
            report(
                nix::sys::socket::sendmsg(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    &iov,
                    &[],
                    nix::sys::socket::MsgFlags::empty(),
                    Some(&addr),
                )
                .map(drop),
            )
        }
        // A listener of its own at PATH, and a connect to it (by `via`,
        // the same path or another name for it).
        ["unix-own", path, rest @ ..] => {
            let via = rest.first().copied().unwrap_or(path);
            let listener = match UnixListener::bind(path) {
                Ok(l) => l,
                Err(e) => return report(io(Err::<(), _>(e))),
            };
            let server = std::thread::spawn(move || {
                if let Ok((mut c, _)) = listener.accept() {
                    let mut buf = [0u8; 16];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let _ = c.write_all(&buf[..n]);
                }
            });
            let r = UnixStream::connect(via).and_then(|mut s| {
                s.write_all(b"own\n")?;
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf)?;
                println!("reply={}", String::from_utf8_lossy(&buf[..n]).trim());
                Ok(())
            });
            if r.is_ok() {
                let _ = server.join();
            }
            report(io(r))
        }
        // A datagram socket of its own at PATH, and a datagram sent to it
        // (by `via`) from another socket.
        ["unix-own-dgram", path, rest @ ..] => {
            let via = rest.first().copied().unwrap_or(path);
            report(io(UnixDatagram::bind(path).and_then(|own| {
                own.set_read_timeout(Some(Duration::from_secs(5)))?;
                UnixDatagram::unbound()?.send_to(b"own", via)?;
                let mut buf = [0u8; 16];
                let n = own.recv(&mut buf)?;
                println!("reply={}", String::from_utf8_lossy(&buf[..n]));
                Ok(())
            })))
        }
        ["unix-swap", allowed, denied, n] => unix_swap(allowed, denied, n),
        ["unix-stall", path] => unix_stall(path),
        ["unix-connect-abstract", name] => {
            use std::os::linux::net::SocketAddrExt as _;
            report(io(std::os::unix::net::SocketAddr::from_abstract_name(
                name.as_bytes(),
            )
            .and_then(|a| UnixStream::connect_addr(&a))))
        }
        ["unix-fdswap", path, n] => unix_fdswap(path, n, libc::SOCK_STREAM),
        ["unix-fdswap-dgram", path, n] => unix_fdswap(path, n, libc::SOCK_DGRAM),
        // The same race with the datagram socket the session inherited as
        // its stdin (created outside the session).
        ["unix-fdswap-stdin", path, n] => unix_fdswap(path, n, -1),
        other => usage(&format!("unknown action {other:?}")),
    }
}

/// Prints the median of per-iteration times (`ns_per_iteration=`).
fn print_median(mut each: Vec<u128>) -> ExitCode {
    each.sort_unstable();
    println!(
        "ns_per_iteration={}",
        each.get(each.len() / 2).copied().unwrap_or(0)
    );
    report(Ok(()))
}

/// The descriptor-swap attack: one thread keeps replacing descriptor 100
/// with an IPv4 socket and a fresh unix socket of type `ty`, while the main
/// thread connects descriptor 100 to `path` `n` times (stream), or sends a
/// datagram to `path` with `sendto` (datagram): a check of the socket's
/// family that the kernel does not repeat would let a unix call through.
/// Prints how many calls succeeded.
fn unix_fdswap(path: &str, n: &str, ty: i32) -> ExitCode {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Ok(n) = n.parse::<u32>() else {
        return usage("unix-fdswap PATH N");
    };
    const FD: i32 = 100;
    let mut addr = [0u8; 110];
    addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    addr[2..2 + path.len().min(107)].copy_from_slice(&path.as_bytes()[..path.len().min(107)]);
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let swapper = std::thread::spawn(move || {
        // SAFETY: socket/dup2/close on integers.
        unsafe {
            let inet = libc::socket(libc::AF_INET, if ty < 0 { libc::SOCK_DGRAM } else { ty }, 0);
            while !stop.load(Ordering::Relaxed) {
                let unix = if ty < 0 {
                    libc::dup(0)
                } else {
                    libc::socket(libc::AF_UNIX, ty, 0)
                };
                libc::dup2(inet, FD);
                libc::dup2(unix, FD);
                libc::close(unix);
            }
        }
    });
    let mut ok = 0u32;
    for _ in 0..n {
        // SAFETY: connect/sendto on an integer and 110-byte buffers.
        let r = unsafe {
            if ty != libc::SOCK_STREAM {
                libc::sendto(FD, addr.as_ptr().cast(), 4, 0, addr.as_ptr().cast(), 110)
            } else {
                libc::connect(FD, addr.as_ptr().cast(), 110) as isize
            }
        };
        if r >= 0 {
            ok += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = swapper.join();
    println!("connected={ok}");
    report(Ok(()))
}

/// Stops every other process of the session's user (its unix socket
/// broker among them) and connects: to a path next to `path` that does not
/// exist, then to an IP address no policy allows; resumes them and
/// connects to its own listener at `path`. Prints each outcome (`unix=`,
/// `ip=`, `again=`).
fn unix_stall(path: &str) -> ExitCode {
    use std::os::unix::net::{UnixListener, UnixStream};
    let _listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => return usage(&format!("cannot bind {path}: {e}")),
    };
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{:?}", Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    };
    // SAFETY: kill with integer arguments; -1 spares the caller.
    unsafe { libc::kill(-1, libc::SIGSTOP) };
    // A path that does not exist: the late answer (ENOENT) must not be
    // taken for the next connect's.
    let missing = format!("{path}.none");
    println!("unix={}", outcome(UnixStream::connect(missing).map(drop)));
    println!(
        "ip={}",
        outcome(TcpStream::connect(("127.0.0.1", 9)).map(drop))
    );
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGCONT) };
    println!("again={}", outcome(UnixStream::connect(path).map(drop)));
    report(Ok(()))
}

/// The time-of-check attack: one thread keeps rewriting the address between
/// `allowed` (a listener of the probe's own) and `denied`, while the main
/// thread connects `n` times with that buffer. Prints how many connects
/// succeeded.
fn unix_swap(allowed: &str, denied: &str, n: &str) -> ExitCode {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    let Ok(n) = n.parse::<u32>() else {
        return usage("unix-swap ALLOWED DENIED N");
    };
    let Ok(listener) = std::os::unix::net::UnixListener::bind(allowed) else {
        return usage("cannot bind the allowed path");
    };
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c)
        }
    });
    let encode = |p: &str| {
        let mut a = [0u8; 110];
        a[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        a[2..2 + p.len().min(107)].copy_from_slice(&p.as_bytes()[..p.len().min(107)]);
        a
    };
    let (a, d) = (encode(allowed), encode(denied));
    // The shared address, as atomics so that the writer's stores are real.
    let shared: &'static [AtomicU8; 110] =
        Box::leak(Box::new(std::array::from_fn(|i| AtomicU8::new(a[i]))));
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let writer = std::thread::spawn(move || {
        let mut flip = false;
        while !stop.load(Ordering::Relaxed) {
            let src = if flip { &d } else { &a };
            for (slot, b) in shared.iter().zip(src) {
                slot.store(*b, Ordering::Relaxed);
            }
            flip = !flip;
        }
    });
    let mut ok = 0u32;
    for _ in 0..n {
        // SAFETY: socket/connect/close on integers and a 110-byte buffer
        // that lives for the whole program (the race is the point).
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                break;
            }
            if libc::connect(fd, shared.as_ptr().cast(), 110) == 0 {
                ok += 1;
            }
            libc::close(fd);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    println!("connected={ok}");
    report(Ok(()))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut netns = None;
    let mut cgroup = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if args.is_empty() {
            return usage(&format!("{flag} needs a value"));
        }
        let value = args.remove(0);
        match flag.as_str() {
            "--netns" => netns = Some(value),
            "--cgroup" => cgroup = Some(value),
            _ => return usage(&format!("unknown flag {flag}")),
        }
    }
    if let Some(name) = &netns {
        let entered = File::open(format!("/run/netns/{name}"))
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::sched::setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
            });
        if let Err(e) = entered {
            return usage(&format!("cannot enter netns {name}: {e}"));
        }
    }
    let action: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["connect-local", family] = action.as_slice() {
        // Listen first (outside the cgroup), then join it and connect.
        let ip: IpAddr = if *family == "v6" {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        let listener = match TcpListener::bind((ip, 0)).and_then(|l| l.local_addr().map(|a| (l, a)))
        {
            Ok(l) => l,
            Err(e) => return usage(&format!("cannot listen on {ip}: {e}")),
        };
        if let Err(e) = join_cgroup(cgroup.as_deref()) {
            return usage(&e);
        }
        return report(io(TcpStream::connect(listener.1)));
    }
    run(&action, cgroup.as_deref())
}
