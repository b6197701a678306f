//! Who is on the other end of a connection, and what they may do.
//!
//! The kernel vouches for the peer's uid, gid and pid (`SO_PEERCRED`, taken
//! when it connected); its supplementary groups come from
//! `/proc/<pid>/status` at request time. A peer whose process is gone is
//! treated as belonging to no group.
use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::config::Config;

/// The peer of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its pid.
    pub pid: i32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Nothing.
    None,
    /// Run sessions; see and kill its own.
    Run,
    /// Also kill any session, disable and enable agents, read every record.
    Admin,
    /// uid 0.
    Root,
}

impl Peer {
    /// The peer of `stream`.
    pub fn of(stream: &UnixStream) -> std::io::Result<Self> {
        let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: groups_of(cred.pid()),
        })
    }

    /// Whether the peer is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// The peer's role under `config`.
    pub fn role(&self, config: &Config) -> Role {
        if self.uid == 0 {
            return Role::Root;
        }
        let member = |name: &str| gid_of(name).is_some_and(|g| self.in_group(g));
        if member(&config.admin_group) {
            Role::Admin
        } else if member(&config.run_group) {
            Role::Run
        } else {
            Role::None
        }
    }
}

/// The gid of group `name`, if it exists.
pub fn gid_of(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Supplementary groups of process `pid` (empty if it is gone).
fn groups_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_groups(&s))
        .unwrap_or_default()
}

fn parse_groups(status: &str) -> Option<Vec<u32>> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_the_status_file() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 27 1001 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), Some(vec![4, 27, 1001]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }

    #[test]
    fn roles_follow_groups() {
        let config = Config {
            run_group: "root".into(),
            admin_group: "no-such-group-agentd".into(),
            ..Config::default()
        };
        let peer = |uid, gid, groups: Vec<u32>| Peer {
            uid,
            gid,
            pid: 1,
            groups,
        };
        assert_eq!(peer(0, 0, vec![]).role(&config), Role::Root);
        assert_eq!(peer(1000, 0, vec![]).role(&config), Role::Run);
        assert_eq!(peer(1000, 1000, vec![0]).role(&config), Role::Run);
        assert_eq!(peer(1000, 1000, vec![5]).role(&config), Role::None);
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
    }
}
