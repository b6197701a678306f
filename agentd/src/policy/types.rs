//! Typed policy values. Each parses from the text a policy author writes and
//! refuses anything ambiguous; later stages never re-parse strings.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use globset::{Glob, GlobBuilder, GlobMatcher};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Serialize, Serializer};

/// Why a value is not acceptable, and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Serializes a value through its `Display` form.
fn serialize_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

macro_rules! display_serialize {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_display(self, s)
            }
        }
    )*};
}

/// An agent's name: its identity on the host, used in cgroup and user names.
/// 1 to 32 characters of `a-z`, `0-9`, `-`, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 32;

    /// Parses and validates a name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts_with_letter = s.starts_with(|c: char| c.is_ascii_lowercase());
        if s.is_empty()
            || s.len() > Self::MAX_LEN
            || !ok_chars
            || !starts_with_letter
            || s.ends_with('-')
        {
            return Err(
                Invalid::new(format!("invalid agent name {s:?}")).hint(format!(
                    "use 1-{} characters of a-z, 0-9 and '-', starting with a letter (it names \
                 the agent's cgroup and user)",
                    Self::MAX_LEN
                )),
            );
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a policy path starts: the real root, or a per-session placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathBase {
    /// An absolute host path.
    Root,
    /// `{workspace}`: the `--workspace` directory (default: the caller's cwd).
    Workspace,
    /// `{tmp}`: a private per-session directory, removed when the session ends.
    Tmp,
    /// `{home}`: the session's home directory.
    Home,
}

impl PathBase {
    /// Every placeholder, as written in a policy.
    pub const PLACEHOLDERS: [(&'static str, Self); 3] = [
        ("workspace", Self::Workspace),
        ("tmp", Self::Tmp),
        ("home", Self::Home),
    ];

    fn placeholder(self) -> Option<&'static str> {
        Self::PLACEHOLDERS
            .iter()
            .find(|(_, b)| *b == self)
            .map(|(n, _)| *n)
    }
}

/// The directories placeholders stand for in one session.
#[derive(Clone, Debug)]
pub struct Placeholders {
    /// `{workspace}`.
    pub workspace: PathBuf,
    /// `{tmp}`.
    pub tmp: PathBuf,
    /// `{home}`.
    pub home: PathBuf,
}

/// Splits `{name}rest` into its base and the text after it.
fn split_base(s: &str) -> Result<(PathBase, &str), Invalid> {
    if let Some(inner) = s.strip_prefix('{') {
        let Some(end) = inner.find('}') else {
            return Err(Invalid::new(format!("unclosed placeholder in {s:?}")));
        };
        let name = &inner[..end];
        let rest = &inner[end + 1..];
        let Some((_, base)) = PathBase::PLACEHOLDERS.iter().find(|(n, _)| *n == name) else {
            let known = PathBase::PLACEHOLDERS
                .iter()
                .map(|(n, _)| format!("{{{n}}}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut err = Invalid::new(format!("unknown placeholder {{{name}}}"));
            err = match closest(name, PathBase::PLACEHOLDERS.iter().map(|(n, _)| *n)) {
                Some(best) => err.hint(format!("did you mean {{{best}}}? known: {known}")),
                None => err.hint(format!("known placeholders: {known}")),
            };
            return Err(err);
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(Invalid::new(format!(
                "expected '/' after {{{name}}} in {s:?}"
            )));
        }
        return Ok((*base, rest));
    }
    if s.starts_with('~') {
        return Err(Invalid::new(format!("relative path {s:?}"))
            .hint("'~' is not expanded; use {home} for the session's home or an absolute path"));
    }
    if !s.starts_with('/') {
        return Err(Invalid::new(format!("relative path {s:?}"))
            .hint("paths must be absolute or start with {workspace}, {tmp} or {home}"));
    }
    Ok((PathBase::Root, s))
}

/// Checks that `rest` (the part after the base, "" or "/a/b") is normalised.
fn check_normalised(whole: &str, rest: &str) -> Result<(), Invalid> {
    if whole.contains('\0') {
        return Err(Invalid::new("path contains a NUL byte"));
    }
    if rest.is_empty() || rest == "/" && whole == "/" {
        return Ok(());
    }
    let body = rest.strip_prefix('/').unwrap_or(rest);
    let bad = body
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        let normal = normalise_lexically(whole);
        return Err(
            Invalid::new(format!("path {whole:?} is not normalised")).hint(format!(
                "write {normal:?}: no '.', '..', '//' or trailing '/'"
            )),
        );
    }
    Ok(())
}

/// A best-effort lexical clean-up, only used to suggest a fix.
fn normalise_lexically(s: &str) -> String {
    let (prefix, body) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in body.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() && prefix.is_empty() {
        "/".to_owned()
    } else {
        format!("{prefix}/{}", parts.join("/"))
    }
}

/// A filesystem path in a policy: absolute, or under a placeholder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathTemplate {
    base: PathBase,
    /// "" or "/a/b": normalised, no glob.
    rest: String,
}

impl PathTemplate {
    /// Parses `/abs/path` or `{placeholder}/rel/path`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid::new("empty path"));
        }
        let (base, rest) = split_base(s)?;
        if rest.contains(['{', '}']) {
            return Err(Invalid::new(format!("misplaced placeholder in {s:?}"))
                .hint("a placeholder may only start a path, e.g. {workspace}/src"));
        }
        check_normalised(s, rest)?;
        let rest = if base == PathBase::Root && rest == "/" {
            ""
        } else {
            rest
        };
        Ok(Self {
            base,
            rest: rest.to_owned(),
        })
    }

    /// What the path is relative to.
    pub fn base(&self) -> PathBase {
        self.base
    }

    /// For absolute paths, the path itself.
    pub fn as_absolute(&self) -> Option<&Path> {
        (self.base == PathBase::Root).then(|| {
            if self.rest.is_empty() {
                Path::new("/")
            } else {
                Path::new(&self.rest)
            }
        })
    }

    /// The concrete path for one session.
    pub fn resolve(&self, p: &Placeholders) -> PathBuf {
        let base: &Path = match self.base {
            PathBase::Root => Path::new("/"),
            PathBase::Workspace => &p.workspace,
            PathBase::Tmp => &p.tmp,
            PathBase::Home => &p.home,
        };
        match self.rest.strip_prefix('/') {
            Some(rel) if !rel.is_empty() => base.join(rel),
            _ => base.to_path_buf(),
        }
    }

    /// Whether `self` is `other` or lies below it (same base, lexically).
    pub fn starts_with(&self, other: &Self) -> bool {
        self.base == other.base
            && (other.rest.is_empty()
                || self.rest == other.rest
                || self
                    .rest
                    .strip_prefix(&other.rest)
                    .is_some_and(|r| r.starts_with('/')))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.base.placeholder() {
            Some(name) => write!(f, "{{{name}}}{}", self.rest),
            None if self.rest.is_empty() => f.write_str("/"),
            None => f.write_str(&self.rest),
        }
    }
}

