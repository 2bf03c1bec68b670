//! `[[routes]]`: paths and hosts checked, auth and `allow` resolved against the identities,
//! rate limits, `validate` (schemas compiled now) and `[waf]` policies; a route that another
//! hides is refused.

use super::{identities, waf};
use crate::checks::auth::{AuthMethod, Identities};
use crate::checks::body::{self, BodyPolicy, BodyRules, Inspected};
use crate::checks::ip::IpRules;
use crate::checks::limits::Limits;
use crate::checks::path::normalise;
use crate::checks::rate_limit::{ConcurrencyCap, LimitKey, Policy, RateLimits, RouteLimits};
use crate::checks::route::{PathMatch, Route};
use crate::checks::threat::rules::OverLimit;
use crate::checks::threat::{ThreatMode, ThreatPolicy};
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::lint;
use crate::config::model::*;
use crate::config::raw::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

fn compile_path(e: &mut Errors, key: &str, text: &str) -> String {
    match normalise(text) {
        Ok(n) => {
            let canonical = if n.len() > 1 {
                n.trim_end_matches('/').to_string()
            } else {
                n
            };
            let written = if text.len() > 1 {
                text.trim_end_matches('/')
            } else {
                text
            };
            if canonical != written {
                e.add(
                    key,
                    format!("{text:?} is not in normalised form; write {canonical:?} (requests are matched after normalisation)"),
                );
            }
            canonical
        }
        Err(err) => {
            e.add(key, format!("invalid path {text:?}: {}", err.detail()));
            String::new()
        }
    }
}

fn compile_host(e: &mut Errors, key: &str, host: &str) -> String {
    let lower = host.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    if !ok {
        e.add(
            key,
            format!("invalid host {host:?}; write a name like \"api.example.com\" or \"*.example.com\", without a port"),
        );
    }
    lower
}

/// What the sections before `[[routes]]` give every route.
pub(super) struct RouteDefaults<'a> {
    pub(super) limits: &'a Limits,
    pub(super) ids: &'a Identities,
    pub(super) mtls_listener: bool,
    pub(super) waf: Option<&'a WafDefaults>,
    pub(super) response: &'a super::response::ResponseDefaults,
    pub(super) cors: &'a super::cors::CorsKeys,
}

