//! Addresses opened by DNS answers, each until its TTL (clamped, plus a
//! grace period) runs out. Pure: the resolver turns the table into egress
//! entries with [`Opened::resolved`].
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::names::NameRule;
use crate::{
    ebpf::rules::Resolved,
    policy::{judged_address, local_networks},
};

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
    let net = IpNet::from(judged_address(addr));
    !local_networks().iter().any(|l| l.contains(&net))
}

/// How many (address, rule) pairs one session's answers can hold open.
/// The kernel's egress tries are shared by every session: without a bound,
/// one session resolving name after name under a wildcard would fill them
/// for all. When full, the pair closest to expiry makes room.
pub const MAX_OPENED: usize = 1024;

/// Opened addresses: (address, index of the rule whose name was asked) →
/// until when, and the addresses whose rules changed since the kernel was
/// last told.
#[derive(Debug, Default)]
pub struct Opened {
    until: BTreeMap<(IpAddr, usize), Instant>,
    changed: BTreeSet<IpAddr>,
}

impl Opened {
    /// Opens `addr` for rule `rule` until `until` (extending, never
    /// shortening). Returns whether the address is newly open for the rule
    /// (an extension only moves the expiry: the kernel has nothing to do).
    pub fn open(&mut self, addr: IpAddr, rule: usize, until: Instant) -> bool {
        if let Some(t) = self.until.get_mut(&(addr, rule)) {
            if *t < until {
                *t = until;
            }
            return false;
        }
        if self.full() {
            self.evict_soonest();
        }
        self.until.insert((addr, rule), until);
        self.changed.insert(addr);
        true
    }

    /// Whether the table is at [`MAX_OPENED`].
    pub fn full(&self) -> bool {
        self.until.len() >= MAX_OPENED
    }

    fn evict_soonest(&mut self) {
        if let Some(k) = self.until.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
            self.until.remove(&k);
            self.changed.insert(k.0);
        }
    }

    /// Drops what expired by `now`; returns whether anything did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.until.len();
        let changed = &mut self.changed;
        self.until.retain(|(addr, _), t| {
            let keep = *t > now;
            if !keep {
                changed.insert(*addr);
            }
            keep
        });
        self.until.len() != before
    }

    /// The addresses whose rules changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<IpAddr> {
        std::mem::take(&mut self.changed)
    }

    /// Gives back addresses taken by [`take_changed`] that the kernel was
    /// not told about after all.
    ///
    /// [`take_changed`]: Opened::take_changed
    pub fn still_changed(&mut self, addrs: BTreeSet<IpAddr>) {
        self.changed.extend(addrs);
    }

    /// The rules `addr` is open for, with the ports and transports of the
    /// rule its name matched.
    pub fn at(&self, addr: IpAddr, rules: &[NameRule]) -> Vec<Resolved> {
        self.until
            .range((addr, 0)..=(addr, usize::MAX))
            .filter_map(|((_, i), _)| {
                rules.get(*i).map(|r| Resolved {
                    net: IpNet::from(addr),
                    ports: r.ports,
                    protocols: r.protocols,
                })
            })
            .collect()
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
            unix: Vec::new(),
        });
        let now = Instant::now();
        let a: IpAddr = "93.184.216.34".parse().unwrap();
        let mut t = Opened::default();
        assert!(t.open(a, 0, now + Duration::from_secs(10)));
        assert_eq!(t.take_changed(), BTreeSet::from([a]));
        assert!(
            !t.open(a, 0, now + Duration::from_secs(5)),
            "never shortened"
        );
        assert!(!t.expire(now + Duration::from_secs(9)));
        assert!(
            !t.open(a, 0, now + Duration::from_secs(20)),
            "an extension changes no kernel entry"
        );
        assert!(t.take_changed().is_empty());
        assert_eq!(t.at(a, &rules).len(), 1);
        assert_eq!(t.at(a, &rules)[0].ports.first, 443);
        assert!(!t.expire(now + Duration::from_secs(19)), "extended");
        assert!(t.expire(now + Duration::from_secs(20)));
        assert_eq!(t.take_changed(), BTreeSet::from([a]));
        assert!(t.at(a, &rules).is_empty());
    }

    #[test]
    fn an_address_is_open_for_every_rule_its_names_matched() {
        let rules = super::super::names::rules(&Network {
            allow: vec![
                NetRule::parse("api.example.com:443").unwrap(),
                NetRule::parse("*.example.com:8443").unwrap(),
            ],
            ask: Vec::new(),
            bind: Vec::new(),
            dns: true,
            unix: Vec::new(),
        });
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = (
            "93.184.216.34".parse().unwrap(),
            "93.184.216.35".parse().unwrap(),
        );
        let mut t = Opened::default();
        t.open(a, 0, now + Duration::from_secs(10));
        t.open(a, 1, now + Duration::from_secs(20));
        t.open(b, 1, now + Duration::from_secs(10));
        let ports = |t: &Opened, addr| {
            t.at(addr, &rules)
                .iter()
                .map(|r| r.ports.first)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&t, a), [443, 8443]);
        assert_eq!(ports(&t, b), [8443]);
        t.take_changed();
        assert!(t.expire(now + Duration::from_secs(15)));
        let changed = t.take_changed();
        assert_eq!(changed, BTreeSet::from([a, b]));
        t.still_changed(changed);
        assert_eq!(t.take_changed(), BTreeSet::from([a, b]), "given back");
        assert_eq!(ports(&t, a), [8443]);
        assert!(ports(&t, b).is_empty());
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
            // Local IPv4 addresses in IPv6 forms: NAT64, local-use NAT64,
            // 6to4, IPv4-compatible, v4-mapped.
            "64:ff9b::7f00:1",
            "64:ff9b::a63:1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::10.0.0.1",
            "::ffff:192.168.1.1",
            // Multicast, broadcast, reserved, site-local, benchmarking.
            "239.255.255.250",
            "224.0.0.251",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::fb",
            "fec0::1",
            "198.18.0.1",
        ] {
            assert!(!openable(local.parse().unwrap()), "{local}");
        }
        assert!(openable("93.184.216.34".parse().unwrap()));
        assert!(openable("2606:2800:220:1::1".parse().unwrap()));
        // A public IPv4 address through NAT64 (DNS64 answers) is public.
        assert!(openable("64:ff9b::5db8:d822".parse().unwrap()));
        assert_eq!(
            judged_address("64:ff9b::5db8:d822".parse().unwrap()),
            "93.184.216.34".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            judged_address("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap(),
            "loopback is not an IPv4-compatible address"
        );
    }

    #[test]
    fn a_full_table_drops_what_expires_soonest() {
        let now = Instant::now();
        let mut t = Opened::default();
        for i in 0..MAX_OPENED {
            let addr = IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
            let secs = 100 + u64::try_from(i).unwrap();
            assert!(t.open(addr, 0, now + Duration::from_secs(secs)));
        }
        assert!(t.full());
        let newest = IpAddr::from([198, 19, 0, 1]);
        assert!(t.open(newest, 0, now + Duration::from_secs(50)));
        assert!(t.full(), "still at the bound");
        let open: Vec<IpAddr> = t.until.keys().map(|(a, _)| *a).collect();
        assert!(
            t.take_changed().contains(&IpAddr::from([198, 18, 0, 0])),
            "the kernel is told"
        );
        assert!(open.contains(&newest), "the new answer is open");
        assert!(
            !open.contains(&IpAddr::from([198, 18, 0, 0])),
            "the one expiring soonest made room"
        );
    }
}
