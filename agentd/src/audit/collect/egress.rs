//! Decoding of what `agentd-ebpf/src/egress.rs` emits: a [`NetEvent`] for
//! each connect, UDP datagram and bind of a session (`Connect`, with the
//! decision), and for each refused bind, listen or raw/packet socket
//! (`SocketDenied`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agentd_common::{EventHeader, NetEvent, from_bytes, net_op};
use serde_json::Value;

use super::{Collector, Known, exec_id};
use crate::audit::Event;

/// A `Connect` or `SocketDenied` event; `None` for an unknown session or a
/// short event.
pub(super) fn decode(
    collector: &mut Collector,
    header: &EventHeader,
    bytes: &[u8],
) -> Option<Event> {
    let opened = from_bytes::<NetEvent>(bytes)
        .and_then(|n| address(n.family, &n.addr).parse::<IpAddr>().ok())
        .and_then(|ip| collector.opened_by(header.cgroup_id, ip));
    let known = collector.known(header.cgroup_id)?;
    let n: NetEvent = from_bytes(bytes)?;
    Some(if n.op == net_op::SOCKET {
        socket_denied(known, header, &n)
    } else {
        addressed(known, header, &n, opened)
    })
}

fn address(family: u16, addr: &[u8; 16]) -> String {
    if family == 10 {
        Ipv6Addr::from(*addr).to_string()
    } else {
        Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string()
    }
}

fn protocol(p: u16) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// A socket the kernel refused to create (the type travels in
/// `protocol`, the socket's protocol in `port`).
fn socket_denied(known: &Known, header: &EventHeader, n: &NetEvent) -> Event {
    Event::now(&known.context, "deny")
        .with("what", "socket")
        .with("pid", header.pid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("family", n.family)
        .with("type", n.protocol)
        .with("protocol", n.port)
        .with("rule", "built-in")
        .with("reason", refused_socket(n.family, n.protocol, n.port))
}

/// Why a socket of (family, type, protocol) is not allowed.
pub(crate) fn refused_socket(family: u16, ty: u16, protocol: u16) -> &'static str {
    const SOCK_RAW: u16 = 3;
    match (family, ty, protocol) {
        (2 | 10, SOCK_RAW, _) => "raw sockets are not allowed in sessions",
        (2, _, 1) | (10, _, 58) => {
            "ICMP sockets are not allowed in sessions (their sends bypass the egress rules)"
        }
        (2 | 10, _, _) => "only TCP and UDP sockets are allowed in sessions",
        (16, _, _) => "only route netlink sockets are allowed in sessions",
        (17, _, _) => "packet sockets are not allowed in sessions",
        _ => "only unix, IPv4, IPv6 and route netlink sockets are allowed in sessions",
    }
}

/// The record kind of an operation on an address.
fn record_kind(n: &NetEvent) -> &'static str {
    match (n.allowed == 1, n.op) {
        (true, net_op::BIND) => "bind",
        (true, net_op::SENDMSG) => "sendmsg",
        (true, _) => "connect",
        (false, _) => "deny",
    }
}

/// The operation named in a refusal.
fn op_name(op: u8) -> &'static str {
    match op {
        net_op::CONNECT => "connect",
        net_op::SENDMSG => "sendmsg",
        net_op::BIND => "bind",
        net_op::LISTEN => "listen",
        _ => "socket",
    }
}

/// The first `[network] allow` rule admitting `addr`:`port`.
fn static_rule(known: &Known, addr: &str, port: u16) -> Option<String> {
    let ip: IpAddr = addr.parse().ok()?;
    known
        .net_rules
        .iter()
        .find(|(_, nets, first, last)| {
            nets.iter().any(|n| n.contains(&ip)) && port >= *first && port <= *last
        })
        .map(|(t, ..)| t.clone())
}

