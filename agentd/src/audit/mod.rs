//! The audit trail: JSON Lines, schema version 1, one object per event,
//! chained by sha256 (`prev_hash` of each record is the `hash` of the one
//! before; the first record's is all zeros). Everything is redacted before
//! it is written.
//!
//! Writers (supervisors, `agentd kill`, the event collector) append under
//! an exclusive `flock` on `<file>.lock`, reading the chain's tail each
//! time, so one chain stays consistent across processes. Each batch is
//! fsync'ed before the lock is released: a record that was reported
//! written is on disk. With rotation, a full file moves to `<file>.1` and
//! the new file opens with a `rotate` record chained to the old file's
//! last record.
pub mod collect;
pub mod read;
pub mod redact;

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Where the audit trail goes by default.
pub const DEFAULT_PATH: &str = crate::paths::AUDIT_LOG;
/// The schema these records follow.
pub const SCHEMA_VERSION: u32 = 1;
/// `prev_hash` of the first record.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields every record of a session carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Session id ("" for host-wide records such as `lost`).
    pub session: String,
    /// Agent name.
    pub agent: String,
    /// sha256 of the policy file.
    pub policy: String,
    /// W3C trace id of the session.
    pub trace_id: String,
}

/// One event before it is chained.
#[derive(Clone, Debug)]
pub struct Event {
    /// When it happened.
    pub ts: jiff::Timestamp,
    /// Whose it is.
    pub context: Context,
    /// `session_start`, `exec`, `connect`, `deny`, ...
    pub kind: &'static str,
    /// Kind-specific fields (already redacted).
    pub fields: Map<String, Value>,
}

impl Event {
    /// An event of `kind` now.
    pub fn now(context: &Context, kind: &'static str) -> Self {
        Self {
            ts: jiff::Timestamp::now(),
            context: context.clone(),
            kind,
            fields: Map::new(),
        }
    }

    /// Adds a field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }
}

/// Why the trail could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log {}: {op}: {source}", path.display())]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// What was being done.
    pub op: &'static str,
    /// errno.
    #[source]
    pub source: io::Error,
}

/// JSON with object keys sorted at every level: the form that is hashed.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out, None);
    out
}

/// Appends the canonical form of `v` to `out`, leaving out the key `skip`
/// if `v` is an object.
fn write_canonical(v: &Value, out: &mut String, skip: Option<&str>) {
    match v {
        Value::Object(m) => write_canonical_object(m, out, skip),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out, None);
            }
            out.push(']');
        }
        Value::String(s) => write_json_string(s, out),
        other => {
            use std::fmt::Write as _;
            let _ = write!(out, "{other}");
        }
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes.
fn write_json_string(s: &str, out: &mut String) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&Value::String(s.to_owned()).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// sha256 (hex) of a record without its `hash` field.
pub fn hash_record(record: &Map<String, Value>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(512);
    write_canonical_object(record, &mut text, Some("hash"));
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// Appends a canonical object, leaving out the key `skip`; written by
/// reference, without copying the record.
fn write_canonical_object(record: &Map<String, Value>, out: &mut String, skip: Option<&str>) {
    let mut keys: Vec<&String> = record.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_unstable();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(k, out);
        out.push(':');
        if let Some(v) = record.get(k) {
            write_canonical(v, out, None);
        }
    }
    out.push('}');
}

/// The leading keys of every record, in the order they are written.
const HEAD: [&str; 7] = [
    "ts", "seq", "session", "agent", "policy", "trace_id", "kind",
];

/// One line: the head keys first, the kind's fields, then the chain.
fn render(record: &Map<String, Value>) -> String {
    let mut out = String::from("{");
    let mut first = true;
    let mut put = |k: &str, v: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        write_json_string(k, &mut out);
        out.push(':');
        write_canonical(v, &mut out, None);
    };
    for k in HEAD {
        if let Some(v) = record.get(k) {
            put(k, v);
        }
    }
    let mut rest: Vec<&String> = record
        .keys()
        .filter(|k| !HEAD.contains(&k.as_str()) && *k != "prev_hash" && *k != "hash")
        .collect();
    rest.sort();
    for k in rest {
        if let Some(v) = record.get(k) {
            put(k, v);
        }
    }
    for k in ["prev_hash", "hash"] {
        if let Some(v) = record.get(k) {
            put(k, v);
        }
    }
    out.push('}');
    out
}

/// RFC 3339 UTC with nanoseconds.
pub fn format_ts(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_string()
}

