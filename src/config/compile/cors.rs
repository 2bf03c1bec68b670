//! `[cors]` and a route's `cors` → the route's `CorsPolicy`. `[cors]` holds defaults only: a
//! route has CORS when it says `cors = true` (the defaults) or `cors = {…}` (its own keys over
//! the defaults, key by key). Opening a route to other sites' pages is a decision per route.

use super::super::diagnostics::Errors;
use super::super::raw::{RawCors, RawRouteCors};
use crate::checks::cors::{AllowedHeaders, CorsPolicy, OriginPattern};
use http::{HeaderName, Method};
use std::time::Duration;

/// Request headers a preflight may ask for when neither `[cors]` nor the route says.
const DEFAULT_HEADERS: [&str; 2] = ["authorization", "content-type"];
/// Response headers a page may read besides the safelisted ones, unless configured.
const DEFAULT_EXPOSE: [&str; 5] = [
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    // A browser DPoP client reads the nonce it must put in its next proof.
    "dpop-nonce",
];
/// Methods a preflight may ask for on a route that names none.
const DEFAULT_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];
const DEFAULT_MAX_AGE: u64 = 600;
/// Browsers keep a preflight for at most a day (Firefox; Chromium two hours).
const MAX_MAX_AGE: u64 = 86_400;

/// One table (`[cors]` or a route's), each key checked under its own name.
#[derive(Default)]
pub(super) struct CorsKeys {
    origins: Option<Vec<OriginPattern>>,
    methods: Option<Vec<Method>>,
    headers: Option<AllowedHeaders>,
    expose: Option<Vec<String>>,
    credentials: Option<bool>,
    max_age: Option<u64>,
}

/// `[cors]`, checked once (its errors under `cors.…`).
pub(super) fn defaults(e: &mut Errors, global: Option<&RawCors>) -> CorsKeys {
    let Some(raw) = global else {
        return CorsKeys::default();
    };
    let keys = keys_of(e, "cors", raw);
    wildcard_with_credentials(e, "cors", &keys);
    keys
}

/// The policy of a route (at `key`, e.g. `routes[2]`) with these `methods` (`None`: any).
pub(super) fn route_policy(
    e: &mut Errors,
    defaults: &CorsKeys,
    key: &str,
    raw: Option<&RawRouteCors>,
    route_methods: Option<&[Method]>,
) -> Option<CorsPolicy> {
    let key = format!("{key}.cors");
    let own = match raw? {
        RawRouteCors::Enabled(false) => return None,
        RawRouteCors::Enabled(true) => CorsKeys::default(),
        RawRouteCors::Settings(settings) => {
            let own = keys_of(e, &key, settings);
            wildcard_with_credentials(e, &key, &own);
            own
        }
    };
    let origins = match own.origins.as_ref().or(defaults.origins.as_ref()) {
        Some(origins) => origins.clone(),
        None => {
            e.add(
                &key,
                "names no origins; set [cors] origins or origins in this table (e.g. [\"https://app.example.com\"])",
            );
            Vec::new()
        }
    };
    let credentials = own.credentials.or(defaults.credentials).unwrap_or(false);
    let headers = own
        .headers
        .clone()
        .or_else(|| defaults.headers.clone())
        .unwrap_or_else(|| AllowedHeaders::Names(DEFAULT_HEADERS.map(String::from).to_vec()));
    // A wildcard and credentials written in one table were refused there; here, the pairs
    // that come from different tables.
    let cred_own = own.credentials.is_some();
    let star_origin = origins.contains(&OriginPattern::Any) && own.origins.is_some() != cred_own;
    let star_headers = headers == AllowedHeaders::Any && own.headers.is_some() != cred_own;
    if credentials && (star_origin || star_headers) {
        e.add(
            &key,
            "allows \"*\" together with credentials = true, which browsers refuse; list the origins and headers",
        );
    }
    let methods = methods_for(e, &key, &own, defaults, route_methods);
    let expose = own
        .expose
        .as_ref()
        .or(defaults.expose.as_ref())
        .cloned()
        .unwrap_or_else(|| DEFAULT_EXPOSE.map(String::from).to_vec());
    Some(CorsPolicy {
        origins,
        methods,
        headers,
        expose_headers: expose.join(", "),
        credentials,
        max_age: own.max_age.or(defaults.max_age).unwrap_or(DEFAULT_MAX_AGE),
    })
}

