//! `cargo xtask bench`: agentd's performance figures, measured side by side
//! with bare execution and the sandboxes installable here (bubblewrap,
//! firejail), reported as ratios and written to docs/benchmarks.md.
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{cargo, root, setup, sh, step};

/// One hyperfine result.
struct Timing {
    name: String,
    median_ms: f64,
    mean_ms: f64,
    stddev_ms: f64,
}

fn hyperfine(
    dir: &Path,
    runs: u32,
    commands: &[(&str, String)],
    socket: Option<&Path>,
) -> Result<Vec<Timing>> {
    let json = dir.join("hyperfine.json");
    let mut cmd = Command::new("hyperfine");
    if let Some(s) = socket {
        cmd.env("AGENTD_SOCKET", s);
    }
    cmd.current_dir(dir.join("workspace"))
        .args([
            "-N",
            "--warmup",
            "10",
            "--runs",
            &runs.to_string(),
            "--export-json",
        ])
        .arg(&json);
    for (name, command) in commands {
        cmd.args(["--command-name", name, command]);
    }
    sh(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&json)?)?;
    let results = v["results"]
        .as_array()
        .context("hyperfine JSON without results")?;
    Ok(results
        .iter()
        .map(|r| Timing {
            name: r["command"].as_str().unwrap_or("?").to_owned(),
            median_ms: r["median"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            mean_ms: r["mean"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            stddev_ms: r["stddev"].as_f64().unwrap_or(f64::NAN) * 1000.0,
        })
        .collect())
}

fn write_policy(dir: &Path, name: &str, probe_dir: &Path, limits: &str) -> Result<PathBuf> {
    let d = probe_dir.display();
    let text = format!(
        "version = 1\n[agent]\nname = \"bench\"\nowner = \"bench\"\n\n[filesystem]\n\
         read = [\"/usr\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\", \"{d}\"]\n\
         read_write = [\"{{workspace}}\", \"{{tmp}}\"]\n\
         execute = [\"{d}\", \"/usr/bin\", \"/bin\", \"/usr/lib\", \"/lib\", \"/lib64\"]\n\n{limits}\n"
    );
    let path = dir.join(name);
    fs::write(&path, text)?;
    Ok(path)
}

/// A probe run's `ns_per_iteration`, or an error with its stderr.
fn ns_per_iteration(out: &std::process::Output, what: &str) -> Result<f64> {
    value(&String::from_utf8_lossy(&out.stdout), "ns_per_iteration")
        .with_context(|| format!("{what}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn value(output: &str, key: &str) -> Option<f64> {
    output
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Time to kill a session holding `n` processes, via `agentd kill`.
fn kill_tree(
    agentd: &Path,
    probe: &Path,
    policy: &Path,
    ws: &Path,
    n: u32,
    socket: &Path,
) -> Result<f64> {
    let mut child = Command::new(agentd)
        .env("AGENTD_SOCKET", socket)
        .args(["run", "--policy"])
        .arg(policy)
        .arg("--workspace")
        .arg(ws)
        .args(["--no-tty", "--"])
        .arg(probe)
        .args(["spawn-tree", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(child.stderr.take().context("stderr")?).read_line(&mut first)?;
    let id = first
        .strip_prefix("agentd: session ")
        .and_then(|r| r.split_whitespace().next())
        .context("no session id")?
        .to_owned();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut ready)?;
    let out = Command::new(agentd)
        .env("AGENTD_SOCKET", socket)
        .args(["kill", &id])
        .output()?;
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    // "killed session <id>: <n> processes, gone after <ms> ms"
    text.split("gone after ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .with_context(|| format!("unexpected kill output {text:?}"))
}

pub fn run() -> Result<()> {
    setup::run()?;
    step("build (release)");
    sh(cargo().args([
        "build",
        "--release",
        "--package",
        "agentd",
        "--bin",
        "agentd",
    ]))?;
    sh(cargo().args([
        "build",
        "--release",
        "--package",
        "agentd-tests",
        "--bin",
        "agentd-probe",
    ]))?;
    let release = root().join("target/release");
    let agentd = release.join("agentd");
    let probe = release.join("agentd-probe");
    for tool in ["hyperfine", "bwrap", "firejail"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} is missing; run `cargo xtask setup`");
        }
    }
    let dir = std::env::temp_dir().join(format!("agentd-bench-{}", std::process::id()));
    fs::create_dir_all(dir.join("workspace"))?;
    let guard = RemoveDir(dir.clone());
    let ws = dir.join("workspace");
    let minimal = write_policy(&dir, "minimal.toml", &release, "")?;
    let limited = write_policy(
        &dir,
        "limited.toml",
        &release,
        "[limits]\nmax_processes = 2000\nmemory = \"1G\"\ncpu = \"100%\"\nopen_files = 1024\n",
    )?;
    let a = agentd.display();

    step("launch: /bin/true");
    // No daemon answers on this socket: embedded mode.
    let no_daemon = dir.join("no-daemon.sock");
    let launch = hyperfine(
        &dir,
        200,
        &[
            ("bare", "/bin/true".into()),
            ("agentd run (no limits)", format!("{a} run --policy {} --no-tty -- /bin/true", minimal.display())),
            ("agentd run (pids, memory, cpu limits)", format!("{a} run --policy {} --no-tty -- /bin/true", limited.display())),
            ("bwrap --unshare-all", "bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all --die-with-parent /bin/true".into()),
            ("firejail --noprofile", "firejail --quiet --noprofile /bin/true".into()),
        ],
        Some(&no_daemon),
    )?;

    step("launch: where the time goes (AGENTD_LOG=agentd=debug, 30 runs)");
    let phases = stage_times(&agentd, &ws, &minimal)?;

    step("syscall-heavy: stat + open + read + close loop");
    let (bare_ns, confined_ns) = stat_loop(&agentd, &probe, &ws, &minimal)?;

    step("creating calls: open with O_CREAT + close loop (held by the gate, made by the broker)");
    let create = create_loop(&agentd, &probe, &ws, &minimal)?;

    step("exec gate: fork + exec of /usr/bin/true, sessions without and with argument rules");
    let exec_gate = exec_gate_loop(&agentd, &probe, &dir, &release, &ws)?;

    step("per-connect cost: loopback connect loop (in a network namespace)");
    let (bare_connect, confined_connect) = connect_loop(&agentd, &probe, &dir, &release, &ws)?;

    step("per-connect cost: unix socket connect loop (the session's own socket, via its broker)");
    let unix_connect = unix_connect_loop(&agentd, &probe, &dir, &release, &ws)?;

    step("resolver: queries through a session's resolver vs straight to the upstream");
    let resolver = resolver_figures(&agentd, &probe, &dir, &release, &ws)?;

    step("event throughput: exec storm and open storm");
    let events = EventFigures {
        exec: event_storm(&agentd, &probe, &dir, &release, &ws, "exec")?,
        paced: event_storm(&agentd, &probe, &dir, &release, &ws, "open-paced")?,
        open: event_storm(&agentd, &probe, &dir, &release, &ws, "open")?,
    };

    step("kill a 1000-process tree");
    let kills: Vec<f64> = (0..5)
        .map(|_| kill_tree(&agentd, &probe, &limited, &ws, 1000, &no_daemon))
        .collect::<Result<_>>()?;
    let kill_ms = median(kills);

    step("through the daemon: launch, kill, idle memory");
    let daemon = Daemon::start(&agentd, &dir)?;
    let rss_start_kb = daemon.rss_kb();
    let via_daemon = hyperfine(
        &dir,
        200,
        &[
            ("bare", "/bin/true".into()),
            (
                "agentd run via the daemon",
                format!(
                    "{a} run --policy {} --no-tty -- /bin/true",
                    minimal.display()
                ),
            ),
        ],
        Some(&daemon.socket),
    )?;
    let daemon_kills: Vec<f64> = (0..5)
        .map(|_| kill_tree(&agentd, &probe, &limited, &ws, 1000, &daemon.socket))
        .collect::<Result<_>>()?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let daemon_figures = DaemonFigures {
        launch: via_daemon,
        embedded_ms: launch.get(1).map_or(f64::NAN, |t| t.median_ms),
        kill_ms: median(daemon_kills),
        rss_start_kb,
        rss_idle_kb: daemon.rss_kb(),
    };
    drop(daemon);

    let report = render(&launch, &phases, bare_ns, confined_ns, kill_ms)
        + &render_create(create)
        + &render_exec_gate(exec_gate)
        + &render_network((bare_connect, confined_connect), unix_connect, &events)
        + &render_daemon(&daemon_figures)
        + &render_resolver(&resolver);
    print!("\n{report}");
    let doc = root().join("docs/benchmarks.md");
    fs::create_dir_all(root().join("docs"))?;
    fs::write(&doc, report)?;
    println!("written to {}", doc.display());
    drop(guard);
    Ok(())
}

/// A network namespace for the connect benchmark, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Result<Self> {
        let name = format!("agentd-bench-{}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self(name);
        sh(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One event-storm measurement.
struct Storm {
    /// Events the workload caused.
    produced: u64,
    /// Events the trail recorded for the session.
    recorded: u64,
    /// Events reported lost meanwhile.
    lost: u64,
    /// Events per second the workload produced.
    rate: f64,
}

struct EventFigures {
    exec: Storm,
    paced: Storm,
    open: Storm,
}

const AUDIT_LOG: &str = "/var/log/agentd/audit.jsonl";

/// Runs a storm in a session and counts what reached the trail.
fn event_storm(
    agentd: &Path,
    probe: &Path,
    dir: &Path,
    release: &Path,
    ws: &Path,
    kind: &str,
) -> Result<Storm> {
    let target = ws.join("target.txt").display().to_string();
    let (limits, action, per_iteration, n): (String, Vec<String>, u64, u64) = match kind {
        "exec" => (
            "[exec]\nallow = [\"/usr/bin/true\", \"{probe}\"]\n"
                .replace("{probe}", &probe.display().to_string()),
            vec!["exec-storm".into(), "3000".into(), "/usr/bin/true".into()],
            3,
            3000,
        ),
        "open-paced" => (
            "[audit]\nfile_events = \"all\"\n".into(),
            vec!["open-loop".into(), "150000".into(), target, "50000".into()],
            1,
            150_000,
        ),
        _ => (
            "[audit]\nfile_events = \"all\"\n".into(),
            vec!["open-loop".into(), "500000".into(), target],
            1,
            500_000,
        ),
    };
    let policy = write_policy(dir, &format!("storm-{kind}.toml"), release, &limits)?;
    let before = fs::metadata(AUDIT_LOG).map(|m| m.len()).unwrap_or(0);
    let out = Command::new(agentd)
        .args(["run", "--policy"])
        .arg(&policy)
        .arg("--workspace")
        .arg(ws)
        .args(["--no-tty", "--"])
        .arg(probe)
        .args(&action)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let elapsed_ns = value(&stdout, "elapsed_ns")
        .or_else(|| value(&stdout, "ns_per_iteration").map(|ns| ns * n as f64))
        .with_context(|| format!("storm {kind}: {}", String::from_utf8_lossy(&out.stderr)))?;
    let session = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.strip_prefix("agentd: session ")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .context("no session id")?;
    // Let the collector finish.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let text = fs::read(AUDIT_LOG)?;
    let new =
        String::from_utf8_lossy(&text[usize::try_from(before).unwrap_or(0).min(text.len())..])
            .into_owned();
    let (mut recorded, mut lost) = (0u64, 0u64);
    for line in new.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let k = v["kind"].as_str().unwrap_or("");
        if k == "lost" {
            lost += v["count"].as_u64().unwrap_or(0);
        } else if v["session"].as_str() == Some(session.as_str())
            && (k == "file" || k == "exec" || k == "fork" || k == "exit")
        {
            recorded += 1;
        }
    }
    let produced = n * per_iteration;
    Ok(Storm {
        produced,
        recorded,
        lost,
        rate: produced as f64 / (elapsed_ns / 1e9),
    })
}

fn render_network(tcp: (f64, f64), unix: (f64, f64), events: &EventFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Per-connect cost (20 000 connects per run: median connect of the median run of 5)\n"
    );
    let _ = writeln!(s, "| connect | where | per connect | added | ratio |");
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: |");
    for (what, (bare, confined), how) in [
        (
            "loopback TCP",
            tcp,
            "in a session (the gate lets it continue; eBPF egress check)",
        ),
        (
            "unix, own socket in {tmp}",
            unix,
            "in a session (the gate hands it to the broker, which checks and connects)",
        ),
    ] {
        let _ = writeln!(s, "| {what} | bare | {bare:.0} ns | | |");
        let _ = writeln!(
            s,
            "| {what} | {how} | {confined:.0} ns | {:+.0} ns | {:.2}× |",
            confined - bare,
            confined / bare
        );
    }
    let _ = writeln!(
        s,
        "\nTarget: ≤ 2 µs added per connect. Every connect of a session passes the seccomp \
         gate (a round trip to the supervisor); unix connects also take one to the broker.\n"
    );
    let _ = writeln!(s, "## Event pipeline\n");
    let _ = writeln!(s, "| workload | events produced | rate | recorded | lost |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    for (name, st) in [
        (
            "exec storm (fork + exec + exit of /usr/bin/true)",
            &events.exec,
        ),
        ("opens paced at 50 000/s (file_events = all)", &events.paced),
        (
            "opens as fast as possible (file_events = all)",
            &events.open,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.0}/s | {} | {} |",
            st.produced, st.rate, st.recorded, st.lost
        );
    }
    let _ = writeln!(
        s,
        "\nTargets: 0 lost at 50k events/s; ≥ 200k events/s before loss; loss always reported (`lost` records)."
    );
    s
}

/// Runs of each resolver measurement.
const RESOLVER_RUNS: usize = 5;

/// The median of some runs' figures, and their range.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

impl Spread {
    fn of(v: Vec<f64>) -> Self {
        let low = v.iter().copied().fold(f64::INFINITY, f64::min);
        let high = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self {
            median: median(v),
            low,
            high,
        }
    }

    /// "median (low–high)" in µs, from ns.
    fn micros(&self) -> String {
        format!(
            "{:.1} µs ({:.0}–{:.0})",
            self.median / 1000.0,
            self.low / 1000.0,
            self.high / 1000.0
        )
    }
}

/// Per-query medians (ns) and sequential throughput of DNS, over
/// [`RESOLVER_RUNS`] runs.
struct ResolverFigures {
    bare_ns: Spread,
    cached_ns: Spread,
    uncached_ns: Spread,
    bare_uncached_ns: Spread,
    cached_qps: Spread,
}

fn dns_loop(cmd: &mut Command) -> Result<(f64, f64)> {
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (value(&text, "median_ns"), value(&text, "qps")) {
        (Some(m), Some(q)) => Ok((m, q)),
        _ => bail!("dns-loop: {text} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// DNS in a namespace whose upstream is the probe's test server on
/// 127.0.0.2: straight to it (bare), and from a session, where every query
/// goes to the session's resolver (cached: one name again and again;
/// uncached: a new name each time, forwarded upstream, whose answer is an
/// address of its own that the resolver opens in the kernel).
fn resolver_figures(
    agentd: &Path,
    probe: &Path,
    dir: &Path,
    release: &Path,
    ws: &Path,
) -> Result<ResolverFigures> {
    let netns = Netns::create()?;
    let log = dir.join("dns.log");
    let mut upstream = Command::new(probe)
        .args(["--netns", &netns.0, "serve-dns", "127.0.0.2"])
        .arg(&log)
        .arg("cached.bench.test=203.0.113.10@300")
        .arg("*.fresh.bench.test=198.18.0.0/15@300")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(upstream.stdout.take().context("upstream stdout")?).read_line(&mut ready)?;
    let policy = write_policy(
        dir,
        "dns.toml",
        release,
        "[network]\nallow = [\"*.bench.test:443\"]\n",
    )?;
    let bare = |n: &str, name: &str| {
        let mut c = Command::new(probe);
        c.args(["--netns", &netns.0, "dns-loop", n, "127.0.0.2", name, "A"]);
        dns_loop(&mut c)
    };
    let session = |n: &str, name: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", netns.0))
            .arg("--")
            .arg(agentd)
            .args(["run", "--policy"])
            .arg(&policy)
            .arg("--workspace")
            .arg(ws)
            .args(["--no-tty", "--"])
            .arg(probe)
            .args(["dns-loop", n, "127.0.0.2", name, "A"])
            .env("AGENTD_DNS_UPSTREAM", "127.0.0.2")
            .env("AGENTD_SOCKET", dir.join("no-daemon.sock"));
        dns_loop(&mut c)
    };
    // Runs alternate between bare and session so drift on the host hits
    // both alike; uncached names are new in every run.
    let mut runs: [Vec<f64>; 5] = Default::default();
    for run in 0..RESOLVER_RUNS {
        let fresh = format!("r{run}u{{i}}.fresh.bench.test");
        let fresh_session = format!("s{run}u{{i}}.fresh.bench.test");
        runs[0].push(bare("5000", "cached.bench.test")?.0);
        let (cached, qps) = session("5000", "cached.bench.test")?;
        runs[1].push(cached);
        runs[2].push(qps);
        runs[3].push(bare("1000", &fresh)?.0);
        runs[4].push(session("1000", &fresh_session)?.0);
    }
    let _ = upstream.kill();
    let _ = upstream.wait();
    let [
        bare_ns,
        cached_ns,
        cached_qps,
        bare_uncached_ns,
        uncached_ns,
    ] = runs.map(Spread::of);
    Ok(ResolverFigures {
        bare_ns,
        cached_ns,
        uncached_ns,
        bare_uncached_ns,
        cached_qps,
    })
}

fn render_resolver(r: &ResolverFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Session resolver (UDP queries one at a time; median query of each run, median of {RESOLVER_RUNS} runs with their range; upstream: a test server on the namespace's loopback)\n"
    );
    let _ = writeln!(
        s,
        "| query | straight to the upstream | through the session's resolver | added |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
    for (what, bare, session) in [
        (
            "same allowed name (cached after the first)",
            &r.bare_ns,
            &r.cached_ns,
        ),
        (
            "a new allowed name each time (forwarded; its new address opened)",
            &r.bare_uncached_ns,
            &r.uncached_ns,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {:+.1} µs |",
            bare.micros(),
            session.micros(),
            (session.median - bare.median) / 1000.0
        );
    }
    let _ = writeln!(
        s,
        "\nOne client asking one query at a time gets {:.0} answers/s from the cache ({:.0}–{:.0}).",
        r.cached_qps.median, r.cached_qps.low, r.cached_qps.high
    );
    s
}

/// A daemon for the benchmarks on its own socket, stopped on drop.
struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(agentd: &Path, dir: &Path) -> Result<Self> {
        let socket = dir.join("agentd.sock");
        let config = dir.join("agentd.toml");
        fs::write(&config, "")?;
        let child = Command::new(agentd)
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .env("AGENTD_SOCKET", &socket)
            .env("AGENTD_LOG", "warn")
            .spawn()?;
        let d = Self { child, socket };
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                return Ok(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        bail!("the daemon did not come up")
    }

    /// Resident memory, KiB.
    fn rss_kb(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

struct DaemonFigures {
    launch: Vec<Timing>,
    embedded_ms: f64,
    kill_ms: f64,
    rss_start_kb: u64,
    rss_idle_kb: u64,
}

fn render_daemon(d: &DaemonFigures) -> String {
    let mut s = String::new();
    let bare = d.launch.first().map_or(f64::NAN, |t| t.median_ms);
    let via = d.launch.get(1).map_or(f64::NAN, |t| t.median_ms);
    let _ = writeln!(
        s,
        "\n## Through the daemon (hyperfine, 200 runs; kill median of 5)\n"
    );
    let _ = writeln!(s, "| figure | value |");
    let _ = writeln!(s, "| --- | ---: |");
    let _ = writeln!(s, "| bare `/bin/true` | {bare:.2} ms |");
    let _ = writeln!(
        s,
        "| `agentd run` via the daemon | {via:.2} ms ({:+.2} ms vs bare) |",
        via - bare
    );
    let _ = writeln!(
        s,
        "| `agentd run` embedded (above) | {:.2} ms |",
        d.embedded_ms
    );
    let _ = writeln!(
        s,
        "| kill of a 1000-process tree via the daemon | {:.1} ms |",
        d.kill_ms
    );
    let _ = writeln!(
        s,
        "| daemon RSS at start / idle after the runs above | {:.1} MB / {:.1} MB |",
        d.rss_start_kb as f64 / 1024.0,
        d.rss_idle_kb as f64 / 1024.0
    );
    let _ = writeln!(
        s,
        "\nTargets: via the daemon ≤ bare + 4 ms median; daemon idle RSS ≤ 20 MB; kill ≤ 100 ms."
    );
    s
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn host() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}, Linux {}, {cpus} CPUs", kernel.trim())
}

fn render(
    launch: &[Timing],
    phases: &[(String, f64)],
    bare_ns: f64,
    confined_ns: f64,
    kill_ms: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Measured by `cargo xtask bench` ({}), release build, as root.\n",
        host()
    );
    let _ = writeln!(
        s,
        "## Launch: `/bin/true` (hyperfine, 200 runs, 10 warm-up)\n"
    );
    let _ = writeln!(
        s,
        "| command | median | mean ± σ | vs bare | vs agentd (no limits) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    let bare = launch.first().map_or(f64::NAN, |t| t.median_ms);
    let ours = launch.get(1).map_or(f64::NAN, |t| t.median_ms);
    for t in launch {
        let _ = writeln!(
            s,
            "| {} | {:.2} ms | {:.2} ± {:.2} ms | +{:.2} ms | {:.2}× |",
            t.name,
            t.median_ms,
            t.mean_ms,
            t.stddev_ms,
            t.median_ms - bare,
            t.median_ms / ours
        );
    }
    let _ = writeln!(
        s,
        "\nTargets (SPEC.md): agentd ≤ bare + 2 ms median, and ≥ 3× faster than bwrap --unshare-all.\n"
    );
    let _ = writeln!(
        s,
        "Where `agentd run` spends its time (medians of 30 runs, `AGENTD_LOG=agentd=debug`):\n"
    );
    let _ = writeln!(s, "| phase | median |");
    let _ = writeln!(s, "| --- | ---: |");
    for (phase, ms) in phases {
        let _ = writeln!(s, "| {phase} | {ms:.2} ms |");
    }
    let _ = writeln!(
        s,
        "| sum (the rest is process start-up and exit) | {:.2} ms |\n",
        phases.iter().map(|(_, m)| m).sum::<f64>()
    );
    let _ = writeln!(
        s,
        "## Syscall-heavy workload (stat + open + read + close, 200 000 iterations, median of 5)\n"
    );
    let _ = writeln!(s, "| where | per iteration | vs bare |");
    let _ = writeln!(s, "| --- | ---: | ---: |");
    let _ = writeln!(s, "| bare | {bare_ns:.0} ns | 1.00× |");
    let _ = writeln!(
        s,
        "| in a session (Landlock + seccomp) | {confined_ns:.0} ns | {:.2}× ({:+.1}%) |",
        confined_ns / bare_ns,
        (confined_ns / bare_ns - 1.0) * 100.0
    );
    let _ = writeln!(s, "\nTarget: ≤ 10% slower than bare.\n");
    let _ = writeln!(
        s,
        "## Kill of a 1000-process tree (`agentd kill`, median of 5)\n"
    );
    let _ = writeln!(
        s,
        "From the request until no process of the session is left: {kill_ms:.1} ms (target ≤ 100 ms)."
    );
    s
}

/// Median time of each setup stage, from the session's debug log.
fn stage_times(agentd: &Path, ws: &Path, minimal: &Path) -> Result<Vec<(String, f64)>> {
    let mut phases: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..30 {
        let out = Command::new(agentd)
            .current_dir(ws)
            .args(["run", "--policy"])
            .arg(minimal)
            .args(["--no-tty", "--", "/bin/true"])
            .env("AGENTD_LOG", "agentd=debug")
            .env("NO_COLOR", "1")
            .output()?;
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let (Some(phase), Some(micros)) = (
                line.split("stage=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next()),
                line.split("micros=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|m| m.parse::<f64>().ok()),
            ) else {
                continue;
            };
            match phases.iter_mut().find(|(p, _)| p == phase) {
                Some((_, v)) => v.push(micros / 1000.0),
                None => phases.push((phase.to_owned(), vec![micros / 1000.0])),
            }
        }
    }
    let phases: Vec<(String, f64)> = phases.into_iter().map(|(p, v)| (p, median(v))).collect();
    Ok(phases)
}

/// ns per stat+open+read+close iteration, bare and in a session.
fn stat_loop(agentd: &Path, probe: &Path, ws: &Path, minimal: &Path) -> Result<(f64, f64)> {
    let target = ws.join("target.txt");
    fs::write(&target, "benchmark")?;
    let t = target.display().to_string();
    probe_loop(agentd, probe, ws, minimal, &["stat-loop", "200000", &t])
}

/// ns per creating open (`open(O_CREAT|O_TRUNC)` + close), bare and in a
/// session.
fn create_loop(agentd: &Path, probe: &Path, ws: &Path, minimal: &Path) -> Result<(f64, f64)> {
    let dir = ws.join("create");
    fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    probe_loop(agentd, probe, ws, minimal, &["create-loop", "20000", &d])
}

/// The median `ns_per_iteration` of 5 runs of the probe with `action`,
/// bare and in a session under `policy`.
fn probe_loop(
    agentd: &Path,
    probe: &Path,
    ws: &Path,
    policy: &Path,
    action: &[&str],
) -> Result<(f64, f64)> {
    let (mut bare, mut confined) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let out = Command::new(probe).args(action).output()?;
        bare.push(
            value(&String::from_utf8_lossy(&out.stdout), "ns_per_iteration")
                .with_context(|| format!("bare {}", action[0]))?,
        );
        let out = probe_in_session(agentd, policy, ws, probe, action)?;
        confined.push(ns_per_iteration(&out, &format!("confined {}", action[0]))?);
    }
    Ok((median(bare), median(confined)))
}

/// The probe with `action`, in a session under `policy` on `ws`.
fn probe_in_session(
    agentd: &Path,
    policy: &Path,
    ws: &Path,
    probe: &Path,
    action: &[&str],
) -> std::io::Result<std::process::Output> {
    Command::new(agentd)
        .args(["run", "--policy"])
        .arg(policy)
        .arg("--workspace")
        .arg(ws)
        .args(["--no-tty", "--"])
        .arg(probe)
        .args(action)
        .output()
}

/// µs per fork + exec + wait of `/usr/bin/true`: bare, in a session with an
/// exec allowlist, and in one whose argument rules put it behind the exec
/// gate (medians of 5 runs).
fn exec_gate_loop(
    agentd: &Path,
    probe: &Path,
    dir: &Path,
    release: &Path,
    ws: &Path,
) -> Result<[f64; 3]> {
    let p = probe.display();
    let plain = write_policy(
        dir,
        "exec-plain.toml",
        release,
        &format!("[exec]\nallow = [\"{p}\", \"/usr/bin/true\"]\n"),
    )?;
    let gated = write_policy(
        dir,
        "exec-gated.toml",
        release,
        &format!("[exec]\nallow = [\"{p}\", \"/usr/bin/true\", \"/usr/bin/echo safe*\"]\n"),
    )?;
    let n = 2000.0;
    let per_exec = |out: &std::process::Output, what: &str| -> Result<f64> {
        value(&String::from_utf8_lossy(&out.stdout), "elapsed_ns")
            .map(|ns| ns / n / 1000.0)
            .with_context(|| format!("{what}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let action = ["exec-storm", "2000", "/usr/bin/true"];
    let mut runs: [Vec<f64>; 3] = Default::default();
    for _ in 0..5 {
        let out = Command::new(probe).args(action).output()?;
        runs[0].push(per_exec(&out, "bare exec-storm")?);
        for (i, policy) in [(1, &plain), (2, &gated)] {
            let out = probe_in_session(agentd, policy, ws, probe, &action)?;
            runs[i].push(per_exec(&out, "confined exec-storm")?);
        }
    }
    Ok(runs.map(median))
}

fn render_exec_gate([bare, plain, gated]: [f64; 3]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Exec gate (2 000 fork + exec + wait of `/usr/bin/true` per run, median of 5)\n"
    );
    let _ = writeln!(s, "| where | per exec | added | ratio |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
    let _ = writeln!(s, "| bare | {bare:.1} µs | | |");
    for (what, t) in [
        ("in a session with an exec allowlist (no gate)", plain),
        (
            "in a session with argument rules (every exec held, decided, token checked at exec)",
            gated,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {t:.1} µs | {:+.1} µs | {:.2}× |",
            t - bare,
            t / bare
        );
    }
    let _ = writeln!(
        s,
        "\nThe gate's own cost is the difference between the two session rows \
         ({:+.1} µs per exec; target ≤ 50 µs).\n",
        gated - plain
    );
    s
}

fn render_create((bare, confined): (f64, f64)) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Creating calls (20 000 `open(O_CREAT|O_TRUNC)` + close per run, median of 5)\n"
    );
    let _ = writeln!(s, "| where | per open | opens/s | added | ratio |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    let _ = writeln!(s, "| bare | {bare:.0} ns | {:.0} | | |", 1e9 / bare);
    let _ = writeln!(
        s,
        "| in a session (the gate holds it, the broker checks the protected names and creates) | {confined:.0} ns | {:.0} | {:+.0} ns | {:.2}× |",
        1e9 / confined,
        confined - bare,
        confined / bare
    );
    let _ = writeln!(
        s,
        "\nOnly creating calls pay this (`open`/`openat` with O_CREAT, `creat`, `mkdir`, `mknod`, \
         `rename`, `link`, `symlink`): the filter compares the flags in a register, so other \
         opens never leave the kernel (the stat + open loop above).\n"
    );
    s
}

/// ns per unix socket connect to a listener of the process's own, bare and
/// in a session (where the socket is under the session's `{tmp}`).
fn unix_connect_loop(
    agentd: &Path,
    probe: &Path,
    dir: &Path,
    release: &Path,
    ws: &Path,
) -> Result<(f64, f64)> {
    // Listening needs a bind rule.
    let policy = write_policy(
        dir,
        "unix-connect.toml",
        release,
        "[network]\nbind = [\"127.0.0.1:7999\"]\n",
    )?;
    let connects = "20000";
    let (mut bare, mut confined) = (Vec::new(), Vec::new());
    let bare_sock = dir.join("bare.sock");
    for _ in 0..5 {
        let out = Command::new(probe)
            .args(["unix-connect-loop", connects])
            .arg(&bare_sock)
            .output()?;
        bare.push(
            value(&String::from_utf8_lossy(&out.stdout), "ns_per_iteration")
                .context("bare unix-connect-loop")?,
        );
        let script = format!(
            "exec {} unix-connect-loop {connects} \"$TMPDIR/b.sock\"",
            probe.display()
        );
        let out = Command::new(agentd)
            .args(["run", "--policy"])
            .arg(&policy)
            .arg("--workspace")
            .arg(ws)
            .args(["--no-tty", "--", "/bin/sh", "-c", &script])
            .output()?;
        confined.push(ns_per_iteration(&out, "confined unix-connect-loop")?);
    }
    Ok((median(bare), median(confined)))
}

/// ns per loopback connect, bare and in a session (in a network namespace).
fn connect_loop(
    agentd: &Path,
    probe: &Path,
    dir: &Path,
    release: &Path,
    ws: &Path,
) -> Result<(f64, f64)> {
    let netns = Netns::create()?;
    let mut server = Command::new(probe)
        .args(["--netns", &netns.0, "serve-tcp", "127.0.0.1", "7001"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut ready)?;
    let connect_policy = write_policy(
        dir,
        "connect.toml",
        release,
        "[network]\nallow = [\"127.0.0.1:7001/tcp\"]\n",
    )?;
    let connects = "20000";
    let mut bare_connect = Vec::new();
    let mut confined_connect = Vec::new();
    for _ in 0..5 {
        let out = Command::new(probe)
            .args([
                "--netns",
                &netns.0,
                "connect-loop",
                connects,
                "127.0.0.1",
                "7001",
            ])
            .output()?;
        bare_connect.push(
            value(&String::from_utf8_lossy(&out.stdout), "ns_per_iteration")
                .context("bare connect-loop")?,
        );
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", netns.0))
            .arg("--")
            .arg(agentd)
            .args(["run", "--policy"])
            .arg(&connect_policy)
            .arg("--workspace")
            .arg(ws)
            .args(["--no-tty", "--"])
            .arg(probe)
            .args(["connect-loop", connects, "127.0.0.1", "7001"])
            .output()?;
        confined_connect.push(ns_per_iteration(&out, "confined connect-loop")?);
    }
    let _ = server.kill();
    let _ = server.wait();
    drop(netns);
    Ok((median(bare_connect), median(confined_connect)))
}
