//! DNS redirect: every DNS query of a session (TCP or UDP port 53, to any
//! address) goes to the session's own resolver on loopback
//! (`SessionEntry::dns_ip4` port 53 for IPv4, `::1` port
//! `dns_port6_be` for IPv6), which answers only the names its policy
//! allows. The connect/sendmsg hooks in `egress.rs` call
//! [`redirect_v4`]/[`redirect_v6`]; what the process sees of its peer (the
//! source of answers, `getpeername`) is restored to the address it asked
//! for, so stub resolvers that check it accept the answer.
use agentd_common::{DNS_PORT, DnsOrigin, SESSION_DNS_REDIRECT, SOCK_ADDR_ALLOW, SessionEntry};
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::maps::{DNS_ORIGINS, current_session};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
fn cookie(sa: *mut bpf_sock_addr) -> u64 {
    // SAFETY: the helper reads the socket of this sock_addr context.
    unsafe { aya_ebpf::helpers::bpf_get_socket_cookie(sa.cast()) }
}

#[inline(always)]
fn remember(sa: *mut bpf_sock_addr, family: u16, addr: [u8; 16], port_be: u16) {
    let origin = DnsOrigin {
        addr,
        family,
        port_be,
        reserved: 0,
    };
    let _ = DNS_ORIGINS.insert(&cookie(sa), &origin, 0);
}

/// Whether the session's DNS goes to its resolver.
#[inline(always)]
pub fn redirects(session: &SessionEntry) -> bool {
    session.flags & SESSION_DNS_REDIRECT != 0
}

/// Sends an IPv4 DNS connect/datagram to the session's resolver.
#[inline(always)]
pub fn redirect_v4(ctx: &SockAddrContext, session: &SessionEntry) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel's bpf_sock_addr for this call; user_ip4 and
    // user_port are writable in connect4 and sendmsg4.
    unsafe {
        if (*sa).user_ip4 == u32::from_ne_bytes(session.dns_ip4) {
            // Already the resolver (an IPv6 socket's mapped datagram passes
            // the IPv4 hook after the IPv6 one): keep the first origin.
            return SOCK_ADDR_ALLOW;
        }
        let mut addr = [0u8; 16];
        let v4 = (*sa).user_ip4.to_ne_bytes();
        addr[0] = v4[0];
        addr[1] = v4[1];
        addr[2] = v4[2];
        addr[3] = v4[3];
        remember(sa, AF_INET, addr, (*sa).user_port as u16);
        (*sa).user_ip4 = u32::from_ne_bytes(session.dns_ip4);
    }
    SOCK_ADDR_ALLOW
}

/// `::1` as the four words of `user_ip6`.
#[inline(always)]
fn loopback6() -> [u32; 4] {
    [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
}

/// Sends an IPv6 DNS connect/datagram to the session's resolver on `::1`
/// (its own port); without one, IPv6 DNS is refused.
#[inline(always)]
pub fn redirect_v6(ctx: &SockAddrContext, session: &SessionEntry, addr: [u8; 16]) -> i32 {
    if session.dns_port6_be == 0 {
        return agentd_common::SOCK_ADDR_DENY;
    }
    let sa = ctx.sock_addr;
    let lo = loopback6();
    // SAFETY: as in redirect_v4; user_ip6 words and user_port are
    // writable in connect6 and sendmsg6.
    unsafe {
        let already = (*sa).user_ip6[0] == lo[0]
            && (*sa).user_ip6[1] == lo[1]
            && (*sa).user_ip6[2] == lo[2]
            && (*sa).user_ip6[3] == lo[3]
            && (*sa).user_port as u16 == session.dns_port6_be;
        if already {
            return SOCK_ADDR_ALLOW;
        }
        remember(sa, AF_INET6, addr, (*sa).user_port as u16);
        (*sa).user_ip6[0] = lo[0];
        (*sa).user_ip6[1] = lo[1];
        (*sa).user_ip6[2] = lo[2];
        (*sa).user_ip6[3] = lo[3];
        (*sa).user_port = u32::from(session.dns_port6_be);
    }
    SOCK_ADDR_ALLOW
}

/// The session, if it redirects DNS.
#[inline(always)]
fn redirecting() -> Option<SessionEntry> {
    let (_, session) = current_session()?;
    (session.flags & SESSION_DNS_REDIRECT != 0).then_some(session)
}

#[inline(always)]
fn restore_v4(ctx: &SockAddrContext) -> i32 {
    let Some(session) = redirecting() else {
        return 1;
    };
    let dns = session.dns_ip4;
    let sa = ctx.sock_addr;
    // SAFETY: the kernel's bpf_sock_addr; in recvmsg4/getpeername4 it
    // holds the peer, which may be rewritten.
    unsafe {
        if (*sa).user_ip4 != u32::from_ne_bytes(dns)
            || u16::from_be((*sa).user_port as u16) != DNS_PORT
        {
            return 1;
        }
        if let Some(origin) = DNS_ORIGINS.get(&cookie(sa))
            && origin.family == AF_INET
        {
            (*sa).user_ip4 = u32::from_ne_bytes([
                origin.addr[0],
                origin.addr[1],
                origin.addr[2],
                origin.addr[3],
            ]);
            (*sa).user_port = u32::from(origin.port_be);
        }
    }
    1
}

#[inline(always)]
fn restore_v6(ctx: &SockAddrContext) -> i32 {
    let Some(session) = redirecting() else {
        return 1;
    };
    let sa = ctx.sock_addr;
    let lo = loopback6();
    // SAFETY: as in restore_v4, for the IPv6 fields.
    unsafe {
        let is_resolver = session.dns_port6_be != 0
            && (*sa).user_ip6[0] == lo[0]
            && (*sa).user_ip6[1] == lo[1]
            && (*sa).user_ip6[2] == lo[2]
            && (*sa).user_ip6[3] == lo[3]
            && (*sa).user_port as u16 == session.dns_port6_be;
        if !is_resolver {
            return 1;
        }
        if let Some(origin) = DNS_ORIGINS.get(&cookie(sa))
            && origin.family == AF_INET6
        {
            let a = origin.addr;
            (*sa).user_ip6[0] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
            (*sa).user_ip6[1] = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
            (*sa).user_ip6[2] = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
            (*sa).user_ip6[3] = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
            (*sa).user_port = u32::from(origin.port_be);
        }
    }
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn cgroup_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_v4(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn cgroup_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_v6(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn cgroup_getpeername4(ctx: SockAddrContext) -> i32 {
    restore_v4(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn cgroup_getpeername6(ctx: SockAddrContext) -> i32 {
    restore_v6(&ctx)
}
