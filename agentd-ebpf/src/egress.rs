//! Egress hooks: `cgroup_sock_addr` programs (connect, UDP sendmsg, bind),
//! attached once at the cgroup2 root (the kernel runs them by the socket's
//! cgroup, and a session may hold sockets created outside it), and
//! `cgroup_sock` (socket creation) at the agentd parent cgroup. Tasks
//! outside a session pass; a session's traffic is looked up in its rules
//! (default deny).
use agentd_common::{
    Counter, DNS_PORT, EventKind, NetEvent, PROTO_TCP, PROTO_UDP, RuleKeyV4, RuleKeyV6,
    SESSION_DNS_OFF, SLOT_BIND, SOCK_ADDR_ALLOW, SOCK_ADDR_DENY, net_op,
};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    macros::{cgroup_sock, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockContext},
};

use crate::{
    dns,
    events::{header, reserve},
    maps::{EGRESS_V4, EGRESS_V6, count, current_session},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_RAW: u32 = 3;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// `socket(2)` families a session may create.
const FAMILY_UNIX: u32 = 1;
const FAMILY_INET: u32 = 2;
const FAMILY_INET6: u32 = 10;
const FAMILY_NETLINK: u32 = 16;
/// The netlink protocol glibc's `getifaddrs` uses (interfaces and
/// addresses); other netlink protocols (sock_diag, audit, uevents,
/// generic netlink) show or change more of the host.
const NETLINK_ROUTE: u32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn cgroup_connect4(ctx: SockAddrContext) -> i32 {
    decide_v4(&ctx, net_op::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn cgroup_connect6(ctx: SockAddrContext) -> i32 {
    decide_v6(&ctx, net_op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cgroup_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide_v4(&ctx, net_op::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn cgroup_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide_v6(&ctx, net_op::SENDMSG)
}

#[cgroup_sock_addr(bind4)]
pub fn cgroup_bind4(ctx: SockAddrContext) -> i32 {
    decide_v4(&ctx, net_op::BIND)
}

#[cgroup_sock_addr(bind6)]
pub fn cgroup_bind6(ctx: SockAddrContext) -> i32 {
    decide_v6(&ctx, net_op::BIND)
}

/// The fields of the context the decision needs.
struct Target {
    port: u16,
    protocol: u8,
    raw_protocol: u16,
}

#[inline(always)]
fn target(sa: &bpf_sock_addr) -> Target {
    // user_port is in network byte order in the low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    let raw = sa.protocol;
    let protocol = match raw {
        IPPROTO_TCP => PROTO_TCP,
        IPPROTO_UDP => PROTO_UDP,
        _ => 0,
    };
    Target {
        port,
        protocol,
        raw_protocol: raw as u16,
    }
}

#[inline(always)]
fn slot_bytes(slot: u32, op: u8) -> [u8; 4] {
    let slot = if op == net_op::BIND {
        slot | SLOT_BIND
    } else {
        slot
    };
    slot.to_be_bytes()
}

/// Binding port 0 picks an ephemeral port, as clients do before sending
/// datagrams (listening stays refused by seccomp without bind rules).
#[inline(always)]
fn ephemeral_bind(op: u8, t: &Target) -> bool {
    op == net_op::BIND && t.port == 0
}

#[inline(always)]
fn lookup_v4(slot: u32, op: u8, addr: [u8; 4], t: &Target) -> bool {
    let key = Key::new(
        64,
        RuleKeyV4 {
            slot: slot_bytes(slot, op),
            addr,
        },
    );
    EGRESS_V4
        .get(&key)
        .is_some_and(|r| r.allows(t.port, t.protocol))
}

fn decide_v4(ctx: &SockAddrContext, op: u8) -> i32 {
    let Some((cgroup_id, session)) = current_session() else {
        return SOCK_ADDR_ALLOW;
    };
    // SAFETY: the context pointer is the kernel's bpf_sock_addr for this call.
    let sa = unsafe { &*ctx.sock_addr };
    let t = target(sa);
    if ephemeral_bind(op, &t) {
        return SOCK_ADDR_ALLOW;
    }
    if op != net_op::BIND && t.port == DNS_PORT {
        if dns::redirects(&session) {
            return dns::redirect_v4(ctx, &session);
        }
        if session.flags & SESSION_DNS_OFF != 0 {
            let mut full = [0u8; 16];
            full[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
            return verdict(cgroup_id, op, AF_INET, &t, full, false);
        }
    }
    let addr = sa.user_ip4.to_ne_bytes();
    let allowed = lookup_v4(session.slot, op, addr, &t);
    let mut full = [0u8; 16];
    full[..4].copy_from_slice(&addr);
    verdict(cgroup_id, op, AF_INET, &t, full, allowed)
}

fn decide_v6(ctx: &SockAddrContext, op: u8) -> i32 {
    let Some((cgroup_id, session)) = current_session() else {
        return SOCK_ADDR_ALLOW;
    };
    // SAFETY: as in decide_v4.
    let sa = unsafe { &*ctx.sock_addr };
    let t = target(sa);
    if ephemeral_bind(op, &t) {
        return SOCK_ADDR_ALLOW;
    }
    let mut addr = [0u8; 16];
    let words = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    if op != net_op::BIND && t.port == DNS_PORT {
        if dns::redirects(&session) {
            return dns::redirect_v6(ctx, &session, addr);
        }
        if session.flags & SESSION_DNS_OFF != 0 {
            return verdict(cgroup_id, op, AF_INET6, &t, addr, false);
        }
    }
    // An address that embeds an IPv4 address reaches it: the v4 rules
    // decide (as `policy::embedded_v4` in userspace).
    if let Some(v4) = embedded_v4(&addr) {
        let allowed = lookup_v4(session.slot, op, v4, &t);
        let mut full = [0u8; 16];
        full[..4].copy_from_slice(&v4);
        return verdict(cgroup_id, op, AF_INET, &t, full, allowed);
    }
    let key = Key::new(
        32 + 128,
        RuleKeyV6 {
            slot: slot_bytes(session.slot, op),
            addr,
        },
    );
    let allowed = EGRESS_V6
        .get(&key)
        .is_some_and(|r| r.allows(t.port, t.protocol));
    verdict(cgroup_id, op, AF_INET6, &t, addr, allowed)
}

/// The IPv4 address in v4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, not `::` or `::1`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:aabb:ccdd::/48`) addresses.
#[inline(always)]
fn embedded_v4(a: &[u8; 16]) -> Option<[u8; 4]> {
    let last = [a[12], a[13], a[14], a[15]];
    let zero8 = a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0;
    if zero8 && a[8] == 0 && a[9] == 0 {
        if a[10] == 0xff && a[11] == 0xff {
            return Some(last);
        }
        if a[10] == 0 && a[11] == 0 {
            let low = u32::from_be_bytes(last);
            return if low > 1 { Some(last) } else { None };
        }
        return None;
    }
    let nat64 = a[0] == 0
        && a[1] == 0x64
        && a[2] == 0xff
        && a[3] == 0x9b
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0
        && a[11] == 0;
    if nat64 {
        return Some(last);
    }
    if a[0] == 0x20 && a[1] == 0x02 {
        return Some([a[2], a[3], a[4], a[5]]);
    }
    None
}

#[inline(always)]
fn verdict(cgroup_id: u64, op: u8, family: u16, t: &Target, addr: [u8; 16], allowed: bool) -> i32 {
    if !allowed {
        count(if op == net_op::BIND {
            Counter::BindDenied
        } else {
            Counter::EgressDenied
        });
    }
    emit(cgroup_id, op, family, t.port, t.raw_protocol, addr, allowed);
    if allowed {
        SOCK_ADDR_ALLOW
    } else {
        SOCK_ADDR_DENY
    }
}

#[inline(always)]
fn emit(
    cgroup_id: u64,
    op: u8,
    family: u16,
    port: u16,
    protocol: u16,
    addr: [u8; 16],
    allowed: bool,
) {
    let kind = if allowed || op == net_op::CONNECT || op == net_op::SENDMSG {
        EventKind::Connect
    } else {
        EventKind::SocketDenied
    };
    if let Some(mut entry) = reserve::<NetEvent>() {
        entry.write(NetEvent {
            header: header(kind, cgroup_id),
            family,
            port,
            protocol,
            op,
            allowed: allowed as u8,
            addr,
        });
        entry.submit(0);
    }
}

/// Raw and packet sockets are refused in sessions.
#[cgroup_sock(sock_create)]
pub fn cgroup_sock_create(ctx: SockContext) -> i32 {
    let Some((cgroup_id, _)) = current_session() else {
        return SOCK_ADDR_ALLOW;
    };
    // SAFETY: the context pointer is the kernel's bpf_sock for this call.
    let sk = unsafe { &*ctx.sock };
    if socket_allowed(sk.family, sk.type_, sk.protocol) {
        return SOCK_ADDR_ALLOW;
    }
    socket_denied(
        cgroup_id,
        sk.family as u16,
        sk.type_ as u16,
        sk.protocol as u16,
    );
    SOCK_ADDR_DENY
}

/// Records a socket the session may not create (here, or refused by its
/// seccomp filter: see `syscalls::tp_exit_socket`).
#[inline(always)]
pub fn socket_denied(cgroup_id: u64, family: u16, ty: u16, protocol: u16) {
    count(Counter::SocketDenied);
    // The type travels in `protocol`, the socket's protocol in `port`.
    emit(
        cgroup_id,
        net_op::SOCKET,
        family,
        protocol,
        ty,
        [0; 16],
        false,
    );
}

/// The sockets a session may create: unix; TCP and UDP over IPv4 and IPv6
/// (whose every address the connect, sendmsg and bind hooks judge); and
/// route netlink (raw or datagram, as netlink always is). Refused: raw IP
/// sockets, ICMP ("ping") sockets and other IP protocols (SCTP, UDP-Lite,
/// MPTCP), whose sends these hooks do not all see, and every other family
/// (packet, vsock, alg, ...).
#[inline(always)]
fn socket_allowed(family: u32, ty: u32, protocol: u32) -> bool {
    match family {
        FAMILY_UNIX => true,
        // Only the protocols whose every send the sock_addr hooks see.
        FAMILY_INET | FAMILY_INET6 => {
            ty != SOCK_RAW && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)
        }
        FAMILY_NETLINK => protocol == NETLINK_ROUTE,
        _ => false,
    }
}