/// A connect, datagram, bind or listen on an address, allowed or refused;
/// `opened` is the name and rule of the DNS answer that opened the address.
fn addressed(
    known: &Known,
    header: &EventHeader,
    n: &NetEvent,
    opened: Option<(String, String)>,
) -> Event {
    let addr = address(n.family, &n.addr);
    let rule = static_rule(known, &addr, n.port);
    // An address a DNS answer opened: the name asked, and (when admitted
    // and no static rule did) its rule.
    let (domain, rule) = match opened {
        Some((name, by)) => (
            Some(known.redactor.scrub(&name)),
            rule.or((n.allowed == 1).then_some(by)),
        ),
        None => (None, rule),
    };
    let mut e = Event::now(&known.context, record_kind(n))
        .with("pid", header.pid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("protocol", protocol(n.protocol))
        .with("address", addr.clone())
        .with("port", n.port);
    if let Some(d) = domain {
        e = e.with("domain", d);
    }
    e = e
        .with("decision", if n.allowed == 1 { "allow" } else { "deny" })
        .with("rule", rule.map_or(Value::Null, Value::String));
    if n.allowed == 0 {
        let op = op_name(n.op);
        e = e.with("what", op).with(
            "reason",
            if op == "bind" {
                format!("no [network] bind rule allows {addr}:{}", n.port)
            } else {
                format!("no [network] allow rule admits {addr}:{}", n.port)
            },
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use agentd_common::EventKind;
    use serde_json::json;

    use super::*;
    use crate::audit::collect::test_session;

    fn event(op: u8, allowed: u8, addr: [u8; 4], port: u16) -> NetEvent {
        let (_, header) = test_session(EventKind::Connect);
        let mut a = [0; 16];
        a[..4].copy_from_slice(&addr);
        NetEvent {
            header,
            family: 2,
            port,
            protocol: 6,
            op,
            allowed,
            addr: a,
        }
    }

    #[test]
    fn allowed_connect_names_the_static_rule() {
        let (known, header) = test_session(EventKind::Connect);
        let n = event(net_op::CONNECT, 1, [203, 0, 113, 9], 443);
        let e = addressed(&known, &header, &n, None);
        assert_eq!(e.kind, "connect");
        assert_eq!(e.fields["address"], json!("203.0.113.9"));
        assert_eq!(e.fields["protocol"], json!("tcp"));
        assert_eq!(e.fields["decision"], json!("allow"));
        assert_eq!(e.fields["rule"], json!("203.0.113.0/24:443"));
        assert!(!e.fields.contains_key("reason"));
    }

    #[test]
    fn an_address_a_dns_answer_opened_carries_its_name_and_rule() {
        let (known, header) = test_session(EventKind::Connect);
        let opened = || Some(("api.test".to_owned(), "api.test:443".to_owned()));
        let n = event(net_op::SENDMSG, 1, [198, 51, 100, 1], 443);
        let e = addressed(&known, &header, &n, opened());
        assert_eq!(e.kind, "sendmsg");
        assert_eq!(e.fields["domain"], json!("api.test"));
        assert_eq!(e.fields["rule"], json!("api.test:443"));
        let refused = event(net_op::CONNECT, 0, [198, 51, 100, 1], 80);
        let e = addressed(&known, &header, &refused, opened());
        assert_eq!(e.kind, "deny");
        assert_eq!(e.fields["rule"], Value::Null, "a refusal has no rule");
        assert_eq!(
            e.fields["reason"],
            json!("no [network] allow rule admits 198.51.100.1:80")
        );
    }

    #[test]
    fn refused_binds_and_sockets() {
        let (known, header) = test_session(EventKind::SocketDenied);
        let bind = event(net_op::BIND, 0, [0, 0, 0, 0], 8080);
        let e = addressed(&known, &header, &bind, None);
        assert_eq!(e.fields["what"], json!("bind"));
        assert_eq!(
            e.fields["reason"],
            json!("no [network] bind rule allows 0.0.0.0:8080")
        );
        let allowed_bind = event(net_op::BIND, 1, [127, 0, 0, 1], 8080);
        assert_eq!(addressed(&known, &header, &allowed_bind, None).kind, "bind");
        let raw = event(net_op::SOCKET, 0, [0; 4], 0);
        let e = socket_denied(&known, &header, &raw);
        assert_eq!((e.kind, &e.fields["what"]), ("deny", &json!("socket")));
    }

    #[test]
    fn refused_sockets_say_why() {
        assert!(refused_socket(2, 3, 6).starts_with("raw"));
        assert!(refused_socket(2, 2, 1).starts_with("ICMP"));
        assert!(refused_socket(10, 2, 58).starts_with("ICMP"));
        assert!(refused_socket(2, 1, 132).starts_with("only TCP and UDP"));
        assert!(refused_socket(16, 3, 4).starts_with("only route netlink"));
        assert!(refused_socket(40, 1, 0).starts_with("only unix"));
    }
}
