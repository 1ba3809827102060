//! Reading a model's reply: a plan and candidates from a propose or repair reply, scores from
//! a predict reply.
//!
//! The templates ask for `PLAN: ...` then `CANDIDATE: <notation>` / `PREDICTED: <number>`
//! pairs. Models drift from that, so the parser also accepts the tags with markdown decoration
//! (`**CANDIDATE:**`, list markers, backticks), candidates as the lines of ``` fenced blocks,
//! and numbered lists whose items begin with a candidate. It never judges the notation (the
//! space module does); it returns the raw text of each candidate, and when it finds nothing it
//! says precisely what it looked for.

use serde::Serialize;

/// One candidate found in a reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    /// The candidate as written, trimmed of markdown around it.
    pub text: String,
    pub predicted: Option<f64>,
    /// 1-based line of the reply where the candidate starts.
    pub line: usize,
}

/// Which convention the reply followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFormat {
    /// `CANDIDATE:` lines, as the templates ask.
    Tagged,
    /// Lines of fenced code blocks.
    Fenced,
    /// Items of a numbered list.
    Numbered,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParsedReply {
    pub plan: Option<String>,
    pub proposals: Vec<Proposal>,
    pub format: ReplyFormat,
    /// Things the parser noticed and let pass, e.g. an unreadable predicted score.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionReply {
    /// One slot per candidate asked about, `None` where the reply gave no number.
    pub scores: Vec<Option<f64>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("no candidate in the reply: {reason}")]
    NoCandidates { reason: String },
    #[error("no prediction in the reply: {reason}")]
    NoPredictions { reason: String },
}

struct Line<'a> {
    /// 1-based.
    number: usize,
    raw: &'a str,
    in_fence: bool,
    fence_marker: bool,
    /// Index of the fenced block the line belongs to.
    block: usize,
}

fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut in_fence = false;
    let mut block = 0;
    for (i, raw) in text.lines().enumerate() {
        let marker = raw.trim_start().starts_with("```") || raw.trim_start().starts_with("~~~");
        if marker {
            if !in_fence {
                block += 1;
            }
            in_fence = !in_fence;
            out.push(Line {
                number: i + 1,
                raw,
                in_fence: false,
                fence_marker: true,
                block,
            });
        } else {
            out.push(Line {
                number: i + 1,
                raw,
                in_fence,
                fence_marker: false,
                block,
            });
        }
    }
    out
}

/// Strips list markers, headings, quotes and emphasis from the start of a line.
fn undecorate(line: &str) -> &str {
    let mut s = line.trim();
    loop {
        let before = s;
        s = s
            .trim_start_matches(['#', '>', '*', '_', '-', '+', '•'])
            .trim_start();
        // "1." / "1)" / "(1)"
        let digits = s
            .trim_start_matches('(')
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        let offset = usize::from(s.starts_with('('));
        if digits > 0 {
            let rest = &s[offset + digits..];
            if let Some(r) = rest.strip_prefix(['.', ')', ':']) {
                if r.starts_with(char::is_whitespace) || r.is_empty() {
                    s = r.trim_start();
                }
            }
        }
        if s == before {
            return s;
        }
    }
}

/// If `line` (undecorated) starts with one of `tags` (case-insensitive), optionally followed
/// by a number (`CANDIDATE 2:`), emphasis and `:` or `=`, returns the text after it.
fn strip_tag<'a>(line: &'a str, tags: &[&str]) -> Option<&'a str> {
    let s = undecorate(line);
    for tag in tags {
        let Some(head) = s.get(..tag.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(tag) {
            continue;
        }
        let rest = s[tag.len()..].trim_start_matches(['*', '_', ' ', '#']);
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(['*', '_', ' ']);
        if let Some(r) = rest.strip_prefix([':', '=']) {
            return Some(r.trim_start_matches(['*', '_']).trim());
        }
    }
    None
}

const CANDIDATE_TAGS: &[&str] = &["CANDIDATE"];
const PREDICTED_TAGS: &[&str] = &[
    "PREDICTED SCORE",
    "PREDICTED",
    "PREDICTION",
    "PREDICTED ACCURACY",
];
const PLAN_TAGS: &[&str] = &["PLAN"];

