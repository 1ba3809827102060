//! Untrusted text made safe to show: what a model, a config or an input file wrote reaches a
//! terminal only with its control characters made visible.
//!
//! A model's plan or a candidate line may hold ANSI escape sequences (colours, cursor moves,
//! OSC window titles and hyperlinks), a BEL, a carriage return that overwrites the line before
//! it, or Unicode bidirectional overrides that reorder what a reader sees. Every such character
//! is printed as a `\u{..}` escape instead, so the reader sees what was written.

/// Whether `c` changes how a terminal shows the text around it rather than being shown.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators, and the zero-width characters that hide text.
            | '\u{2028}' | '\u{2029}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
        )
}

/// `s` on one line with every control or bidirectional character escaped (`\u{1b}`), new
/// lines included.
pub fn visible(s: &str) -> String {
    escape(s, false)
}

/// `s` with every control or bidirectional character escaped but new lines and tabs kept, for
/// text that is meant to span lines (a plan).
pub fn visible_lines(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, keep_lines: bool) -> String {
    if !s.chars().any(is_hidden) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if keep_lines && (c == '\n' || c == '\t') {
            out.push(c);
        } else if is_hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters of `s` (made visible), with how many more there were.
pub fn clipped(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return visible(s);
    }
    let head: String = s.chars().take(max).collect();
    format!("{}... ({} more characters)", visible(&head), n - max)
}

/// Text for a terminal: control characters visible, new lines kept, and every line cut to
/// `max_line` characters (an error that quotes a megabyte of input says so in one line).
pub fn for_terminal(s: &str, max_line: usize) -> String {
    s.split('\n')
        .map(|line| {
            if line.chars().count() <= max_line {
                visible_lines(line)
            } else {
                clipped(line, max_line)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error and its causes on one line, `a: b: c`, each said once: an error whose message
/// already quotes its source (`cannot read X: No such file`) does not repeat it.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Text made safe inside HTML or SVG markup, as element text or a quoted attribute.
pub fn escape_markup(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A score as every table, report and prompt prints it: four decimals, `-` for none, and a
/// non-finite value as itself (`NaN`, `inf`).
pub fn score(s: Option<f64>) -> String {
    match s {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        Some(x) => x.to_string(),
        None => "-".to_string(),
    }
}

/// Reads candidates (or a program) from a file, or from standard input for `-`, as UTF-8.
pub fn read_input(file: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read candidates from standard input")?;
    } else {
        bytes =
            std::fs::read(file).with_context(|| format!("cannot read candidates from {file}"))?;
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            if file == "-" { "standard input" } else { file },
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_markup_print_one_way() {
        assert_eq!(score(Some(0.123456)), "0.1235");
        assert_eq!(score(None), "-");
        assert_eq!(score(Some(f64::NAN)), "NaN");
        assert_eq!(
            escape_markup("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn escapes_terminal_controls_and_bidi_overrides() {
        let hostile = "plan\x1b]0;pwned\x07 \x1b[31mred\x1b[0m \u{202E}txt.exe\r!";
        let v = visible(hostile);
        assert!(!v.chars().any(is_hidden), "{v}");
        assert_eq!(
            v,
            "plan\\u{1b}]0;pwned\\u{7} \\u{1b}[31mred\\u{1b}[0m \\u{202e}txt.exe\\u{d}!"
        );
        assert_eq!(visible("a\nb"), "a\\u{a}b");
        assert_eq!(visible_lines("a\n\tb\x1b"), "a\n\tb\\u{1b}");
        assert_eq!(visible("plain text, ünïcode"), "plain text, ünïcode");
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read config {path}: {source}")]
        struct ReadError {
            path: String,
            source: std::io::Error,
        }
        let e = anyhow::Error::new(ReadError {
            path: "x.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        })
        .context("cannot start");
        assert_eq!(
            error_chain(&e),
            "cannot start: cannot read config x.toml: No such file"
        );
    }

    #[test]
    fn clipping_says_how_much_was_left_out() {
        let long = "x".repeat(1_000_000);
        let c = clipped(&long, 40);
        assert!(
            c.len() < 100 && c.ends_with("(999960 more characters)"),
            "{c}"
        );
        assert_eq!(clipped("short", 40), "short");
        let shown = for_terminal(&format!("unknown space `{long}`\nnext\x1b"), 100);
        assert!(
            shown.len() < 200 && shown.ends_with("characters)\nnext\\u{1b}"),
            "{shown}"
        );
    }
}
