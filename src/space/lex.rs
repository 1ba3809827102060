//! The lexer shared by the candidate notation and the grammar language, and source spans.
//!
//! Both languages are small and close: identifiers, whole numbers, a little punctuation,
//! `#` comments. Newlines are tokens because both use them to end statements.

use std::fmt;

/// A byte range in a source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// 1-based line and column (in characters) of the span's start in `src`.
    pub fn line_col(&self, src: &str) -> (usize, usize) {
        let start = floor_char_boundary(src, self.start.min(src.len()));
        let before = &src[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = src[line_start..start].chars().count() + 1;
        (line, col)
    }

    /// The source line the span starts on, with a caret line under the span, for messages.
    pub fn snippet(&self, src: &str) -> String {
        let (line, col) = self.line_col(src);
        let start = floor_char_boundary(src, self.start.min(src.len()));
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        let text = &src[line_start..line_end];
        let end = floor_char_boundary(src, self.end.clamp(start, line_end));
        let width = src[start..end].chars().count().max(1);
        let gutter = line.to_string();
        format!(
            "{gutter} | {text}\n{pad} | {sp}{carets}",
            pad = " ".repeat(gutter.len()),
            sp = " ".repeat(col - 1),
            carets = "^".repeat(width)
        )
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The known name closest to `name` by edit distance, if it is close enough to be a likely
/// typo, as "; did you mean `x`?".
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = edit_distance(name, k);
        if k != name && d <= 2.max(name.len() / 3) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(u64),
    Float(f64),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Pipe,
    At,
    Semi,
    Newline,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(n) => write!(f, "`{n}`"),
            Tok::Float(x) => write!(f, "`{x}`"),
            Tok::Str(s) => write!(f, "\"{s}\""),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBrace => f.write_str("`{`"),
            Tok::RBrace => f.write_str("`}`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Eq => f.write_str("`=`"),
            Tok::Pipe => f.write_str("`|`"),
            Tok::At => f.write_str("`@`"),
            Tok::Semi => f.write_str("`;`"),
            Tok::Newline => f.write_str("end of line"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// A character the lexer could not read, or a malformed number or string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub span: Span,
}

/// Splits `src` into tokens. Bad characters become errors and are skipped, so that one stray
/// character does not hide the rest of the file's problems.
pub fn lex(src: &str) -> (Vec<Token>, Vec<LexError>) {
    let mut toks = Vec::new();
    let mut errs = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = |t: Tok| Token {
            tok: t,
            span: Span::new(start, start + 1),
        };
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b'\n' => {
                toks.push(single(Tok::Newline));
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b')' | b'{' | b'}' | b',' | b'=' | b'|' | b'@' | b';' => {
                let t = match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'{' => Tok::LBrace,
                    b'}' => Tok::RBrace,
                    b',' => Tok::Comma,
                    b'=' => Tok::Eq,
                    b'|' => Tok::Pipe,
                    b'@' => Tok::At,
                    _ => Tok::Semi,
                };
                toks.push(single(t));
                i += 1;
            }
            b'"' => {
                i += 1;
                let body_start = i;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'"' {
                    toks.push(Token {
                        tok: Tok::Str(src[body_start..i].to_string()),
                        span: Span::new(start, i + 1),
                    });
                    i += 1;
                } else {
                    errs.push(LexError {
                        message: "unterminated string (a string ends with `\"` on the same line)"
                            .into(),
                        span: Span::new(start, i),
                    });
                }
            }
            b'0'..=b'9' | b'.' | b'-' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
                {
                    i += 1;
                }
                let text = &src[start..i];
                let span = Span::new(start, i);
                if let Ok(n) = text.parse::<u64>() {
                    toks.push(Token {
                        tok: Tok::Int(n),
                        span,
                    });
                } else if let Ok(x) = text.parse::<f64>() {
                    toks.push(Token {
                        tok: Tok::Float(x),
                        span,
                    });
                } else {
                    let message = if text.bytes().all(|b| b.is_ascii_digit()) {
                        format!("number `{text}` is too large")
                    } else {
                        format!("`{text}` is not a number")
                    };
                    errs.push(LexError { message, span });
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                toks.push(Token {
                    tok: Tok::Ident(src[start..i].to_string()),
                    span: Span::new(start, i),
                });
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                i += ch.len_utf8().max(1);
                errs.push(LexError {
                    message: format!("unexpected character {ch:?}"),
                    span: Span::new(start, i),
                });
            }
        }
    }
    toks.push(Token {
        tok: Tok::Eof,
        span: Span::new(src.len(), src.len()),
    });
    (toks, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_positions() {
        let src = "route(im2col(3,1,1), # conv\n linear(64))";
        let (toks, errs) = lex(src);
        assert!(errs.is_empty());
        assert_eq!(toks[0].tok, Tok::Ident("route".into()));
        let lin = toks
            .iter()
            .find(|t| t.tok == Tok::Ident("linear".into()))
            .unwrap();
        assert_eq!(lin.span.line_col(src), (2, 2));
        assert!(lin.span.snippet(src).ends_with(" ^^^^^^"));
    }

    #[test]
    fn bad_characters_are_errors_not_panics() {
        let (_, errs) = lex("seq(a, é$)\"open");
        assert_eq!(errs.len(), 3);
    }
}
