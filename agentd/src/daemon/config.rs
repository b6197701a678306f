//! `/etc/agentd/agentd.toml`: who may do what through the daemon, and where
//! it keeps things. Unknown keys are errors, reported as `file:line:col`
//! like policy errors. A missing file means the defaults.
use std::{
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    identity,
    policy::{ByteSize, Diagnostic, validate::syntax_diagnostic},
};

/// The default config file.
pub const DEFAULT_PATH: &str = crate::paths::CONFIG;

/// What the daemon does with live sessions when asked to stop (SIGTERM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStop {
    /// Kill every session a daemon started (the default: nothing runs
    /// unsupervised). Embedded sessions have their own supervisor.
    Kill,
    /// Leave them running, still enforced, for the next daemon to adopt
    /// (an upgrade or restart).
    Leave,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    run_group: Option<Spanned<String>>,
    admin_group: Option<Spanned<String>>,
    uid_range: Option<Spanned<[u32; 2]>>,
    policy_dir: Option<Spanned<String>>,
    policies_from_dir_only: Option<bool>,
    on_stop: Option<OnStop>,
    metrics_listen: Option<Spanned<String>>,
    audit: Option<RawAudit>,
    dns: Option<RawDns>,
    caller_limits: Option<RawCallerLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallerLimits {
    max_processes: Option<Spanned<u32>>,
    memory: Option<Spanned<String>>,
    cpu: Option<Spanned<String>>,
    max_duration: Option<Spanned<String>>,
    open_files: Option<Spanned<u64>>,
}

/// `[caller_limits]`: for sessions of callers other than root, each limit
/// is the default when the policy has none and the ceiling when it asks
/// for more. Such sessions also never run degraded: every limit must be
/// enforceable on the host (a v1 controller on hybrid hosts will do).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CallerLimits {
    /// Processes (pids.max).
    pub max_processes: u32,
    /// Memory, bytes.
    pub memory: u64,
    /// CPU, percent of one CPU; `None`: no ceiling.
    pub cpu_percent: Option<u32>,
    /// Wall-clock seconds.
    pub max_duration_secs: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

impl Default for CallerLimits {
    fn default() -> Self {
        Self {
            max_processes: 1024,
            memory: 8 << 30,
            cpu_percent: None,
            max_duration_secs: 24 * 3600,
            open_files: 8192,
        }
    }
}

impl CallerLimits {
    /// `limits` within these: missing ones set, larger ones lowered.
    pub fn apply(&self, limits: &mut crate::policy::Limits) {
        use crate::policy::{ByteSize, CpuQuota, WallDuration};
        limits.present = true;
        let at_most = |have: Option<u64>, ceiling: u64| have.map_or(ceiling, |h| h.min(ceiling));
        limits.max_processes = Some(
            limits
                .max_processes
                .map_or(self.max_processes, |n| n.min(self.max_processes)),
        );
        limits.memory = Some(ByteSize(at_most(limits.memory.map(|m| m.0), self.memory)));
        if let Some(ceiling) = self.cpu_percent {
            let percent = limits.cpu.map_or(ceiling, |c| c.percent.min(ceiling));
            limits.cpu = Some(CpuQuota { percent });
        }
        let secs = at_most(
            limits.max_duration.map(|d| d.0.as_secs()),
            self.max_duration_secs,
        );
        limits.max_duration = Some(WallDuration(std::time::Duration::from_secs(secs)));
        limits.open_files = Some(at_most(limits.open_files, self.open_files));
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    upstream: Option<Vec<Spanned<String>>>,
    min_ttl: Option<Spanned<String>>,
    max_ttl: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    log: Option<Spanned<String>>,
    rotate_size: Option<Spanned<String>>,
    keep: Option<Spanned<u32>>,
}

/// Where metrics are served besides `agentd metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address on loopback.
    Tcp(std::net::SocketAddr),
}

