//! Redaction: secrets never reach the audit trail, `agentd logs` or
//! agentd's own logs. Applied to every string before it is written.
use regex::Regex;

/// What replaces a redacted value.
pub const MASK: &str = "[REDACTED]";

/// Values shorter than this are not scrubbed by exact match (a one-letter
/// environment value would otherwise erase every such letter).
pub const MIN_SECRET_LEN: usize = 6;

/// Built-in patterns for tokens that look like credentials.
pub const BUILTIN_PATTERNS: &[&str] = &[
    // HTTP bearer and basic credentials
    r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}",
    r"(?i)\bbasic\s+[a-z0-9+/=]{12,}",
    // common API key prefixes
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{16,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{30,}",
    // private key blocks
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    // password=… in URLs and arguments
    r"(?i)\b(password|passwd|secret|token|api[_-]?key)=[^\s&]+",
    r"://[^/\s:@]+:[^/\s@]+@",
];

/// The built-in patterns, compiled once per process (every session's
/// redactor shares them).
fn builtin() -> &'static [Regex] {
    static COMPILED: std::sync::LazyLock<Vec<Regex>> = std::sync::LazyLock::new(|| {
        BUILTIN_PATTERNS
            .iter()
            .filter_map(|p| Regex::new(p).ok())
            .collect()
    });
    &COMPILED
}

/// Scrubs secrets from text.
#[derive(Debug, Clone)]
pub struct Redactor {
    exact: Vec<String>,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// A redactor for exact `secrets` (shorter ones are ignored), the
    /// policy's `patterns` and the built-in ones.
    pub fn new(secrets: impl IntoIterator<Item = String>, patterns: &[Regex]) -> Self {
        let mut exact: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so that a secret containing another is masked whole.
        exact.sort_by_key(|s| std::cmp::Reverse(s.len()));
        exact.dedup();
        Self {
            exact,
            patterns: patterns.to_vec(),
        }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.exact {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        for re in builtin().iter().chain(&self.patterns) {
            if re.is_match(&out) {
                out = re.replace_all(&out, MASK).into_owned();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_exact_values_patterns_and_builtins() {
        let custom = vec![Regex::new(r"internal-[0-9]{4}").unwrap()];
        let r = Redactor::new(["s3cr3t-value".to_owned(), "abc".to_owned()], &custom);
        assert_eq!(
            r.scrub("curl -H token:s3cr3t-value x"),
            "curl -H token:[REDACTED] x"
        );
        assert_eq!(r.scrub("abc stays"), "abc stays", "too short to scrub");
        assert_eq!(r.scrub("id internal-1234"), "id [REDACTED]");
        assert_eq!(
            r.scrub("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(
            r.scrub("key sk-ant-abcdefghijklmnopqrstuv"),
            "key [REDACTED]"
        );
        assert_eq!(r.scrub("ghp_abcdefghijklmnopqrstuvwxyz0123"), "[REDACTED]");
        assert_eq!(r.scrub("AKIAABCDEFGHIJKLMNOP"), "[REDACTED]");
        assert_eq!(
            r.scrub("https://user:hunter22@example.com/x"),
            "https[REDACTED]example.com/x"
        );
        assert_eq!(r.scrub("--password=hunter22 next"), "--[REDACTED] next");
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(r.scrub(&format!("x {key} y")), "x [REDACTED] y");
        assert_eq!(r.scrub("plain text"), "plain text");
    }

    #[test]
    fn longer_secrets_win() {
        let r = Redactor::new(["secret-one".to_owned(), "secret-one-two".to_owned()], &[]);
        assert_eq!(r.scrub("secret-one-two"), "[REDACTED]");
    }
}