pub(super) fn compile_routes(
    e: &mut Errors,
    raw: &[RawRoute],
    upstreams: &[Upstream],
    defaults: &RouteDefaults,
    file: &Path,
) -> Vec<Route> {
    let RouteDefaults {
        limits,
        ids,
        mtls_listener,
        waf,
        response,
        cors,
    } = *defaults;
    let upstream_index: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let mut names = HashSet::new();
    let mut out: Vec<Route> = Vec::with_capacity(raw.len());
    if raw.is_empty() {
        e.add(
            "routes",
            "no routes; every request would get 404. Add a [[routes]] table",
        );
    }
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if r.name == "unmatched" {
            e.add(
                format!("{key}.name"),
                "\"unmatched\" is reserved for requests that match no route",
            );
        } else {
            e.name(
                format!("{key}.name"),
                "route name",
                &r.name,
                Some(&mut names),
            );
        }
        let path = match (&r.path_prefix, &r.path_exact) {
            (Some(p), None) => PathMatch::Prefix(compile_path(e, &format!("{key}.path_prefix"), p)),
            (None, Some(p)) => PathMatch::Exact(compile_path(e, &format!("{key}.path_exact"), p)),
            (Some(_), Some(_)) => {
                e.add(key.clone(), "has both path_prefix and path_exact; keep one");
                PathMatch::Prefix("/".into())
            }
            (None, None) => {
                e.add(
                    key.clone(),
                    "has no path; add path_prefix = \"/…\" or path_exact = \"/…\"",
                );
                PathMatch::Prefix("/".into())
            }
        };
        let methods = if r.methods.is_empty() {
            None
        } else {
            let mut list = Vec::new();
            for (m, text) in r.methods.iter().enumerate() {
                let upper = text.to_ascii_uppercase();
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if !upper.is_empty() => list.push(method),
                    _ => e.add(
                        format!("{key}.methods[{m}]"),
                        format!("invalid method {text:?}"),
                    ),
                }
            }
            Some(list)
        };
        let upstream = match upstream_index.get(r.upstream.as_str()) {
            Some(&index) => index,
            None => {
                e.add(
                    format!("{key}.upstream"),
                    format!(
                        "unknown upstream {:?}; define it under [[upstreams]] or fix the name",
                        r.upstream
                    ),
                );
                0
            }
        };
        if r.strip_prefix && !matches!(path, PathMatch::Prefix(_)) {
            e.add(
                format!("{key}.strip_prefix"),
                "only applies to a path_prefix route",
            );
        }
        let (auth, allow) = identities::route_access(e, &key, r, ids, mtls_listener);
        let sender_constrained = r.sender_constrained.unwrap_or(false);
        let takes_tokens = auth
            .methods()
            .iter()
            .any(|m| matches!(m, AuthMethod::Jwt(_) | AuthMethod::Introspection(_)));
        if sender_constrained && !takes_tokens {
            e.add(
                format!("{key}.sender_constrained"),
                "only applies to a route whose auth takes tokens (\"jwt:<provider>\" or \"introspection:<provider>\")",
            );
        }
        let rate_limits = compile_rate_limits(e, &key, r);
        let max_inflight = r.max_inflight.map(|n| {
            let max = e.count(&format!("{key}.max_inflight"), Some(n), 1, 1_000_000) as u32;
            Arc::new(ConcurrencyCap::new(max))
        });
        let threat_protection = match r.threat_protection.as_deref() {
            None | Some("block") => ThreatMode::Block,
            Some("detect") => ThreatMode::Detect,
            Some("off") => ThreatMode::Off,
            Some(other) => {
                e.add(
                    format!("{key}.threat_protection"),
                    format!("invalid value {other:?}; write \"block\", \"detect\" or \"off\""),
                );
                ThreatMode::Block
            }
        };
        let rules = waf::route_policy(
            e,
            &key,
            waf,
            r.waf.as_ref(),
            threat_protection != ThreatMode::Off,
        );
        let route_limit = r.limits.as_ref().and_then(|l| l.max_body_bytes.as_ref());
        let validate_limit = r.validate.as_ref().and_then(|v| v.max_body_bytes.as_ref());
        if route_limit.is_some() && validate_limit.is_some() {
            e.add(
                format!("{key}.validate.max_body_bytes"),
                "also set in limits.max_body_bytes; keep one",
            );
        }
        let max_body_bytes = match (route_limit, validate_limit) {
            (_, Some(v)) => e.size(
                &format!("{key}.validate.max_body_bytes"),
                Some(v),
                limits.max_body_bytes,
            ),
            (r, None) => e.size(
                &format!("{key}.limits.max_body_bytes"),
                r,
                limits.max_body_bytes,
            ),
        };
        let validate = r
            .validate
            .as_ref()
            .and_then(|v| compile_validate(e, &format!("{key}.validate"), v, limits, file));
        // The rules see the body whole: step 9 reads it for them.
        let inspected = rules.as_ref().map(|w| Inspected {
            refuse_above: (w.over_limit == OverLimit::Refuse
                && (w.max_body_bytes as u64) < max_body_bytes)
                .then_some(w.max_body_bytes as u64),
            parsed_only: w.builtin,
        });
        let mut hosts: Vec<String> = r
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| compile_host(e, &format!("{key}.hosts[{h}]"), host))
            .collect();
        hosts.sort();
        hosts.dedup();
        let response_key = format!("{key}.response");
        let cors = super::cors::route_policy(e, cors, &key, r.cors.as_ref(), methods.as_deref());
        let route = Route {
            name: r.name.clone(),
            hosts,
            path,
            methods,
            upstream,
            strip_prefix: r.strip_prefix,
            ip: IpRules {
                allow: e.cidrs(&format!("{key}.ip_allow"), &r.ip_allow),
                deny: e.cidrs(&format!("{key}.ip_deny"), &r.ip_deny),
            },
            auth,
            sender_constrained,
            allow,
            limits: RouteLimits {
                rates: Arc::new(RateLimits::new(rate_limits)),
                max_inflight,
            },
            body: BodyPolicy {
                max_bytes: max_body_bytes,
                validate,
                inspected,
            },
            threat: ThreatPolicy {
                mode: threat_protection,
                rules,
            },
            keep_credentials: r.keep_credentials.unwrap_or(false),
            response: super::response::route_policy(
                e,
                response,
                r.response.as_ref().map(|own| (response_key.as_str(), own)),
                !r.public,
            ),
            cors,
            websocket: super::websocket::route_policy(e, &key, r.websocket.as_ref())
                .filter(|_| tunnels_over_http1(e, &key, upstreams.get(upstream))),
        };
        if let Some(j) = out.iter().position(|other| shadows(other, &route)) {
            e.add(
                key.clone(),
                format!(
                    "matches the same path, hosts and methods as routes[{j}] ({:?}), so it could never be chosen; merge them or make them differ",
                    out[j].name
                ),
            );
        }
        out.push(route);
    }
    out
}

/// A WebSocket tunnel needs an HTTP/1.1 upstream (WebSocket over HTTP/2, RFC 8441, is not
/// spoken to upstreams).
fn tunnels_over_http1(e: &mut Errors, key: &str, upstream: Option<&Upstream>) -> bool {
    if upstream.is_some_and(|u| u.http2) {
        e.add(
            format!("{key}.websocket"),
            "needs an upstream that speaks HTTP/1.1; this route's has protocol = \"h2\" or \"h2c\"",
        );
        return false;
    }
    true
}

