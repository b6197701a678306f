//! `agentd policy check` and `agentd policy explain`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde::Serialize;

use super::{EXIT_INVALID, fail, print_json};
use crate::{
    host,
    policy::{self, Checked, Diagnostic, Severity, explain::Inventory},
};

/// Today's date in UTC, for the review-date warning.
fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

/// Reads and checks one file, including host checks of its secret files.
pub(super) fn load(path: &Path) -> Result<Checked, std::io::Error> {
    let bytes = fs::read(path)?;
    let mut checked = policy::check(&bytes, today());
    if let Some(p) = &checked.policy {
        checked
            .diagnostics
            .extend(policy::check_secret_files(p, host::secret_file_facts));
        if checked.has_errors() {
            checked.policy = None;
        }
    }
    Ok(checked)
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    line: usize,
    column: usize,
    message: &'a str,
    hint: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    file: String,
    valid: bool,
    digest: Option<String>,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiagnostic<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
}

fn count(diags: &[Diagnostic], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub(super) fn check(files: &[PathBuf], json: bool) -> ExitCode {
    let results: Vec<(&PathBuf, Result<Checked, std::io::Error>)> =
        files.iter().map(|f| (f, load(f))).collect();
    let all_valid = results
        .iter()
        .all(|(_, r)| r.as_ref().is_ok_and(|c| !c.has_errors()));
    if json {
        let out: Vec<JsonFile<'_>> = results
            .iter()
            .map(|(file, r)| match r {
                Ok(c) => JsonFile {
                    file: file.display().to_string(),
                    valid: !c.has_errors(),
                    digest: Some(c.digest.to_string()),
                    errors: count(&c.diagnostics, Severity::Error),
                    warnings: count(&c.diagnostics, Severity::Warning),
                    diagnostics: c
                        .diagnostics
                        .iter()
                        .map(|d| {
                            let loc = d.locate(&c.source);
                            JsonDiagnostic {
                                severity: d.severity,
                                line: loc.line,
                                column: loc.column,
                                message: &d.message,
                                hint: d.hint.as_deref(),
                            }
                        })
                        .collect(),
                    read_error: None,
                },
                Err(e) => JsonFile {
                    file: file.display().to_string(),
                    valid: false,
                    digest: None,
                    errors: 1,
                    warnings: 0,
                    diagnostics: Vec::new(),
                    read_error: Some(e.to_string()),
                },
            })
            .collect();
        if let Err(e) = print_json(&out) {
            return fail(format!("cannot write output: {e}"), None);
        }
    } else {
        for (file, r) in &results {
            let name = file.display().to_string();
            match r {
                Ok(c) => {
                    for d in &c.diagnostics {
                        print!("{}", d.render(&name, &c.source));
                    }
                    let errors = count(&c.diagnostics, Severity::Error);
                    let warnings = count(&c.diagnostics, Severity::Warning);
                    if errors > 0 {
                        println!(
                            "{name}: invalid ({}, {})",
                            plural(errors, "error"),
                            plural(warnings, "warning")
                        );
                    } else {
                        println!("{name}: ok ({}, {})", plural(warnings, "warning"), c.digest);
                    }
                }
                Err(e) => {
                    eprintln!("{name}: error: cannot read the file: {e}");
                    println!("{name}: invalid (unreadable)");
                }
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

pub(super) fn explain(file: &Path, json: bool) -> ExitCode {
    let name = file.display().to_string();
    let checked = match load(file) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot read {name}: {e}"), None),
    };
    let Some(policy) = &checked.policy else {
        for d in &checked.diagnostics {
            eprint!("{}", d.render(&name, &checked.source));
        }
        return fail(
            format!("{name} is not a valid policy"),
            Some("fix the errors above; `agentd policy check` lists them"),
        );
    };
    let inventory = Inventory::of(policy);
    if json {
        if let Err(e) = print_json(&inventory) {
            return fail(format!("cannot write output: {e}"), None);
        }
    } else {
        print!("{}", render(&inventory));
        for d in &checked.diagnostics {
            eprint!("{}", d.render(&name, &checked.source));
        }
    }
    ExitCode::SUCCESS
}

/// Lines of `label  value`, lists one item per line.
struct Section {
    out: String,
}

impl Section {
    fn new(title: &str) -> Self {
        Self {
            out: format!("{title}\n"),
        }
    }

    fn row(&mut self, label: &str, value: impl AsRef<str>) {
        let value = crate::text::printable(value.as_ref());
        self.out.push_str(&format!("  {label:<13} {value}\n"));
    }

    fn list(&mut self, label: &str, items: &[String], empty: &str) {
        if items.is_empty() {
            self.row(label, empty);
            return;
        }
        for (i, item) in items.iter().enumerate() {
            self.row(if i == 0 { label } else { "" }, item);
        }
    }

    fn done(mut self) -> String {
        self.out.push('\n');
        self.out
    }
}

fn render(inv: &Inventory) -> String {
    let id = &inv.identity;
    let mut s = Section::new("identity");
    s.row("agent", &id.agent);
    s.row("owner", id.owner.as_deref().unwrap_or("(none)"));
    s.row("environment", &id.environment);
    s.row("trust", &id.trust);
    s.row("review by", id.review_by.as_deref().unwrap_or("(no date)"));
    s.list("data classes", &id.data_classes, "(none)");
    s.row("runs as", &id.user);
    s.row("policy", id.policy_digest.to_string());
    let mut out = s.done();

    let fs = &inv.filesystem;
    let mut s = Section::new("filesystem");
    s.list("read", &fs.read, "(nothing)");
    s.list("read-write", &fs.read_write, "(nothing)");
    s.list("execute", &fs.execute, "(nothing)");
    s.list("protected", &fs.protected, "(none)");
    s.row("otherwise", fs.otherwise);
    out.push_str(&s.done());

    let mut s = Section::new("programs");
    s.list("allowed", &inv.exec.allow, "(none)");
    s.list("need approval", &inv.exec.ask, "(none)");
    s.row("otherwise", inv.exec.otherwise);
    out.push_str(&s.done());

    let net = &inv.network;
    let mut s = Section::new("network");
    s.list("allowed", &net.allow, "(none)");
    s.list("need approval", &net.ask, "(none)");
    s.list("bind/listen", &net.bind, "(none)");
    s.row("dns", &net.dns);
    s.list(
        "local ranges",
        &net.always_denied_unless_listed,
        "(all listed)",
    );
    s.row("otherwise", net.otherwise);
    s.list("unix sockets", &net.unix, "(none)");
    s.row("other unix", net.unix_otherwise);
    out.push_str(&s.done());

    let sc = &inv.syscalls;
    let mut s = Section::new("syscalls");
    s.row("profile", &sc.profile);
    s.row("", sc.summary);
    s.list("also denied", &sc.deny, "(none)");
    s.list("also allowed", &sc.allow, "(none)");
    out.push_str(&s.done());

    let mut s = Section::new("limits");
    for (k, v) in &inv.limits {
        s.row(k, v);
    }
    out.push_str(&s.done());

    let env = &inv.environment;
    let mut s = Section::new("environment");
    s.list("passed", &env.pass, "(none)");
    s.list("set", &env.set, "(none)");
    let secrets: Vec<String> = env
        .secrets
        .iter()
        .map(|e| format!("{} (from {})", e.name, e.file))
        .collect();
    s.list("secrets", &secrets, "(none)");
    s.row("always", env.always.join(", "));
    out.push_str(&s.done());

    let mut s = Section::new("audit");
    s.row("file events", &inv.audit.file_events);
    s.list("redact", &inv.audit.redact, "(built-in patterns only)");
    out.push_str(&s.done());

    let mut s = Section::new("enforcement");
    s.row("", inv.enforcement);
    let gaps: Vec<String> = inv
        .not_yet_enforced
        .iter()
        .map(|g| (*g).to_owned())
        .collect();
    s.list("not yet", &gaps, "(none)");
    let mut text = out;
    text.push_str(s.done().trim_end());
    text.push('\n');
    text
}
