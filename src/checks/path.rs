//! Path normalisation (SPEC §3 step 3): the one canonical form of a request path that both
//! route matching and the upstream see, so the gateway and the upstream can never disagree
//! about which resource was asked for.

use crate::percent::hex_value;

/// Why a path was refused. Each maps to a 400 with its own detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path is not origin-form (does not start with `/`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F` or `%5C`: an encoded separator would split the path differently upstream.
    EncodedSeparator,
    /// `%00`, or any encoded or raw control byte.
    ControlByte,
    /// Dot segments climb above the root.
    AboveRoot,
}

impl PathError {
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::BadPercentEncoding => "the request path has an invalid percent-encoding",
            PathError::EncodedSeparator => {
                "the request path contains an encoded slash or backslash"
            }
            PathError::ControlByte => "the request path contains a NUL or control character",
            PathError::AboveRoot => "the request path climbs above the root",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Normalise a raw request path (without the query):
/// percent-encoded unreserved characters are decoded, other escapes are kept (in upper case),
/// `.` and `..` segments are resolved, and repeated slashes are merged. A trailing slash is kept.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    if is_normal(raw.as_bytes()) {
        return Ok(raw.to_string());
    }
    normalise_fully(raw)
}

/// Most paths are normal already: visible ASCII without `%` or `\`, no empty segment and no
/// segment that starts with a dot (which takes in `.` and `..`, and some that are not).
/// `normalise_fully` gives such a path back unchanged (unit-tested).
fn is_normal(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'/')
        && bytes
            .iter()
            .all(|&b| (0x21..0x7f).contains(&b) && b != b'%' && b != b'\\')
        && !bytes
            .windows(2)
            .any(|w| w[0] == b'/' && (w[1] == b'/' || w[1] == b'.'))
}

fn normalise_fully(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Pass 1: canonical percent-encoding.
    let mut decoded = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (hex_value(h), hex_value(l)),
                _ => (None, None),
            };
            let value = match (hi, lo) {
                (Some(h), Some(l)) => h * 16 + l,
                _ => return Err(PathError::BadPercentEncoding),
            };
            if value == b'/' || value == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            if value < 0x20 || value == 0x7f {
                return Err(PathError::ControlByte);
            }
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                decoded.push('%');
                decoded.push(HEX_UPPER[(value >> 4) as usize] as char);
                decoded.push(HEX_UPPER[(value & 0xf) as usize] as char);
            }
            i += 3;
            continue;
        }
        if b < 0x20 || b == 0x7f {
            return Err(PathError::ControlByte);
        }
        if b == b'\\' {
            return Err(PathError::EncodedSeparator);
        }
        // Non-ASCII bytes cannot come through `http::Uri`, but keep them escaped if they do.
        if b >= 0x80 {
            decoded.push('%');
            decoded.push(HEX_UPPER[(b >> 4) as usize] as char);
            decoded.push(HEX_UPPER[(b & 0xf) as usize] as char);
        } else {
            decoded.push(b as char);
        }
        i += 1;
    }

    // Pass 2: segments. Empty segments (repeated slashes) are merged away.
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    let mut ends_in_dir = trailing_slash;
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." => ends_in_dir = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                ends_in_dir = true;
            }
            s => {
                segments.push(s);
                ends_in_dir = trailing_slash;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ends_in_dir {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The shortcut for paths that are normal already changes no answer.
        #[test]
        fn normal_paths_come_back_as_they_are(
            path in proptest::collection::vec(
                proptest::sample::select(vec!["/", ".", "..", "a", "%2e", "%41", "%2F", "\\", "~", " ", "\u{7f}", "é", "-"]),
                0..12,
            )
        ) {
            let raw: String = path.concat();
            proptest::prop_assert_eq!(normalise(&raw), normalise_fully(&raw), "{:?}", raw);
            if is_normal(raw.as_bytes()) {
                proptest::prop_assert_eq!(normalise_fully(&raw), Ok(raw.clone()));
            }
        }
    }

    fn ok(raw: &str) -> String {
        normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/v1/orders"), "/v1/orders");
        assert_eq!(ok("/v1/orders/"), "/v1/orders/");
        assert_eq!(ok("/a%20b"), "/a%20b");
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
    }

    #[test]
    fn encoded_unreserved_are_decoded_before_dot_removal() {
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E./admin"), "/admin");
        assert_eq!(ok("/%7euser/%41"), "/~user/A");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        // Double encoding stays encoded: the upstream decodes it once, to a literal.
        assert_eq!(ok("/a/%252e%252e/b"), "/a/%252e%252e/b");
    }

    #[test]
    fn refusals() {
        assert_eq!(normalise("v1"), Err(PathError::NotAbsolute));
        assert_eq!(normalise("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalise(""), Err(PathError::NotAbsolute));
        assert_eq!(normalise("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a\\b"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%00"), Err(PathError::ControlByte));
        assert_eq!(normalise("/a%0d%0a"), Err(PathError::ControlByte));
        assert_eq!(normalise("/a%7F"), Err(PathError::ControlByte));
        assert_eq!(normalise("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/a%"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalise("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalise("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
    }

    #[test]
    fn hostile_lengths_do_not_overflow() {
        let deep = "/..".repeat(10_000);
        assert_eq!(normalise(&deep), Err(PathError::AboveRoot));
        let long = "/a".repeat(50_000);
        assert_eq!(ok(&long).len(), 100_000);
        let escapes = "%41".repeat(10_000);
        assert_eq!(ok(&format!("/{escapes}")).len(), 10_001);
    }
}
