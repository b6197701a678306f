//! Addresses opened by DNS answers, each until its TTL (clamped, plus a
//! grace period) runs out. Pure: the resolver turns the table into egress
//! entries with [`Opened::resolved`].
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::names::NameRule;
use crate::{ebpf::rules::Resolved, policy::local_networks};

/// How long answers keep addresses open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Shortest time an answer is honoured.
    pub min_ttl: Duration,
    /// Longest.
    pub max_ttl: Duration,
    /// Added after the TTL (connections that started just before expiry).
    pub grace: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(30),
        }
    }
}

impl Lifetimes {
    /// How long an answer with `ttl` seconds keeps its address open.
    pub fn keep(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl)).clamp(self.min_ttl, self.max_ttl) + self.grace
    }
}

/// Whether an answer may open `addr`: never loopback, link-local, private
/// or unspecified addresses (a name rule does not name them; an answer
/// pointing there is how DNS rebinding reaches metadata services).
pub fn openable(addr: IpAddr) -> bool {
    let net = IpNet::from(addr);
    !local_networks().iter().any(|l| l.contains(&net))
}

/// Opened addresses: (address, index of the rule whose name was asked) →
/// until when.
#[derive(Debug, Default)]
pub struct Opened {
    until: HashMap<(IpAddr, usize), Instant>,
}

impl Opened {
    /// Opens `addr` for rule `rule` until `until` (extending, never
    /// shortening). Returns whether the table changed.
    pub fn open(&mut self, addr: IpAddr, rule: usize, until: Instant) -> bool {
        match self.until.get(&(addr, rule)) {
            Some(t) if *t >= until => false,
            _ => {
                self.until.insert((addr, rule), until);
                true
            }
        }
    }

    /// Drops what expired by `now`; returns whether anything did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.until.len();
        self.until.retain(|_, t| *t > now);
        self.until.len() != before
    }

    /// The earliest expiry, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }

    /// The opened addresses as rules, with the ports and transports of the
    /// rule their name matched.
    pub fn resolved(&self, rules: &[NameRule]) -> Vec<Resolved> {
        let mut out: Vec<Resolved> = self
            .until
            .keys()
            .filter_map(|(addr, i)| {
                rules.get(*i).map(|r| Resolved {
                    net: IpNet::from(*addr),
                    ports: r.ports,
                    protocols: r.protocols,
                })
            })
            .collect();
        out.sort_by_key(|r| (r.net, r.ports.first, r.ports.last));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NetRule, Network};

    #[test]
    fn answers_open_until_their_clamped_ttl_plus_grace() {
        let l = Lifetimes::default();
        assert_eq!(l.keep(0), Duration::from_secs(35));
        assert_eq!(l.keep(300), Duration::from_secs(330));
        assert_eq!(l.keep(u32::MAX), Duration::from_secs(3630));

        let rules = super::super::names::rules(&Network {
            allow: vec![NetRule::parse("api.example.com:443").unwrap()],
            ask: Vec::new(),
            bind: Vec::new(),
            dns: true,
        });
        let now = Instant::now();
        let a: IpAddr = "93.184.216.34".parse().unwrap();
        let mut t = Opened::default();
        assert!(t.open(a, 0, now + Duration::from_secs(10)));
        assert!(
            !t.open(a, 0, now + Duration::from_secs(5)),
            "never shortened"
        );
        assert_eq!(t.resolved(&rules).len(), 1);
        assert_eq!(t.resolved(&rules)[0].ports.first, 443);
        assert!(!t.expire(now + Duration::from_secs(9)));
        assert!(t.expire(now + Duration::from_secs(10)));
        assert!(t.resolved(&rules).is_empty());
    }

    #[test]
    fn local_answers_are_never_opened() {
        for local in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "192.168.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "0.0.0.0",
        ] {
            assert!(!openable(local.parse().unwrap()), "{local}");
        }
        assert!(openable("93.184.216.34".parse().unwrap()));
        assert!(openable("2606:2800:220:1::1".parse().unwrap()));
    }
}