/// The methods a preflight may ask for: the route's own `cors.methods` (each one the route
/// serves), else `[cors] methods` as far as the route serves them, else the route's methods.
fn methods_for(
    e: &mut Errors,
    key: &str,
    own: &CorsKeys,
    defaults: &CorsKeys,
    route_methods: Option<&[Method]>,
) -> Vec<Method> {
    let serves = |m: &Method| {
        route_methods.is_none_or(|list| {
            list.contains(m) || (*m == Method::HEAD && list.contains(&Method::GET))
        })
    };
    if let Some(methods) = &own.methods {
        for m in methods.iter().filter(|m| !serves(m)) {
            e.add(
                format!("{key}.methods"),
                format!("{m} is not among the route's methods; add it there or remove it here"),
            );
        }
        return methods.clone();
    }
    let wanted: Vec<Method> = match (&defaults.methods, route_methods) {
        (Some(methods), _) => methods.iter().filter(|m| serves(m)).cloned().collect(),
        (None, Some(list)) => {
            let mut out = list.to_vec();
            if out.contains(&Method::GET) && !out.contains(&Method::HEAD) {
                out.push(Method::HEAD);
            }
            out
        }
        (None, None) => DEFAULT_METHODS.to_vec(),
    };
    if wanted.is_empty() {
        e.add(
            format!("{key}.methods"),
            "none of [cors] methods is served by this route; set methods in this table",
        );
    }
    wanted
}

fn wildcard_with_credentials(e: &mut Errors, key: &str, keys: &CorsKeys) {
    let wildcard = keys
        .origins
        .as_ref()
        .is_some_and(|o| o.contains(&OriginPattern::Any))
        || keys.headers == Some(AllowedHeaders::Any);
    if keys.credentials == Some(true) && wildcard {
        e.add(
            format!("{key}.credentials"),
            "cannot be true with \"*\" in origins or headers: browsers refuse credentials for any origin; list them",
        );
    }
}

