//! `[response]` and a route's `response = {…}` → the route's `ResponsePolicy`: a route's
//! settings override the global ones key by key, and its `headers` are added to the global
//! ones (the route's value wins for a name both set).

use super::super::diagnostics::Errors;
use super::super::raw::{RawHsts, RawHstsSettings, RawResponse};
use crate::config::units::parse_duration;
use crate::request::response::ResponsePolicy;
use http::{HeaderName, HeaderValue};

/// Headers the gateway owns or that frame the message: a config that sets one would break
/// the response or hide what the gateway says.
const RESERVED: [&str; 14] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "content-encoding",
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "strict-transport-security",
    "set-cookie",
];

/// The global section, checked once (its errors under `response.…`).
pub(super) struct ResponseDefaults {
    nosniff: Option<bool>,
    no_store: Option<bool>,
    mask_errors: Option<bool>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Strict-Transport-Security` value, `None` with `hsts = false`.
    pub(super) hsts: Option<String>,
}

/// One year, the value HSTS preload lists ask for and the default.
const HSTS_DEFAULT_SECS: u64 = 31_536_000;

pub(super) fn defaults(e: &mut Errors, global: &RawResponse) -> ResponseDefaults {
    ResponseDefaults {
        nosniff: global.nosniff,
        no_store: global.no_store_authenticated,
        mask_errors: upstream_errors(e, "response", global),
        headers: headers_of(e, "response", global),
        hsts: hsts(e, global.hsts.as_ref()),
    }
}

fn upstream_errors(e: &mut Errors, key: &str, raw: &RawResponse) -> Option<bool> {
    match raw.upstream_errors.as_deref()? {
        "pass" => Some(false),
        "mask" => Some(true),
        other => {
            e.add(
                format!("{key}.upstream_errors"),
                format!("invalid value {other:?}; write \"pass\" or \"mask\""),
            );
            None
        }
    }
}

/// `[response] hsts` → the header value: `max-age` in seconds, then the directives.
fn hsts(e: &mut Errors, raw: Option<&RawHsts>) -> Option<String> {
    let unset = RawHstsSettings::default();
    let settings = match raw {
        None | Some(RawHsts::Enabled(true)) => &unset,
        Some(RawHsts::Enabled(false)) => return None,
        Some(RawHsts::Settings(s)) => s,
    };
    let max_age = match settings.max_age.as_deref().map(parse_duration) {
        None => HSTS_DEFAULT_SECS,
        // "0s" is legal: it tells browsers to forget the host's HSTS.
        Some(Ok(d)) if d.subsec_nanos() == 0 => d.as_secs(),
        Some(Ok(_)) => {
            e.add("response.hsts.max_age", "use whole seconds");
            HSTS_DEFAULT_SECS
        }
        Some(Err(message)) => {
            e.add("response.hsts.max_age", message);
            HSTS_DEFAULT_SECS
        }
    };
    let subdomains = settings.include_subdomains.unwrap_or(false);
    let preload = settings.preload.unwrap_or(false);
    if preload && (!subdomains || max_age < HSTS_DEFAULT_SECS) {
        e.add(
            "response.hsts.preload",
            "browsers' preload lists require include_subdomains = true and max_age of at least 365d",
        );
    }
    let mut value = format!("max-age={max_age}");
    if subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    Some(value)
}

/// The policy of a route from the defaults, the route's own table (at `key`, e.g.
/// `routes[2].response`) and whether the route authenticates.
pub(super) fn route_policy(
    e: &mut Errors,
    defaults: &ResponseDefaults,
    route: Option<(&str, &RawResponse)>,
    authenticated: bool,
) -> ResponsePolicy {
    let own = route.map(|(_, r)| r);
    let nosniff = own.and_then(|r| r.nosniff).or(defaults.nosniff);
    let no_store = own
        .and_then(|r| r.no_store_authenticated)
        .or(defaults.no_store);
    let mut headers = defaults.headers.clone();
    let mut mask_errors = defaults.mask_errors;
    if let Some((key, r)) = route {
        if r.hsts.is_some() {
            e.add(
                format!("{key}.hsts"),
                "HSTS applies to the whole host; set it in [response] only",
            );
        }
        mask_errors = upstream_errors(e, key, r).or(mask_errors);
        for (name, value) in headers_of(e, key, r) {
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
        }
    }
    ResponsePolicy {
        nosniff: nosniff.unwrap_or(true),
        no_store: authenticated && no_store.unwrap_or(true),
        mask_errors: mask_errors.unwrap_or(false),
        headers,
    }
}

fn headers_of(e: &mut Errors, key: &str, raw: &RawResponse) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (name, value) in &raw.headers {
        let at = format!("{key}.headers.{name}");
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            e.add(at, "is not a header name (letters, digits and - only)");
            continue;
        };
        if RESERVED.contains(&parsed.as_str()) {
            e.add(
                at,
                "is set by the gateway or frames the response; remove it from headers",
            );
            continue;
        }
        let Ok(value) = HeaderValue::from_str(value) else {
            e.add(
                at,
                "has a value that cannot be sent (a line break or control byte); fix the value",
            );
            continue;
        };
        if out.iter().any(|(n, _)| *n == parsed) {
            e.add(at, "is named twice (header names ignore case); keep one");
            continue;
        }
        out.push((parsed, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml: &str) -> RawResponse {
        toml::from_str(toml).expect("test TOML")
    }

    fn errors(e: &Errors) -> Vec<String> {
        e.errors()
            .iter()
            .map(|x| format!("{}: {}", x.key, x.message))
            .collect()
    }

    #[test]
    fn routes_override_the_global_section_key_by_key() {
        let mut e = Errors::new(std::path::Path::new("t.toml"));
        let global = defaults(
            &mut e,
            &raw(r#"no_store_authenticated = false
headers = { "X-Frame-Options" = "DENY", "Referrer-Policy" = "no-referrer" }"#),
        );
        let plain = route_policy(&mut e, &global, None, true);
        assert!(plain.nosniff && !plain.no_store);
        assert_eq!(plain.headers.len(), 2);
        let own = raw(r#"nosniff = false
no_store_authenticated = true
headers = { "x-frame-options" = "SAMEORIGIN" }"#);
        let policy = route_policy(&mut e, &global, Some(("routes[0].response", &own)), true);
        assert!(!policy.nosniff && policy.no_store);
        let named: Vec<(&str, &[u8])> = policy
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            named,
            [
                ("referrer-policy", &b"no-referrer"[..]),
                ("x-frame-options", b"SAMEORIGIN")
            ]
        );
        // A public route is never sent `no-store` by this setting.
        assert!(!route_policy(&mut e, &global, Some(("r", &own)), false).no_store);
        assert!(errors(&e).is_empty(), "{:?}", errors(&e));
        // Without [response]: nosniff, and no-store on authenticated routes.
        let none = defaults(&mut e, &RawResponse::default());
        let p = route_policy(&mut e, &none, None, true);
        assert!(p.nosniff && p.no_store && p.headers.is_empty());
    }

    #[test]
    fn bad_headers_are_errors_naming_their_key() {
        let mut e = Errors::new(std::path::Path::new("t.toml"));
        let made = defaults(
            &mut e,
            &raw(
                r#"headers = { "Bad Name" = "x", "Content-Length" = "1", "set-cookie" = "a=b", "X-Ok" = "fine", "X-Break" = "a\nb", "x-ok" = "again" }"#,
            ),
        );
        let found = errors(&e);
        for expected in [
            "response.headers.Bad Name: is not a header name",
            "response.headers.Content-Length: is set by the gateway",
            "response.headers.set-cookie: is set by the gateway",
            "response.headers.X-Break: has a value that cannot be sent",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected} not in {found:?}"
            );
        }
        // "X-Ok" and "x-ok" name one header: the second is the error.
        assert!(
            found.iter().any(|f| f.contains("x-ok: is named twice")),
            "{found:?}"
        );
        assert_eq!(made.headers.len(), 1);
    }

    #[test]
    fn hsts_and_upstream_errors_are_read_and_checked() {
        let mut e = Errors::new(std::path::Path::new("t.toml"));
        assert_eq!(
            defaults(&mut e, &RawResponse::default()).hsts.as_deref(),
            Some("max-age=31536000")
        );
        let made = defaults(&mut e, &raw("hsts = { max_age = \"365d\", include_subdomains = true, preload = true }\nupstream_errors = \"mask\""));
        assert_eq!(
            made.hsts.as_deref(),
            Some("max-age=31536000; includeSubDomains; preload")
        );
        assert!(route_policy(&mut e, &made, None, false).mask_errors);
        let own = raw("upstream_errors = \"pass\"");
        assert!(
            !route_policy(&mut e, &made, Some(("routes[0].response", &own)), false).mask_errors
        );
        assert_eq!(defaults(&mut e, &raw("hsts = false")).hsts, None);
        assert_eq!(
            defaults(&mut e, &raw("hsts = { max_age = \"0s\" }"))
                .hsts
                .as_deref(),
            Some("max-age=0")
        );
        assert!(errors(&e).is_empty(), "{:?}", errors(&e));

        defaults(
            &mut e,
            &raw("hsts = { preload = true }\nupstream_errors = \"hide\""),
        );
        defaults(&mut e, &raw("hsts = { max_age = \"soon\" }"));
        route_policy(
            &mut e,
            &made,
            Some(("routes[1].response", &raw("hsts = true"))),
            false,
        );
        let found = errors(&e);
        for expected in [
            "response.hsts.preload: browsers' preload lists require",
            "response.upstream_errors: invalid value \"hide\"",
            "response.hsts.max_age: invalid duration",
            "routes[1].response.hsts: HSTS applies to the whole host",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected} not in {found:?}"
            );
        }
    }
}
