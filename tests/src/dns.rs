//! DNS for the tests: an upstream server the test runs on a namespace's
//! loopback (never a real resolver), and a client that asks one server
//! directly. Messages are built and parsed with hickory-proto.
use std::{
    fs::OpenOptions,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

/// One record the test server knows: `name=1.2.3.4@ttl`,
/// `name=2001:db8::1@ttl` or `name=cname:target@ttl`. A name `*.domain`
/// answers every name under domain; a value `198.18.0.0/15` answers an
/// address of that IPv4 prefix derived from the name asked (a different
/// address for each name, the same one each time for a name).
#[derive(Clone, Debug)]
pub struct Entry {
    name: String,
    data: RData,
    pool: Option<(u32, u32)>,
    ttl: u32,
}

impl Entry {
    /// Parses `name=value@ttl` (ttl defaults to 60).
    pub fn parse(s: &str) -> Option<Self> {
        let (name, rest) = s.split_once('=')?;
        let (value, ttl) = rest.split_once('@').unwrap_or((rest, "60"));
        let mut pool = None;
        let data = if let Some(target) = value.strip_prefix("cname:") {
            RData::CNAME(CNAME(fqdn(target)?))
        } else if let Some((base, len)) = value.split_once('/') {
            let base = u32::from(base.parse::<std::net::Ipv4Addr>().ok()?);
            let host_bits = 32u32.checked_sub(len.parse().ok()?)?;
            pool = Some((base, host_bits));
            RData::A(A(base.into()))
        } else {
            match value.parse::<IpAddr>().ok()? {
                IpAddr::V4(a) => RData::A(A(a)),
                IpAddr::V6(a) => RData::AAAA(AAAA(a)),
            }
        };
        Some(Self {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            data,
            pool,
            ttl: ttl.parse().ok()?,
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self.name.strip_prefix("*.") {
            Some(domain) => name
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.name == name,
        }
    }

    /// The record's data for `name`.
    fn data(&self, name: &str) -> RData {
        let Some((base, host_bits)) = self.pool else {
            return self.data.clone();
        };
        // FNV-1a: stable across runs and processes.
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let host = hash.checked_shr(32 - host_bits).unwrap_or(0);
        RData::A(A((base | host).into()))
    }
}

fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_str(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The answer to `query` from `entries`, following CNAMEs.
fn answer(entries: &[Entry], request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_available = true;
    let Some(q) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(q.clone());
    let mut name = q
        .name()
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut found = false;
    for _ in 0..8 {
        let mut next = None;
        for e in entries.iter().filter(|e| e.matches(&name)) {
            found = true;
            let wanted =
                e.data.record_type() == q.query_type() || matches!(e.data, RData::CNAME(_));
            if wanted && let Some(owner) = fqdn(&name) {
                response.add_answer(Record::from_rdata(owner, e.ttl, e.data(&name)));
            }
            if let RData::CNAME(CNAME(target)) = &e.data {
                next = Some(
                    target
                        .to_string()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                );
            }
        }
        match next {
            Some(n) => name = n,
            None => break,
        }
    }
    if !found {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response
}

fn log_query(log: &Path, request: &Message, transport: &str) {
    if let (Some(q), Ok(mut f)) = (
        request.queries.first(),
        OpenOptions::new().create(true).append(true).open(log),
    ) {
        let _ = writeln!(f, "{} {} {transport}", q.name(), q.query_type());
    }
}

/// Serves `entries` on `addr` port 53 (UDP and TCP) forever, appending
/// every query it sees to `log` ("name type transport").
pub fn serve(addr: IpAddr, log: PathBuf, entries: Vec<Entry>) -> io::Result<()> {
    let udp = UdpSocket::bind((addr, 53))?;
    let tcp = TcpListener::bind((addr, 53))?;
    let (log2, entries2) = (log.clone(), entries.clone());
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut buf).is_err() {
                continue;
            }
            let Ok(request) = Message::from_vec(&buf) else {
                continue;
            };
            log_query(&log2, &request, "tcp");
            if let Ok(bytes) = answer(&entries2, &request).to_vec() {
                let mut out = u16::try_from(bytes.len())
                    .unwrap_or(0)
                    .to_be_bytes()
                    .to_vec();
                out.extend_from_slice(&bytes);
                let _ = s.write_all(&out);
            }
        }
    });
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = udp.recv_from(&mut buf)?;
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        log_query(&log, &request, "udp");
        if let Ok(bytes) = answer(&entries, &request).to_vec() {
            let _ = udp.send_to(&bytes, from);
        }
    }
}

/// Asks `server` (port 53) for `name`'s `qtype` records over UDP or TCP:
/// the response code and the answers ("A 1.2.3.4").
pub fn query(
    server: IpAddr,
    name: &str,
    qtype: &str,
    tcp: bool,
) -> io::Result<(String, Vec<String>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let qtype = RecordType::from_str(qtype).map_err(|_| bad("record type"))?;
    let mut request = Message::new(0x4242, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(fqdn(name).ok_or_else(|| bad("name"))?, qtype));
    let bytes = request.to_vec().map_err(|e| bad(&e.to_string()))?;
    let to = SocketAddr::new(server, 53);
    let reply = if tcp {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = u16::try_from(bytes.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&bytes);
        s.write_all(&out)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        buf
    } else {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().map_err(|_| bad("bind"))?
        } else {
            "[::]:0".parse().map_err(|_| bad("bind"))?
        };
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.send_to(&bytes, to)?;
        let mut buf = vec![0u8; 4096];
        let (n, from) = s.recv_from(&mut buf)?;
        if from != to {
            return Err(bad(&format!("answer from {from}, not {to}")));
        }
        buf.truncate(n);
        buf
    };
    let m = Message::from_vec(&reply).map_err(|e| bad(&e.to_string()))?;
    Ok((
        m.metadata.response_code.to_string(),
        m.answers
            .iter()
            .map(|r| format!("{} {}", r.data.record_type(), r.data))
            .collect(),
    ))
}
