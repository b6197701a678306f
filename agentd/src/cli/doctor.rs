//! `agentd doctor`: host readiness.
use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_INVALID, color, fail, paint, print_json};
use crate::host::{Check, HostReport, Status};

#[derive(Serialize)]
struct JsonCheck<'a> {
    name: &'static str,
    #[serde(flatten)]
    check: &'a Check,
    required: bool,
    disables: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    kernel: &'a str,
    ready: bool,
    actions: &'a [String],
    checks: Vec<JsonCheck<'a>>,
}

pub(super) fn run(json: bool) -> ExitCode {
    let report = crate::doctor::report();
    if json {
        let out = JsonReport {
            kernel: &report.kernel,
            ready: report.ready(),
            actions: &report.actions,
            checks: report
                .checks
                .iter()
                .map(|c| JsonCheck {
                    name: c.feature.name(),
                    check: c,
                    required: c.feature.required(),
                    disables: (c.status == Status::Missing).then(|| c.feature.disables()),
                })
                .collect(),
        };
        if let Err(e) = print_json(&out) {
            return fail(format!("cannot write output: {e}"), None);
        }
    } else {
        print!("{}", render(report, color()));
    }
    if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

fn render(report: &HostReport, color: bool) -> String {
    let mut out = format!("kernel          {}\n", report.kernel);
    for action in &report.actions {
        out.push_str(&format!("note            {action}\n"));
    }
    for c in &report.checks {
        let (word, code) = match (c.status, c.feature.required()) {
            (Status::Ok, _) => ("ok", "32"),
            (Status::Missing, true) => ("MISSING", "31"),
            (Status::Missing, false) => ("absent", "33"),
        };
        let status = paint(color, code, &format!("{word:<8}"));
        out.push_str(&format!("{:<15} {status}{}\n", c.feature.name(), c.detail));
        if c.status == Status::Missing {
            out.push_str(&format!("{:<24}disables: {}\n", "", c.feature.disables()));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("{:<24}fix: {fix}\n", ""));
            }
        }
    }
    if report.ready() {
        out.push_str("verdict         sessions can be enforced on this host\n");
    } else {
        out.push_str("verdict         sessions cannot be fully enforced here; see MISSING above\n");
    }
    out
}
