//! WebSocket upgrades (RFC 6455 §4) on routes with `websocket`: a well-formed upgrade whose
//! `Origin`, when a browser sent one, may use the route — one of the route's CORS origins, or
//! the gateway's own origin when the route has no `cors` (cross-site WebSocket hijacking: a
//! foreign page opening a socket with the user's cookies). The upgrade then passes every later
//! step like any request, and `stream::tunnel` carries the connection it becomes. Elsewhere an
//! `Upgrade` header is not forwarded and the request is served as plain HTTP.

use super::cors::CorsPolicy;
use crate::problem::Refusal;
use crate::text::host_without_port;
use base64::Engine;
use http::{Method, Version};
use pingora_http::RequestHeader;
use std::time::Duration;

/// A route's `websocket` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketPolicy {
    /// No frame either way for this long closes the tunnel (1001).
    pub idle_timeout: Duration,
    /// A tunnel older than this is closed (1001): its credential was checked once, at the upgrade.
    pub max_lifetime: Duration,
    /// A client message (all its fragments) larger than this closes the tunnel (1009).
    pub max_message_bytes: u64,
}

impl Default for WebSocketPolicy {
    fn default() -> Self {
        WebSocketPolicy {
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            max_message_bytes: 1 << 20,
        }
    }
}

/// Whether the request asks to become a WebSocket (`Upgrade: websocket`, in any case).
pub fn asks_for_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get_all(http::header::UPGRADE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Step 3 for an upgrade on a route with `websocket`: the policy its tunnel runs under, or a
/// refusal. Requests that do not ask for a WebSocket, or routes without it, get `None`.
pub fn check<'a>(
    req: &RequestHeader,
    policy: Option<&'a WebSocketPolicy>,
    cors: Option<&CorsPolicy>,
) -> Result<Option<&'a WebSocketPolicy>, Refusal> {
    let Some(policy) = policy.filter(|_| asks_for_websocket(req)) else {
        return Ok(None);
    };
    handshake(req)?;
    let mut origins = req.headers.get_all(http::header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let allowed = origins.next().is_none()
            && origin.to_str().ok().is_some_and(|origin| match cors {
                Some(cors) => cors.allows_origin(origin) && !origin.eq_ignore_ascii_case("null"),
                None => same_origin(origin, req),
            });
        if !allowed {
            return Err(Refusal::forbidden(
                "websocket_origin",
                "a page of this origin may not open a WebSocket to this route",
            ));
        }
    }
    Ok(Some(policy))
}