/// A path that must stay unchanged inside writable roots.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtectPath {
    /// A name relative to every writable root (`.envrc`, `.github/workflows`).
    AtEachRoot(String),
    /// One exact path, inside some writable root.
    Exact(PathTemplate),
}

impl ProtectPath {
    /// Parses a relative name (applied at every writable root) or a path.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.starts_with(['/', '{', '~']) {
            return PathTemplate::parse(s).map(Self::Exact);
        }
        if s.is_empty() {
            return Err(Invalid::new("empty path"));
        }
        let body = s.strip_suffix('/').unwrap_or(s);
        check_normalised(&format!("/{body}"), &format!("/{body}"))
            .map_err(|_| Invalid::new(format!("path {s:?} is not normalised")))?;
        if body.contains(['{', '}']) {
            return Err(Invalid::new(format!("misplaced placeholder in {s:?}")));
        }
        Ok(Self::AtEachRoot(body.to_owned()))
    }
}

impl fmt::Display for ProtectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtEachRoot(name) => f.write_str(name),
            Self::Exact(path) => path.fmt(f),
        }
    }
}

/// Builds a path glob: `*` and `?` stay within one component, `**` crosses.
fn path_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// An `[exec]` entry: a program path glob, optionally followed by a glob
/// over its arguments (`/usr/bin/git push*` matches `git push origin`).
#[derive(Clone, Debug)]
pub struct ExecPattern {
    text: String,
    base: PathBase,
    /// The program glob after the base ("/usr/bin/python3*", or "/**").
    program: String,
    args: Option<GlobMatcher>,
}

