//! Which names a session may resolve: the host names of its `network.allow`
//! and `network.ask` rules, exact (`api.example.com`) or below a wildcard
//! (`*.github.com` covers `api.github.com`, not `github.com`),
//! case-insensitively and with or without the trailing dot. Pure.
use crate::policy::{HostPattern, NetRule, Network, PortRange, Protocols};

/// A name as compared: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What a rule names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// This name.
    Exact(String),
    /// Any name below this one.
    Below(String),
}

/// One name rule of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRule {
    /// The rule as written (`api.example.com:443`).
    pub text: String,
    pattern: Pattern,
    /// Ports its answers open.
    pub ports: PortRange,
    /// Transports its answers open.
    pub protocols: Protocols,
    /// From `network.ask`: answered, but nothing is opened until a human
    /// approves (there is no approval queue yet).
    pub ask: bool,
}

impl NameRule {
    fn from_rule(rule: &NetRule, ask: bool) -> Option<Self> {
        let pattern = match &rule.host {
            HostPattern::Domain(d) => Pattern::Exact(normalize(d)),
            HostPattern::Wildcard(d) => Pattern::Below(normalize(d)),
            HostPattern::Any | HostPattern::Net(_) => return None,
        };
        Some(Self {
            text: rule.to_string(),
            pattern,
            ports: rule.ports,
            protocols: rule.protocols,
            ask,
        })
    }

    /// Whether this rule covers `name` (already normalized).
    pub fn matches(&self, name: &str) -> bool {
        match &self.pattern {
            Pattern::Exact(n) => name == n,
            Pattern::Below(parent) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// The name rules of a policy's `[network]`.
pub fn rules(network: &Network) -> Vec<NameRule> {
    network
        .allow
        .iter()
        .filter_map(|r| NameRule::from_rule(r, false))
        .chain(
            network
                .ask
                .iter()
                .filter_map(|r| NameRule::from_rule(r, true)),
        )
        .collect()
}

/// Indexes of the rules covering `name`.
pub fn matching(rules: &[NameRule], name: &str) -> Vec<usize> {
    let name = normalize(name);
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matches(&name))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(allow: &[&str], ask: &[&str]) -> Network {
        Network {
            allow: allow.iter().map(|r| NetRule::parse(r).unwrap()).collect(),
            ask: ask.iter().map(|r| NetRule::parse(r).unwrap()).collect(),
            bind: Vec::new(),
            dns: true,
            unix: Vec::new(),
        }
    }

    #[test]
    fn exact_wildcard_case_and_trailing_dot() {
        let rules = rules(&network(
            &[
                "api.example.com:443",
                "*.github.com:443",
                "10.0.0.0/8:*",
                "*:80",
            ],
            &["pypi.org:443"],
        ));
        assert_eq!(rules.len(), 3, "addresses and * are not name rules");
        assert_eq!(matching(&rules, "api.example.com"), [0]);
        assert_eq!(matching(&rules, "API.Example.COM."), [0]);
        assert!(matching(&rules, "example.com").is_empty());
        assert!(matching(&rules, "xapi.example.com").is_empty());
        assert_eq!(matching(&rules, "api.github.com"), [1]);
        assert_eq!(matching(&rules, "a.b.github.com."), [1]);
        assert!(
            matching(&rules, "github.com").is_empty(),
            "the bare parent is not below itself"
        );
        assert!(matching(&rules, "evilgithub.com").is_empty());
        assert!(matching(&rules, ".github.com").is_empty());
        assert_eq!(matching(&rules, "pypi.org"), [2]);
        assert!(rules[2].ask);
    }
}