/// A route's `rate_limit`: one policy or a list of them.
fn compile_rate_limits(e: &mut Errors, key: &str, r: &RawRoute) -> Vec<Policy> {
    let raw: Vec<&RawRateLimitPolicy> = match &r.rate_limit {
        None => Vec::new(),
        Some(RawRateLimit::One(p)) => vec![p],
        Some(RawRateLimit::Many(list)) => list.iter().collect(),
    };
    if matches!(&r.rate_limit, Some(RawRateLimit::Many(list)) if list.is_empty()) {
        e.add(
            format!("{key}.rate_limit"),
            "empty list; give at least one policy or remove it",
        );
    }
    let mut out = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let pkey = match &r.rate_limit {
            Some(RawRateLimit::Many(_)) => format!("{key}.rate_limit[{i}]"),
            _ => format!("{key}.rate_limit"),
        };
        let requests = e.count(
            &format!("{pkey}.requests"),
            Some(p.requests),
            1,
            1_000_000_000,
        ) as u32;
        let per = e.duration(&format!("{pkey}.per"), Some(&p.per), Duration::from_secs(1));
        if per < Duration::from_secs(1) || per.subsec_nanos() != 0 {
            e.add(
                format!("{pkey}.per"),
                "use whole seconds of at least 1s (the RateLimit headers count in seconds)",
            );
        }
        let limit_key = match p.key.as_deref().unwrap_or("ip") {
            "consumer" => {
                if r.public {
                    e.warn(lint::consumer_key_on_public_route(format!("{pkey}.key")));
                }
                LimitKey::Consumer
            }
            "ip" => LimitKey::Ip,
            "route" => LimitKey::Route,
            other => match other
                .strip_prefix("header:")
                .map(|n| http::HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(name)) => LimitKey::Header(name),
                _ => {
                    e.add(
                        format!("{pkey}.key"),
                        format!("invalid key {other:?}; use \"consumer\", \"ip\", \"route\" or \"header:NAME\""),
                    );
                    LimitKey::Ip
                }
            },
        };
        out.push(Policy::new(
            format!("{}-{i}", r.name),
            requests,
            per,
            limit_key,
        ));
    }
    if r.public && out.is_empty() {
        e.warn(lint::public_without_rate_limit(key.to_string()));
    }
    out
}

/// A route's `validate` table: content types, and the JSON Schema read and compiled now.
fn compile_validate(
    e: &mut Errors,
    key: &str,
    v: &RawValidate,
    limits: &Limits,
    file: &Path,
) -> Option<BodyRules> {
    let mut content_types = Vec::new();
    for (i, text) in v.content_types.iter().enumerate() {
        let media = body::media_type(text);
        let valid = media
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !media.contains(['*', ' ']));
        if !valid || text.contains(';') {
            e.add(
                format!("{key}.content_types[{i}]"),
                format!("invalid media type {text:?}; write e.g. \"application/json\" (no wildcards, no parameters)"),
            );
        }
        content_types.push(media);
    }
    let schema = match &v.json_schema {
        None => None,
        Some(path) => {
            let path = relative_to(file, path);
            let skey = format!("{key}.json_schema");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) => {
                    e.add(skey, format!("cannot read {}: {err}", path.display()));
                    return None;
                }
            };
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(json) => json,
                Err(err) => {
                    e.add(skey, format!("{} is not JSON: {err}", path.display()));
                    return None;
                }
            };
            match jsonschema::options()
                .should_validate_formats(true)
                .build(&json)
            {
                Ok(validator) => Some(std::sync::Arc::new(validator)),
                Err(err) => {
                    e.add(
                        skey,
                        format!("{} is not a usable JSON Schema: {err}", path.display()),
                    );
                    return None;
                }
            }
        }
    };
    if content_types.is_empty() {
        if schema.is_some() {
            content_types.push("application/json".to_string());
        } else {
            e.add(
                format!("{key}.content_types"),
                "empty; list the accepted media types, e.g. [\"application/json\"]",
            );
        }
    }
    if schema.is_some() && !content_types.iter().all(|c| body::is_json(c)) {
        e.add(
            format!("{key}.content_types"),
            "a json_schema needs JSON media types only (application/json or */*+json)",
        );
    }
    Some(BodyRules {
        content_types,
        schema,
        max_json_depth: limits.max_json_depth,
    })
}

