//! Decoding of what `agentd-ebpf/src/syscalls.rs` emits: a [`FileEvent`]
//! for each file syscall of a session process `[audit] file_events` asks
//! for, with its outcome. (Its exec exit hooks report refused execs through
//! `process.rs`; those are decoded in [`super::process`].)
use agentd_common::{EventHeader, FileEvent, file_access, from_bytes};

use super::{Known, c_string, exec_id};
use crate::audit::Event;

/// A `File` event; `None` for a short event.
pub(super) fn decode(known: &Known, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
    let f: FileEvent = from_bytes(bytes)?;
    let path = c_string(&f.path);
    let access = match f.access {
        file_access::READ => "read",
        file_access::WRITE => "write",
        file_access::CREATE => "create",
        file_access::UNLINK => "unlink",
        file_access::RENAME => "rename",
        _ => "other",
    };
    let decision = match f.errno {
        0 => "allow",
        1 | 13 | 30 => "deny",
        _ => "error",
    };
    let mut e = Event::now(&known.context, "file")
        .with("pid", header.pid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("path", known.redactor.scrub(&path))
        .with("access", access)
        .with("decision", decision);
    if f.dirfd != -100 && !path.starts_with('/') {
        e = e.with("dirfd", f.dirfd);
    }
    if f.errno != 0 {
        e = e.with("errno", nix::errno::Errno::from_raw(f.errno).to_string());
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use agentd_common::{EventKind, PATH_LEN};
    use serde_json::json;

    use super::*;
    use crate::audit::collect::test_session;

    /// A `FileEvent` as the kernel lays it out.
    fn bytes(access: u8, errno: i32, dirfd: i32, path: &str) -> Vec<u8> {
        let (_, h) = test_session(EventKind::File);
        let mut b = Vec::new();
        b.extend(h.kind.to_ne_bytes());
        b.extend(h.pid.to_ne_bytes());
        for v in [h.cgroup_id, h.ktime, h.exec_ktime] {
            b.extend(v.to_ne_bytes());
        }
        b.extend([access, 0, 0, 0]);
        b.extend(errno.to_ne_bytes());
        b.extend(dirfd.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        let mut p = [0; PATH_LEN];
        p[..path.len()].copy_from_slice(path.as_bytes());
        b.extend(p);
        b
    }

    #[test]
    fn file_events_carry_decision_errno_and_dirfd() {
        let (known, header) = test_session(EventKind::File);
        let ok = bytes(file_access::WRITE, 0, -100, "/tmp/hunter2");
        let e = decode(&known, &header, &ok).unwrap();
        assert_eq!(e.fields["path"], json!("/tmp/[REDACTED]"));
        assert_eq!(e.fields["access"], json!("write"));
        assert_eq!(e.fields["decision"], json!("allow"));
        assert!(!e.fields.contains_key("dirfd") && !e.fields.contains_key("errno"));
        let refused = bytes(file_access::UNLINK, 13, 3, "rel");
        let e = decode(&known, &header, &refused).unwrap();
        assert_eq!(e.fields["decision"], json!("deny"));
        assert_eq!(e.fields["dirfd"], json!(3));
        assert_eq!(e.fields["errno"], json!("EACCES: Permission denied"));
        assert!(decode(&known, &header, &refused[..refused.len() - 1]).is_none());
    }
}
