//! Text from agents, callers and policies, made safe for a person's
//! terminal. Whatever an agent controls (its argv, file names, DNS names,
//! reasons) reaches `agentd logs`, `agentd ps`, `policy explain` and error
//! messages; printed raw, an escape sequence could move the cursor, erase
//! a line, forge a record or retitle the window, and a newline could forge
//! a row. Every human-readable output goes through [`printable`], and
//! argument lists through [`shell_words`].
use std::{borrow::Cow, fmt::Write as _};

/// Whether `c` must not reach a terminal as itself: C0 controls, DEL, C1
/// controls, and the Unicode line separators and direction overrides that
/// reorder what a person reads.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character written as an escape (`\n`, `\t`,
/// `\r`, `\e`, `\x7f`, `\u{9b}`), and backslashes doubled when anything was
/// escaped, so that the printed text reads back unambiguously.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One argument as a shell would need it: as is when it is plain, else in
/// single quotes (an empty one as `''`); control characters escaped.
pub fn shell_word(arg: &str) -> Cow<'_, str> {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        return Cow::Borrowed(arg);
    }
    let quoted = format!("'{}'", arg.replace('\'', r"'\''"));
    Cow::Owned(printable(&quoted).into_owned())
}

/// An argument list as one line, each argument through [`shell_word`].
pub fn shell_words<'a>(args: impl IntoIterator<Item = &'a str>) -> String {
    args.into_iter()
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(printable("git status"), Cow::Borrowed(_)));
        let forged = "x\u{1b}[2K\u{1b}[1G fake\u{1b}]0;TITLE\u{7}\n2026 row\u{7f}\u{9b}31m";
        let shown = printable(forged);
        assert!(!shown.chars().any(unsafe_char), "{shown}");
        assert_eq!(
            shown,
            "x\\e[2K\\e[1G fake\\e]0;TITLE\\x07\\n2026 row\\x7f\\u{9b}31m"
        );
        // Unambiguous: a literal backslash-e is not an escape.
        assert_eq!(printable("a\\e\u{1b}"), "a\\\\e\\e");
        assert_eq!(printable("\u{202e}txt.exe"), "\\u{202e}txt.exe");
    }

    #[test]
    fn arguments_are_quoted_when_a_shell_would_need_it() {
        assert_eq!(
            shell_words(["git", "commit", "-m", "two words", "", "it's", "a\nb"]),
            "git commit -m 'two words' '' 'it'\\''s' 'a\\nb'"
        );
        assert_eq!(shell_words(["/usr/bin/id", "-u"]), "/usr/bin/id -u");
    }
}
