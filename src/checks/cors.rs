//! Cross-origin requests from browsers (the Fetch standard's CORS protocol), on routes that
//! declare `cors`. A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! is answered by the gateway right after routing — before IP rules and authentication, since
//! a browser never sends credentials with it — and nothing reaches the upstream. Any other
//! request from an allowed origin gets the CORS response headers on whatever answers it, the
//! upstream or a refusal; from any other origin it gets none, and the browser keeps the
//! response from the page.

use crate::problem::{Family, Refusal};
use http::header::{HeaderValue, ORIGIN};
use http::Method;
use pingora_http::RequestHeader;

/// A CORS response header: a static name and its value for this request.
pub type CorsHeader = (&'static str, String);

/// `Vary` on every answer of a CORS route: what is sent depends on the request's origin.
pub const VARY_ORIGIN: &str = "Origin";
/// `Vary` on a preflight's answer, which also depends on what the browser asked for.
const VARY_PREFLIGHT: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// One entry of `origins`, as a browser serialises an origin: lower-case scheme and host, the
/// port only when it is not the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: any origin but `null` (never together with credentials).
    Any,
    /// `https://app.example.com`.
    Exact(String),
    /// `https://*.example.com[:port]`: one or more labels before the suffix; stored as the part
    /// before the `*` and the part after it (`.example.com[:port]`).
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    /// Parse one configured origin; the error says what to write instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        if text.eq_ignore_ascii_case("null") {
            return Err("\"null\" is the origin of sandboxed frames, files and redirects: any page can send it, so it cannot be allowed".into());
        }
        let example = "write it as a browser sends it, e.g. \"https://app.example.com\" or \"https://*.example.com\"";
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!("{text:?} is not an origin; {example}"));
        };
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(format!(
                "{text:?} has a scheme that is not lower-case letters; {example}"
            ));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!("{text:?} has a path, query or user part; an origin is only scheme://host[:port]; {example}"));
        }
        let (host, port) = match rest.rsplit_once(':').filter(|_| !rest.ends_with(']')) {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("{text:?} has an invalid port")),
                Ok(p) if default_port(scheme) == Some(p) => {
                    return Err(format!(
                        "{text:?} names the default port, which browsers leave out; write it without \":{p}\""
                    ))
                }
                Ok(_) => {}
            }
        }
        let name = host.strip_prefix("*.").unwrap_or(host);
        let host_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.[]:".contains(&b))
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !host_ok {
            return Err(format!(
                "{text:?} has a host that is not a lower-case name or address (international names in their xn-- form); {example}"
            ));
        }
        if host.starts_with("*.") {
            let suffix = &text[scheme.len() + 3 + 1..];
            return Ok(OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: suffix.to_string(),
            });
        }
        Ok(OriginPattern::Exact(text.to_string()))
    }

    /// Whether `origin` (as sent, already known not to be `null`) is allowed by this entry.
    fn allows(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let long_enough = origin.len() > scheme.len() + suffix.len();
                long_enough
                    && origin.is_char_boundary(scheme.len())
                    && origin.is_char_boundary(origin.len() - suffix.len())
                    && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && origin[scheme.len()..origin.len() - suffix.len()]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// The request headers a preflight may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHeaders {
    /// `headers = ["*"]`: any (never together with credentials).
    Any,
    /// Lower-cased names.
    Names(Vec<String>),
}

/// A route's compiled CORS policy (`[cors]`, overridden by the route's `cors = {…}`).
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub origins: Vec<OriginPattern>,
    /// The methods a preflight may ask for (the route's own methods at most).
    pub methods: Vec<Method>,
    pub headers: AllowedHeaders,
    /// `Access-Control-Expose-Headers`, joined; empty: not sent.
    pub expose_headers: String,
    pub credentials: bool,
    /// `Access-Control-Max-Age`, in seconds.
    pub max_age: u64,
}

/// What a preflight asks for.
#[derive(Debug)]
pub struct Preflight<'a> {
    origin: Option<&'a str>,
    /// `Access-Control-Request-Method`: the request is routed as if it had this method.
    pub method: Method,
    headers: Vec<&'a HeaderValue>,
}

impl<'a> Preflight<'a> {
    /// The preflight in `req`, if it is one: `OPTIONS` with `Origin` and a well-formed
    /// `Access-Control-Request-Method`. Anything else is an ordinary request.
    pub fn of(req: &'a RequestHeader) -> Option<Self> {
        if req.method != Method::OPTIONS || !req.headers.contains_key(ORIGIN) {
            return None;
        }
        let mut asked = req.headers.get_all("access-control-request-method").iter();
        let method = asked.next()?;
        if asked.next().is_some() {
            return None;
        }
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        Some(Preflight {
            origin: single_origin(req),
            method,
            headers: req
                .headers
                .get_all("access-control-request-headers")
                .iter()
                .collect(),
        })
    }
}

