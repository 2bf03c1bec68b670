//! An upstream's response on its way back (SPEC §3 step 11): its banners removed, then the
//! route's response headers applied — `X-Content-Type-Options: nosniff` and, on a route that
//! authenticates, `Cache-Control: no-store` where the upstream set none, and the headers the
//! config names.

use crate::checks::cors::{CorsHeader, VARY_ORIGIN};
use crate::problem;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_core::Result;
use pingora_http::ResponseHeader;

/// What upstream software says of itself: names and versions an attacker matches against known
/// vulnerabilities, of no use to a client. (Names made once: a `&str` is parsed on every use.)
pub const BANNERS: [HeaderName; 4] = [
    http::header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");

/// A route's response headers (`[response]`, overridden per route by `response = {…}`).
#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    /// `X-Content-Type-Options: nosniff` where the upstream did not say it.
    pub nosniff: bool,
    /// `Cache-Control: no-store` where the upstream set no `Cache-Control` (authenticated
    /// routes, unless turned off: what one consumer was sent is not kept by a shared cache).
    pub no_store: bool,
    /// Set on every response, replacing the upstream's.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `upstream_errors = "mask"`: an upstream 5xx body is replaced by problem+json.
    pub mask_errors: bool,
}

impl Default for ResponsePolicy {
    /// As for a public route with no `[response]`.
    fn default() -> Self {
        ResponsePolicy {
            nosniff: true,
            no_store: false,
            headers: Vec::new(),
            mask_errors: false,
        }
    }
}

/// Apply `policy` to an upstream's response head.
pub fn harden(header: &mut ResponseHeader, policy: &ResponsePolicy) -> Result<()> {
    for name in &BANNERS {
        header.remove_header(name);
    }
    if policy.nosniff && !header.headers.contains_key(&NOSNIFF) {
        header.insert_header("X-Content-Type-Options", "nosniff")?;
    }
    if policy.no_store && !header.headers.contains_key(http::header::CACHE_CONTROL) {
        header.insert_header("Cache-Control", "no-store")?;
    }
    for (name, value) in &policy.headers {
        header.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// On a CORS route the gateway alone speaks CORS: the upstream's `Access-Control-*` headers
/// are replaced by `headers` (none for an origin that is not allowed), and `Vary: Origin` is
/// added so that no cache hands one origin's answer to another.
pub fn cors(header: &mut ResponseHeader, headers: &[CorsHeader]) -> Result<()> {
    let upstream_own: Vec<HeaderName> = header
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream_own {
        header.remove_header(&name);
    }
    for (name, value) in headers {
        header.insert_header(*name, value.as_str())?;
    }
    header.append_header("Vary", VARY_ORIGIN)?;
    Ok(())
}

/// Whether this upstream answer is to be masked: a 5xx that has a body, on a route with
/// `upstream_errors = "mask"`, for a request that is not `HEAD`.
pub fn masks(header: &ResponseHeader, policy: &ResponsePolicy, head_only: bool) -> bool {
    if !policy.mask_errors || !header.status.is_server_error() || head_only {
        return false;
    }
    // An empty body hides nothing; without a declared length or chunked framing there is no
    // body at all (Pingora marks a body read until close as chunked before this runs).
    let length = header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => header.headers.contains_key(http::header::TRANSFER_ENCODING),
    }
}

/// The masked answer to an upstream's 5xx: its status and `Retry-After` kept, the rest —
/// headers and body, where stack traces and versions hide — replaced by problem+json.
pub fn masked(header: &ResponseHeader, request_id: &str) -> Result<(ResponseHeader, Bytes)> {
    let status = header.status.as_u16();
    let body = problem::body(
        status,
        "the upstream failed to complete the request; its answer is withheld",
        request_id,
        &[],
    );
    let mut head = problem::header(status, body.len(), request_id, &[])?;
    if let Some(retry_after) = header.headers.get(http::header::RETRY_AFTER) {
        head.insert_header(http::header::RETRY_AFTER, retry_after.clone())?;
    }
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            h.append_header(name.to_string(), *value).unwrap();
        }
        h
    }

    #[test]
    fn only_a_5xx_with_a_body_on_a_masking_route_is_masked() {
        let masking = ResponsePolicy {
            mask_errors: true,
            ..ResponsePolicy::default()
        };
        let passing = ResponsePolicy::default();
        let html = [("content-length", "120"), ("content-type", "text/html")];
        assert!(masks(&upstream(500, &html), &masking, false));
        assert!(masks(
            &upstream(502, &[("transfer-encoding", "chunked")]),
            &masking,
            false
        ));
        assert!(!masks(&upstream(500, &html), &passing, false));
        assert!(!masks(&upstream(500, &html), &masking, true), "HEAD");
        assert!(!masks(&upstream(404, &html), &masking, false));
        assert!(!masks(
            &upstream(500, &[("content-length", "0")]),
            &masking,
            false
        ));
        assert!(
            !masks(&upstream(503, &[]), &masking, false),
            "no body at all"
        );
    }

    #[test]
    fn a_masked_answer_keeps_status_and_retry_after_only() {
        let original = upstream(
            503,
            &[
                ("retry-after", "30"),
                ("set-cookie", "s=1"),
                ("content-type", "text/html"),
            ],
        );
        let (head, body) = masked(&original, "req-1").unwrap();
        assert_eq!(head.status.as_u16(), 503);
        assert_eq!(head.headers["retry-after"], "30");
        assert_eq!(head.headers["content-type"], "application/problem+json");
        assert_eq!(
            head.headers["content-length"],
            body.len().to_string().as_str()
        );
        assert!(head.headers.get("set-cookie").is_none());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["status"].as_u64(), v["request_id"].as_str()),
            (Some(503), Some("req-1"))
        );
    }
}