/// The first number in `s` (e.g. `0.83`, `-1.5e-3`, `83`).
fn first_number(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let starts = c.is_ascii_digit()
            || ((c == '-' || c == '.') && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()));
        if starts {
            let mut j = i + 1;
            while j < bytes.len() && ((bytes[j] as char).is_ascii_digit() || bytes[j] == b'.') {
                j += 1;
            }
            // An exponent only if digits follow it.
            if j + 1 < bytes.len() && (bytes[j] == b'e' || bytes[j] == b'E') {
                let mut k = j + 1;
                if bytes[k] == b'-' || bytes[k] == b'+' {
                    k += 1;
                }
                if k < bytes.len() && bytes[k].is_ascii_digit() {
                    j = k;
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                }
            }
            if let Ok(v) = s[i..j].trim_end_matches('.').parse::<f64>() {
                return Some(v);
            }
            i = j;
        } else {
            i += c.len_utf8().max(1);
        }
    }
    None
}

/// The candidate at the start of `s`: the first `backtick span`, else an identifier with its
/// balanced parenthesised arguments, else a bare identifier standing alone.
fn leading_notation(s: &str) -> Option<&str> {
    let s = s.trim();
    if let Some(start) = s.find('`') {
        let inner = &s[start + 1..];
        if let Some(end) = inner.find('`') {
            let span = inner[..end].trim();
            // A backtick span after prose counts only if nothing but markup precedes it.
            if !span.is_empty() && s[..start].trim_matches(['*', '_', ' ', ':']).is_empty() {
                return Some(span);
            }
        }
    }
    let ident = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .map(char::len_utf8)
        .sum::<usize>();
    if ident == 0 || !s.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        return None;
    }
    let rest = &s[ident..];
    if rest.starts_with('(') {
        let mut depth = 0i32;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&s[..ident + i + 1]);
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    // A lone word ("relu") is a candidate only when nothing but punctuation follows it.
    rest.trim_matches(|c: char| c.is_whitespace() || ".,;:".contains(c))
        .is_empty()
        .then_some(&s[..ident])
}

fn paren_depth(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        })
        .sum()
}

/// Parses a propose or repair reply.
pub fn parse_reply(text: &str) -> Result<ParsedReply, ReplyError> {
    let lines = split_lines(text);
    let mut notes = Vec::new();
    let plan = find_plan(&lines);

    let tagged = tagged_candidates(&lines, &mut notes);
    if !tagged.is_empty() {
        return Ok(ParsedReply {
            plan,
            proposals: tagged,
            format: ReplyFormat::Tagged,
            notes,
        });
    }
    let empty_tags = lines
        .iter()
        .filter(|l| strip_tag(l.raw, CANDIDATE_TAGS).is_some())
        .count();

    let (fenced, blocks) = fenced_candidates(&lines, &mut notes);
    if !fenced.is_empty() {
        return Ok(ParsedReply {
            plan,
            proposals: fenced,
            format: ReplyFormat::Fenced,
            notes,
        });
    }
    let (numbered, items) = numbered_candidates(&lines, &mut notes);
    if !numbered.is_empty() {
        return Ok(ParsedReply {
            plan,
            proposals: numbered,
            format: ReplyFormat::Numbered,
            notes,
        });
    }

    let chars = text.chars().count();
    let reason = if text.trim().is_empty() {
        format!("the reply is empty ({chars} characters of whitespace)")
    } else {
        let tags = if empty_tags > 0 {
            format!("{empty_tags} line(s) starting with CANDIDATE: but nothing after the tag")
        } else {
            "no line starting with CANDIDATE:".to_string()
        };
        let fences = if blocks > 0 {
            format!("{blocks} fenced block(s) with no candidate lines in them")
        } else {
            "no fenced block".to_string()
        };
        let list = if items > 0 {
            format!("{items} numbered item(s), none beginning with a candidate such as name(...)")
        } else {
            "no numbered list".to_string()
        };
        format!("{tags}, {fences} and {list} found in a {chars}-character reply")
    };
    Err(ReplyError::NoCandidates { reason })
}

