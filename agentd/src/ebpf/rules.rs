//! Compiling a session's network rules into LPM trie entries (pure).
//!
//! The kernel looks up the longest matching prefix, so each entry carries
//! every port rule that applies to its whole prefix: the rules of every
//! covering prefix are merged in. Local ranges (loopback, link-local,
//! private) always get an entry of their own, so that a wide rule (`*:443`)
//! does not reach them: only rules that name a local range apply inside it.
use std::collections::BTreeMap;

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

/// The trie entries for `rules`. With `exclude_local`, wide rules do not
/// apply inside local ranges (egress); without it (bind rules), they do.
pub fn compile(
    rules: &[Resolved],
    exclude_local: bool,
) -> Result<Vec<(IpNet, PortRules)>, TooManyRules> {
    let locals = if exclude_local {
        local_networks()
    } else {
        Vec::new()
    };
    let in_local = |net: &IpNet| locals.iter().any(|l| contains(l, net));
    let mut prefixes: Vec<IpNet> = rules.iter().map(|r| r.net.trunc()).collect();
    prefixes.extend(locals.iter().copied());
    prefixes.sort();
    prefixes.dedup();
    let mut out = BTreeMap::new();
    for prefix in prefixes {
        let local = in_local(&prefix);
        let mut merged: Vec<PortRule> = Vec::new();
        for r in rules {
            let applies = contains(&r.net.trunc(), &prefix) && (!local || in_local(&r.net.trunc()));
            if applies {
                let pr = port_rule(r);
                if !merged.contains(&pr) {
                    merged.push(pr);
                }
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
        out.insert(prefix, value);
    }
    Ok(out.into_iter().collect())
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
}
