//! Decoding of what `agentd-ebpf/src/process.rs` emits: a
//! [`ProcessEvent`] for each exec (with path and argv), fork and exit of a
//! session process, and for each refused exec (`ExecDenied`, written by its
//! `report_exec_denied` for the exec exit hooks of `syscalls.rs`).
use agentd_common::{ARGV_LEN, EventHeader, EventKind, PATH_LEN, ProcessEvent, from_bytes};
use serde_json::{Value, json};

use super::{Known, c_string, exec_id};
use crate::audit::Event;

/// An `Exec`, `ExecDenied`, `Fork` or `Exit` event (`kind`); `None` for a
/// short event.
pub(super) fn decode(
    known: &Known,
    header: &EventHeader,
    kind: EventKind,
    bytes: &[u8],
) -> Option<Event> {
    let p: ProcessEvent = from_bytes(bytes)?;
    let path = c_string(&p.path[..PATH_LEN]);
    Some(match kind {
        EventKind::Exec => exec(known, header, &p, &path),
        EventKind::ExecDenied => exec_denied(known, header, &p, &path),
        EventKind::Fork => fork(known, header, &p),
        // `Exit`, the only other kind dispatched here.
        _ => exit(known, header, &p),
    })
}

fn exec(known: &Known, header: &EventHeader, p: &ProcessEvent, path: &str) -> Event {
    let len = (p.argv_len as usize).min(ARGV_LEN);
    let argv: Vec<Value> = p.argv[..len]
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| Value::String(known.redactor.scrub(&String::from_utf8_lossy(a))))
        .collect();
    let rule = if known.exec_enforced {
        known
            .exec_rules
            .iter()
            .find(|(_, m)| m.is_match(path))
            .map_or(Value::Null, |(t, _)| Value::String(t.clone()))
    } else {
        Value::String("filesystem.execute".into())
    };
    Event::now(&known.context, "exec")
        .with("pid", header.pid)
        .with("ppid", p.ppid)
        .with("uid", p.uid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("parent_exec_id", exec_id(p.ppid, p.parent_ktime))
        .with("path", known.redactor.scrub(path))
        .with("argv", Value::Array(argv))
        .with("decision", "allow")
        .with("rule", rule)
}

fn exec_denied(known: &Known, header: &EventHeader, p: &ProcessEvent, path: &str) -> Event {
    Event::now(&known.context, "deny")
        .with("what", "exec")
        .with("pid", header.pid)
        .with("uid", p.uid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("path", known.redactor.scrub(path))
        .with(
            "errno",
            if p.status >= agentd_common::EXEC_LOADER {
                0
            } else {
                p.status
            },
        )
        .with(
            "rule",
            if known.exec_enforced {
                "exec.allow"
            } else {
                "filesystem.execute"
            },
        )
        .with(
            "reason",
            if p.status == 0 {
                "executed anonymous memory (memfd): killed before it ran".to_owned()
            } else if p.status == agentd_common::EXEC_LOADER {
                "ran the dynamic loader as a program (it would load a program the allowlist does \
                 not name): killed before it ran"
                    .to_owned()
            } else if p.status == agentd_common::EXEC_UNBOUND {
                "not the exec the gate allowed (its file, arguments or environment changed after \
                 the check, or it was never checked): killed before it ran"
                    .to_owned()
            } else {
                format!(
                    "execve refused ({}): not an allowed program",
                    nix::errno::Errno::from_raw(i32::try_from(p.status).unwrap_or(0))
                )
            },
        )
}

fn fork(known: &Known, header: &EventHeader, p: &ProcessEvent) -> Event {
    Event::now(&known.context, "fork")
        .with("pid", header.pid)
        .with("ppid", p.ppid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime))
        .with("parent_exec_id", exec_id(p.ppid, p.parent_ktime))
}

fn exit(known: &Known, header: &EventHeader, p: &ProcessEvent) -> Event {
    let status = p.status;
    let e = Event::now(&known.context, "exit")
        .with("pid", header.pid)
        .with("exec_id", exec_id(header.pid, header.exec_ktime));
    if status & 0x7f == 0 {
        e.with("status", json!({"code": (status >> 8) & 0xff}))
    } else {
        e.with("status", json!({"signal": status & 0x7f}))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::collect::test_session;

    fn event(path: &str, argv: &[u8], status: u32) -> ProcessEvent {
        let (_, header) = test_session(EventKind::Exec);
        let mut p = ProcessEvent {
            header,
            ppid: 1,
            uid: 1000,
            parent_ktime: 5,
            status,
            argv_len: u32::try_from(argv.len()).unwrap(),
            path: [0; PATH_LEN],
            argv: [0; ARGV_LEN],
        };
        p.path[..path.len()].copy_from_slice(path.as_bytes());
        p.argv[..argv.len()].copy_from_slice(argv);
        p
    }

    #[test]
    fn exec_records_argv_redacted_and_the_rule_that_allowed_it() {
        let (known, header) = test_session(EventKind::Exec);
        let p = event("/usr/bin/ls", b"ls\0\0-p\0hunter2\0", 0);
        let e = exec(&known, &header, &p, "/usr/bin/ls");
        assert_eq!(e.kind, "exec");
        assert_eq!(e.fields["argv"], json!(["ls", "-p", "[REDACTED]"]));
        assert_eq!(e.fields["rule"], json!("/usr/bin/*"));
        assert_eq!(e.fields["exec_id"], json!("42-99"));
        assert_eq!(e.fields["parent_exec_id"], json!("1-5"));
        let other = exec(&known, &header, &p, "/opt/x");
        assert_eq!(other.fields["rule"], Value::Null);
    }

    #[test]
    fn refused_exec_names_the_errno_or_the_memfd_kill() {
        let (known, header) = test_session(EventKind::ExecDenied);
        let e = exec_denied(&known, &header, &event("/bin/sh", b"", 13), "/bin/sh");
        assert_eq!(e.kind, "deny");
        assert_eq!(e.fields["rule"], json!("exec.allow"));
        assert!(e.fields["reason"].as_str().unwrap().contains("EACCES"));
        let killed = exec_denied(&known, &header, &event("", b"", 0), "");
        assert!(killed.fields["reason"].as_str().unwrap().contains("memfd"));
    }

    #[test]
    fn exit_status_is_a_code_or_a_signal() {
        let (known, header) = test_session(EventKind::Exit);
        let code = exit(&known, &header, &event("", b"", 3 << 8));
        assert_eq!(code.fields["status"], json!({"code": 3}));
        let signal = exit(&known, &header, &event("", b"", 9));
        assert_eq!(signal.fields["status"], json!({"signal": 9}));
    }
}
