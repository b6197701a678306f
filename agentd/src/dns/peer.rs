//! Whose socket sent a query: the owner of the peer's socket, asked of the
//! kernel (`NETLINK_SOCK_DIAG`, one exact lookup by address and port).
//!
//! A session's resolver listens on a loopback address any local process
//! can reach; the kernel redirects the session's port-53 traffic there.
//! Only queries from sockets owned by the session's uid are the session's:
//! no other process (root aside) can own a socket with that uid, and two
//! sockets cannot hold the same local address and port without both
//! asking for it.
use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR: usize = 16;
/// Offset of `idiag_uid` in `struct inet_diag_msg`.
const DIAG_UID: usize = 4 + 48 + 12;

/// The transport a query came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// The uid owning the socket at `peer` that talks to `local`, if the
/// kernel knows one. Both orders of the pair are asked: the kernel's TCP
/// and UDP lookups read the request's addresses the opposite way round.
pub fn owner(transport: Transport, peer: SocketAddr, local: SocketAddr) -> io::Result<Vec<u32>> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    let mut owners = Vec::new();
    for (src, dst) in [(peer, local), (local, peer)] {
        let req = request(transport, src, dst);
        sendto(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &req,
            &kernel,
            MsgFlags::empty(),
        )?;
        let mut buf = [0u8; 512];
        let n = recv(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &mut buf,
            MsgFlags::empty(),
        )?;
        if let Some(uid) = reply_uid(&buf[..n]) {
            owners.push(uid);
        }
    }
    Ok(owners)
}

/// A `SOCK_DIAG_BY_FAMILY` request for the socket (src, dst).
fn request(transport: Transport, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family: u8 = if src.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    };
    let protocol = match transport {
        Transport::Udp => libc::IPPROTO_UDP as u8,
        Transport::Tcp => libc::IPPROTO_TCP as u8,
    };
    let mut m = Vec::with_capacity(NLMSG_HDR + 56);
    m.extend_from_slice(&((NLMSG_HDR + 56) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    // inet_diag_req_v2: family, protocol, ext, pad, states (all).
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports and addresses in network order.
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    m.extend_from_slice(&address(src.ip()));
    m.extend_from_slice(&address(dst.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // interface
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m
}

/// A diag address field: 16 bytes, an IPv4 address in the first four.
fn address(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

/// The uid in a `SOCK_DIAG_BY_FAMILY` answer (`None` for an error: no such
/// socket).
fn reply_uid(msg: &[u8]) -> Option<u32> {
    let ty = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if ty == NLMSG_ERROR || ty != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let at = NLMSG_HDR + DIAG_UID;
    Some(u32::from_ne_bytes(msg.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    #[test]
    fn requests_have_the_kernels_layout() {
        let r = request(
            Transport::Udp,
            "127.0.0.1:5353".parse().unwrap(),
            "127.53.0.1:53".parse().unwrap(),
        );
        assert_eq!(r.len(), 72);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], libc::IPPROTO_UDP as u8);
        assert_eq!(&r[24..26], &5353u16.to_be_bytes());
        assert_eq!(&r[26..28], &53u16.to_be_bytes());
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[127, 53, 0, 1]);
    }

    #[test]
    fn the_owner_of_a_local_socket_is_found() {
        let me = nix::unistd::getuid().as_raw();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"q", server.local_addr().unwrap()).unwrap();
        let owners = owner(
            Transport::Udp,
            client.local_addr().unwrap(),
            server.local_addr().unwrap(),
        )
        .unwrap();
        assert!(owners.contains(&me), "{owners:?}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let owners = owner(
            Transport::Tcp,
            stream.local_addr().unwrap(),
            listener.local_addr().unwrap(),
        )
        .unwrap();
        assert!(owners.contains(&me), "{owners:?}");
    }
}
