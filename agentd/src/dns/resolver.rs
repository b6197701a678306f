//! A session's resolver: hickory-server on the session's own loopback
//! address (port 53, UDP and TCP), where the kernel redirects every DNS
//! packet of the session. Names the policy does not name are REFUSED and
//! never forwarded; allowed ones are forwarded to the host's upstream
//! resolvers (hickory-resolver), and the A/AAAA addresses of the answer
//! (after any CNAME chain) are opened in the session's egress maps before
//! the answer is sent, for as long as the answer's TTL allows.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr as _,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use agentd_common::PortRules;
use hickory_server::{
    Server,
    net::runtime::{Time, TokioRuntimeProvider},
    proto::{
        op::{Header, HeaderCounts, Metadata, ResponseCode},
        rr::{Name, RData, Record, RecordType},
    },
    resolver::{
        Resolver,
        config::{NameServerConfig, ResolverConfig},
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use ipnet::IpNet;
use serde_json::Value;

use super::{
    names::{self, NameRule},
    peer,
    table::{Lifetimes, MAX_OPENED, Opened, openable},
};
use crate::{
    audit::{
        Context, Event, Log,
        collect::{NameOpened, NamesLog},
        redact::Redactor,
    },
    ebpf::{
        Kernel,
        rules::{self, Resolved},
    },
};

/// Where the resolver forwards allowed names, and how long answers count.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Upstream resolvers (port 53).
    pub upstream: Vec<IpAddr>,
    /// Shortest TTL honoured, seconds.
    pub min_ttl: u64,
    /// Longest, seconds.
    pub max_ttl: u64,
    /// Added to every TTL, seconds.
    pub grace: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let l = Lifetimes::default();
        Self {
            upstream: Vec::new(),
            min_ttl: l.min_ttl.as_secs(),
            max_ttl: l.max_ttl.as_secs(),
            grace: l.grace.as_secs(),
        }
    }
}

impl Settings {
    /// The defaults, forwarding to the nameservers of `/etc/resolv.conf`.
    pub fn from_host() -> Self {
        Self {
            upstream: nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
            ..Self::default()
        }
    }

    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            min_ttl: Duration::from_secs(self.min_ttl),
            max_ttl: Duration::from_secs(self.max_ttl.max(self.min_ttl)),
            grace: Duration::from_secs(self.grace),
        }
    }
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            rest.split_whitespace()
                .next()?
                .split('%')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// The first resolver address tried: `127.53.0.1`; sessions get the next
/// free one in 127.53.0.0/16.
const RESOLVER_NET: [u8; 2] = [127, 53];

/// The resolver's sockets, bound before the session exists (the address
/// goes into the session's kernel entry).
#[derive(Debug)]
pub struct Bound {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    addr: Ipv4Addr,
    /// The same on `[::1]:port`, for IPv6 DNS (absent without IPv6).
    v6: Option<(std::net::UdpSocket, std::net::TcpListener, u16)>,
}

