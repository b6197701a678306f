//! A tiny helper that the integration tests run to attempt one action from a
//! chosen cgroup and network namespace, and report the outcome on stdout as
//! `ok` or `errno <NAME>`.
//!
//! Usage: `agentd-probe [--netns NAME] [--cgroup DIR] ACTION [ARGS]`
//!
//! Actions:
//! - `connect-local v4|v6`: listen on the loopback, then (after joining the
//!   cgroup) connect to it.
//! - `connect ADDR PORT`: TCP connect.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the probe reports on stdout"
)]

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
};

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

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn join_cgroup(cgroup: Option<&str>) -> Result<(), String> {
    if let Some(dir) = cgroup {
        std::fs::write(
            format!("{dir}/cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("join cgroup {dir}: {e}"))?;
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> Result<(), Errno> {
    TcpStream::connect(addr).map(drop).map_err(|e| io_errno(&e))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut netns = None;
    let mut cgroup = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if args.is_empty() {
            eprintln!("{flag} needs a value");
            return ExitCode::from(2);
        }
        let value = args.remove(0);
        match flag.as_str() {
            "--netns" => netns = Some(value),
            "--cgroup" => cgroup = Some(value),
            _ => {
                eprintln!("unknown flag {flag}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(name) = &netns {
        let entered = File::open(format!("/run/netns/{name}"))
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::sched::setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
            });
        if let Err(e) = entered {
            eprintln!("cannot enter netns {name}: {e}");
            return ExitCode::from(2);
        }
    }
    let action: Vec<&str> = args.iter().map(String::as_str).collect();
    match action.as_slice() {
        ["connect-local", family] => {
            let ip: IpAddr = if *family == "v6" {
                Ipv6Addr::LOCALHOST.into()
            } else {
                Ipv4Addr::LOCALHOST.into()
            };
            let listener =
                match TcpListener::bind((ip, 0)).and_then(|l| l.local_addr().map(|a| (l, a))) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("cannot listen on {ip}: {e}");
                        return ExitCode::from(2);
                    }
                };
            if let Err(e) = join_cgroup(cgroup.as_deref()) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            report(connect(listener.1))
        }
        ["connect", addr, port] => {
            let target = match (addr.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(a), Ok(p)) => SocketAddr::new(a, p),
                _ => {
                    eprintln!("bad address {addr} {port}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = join_cgroup(cgroup.as_deref()) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            report(connect(target))
        }
        other => {
            eprintln!("unknown action {other:?}");
            ExitCode::from(2)
        }
    }
}
