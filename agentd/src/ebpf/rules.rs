//! Compiling a session's network rules into LPM trie entries (pure).
//!
//! The kernel looks up the longest matching prefix, so each entry carries
//! every port rule that applies to its whole prefix: the rules of every
//! covering prefix are merged in. Local ranges (loopback, link-local,
//! private) always get an entry of their own, so that a wide rule (`*:443`)
//! does not reach them: only rules that name a local range apply inside it.
use std::collections::{BTreeSet, HashMap, HashSet};

use agentd_common::{MAX_PORT_RULES, PROTO_TCP, PROTO_UDP, PortRule, PortRules};
use ipnet::IpNet;

use crate::policy::{PortRange, Protocols, local_networks};

/// One rule after host resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Where.
    pub net: IpNet,
    /// Which ports.
    pub ports: PortRange,
    /// Which transports.
    pub protocols: Protocols,
}

/// Why rules cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{prefix} would need {count} port rules; at most {MAX_PORT_RULES} can apply to one address range"
)]
pub struct TooManyRules {
    /// The prefix.
    pub prefix: IpNet,
    /// Rules that apply to it.
    pub count: usize,
}

fn port_rule(r: &Resolved) -> PortRule {
    PortRule {
        first: r.ports.first,
        last: r.ports.last,
        protocols: match r.protocols {
            Protocols::Both => PROTO_TCP | PROTO_UDP,
            Protocols::Tcp => PROTO_TCP,
            Protocols::Udp => PROTO_UDP,
        },
        reserved: [0; 3],
    }
}

fn contains(outer: &IpNet, inner: &IpNet) -> bool {
    outer.prefix_len() <= inner.prefix_len()
        && outer.contains(&inner.network())
        && std::mem::discriminant(outer) == std::mem::discriminant(inner)
}

/// Trie entries: a prefix and every port rule that applies to it.
pub type Entries = Vec<(IpNet, PortRules)>;

/// The trie entries for `rules`. With `exclude_local`, wide rules do not
/// apply inside local ranges (egress); without it (bind rules), they do.
///
/// Each prefix gets the rules of every prefix covering it. A session's
/// answers can open a thousand host addresses, so covering prefixes are
/// found by looking up the prefix at each length some rule uses (a few),
/// not by scanning every rule for every prefix.
pub fn compile(rules: &[Resolved], exclude_local: bool) -> Result<Entries, TooManyRules> {
    let locals = if exclude_local {
        local_networks()
    } else {
        Vec::new()
    };
    let in_local = |net: &IpNet| locals.iter().any(|l| contains(l, net));
    // Rule indexes by prefix, and the prefix lengths in use per family.
    let mut by_net: HashMap<IpNet, Vec<usize>> = HashMap::new();
    let mut lengths: BTreeSet<(bool, u8)> = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let net = r.net.trunc();
        by_net.entry(net).or_default().push(i);
        lengths.insert((net.addr().is_ipv4(), net.prefix_len()));
    }
    let mut prefixes: Vec<IpNet> = by_net.keys().copied().collect();
    prefixes.extend(locals.iter().copied());
    prefixes.sort();
    prefixes.dedup();
    let mut out = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let local = in_local(&prefix);
        let v4 = prefix.addr().is_ipv4();
        let mut covering: Vec<usize> = lengths
            .iter()
            .filter(|(family, len)| *family == v4 && *len <= prefix.prefix_len())
            .filter_map(|(_, len)| IpNet::new(prefix.addr(), *len).ok().map(|n| n.trunc()))
            .filter(|outer| !local || in_local(outer))
            .filter_map(|outer| by_net.get(&outer))
            .flatten()
            .copied()
            .collect();
        covering.sort_unstable();
        out.push((prefix, merge(prefix, covering.iter().map(|&i| &rules[i]))?));
    }
    Ok(out)
}

/// The entry `compile(rules, exclude_local)` gives `prefix`, alone: `None`
/// when it has none. For updating one address without recompiling a
/// session's every rule.
pub fn entry(
    rules: &[Resolved],
    prefix: IpNet,
    exclude_local: bool,
) -> Result<Option<PortRules>, TooManyRules> {
    let prefix = prefix.trunc();
    let locals = if exclude_local {
        local_networks()
    } else {
        Vec::new()
    };
    let in_local = |net: &IpNet| locals.iter().any(|l| contains(l, net));
    if !locals.contains(&prefix) && !rules.iter().any(|r| r.net.trunc() == prefix) {
        return Ok(None);
    }
    let local = in_local(&prefix);
    let covering = rules.iter().filter(|r| {
        let net = r.net.trunc();
        contains(&net, &prefix) && (!local || in_local(&net))
    });
    merge(prefix, covering).map(Some)
}