impl Bound {
    /// Binds UDP and TCP port 53 on a free address of 127.53.0.0/16,
    /// starting from one derived from `hint`. A bound socket is the lease:
    /// no two live sessions share an address.
    pub fn bind(hint: u64) -> io::Result<Self> {
        let start = hint % 65_534;
        for i in 0..65_534u64 {
            let n = (start + i) % 65_534 + 1;
            let addr = Ipv4Addr::new(
                RESOLVER_NET[0],
                RESOLVER_NET[1],
                u8::try_from(n >> 8).unwrap_or(0),
                u8::try_from(n & 0xff).unwrap_or(0),
            );
            let sock = SocketAddr::from((addr, agentd_common::DNS_PORT));
            let Ok(udp) = std::net::UdpSocket::bind(sock) else {
                continue;
            };
            match std::net::TcpListener::bind(sock) {
                Ok(tcp) => {
                    return Ok(Self {
                        udp,
                        tcp,
                        addr,
                        v6: bind_v6(n),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "every resolver address in 127.53.0.0/16 is taken",
        ))
    }

    /// The address sessions' DNS is redirected to.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The port on `::1` IPv6 DNS is redirected to, if bound.
    pub fn port6(&self) -> Option<u16> {
        self.v6.as_ref().map(|(_, _, p)| *p)
    }

    /// Starts answering, in a thread of its own.
    pub fn serve(self, inputs: Inputs) -> io::Result<SessionResolver> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.udp.set_nonblocking(true)?;
        self.tcp.set_nonblocking(true)?;
        if let Some((u, t, _)) = &self.v6 {
            u.set_nonblocking(true)?;
            t.set_nonblocking(true)?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || runtime.block_on(run(self, inputs, stop_rx)))?;
        Ok(SessionResolver {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// Binds UDP and TCP on `[::1]:port` for the session with resolver index
/// `n`: ports 30000-59999, starting from one derived from `n`.
fn bind_v6(n: u64) -> Option<(std::net::UdpSocket, std::net::TcpListener, u16)> {
    for i in 0..30_000u64 {
        let port = u16::try_from(30_000 + (n + i) % 30_000).unwrap_or(30_000);
        let sock = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let Ok(udp) = std::net::UdpSocket::bind(sock) else {
            if std::net::UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_err() {
                return None; // no IPv6 loopback on this host
            }
            continue;
        };
        if let Ok(tcp) = std::net::TcpListener::bind(sock) {
            return Some((udp, tcp, port));
        }
    }
    None
}

/// What the resolver of one session works with.
#[derive(Debug)]
pub struct Inputs {
    /// The policy's name rules.
    pub rules: Vec<NameRule>,
    /// The session's egress rules that do not come from DNS.
    pub static_egress: Vec<Resolved>,
    /// The session's slot in the egress maps.
    pub slot: u32,
    /// The pinned maps.
    pub kernel: Kernel,
    /// Upstream and TTLs.
    pub settings: Settings,
    /// Where `dns` records go.
    pub log: Log,
    /// Whose records they are.
    pub context: Context,
    /// Scrubs names (a query can carry a secret).
    pub redactor: Redactor,
    /// Where opened addresses are noted, so connects to them are recorded
    /// with their name and rule.
    pub names: Option<NamesLog>,
    /// The session's uid: only queries from its sockets are answered.
    pub uid: u32,
}

/// A running resolver; stopped (and its sockets closed) on [`stop`].
///
/// [`stop`]: SessionResolver::stop
#[derive(Debug)]
pub struct SessionResolver {
    addr: Ipv4Addr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SessionResolver {
    /// Its address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Stops answering and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SessionResolver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The egress entries of a session: its static rules plus what answers
/// opened, kept in the kernel.
#[derive(Debug)]
struct Egress {
    kernel: Kernel,
    slot: u32,
    static_rules: Vec<Resolved>,
    opened: Opened,
    /// Whether reaching the bound on opened addresses was logged.
    warned_full: bool,
    /// What the kernel holds for the session.
    installed: HashMap<IpNet, PortRules>,
    /// Where opened addresses are noted for the collector.
    names: Option<NamesLog>,
}

impl Egress {
    /// Tells the kernel about the addresses whose rules changed: each
    /// one's entry is recomputed alone (static rules covering it plus what
    /// it is open for), so an answer costs the same with one address open
    /// or a thousand.
    fn sync(&mut self, rules: &[NameRule]) {
        let mut old = Vec::new();
        let mut new = Vec::new();
        let changed = self.opened.take_changed();
        for &addr in &changed {
            let net = IpNet::from(addr);
            let mut here = self.static_rules.clone();
            here.extend(self.opened.at(addr, rules));
            match rules::entry(&here, net, true) {
                Ok(entry) => {
                    old.extend(self.installed.get(&net).map(|e| (net, *e)));
                    new.extend(entry.map(|e| (net, e)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS answers exceed the rule capacity; not opened")
                }
            }
        }
        match self.kernel.replace_egress(self.slot, &old, &new) {
            Ok(()) => {
                for (net, _) in &old {
                    self.installed.remove(net);
                }
                self.installed.extend(new);
            }
            Err(e) => {
                // Tried again at the next answer or expiry tick: an expired
                // address must not stay open because one write failed.
                tracing::warn!(error = %e, "cannot update the session's egress rules");
                self.opened.still_changed(changed);
            }
        }
    }
}

struct Handler {
    rules: Vec<NameRule>,
    upstream: Resolver<TokioRuntimeProvider>,
    egress: Arc<Mutex<Egress>>,
    lifetimes: Lifetimes,
    records: mpsc::Sender<Event>,
    context: Context,
    redactor: Redactor,
    /// The session's uid, and the resolver's own addresses (IPv4, IPv6).
    uid: u32,
    locals: Vec<SocketAddr>,
    /// Queries dropped because they did not come from the session.
    outsiders: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").finish_non_exhaustive()
    }
}

/// The mnemonic of a response code (RFC 1035, 2136).
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

fn answer_text(r: &Record) -> String {
    format!("{} {}", r.data.record_type(), r.data)
}

fn address_of(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

impl Handler {
    /// Whether the query came from a socket of the session's uid (the
    /// kernel redirected it here); counts the others.
    fn is_the_sessions(&self, request: &Request) -> bool {
        let transport = match request.protocol() {
            hickory_server::net::xfer::Protocol::Udp => peer::Transport::Udp,
            hickory_server::net::xfer::Protocol::Tcp => peer::Transport::Tcp,
            _ => return false,
        };
        let src = request.src();
        let ours = self
            .locals
            .iter()
            .filter(|l| l.is_ipv4() == src.is_ipv4())
            .any(|local| {
                peer::owner(transport, src, *local).is_ok_and(|owners| owners.contains(&self.uid))
            });
        if !ours {
            let n = self
                .outsiders
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n == 0 {
                tracing::warn!(from = %src, "dropping DNS queries that do not come from the session's processes");
            }
        }
        ours
    }

    fn record(
        &self,
        name: &str,
        qtype: RecordType,
        decision: &str,
        rule: Option<&str>,
        rcode: ResponseCode,
        answers: &[Record],
    ) {
        let ev = Event::now(&self.context, "dns")
            .with("name", self.redactor.scrub(name))
            .with("type", qtype.to_string())
            .with(
                "answers",
                Value::Array(
                    answers
                        .iter()
                        .map(|r| Value::String(self.redactor.scrub(&answer_text(r))))
                        .collect(),
                ),
            )
            .with("rcode", rcode_name(rcode))
            .with("decision", decision)
            .with(
                "rule",
                rule.map_or(Value::Null, |r| Value::String(r.to_owned())),
            );
        let _ = self.records.send(ev);
    }

    /// Opens the answer's addresses for the allow rules among `matched`
    /// (`name` being what was asked).
    fn open(&self, name: &str, matched: &[usize], answers: &[Record]) {
        let Ok(mut egress) = self.egress.lock() else {
            return;
        };
        let now = Instant::now();
        let mut opened = Vec::new();
        for r in answers {
            // An address embedding an IPv4 address (NAT64, 6to4) reaches
            // that address, and the kernel judges it by it: it is opened
            // as that address.
            let Some(ip) = address_of(r)
                .map(crate::policy::judged_address)
                .filter(|ip| openable(*ip))
            else {
                continue;
            };
            for &i in matched.iter().filter(|i| !self.rules[**i].ask) {
                if egress.opened.full() && !egress.warned_full {
                    egress.warned_full = true;
                    tracing::warn!(
                        max = MAX_OPENED,
                        "the session's answers hold the most addresses one session may have open; \
                         each new one now closes the one closest to expiry"
                    );
                }
                if egress.opened.open(ip, i, now + self.lifetimes.keep(r.ttl)) {
                    opened.push(NameOpened {
                        address: ip,
                        name: name.to_owned(),
                        rule: self.rules[i].text.clone(),
                    });
                }
            }
        }
        if !opened.is_empty() {
            egress.sync(&self.rules);
            // Before the answer goes out: the connect that follows it is
            // recorded with the name and rule.
            if let Some(Err(e)) = egress.names.as_mut().map(|n| n.append(&opened)) {
                tracing::warn!(error = %e, "cannot note which names opened which addresses");
            }
        }
    }
}

/// What the server is told of a query left unanswered (nothing is sent).
fn dropped(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::Refused;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

async fn send<R: ResponseHandler>(
    mut handle: R,
    request: &Request,
    code: ResponseCode,
    answers: &[Record],
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    metadata.recursion_available = true;
    let builder = MessageResponseBuilder::from_message_request(request);
    let response = builder.build(metadata, answers.iter(), [], [], []);
    handle.send_response(response).await.unwrap_or_else(|_| {
        let mut failed = metadata;
        failed.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header {
            metadata: failed,
            counts: HeaderCounts::default(),
        })
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if !self.is_the_sessions(request) {
            // Not answered at all: an outsider learns nothing, opens
            // nothing and writes nothing to the session's trail.
            return dropped(request);
        }
        let Ok(info) = request.request_info() else {
            return send(response_handle, request, ResponseCode::FormErr, &[]).await;
        };
        let name = names::normalize(&info.query.name().to_string());
        let qtype = info.query.query_type();
        let matched = names::matching(&self.rules, &name);
        let Some(&first) = matched.first() else {
            // Never forwarded: a name outside the policy does not leave the
            // host, whatever it encodes.
            self.record(&name, qtype, "deny", None, ResponseCode::Refused, &[]);
            return send(response_handle, request, ResponseCode::Refused, &[]).await;
        };
        let rule = self.rules[first].text.clone();
        let Ok(mut fqdn) = Name::from_str(&name) else {
            return send(response_handle, request, ResponseCode::FormErr, &[]).await;
        };
        fqdn.set_fqdn(true);
        let (code, answers) = match self.upstream.lookup(fqdn, qtype).await {
            Ok(lookup) => (ResponseCode::NoError, lookup.answers().to_vec()),
            Err(e) if e.is_nx_domain() => (ResponseCode::NXDomain, Vec::new()),
            Err(e) if e.is_no_records_found() => (ResponseCode::NoError, Vec::new()),
            Err(e) => {
                tracing::debug!(error = %e, name, "upstream lookup failed");
                (ResponseCode::ServFail, Vec::new())
            }
        };
        // Open first: the agent connects as soon as it has the answer.
        self.open(&name, &matched, &answers);
        self.record(&name, qtype, "allow", Some(&rule), code, &answers);
        send(response_handle, request, code, &answers).await
    }
}

async fn run(bound: Bound, inputs: Inputs, stop: tokio::sync::oneshot::Receiver<()>) {
    let settings = inputs.settings.clone();
    let config = ResolverConfig::from_parts(
        None,
        Vec::new(),
        settings
            .upstream
            .iter()
            .map(|ip| NameServerConfig::udp_and_tcp(*ip))
            .collect(),
    );
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().preserve_intermediates = true;
    builder.options_mut().timeout = Duration::from_secs(3);
    builder.options_mut().attempts = 2;
    let upstream = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up the upstream resolver; the session gets no DNS");
            return;
        }
    };
    let (records_tx, records_rx) = mpsc::channel::<Event>();
    let writer = spawn_writer(records_rx, inputs.log.clone());
    let egress = Arc::new(Mutex::new(Egress {
        kernel: inputs.kernel,
        slot: inputs.slot,
        static_rules: inputs.static_egress,
        opened: Opened::default(),
        warned_full: false,
        installed: HashMap::new(),
        names: inputs.names,
    }));
    if let Ok(mut e) = egress.lock() {
        // The registration's entries are the static rules compiled alone.
        e.installed = rules::compile(&e.static_rules, true)
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    let outsiders = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = Handler {
        rules: inputs.rules.clone(),
        upstream,
        egress: Arc::clone(&egress),
        lifetimes: settings.lifetimes(),
        records: records_tx,
        context: inputs.context,
        redactor: inputs.redactor,
        uid: inputs.uid,
        locals: std::iter::once(bound.udp.local_addr())
            .chain(bound.v6.as_ref().map(|(u, _, _)| u.local_addr()))
            .filter_map(Result::ok)
            .collect(),
        outsiders: Arc::clone(&outsiders),
    };
    let mut server = Server::new(handler);
    let v6 = bound.v6.map(|(u, t, _)| (u, t));
    for (udp, tcp) in std::iter::once((bound.udp, bound.tcp)).chain(v6) {
        match (
            tokio::net::UdpSocket::from_std(udp),
            tokio::net::TcpListener::from_std(tcp),
        ) {
            (Ok(udp), Ok(tcp)) => {
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(10), 65_535);
            }
            _ => {
                tracing::warn!("cannot use the resolver's sockets; the session gets no DNS");
                return;
            }
        }
    }
    let rules = inputs.rules;
    let expiry = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(mut e) = egress.lock() {
                // What expired, and what an earlier failed write left.
                e.opened.expire(Instant::now());
                e.sync(&rules);
            }
        }
    });
    let _ = stop.await;
    let dropped = outsiders.load(std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(dropped, "DNS queries from outside the session were dropped");
    }
    expiry.abort();
    let _ = server.shutdown_gracefully().await;
    drop(server);
    let _ = writer.join();
}

/// How long the first `dns` record of a batch waits for others: one
/// append (and fsync) per burst of queries rather than per query.
const RECORD_WINDOW: Duration = Duration::from_millis(50);

/// Most `dns` records in one append.
const RECORD_BATCH: usize = 4096;

/// Appends `dns` records in batches, off the answering path. When the
/// resolver stops (the sender is dropped) what is pending is written.
fn spawn_writer(rx: mpsc::Receiver<Event>, log: Log) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("dns-audit".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let deadline = Instant::now() + RECORD_WINDOW;
                let mut batch = vec![first];
                while batch.len() < RECORD_BATCH {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(more) => batch.push(more),
                        Err(_) => break, // the window closed, or the resolver stopped
                    }
                }
                if let Err(e) = log.append(&batch) {
                    tracing::warn!(error = %e, "cannot write dns records");
                }
            }
        })
        .unwrap_or_else(|_| std::thread::spawn(|| {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let conf = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver  ::1 \noptions ndots:2\nnameserver bogus\n";
        assert_eq!(
            nameservers(conf),
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }
}
