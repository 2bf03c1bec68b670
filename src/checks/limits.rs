//! SPEC §3 step 2: size limits (URI → 414, header bytes or count → 431, declared body → 413)
//! and unambiguous message framing (both `Content-Length` and `Transfer-Encoding`, or
//! differing `Content-Length`s → 400), the classic request-smuggling openings.

use crate::problem::Refusal;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::time::Duration;

/// `[limits]`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_json_depth: usize,
    /// Longest wait for the next piece of a body that is read for validation.
    pub body_read_timeout: Duration,
    /// Longest time a client may take to send a whole request head (zero: no limit).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri_bytes: 8192,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_json_depth: 32,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Step 2: sizes, then framing. The declared body length is held to the route's limit once
/// step 3 has found the route (`DeclaredBody::within`).
pub fn check(session: &Session, limits: &Limits) -> Result<DeclaredBody, Refusal> {
    let req = session.req_header();
    check_sizes(req, limits)?;
    // Only a request with `Transfer-Encoding` needs the head as received.
    let raw_head = if req.headers.contains_key("transfer-encoding") {
        session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes())
    } else {
        None
    };
    declared_length(req, raw_head.as_deref()).map(DeclaredBody)
}

/// The body length a request declared (`Content-Length`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredBody(pub Option<u64>);

impl DeclaredBody {
    /// A declared body larger than the route allows is refused before any of it is read.
    pub fn within(self, max_body_bytes: u64) -> Result<(), Refusal> {
        match self.0 {
            Some(n) if n > max_body_bytes => Err(body_too_large(max_body_bytes)),
            _ => Ok(()),
        }
    }
}

pub fn check_sizes(req: &RequestHeader, limits: &Limits) -> Result<(), Refusal> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Err(Refusal::invalid(
            414,
            "uri_too_long",
            format!(
                "the request URI is longer than {} bytes",
                limits.max_uri_bytes
            ),
        ));
    }
    if req.headers.len() > limits.max_headers {
        return Err(Refusal::invalid(
            431,
            "too_many_headers",
            format!(
                "the request has more than {} header fields",
                limits.max_headers
            ),
        ));
    }
    // Bytes as on the wire: "name: value\r\n".
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::invalid(
            431,
            "headers_too_large",
            format!(
                "the request header fields are larger than {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// The body length the client declared, if any; `Err` when the framing is ambiguous.
/// `raw_head` is the request head as received: Pingora drops `Content-Length` when
/// `Transfer-Encoding` is present, so only the raw bytes show that both were sent.
pub fn declared_length(
    req: &RequestHeader,
    raw_head: Option<&[u8]>,
) -> Result<Option<u64>, Refusal> {
    let has_te = req.headers.contains_key("transfer-encoding");
    if has_te && raw_head.is_some_and(raw_has_content_length) {
        return Err(ambiguous(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    let mut length: Option<u64> = None;
    for value in req.headers.get_all("content-length") {
        // A list such as "5, 5" counts as several values.
        for part in value.as_bytes().split(|&b| b == b',') {
            let text = std::str::from_utf8(part).unwrap_or("").trim();
            let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<u64>().ok()
            } else {
                None
            };
            let Some(n) = parsed else {
                return Err(ambiguous("the Content-Length header is not a number"));
            };
            match length {
                Some(previous) if previous != n => {
                    return Err(ambiguous(
                        "the request has several differing Content-Length values",
                    ))
                }
                _ => length = Some(n),
            }
        }
    }
    if has_te && length.is_some() {
        return Err(ambiguous(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    Ok(length)
}

/// Whether a raw request head has a `Content-Length` field line (any case, any spacing).
fn raw_has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = line[..name_end].trim_ascii();
        name.eq_ignore_ascii_case(b"content-length")
    })
}

/// Where this request ends is uncertain, so the bytes after it cannot be read as the next one.
fn ambiguous(detail: &'static str) -> Refusal {
    Refusal::bad_request("ambiguous_framing", detail).closing_connection()
}

pub fn body_too_large(max_body_bytes: u64) -> Refusal {
    Refusal::invalid(
        413,
        "body_too_large",
        format!("the request body is larger than {max_body_bytes} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        crate::checks::test_request("POST", path, headers)
    }

    #[test]
    fn sizes() {
        let limits = Limits {
            max_uri_bytes: 10,
            max_header_bytes: 30,
            max_headers: 2,
            ..Limits::default()
        };
        assert!(check_sizes(&req("/short", &[]), &limits).is_ok());
        assert_eq!(
            check_sizes(&req("/longer-than-ten", &[]), &limits)
                .unwrap_err()
                .status,
            414
        );
        let many = req("/", &[("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(check_sizes(&many, &limits).unwrap_err().status, 431);
        let big = req("/", &[("a", &"x".repeat(40))]);
        assert_eq!(
            check_sizes(&big, &limits).unwrap_err().reason,
            "headers_too_large"
        );
    }

    fn dl(r: RequestHeader) -> Result<Option<u64>, Refusal> {
        declared_length(&r, None)
    }

    #[test]
    fn raw_head_reveals_dropped_content_length() {
        let te = req("/", &[("Transfer-Encoding", "chunked")]);
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH : 5\r\n\r\n";
        let refusal = declared_length(&te, Some(head)).unwrap_err();
        assert_eq!(refusal.reason, "ambiguous_framing");
        // Where this request ends is unknown: its connection must not carry another.
        assert_eq!(refusal.connection, crate::problem::AfterRefusal::Close);
        let clean = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n";
        assert_eq!(declared_length(&te, Some(clean)).unwrap(), None);
    }

    #[test]
    fn framing() {
        assert_eq!(dl(req("/", &[])).unwrap(), None);
        assert_eq!(dl(req("/", &[("Content-Length", "5")])).unwrap(), Some(5));
        assert_eq!(
            dl(req(
                "/",
                &[("Content-Length", "5"), ("Content-Length", "5")]
            ))
            .unwrap(),
            Some(5)
        );
        assert!(dl(req(
            "/",
            &[("Content-Length", "5"), ("Content-Length", "6")]
        ))
        .is_err());
        assert!(dl(req("/", &[("Content-Length", "5, 6")])).is_err());
        assert!(dl(req("/", &[("Content-Length", "-1")])).is_err());
        assert!(dl(req("/", &[("Content-Length", "+5")])).is_err());
        assert!(dl(req("/", &[("Content-Length", "99999999999999999999999")])).is_err());
        assert!(dl(req(
            "/",
            &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
        ))
        .is_err());
    }

    #[test]
    fn declared_body() {
        assert!(DeclaredBody(Some(10)).within(10).is_ok());
        let refusal = DeclaredBody(Some(11)).within(10).unwrap_err();
        assert_eq!((refusal.status, refusal.reason), (413, "body_too_large"));
        assert_eq!(refusal.family, crate::problem::Family::Validation);
        assert_eq!(refusal.connection, crate::problem::AfterRefusal::Reuse);
        assert!(DeclaredBody(None).within(10).is_ok());
    }
}
