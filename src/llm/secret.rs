//! Keeping API keys out of everything archsmith writes.
//!
//! The key is read from the environment variable named in the config and lives only inside
//! [`ApiKey`], whose `Debug` and `Display` print `***`. Text that came back from a server
//! (error bodies can echo what was sent) is passed through [`ApiKey::scrub`] before it is put
//! into an error message or a log line, and URLs lose their user-info before they are shown.

use std::fmt;

/// A secret API key. Formatting it in any way prints `***`; only [`ApiKey::expose`] gives the
/// real value, and only the HTTP layer calls it, to build the auth header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the auth header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` with `***`.
    pub fn scrub(&self, text: &str) -> String {
        // An empty key would make `replace` insert *** between every character.
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Scrubs `text` with the key when there is one.
pub(crate) fn scrub(key: Option<&ApiKey>, text: &str) -> String {
    match key {
        Some(k) => k.scrub(text),
        None => text.to_string(),
    }
}

/// Removes `user:password@` from a URL so that it can be logged or put in an error message.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => format!(
            "{}***@{}{}",
            &url[..scheme_end + 3],
            &authority[at + 1..],
            &rest[authority_end..]
        ),
        None => url.to_string(),
    }
}

/// Cuts `text` to at most `max` characters (on a char boundary), marking the cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(max) {
        Some((idx, _)) => format!(
            "{}… ({} chars in all)",
            &trimmed[..idx],
            trimmed.chars().count()
        ),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_formats() {
        let k = ApiKey::new("sk-abc");
        assert_eq!(format!("{k} {k:?} {:?}", Some(&k)), "*** *** Some(***)");
        assert_eq!(k.scrub("bad key sk-abc given"), "bad key *** given");
        assert_eq!(ApiKey::new("").scrub("abc"), "abc");
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://u:p@host:8/v1?x=1"),
            "https://***@host:8/v1?x=1"
        );
        assert_eq!(
            redact_url("http://localhost:11434/v1"),
            "http://localhost:11434/v1"
        );
        assert_eq!(redact_url("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        assert_eq!(excerpt("  héllo  ", 10), "héllo");
        assert_eq!(excerpt("héllo", 2), "hé… (5 chars in all)");
    }
}