/// Where this process writes the trail, and when it rotates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The trail.
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes (0: never).
    pub rotate_size: u64,
    /// Rotated files kept (`<path>.1` is the newest).
    pub keep: u32,
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// Sets where this process writes the trail (the daemon's config; before
/// any record is written). Later calls change nothing.
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The audit log file.
#[derive(Clone, Debug)]
pub struct Log {
    path: PathBuf,
    /// (size, files kept), when rotating.
    rotate: Option<(u64, u32)>,
}

impl Log {
    /// The log at `path` (created 0600 on first append, its directory 0750),
    /// never rotated.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            rotate: None,
        }
    }

    /// The log this process writes to (see [`configure`]; else
    /// [`DEFAULT_PATH`], not rotated).
    pub fn default_path() -> Self {
        match SETTINGS.get() {
            Some(s) => Self {
                path: s.path.clone(),
                rotate: (s.rotate_size > 0).then_some((s.rotate_size, s.keep.max(1))),
            },
            None => Self::new(DEFAULT_PATH),
        }
    }

    /// The same file, rotated at `size` bytes keeping `keep` old files.
    #[must_use]
    pub fn rotating(mut self, size: u64, keep: u32) -> Self {
        self.rotate = (size > 0).then_some((size, keep.max(1)));
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> AuditError + '_ {
        move |source| AuditError {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Appends `events` as one batch: chained after the file's last
    /// record, written, fsync'ed. Returns the sequence numbers given.
    pub fn append(&self, events: &[Event]) -> Result<Vec<u64>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(dir) = self.path.parent()
            && !dir.exists()
        {
            crate::paths::create_dir_mode(dir, 0o750).map_err(self.err("mkdir"))?;
        }
        let (_lock, mut file) = self.lock()?;
        let (mut seq, mut prev) = tail(&mut file).map_err(self.err("read"))?;
        let mut out = String::new();
        let mut seqs = Vec::with_capacity(events.len());
        let mut rotation = None;
        if let Some((size, keep)) = self.rotate
            && file.metadata().map_err(self.err("stat"))?.len() >= size
        {
            // The new file starts with a `rotate` record chained to the
            // old file's last one; `audit verify old new` checks both.
            file = self.rotate(keep)?;
            rotation = Some(
                Event::now(&Context::default(), "rotate")
                    .with("previous_file", format!("{}.1", self.path.display()))
                    .with("previous_last_seq", seq),
            );
        }
        let skip = usize::from(rotation.is_some());
        for (i, e) in rotation.iter().chain(events).enumerate() {
            seq += 1;
            let mut record = Map::new();
            record.insert("ts".into(), Value::String(format_ts(e.ts)));
            record.insert("seq".into(), Value::from(seq));
            record.insert("session".into(), Value::String(e.context.session.clone()));
            record.insert("agent".into(), Value::String(e.context.agent.clone()));
            record.insert("policy".into(), Value::String(e.context.policy.clone()));
            record.insert("trace_id".into(), Value::String(e.context.trace_id.clone()));
            record.insert("kind".into(), Value::String(e.kind.to_owned()));
            for (k, v) in &e.fields {
                if !HEAD.contains(&k.as_str()) && k != "prev_hash" && k != "hash" {
                    record.insert(k.clone(), v.clone());
                }
            }
            record.insert("prev_hash".into(), Value::String(prev.clone()));
            let hash = hash_record(&record);
            record.insert("hash".into(), Value::String(hash.clone()));
            out.push_str(&render(&record));
            out.push('\n');
            prev = hash;
            if i >= skip {
                seqs.push(seq);
            }
        }
        file.write_all(out.as_bytes()).map_err(self.err("write"))?;
        file.sync_data().map_err(self.err("fsync"))?;
        Ok(seqs)
    }

    fn open(&self) -> Result<File, AuditError> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(self.err("open"))
    }

    /// Takes the writers' lock (`<path>.lock`, which rotation never moves),
    /// then opens the file.
    fn lock(&self) -> Result<(Flock<File>, File), AuditError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(self.err("open lock"))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| self.err("flock")(e.into()))?;
        Ok((lock, self.open()?))
    }

    /// Shifts `<path>.N` to `<path>.N+1` (dropping what is beyond `keep`),
    /// moves the file to `<path>.1` and opens a new one. Under the lock.
    fn rotate(&self, keep: u32) -> Result<File, AuditError> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        remove_quietly(&numbered(keep));
        for n in (1..keep).rev() {
            if numbered(n).exists() {
                fs::rename(numbered(n), numbered(n + 1)).map_err(self.err("rotate"))?;
            }
        }
        fs::rename(&self.path, numbered(1)).map_err(self.err("rotate"))?;
        self.open()
    }

    /// Every record, in order, for readers (`agentd logs`).
    pub fn read_all(&self) -> Result<Vec<Map<String, Value>>, AuditError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("open")(e)),
        };
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| match serde_json::from_str::<Value>(&l) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            })
            .collect())
    }
}