/// The daemon's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Members may run sessions (and see and kill their own).
    pub run_group: String,
    /// Members may kill any session, disable and enable agents, read every
    /// record.
    pub admin_group: String,
    /// Dynamic session UIDs.
    pub uid_range: RangeInclusive<u32>,
    /// Trusted policies.
    pub policy_dir: PathBuf,
    /// Non-root callers may only use policies from `policy_dir`.
    pub policies_from_dir_only: bool,
    /// SIGTERM behaviour.
    pub on_stop: OnStop,
    /// Extra metrics listener.
    pub metrics_listen: Option<MetricsListen>,
    /// The audit trail.
    pub audit_log: PathBuf,
    /// Rotate the trail when it grows past this many bytes (0: never).
    pub rotate_size: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Sessions' resolvers: upstream (empty: the host's resolv.conf when
    /// the daemon starts) and TTL clamps.
    pub dns: crate::dns::Settings,
    /// Limits of sessions of callers other than root.
    pub caller_limits: CallerLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            run_group: "agentd".into(),
            admin_group: "agentd-admin".into(),
            uid_range: identity::DEFAULT_RANGE,
            policy_dir: crate::paths::POLICY_DIR.into(),
            policies_from_dir_only: false,
            on_stop: OnStop::Kill,
            metrics_listen: None,
            audit_log: crate::audit::DEFAULT_PATH.into(),
            rotate_size: 256 << 20,
            keep: 10,
            dns: crate::dns::Settings::default(),
            caller_limits: CallerLimits::default(),
        }
    }
}

/// A config file that could not be used.
#[derive(Debug)]
pub struct Invalid {
    /// The file's text.
    pub source: String,
    /// What is wrong.
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    /// Every finding, rendered against the file.
    pub fn render(&self, file: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(file, &self.source))
            .collect()
    }
}

fn absolute(v: &Spanned<String>, what: &str, out: &mut Vec<Diagnostic>) -> Option<PathBuf> {
    let p = Path::new(v.get_ref());
    if p.is_absolute() {
        Some(p.to_path_buf())
    } else {
        out.push(
            Diagnostic::error(v.span(), format!("{what} must be an absolute path"))
                .with_hint(format!("write /{}", v.get_ref().trim_start_matches("./"))),
        );
        None
    }
}

fn group_name(v: &Spanned<String>, out: &mut Vec<Diagnostic>) -> Option<String> {
    let s = v.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Some(s.clone())
    } else {
        out.push(
            Diagnostic::error(v.span(), format!("{s:?} is not a group name"))
                .with_hint("letters, digits, '-', '_' and '.', at most 32"),
        );
        None
    }
}

fn metrics_listen(v: &Spanned<String>, out: &mut Vec<Diagnostic>) -> Option<MetricsListen> {
    let s = v.get_ref();
    if let Some(path) = s.strip_prefix("unix:") {
        return absolute(
            &Spanned::new(v.span(), path.to_owned()),
            "a metrics socket",
            out,
        )
        .map(MetricsListen::Unix);
    }
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Some(MetricsListen::Tcp(a)),
        Ok(_) => {
            out.push(
                Diagnostic::error(v.span(), "metrics are served on loopback only")
                    .with_hint("use 127.0.0.1:PORT or [::1]:PORT, or unix:/path"),
            );
            None
        }
        Err(_) => {
            out.push(
                Diagnostic::error(v.span(), format!("{s:?} is not an address"))
                    .with_hint("write 127.0.0.1:9464 or unix:/run/agentd/metrics.sock"),
            );
            None
        }
    }
}

fn seconds(v: &Spanned<String>, out: &mut Vec<Diagnostic>) -> Option<u64> {
    match crate::policy::WallDuration::parse(v.get_ref()) {
        Ok(d) => Some(d.0.as_secs()),
        Err(e) => {
            let mut d = Diagnostic::error(v.span(), e.message);
            d.hint = e.hint;
            out.push(d);
            None
        }
    }
}

fn dns(raw: &RawDns, settings: &mut crate::dns::Settings, out: &mut Vec<Diagnostic>) {
    if let Some(list) = &raw.upstream {
        settings.upstream = list
            .iter()
            .filter_map(|a| match a.get_ref().parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    out.push(
                        Diagnostic::error(
                            a.span(),
                            format!("{:?} is not an IP address", a.get_ref()),
                        )
                        .with_hint("upstream resolvers are addresses (port 53), e.g. \"10.0.0.2\""),
                    );
                    None
                }
            })
            .collect();
    }
    for (value, field) in [
        (&raw.min_ttl, &mut settings.min_ttl),
        (&raw.max_ttl, &mut settings.max_ttl),
        (&raw.grace, &mut settings.grace),
    ] {
        if let Some(v) = value
            && let Some(secs) = seconds(v, out)
        {
            *field = secs;
        }
    }
    if settings.max_ttl < settings.min_ttl {
        out.push(
            Diagnostic::error(None, "[dns] max_ttl is shorter than min_ttl")
                .with_hint("max_ttl must be at least min_ttl"),
        );
    }
}