/// The port rules of `covering` (in order, without repeats) as one entry.
fn merge<'a>(
    prefix: IpNet,
    covering: impl Iterator<Item = &'a Resolved>,
) -> Result<PortRules, TooManyRules> {
    let mut merged: Vec<PortRule> = Vec::new();
    for pr in covering.map(port_rule) {
        if !merged.contains(&pr) {
            merged.push(pr);
        }
    }
    if merged.len() > MAX_PORT_RULES {
        return Err(TooManyRules {
            prefix,
            count: merged.len(),
        });
    }
    let mut value = PortRules {
        count: u32::try_from(merged.len()).unwrap_or(0),
        rules: [PortRule::default(); MAX_PORT_RULES],
    };
    value.rules[..merged.len()].copy_from_slice(&merged);
    Ok(value)
}

/// What turns the kernel's entries `old` into `new`: the entries to write
/// (new prefixes, and prefixes whose ports changed) and those to remove.
/// Linear: a session can hold a thousand addresses its answers opened.
pub fn diff(old: &[(IpNet, PortRules)], new: &[(IpNet, PortRules)]) -> (Entries, Entries) {
    let before: HashMap<&IpNet, &PortRules> = old.iter().map(|(n, r)| (n, r)).collect();
    let after: HashSet<&IpNet> = new.iter().map(|(n, _)| n).collect();
    let write = new
        .iter()
        .filter(|(n, r)| before.get(n) != Some(&r))
        .copied()
        .collect();
    let remove = old
        .iter()
        .filter(|(n, _)| !after.contains(n))
        .copied()
        .collect();
    (write, remove)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn rule(net: &str, first: u16, last: u16, protocols: Protocols) -> Resolved {
        Resolved {
            net: net.parse().unwrap(),
            ports: PortRange { first, last },
            protocols,
        }
    }

    /// What the kernel would decide: longest prefix, then port rules.
    fn decide(entries: &[(IpNet, PortRules)], addr: &str, port: u16, proto: u8) -> bool {
        let addr: IpAddr = addr.parse().unwrap();
        entries
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .is_some_and(|(_, r)| r.allows(port, proto))
    }

    #[test]
    fn default_deny() {
        let e = compile(&[], true).unwrap();
        assert!(!decide(&e, "1.1.1.1", 443, PROTO_TCP));
        assert!(!decide(&e, "2606:4700::1111", 443, PROTO_TCP));
    }

    #[test]
    fn wide_rules_do_not_reach_local_ranges() {
        let e = compile(
            &[
                rule("0.0.0.0/0", 443, 443, Protocols::Both),
                rule("::/0", 443, 443, Protocols::Both),
            ],
            true,
        )
        .unwrap();
        assert!(decide(&e, "93.184.216.34", 443, PROTO_TCP));
        assert!(!decide(&e, "93.184.216.34", 80, PROTO_TCP));
        for local in [
            "127.0.0.1",
            "169.254.169.254",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.5.5",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(!decide(&e, local, 443, PROTO_TCP), "{local}");
        }
    }

    #[test]
    fn named_local_ranges_are_reachable() {
        let e = compile(
            &[
                rule("10.1.2.0/24", 5432, 5432, Protocols::Tcp),
                rule("0.0.0.0/0", 443, 443, Protocols::Tcp),
                rule("127.0.0.1/32", 8080, 8090, Protocols::Both),
            ],
            true,
        )
        .unwrap();
        assert!(decide(&e, "10.1.2.7", 5432, PROTO_TCP));
        assert!(!decide(&e, "10.1.2.7", 5432, PROTO_UDP));
        assert!(
            !decide(&e, "10.1.2.7", 443, PROTO_TCP),
            "the wide rule stays out of 10/8"
        );
        assert!(!decide(&e, "10.1.3.7", 5432, PROTO_TCP));
        assert!(decide(&e, "127.0.0.1", 8085, PROTO_UDP));
        assert!(!decide(&e, "127.0.0.2", 8085, PROTO_UDP));
    }

    #[test]
    fn specific_prefixes_keep_wider_ports() {
        let e = compile(
            &[
                rule("8.8.0.0/16", 53, 53, Protocols::Udp),
                rule("8.8.8.8/32", 443, 443, Protocols::Tcp),
            ],
            true,
        )
        .unwrap();
        assert!(
            decide(&e, "8.8.8.8", 53, PROTO_UDP),
            "the /16 rule still applies inside the /32"
        );
        assert!(decide(&e, "8.8.8.8", 443, PROTO_TCP));
        assert!(!decide(&e, "8.8.4.4", 443, PROTO_TCP));
    }

    #[test]
    fn bind_rules_do_not_exclude_local_ranges() {
        let e = compile(&[rule("0.0.0.0/0", 8080, 8080, Protocols::Tcp)], false).unwrap();
        assert!(decide(&e, "127.0.0.1", 8080, PROTO_TCP));
    }

    #[test]
    fn too_many_rules_for_one_prefix() {
        let rules: Vec<Resolved> = (0..20)
            .map(|p| rule("1.2.3.4/32", 1000 + p, 1000 + p, Protocols::Tcp))
            .collect();
        assert!(compile(&rules, true).is_err());
    }

    #[test]
    fn diff_writes_what_changed_and_removes_what_went() {
        let old = compile(
            &[
                rule("203.0.113.1/32", 443, 443, Protocols::Tcp),
                rule("203.0.113.2/32", 443, 443, Protocols::Tcp),
            ],
            true,
        )
        .unwrap();
        let new = compile(
            &[
                rule("203.0.113.2/32", 80, 80, Protocols::Tcp),
                rule("203.0.113.3/32", 443, 443, Protocols::Tcp),
            ],
            true,
        )
        .unwrap();
        let (write, remove) = diff(&old, &new);
        let nets =
            |v: &[(IpNet, PortRules)]| v.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(nets(&write), ["203.0.113.2/32", "203.0.113.3/32"]);
        assert_eq!(nets(&remove), ["203.0.113.1/32"]);
        assert_eq!(diff(&new, &new), (Vec::new(), Vec::new()));
    }

    /// The definition `compile` implements faster: every rule whose prefix
    /// covers the entry's, except wide rules inside local ranges.
    fn compile_by_definition(rules: &[Resolved]) -> Vec<(IpNet, Vec<PortRule>)> {
        let locals = local_networks();
        let in_local = |n: &IpNet| locals.iter().any(|l| contains(l, n));
        let mut prefixes: Vec<IpNet> = rules.iter().map(|r| r.net.trunc()).collect();
        prefixes.extend(locals.iter().copied());
        prefixes.sort();
        prefixes.dedup();
        prefixes
            .into_iter()
            .map(|p| {
                let mut merged = Vec::new();
                for r in rules {
                    let net = r.net.trunc();
                    if contains(&net, &p) && (!in_local(&p) || in_local(&net)) {
                        let pr = port_rule(r);
                        if !merged.contains(&pr) {
                            merged.push(pr);
                        }
                    }
                }
                (p, merged)
            })
            .collect()
    }

    #[test]
    fn compile_matches_its_definition() {
        // Nested v4 and v6 prefixes of many lengths, wide rules, local
        // ranges and host addresses, from a fixed pseudo-random sequence.
        let mut x = 0x2545_f491_u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut rules = vec![
            rule("0.0.0.0/0", 443, 443, Protocols::Tcp),
            rule("::/0", 80, 80, Protocols::Both),
            rule("10.0.0.0/8", 22, 22, Protocols::Tcp),
        ];
        for _ in 0..300 {
            let r = next();
            let len = [8, 16, 24, 32, 32, 32][(r % 6) as usize];
            let first = [10, 93, 172, 203][(r >> 3) as usize % 4];
            let addr = format!(
                "{first}.{}.{}.{}",
                (r >> 8) % 4,
                (r >> 16) % 4,
                (r >> 24) % 4
            );
            let port = 1 + u16::try_from(r % 5).unwrap();
            rules.push(rule(&format!("{addr}/{len}"), port, port, Protocols::Udp));
            if r % 7 == 0 {
                let v6 = format!(
                    "2001:db8:{:x}::{:x}/{}",
                    r % 3,
                    r % 5,
                    [32, 48, 128][(r % 3) as usize]
                );
                rules.push(rule(&v6, port, port + 1, Protocols::Tcp));
            }
        }
        let fast = compile(&rules, true).unwrap();
        let want = compile_by_definition(&rules);
        assert_eq!(fast.len(), want.len());
        for ((net, value), (want_net, want_rules)) in fast.iter().zip(&want) {
            assert_eq!(net, want_net);
            assert_eq!(
                &value.rules[..value.count as usize],
                &want_rules[..],
                "{net}"
            );
            assert_eq!(entry(&rules, *net, true), Ok(Some(*value)), "{net} alone");
        }
        for absent in ["93.184.216.34/32", "2001:db8:7::/48", "172.16.0.0/16"] {
            let net: IpNet = absent.parse().unwrap();
            assert!(!fast.iter().any(|(n, _)| *n == net));
            assert_eq!(entry(&rules, net, true), Ok(None), "{absent}");
        }
    }
}