/// `PLAN:` and the lines that continue it, up to a blank line, a fence or another tag.
fn find_plan(lines: &[Line<'_>]) -> Option<String> {
    let start = lines
        .iter()
        .position(|l| strip_tag(l.raw, PLAN_TAGS).is_some())?;
    let mut plan = strip_tag(lines[start].raw, PLAN_TAGS)
        .unwrap_or("")
        .to_string();
    for l in &lines[start + 1..] {
        let t = l.raw.trim();
        if t.is_empty() && !plan.is_empty() {
            break;
        }
        if l.fence_marker
            || strip_tag(l.raw, CANDIDATE_TAGS).is_some()
            || strip_tag(l.raw, PREDICTED_TAGS).is_some()
        {
            break;
        }
        if !t.is_empty() {
            if !plan.is_empty() {
                plan.push(' ');
            }
            plan.push_str(t);
        }
    }
    let plan = plan.trim().to_string();
    (!plan.is_empty()).then_some(plan)
}

fn predicted_value(text: &str, line: usize, notes: &mut Vec<String>) -> Option<f64> {
    let v = standalone_number(text);
    if v.is_none() {
        notes.push(format!(
            "line {line}: predicted score `{}` is not a number",
            crate::text::clipped(text.trim(), 80)
        ));
    }
    v
}

/// A predicted score: the text's first word (after a hedge such as "about") must be a finite
/// number (markdown emphasis, a leading `~` and a trailing `.`, `,` or `%` allowed). A number buried in other text, as in
/// `<img src=x onerror=alert(5)>`, is not a prediction.
fn standalone_number(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let mut word = words.next()?;
    // A hedge before the number is how models write it ("about 0.7").
    if [
        "about",
        "approximately",
        "approx.",
        "around",
        "roughly",
        "≈",
    ]
    .contains(&word.to_lowercase().as_str())
    {
        word = words.next()?;
    }
    let word = word.trim_matches(['*', '`', '_']);
    let word = word.strip_prefix('~').unwrap_or(word);
    let word = word.trim_end_matches(['.', ',', ';']);
    let word = word.strip_suffix('%').unwrap_or(word);
    let starts_ok = word
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.');
    let v: f64 = word.parse().ok().filter(|_| starts_ok)?;
    v.is_finite().then_some(v)
}

fn tagged_candidates(lines: &[Line<'_>], notes: &mut Vec<String>) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        i += 1;
        if let Some(rest) = strip_tag(l.raw, CANDIDATE_TAGS) {
            // A PREDICTED tag on the same line belongs to this candidate.
            let upper = rest.to_ascii_uppercase();
            let (cand, pred) = match upper.find("PREDICTED") {
                Some(at) => (&rest[..at], Some(&rest[at..])),
                None => (rest, None),
            };
            let mut text = cand
                .trim()
                .trim_end_matches([',', ';', '|'])
                .trim()
                .to_string();
            let mut line = l.number;
            if text.is_empty() {
                // The candidate may sit on the next non-empty line, often fenced.
                while let Some(next) = lines.get(i) {
                    i += 1;
                    if next.fence_marker || next.raw.trim().is_empty() {
                        continue;
                    }
                    if [CANDIDATE_TAGS, PREDICTED_TAGS, PLAN_TAGS]
                        .iter()
                        .any(|t| strip_tag(next.raw, t).is_some())
                    {
                        i -= 1;
                        break;
                    }
                    text = next.raw.trim().to_string();
                    line = next.number;
                    break;
                }
            }
            let text = clean_candidate(&text, line, notes);
            if text.is_empty() {
                continue;
            }
            let predicted = pred
                .and_then(|p| strip_tag(p, PREDICTED_TAGS))
                .and_then(|p| predicted_value(p, line, notes));
            out.push(Proposal {
                text,
                predicted,
                line,
            });
        } else if let Some(rest) = strip_tag(l.raw, PREDICTED_TAGS) {
            match out.last_mut() {
                Some(p) if p.predicted.is_none() => {
                    p.predicted = predicted_value(rest, l.number, notes)
                }
                Some(_) => notes.push(format!(
                    "line {}: a second predicted score for one candidate was ignored",
                    l.number
                )),
                None => notes.push(format!(
                    "line {}: a predicted score before any candidate was ignored",
                    l.number
                )),
            }
        }
    }
    out
}

/// Takes the notation out of the markdown around it; keeps the raw text (with a note) when
/// it does not look like notation, since only the space's parser can judge.
fn clean_candidate(text: &str, line: usize, notes: &mut Vec<String>) -> String {
    let t = text.trim();
    if let Some(n) = leading_notation(t) {
        return n.to_string();
    }
    let stripped = t.trim_matches(['`', '*', '_']).trim().to_string();
    if !stripped.is_empty() && paren_depth(&stripped) != 0 {
        notes.push(format!("line {line}: candidate has unbalanced parentheses"));
    }
    stripped
}

fn fenced_candidates(lines: &[Line<'_>], notes: &mut Vec<String>) -> (Vec<Proposal>, usize) {
    let mut out = Vec::new();
    let blocks = lines
        .iter()
        .filter(|l| l.in_fence)
        .map(|l| l.block)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut pending: Option<(String, usize)> = None;
    let mut pending_block = 0;
    for l in lines.iter().filter(|l| l.in_fence) {
        // A block that closed with parentheses still open ends the pending candidate.
        if pending.is_some() && l.block != pending_block {
            if let Some((text, line)) = pending.take() {
                notes.push(format!("line {line}: candidate has unbalanced parentheses"));
                out.push(Proposal {
                    text,
                    predicted: None,
                    line,
                });
            }
        }
        let (body, comment) = split_comment(l.raw);
        let body = body.trim();
        if body.is_empty() {
            continue;
        }
        let (mut text, line) = match pending.take() {
            Some((mut t, line)) => {
                t.push(' ');
                t.push_str(body);
                (t, line)
            }
            None => (body.to_string(), l.number),
        };
        if paren_depth(&text) > 0 {
            pending = Some((text, line));
            pending_block = l.block;
            continue;
        }
        text = text.trim_end_matches([',', ';']).to_string();
        let predicted = comment.and_then(first_number);
        out.push(Proposal {
            text,
            predicted,
            line,
        });
    }
    if let Some((text, line)) = pending {
        notes.push(format!("line {line}: candidate has unbalanced parentheses"));
        out.push(Proposal {
            text,
            predicted: None,
            line,
        });
    }
    (out, blocks)
}

/// Splits `# ...` or `// ...` off a fenced line.
fn split_comment(s: &str) -> (&str, Option<&str>) {
    let cut = [
        s.find(" #"),
        s.find("//"),
        s.trim_start().starts_with('#').then_some(0),
    ]
    .into_iter()
    .flatten()
    .min();
    match cut {
        Some(at) => (&s[..at], Some(&s[at..])),
        None => (s, None),
    }
}

fn numbered_candidates(lines: &[Line<'_>], notes: &mut Vec<String>) -> (Vec<Proposal>, usize) {
    let mut out = Vec::new();
    let mut items = 0;
    for l in lines.iter().filter(|l| !l.in_fence && !l.fence_marker) {
        let t = l.raw.trim_start();
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || !t[digits..].starts_with(['.', ')']) {
            continue;
        }
        items += 1;
        let rest = undecorate(t);
        let Some(text) = leading_notation(rest) else {
            continue;
        };
        // A score after the candidate: "(predicted 0.81)", "- score: 0.8".
        let after = rest.find(text).map_or("", |at| &rest[at + text.len()..]);
        let lower = after.to_lowercase();
        let predicted = ["predict", "score", "accuracy", "expected"]
            .iter()
            .filter_map(|k| lower.find(k))
            .min()
            .and_then(|at| first_number(&after[at..]));
        if paren_depth(text) != 0 {
            notes.push(format!(
                "line {}: candidate has unbalanced parentheses",
                l.number
            ));
        }
        out.push(Proposal {
            text: text.to_string(),
            predicted,
            line: l.number,
        });
    }
    (out, items)
}

/// Parses a predict reply for `expected` candidates: lines `PREDICTION <i>: <number>`, or
/// `<i>: <number>` / `<i>. <number>`; failing those, exactly `expected` lines that hold
/// nothing but a number, taken in order.
pub fn parse_predictions(text: &str, expected: usize) -> Result<PredictionReply, ReplyError> {
    let mut scores = vec![None; expected];
    let mut notes = Vec::new();
    let mut found = 0;
    let mut bare = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let t = raw
            .trim()
            .trim_start_matches(['-', '*', '_', '`', '•', '>', ' '])
            .trim_end_matches(['*', '_', '`', ' ']);
        if let Ok(v) = t.parse::<f64>() {
            bare.push(Some(v));
            continue;
        }
        let lower = t.to_ascii_lowercase();
        let body = ["prediction", "predicted", "candidate", "score"]
            .iter()
            .find_map(|k| lower.starts_with(k).then(|| &t[k.len()..]))
            .unwrap_or(t)
            .trim_start_matches([' ', '#', '*', '_']);
        let digits = body.chars().take_while(char::is_ascii_digit).count();
        let sep = body[digits..].trim_start_matches(['*', '_', ' ']);
        if digits > 0 && sep.starts_with([':', '=', '.', ')']) {
            let index: usize = body[..digits].parse().unwrap_or(0);
            let value = first_number(&sep[1..]);
            match (index, value) {
                (i, Some(v)) if (1..=expected).contains(&i) => {
                    if scores[i - 1].is_some() {
                        notes.push(format!("line {line}: a second prediction for candidate {i} was ignored"));
                    } else {
                        scores[i - 1] = Some(v);
                        found += 1;
                    }
                }
                (i, Some(_)) => notes.push(format!("line {line}: prediction for candidate {i}, but only {expected} were asked about")),
                (i, None) => notes.push(format!("line {line}: prediction for candidate {i} is not a number")),
            }
        }
    }
    if found == 0 && bare.len() == expected && expected > 0 {
        notes.push("no numbered predictions; took the bare numbers in order".into());
        return Ok(PredictionReply {
            scores: bare,
            notes,
        });
    }
    if found == 0 {
        return Err(ReplyError::NoPredictions {
            reason: format!(
                "no line of the form `PREDICTION <n>: <number>` for n in 1..={expected} in a {}-character reply",
                text.chars().count()
            ),
        });
    }
    let missing: Vec<String> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "no prediction for candidate(s) {}",
            missing.join(", ")
        ));
    }
    Ok(PredictionReply { scores, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predicted_score_is_a_number_on_its_own() {
        assert_eq!(standalone_number(" 0.83"), Some(0.83));
        assert_eq!(standalone_number("**0.9** (validation)"), Some(0.9));
        assert_eq!(standalone_number("~0.7."), Some(0.7));
        assert_eq!(standalone_number("83%"), Some(83.0));
        assert_eq!(standalone_number("<img src=x onerror=alert(5)>"), None);
        assert_eq!(standalone_number("about 0.8"), Some(0.8));
        assert_eq!(
            standalone_number("about <img src=x onerror=alert(5)>"),
            None
        );
        assert_eq!(standalone_number("score 0.8"), None);
        assert_eq!(standalone_number("inf"), None);
        assert_eq!(standalone_number("NaN"), None);
        assert_eq!(standalone_number(""), None);
        let r =
            parse_reply("CANDIDATE: seq(linear(8), relu)\nPREDICTED: <img src=x onerror=alert(5)>")
                .unwrap();
        assert_eq!(r.proposals[0].predicted, None);
        assert!(r.notes[0].contains("is not a number"), "{:?}", r.notes);
    }

    #[test]
    fn numbers() {
        assert_eq!(first_number("about 0.83."), Some(0.83));
        assert_eq!(first_number("-1.5e-3 x"), Some(-1.5e-3));
        assert_eq!(first_number("83%"), Some(83.0));
        assert_eq!(first_number("e.g. high"), None);
        assert_eq!(first_number("linear(64)"), Some(64.0));
    }

    #[test]
    fn notation_at_start() {
        assert_eq!(
            leading_notation("seq(linear(64), relu) -- small"),
            Some("seq(linear(64), relu)")
        );
        assert_eq!(
            leading_notation("**`route(a, b)`** is good"),
            Some("route(a, b)")
        );
        assert_eq!(leading_notation("relu."), Some("relu"));
        assert_eq!(leading_notation("Use a wider layer"), None);
        assert_eq!(leading_notation("seq(linear(64)"), None);
        assert_eq!(leading_notation("A `seq(x)` here"), None);
    }

    #[test]
    fn tags_with_decoration() {
        assert_eq!(
            strip_tag("**CANDIDATE 2:** `x`", CANDIDATE_TAGS),
            Some("`x`")
        );
        assert_eq!(strip_tag("  - candidate = y", CANDIDATE_TAGS), Some("y"));
        assert_eq!(
            strip_tag("3. Predicted score: 0.8", PREDICTED_TAGS),
            Some("0.8")
        );
        assert_eq!(strip_tag("Candidates are below:", CANDIDATE_TAGS), None);
    }
}