fn caller_limits(raw: &RawCallerLimits, limits: &mut CallerLimits, out: &mut Vec<Diagnostic>) {
    use crate::policy::{CpuQuota, WallDuration};
    fn parsed<T>(
        v: &Spanned<String>,
        parse: impl Fn(&str) -> Result<T, crate::policy::Invalid>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        parse(v.get_ref())
            .map_err(|e| {
                let mut d = Diagnostic::error(v.span(), e.message);
                d.hint = e.hint;
                out.push(d);
            })
            .ok()
    }
    let positive = |v: &Spanned<u64>, what: &str, out: &mut Vec<Diagnostic>| {
        if *v.get_ref() == 0 {
            out.push(Diagnostic::error(
                v.span(),
                format!("[caller_limits] {what} must be above 0"),
            ));
            None
        } else {
            Some(*v.get_ref())
        }
    };
    if let Some(n) = &raw.max_processes {
        let as_u64 = Spanned::new(n.span(), u64::from(*n.get_ref()));
        if let Some(n) = positive(&as_u64, "max_processes", out) {
            limits.max_processes = u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
    if let Some(n) = &raw.open_files
        && let Some(n) = positive(n, "open_files", out)
    {
        limits.open_files = n;
    }
    if let Some(m) = &raw.memory
        && let Some(m) = parsed(m, ByteSize::parse, out)
    {
        limits.memory = m.0;
    }
    if let Some(c) = &raw.cpu
        && let Some(c) = parsed(c, CpuQuota::parse, out)
    {
        limits.cpu_percent = Some(c.percent);
    }
    if let Some(d) = &raw.max_duration
        && let Some(d) = parsed(d, WallDuration::parse, out)
    {
        limits.max_duration_secs = d.0.as_secs().max(1);
    }
}

/// Parses a config file's text.
pub fn parse(source: &str) -> Result<Config, Invalid> {
    let invalid = |diagnostics| Invalid {
        source: source.to_owned(),
        diagnostics,
    };
    let raw: Raw =
        toml::from_str(source).map_err(|e| invalid(vec![syntax_diagnostic(source, &e)]))?;
    let mut out = Vec::new();
    let mut config = Config::default();
    if let Some(g) = &raw.run_group
        && let Some(g) = group_name(g, &mut out)
    {
        config.run_group = g;
    }
    if let Some(g) = &raw.admin_group
        && let Some(g) = group_name(g, &mut out)
    {
        config.admin_group = g;
    }
    if let Some(r) = &raw.uid_range {
        let [lo, hi] = *r.get_ref();
        if lo < 1000 || hi < lo || hi >= 0x7fff_ffff {
            out.push(
                Diagnostic::error(r.span(), format!("uid_range [{lo}, {hi}] is not usable"))
                    .with_hint("give [first, last] above the system and user ranges, e.g. [61184, 65519] (systemd's DynamicUser range)"),
            );
        } else {
            config.uid_range = lo..=hi;
        }
    }
    if let Some(d) = &raw.policy_dir
        && let Some(d) = absolute(d, "policy_dir", &mut out)
    {
        config.policy_dir = d;
    }
    if let Some(b) = raw.policies_from_dir_only {
        config.policies_from_dir_only = b;
    }
    if let Some(s) = raw.on_stop {
        config.on_stop = s;
    }
    if let Some(m) = &raw.metrics_listen {
        config.metrics_listen = metrics_listen(m, &mut out);
    }
    if let Some(a) = &raw.audit {
        if let Some(l) = &a.log
            && let Some(l) = absolute(l, "the audit log", &mut out)
        {
            config.audit_log = l;
        }
        if let Some(s) = &a.rotate_size {
            match ByteSize::parse(s.get_ref()) {
                Ok(b) => config.rotate_size = b.0,
                Err(e) => {
                    let mut d = Diagnostic::error(s.span(), e.message);
                    d.hint = e.hint;
                    out.push(d);
                }
            }
        }
        if let Some(k) = &a.keep {
            config.keep = *k.get_ref();
        }
    }
    if let Some(d) = &raw.dns {
        dns(d, &mut config.dns, &mut out);
    }
    if let Some(l) = &raw.caller_limits {
        caller_limits(l, &mut config.caller_limits, &mut out);
    }
    if out.is_empty() {
        Ok(config)
    } else {
        Err(invalid(out))
    }
}

/// Reads `path`; a missing file is the defaults (`Ok(None)` source).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8)?;
            parse(&text).map_err(LoadError::Invalid)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) => {
            Ok(Config::default())
        }
        Err(e) => Err(LoadError::Io(e)),
    }
}

