//! `agentd logs` and `agentd audit verify`.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Seek as _, SeekFrom},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use serde_json::{Map, Value};

use super::{EXIT_INVALID, color, fail, paint};
use crate::audit;

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The one-line summary of a record's kind-specific fields.
fn details(r: &Map<String, Value>) -> String {
    let get = |k: &str| text(r.get(k));
    let kind = get("kind");
    let argv = || {
        r.get("argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| text(Some(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
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
            "pid {} {} {}:{} ({})",
            get("pid"),
            get("protocol"),
            get("address"),
            get("port"),
            get("rule")
        ),
        "file" => format!("pid {} {} {}", get("pid"), get("access"), get("path")),
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
    // One line per record, whatever the record holds.
    let details = details(r).replace('\n', "\\n").replace('\r', "\\r");
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
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            return fail(
                format!("no audit log at {}", file.display()),
                Some("no session has run yet"),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return fail(
                format!("cannot read {}: {e}", file.display()),
                Some("the audit log is root-only; run with sudo"),
            );
        }
        Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
    };
    let color = color();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                if !follow {
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(Duration::from_millis(200));
                // A rotated or truncated file: start again from the top.
                let pos = reader.stream_position().unwrap_or(0);
                if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < pos {
                    let _ = reader.seek(SeekFrom::Start(0));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
        }
        if !line.ends_with('\n') {
            // A record being written: wait for the rest of it.
            let _ = reader.seek_relative(-(line.len() as i64));
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let Ok(Value::Object(record)) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if !matches(&record, session) {
            continue;
        }
        if json {
            print!("{line}");
        } else {
            println!("{}", human(&record, color));
        }
    }
}

pub(super) fn verify(file: &Path) -> ExitCode {
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display()), None),
    };
    match audit::verify(f) {
        Ok(n) => {
            println!("{}: ok, {n} records, hash chain intact", file.display());
            ExitCode::SUCCESS
        }
        Err(b) => {
            println!("{}:{}: chain broken: {}", file.display(), b.line, b.why);
            ExitCode::from(EXIT_INVALID)
        }
    }
}
