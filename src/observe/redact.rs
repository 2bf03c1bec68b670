//! What a person or a log is shown of a URL that may carry credentials: its userinfo
//! (`user:password@`) hidden, in config errors, warnings and log lines alike.

/// Whether a URL's authority carries userinfo (`user:password@host`).
pub fn has_userinfo(url: &str) -> bool {
    userinfo_span(url).is_some()
}

/// The URL with any userinfo replaced by `***`, for every message a person or a log reads.
pub fn redact_url(url: &str) -> String {
    match userinfo_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Byte range of what may be userinfo: after `scheme://` (or from the start of a value that
/// is not even a URL), up to the last `@` anywhere. A password with an unencoded `/`, `?` or
/// `#` ends a parser's authority early, so the whole span is hidden rather than only what a
/// parser would call userinfo.
fn userinfo_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let at = url[start..].rfind('@')?;
    Some((start, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_and_the_rest_kept() {
        for (url, shown) in [
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://***@127.0.0.1:6379/0",
            ),
            ("rediss://user:p@ss@host:6380", "rediss://***@host:6380"),
            ("redis://:pa/s3cret@host:6379", "redis://***@host:6379"),
            ("redis://:s3cret#x@host", "redis://***@host"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("https://id.example.com/jwks", "https://id.example.com/jwks"),
            ("not a url", "not a url"),
            ("redis//:s3cret@host:1", "***@host:1"),
            ("redis://:pw@", "redis://***@"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
            assert_eq!(has_userinfo(url), url != shown, "{url}");
        }
    }
}