/// The request's `Origin` when it is one header of text other than `null`.
fn single_origin(req: &RequestHeader) -> Option<&str> {
    let mut all = req.headers.get_all(ORIGIN).iter();
    let origin = all.next()?;
    if all.next().is_some() {
        return None;
    }
    origin
        .to_str()
        .ok()
        .filter(|o| !o.eq_ignore_ascii_case("null") && !o.is_empty())
}

impl CorsPolicy {
    /// Whether a browser page of `origin` may read this route's answers.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|p| p.allows(origin))
    }

    /// The answer to a preflight: the headers of a `204`, or a `403` naming what is not
    /// allowed — the origin, the method or a header, checked in that order.
    pub fn preflight(&self, asked: &Preflight) -> Result<Vec<CorsHeader>, Refusal> {
        let origin = asked
            .origin
            .filter(|o| self.allows_origin(o))
            .ok_or_else(|| {
                refused(
                    "cors_origin",
                    "this origin may not call this route from a browser",
                )
            })?;
        if !self.methods.contains(&asked.method) {
            return Err(refused(
                "cors_method",
                "this method may not be used on this route from a browser",
            ));
        }
        let mut allowed_headers = Vec::new();
        for value in &asked.headers {
            let Ok(text) = value.to_str() else {
                return Err(refused(
                    "cors_headers",
                    "the requested headers are not valid",
                ));
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let lower = name.to_ascii_lowercase();
                let ok = match &self.headers {
                    AllowedHeaders::Any => http::HeaderName::from_bytes(lower.as_bytes()).is_ok(),
                    AllowedHeaders::Names(names) => names.contains(&lower),
                };
                if !ok {
                    return Err(refused(
                        "cors_headers",
                        "a requested header may not be sent to this route from a browser",
                    ));
                }
                if !allowed_headers.contains(&lower) {
                    allowed_headers.push(lower);
                }
            }
        }
        let mut out = self.common(origin);
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        out.push(("Access-Control-Allow-Methods", methods.join(", ")));
        if !allowed_headers.is_empty() {
            out.push(("Access-Control-Allow-Headers", allowed_headers.join(", ")));
        }
        out.push(("Access-Control-Max-Age", self.max_age.to_string()));
        out.push(("Vary", VARY_PREFLIGHT.to_string()));
        Ok(out)
    }

    /// The CORS headers of any other answer to `req`: none unless its origin is allowed.
    /// (`Vary: Origin` is sent by the caller on every answer of the route.)
    pub fn response_headers(&self, req: &RequestHeader) -> Vec<CorsHeader> {
        match single_origin(req) {
            Some(origin) if self.allows_origin(origin) => {
                let mut out = self.common(origin);
                if !self.expose_headers.is_empty() {
                    out.push(("Access-Control-Expose-Headers", self.expose_headers.clone()));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// What both kinds of answer carry: the origin echoed (never `*`), and credentials.
    fn common(&self, origin: &str) -> Vec<CorsHeader> {
        let mut out = Vec::with_capacity(6);
        out.push(("Access-Control-Allow-Origin", origin.to_string()));
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".to_string()));
        }
        out
    }
}

/// A preflight that asks for more than the route allows.
fn refused(reason: &'static str, detail: &'static str) -> Refusal {
    Refusal::new(403, reason, detail)
        .in_family(Family::Cors)
        .with_header("Vary", VARY_PREFLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_request;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            methods: vec![Method::GET, Method::POST],
            headers: AllowedHeaders::Names(vec!["authorization".into(), "content-type".into()]),
            expose_headers: "x-request-id".into(),
            credentials,
            max_age: 600,
        }
    }

    fn preflight_of<'a>(req: &'a RequestHeader) -> Preflight<'a> {
        Preflight::of(req).expect("a preflight")
    }

    fn header<'a>(headers: &'a [CorsHeader], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn origins_parse_as_browsers_send_them() {
        assert_eq!(
            OriginPattern::parse("https://app.example.com"),
            Ok(OriginPattern::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            OriginPattern::parse("http://127.0.0.1:8080"),
            Ok(OriginPattern::Exact("http://127.0.0.1:8080".into()))
        );
        assert_eq!(
            OriginPattern::parse("capacitor://localhost"),
            Ok(OriginPattern::Exact("capacitor://localhost".into()))
        );
        assert_eq!(
            OriginPattern::parse("https://*.example.com:8443"),
            Ok(OriginPattern::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.com:8443".into()
            })
        );
        for bad in [
            "null",
            "NULL",
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://App.Example.com",
            "HTTPS://app.example.com",
            "https://app.example.com:443",
            "http://app.example.com:80",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://",
            "https://*.",
            "https://bücher.example",
            "https://a b.example",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn subdomain_patterns_need_a_label_and_the_exact_suffix() {
        let p = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("https://a.b.example.com"));
        for no in [
            "https://example.com",
            "https://.example.com",
            "https://evil-example.com",
            "https://app.example.com.evil.net",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://a/b.example.com",
            "https://é.example.com",
        ] {
            assert!(!p.allows(no), "{no} allowed");
        }
    }

    #[test]
    fn an_allowed_preflight_gets_the_policy_and_the_origin_echoed() {
        let req = test_request(
            "OPTIONS",
            "/api",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "Content-Type, authorization",
                ),
            ],
        );
        let h = policy(&["https://app.example.com"], true)
            .preflight(&preflight_of(&req))
            .unwrap();
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            header(&h, "access-control-allow-methods"),
            Some("GET, POST")
        );
        assert_eq!(
            header(&h, "access-control-allow-headers"),
            Some("content-type, authorization")
        );
        assert_eq!(header(&h, "access-control-max-age"), Some("600"));
        assert!(header(&h, "vary").unwrap().starts_with("Origin"));
    }

    #[test]
    fn a_wildcard_policy_still_echoes_the_origin() {
        let req = test_request(
            "OPTIONS",
            "/",
            &[
                ("origin", "https://x.test"),
                ("access-control-request-method", "GET"),
            ],
        );
        let h = policy(&["*"], false)
            .preflight(&preflight_of(&req))
            .unwrap();
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://x.test")
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), None);
        assert_eq!(header(&h, "access-control-allow-headers"), None);
    }

    #[test]
    fn preflights_asking_too_much_are_refused_by_what_they_ask() {
        let p = policy(&["https://app.example.com"], false);
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("origin", "https://evil.example")], "cors_origin"),
            (&[("origin", "null")], "cors_origin"),
            (
                &[
                    ("origin", "https://app.example.com"),
                    ("origin", "https://app.example.com"),
                ],
                "cors_origin",
            ),
            (
                &[("origin", "https://app.example.com.evil.net")],
                "cors_origin",
            ),
            (&[("origin", "https://app.example.com")], "cors_method"),
            (
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-headers", "content-type, x-admin"),
                ],
                "cors_headers",
            ),
            (
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-headers", "content-type, é"),
                ],
                "cors_headers",
            ),
        ];
        for (i, (headers, reason)) in cases.iter().enumerate() {
            let mut all: Vec<(&str, &str)> = headers.to_vec();
            let method = if *reason == "cors_method" {
                "DELETE"
            } else {
                "POST"
            };
            all.push(("access-control-request-method", method));
            let req = test_request("OPTIONS", "/", &all);
            let r = p.preflight(&preflight_of(&req)).unwrap_err();
            assert_eq!((r.status, r.reason), (403, *reason), "case {i}");
            assert_eq!(r.family, Family::Cors);
        }
    }

    #[test]
    fn only_options_with_origin_and_one_requested_method_is_a_preflight() {
        let not = [
            test_request("OPTIONS", "/", &[("access-control-request-method", "GET")]),
            test_request(
                "GET",
                "/",
                &[
                    ("origin", "https://a.test"),
                    ("access-control-request-method", "GET"),
                ],
            ),
            test_request("OPTIONS", "/", &[("origin", "https://a.test")]),
            test_request(
                "OPTIONS",
                "/",
                &[
                    ("origin", "https://a.test"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-method", "POST"),
                ],
            ),
            test_request(
                "OPTIONS",
                "/",
                &[
                    ("origin", "https://a.test"),
                    ("access-control-request-method", "G(T"),
                ],
            ),
        ];
        for req in &not {
            assert!(Preflight::of(req).is_none());
        }
    }

    #[test]
    fn other_answers_get_headers_only_for_an_allowed_origin() {
        let p = policy(&["https://app.example.com"], true);
        let ok = test_request("GET", "/", &[("origin", "https://app.example.com")]);
        let h = p.response_headers(&ok);
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            header(&h, "access-control-expose-headers"),
            Some("x-request-id")
        );
        for origin in ["https://evil.example", "null", ""] {
            let req = test_request("GET", "/", &[("origin", origin)]);
            assert!(p.response_headers(&req).is_empty(), "{origin:?}");
        }
        assert!(p
            .response_headers(&test_request("GET", "/", &[]))
            .is_empty());
    }
}