fn keys_of(e: &mut Errors, key: &str, raw: &RawCors) -> CorsKeys {
    let origins = raw.origins.as_ref().map(|list| {
        if list.is_empty() {
            e.add(
                format!("{key}.origins"),
                "is empty; list at least one origin",
            );
        }
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match OriginPattern::parse(text) {
                Ok(p) if out.contains(&p) => {
                    e.add(format!("{key}.origins[{i}]"), "is listed twice; keep one")
                }
                Ok(p) => out.push(p),
                Err(message) => e.add(format!("{key}.origins[{i}]"), message),
            }
        }
        if out.len() > 1 && out.contains(&OriginPattern::Any) {
            e.add(
                format!("{key}.origins"),
                "has \"*\" beside other origins; keep \"*\" alone or list origins only",
            );
        }
        out
    });
    let methods = raw.methods.as_ref().map(|list| {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match Method::from_bytes(text.as_bytes()) {
                Ok(m) if text.bytes().any(|b| b.is_ascii_lowercase()) => e.add(
                    format!("{key}.methods[{i}]"),
                    format!("write {:?} in upper case", m.as_str().to_ascii_uppercase()),
                ),
                Ok(m) if m == Method::OPTIONS => e.add(
                    format!("{key}.methods[{i}]"),
                    "OPTIONS is the preflight itself; remove it",
                ),
                Ok(m) if !out.contains(&m) => out.push(m),
                Ok(_) => e.add(format!("{key}.methods[{i}]"), "is listed twice; keep one"),
                Err(_) => e.add(
                    format!("{key}.methods[{i}]"),
                    format!("invalid method {text:?}"),
                ),
            }
        }
        out
    });
    let headers = raw.headers.as_ref().map(|list| {
        if list.iter().any(|h| h == "*") {
            if list.len() > 1 {
                e.add(
                    format!("{key}.headers"),
                    "has \"*\" beside names; keep one or the other",
                );
            }
            return AllowedHeaders::Any;
        }
        AllowedHeaders::Names(header_names(e, &format!("{key}.headers"), list))
    });
    let expose = raw
        .expose_headers
        .as_ref()
        .map(|list| match list.iter().any(|h| h == "*") {
            true if list.len() > 1 => {
                e.add(
                    format!("{key}.expose_headers"),
                    "has \"*\" beside names; keep one or the other",
                );
                vec!["*".to_string()]
            }
            true => vec!["*".to_string()],
            false => header_names(e, &format!("{key}.expose_headers"), list),
        });
    let max_age = raw.max_age.as_ref().map(|text| {
        let d = e.duration(
            &format!("{key}.max_age"),
            Some(text),
            Duration::from_secs(DEFAULT_MAX_AGE),
        );
        if d.as_secs() > MAX_MAX_AGE || d.subsec_nanos() != 0 {
            e.add(
                format!("{key}.max_age"),
                "use whole seconds up to 24h (browsers keep a preflight no longer)",
            );
        }
        d.as_secs().min(MAX_MAX_AGE)
    });
    if keys_expose_star_with_credentials(raw) {
        e.add(
            format!("{key}.expose_headers"),
            "cannot be \"*\" with credentials = true (browsers read it as a header name); list the headers",
        );
    }
    CorsKeys {
        origins,
        methods,
        headers,
        expose,
        credentials: raw.credentials,
        max_age,
    }
}

fn keys_expose_star_with_credentials(raw: &RawCors) -> bool {
    raw.credentials == Some(true)
        && raw
            .expose_headers
            .as_ref()
            .is_some_and(|l| l.iter().any(|h| h == "*"))
}