/// The last record's seq and hash (0 and zeros for an empty file).
fn tail(file: &mut File) -> io::Result<(u64, String)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, ZERO_HASH.to_owned()));
    }
    // Records are a few hundred bytes: look at the last 64 KiB, widening
    // (up to 4 MiB) only if no complete record is found there.
    let mut window = len.min(64 << 10);
    let last = loop {
        file.seek(SeekFrom::Start(len - window))?;
        let mut buf = Vec::with_capacity(usize::try_from(window).unwrap_or(0));
        io::Read::by_ref(file).take(window).read_to_end(&mut buf)?;
        let found = buf.split(|b| *b == b'\n').rev().find_map(|l| {
            match serde_json::from_slice::<Value>(l) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            }
        });
        match found {
            Some(m) => break m,
            None if window < len && window < (4 << 20) => window = (window * 4).min(len),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no complete record at the end of the file",
                ));
            }
        }
    };
    let seq = last.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let hash = last
        .get("hash")
        .and_then(Value::as_str)
        .unwrap_or(ZERO_HASH)
        .to_owned();
    Ok((seq, hash))
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// Checks the hash chain of a log; returns the number of records.
pub fn verify(reader: impl io::Read) -> Result<usize, Break> {
    verify_from(reader, None).map(|v| v.records)
}

/// What a verified file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: usize,
    /// seq and hash of the last record (to check the next file against).
    pub last: Option<(u64, String)>,
    /// The file opens with a `rotate` record continuing an earlier file,
    /// whose last record had this seq.
    pub continues_from: Option<u64>,
}

/// Checks the hash chain of one file. `after` is the last record of the
/// file before it (when verifying rotated files in order); without it, the
/// file must start the chain (prev_hash all zeros) or open with a `rotate`
/// record, which is then taken on trust and reported.
pub fn verify_from(reader: impl io::Read, after: Option<(u64, String)>) -> Result<Verified, Break> {
    let mut prev_seq = after.as_ref().map(|(s, _)| *s);
    let mut prev_hash = after.map_or_else(|| ZERO_HASH.to_owned(), |(_, h)| h);
    let mut continues_from = None;
    let mut count = 0;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        let brk = |why: String| Break { line: line_no, why };
        let line = line.map_err(|e| brk(format!("cannot read: {e}")))?;
        let record = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(m)) => m,
            _ => return Err(brk("not a JSON object".into())),
        };
        let hash = record
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| brk("no hash".into()))?
            .to_owned();
        let claimed_prev = record
            .get("prev_hash")
            .and_then(Value::as_str)
            .ok_or_else(|| brk("no prev_hash".into()))?;
        let seq = record
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| brk("no seq".into()))?;
        if hash_record(&record) != hash {
            return Err(brk(format!(
                "record seq {seq} was modified (its hash does not match its content)"
            )));
        }
        let opens_rotated = count == 0
            && prev_seq.is_none()
            && record.get("kind").and_then(Value::as_str) == Some("rotate")
            && seq > 1;
        if opens_rotated {
            continues_from = Some(seq - 1);
        } else if claimed_prev != prev_hash {
            let why = match prev_seq {
                None => {
                    format!("record seq {seq} does not start a chain (prev_hash is not all zeros)")
                }
                Some(p) if seq > p + 1 => format!("records {} to {} are missing", p + 1, seq - 1),
                Some(p) if seq <= p => format!("record seq {seq} is out of order (after seq {p})"),
                Some(_) => format!(
                    "record seq {seq} does not follow the previous record (prev_hash mismatch)"
                ),
            };
            return Err(brk(why));
        }
        if let Some(p) = prev_seq
            && seq != p + 1
        {
            return Err(brk(format!("record seq {seq} follows seq {p}")));
        }
        prev_hash = hash;
        prev_seq = Some(seq);
        count += 1;
    }
    Ok(Verified {
        records: count,
        last: prev_seq.map(|s| (s, prev_hash)),
        continues_from,
    })
}