impl ExecPattern {
    /// Parses `PROGRAM-GLOB [ARGS-GLOB]`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s_trim = s.trim();
        if s_trim.is_empty() {
            return Err(Invalid::new("empty program pattern"));
        }
        let (program, args) = match s_trim.split_once(char::is_whitespace) {
            Some((p, a)) => (p, Some(a.trim())),
            None => (s_trim, None),
        };
        let (base, rest) = split_base(program)?;
        check_normalised(program, rest)?;
        let glob_text = if rest.is_empty() { "/" } else { rest };
        path_glob(glob_text).map_err(|e| {
            Invalid::new(format!("bad program glob {program:?}: {}", glob_error(&e)))
        })?;
        let args = args
            .map(|a| {
                GlobBuilder::new(a)
                    .literal_separator(false)
                    .build()
                    .map(|g| g.compile_matcher())
                    .map_err(|e| {
                        Invalid::new(format!("bad argument glob {a:?}: {}", glob_error(&e)))
                    })
            })
            .transpose()?;
        Ok(Self {
            text: s_trim.to_owned(),
            base,
            program: glob_text.to_owned(),
            args,
        })
    }

    /// What the program glob is relative to.
    pub fn base(&self) -> PathBase {
        self.base
    }

    /// The program glob after its base, e.g. `/usr/bin/python3*`.
    pub fn program_glob(&self) -> &str {
        &self.program
    }

    /// Whether the entry constrains arguments as well as the program.
    pub fn has_args(&self) -> bool {
        self.args.is_some()
    }

    /// The program glob for one session, compiled. Fails only if the
    /// placeholder directory itself makes the glob invalid.
    pub fn program_matcher(&self, p: &Placeholders) -> Result<GlobMatcher, Invalid> {
        let base = PathTemplate {
            base: self.base,
            rest: String::new(),
        }
        .resolve(p);
        let base = base.to_string_lossy();
        let joined = format!("{}{}", base.trim_end_matches('/'), self.program);
        let escaped = escape_glob_prefix(&joined, base.trim_end_matches('/').len());
        path_glob(&escaped)
            .map(|g| g.compile_matcher())
            .map_err(|e| Invalid::new(format!("bad program glob {joined:?}: {}", glob_error(&e))))
    }

    /// Whether `args` (argv[1..], joined by spaces) match the argument
    /// glob (always, without one).
    pub fn matches_args(&self, args: &[&str]) -> bool {
        self.args
            .as_ref()
            .is_none_or(|m| m.is_match(args.join(" ")))
    }

    /// Whether `path` with `args` (argv[1..]) matches, for one session.
    pub fn matches(&self, p: &Placeholders, path: &Path, args: &[&str]) -> bool {
        self.program_matcher(p).is_ok_and(|m| m.is_match(path))
            && self
                .args
                .as_ref()
                .is_none_or(|m| m.is_match(args.join(" ")))
    }

    /// Whether the glob would match `path` with the placeholders of a
    /// session where they are absent (absolute patterns only).
    pub fn matches_absolute(&self, path: &Path) -> bool {
        self.base == PathBase::Root
            && path_glob(&self.program).is_ok_and(|g| g.compile_matcher().is_match(path))
    }
}

impl PartialEq for ExecPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for ExecPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Escapes glob metacharacters in the first `len` bytes of `s` (a literal
/// directory substituted for a placeholder).
fn escape_glob_prefix(s: &str, len: usize) -> String {
    let (lit, rest) = s.split_at(len.min(s.len()));
    let mut out = String::with_capacity(s.len() + 8);
    for c in lit.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str(rest);
    out
}

fn glob_error(e: &globset::Error) -> String {
    e.kind().to_string()
}

/// Transport protocols a network rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocols {
    /// TCP and UDP.
    Both,
    /// TCP only (`/tcp`).
    Tcp,
    /// UDP only (`/udp`).
    Udp,
}

/// The host part of a network rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `*`: any address.
    Any,
    /// An address or prefix (`10.1.2.0/24`, `[2001:db8::/32]`).
    Net(IpNet),
    /// A name (`api.example.com`), lower-case, without trailing dot.
    Domain(String),
    /// `*.github.com`: any name below `github.com`, not the name itself.
    Wildcard(String),
}

impl HostPattern {
    /// Whether this pattern covers every address of a family.
    pub fn is_everything(&self) -> bool {
        match self {
            Self::Any => true,
            Self::Net(net) => net.prefix_len() == 0,
            Self::Domain(_) | Self::Wildcard(_) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Net(IpNet::V4(n)) if n.prefix_len() == 32 => n.addr().fmt(f),
            Self::Net(IpNet::V4(n)) => n.fmt(f),
            Self::Net(IpNet::V6(n)) if n.prefix_len() == 128 => write!(f, "[{}]", n.addr()),
            Self::Net(IpNet::V6(n)) => write!(f, "[{n}]"),
            Self::Domain(d) => f.write_str(d),
            Self::Wildcard(d) => write!(f, "*.{d}"),
        }
    }
}

