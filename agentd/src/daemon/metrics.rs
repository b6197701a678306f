//! Prometheus text exposition: `agentd metrics`, and optionally a listener
//! on loopback or a unix socket (`metrics_listen`).
use std::{
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::config::MetricsListen;

/// The daemon's own counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions started through the daemon.
    pub sessions_started: AtomicU64,
    /// Requests refused (authorization or run vetting).
    pub refused: AtomicU64,
    /// Frames that could not be decoded.
    pub bad_requests: AtomicU64,
    /// Kills done through the daemon.
    pub kills: AtomicU64,
    /// Their total latency, µs.
    kill_us_sum: AtomicU64,
    /// Kill latencies, µs (for quantiles), the last 1024.
    kill_us: Mutex<Vec<u64>>,
}

impl Metrics {
    /// Records one kill's latency.
    pub fn kill(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.kills.fetch_add(1, Ordering::Relaxed);
        self.kill_us_sum.fetch_add(us, Ordering::Relaxed);
        if let Ok(mut v) = self.kill_us.lock() {
            if v.len() >= 1024 {
                v.remove(0);
            }
            v.push(us);
        }
    }

    /// The exposition: these counters, live sessions and the kernel
    /// programs' counters (events lost, denials by kind).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP agentd_{name} {help}");
            let _ = writeln!(out, "# TYPE agentd_{name} {kind}");
            let _ = writeln!(out, "agentd_{name} {value}");
        };
        let live = crate::session::state::list()
            .into_iter()
            .filter(Result::is_ok)
            .count();
        metric(
            "sessions",
            "gauge",
            "Live sessions.",
            u64::try_from(live).unwrap_or(u64::MAX),
        );
        metric(
            "sessions_started_total",
            "counter",
            "Sessions started through the daemon.",
            self.sessions_started.load(Ordering::Relaxed),
        );
        metric(
            "requests_refused_total",
            "counter",
            "Requests refused.",
            self.refused.load(Ordering::Relaxed),
        );
        metric(
            "requests_malformed_total",
            "counter",
            "Frames that could not be decoded.",
            self.bad_requests.load(Ordering::Relaxed),
        );
        metric(
            "kills_total",
            "counter",
            "Sessions killed through the daemon.",
            self.kills.load(Ordering::Relaxed),
        );
        if let Ok(mut v) = self.kill_us.lock().map(|v| v.clone()) {
            v.sort_unstable();
            let _ = writeln!(
                out,
                "# HELP agentd_kill_latency_microseconds From kill request to the last process gone (quantiles over the last {} kills).",
                v.len()
            );
            let _ = writeln!(out, "# TYPE agentd_kill_latency_microseconds summary");
            for q in [0.5, 0.99] {
                let at = ((v.len() as f64 - 1.0) * q).round() as usize;
                let _ = writeln!(
                    out,
                    "agentd_kill_latency_microseconds{{quantile=\"{q}\"}} {}",
                    v.get(at).copied().unwrap_or(0)
                );
            }
            let _ = writeln!(
                out,
                "agentd_kill_latency_microseconds_sum {}",
                self.kill_us_sum.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "agentd_kill_latency_microseconds_count {}",
                self.kills.load(Ordering::Relaxed)
            );
        }
        if let Ok(kernel) = crate::ebpf::Kernel::open_pinned()
            && let Ok(counters) = kernel.counters()
        {
            let _ = writeln!(
                out,
                "# HELP agentd_kernel_events_total Kernel-side counters: events lost, denials by kind."
            );
            let _ = writeln!(out, "# TYPE agentd_kernel_events_total counter");
            for (c, n) in counters {
                let _ = writeln!(
                    out,
                    "agentd_kernel_events_total{{kind=\"{}\"}} {n}",
                    c.name()
                );
            }
        }
        out
    }
}

/// Serves the exposition over HTTP on `listen`, in a thread.
pub fn serve(listen: MetricsListen, source: impl Fn() -> String + Send + Sync + 'static) {
    let respond = move |stream: &mut dyn ReadWrite| {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let body = source();
        let _ = write!(
            stream,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    };
    let _ = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || match listen {
            MetricsListen::Tcp(addr) => match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    for mut s in l.incoming().flatten() {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        respond(&mut s);
                    }
                }
                Err(e) => tracing::warn!(%addr, error = %e, "cannot serve metrics"),
            },
            MetricsListen::Unix(path) => {
                let _ = std::fs::remove_file(&path);
                match std::os::unix::net::UnixListener::bind(&path) {
                    Ok(l) => {
                        for mut s in l.incoming().flatten() {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                            respond(&mut s);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot serve metrics");
                    }
                }
            }
        });
}

/// A connection.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