/// Removes a file if it exists.
pub fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            session: "0123456789abc".into(),
            agent: "coder".into(),
            policy: "f".repeat(64),
            trace_id: "a".repeat(32),
        }
    }

    #[test]
    fn canonical_form_is_compact_json_with_sorted_keys() {
        let v = serde_json::json!({
            "z": [1, -2.5, null, true, {"b": "\u{1}\"\\\n\t", "a": "é✓"}],
            "a": {"y": "plain", "x": {"k": false}},
            "m": "line\r\u{7f}",
        });
        let expected = r#"{"a":{"x":{"k":false},"y":"plain"},"m":"line\r\u{7f}","z":[1,-2.5,null,true,{"a":"é✓","b":"\u0001\"\\\n\t"}]}"#
            .replace("\\u{7f}", "\u{7f}"); // DEL is not escaped
        assert_eq!(canonical(&v), expected);
        // Leaving out `hash` is the same as hashing the record without it.
        let Value::Object(mut m) = v else {
            unreachable!()
        };
        let with = hash_record(&m);
        m.insert("hash".into(), Value::String("x".into()));
        assert_eq!(hash_record(&m), with);
        assert_eq!(with.len(), 64);
    }

    fn write_log(n: usize) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path().join("audit.jsonl"));
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::now(&ctx(), "exec")
                    .with("pid", i as u64)
                    .with("path", "/usr/bin/git")
            })
            .collect();
        log.append(&events[..n / 2]).unwrap();
        log.append(&events[n / 2..]).unwrap();
        (dir, log)
    }

    fn lines(log: &Log) -> Vec<String> {
        fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn verify_lines(lines: &[String]) -> Result<usize, Break> {
        verify(lines.join("\n").as_bytes())
    }

    #[test]
    fn rotation_continues_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Log::new(&path).rotating(2000, 2);
        for i in 0..40u64 {
            log.append(&[Event::now(&ctx(), "exec").with("pid", i)])
                .unwrap();
        }
        let numbered = |n: u32| dir.path().join(format!("audit.jsonl.{n}"));
        assert!(numbered(1).exists() && numbered(2).exists());
        assert!(!numbered(3).exists(), "only `keep` old files stay");
        // Each file on its own: a rotated one opens with a `rotate` record.
        let current = verify_from(File::open(&path).unwrap(), None).unwrap();
        assert!(current.continues_from.is_some());
        let first = fs::read_to_string(&path).unwrap();
        assert!(
            first
                .lines()
                .next()
                .unwrap()
                .contains("\"kind\":\"rotate\"")
        );
        // Oldest first, as one chain.
        let older = verify_from(File::open(numbered(2)).unwrap(), None).unwrap();
        let old = verify_from(File::open(numbered(1)).unwrap(), older.last).unwrap();
        let now = verify_from(File::open(&path).unwrap(), old.last.clone()).unwrap();
        assert_eq!(now.records, current.records);
        // Out of order, the link breaks.
        assert!(verify_from(File::open(&path).unwrap(), older_last(&numbered(2))).is_err());
    }

    fn older_last(p: &Path) -> Option<(u64, String)> {
        verify_from(File::open(p).unwrap(), None).unwrap().last
    }

    #[test]
    fn records_with_awkward_floats_verify() {
        // 54.295644 ms as computed from a Duration: its shortest text does
        // not parse back to the same bits without exact float parsing.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path().join("audit.jsonl"));
        let events: Vec<Event> = [54.295_643_999_999_996, 0.1 + 0.2, 1e-300, 2.5e300]
            .into_iter()
            .map(|f| Event::now(&ctx(), "kill").with("x", f))
            .collect();
        log.append(&events).unwrap();
        assert_eq!(verify_lines(&lines(&log)), Ok(4));
    }

    #[test]
    fn chain_verifies_and_head_fields_come_first() {
        let (_d, log) = write_log(6);
        let l = lines(&log);
        assert_eq!(l.len(), 6);
        assert!(l[0].starts_with("{\"ts\":\""), "{}", l[0]);
        assert!(l[0].contains(&format!("\"prev_hash\":\"{ZERO_HASH}\"")));
        assert_eq!(verify_lines(&l), Ok(6));
        let records = log.read_all().unwrap();
        assert_eq!(records[5]["seq"], 6);
        assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    }

    #[test]
    fn modified_deleted_and_reordered_lines_are_found() {
        let (_d, log) = write_log(6);
        let l = lines(&log);
        let mut modified = l.clone();
        modified[2] = modified[2].replace("/usr/bin/git", "/usr/bin/gix");
        assert_eq!(verify_lines(&modified).unwrap_err().line, 3);
        let mut deleted = l.clone();
        deleted.remove(3);
        let b = verify_lines(&deleted).unwrap_err();
        assert_eq!(b.line, 4);
        assert!(b.why.contains("records 4 to 4 are missing"), "{}", b.why);
        let mut swapped = l.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_lines(&swapped).unwrap_err().line, 2);
        let mut truncated_head = l.clone();
        truncated_head.remove(0);
        assert_eq!(verify_lines(&truncated_head).unwrap_err().line, 1);
        assert_eq!(verify_lines(&["not json".into()]).unwrap_err().line, 1);
    }

    #[test]
    fn canonical_form_sorts_keys_recursively() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"d":[{"x":2,"y":1}]},"b":1}"#
        );
    }
}