/// Header names, lower-cased, each valid and listed once.
fn header_names(e: &mut Errors, key: &str, list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let lower = text.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            e.add(
                format!("{key}[{i}]"),
                "is not a header name (letters, digits and - only)",
            );
        } else if out.contains(&lower) {
            e.add(
                format!("{key}[{i}]"),
                "is listed twice (names ignore case); keep one",
            );
        } else {
            out.push(lower);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;

    /// The policy of a route with `route` (TOML of its `cors` value) under `global` (`[cors]`
    /// body, or none), serving `methods`; and the errors.
    fn compile(
        global: Option<&str>,
        route: &str,
        methods: Option<&[Method]>,
    ) -> (Option<CorsPolicy>, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct Doc {
            cors: Option<RawCors>,
            route: RawRouteCors,
        }
        let text = match global {
            Some(g) => format!("route = {route}\n[cors]\n{g}"),
            None => format!("route = {route}"),
        };
        let (made, errors, _) = section(&text, |e, doc: &Doc, _| {
            let defaults = defaults(e, doc.cors.as_ref());
            route_policy(e, &defaults, "routes[0]", Some(&doc.route), methods)
        });
        (made, errors)
    }

    #[test]
    fn true_takes_the_defaults_and_a_table_overrides_them_key_by_key() {
        let global = "origins = [\"https://a.example\"]\ncredentials = true\nmax_age = \"1h\"";
        let (p, errors) = compile(Some(global), "true", None);
        assert!(errors.is_empty(), "{errors:?}");
        let p = p.unwrap();
        assert_eq!(
            p.origins,
            vec![OriginPattern::Exact("https://a.example".into())]
        );
        assert!(p.credentials);
        assert_eq!(p.max_age, 3600);
        assert_eq!(p.methods, DEFAULT_METHODS.to_vec());
        assert_eq!(
            p.headers,
            AllowedHeaders::Names(vec!["authorization".into(), "content-type".into()])
        );
        assert_eq!(
            p.expose_headers,
            "x-request-id, ratelimit, ratelimit-policy, retry-after, dpop-nonce"
        );

        let (p, errors) = compile(
            Some(global),
            "{ origins = [\"https://b.example\"], headers = [\"X-Trace\"] }",
            Some(&[Method::GET]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let p = p.unwrap();
        assert_eq!(
            p.origins,
            vec![OriginPattern::Exact("https://b.example".into())]
        );
        assert!(p.credentials, "kept from [cors]");
        assert_eq!(p.headers, AllowedHeaders::Names(vec!["x-trace".into()]));
        assert_eq!(
            p.methods,
            vec![Method::GET, Method::HEAD],
            "the route's methods"
        );
        assert!(compile(Some(global), "false", None).0.is_none());
    }

    #[test]
    fn global_methods_are_cut_to_what_the_route_serves() {
        let global = "origins = [\"*\"]\nmethods = [\"GET\", \"POST\", \"DELETE\"]";
        let (p, errors) = compile(Some(global), "true", Some(&[Method::POST, Method::PUT]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.unwrap().methods, vec![Method::POST]);
        let (_, errors) = compile(Some(global), "true", Some(&[Method::PUT]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("routes[0].cors.methods: none of"),
            "{errors:?}"
        );
    }

    #[test]
    fn wildcards_never_go_with_credentials() {
        let (_, errors) = compile(None, "{ origins = [\"*\"], credentials = true }", None);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0].cors.credentials:")),
            "{errors:?}"
        );
        let (_, errors) = compile(Some("origins = [\"*\"]"), "{ credentials = true }", None);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0].cors: allows \"*\"")),
            "{errors:?}"
        );
        let (_, errors) = compile(
            Some("credentials = true"),
            "{ origins = [\"https://a.example\"], headers = [\"*\"] }",
            None,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0].cors: allows \"*\"")),
            "{errors:?}"
        );
        let (_, errors) = compile(
            None,
            "{ origins = [\"https://a.example\"], credentials = true, expose_headers = [\"*\"] }",
            None,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0].cors.expose_headers:")),
            "{errors:?}"
        );
        let (_, errors) = compile(Some("origins = [\"*\"]\ncredentials = true"), "false", None);
        assert!(
            errors.iter().any(|e| e.starts_with("cors.credentials:")),
            "{errors:?}"
        );
    }

    #[test]
    fn each_bad_key_is_named() {
        let route = "{ origins = [\"null\", \"https://a.example/\", \"https://b.example\", \"https://b.example\"], methods = [\"get\", \"OPTIONS\", \"PUT\", \"P(T\"], headers = [\"ok\", \"bad name\", \"OK\"], expose_headers = [\"*\", \"x\"], max_age = \"2d\" }";
        let (_, errors) = compile(None, route, Some(&[Method::GET]));
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        for key in [
            "routes[0].cors.origins[0]",
            "routes[0].cors.origins[1]",
            "routes[0].cors.origins[3]",
            "routes[0].cors.methods[0]",
            "routes[0].cors.methods[1]",
            "routes[0].cors.methods[3]",
            "routes[0].cors.methods", // PUT is not served by the route
            "routes[0].cors.headers[1]",
            "routes[0].cors.headers[2]",
            "routes[0].cors.expose_headers",
            "routes[0].cors.max_age",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errors:?}");
        }
        let (_, errors) = compile(None, "true", None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("routes[0].cors: names no origins"),
            "{errors:?}"
        );
        let (_, errors) = compile(None, "{ origins = [] }", None);
        assert!(
            errors[0].starts_with("routes[0].cors.origins: is empty"),
            "{errors:?}"
        );
        let (_, errors) = compile(None, "{ origins = [\"*\", \"https://a.example\"] }", None);
        assert!(
            errors[0].starts_with("routes[0].cors.origins: has \"*\""),
            "{errors:?}"
        );
    }
}
