//! Routing (SPEC §3 step 3): find the route for a normalised path, host and method.
//! The table is indexed once at start-up: a request costs one hash lookup per path segment.
//! The longest matching path wins; at that path, routes for the request's host beat routes
//! for any host; a route that matches the path but not the method gives 405 with `Allow`.

use super::acl::Allow;
use super::auth::AuthPolicy;
use super::body::BodyPolicy;
use super::cors::CorsPolicy;
use super::ip::IpRules;
use super::limits::Limits;
use super::path;
use super::rate_limit::RouteLimits;
use super::threat::ThreatPolicy;
use super::websocket::WebSocketPolicy;
use crate::problem::Refusal;
use crate::request::response::ResponsePolicy;
pub use crate::text::host_without_port;
use http::Method;
use pingora_http::RequestHeader;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// A route: how it is matched (this module), where it forwards, and each later check's own
/// compiled policy, which the pipeline hands to that check alone.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lower-cased host names; `*.example.com` matches one or more labels before it.
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// `None`: any method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub strip_prefix: bool,
    /// Step 4.
    pub ip: IpRules,
    /// Steps 5 and 6: a public route is neither throttled nor authenticated.
    pub auth: AuthPolicy,
    /// Step 6: tokens must be bound to their holder (`cnf`: a certificate or a DPoP key).
    pub sender_constrained: bool,
    /// Step 7.
    pub allow: Option<Allow>,
    /// Step 8.
    pub limits: RouteLimits,
    /// Step 9 (and the declared length in step 3).
    pub body: BodyPolicy,
    /// Step 10.
    pub threat: ThreatPolicy,
    /// Step 11: the client's credential goes on to the upstream.
    pub keep_credentials: bool,
    /// Step 11, on the way back: the response headers.
    pub response: ResponsePolicy,
    /// Browsers of other origins: preflights answered after step 3, headers on every answer.
    pub cors: Option<CorsPolicy>,
    /// Upgrades to WebSocket are let through (step 3 checks them) and tunnelled.
    pub websocket: Option<WebSocketPolicy>,
}

