//! `agentd logs` and `agentd audit verify`.
use std::{fs::File, path::Path, process::ExitCode};

use serde_json::{Map, Value};

use super::{EXIT_INVALID, color, fail, paint};
use crate::audit;

/// A field as text for a terminal: control characters escaped (records
/// carry what agents chose: argv, paths, names).
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => crate::text::printable(s).into_owned(),
        Some(Value::Null) | None => String::new(),
        Some(other) => crate::text::printable(&other.to_string()).into_owned(),
    }
}

/// The one-line summary of a record's kind-specific fields.
fn details(r: &Map<String, Value>) -> String {
    let get = |k: &str| text(r.get(k));
    let kind = get("kind");
    let argv = || {
        r.get("argv")
            .and_then(Value::as_array)
            .map(|a| crate::text::shell_words(a.iter().map(|v| v.as_str().unwrap_or("?"))))
            .unwrap_or_default()
    };
    let status = || {
        r.get("status")
            .map(|s| match (s.get("code"), s.get("signal")) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => s.to_string(),
            })
            .unwrap_or_default()
    };
    match kind.as_str() {
        "session_start" => format!(
            "uid {} by uid {}: {}",
            get("uid"),
            get("caller_uid"),
            argv()
        ),
        "session_end" => format!(
            "{} ({}) after {} ms",
            status(),
            get("reason"),
            get("duration_ms")
        ),
        "exec" => format!("pid {} ppid {} {}", get("pid"), get("ppid"), argv()),
        "fork" => format!("pid {} ppid {}", get("pid"), get("ppid")),
        "exit" => format!("pid {} {}", get("pid"), status()),
        "connect" | "sendmsg" | "bind" => format!(
            "pid {} {} {}:{}{} ({})",
            get("pid"),
            get("protocol"),
            get("address"),
            get("port"),
            r.get("domain")
                .filter(|d| d.is_string())
                .map(|d| format!(" [{}]", text(Some(d))))
                .unwrap_or_default(),
            get("rule")
        ),
        "file" => format!("pid {} {} {}", get("pid"), get("access"), get("path")),
        "dns" => format!(
            "{} {} {}: {}{}",
            get("type"),
            get("name"),
            get("rcode"),
            r.get("answers")
                .and_then(Value::as_array)
                .map(|a| a
                    .iter()
                    .map(|v| text(Some(v)))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            r.get("rule")
                .filter(|rule| rule.is_string())
                .map(|rule| format!(" ({})", text(Some(rule))))
                .unwrap_or_default()
        ),
        "deny" => {
            let what = get("what");
            let target = match what.as_str() {
                "exec" => get("path"),
                "socket" => format!("family {} type {}", get("family"), get("type")),
                _ => format!("{} {}:{}", get("protocol"), get("address"), get("port")),
            };
            format!("pid {} {what} {target}: {}", get("pid"), get("reason"))
        }
        "kill" => format!(
            "by uid {}: {} ({} processes, {:.1} ms)",
            get("caller_uid"),
            get("reason"),
            get("processes_killed"),
            r.get("elapsed_us")
                .and_then(Value::as_u64)
                .map_or(0.0, |us| us as f64 / 1000.0)
        ),
        "lost" => format!("{} events lost: {}", get("count"), get("reason")),
        _ => String::new(),
    }
}

fn human(r: &Map<String, Value>, color: bool) -> String {
    let ts = text(r.get("ts"));
    let ts = ts.get(..23).map_or(ts.clone(), |t| format!("{t}Z"));
    let decision = text(r.get("decision"));
    let painted = match decision.as_str() {
        "allow" => paint(color, "32", &format!("{decision:<5}")),
        "deny" => paint(color, "31", &format!("{decision:<5}")),
        "" if text(r.get("kind")) == "deny" => paint(color, "31", "deny "),
        other => format!("{other:<5}"),
    };
    // One line per record, whatever the record holds: every field went
    // through `text`.
    let details = details(r);
    format!(
        "{ts}  {:<13}  {:<12}  {:<13}  {painted}  {details}",
        text(r.get("session")),
        text(r.get("agent")),
        text(r.get("kind")),
    )
}

fn matches(r: &Map<String, Value>, session: Option<&str>) -> bool {
    session.is_none_or(|s| r.get("session").and_then(Value::as_str) == Some(s))
}

pub(super) fn logs(file: &Path, session: Option<&str>, follow: bool, json: bool) -> ExitCode {
    let mut records = match audit::read::Records::open(file, follow) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                format!("no audit log at {}", file.display()),
                Some("no session has run yet"),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return fail(
                format!("cannot read {}: {e}", file.display()),
                Some(
                    "the audit log is root-only; run with sudo, or ask the daemon (members of its admin group)",
                ),
            );
        }
        Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
    };
    let color = color();
    while let Some(next) = records.next_record() {
        let (line, record) = match next {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
        };
        if matches(&record, session) {
            print_record(&line, &record, json, color);
        }
    }
    ExitCode::SUCCESS
}

/// Prints one record: its JSON line, or the human line.
pub(super) fn print_record(line: &str, record: &Map<String, Value>, json: bool, color: bool) {
    if json {
        print!("{}", line.trim_end_matches('\n'));
        println!();
    } else {
        println!("{}", human(record, color));
    }
}

/// Verifies files as one chain, oldest first (`audit.jsonl.2 audit.jsonl.1
/// audit.jsonl` after rotation).
pub(super) fn verify(files: &[std::path::PathBuf]) -> ExitCode {
    let mut after = None;
    for file in files {
        let f = match File::open(file) {
            Ok(f) => f,
            Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
        };
        match audit::verify_from(f, after.take()) {
            Ok(v) => {
                let continues = v
                    .continues_from
                    .map(|s| format!("; continues a rotated trail after seq {s} (verify the earlier file first to check the link)"))
                    .unwrap_or_default();
                println!(
                    "{}: ok, {} records, hash chain intact{continues}",
                    file.display(),
                    v.records
                );
                after = v.last;
            }
            Err(b) => {
                println!("{}:{}: chain broken: {}", file.display(), b.line, b.why);
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    ExitCode::SUCCESS
}
