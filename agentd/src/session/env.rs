//! The session's environment: clean by default (SPEC guarantee 8).
use std::{ffi::OsString, path::Path};

use crate::policy::Env;

/// The `PATH` a session gets unless the policy passes or sets one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Inputs to [`build`].
#[derive(Debug)]
pub struct Inputs<'a> {
    /// `[env]` of the policy.
    pub policy: &'a Env,
    /// The caller's environment (only `[env] pass` names are read).
    pub caller: &'a [(OsString, OsString)],
    /// Secret names and values.
    pub secrets: &'a [(String, String)],
    /// Session id.
    pub session: &'a str,
    /// W3C traceparent value.
    pub traceparent: &'a str,
    /// {home}.
    pub home: &'a Path,
    /// {tmp}.
    pub tmp: &'a Path,
    /// The session user's name.
    pub user: &'a str,
}

/// The complete environment, in the order it is applied: sane defaults,
/// passed variables, set variables, secrets, then agentd's own (which
/// nothing overrides).
pub fn build(i: &Inputs<'_>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let mut put = |k: &str, v: OsString| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_owned(), v));
    };
    put("HOME", i.home.as_os_str().to_owned());
    put("PATH", DEFAULT_PATH.into());
    put("USER", i.user.into());
    put("LOGNAME", i.user.into());
    put("TMPDIR", i.tmp.as_os_str().to_owned());
    for name in &i.policy.pass {
        if let Some((_, v)) = i
            .caller
            .iter()
            .find(|(k, _)| k.as_os_str() == name.as_str())
        {
            put(name.as_str(), v.clone());
        }
    }
    for (name, value) in &i.policy.set {
        put(name.as_str(), value.into());
    }
    for (name, value) in i.secrets {
        put(name, value.into());
    }
    put("AGENTD_SESSION_ID", i.session.into());
    put("TRACEPARENT", i.traceparent.into());
    env
}

/// A W3C `traceparent` for trace id `trace_id` (32 hex digits) and a span
/// id (16 hex digits): version 00, sampled.
pub fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::EnvName;

    #[test]
    fn only_listed_variables_reach_the_session() {
        let policy = Env {
            pass: vec![
                EnvName::parse("LANG").unwrap(),
                EnvName::parse("ABSENT").unwrap(),
            ],
            set: BTreeMap::from([(EnvName::parse("RUST_LOG").unwrap(), "info".to_owned())]),
        };
        let caller = vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "leak".into()),
            ("PATH".into(), "/home/me/bin".into()),
        ];
        let secrets = vec![("API_KEY".to_owned(), "s3cr3t".to_owned())];
        let env = build(&Inputs {
            policy: &policy,
            caller: &caller,
            secrets: &secrets,
            session: "0123456789abc",
            traceparent: "00-abc-def-01",
            home: Path::new("/h"),
            tmp: Path::new("/t"),
            user: "agentd-x",
        });
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(get("ABSENT"), None);
        assert_eq!(get("PATH").as_deref(), Some(DEFAULT_PATH));
        assert_eq!(get("RUST_LOG").as_deref(), Some("info"));
        assert_eq!(get("API_KEY").as_deref(), Some("s3cr3t"));
        assert_eq!(get("AGENTD_SESSION_ID").as_deref(), Some("0123456789abc"));
        assert_eq!(get("HOME").as_deref(), Some("/h"));
        assert_eq!(get("TMPDIR").as_deref(), Some("/t"));
        assert_eq!(get("USER").as_deref(), Some("agentd-x"));
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn traceparent_format() {
        let t = traceparent(&hex(&[0xab; 16]), &hex(&[1; 8]));
        assert_eq!(t, format!("00-{}-{}-01", "ab".repeat(16), "01".repeat(8)));
    }
}
