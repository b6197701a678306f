//! What the DNS redirect (`agentd-ebpf/src/dns.rs`) adds to the events:
//! the kernel sends a session's queries to its resolver and emits no
//! events of its own; the resolver writes each address an answer opened to
//! the session's names file, and connect events to that address (decoded
//! in [`super::egress`]) carry the name asked and the rule that admitted
//! it.
use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Collector, audit_dir};
use crate::paths;

/// An address a session's DNS answer opened: one line of the session's
/// `<cgroup id>.names` file, which its resolver appends to before the
/// answer is sent, so that connects to the address carry the name asked
/// and the rule that admitted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameOpened {
    /// The answer's address.
    pub address: IpAddr,
    /// The name the session asked for (before any CNAME).
    pub name: String,
    /// The rule the name matched.
    pub rule: String,
}

fn names_path(cgroup_id: u64) -> PathBuf {
    audit_dir().join(format!("{cgroup_id}.names"))
}

/// The appending end of a session's names file.
#[derive(Debug)]
pub struct NamesLog {
    file: fs::File,
}

impl NamesLog {
    /// Creates (or continues) the names file of the session with cgroup id
    /// `cgroup_id`.
    pub fn create(cgroup_id: u64) -> std::io::Result<Self> {
        paths::create_private_dir(&audit_dir())?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(names_path(cgroup_id))?;
        Ok(Self { file })
    }

    /// Appends `opened` in one write (whole lines: a reader never sees
    /// half of one as complete).
    pub fn append(&mut self, opened: &[NameOpened]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut buf = Vec::new();
        for o in opened {
            serde_json::to_writer(&mut buf, o).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)
    }
}

/// The reading end: what a session's answers opened, read as it grows.
/// Consulted for every connect event of an address it does not know yet,
/// so the file stays open and a look is one read at its end.
#[derive(Debug, Default)]
pub(super) struct Names {
    by_address: HashMap<IpAddr, (String, String)>,
    /// The open file; `None` after a failed open too: a session's resolver
    /// creates the file before its agent starts, so a session whose events
    /// arrive without one never gets one.
    file: Option<Option<fs::File>>,
    /// The end of a line still being written.
    partial: Vec<u8>,
}

impl Names {
    /// Reads the complete lines appended since the last call.
    fn refresh(&mut self, cgroup_id: u64) {
        self.refresh_from(&names_path(cgroup_id));
    }

    fn refresh_from(&mut self, path: &Path) {
        use std::io::Read as _;
        let Some(f) = self.file.get_or_insert_with(|| fs::File::open(path).ok()) else {
            return;
        };
        if f.read_to_end(&mut self.partial).is_err() {
            return;
        }
        let complete = self
            .partial
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in self.partial[..complete].split(|b| *b == b'\n') {
            if let Ok(o) = serde_json::from_slice::<NameOpened>(line) {
                self.by_address.insert(o.address, (o.name, o.rule));
            }
        }
        self.partial.drain(..complete);
    }
}

impl Collector {
    /// The name and rule that opened `ip` for the session, if its answers
    /// did (reading what the resolver appended since the last look).
    pub(super) fn opened_by(&mut self, cgroup_id: u64, ip: IpAddr) -> Option<(String, String)> {
        self.known(cgroup_id)?;
        let names = &mut self.sessions.get_mut(&cgroup_id)?.as_mut()?.names;
        if !names.by_address.contains_key(&ip) {
            names.refresh(cgroup_id);
        }
        names.by_address.get(&ip).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn names_are_read_as_whole_lines_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.names");
        let line = |addr: &str, name: &str| {
            let mut l = serde_json::to_vec(&NameOpened {
                address: addr.parse().unwrap(),
                name: name.into(),
                rule: format!("{name}:443"),
            })
            .unwrap();
            l.push(b'\n');
            l
        };
        let mut f = fs::File::create(&path).unwrap();
        let second = line("2001:db8::10", "b.test");
        f.write_all(&line("203.0.113.10", "a.test")).unwrap();
        f.write_all(&second[..10]).unwrap();
        let mut names = Names::default();
        names.refresh_from(&path);
        assert_eq!(names.by_address.len(), 1, "half a line is not read");
        f.write_all(&second[10..]).unwrap();
        f.write_all(&line("203.0.113.10", "c.test")).unwrap();
        names.refresh_from(&path);
        let get = |a: &str| names.by_address.get(&a.parse::<IpAddr>().unwrap()).cloned();
        assert_eq!(
            get("2001:db8::10"),
            Some(("b.test".into(), "b.test:443".into()))
        );
        assert_eq!(
            get("203.0.113.10"),
            Some(("c.test".into(), "c.test:443".into())),
            "the latest answer names the address"
        );
    }
}
