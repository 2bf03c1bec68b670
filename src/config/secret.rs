//! Secrets in the configuration: read from the environment or a file (never written in the
//! config itself), and URLs shown to people with their userinfo (`user:password@`) hidden.

use super::compile::{relative_to, Errors};
use std::path::Path;

/// Read a secret from `{key}.{env_key}` (an environment variable's name) or `{key}.{file_key}`
/// (a file, trailing newlines dropped). `None` when neither is set or on an error (recorded).
pub(super) fn read(
    e: &mut Errors,
    key: &str,
    (env_key, env): (&str, Option<&str>),
    (file_key, path): (&str, Option<&str>),
    config_file: &Path,
) -> Option<Vec<u8>> {
    if let Some(name) = env {
        return match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value.into_bytes()),
            Ok(_) => {
                e.add(
                    format!("{key}.{env_key}"),
                    format!("the environment variable {name} is empty"),
                );
                None
            }
            Err(_) => {
                e.add(
                    format!("{key}.{env_key}"),
                    format!("the environment variable {name} is not set; export it before starting portcullis"),
                );
                None
            }
        };
    }
    let path = relative_to(config_file, path?);
    match std::fs::read(&path) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if bytes.is_empty() {
                e.add(
                    format!("{key}.{file_key}"),
                    format!("{} is empty", path.display()),
                );
                return None;
            }
            #[cfg(unix)]
            if super::lint::readable_by_others(&path) {
                e.warn(
                    format!("{key}.{file_key}"),
                    format!(
                        "{} is readable by group or others; chmod 600 it",
                        path.display()
                    ),
                );
            }
            Some(bytes)
        }
        Err(err) => {
            e.add(
                format!("{key}.{file_key}"),
                format!("cannot read {}: {err}", path.display()),
            );
            None
        }
    }
}

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
