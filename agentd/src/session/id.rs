//! Session ids: short, unique and sortable by start time.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Crockford base32, lower case (no i, l, o, u).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A session id: 9 base32 characters of milliseconds since the epoch (good
/// until the year 3084) followed by 4 random ones; lexical order is start
/// order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

/// Length of an id.
pub const LEN: usize = 13;

impl SessionId {
    /// An id for a session starting at `millis` with `random` bits.
    pub fn from_parts(millis: u64, random: u32) -> Self {
        let mut s = String::with_capacity(LEN);
        for i in (0..9).rev() {
            s.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
        }
        for i in (0..4).rev() {
            s.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
        }
        Self(s)
    }

    /// A fresh id for now.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 4];
        let _ = getrandom(&mut random);
        Self::from_parts(millis, u32::from_le_bytes(random))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Random bytes from the kernel, for ids and trace ids.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let _ = getrandom(&mut buf);
    buf
}

/// Why a string is not a session id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a session id (13 characters of 0-9 and a-z)")]
pub struct BadSessionId(String);

impl FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == LEN && s.bytes().all(|b| ALPHABET.contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadSessionId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SessionId {
    type Error = BadSessionId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let a = SessionId::from_parts(1_700_000_000_000, 0xfffff);
        let b = SessionId::from_parts(1_700_000_000_001, 0);
        assert!(a < b);
        assert_eq!(a.as_str().len(), LEN);
        assert_eq!(a.as_str().parse::<SessionId>().ok(), Some(a.clone()));
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn rejects_non_ids() {
        for bad in ["", "abc", "0123456789abI", "../../../etc", "0123456789abcd"] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad}");
        }
    }
}