/// RFC 6455 §4.2.1: `GET`, HTTP/1.1, `Connection: Upgrade`, one `Sec-WebSocket-Key` of 16
/// bytes in base64, `Sec-WebSocket-Version: 13` (another version: 426 naming 13).
fn handshake(req: &RequestHeader) -> Result<(), Refusal> {
    let bad = |detail: &'static str| Refusal::bad_request("websocket_handshake", detail);
    if req.method != Method::GET || req.version != Version::HTTP_11 {
        return Err(bad("a WebSocket upgrade is a GET over HTTP/1.1"));
    }
    let connection_upgrade = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(bad("a WebSocket upgrade needs Connection: Upgrade"));
    }
    let mut keys = req.headers.get_all("sec-websocket-key").iter();
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .is_ok_and(|k| k.len() == 16),
        _ => false,
    };
    if !key_ok {
        return Err(bad(
            "a WebSocket upgrade needs one Sec-WebSocket-Key of 16 bytes in base64",
        ));
    }
    let mut versions = req.headers.get_all("sec-websocket-version").iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => Ok(()),
        _ => Err(Refusal::invalid(
            426,
            "websocket_version",
            "this gateway speaks WebSocket version 13",
        )
        .with_header("Sec-WebSocket-Version", "13")),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, req: &RequestHeader) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok());
    let Some(host) = host else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let split = |a: &str| -> (String, String) {
        let name = host_without_port(a);
        let port = a[name.len()..].strip_prefix(':').unwrap_or(default);
        (name.to_ascii_lowercase(), port.to_string())
    };
    split(authority) == split(host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::cors::{AllowedHeaders, OriginPattern};
    use crate::checks::test_request;
    use crate::problem::Family;

    const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const V13: (&str, &str) = ("sec-websocket-version", "13");

    fn upgrade(extra: &[(&'static str, &'static str)]) -> RequestHeader {
        let mut headers = vec![
            ("host", "api.example.com"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            KEY,
            V13,
        ];
        for (name, value) in extra {
            headers.retain(|(n, _)| n != name);
            if !value.is_empty() {
                headers.push((name, value));
            }
        }
        test_request("GET", "/ws", &headers)
    }

    fn cors() -> CorsPolicy {
        CorsPolicy {
            origins: vec![OriginPattern::parse("https://app.example.com").unwrap()],
            methods: vec![Method::GET],
            headers: AllowedHeaders::Names(Vec::new()),
            expose_headers: String::new(),
            credentials: true,
            max_age: 60,
        }
    }

    #[test]
    fn a_well_formed_upgrade_from_an_allowed_origin_gets_the_policy() {
        let policy = WebSocketPolicy::default();
        for origin in ["", "https://api.example.com", "http://api.example.com:80"] {
            let req = upgrade(&[("origin", origin)]);
            assert_eq!(
                check(&req, Some(&policy), None),
                Ok(Some(&policy)),
                "{origin:?}"
            );
        }
        let req = upgrade(&[("origin", "https://app.example.com")]);
        assert_eq!(check(&req, Some(&policy), Some(&cors())), Ok(Some(&policy)));
        // A route without `websocket`, or a request that does not ask: nothing to do here.
        assert_eq!(check(&req, None, None), Ok(None));
        let plain = test_request("GET", "/ws", &[("upgrade", "h2c")]);
        assert_eq!(check(&plain, Some(&policy), None), Ok(None));
    }

    #[test]
    fn foreign_null_and_doubled_origins_are_refused() {
        let policy = WebSocketPolicy::default();
        let cases: [(&[(&'static str, &'static str)], bool); 6] = [
            (&[("origin", "https://evil.example")], false),
            (&[("origin", "https://api.example.com:8443")], false),
            (&[("origin", "null")], false),
            (&[("origin", "https://evil.example")], true),
            (&[("origin", "null")], true),
            (&[("origin", "api.example.com")], false),
        ];
        for (i, (extra, with_cors)) in cases.iter().enumerate() {
            let req = upgrade(extra);
            let cors = cors();
            let r = check(&req, Some(&policy), with_cors.then_some(&cors)).unwrap_err();
            assert_eq!((r.status, r.reason), (403, "websocket_origin"), "case {i}");
            assert_eq!(r.family, Family::Authorization);
        }
        let mut req = upgrade(&[]);
        req.append_header("origin", "https://api.example.com")
            .unwrap();
        req.append_header("origin", "https://api.example.com")
            .unwrap();
        assert_eq!(
            check(&req, Some(&policy), None).unwrap_err().reason,
            "websocket_origin"
        );
    }

    #[test]
    fn malformed_handshakes_are_refused() {
        let policy = WebSocketPolicy::default();
        for (extra, status) in [
            (vec![("connection", "keep-alive")], 400),
            (vec![("sec-websocket-key", "")], 400),
            (vec![("sec-websocket-key", "c2hvcnQ=")], 400),
            (vec![("sec-websocket-key", "not base64!!")], 400),
            (vec![("sec-websocket-version", "8")], 426),
            (vec![("sec-websocket-version", "")], 426),
        ] {
            let req = upgrade(&extra);
            let r = check(&req, Some(&policy), None).unwrap_err();
            assert_eq!(r.status, status, "{extra:?}");
        }
        let post = test_request(
            "POST",
            "/ws",
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                KEY,
                V13,
            ],
        );
        assert_eq!(
            check(&post, Some(&policy), None).unwrap_err().reason,
            "websocket_handshake"
        );
    }
}