/// Why the config could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Reading failed.
    Io(std::io::Error),
    /// Not UTF-8.
    NotUtf8,
    /// Parsed with errors.
    Invalid(Invalid),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_key() {
        assert_eq!(parse("").unwrap(), Config::default());
        let c = parse(
            r#"
run_group = "agents"
admin_group = "secops"
uid_range = [70000, 70999]
policy_dir = "/srv/policies"
policies_from_dir_only = true
on_stop = "leave"
metrics_listen = "127.0.0.1:9464"

[audit]
log = "/srv/audit/audit.jsonl"
rotate_size = "64M"
keep = 3
"#,
        )
        .unwrap();
        assert_eq!(c.run_group, "agents");
        assert_eq!(c.uid_range, 70000..=70999);
        assert_eq!(c.on_stop, OnStop::Leave);
        assert_eq!(c.rotate_size, 64 << 20);
        assert_eq!(
            c.metrics_listen,
            Some(MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
    }

    #[test]
    fn errors_are_located_with_hints() {
        let src = "run_group = \"agentd\"\nrun_grup = \"x\"\n";
        let e = parse(src).unwrap_err();
        let text = e.render("agentd.toml");
        assert!(
            text.starts_with("agentd.toml:2:1: error: unknown key `run_grup`"),
            "{text}"
        );
        assert!(text.contains("did you mean `run_group`?"), "{text}");

        let e = parse("uid_range = [0, 10]\npolicy_dir = \"policies\"\nmetrics_listen = \"0.0.0.0:9000\"\n[audit]\nrotate_size = \"lots\"\n").unwrap_err();
        let text = e.render("agentd.toml");
        for want in [
            "agentd.toml:1:13: error: uid_range [0, 10] is not usable",
            "agentd.toml:2:14: error: policy_dir must be an absolute path",
            "agentd.toml:3:18: error: metrics are served on loopback only",
            "agentd.toml:5:15: error:",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let e = parse("on_stop = \"explode\"\n").unwrap_err();
        assert!(
            e.render("c").contains("unknown value `explode`"),
            "{}",
            e.render("c")
        );
    }

    #[test]
    fn caller_limits_are_defaults_and_ceilings() {
        let c = parse(
            "[caller_limits]\nmax_processes = 300\nmemory = \"1G\"\ncpu = \"150%\"\n\
             max_duration = \"2h\"\nopen_files = 1000\n",
        )
        .unwrap();
        let l = &c.caller_limits;
        assert_eq!(
            (
                l.max_processes,
                l.memory,
                l.cpu_percent,
                l.max_duration_secs,
                l.open_files
            ),
            (300, 1 << 30, Some(150), 7200, 1000)
        );
        // A policy without limits gets them all.
        let mut none = crate::policy::Limits::default();
        l.apply(&mut none);
        assert_eq!(none.max_processes, Some(300));
        assert_eq!(none.open_files, Some(1000));
        assert_eq!(none.cpu.map(|c| c.percent), Some(150));
        // A policy asking for more is lowered; for less, kept.
        let mut policy = crate::policy::Limits {
            max_processes: Some(5000),
            open_files: Some(10),
            memory: Some(ByteSize(64 << 30)),
            ..crate::policy::Limits::default()
        };
        l.apply(&mut policy);
        assert_eq!(policy.max_processes, Some(300));
        assert_eq!(policy.open_files, Some(10));
        assert_eq!(policy.memory.map(|m| m.0), Some(1 << 30));
        assert_eq!(policy.max_duration.map(|d| d.0.as_secs()), Some(7200));
        assert!(parse("[caller_limits]\nopen_files = 0\n").is_err());
        assert!(parse("[caller_limits]\nmemory = \"lots\"\n").is_err());
        assert!(parse("[caller_limits]\nswap = 1\n").is_err());
    }
}
