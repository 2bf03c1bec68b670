//! Refusals and the RFC 9457 `application/problem+json` responses that portcullis itself makes.
//! A check returns a `Refusal`; only `gateway::respond` turns it into a response, a metric and a log.

use bytes::Bytes;
use http::StatusCode;
use pingora_http::ResponseHeader;
use std::borrow::Cow;

/// The metric family a refusal is counted in, besides `portcullis_refusals_total` (SPEC §5).
/// The check that refuses names it; the sink never guesses it from the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// Counted in `portcullis_refusals_total` only: no route, a method not allowed, a busy
    /// route or upstream, an upstream failure.
    Unclassified,
    /// `portcullis_auth_failures_total{route,reason}`: a 401, or the brute-force throttle.
    Authentication,
    /// `portcullis_authz_denials_total{route,reason}`: an ACL or IP rule.
    Authorization,
    /// `portcullis_validation_rejections_total{route,reason}`: size, framing, path, body.
    Validation,
    /// `portcullis_rate_limited_total{route,key}`, with the kind of key that was spent.
    RateLimited { key: &'static str },
    /// `portcullis_threats_total{route,kind,action="block"}` for each kind that was found; a
    /// blocked threat is also a validation rejection (its reason is `threat_<kind>`).
    Threat { kinds: Vec<&'static str> },
    /// `portcullis_cors_preflights_total{route,result}`: a CORS preflight asking for more than
    /// the route allows (`result` is the reason); allowed preflights are counted there too.
    Cors,
}

/// "Stop with this response": what a check answers when a request must not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// A short, bounded label for metrics and the access log `decision` (e.g. `no_route`).
    pub reason: &'static str,
    /// What the client is told. Never a secret, a key or which of two credentials almost matched.
    pub detail: Cow<'static, str>,
    /// Extra response headers, e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
    pub family: Family,
    /// The problem's `errors` member, for a program to read (empty: no member).
    pub errors: Vec<ProblemError>,
    pub connection: AfterRefusal,
}

/// What becomes of the client's connection once a refusal is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Kept alive, unless the refused request has a body (never read, so not drained).
    Reuse,
    /// Closed: where the request ends cannot be trusted (ambiguous framing).
    Close,
}

/// One entry of a problem's `errors` member (the extension RFC 9457 §3 shows): where in the
/// request (`pointer`, a JSON Pointer as a URI fragment: `#/items/0/qty`), which rule
/// (`keyword`) and what it asks (`detail`). Never a value the client sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProblemError {
    pub pointer: String,
    pub keyword: String,
    pub detail: String,
}

impl Refusal {
    /// A refusal counted in no family of its own (see `Family::Unclassified`).
    pub fn new(status: u16, reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            status,
            reason,
            detail: detail.into(),
            headers: Vec::new(),
            family: Family::Unclassified,
            errors: Vec::new(),
            connection: AfterRefusal::Reuse,
        }
    }

    /// The connection is closed after this refusal, body or not.
    pub fn closing_connection(mut self) -> Self {
        self.connection = AfterRefusal::Close;
        self
    }

    pub fn with_errors(mut self, errors: Vec<ProblemError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn in_family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }

    /// A request that breaks a size, framing, path or body rule.
    pub fn invalid(
        status: u16,
        reason: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(status, reason, detail).in_family(Family::Validation)
    }

    pub fn bad_request(reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::invalid(400, reason, detail)
    }

    /// A 401; the caller adds the `WWW-Authenticate` challenge.
    pub fn unauthorized(reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, reason, detail).in_family(Family::Authentication)
    }

    pub fn forbidden(reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(403, reason, detail).in_family(Family::Authorization)
    }

    pub fn not_found() -> Self {
        Self::new(404, "no_route", "no route matches this request")
    }

    pub fn method_not_allowed(allow: String) -> Self {
        Self::new(
            405,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
        .with_header("Allow", allow)
    }
}

/// The RFC 9457 title of a status: its reason phrase.
pub fn title(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The problem+json body. Built with serde_json so that every string is escaped.
pub fn body(status: u16, detail: &str, request_id: &str, errors: &[ProblemError]) -> Bytes {
    let mut value = serde_json::json!({
        "type": "about:blank",
        "title": title(status),
        "status": status,
        "detail": detail,
        "request_id": request_id,
    });
    if let (false, Some(members)) = (errors.is_empty(), value.as_object_mut()) {
        members.insert("errors".into(), serde_json::json!(errors));
    }
    Bytes::from(value.to_string())
}

/// Response header for a gateway-made problem response.
pub fn header(
    status: u16,
    body_len: usize,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora_core::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    resp.insert_header("Content-Type", "application/problem+json")?;
    resp.insert_header("Content-Length", body_len.to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Content-Type-Options", "nosniff")?;
    if !request_id.is_empty() {
        resp.insert_header("X-Request-Id", request_id)?;
    }
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_escaped_json() {
        let b = body(400, "bad \"quote\" </script>", "id-1", &[]);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "bad \"quote\" </script>");
        assert_eq!(v["request_id"], "id-1");
        assert_eq!(v["type"], "about:blank");
    }

    #[test]
    fn titles() {
        assert_eq!(title(431), "Request Header Fields Too Large");
        assert_eq!(title(599), "Error");
    }

    #[test]
    fn errors_member_only_when_there_are_errors() {
        let plain: serde_json::Value = serde_json::from_slice(&body(422, "d", "id", &[])).unwrap();
        assert!(plain.get("errors").is_none());
        let one = ProblemError {
            pointer: "#/a".into(),
            keyword: "type".into(),
            detail: "must be of type integer".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&body(422, "d", "id", &[one])).unwrap();
        assert_eq!(
            v["errors"],
            serde_json::json!([{"pointer": "#/a", "keyword": "type", "detail": "must be of type integer"}])
        );
        assert_eq!(v["detail"], "d");
    }
}
