//! Findings about a policy file, located by byte span and rendered as
//! `file:line:col: severity: message`, the offending line, a caret and a hint.
use std::{fmt::Write as _, ops::Range};

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Risky but legal: the policy is still valid.
    Warning,
    /// The policy is invalid and cannot be used.
    Error,
}

/// One finding about a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Whether the finding makes the policy invalid.
    pub severity: Severity,
    /// Byte range in the file; `None` when the finding is about the whole file.
    pub span: Option<Range<usize>>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: impl Into<Option<Range<usize>>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: impl Into<Option<Range<usize>>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what to do about it.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this finding makes the policy invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Places the finding in `source`.
    pub fn locate(&self, source: &str) -> Location {
        Location::of(source, self.span.as_ref().map_or(0, |s| s.start))
    }

    /// Renders the finding the way compilers do:
    ///
    /// ```text
    /// coder.toml:7:1: error: unknown key `reed` in [filesystem]
    ///   |
    /// 7 | reed = ["/usr"]
    ///   | ^^^^
    ///   = hint: did you mean `read`?
    /// ```
    pub fn render(&self, file: &str, source: &str) -> String {
        // The source line and the message quote the file, which may hold
        // escape sequences: each line is shown with them escaped.
        let raw = self.render_raw(file, source);
        let mut out = String::with_capacity(raw.len());
        for line in raw.lines() {
            out.push_str(&crate::text::printable(line));
            out.push('\n');
        }
        out
    }

    fn render_raw(&self, file: &str, source: &str) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let Some(span) = &self.span else {
            let _ = writeln!(out, "{file}: {severity}: {}", self.message);
            if let Some(hint) = &self.hint {
                let _ = writeln!(out, "  = hint: {hint}");
            }
            return out;
        };
        let loc = Location::of(source, span.start);
        let _ = writeln!(
            out,
            "{file}:{}:{}: {severity}: {}",
            loc.line, loc.column, self.message
        );
        let gutter = " ".repeat(loc.line.to_string().len());
        let text = line_text(source, span.start);
        // Underline the span on its first line, at least one caret wide.
        let line_start = span.start - (loc.column_bytes - 1);
        let line_end = line_start + text.len();
        let end = span.end.clamp(span.start, line_end);
        let width = source
            .get(span.start..end)
            .map_or(1, |s| s.chars().count().max(1));
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{} | {text}", loc.line);
        let _ = writeln!(
            out,
            "{gutter} | {}{}",
            " ".repeat(loc.column - 1),
            "^".repeat(width)
        );
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{gutter} = hint: {hint}");
        }
        out
    }
}

/// A 1-based line and column (in characters) in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    #[serde(skip)]
    column_bytes: usize,
}

impl Location {
    /// The location of byte `offset` in `source` (clamped to its length and
    /// to a character boundary).
    pub fn of(source: &str, offset: usize) -> Self {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            column_bytes: offset - line_start + 1,
        }
    }
}

/// The text of the line holding byte `offset`, without its newline.
fn line_text(source: &str, offset: usize) -> &str {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    source[start..end].trim_end_matches('\r')
}

/// The name of the `[table]` whose body holds byte `offset`, if any.
pub fn enclosing_table(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let before = source.get(..offset)?;
    before.lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = inner[..end].trim_matches(['[', ']', ' ']);
        (!name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters() {
        let src = "a = 1\nbé = 2\n";
        let loc = Location::of(src, src.find('=').unwrap_or(0));
        assert_eq!((loc.line, loc.column), (1, 3));
        let second = src.rfind('=').unwrap_or(0);
        let loc = Location::of(src, second);
        assert_eq!((loc.line, loc.column), (2, 4));
    }

    #[test]
    fn render_underlines_the_span() {
        let src = "[filesystem]\nreed = []\n";
        let d = Diagnostic::error(13..17, "unknown key `reed`").with_hint("did you mean `read`?");
        assert_eq!(
            d.render("p.toml", src),
            "p.toml:2:1: error: unknown key `reed`\n  |\n2 | reed = []\n  | ^^^^\n  = hint: did you mean `read`?\n"
        );
    }

    #[test]
    fn render_without_span_names_the_file() {
        let d = Diagnostic::warning(None, "no limits");
        assert_eq!(d.render("p.toml", ""), "p.toml: warning: no limits\n");
    }

    #[test]
    fn enclosing_table_finds_the_last_header() {
        let src = "version = 1\n[agent]\nname = 'x'\n[[weird]]\nk = 1\n";
        assert_eq!(enclosing_table(src, 25).as_deref(), Some("agent"));
        assert_eq!(enclosing_table(src, src.len()).as_deref(), Some("weird"));
        assert_eq!(enclosing_table(src, 3), None);
    }
}