impl Route {
    /// A public route with no restrictions, for building tables in tests and benchmarks.
    pub fn public(name: &str, path: PathMatch, upstream: usize) -> Self {
        Route {
            name: name.to_string(),
            hosts: Vec::new(),
            path,
            methods: None,
            upstream,
            strip_prefix: false,
            ip: IpRules::default(),
            auth: AuthPolicy::Public,
            sender_constrained: false,
            allow: None,
            limits: RouteLimits::default(),
            body: BodyPolicy::streamed(Limits::default().max_body_bytes),
            threat: ThreatPolicy::default(),
            keep_credentials: false,
            response: ResponsePolicy::default(),
            cors: None,
            websocket: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    /// The path is served, but not with this method; the value is the `Allow` header.
    MethodNotAllowed(String),
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    prefix: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    /// Index the routes. Prefixes are stored without a trailing slash (except `/`).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            match &route.path {
                PathMatch::Exact(p) => exact.entry(p.clone()).or_default().push(index),
                PathMatch::Prefix(p) => prefix.entry(p.clone()).or_default().push(index),
            }
        }
        RouteTable {
            routes,
            exact,
            prefix,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// Find the route for a request. `path` must already be normalised.
    pub fn match_request(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
    ) -> Result<usize, RouteMiss> {
        if let Some(candidates) = self.exact.get(path) {
            if let Some(result) = self.pick(candidates, host, method) {
                return result;
            }
        }
        // Walk the segment boundaries from the longest to the shortest prefix.
        let mut end = path.len();
        if end > 1 && path.ends_with('/') {
            end -= 1;
        }
        loop {
            let candidate = if end == 0 { "/" } else { &path[..end] };
            if let Some(indexes) = self.prefix.get(candidate) {
                if let Some(result) = self.pick(indexes, host, method) {
                    return result;
                }
            }
            if end == 0 {
                return Err(RouteMiss::NotFound);
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
    }

    /// Choose among routes that share one path: host-specific routes first, then routes for
    /// any host; `None` when no route serves this host, so that a shorter path may.
    fn pick(
        &self,
        indexes: &[usize],
        host: Option<&str>,
        method: &Method,
    ) -> Option<Result<usize, RouteMiss>> {
        let specific: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&i| {
                let hosts = &self.routes[i].hosts;
                !hosts.is_empty() && host.is_some_and(|h| hosts.iter().any(|p| host_matches(p, h)))
            })
            .collect();
        let chosen: Vec<usize> = if specific.is_empty() {
            indexes
                .iter()
                .copied()
                .filter(|&i| self.routes[i].hosts.is_empty())
                .collect()
        } else {
            specific
        };
        if chosen.is_empty() {
            return None;
        }
        if let Some(&found) = chosen
            .iter()
            .find(|&&i| method_allowed(&self.routes[i], method))
        {
            return Some(Ok(found));
        }
        Some(Err(RouteMiss::MethodNotAllowed(allow_header(
            chosen.iter().map(|&i| &self.routes[i]),
        ))))
    }
}

fn method_allowed(route: &Route, method: &Method) -> bool {
    match &route.methods {
        None => true,
        Some(methods) => {
            methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
        }
    }
}

fn allow_header<'a>(routes: impl Iterator<Item = &'a Route>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for route in routes {
        for m in route.methods.iter().flatten() {
            names.push(m.as_str());
            if m == Method::GET {
                names.push("HEAD");
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// `pattern` is lower case: an exact name or `*.suffix`. `host` is the request's host without
/// its port, in any case.
fn host_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        host.len() > suffix.len() + 1
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

/// What step 3 found: the route, and the paths the rest of the request goes by.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route in the table.
    pub index: usize,
    /// The normalised request path, without the query.
    pub normalised: String,
    /// The normalised (and prefix-stripped) path plus the query, as the upstream gets it.
    pub upstream_path: String,
}

/// Step 3: normalise the path, then find the route for the host, path and method. A path that
/// cannot be normalised or an ambiguous host is a 400; no route is a 404; a route for the path
/// but not the method is a 405 with `Allow`.
pub fn check(req: &RequestHeader, table: &RouteTable) -> Result<Matched, Refusal> {
    check_as(req, table, &req.method)
}

/// Step 3 for `req` as if it had `method` (a CORS preflight is routed by the method it asks
/// for).
pub fn check_as(
    req: &RequestHeader,
    table: &RouteTable,
    method: &Method,
) -> Result<Matched, Refusal> {
    let normalised = path::normalise(req.uri.path())
        .map_err(|e| Refusal::bad_request("bad_path", e.detail()))?;
    let host = request_host(req)?;
    let index = table
        .match_request(host, &normalised, method)
        .map_err(|miss| match miss {
            RouteMiss::NotFound => Refusal::not_found(),
            RouteMiss::MethodNotAllowed(allow) => Refusal::method_not_allowed(allow),
        })?;
    let forwarded = upstream_path(table.get(index), &normalised);
    let upstream_path = match req.uri.query() {
        Some(q) => format!("{forwarded}?{q}"),
        None => forwarded.to_string(),
    };
    Ok(Matched {
        index,
        normalised,
        upstream_path,
    })
}

/// The host the request is for: the request target's authority, else the `Host` header.
/// Several `Host` headers, or one that is not text, are refused.
fn request_host(req: &RequestHeader) -> Result<Option<&str>, Refusal> {
    let mut hosts = req.headers.get_all("host").iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::bad_request(
            "bad_host",
            "the request has several Host headers",
        ));
    }
    if let Some(authority) = req.uri.authority() {
        return Ok(Some(host_without_port(authority.as_str())));
    }
    match header.map(|h| h.to_str()) {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(host_without_port(value.trim()))),
        Some(Err(_)) => Err(Refusal::bad_request(
            "bad_host",
            "the Host header is not valid",
        )),
    }
}

/// The path to send upstream: the route prefix removed when `strip_prefix` is on.
pub fn upstream_path<'a>(route: &Route, normalised: &'a str) -> &'a str {
    match &route.path {
        PathMatch::Prefix(prefix) if route.strip_prefix && prefix != "/" => {
            let rest = normalised.get(prefix.len()..).unwrap_or("");
            if rest.is_empty() {
                "/"
            } else {
                rest
            }
        }
        _ => normalised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, path: PathMatch, methods: &[&str], hosts: &[&str]) -> Route {
        let mut r = Route::public(name, path, 0);
        r.hosts = hosts.iter().map(|h| h.to_string()).collect();
        if !methods.is_empty() {
            r.methods = Some(methods.iter().map(|m| m.parse().unwrap()).collect());
        }
        r
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("root", PathMatch::Prefix("/".into()), &[], &[]),
            route(
                "orders-read",
                PathMatch::Prefix("/v1/orders".into()),
                &["GET"],
                &[],
            ),
            route(
                "orders-write",
                PathMatch::Prefix("/v1/orders".into()),
                &["POST"],
                &[],
            ),
            route(
                "admin",
                PathMatch::Prefix("/v1/orders/admin".into()),
                &["DELETE"],
                &[],
            ),
            route("health", PathMatch::Exact("/healthz".into()), &["GET"], &[]),
            route(
                "tenant",
                PathMatch::Prefix("/v2".into()),
                &[],
                &["*.example.com"],
            ),
            route(
                "api-host",
                PathMatch::Prefix("/v2".into()),
                &[],
                &["api.example.com"],
            ),
        ])
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str, method: Method) -> String {
        match t.match_request(host, path, &method) {
            Ok(i) => t.get(i).name.clone(),
            Err(RouteMiss::NotFound) => "404".into(),
            Err(RouteMiss::MethodNotAllowed(allow)) => format!("405 {allow}"),
        }
    }

    #[test]
    fn longest_prefix_at_segment_boundary() {
        let t = table();
        assert_eq!(name(&t, None, "/v1/orders", Method::GET), "orders-read");
        assert_eq!(name(&t, None, "/v1/orders/", Method::GET), "orders-read");
        assert_eq!(name(&t, None, "/v1/orders/7", Method::POST), "orders-write");
        assert_eq!(name(&t, None, "/v1/ordersX", Method::GET), "root");
        assert_eq!(
            name(&t, None, "/v1/orders/admin/1", Method::DELETE),
            "admin"
        );
        assert_eq!(
            name(&t, None, "/v1/orders/administrator", Method::DELETE),
            "405 GET, HEAD, POST"
        );
        assert_eq!(
            name(&t, None, "/v1/orders/admin", Method::GET),
            "405 DELETE"
        );
        assert_eq!(name(&t, None, "/v1/orders/7", Method::HEAD), "orders-read");
        assert_eq!(
            name(&t, None, "/v1/orders/7", Method::PUT),
            "405 GET, HEAD, POST"
        );
    }

    #[test]
    fn exact_paths() {
        let t = table();
        assert_eq!(name(&t, None, "/healthz", Method::GET), "health");
        assert_eq!(name(&t, None, "/healthz/x", Method::GET), "root");
        assert_eq!(name(&t, None, "/healthz", Method::POST), "405 GET, HEAD");
    }

    #[test]
    fn hosts() {
        let t = table();
        assert_eq!(
            name(&t, Some("api.example.com"), "/v2/x", Method::GET),
            "tenant"
        );
        assert_eq!(
            name(&t, Some("a.b.example.com"), "/v2", Method::GET),
            "tenant"
        );
        assert_eq!(name(&t, Some("example.com"), "/v2", Method::GET), "root");
        assert_eq!(
            name(&t, Some("evilexample.com"), "/v2", Method::GET),
            "root"
        );
        assert_eq!(name(&t, None, "/v2", Method::GET), "root");
        let only_host = RouteTable::new(vec![route(
            "h",
            PathMatch::Prefix("/".into()),
            &[],
            &["api.example.com"],
        )]);
        assert_eq!(
            name(&only_host, Some("API.Example.com"), "/", Method::GET),
            "h"
        );
        assert_eq!(name(&only_host, Some("other"), "/", Method::GET), "404");
    }

    #[test]
    fn no_root_route_gives_404() {
        let t = RouteTable::new(vec![route("a", PathMatch::Prefix("/a".into()), &[], &[])]);
        assert_eq!(name(&t, None, "/", Method::GET), "404");
        assert_eq!(name(&t, None, "/b/a", Method::GET), "404");
        assert_eq!(name(&t, None, "/a/b", Method::GET), "a");
    }

    #[test]
    fn host_port_removal() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1"), "[::1");
    }

    /// `check` as the client would see it: the route's name and the upstream path, or the
    /// refusal's status and reason.
    fn checked(t: &RouteTable, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let req = crate::checks::test_request(method, target, headers);
        match check(&req, t) {
            Ok(m) => format!(
                "{} {} {}",
                t.get(m.index).name,
                m.normalised,
                m.upstream_path
            ),
            Err(r) => format!("{} {}", r.status, r.reason),
        }
    }

    #[test]
    fn check_normalises_then_matches_and_keeps_the_query() {
        let mut t = table();
        t.routes[1].strip_prefix = true;
        // Method, request target, headers, what `checked` says.
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "GET",
                "/v1//orders/./7?x=1",
                &[],
                "orders-read /v1/orders/7 /7?x=1",
            ),
            ("GET", "/v1/orders", &[], "orders-read /v1/orders /"),
            ("GET", "/v1/%6Frders", &[], "orders-read /v1/orders /"),
            ("GET", "/a/%2F/b", &[], "400 bad_path"),
            ("GET", "/../etc", &[], "400 bad_path"),
            ("PUT", "/v1/orders/7", &[], "405 method_not_allowed"),
            (
                "GET",
                "/v2/x",
                &[("Host", "api.example.com:8443")],
                "tenant /v2/x /v2/x",
            ),
            (
                "GET",
                "/v2/x",
                &[("Host", "a.example.com"), ("Host", "b.example.com")],
                "400 bad_host",
            ),
            (
                "GET",
                "/v2/x",
                &[("Host", "API.example.COM")],
                "tenant /v2/x /v2/x",
            ),
        ];
        for (method, target, headers, expected) in cases {
            assert_eq!(&checked(&t, method, target, headers), expected, "{target}");
        }
        let no_root = RouteTable::new(vec![route("a", PathMatch::Prefix("/a".into()), &[], &[])]);
        assert_eq!(checked(&no_root, "GET", "/b", &[]), "404 no_route");
        let refusal = check(&crate::checks::test_request("PUT", "/v1/orders", &[]), &t);
        let headers = refusal.map(|_| ()).unwrap_err().headers;
        assert_eq!(headers, vec![("Allow", "GET, HEAD, POST".to_string())]);
    }

    #[test]
    fn strip_prefix() {
        let mut r = Route::public("s", PathMatch::Prefix("/svc".into()), 0);
        r.strip_prefix = true;
        assert_eq!(upstream_path(&r, "/svc"), "/");
        assert_eq!(upstream_path(&r, "/svc/"), "/");
        assert_eq!(upstream_path(&r, "/svc/a/b"), "/a/b");
        r.strip_prefix = false;
        assert_eq!(upstream_path(&r, "/svc/a"), "/svc/a");
    }
}