/// Two routes with the same path and hosts whose method sets overlap: the later is dead.
fn shadows(a: &Route, b: &Route) -> bool {
    if a.path != b.path || a.hosts != b.hosts {
        return false;
    }
    match (&a.methods, &b.methods) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use crate::config::compile::upstreams::compile_upstreams;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Sections {
        routes: Vec<RawRoute>,
    }

    const UPSTREAM: &str = "[[upstreams]]\nname = \"orders\"\ntargets = [\"127.0.0.1:9000\"]";

    fn compile(routes: &str) -> (Vec<Route>, Vec<String>) {
        #[derive(Deserialize)]
        struct Both {
            upstreams: Vec<RawUpstream>,
            #[serde(flatten)]
            routes: Sections,
        }
        let toml = format!("{routes}\n{UPSTREAM}");
        let (made, errors, _) = section(&toml, |e, s: &Both, file| {
            let upstreams = compile_upstreams(e, &s.upstreams, file);
            let limits = Limits::default();
            let ids = Identities::default();
            let response = super::super::response::defaults(e, &Default::default());
            let defaults = RouteDefaults {
                limits: &limits,
                ids: &ids,
                mtls_listener: false,
                waf: None,
                response: &response,
                cors: &Default::default(),
            };
            compile_routes(e, &s.routes.routes, &upstreams, &defaults, file)
        });
        (made, errors)
    }

    #[test]
    fn a_route_is_compiled_with_its_limits_and_body_rules() {
        let (routes, errors) = compile(
            "[[routes]]\nname = \"orders\"\npath_prefix = \"/v1/orders\"\nmethods = [\"get\", \"POST\"]\n\
             upstream = \"orders\"\npublic = true\nhosts = [\"API.example.com\"]\n\
             rate_limit = { requests = 10, per = \"1s\" }\nmax_inflight = 5\n\
             ip_deny = [\"10.0.0.0/8\"]\nlimits = { max_body_bytes = \"4KiB\" }\n\
             validate = { content_types = [\"application/json\"], json_schema = \"schemas/order.json\" }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let r = &routes[0];
        assert_eq!(r.path, PathMatch::Prefix("/v1/orders".into()));
        assert_eq!(
            r.methods.as_deref(),
            Some(&[http::Method::GET, http::Method::POST][..])
        );
        assert_eq!(r.hosts, vec!["api.example.com".to_string()]);
        assert_eq!(r.body.max_bytes, 4096);
        assert_eq!(r.limits.rates.policies.len(), 1);
        assert!(r.limits.max_inflight.is_some());
        assert!(r.ip.deny.contains("10.1.2.3".parse().unwrap()));
        assert!(r.body.validate.as_ref().is_some_and(|b| b.schema.is_some()));
    }

    #[test]
    fn each_mistake_names_its_key() {
        let route = |extra: &str| {
            format!("[[routes]]\nname = \"r\"\nupstream = \"orders\"\npublic = true\n{extra}")
        };
        let cases = [
            (route("path_prefix = \"/a/../..\""), "routes[0].path_prefix: invalid path"),
            (route(""), "routes[0]: has no path"),
            (
                route("path_prefix = \"/v1//orders\""),
                "routes[0].path_prefix: \"/v1//orders\" is not in normalised form",
            ),
            (
                route("path_prefix = \"/a\"\npath_exact = \"/a\""),
                "routes[0]: has both path_prefix and path_exact",
            ),
            (route("path_prefix = \"/\"\nmethods = [\"G ET\"]"), "routes[0].methods[0]"),
            (
                "[[routes]]\nname = \"r\"\nupstream = \"nowhere\"\npublic = true\npath_prefix = \"/\""
                    .to_string(),
                "routes[0].upstream",
            ),
            (
                "[[routes]]\nname = \"unmatched\"\nupstream = \"orders\"\npublic = true\npath_prefix = \"/\""
                    .to_string(),
                "routes[0].name: \"unmatched\" is reserved",
            ),
            (
                route("path_prefix = \"/\"\nthreat_protection = \"maybe\""),
                "routes[0].threat_protection",
            ),
            (route("path_prefix = \"/\"\nip_allow = [\"300.0.0.1\"]"), "routes[0].ip_allow"),
            (
                route("path_prefix = \"/\"\nvalidate = { content_types = [\"application/json\"], json_schema = \"schemas/none.json\" }"),
                "routes[0].validate.json_schema: cannot read",
            ),
            (
                format!("{}\n{}", route("path_prefix = \"/a\""), route("path_prefix = \"/a\"").replace("\"r\"", "\"s\"")),
                "routes[1]: matches the same path, hosts and methods as routes[0]",
            ),
            (String::new(), "routes: no routes"),
        ];
        for (toml, expected) in cases {
            let toml = if toml.is_empty() {
                "routes = []".to_string()
            } else {
                toml
            };
            let (_, errors) = compile(&toml);
            assert!(
                errors.iter().any(|x| x.starts_with(expected)),
                "{toml}: {errors:?}"
            );
        }
    }
}