/// An inclusive port range; `*` is 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: Self = Self {
        first: 1,
        last: u16::MAX,
    };

    fn parse(s: &str) -> Result<Self, Invalid> {
        if s == "*" {
            return Ok(Self::ALL);
        }
        let port = |p: &str| -> Result<u16, Invalid> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(Invalid::new(format!("invalid port {p:?}"))
                    .hint("ports are 1-65535, a range like 8000-8100, or *")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if first > last {
            return Err(
                Invalid::new(format!("empty port range {s}")).hint(format!("write {last}-{first}"))
            );
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A `[network]` rule: `HOST:PORTS[/tcp|/udp]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetRule {
    /// Where.
    pub host: HostPattern,
    /// Which destination ports.
    pub ports: PortRange,
    /// Which transports.
    pub protocols: Protocols,
}

impl NetRule {
    /// Parses `api.example.com:443`, `*.github.com:443`, `10.1.2.0/24:5432`,
    /// `[2001:db8::/32]:443`, `*:22`, `host:8000-8100/tcp`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        const FORMS: &str = "write HOST:PORT, e.g. api.example.com:443, *.github.com:443, \
                             10.1.2.0/24:5432, [2001:db8::/32]:443, *:22, or add /tcp or /udp";
        let (body, protocols) = if let Some(b) = s.strip_suffix("/tcp") {
            (b, Protocols::Tcp)
        } else if let Some(b) = s.strip_suffix("/udp") {
            (b, Protocols::Udp)
        } else {
            (s, Protocols::Both)
        };
        let (host, ports) = if let Some(rest) = body.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err(Invalid::new(format!("unclosed '[' in {s:?}")).hint(FORMS));
            };
            let Some(ports) = after.strip_prefix(':') else {
                return Err(Invalid::new(format!("missing port in {s:?}")).hint(FORMS));
            };
            let net = parse_net(inner, true)?;
            if !matches!(net, IpNet::V6(_)) {
                return Err(
                    Invalid::new(format!("{inner} in brackets is not an IPv6 address"))
                        .hint("write IPv4 addresses without brackets: 10.0.0.1:443"),
                );
            }
            (HostPattern::Net(net), ports)
        } else {
            let Some((host, ports)) = body.rsplit_once(':') else {
                return Err(Invalid::new(format!("missing port in {s:?}")).hint(FORMS));
            };
            if host.contains(':') {
                return Err(
                    Invalid::new(format!("IPv6 address without brackets in {s:?}"))
                        .hint("write IPv6 addresses in brackets: [2001:db8::1]:443"),
                );
            }
            (parse_host(host)?, ports)
        };
        let ports = PortRange::parse(ports)?;
        Ok(Self {
            host,
            ports,
            protocols,
        })
    }

    /// Whether this rule allows every address (`*:…`, `0.0.0.0/0:…`).
    pub fn is_any_address(&self) -> bool {
        self.host.is_everything()
    }
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ports)?;
        match self.protocols {
            Protocols::Both => Ok(()),
            Protocols::Tcp => f.write_str("/tcp"),
            Protocols::Udp => f.write_str("/udp"),
        }
    }
}

fn parse_net(s: &str, v6: bool) -> Result<IpNet, Invalid> {
    let bad = || {
        Invalid::new(format!("invalid address or prefix {s:?}"))
            .hint("write an address (10.0.0.1) or a prefix (10.0.0.0/8)")
    };
    if let Some((addr, len)) = s.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let net = IpNet::new(addr, len)
            .map_err(|_| Invalid::new(format!("prefix length /{len} is too long for {addr}")))?;
        if net.network() != addr {
            let fixed = if v6 {
                format!("[{}]", net.trunc())
            } else {
                net.trunc().to_string()
            };
            return Err(Invalid::new(format!("{s} has host bits set"))
                .hint(format!("did you mean {fixed}?")));
        }
        Ok(net)
    } else {
        let addr: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(IpNet::from(addr))
    }
}

fn parse_host(s: &str) -> Result<HostPattern, Invalid> {
    if s == "*" {
        return Ok(HostPattern::Any);
    }
    if s.is_empty() {
        return Err(Invalid::new("missing host").hint("use * for any address"));
    }
    let looks_numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '/');
    if looks_numeric {
        return parse_net(s, false).map(HostPattern::Net);
    }
    if s.contains('/') {
        return Err(Invalid::new(format!("invalid prefix {s:?}"))
            .hint("prefixes are numeric, e.g. 10.1.2.0/24"));
    }
    let (wildcard, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    validate_domain(&name).map_err(|why| {
        Invalid::new(format!("invalid host name {s:?}: {why}"))
            .hint("a wildcard is only allowed as the first label: *.example.com")
    })?;
    Ok(if wildcard {
        HostPattern::Wildcard(name)
    } else {
        HostPattern::Domain(name)
    })
}

fn validate_domain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("names are 1-253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("labels are 1-63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels cannot start or end with '-'");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the last label is numeric (is this an incomplete address?)");
    }
    Ok(())
}

/// The ranges a `*` or any wider rule never covers, and that DNS answers
/// never open: only a rule naming them reaches them. This host, private
/// and shared networks, link-local (cloud metadata), multicast, broadcast
/// and reserved space, the benchmarking range; in IPv6 the unspecified and
/// loopback addresses, unique-local, link- and site-local, multicast and
/// local-use NAT64. Addresses that
/// embed an IPv4 address (see [`embedded_v4`]) are judged by it.
pub fn local_networks() -> Vec<IpNet> {
    let v4 = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),
        (Ipv4Addr::new(10, 0, 0, 0), 8),
        (Ipv4Addr::new(100, 64, 0, 0), 10),
        (Ipv4Addr::new(127, 0, 0, 0), 8),
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv4Addr::new(172, 16, 0, 0), 12),
        (Ipv4Addr::new(192, 168, 0, 0), 16),
        (Ipv4Addr::new(198, 18, 0, 0), 15),
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        (Ipv4Addr::new(240, 0, 0, 0), 4),
    ];
    let v6 = [
        (Ipv6Addr::UNSPECIFIED, 128),
        (Ipv6Addr::LOCALHOST, 128),
        // IPv4-compatible and NAT64 forms are judged by their IPv4 address;
        // as IPv6 prefixes no `*` reaches them either.
        (Ipv6Addr::UNSPECIFIED, 96),
        (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
        (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
        (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
    ];
    v4.into_iter()
        .filter_map(|(a, l)| Ipv4Net::new(a, l).ok().map(IpNet::V4))
        .chain(
            v6.into_iter()
                .filter_map(|(a, l)| Ipv6Net::new(a, l).ok().map(IpNet::V6)),
        )
        .collect()
}

/// The IPv4 address an IPv6 address carries, which is what it reaches:
/// v4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, but not
/// `::` and `::1`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:aabb:ccdd::/48`). The kernel programs judge these the same way.
pub fn embedded_v4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = addr.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let prefix96 = &o[..12];
    if prefix96 == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return Some(last);
    }
    if prefix96 == [0; 12] {
        return (addr != Ipv6Addr::UNSPECIFIED && addr != Ipv6Addr::LOCALHOST).then_some(last);
    }
    if prefix96 == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return Some(last);
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The address `addr` reaches: its embedded IPv4 address, if any.
pub fn judged_address(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A size in bytes, written with binary units: `512M`, `2G`, `2GiB`, `4096`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses an integer with an optional binary unit suffix.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let hint = "write an integer with K, M, G or T (binary units, as systemd's MemoryMax=), e.g. 512M or 2G";
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(digits_end);
        let Ok(n) = num.parse::<u64>() else {
            return Err(Invalid::new(format!("invalid size {s:?}")).hint(hint));
        };
        let shift = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KIB" => 10,
            "M" | "MIB" => 20,
            "G" | "GIB" => 30,
            "T" | "TIB" => 40,
            "KB" | "MB" | "GB" | "TB" => {
                return Err(Invalid::new(format!("ambiguous unit in {s:?}"))
                    .hint("use K/M/G/T or KiB/MiB/GiB/TiB (powers of 1024)"));
            }
            _ => return Err(Invalid::new(format!("invalid size {s:?}")).hint(hint)),
        };
        let bytes = n
            .checked_mul(1u64 << shift)
            .ok_or_else(|| Invalid::new(format!("size {s:?} is too large")))?;
        if bytes == 0 {
            return Err(Invalid::new("size must be larger than zero"));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            let m = 1u64 << shift;
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A CPU quota in percent of one CPU: `50%`, `200%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuQuota {
    /// Percent of one CPU (100 = one full CPU).
    pub percent: u32,
}

impl CpuQuota {
    /// The largest quota accepted (1024 CPUs).
    pub const MAX_PERCENT: u32 = 102_400;

    /// Parses `N%`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let hint = "write a percentage of one CPU, e.g. 50% or 200% (two CPUs)";
        let Some(n) = s.strip_suffix('%') else {
            return Err(Invalid::new(format!("invalid CPU quota {s:?}")).hint(hint));
        };
        match n.trim().parse::<u32>() {
            Ok(p) if (1..=Self::MAX_PERCENT).contains(&p) => Ok(Self { percent: p }),
            _ => Err(Invalid::new(format!("invalid CPU quota {s:?}")).hint(hint)),
        }
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent)
    }
}

/// A wall-clock duration: `90s`, `30m`, `2h`, `1h30m`, `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallDuration(pub Duration);

impl WallDuration {
    /// Parses a duration in jiff's friendly format (days are 24 hours).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let hint = "write e.g. 90s, 30m, 2h, 1h30m or 1d";
        let span: jiff::Span = s
            .parse()
            .map_err(|_| Invalid::new(format!("invalid duration {s:?}")).hint(hint))?;
        let d = span
            .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
            .map_err(|_| {
                Invalid::new(format!("invalid duration {s:?}")).hint(
                    "months and years have no fixed length; use days, hours, minutes or seconds",
                )
            })?;
        let d = Duration::try_from(d)
            .map_err(|_| Invalid::new(format!("duration {s:?} is negative")))?;
        if d.is_zero() {
            return Err(Invalid::new("duration must be longer than zero").hint(hint));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for WallDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = jiff::SignedDuration::try_from(self.0).unwrap_or(jiff::SignedDuration::MAX);
        write!(f, "{d:#}")
    }
}

/// An environment variable name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

impl EnvName {
    /// Parses `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(
                Invalid::new(format!("invalid environment variable name {s:?}"))
                    .hint("names are letters, digits and '_', not starting with a digit"),
            )
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name suggests the value is a credential.
    pub fn looks_secret(&self) -> bool {
        let upper = self.0.to_ascii_uppercase();
        [
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "API_KEY",
            "APIKEY",
            "PRIVATE_KEY",
            "CREDENTIAL",
        ]
        .iter()
        .any(|w| upper.contains(w))
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syscall name known to libseccomp for this architecture.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyscallName(String);

impl SyscallName {
    /// Parses a name and checks that libseccomp knows it.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match libseccomp::ScmpSyscall::from_name(s) {
            Ok(_) => Ok(Self(s.to_owned())),
            Err(_) => Err(Invalid::new(format!("unknown syscall {s:?}"))
                .hint("use the kernel's name, e.g. \"ptrace\" or \"process_vm_readv\"")),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SyscallName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

display_serialize!(
    AgentName,
    PathTemplate,
    ProtectPath,
    ExecPattern,
    NetRule,
    ByteSize,
    CpuQuota,
    WallDuration,
    EnvName,
    SyscallName
);

/// The known name closest to `input`, if it is close enough to be a typo.
pub fn closest<'a>(input: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(input, k), k))
        .filter(|(d, k)| {
            let prefix =
                input.len().min(k.len()) >= 3 && (k.starts_with(input) || input.starts_with(k));
            *d <= (k.len() / 3).max(1) || prefix
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders() -> Placeholders {
        Placeholders {
            workspace: PathBuf::from("/work/repo"),
            tmp: PathBuf::from("/run/agentd/tmp/s1"),
            home: PathBuf::from("/run/agentd/home/s1"),
        }
    }

    #[test]
    fn agent_names() {
        for ok in ["coder", "a", "ci-job-2", &"a".repeat(32)] {
            assert!(AgentName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Coder",
            "2coder",
            "co_der",
            "coder-",
            "co der",
            &"a".repeat(33),
        ] {
            assert!(AgentName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_templates_parse_and_resolve() {
        let p = placeholders();
        assert_eq!(
            PathTemplate::parse("/usr").map(|t| t.resolve(&p)),
            Ok(PathBuf::from("/usr"))
        );
        assert_eq!(
            PathTemplate::parse("/").map(|t| t.resolve(&p)),
            Ok(PathBuf::from("/"))
        );
        assert_eq!(
            PathTemplate::parse("{workspace}").map(|t| t.resolve(&p)),
            Ok(PathBuf::from("/work/repo"))
        );
        assert_eq!(
            PathTemplate::parse("{home}/.cache").map(|t| t.resolve(&p)),
            Ok(PathBuf::from("/run/agentd/home/s1/.cache"))
        );
        assert_eq!(
            PathTemplate::parse("{tmp}/x").map(|t| t.to_string()),
            Ok("{tmp}/x".into())
        );
    }

    #[test]
    fn path_templates_refuse_ambiguity() {
        let msg = |s: &str| PathTemplate::parse(s).err().map(|e| e.message);
        assert_eq!(msg("usr"), Some("relative path \"usr\"".into()));
        assert_eq!(msg("~/x"), Some("relative path \"~/x\"".into()));
        assert_eq!(
            msg("/usr/"),
            Some("path \"/usr/\" is not normalised".into())
        );
        assert_eq!(
            msg("/usr//lib"),
            Some("path \"/usr//lib\" is not normalised".into())
        );
        assert_eq!(
            msg("/usr/../etc"),
            Some("path \"/usr/../etc\" is not normalised".into())
        );
        assert_eq!(msg("{wrk}/x"), Some("unknown placeholder {wrk}".into()));
        assert_eq!(
            msg("{workspace}x"),
            Some("expected '/' after {workspace} in \"{workspace}x\"".into())
        );
        assert_eq!(
            msg("/a/{tmp}"),
            Some("misplaced placeholder in \"/a/{tmp}\"".into())
        );
        assert_eq!(msg(""), Some("empty path".into()));
        let hint = PathTemplate::parse("/usr/./lib").err().and_then(|e| e.hint);
        assert_eq!(
            hint,
            Some("write \"/usr/lib\": no '.', '..', '//' or trailing '/'".into())
        );
    }

    #[test]
    fn starts_with_is_component_wise() {
        let t = |s: &str| PathTemplate::parse(s).unwrap();
        assert!(t("/usr/lib").starts_with(&t("/usr")));
        assert!(t("/usr").starts_with(&t("/")));
        assert!(!t("/usrlocal").starts_with(&t("/usr")));
        assert!(t("{workspace}/a").starts_with(&t("{workspace}")));
        assert!(!t("{workspace}/a").starts_with(&t("/")));
    }

    #[test]
    fn protect_paths() {
        assert_eq!(
            ProtectPath::parse(".github/workflows"),
            Ok(ProtectPath::AtEachRoot(".github/workflows".into()))
        );
        assert_eq!(
            ProtectPath::parse(".idea/"),
            Ok(ProtectPath::AtEachRoot(".idea".into()))
        );
        assert!(matches!(
            ProtectPath::parse("{workspace}/Makefile"),
            Ok(ProtectPath::Exact(_))
        ));
        assert!(ProtectPath::parse("../escape").is_err());
    }

    #[test]
    fn exec_patterns_match_program_and_arguments() {
        let p = placeholders();
        let git_push = ExecPattern::parse("/usr/bin/git push*").unwrap();
        assert!(git_push.matches(&p, Path::new("/usr/bin/git"), &["push", "origin", "main"]));
        assert!(!git_push.matches(&p, Path::new("/usr/bin/git"), &["status"]));
        let python = ExecPattern::parse("/usr/bin/python3*").unwrap();
        assert!(python.matches(&p, Path::new("/usr/bin/python3.11"), &[]));
        assert!(!python.matches(&p, Path::new("/usr/bin/python3/../../bin/sh"), &[]));
        let ws = ExecPattern::parse("{workspace}/**").unwrap();
        assert!(ws.matches(&p, Path::new("/work/repo/target/debug/test-bin"), &[]));
        assert!(!ws.matches(&p, Path::new("/work/other/bin"), &[]));
        let one_level = ExecPattern::parse("/usr/lib/git-core/*").unwrap();
        assert!(!one_level.matches(&p, Path::new("/usr/lib/git-core/sub/x"), &[]));
    }

    #[test]
    fn exec_patterns_escape_placeholder_directories() {
        let mut p = placeholders();
        p.workspace = PathBuf::from("/work/[odd]*dir");
        let ws = ExecPattern::parse("{workspace}/run.sh").unwrap();
        assert!(ws.matches(&p, Path::new("/work/[odd]*dir/run.sh"), &[]));
        assert!(!ws.matches(&p, Path::new("/work/o*dir/run.sh"), &[]));
    }

    #[test]
    fn exec_patterns_reject_bad_globs() {
        assert!(ExecPattern::parse("/usr/bin/[").is_err());
        assert!(ExecPattern::parse("bin/ls").is_err());
        assert!(ExecPattern::parse("").is_err());
    }

    #[test]
    fn net_rules_parse_every_form() {
        let r = |s: &str| NetRule::parse(s).map(|r| r.to_string());
        assert_eq!(r("api.example.com:443"), Ok("api.example.com:443".into()));
        assert_eq!(r("API.Example.COM.:443"), Ok("api.example.com:443".into()));
        assert_eq!(r("*.github.com:443"), Ok("*.github.com:443".into()));
        assert_eq!(r("10.1.2.0/24:5432"), Ok("10.1.2.0/24:5432".into()));
        assert_eq!(r("10.1.2.3:5432"), Ok("10.1.2.3:5432".into()));
        assert_eq!(r("[2001:db8::/32]:443"), Ok("[2001:db8::/32]:443".into()));
        assert_eq!(r("[::1]:8080"), Ok("[::1]:8080".into()));
        assert_eq!(r("*:22"), Ok("*:22".into()));
        assert_eq!(r("host:8000-8100/tcp"), Ok("host:8000-8100/tcp".into()));
        assert_eq!(r("host:53/udp"), Ok("host:53/udp".into()));
        assert_eq!(r("*:*"), Ok("*:*".into()));
        let rule = NetRule::parse("host:1-65535").unwrap();
        assert_eq!(rule.ports, PortRange::ALL);
        assert!(NetRule::parse("0.0.0.0/0:443").unwrap().is_any_address());
        assert!(!NetRule::parse("10.0.0.0/8:443").unwrap().is_any_address());
    }

    #[test]
    fn net_rules_refuse_bad_input() {
        let msg = |s: &str| NetRule::parse(s).err().map(|e| e.message);
        assert_eq!(
            msg("example.com"),
            Some("missing port in \"example.com\"".into())
        );
        assert_eq!(msg("example.com:0"), Some("invalid port \"0\"".into()));
        assert_eq!(
            msg("example.com:65536"),
            Some("invalid port \"65536\"".into())
        );
        assert_eq!(msg("example.com:9-1"), Some("empty port range 9-1".into()));
        assert_eq!(
            msg("10.1.2.3/24:1"),
            Some("10.1.2.3/24 has host bits set".into())
        );
        assert_eq!(
            msg("10.0.0.0/33:1"),
            Some("prefix length /33 is too long for 10.0.0.0".into())
        );
        assert_eq!(
            msg("2001:db8::1:443"),
            Some("IPv6 address without brackets in \"2001:db8::1:443\"".into())
        );
        assert_eq!(
            msg("[10.0.0.1]:443"),
            Some("10.0.0.1 in brackets is not an IPv6 address".into())
        );
        assert_eq!(msg("[::1:443"), Some("unclosed '[' in \"[::1:443\"".into()));
        assert!(msg("a.*.com:1").is_some());
        assert!(msg("1.2.3:80").is_some());
        assert!(msg(":80").is_some());
        assert!(msg("-bad.com:80").is_some());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("512M"), Ok(ByteSize(512 << 20)));
        assert_eq!(ByteSize::parse("2G"), Ok(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("2GiB"), Ok(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize(2 << 30).to_string(), "2G");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536M");
        for bad in ["", "G", "2GB", "1.5G", "-1", "0", "99999999999T", "2X"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_quotas() {
        assert_eq!(CpuQuota::parse("200%"), Ok(CpuQuota { percent: 200 }));
        for bad in ["200", "0%", "-5%", "x%", "102401%"] {
            assert!(CpuQuota::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            WallDuration::parse("90s"),
            Ok(WallDuration(Duration::from_secs(90)))
        );
        assert_eq!(
            WallDuration::parse("1h30m"),
            Ok(WallDuration(Duration::from_secs(5400)))
        );
        assert_eq!(
            WallDuration::parse("1d"),
            Ok(WallDuration(Duration::from_secs(86_400)))
        );
        assert_eq!(WallDuration(Duration::from_secs(7200)).to_string(), "2h");
        for bad in ["", "2", "0s", "2 months", "1y", "-5m", "soon"] {
            assert!(WallDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert!(EnvName::parse("RUST_LOG").is_ok());
        assert!(EnvName::parse("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A B", "A=B"] {
            assert!(EnvName::parse(bad).is_err(), "{bad}");
        }
        assert!(EnvName::parse("GITHUB_TOKEN").unwrap().looks_secret());
        assert!(!EnvName::parse("LANG").unwrap().looks_secret());
    }

    #[test]
    fn syscall_names_are_checked_against_libseccomp() {
        assert!(SyscallName::parse("ptrace").is_ok());
        assert!(SyscallName::parse("io_uring_setup").is_ok());
        assert!(SyscallName::parse("nosuchcall").is_err());
    }

    #[test]
    fn closest_suggests_typos_only() {
        let known = ["read", "read_write", "execute", "protect"];
        assert_eq!(closest("reed", known), Some("read"));
        assert_eq!(closest("exec", known), Some("execute"));
        assert_eq!(closest("zzzzzz", known), None);
    }

    #[test]
    fn local_networks_cover_metadata_and_loopback() {
        let nets = local_networks();
        let covered = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            nets.iter().any(|n| n.contains(&ip))
        };
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(covered(ip), "{ip}");
        }
        assert!(!covered("1.1.1.1"));
        assert!(!covered("2606:4700::1111"));
    }
}
