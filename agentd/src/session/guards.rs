//! What a session's stages acquire, each released on drop, so that an
//! early return (an error, a panic) can never leak a resource or skip a
//! step of the teardown. The normal path releases them explicitly, in
//! order; drops are the same steps for every other way out. (The session's
//! resolver, `dns::SessionResolver`, is its own guard.)
use std::{
    cell::Cell,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use super::SessionError;
use crate::{
    audit::{self, Context, Event, Log, redact::Redactor},
    cgroup::SessionCgroups,
    ebpf::{Kernel, Registered},
};

/// A directory created for the session (state, data), removed with
/// everything in it.
#[derive(Debug)]
pub(super) struct OwnedDir(PathBuf);

impl OwnedDir {
    /// Takes ownership of `path`, which this session just created.
    pub(super) fn new(path: PathBuf) -> Self {
        Self(path)
    }

    /// The directory.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The session's cgroups and its rules in the kernel maps. They go
/// together because the order matters: the rules are removed only once the
/// cgroups are gone (so every process is), and a cgroup that cannot be
/// removed keeps its rules: nothing of the session runs unenforced.
#[derive(Debug)]
pub(super) struct Enforcement {
    pub(super) cgroups: SessionCgroups,
    pub(super) kernel: Option<(Kernel, Registered)>,
}

impl Drop for Enforcement {
    fn drop(&mut self) {
        let gone = self.cgroups.remove().is_ok();
        if let Some((kernel, registered)) = &self.kernel {
            if gone && let Err(e) = kernel.unregister(registered) {
                tracing::warn!(error = %e, "cannot remove the session's eBPF rules; the next registration prunes them");
            }
            // Other sessions' audit inputs, once they are long gone (a
            // stat of the stamp file unless a pruning is due).
            audit::collect::prune_if_due(kernel);
        }
    }
}

/// The embedded collector, drained and stopped on drop.
pub(super) struct Collector(pub(super) Option<audit::collect::Background>);

impl Collector {
    /// Drains what the kernel has queued and stops.
    pub(super) fn stop(mut self) {
        if let Some(c) = self.0.take() {
            c.stop();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.stop();
        }
    }
}

/// Setup timings (logged at debug level, `AGENTD_LOG=agentd=debug`) and
/// the stage in progress, which a failure names.
#[derive(Debug)]
pub(super) struct Stages {
    last: Cell<Instant>,
    current: Cell<&'static str>,
}

impl Stages {
    pub(super) fn start() -> Self {
        Self {
            last: Cell::new(Instant::now()),
            current: Cell::new("preflight"),
        }
    }

    /// Ends the stage in progress and begins `stage`.
    pub(super) fn begin(&self, stage: &'static str) -> Result<(), SessionError> {
        let now = Instant::now();
        tracing::debug!(
            stage = self.current.get(),
            micros =
                u64::try_from(now.duration_since(self.last.get()).as_micros()).unwrap_or(u64::MAX),
            "session setup"
        );
        self.last.set(now);
        self.current.set(stage);
        inject_fault(stage)
    }

    /// The stage in progress.
    pub(super) fn current(&self) -> &'static str {
        self.current.get()
    }
}

/// With the `fault-injection` feature (tests only), `AGENTD_FAIL_STAGE`
/// names a stage that fails as it begins, so that every way out of a
/// session can be tested.
#[cfg(feature = "fault-injection")]
fn inject_fault(stage: &'static str) -> Result<(), SessionError> {
    if std::env::var("AGENTD_FAIL_STAGE").is_ok_and(|s| s == stage) {
        return Err(SessionError::Injected(stage));
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
#[expect(
    clippy::unnecessary_wraps,
    reason = "the same signature as the fault-injecting build"
)]
fn inject_fault(_stage: &'static str) -> Result<(), SessionError> {
    Ok(())
}

/// A session whose `session_start` is in the trail. Every way out writes
/// its `session_end`: [`Trail::end`] on the normal path, [`Trail::fail`]
/// with the error, and a drop (a panic) with the stage it stopped in.
pub(super) struct Trail<'a> {
    pub(super) log: Log,
    pub(super) context: Context,
    pub(super) redactor: Redactor,
    stages: &'a Stages,
    ended: bool,
}

impl<'a> Trail<'a> {
    /// Writes `session_start`.
    pub(super) fn start(
        log: Log,
        context: Context,
        redactor: Redactor,
        stages: &'a Stages,
        start: Event,
    ) -> Result<Self, SessionError> {
        log.append(&[start])?;
        Ok(Self {
            log,
            context,
            redactor,
            stages,
            ended: false,
        })
    }

    /// A `session_end` record for this session.
    pub(super) fn end_record(&self) -> Event {
        Event::now(&self.context, "session_end")
    }

    /// Writes the session's `session_end`.
    pub(super) fn end(mut self, record: Event) -> Result<(), SessionError> {
        self.ended = true;
        self.log.append(&[record])?;
        Ok(())
    }

    /// Writes `session_end` with reason `error`, the failing step and the
    /// error (scrubbed).
    pub(super) fn fail(mut self, error: &SessionError) {
        let mut record = self
            .error_record()
            .with("error", self.redactor.scrub(&error.to_string()));
        if matches!(error, SessionError::Disabled { .. }) {
            // Disabled while it was being set up.
            record = record.with("reason", "disabled");
        }
        self.ended = true;
        if let Err(e) = self.log.append(&[record]) {
            tracing::error!(error = %e, "cannot record the session's end");
        }
    }

    fn error_record(&self) -> Event {
        self.end_record()
            .with("reason", "error")
            .with("step", self.stages.current())
            .with("leftovers", 0)
    }
}

impl Drop for Trail<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let record = self
                .error_record()
                .with("error", "the supervisor stopped unexpectedly");
            if let Err(e) = self.log.append(&[record]) {
                tracing::error!(error = %e, "cannot record the session's end");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail_records(log: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn context() -> Context {
        Context {
            session: "s".into(),
            agent: "a".into(),
            policy: "p".into(),
            trace_id: "t".into(),
        }
    }

    #[test]
    fn every_way_out_after_start_writes_session_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let stages = Stages::start();
        let redactor = Redactor::new(vec!["s3cret".into()], &[]);
        let start = |stages| {
            let log = Log::new(&path);
            let start = Event::now(&context(), "session_start");
            Trail::start(log, context(), redactor.clone(), stages, start).unwrap()
        };

        // An error: its step and text (scrubbed).
        stages.begin("spawn").unwrap();
        start(&stages).fail(&SessionError::NotFound("s3cret-tool".into()));
        // A panic or a forgotten path: dropped.
        stages.begin("wait").unwrap();
        drop(start(&stages));
        // The normal end: exactly one record.
        let trail = start(&stages);
        let end = trail.end_record().with("reason", "exited");
        trail.end(end).unwrap();

        let records = trail_records(&path);
        let ends: Vec<_> = records
            .iter()
            .filter(|r| r["kind"] == "session_end")
            .collect();
        assert_eq!(records.len(), 6, "{records:?}");
        assert_eq!(ends.len(), 3);
        assert_eq!(ends[0]["reason"], "error");
        assert_eq!(ends[0]["step"], "spawn");
        assert!(!ends[0]["error"].as_str().unwrap().contains("s3cret"));
        assert_eq!(ends[1]["reason"], "error");
        assert_eq!(ends[1]["step"], "wait");
        assert_eq!(ends[2]["reason"], "exited");
    }
}
