//! Reading the trail as it grows: `agentd logs --follow` and the daemon's
//! log stream. A record being written is waited for, not half-read; a
//! rotated file is followed into its successor.
use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Map, Value};

/// Records of a trail, in order.
#[derive(Debug)]
pub struct Records {
    path: PathBuf,
    follow: bool,
    reader: Option<(BufReader<File>, u64)>,
    line: String,
}

impl Records {
    /// The records of `path`; with `follow`, waits for new ones forever.
    pub fn open(path: &Path, follow: bool) -> io::Result<Self> {
        let mut r = Self {
            path: path.to_path_buf(),
            follow,
            reader: None,
            line: String::new(),
        };
        match r.reopen() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && follow => {}
            Err(e) => return Err(e),
        }
        Ok(r)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = File::open(&self.path)?;
        let ino = f.metadata()?.ino();
        self.reader = Some((BufReader::new(f), ino));
        Ok(())
    }

    /// Whether the file at the path is no longer the one being read.
    fn replaced(&self) -> bool {
        let now = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        match &self.reader {
            Some((_, ino)) => now.is_some_and(|n| n != *ino),
            None => now.is_some(),
        }
    }

    /// The next record as its line and parsed object; `None` at the end
    /// (never, when following). Lines that are not JSON objects are
    /// skipped (`audit verify` is the tool that reports them).
    pub fn next_record(&mut self) -> Option<io::Result<(String, Map<String, Value>)>> {
        loop {
            self.line.clear();
            let read = match &mut self.reader {
                Some((r, _)) => r.read_line(&mut self.line),
                None => Ok(0),
            };
            match read {
                Err(e) => return Some(Err(e)),
                Ok(0) => {
                    if !self.follow {
                        return None;
                    }
                    if self.replaced() {
                        // Rotated: what is left of the old file was read.
                        if let Err(e) = self.reopen() {
                            return Some(Err(e));
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Ok(n) => {
                    if !self.line.ends_with('\n') {
                        // A record being written: read it whole later.
                        if let Some((r, _)) = &mut self.reader {
                            let _ = r.seek_relative(-i64::try_from(n).unwrap_or(0));
                        }
                        if !self.follow {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&self.line) {
                        return Some(Ok((std::mem::take(&mut self.line), m)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn partial_lines_wait_and_rotation_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"seq\":1}\nnot json\n{\"seq\":2").unwrap();
        let mut r = Records::open(&path, false).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().1["seq"], 1);
        assert!(r.next_record().is_none(), "the half-written record waits");

        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"}\n").unwrap();
        let mut r = Records::open(&path, true).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().1["seq"], 1);
        assert_eq!(r.next_record().unwrap().unwrap().1["seq"], 2);
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        std::fs::write(&path, "{\"seq\":3}\n").unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().1["seq"], 3);
    }
}
