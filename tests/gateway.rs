//! End-to-end tests of the gateway core against the real binary and a real upstream:
//! routing, refusals (checked from both sides), forwarding headers, path normalisation.

mod harness;

use harness::*;

/// Routes used by most tests; `up` is the recording upstream.
fn routes(up: &Upstream) -> String {
    format!(
        r#"
[limits]
max_uri_bytes = 512
max_header_bytes = "4KiB"
max_headers = 20
max_body_bytes = 1000

{fixture}

[[routes]]
name = "items-read"
path_prefix = "/api/items"
methods = ["GET"]
upstream = "app"
public = true

[[routes]]
name = "items-write"
path_prefix = "/api/items"
methods = ["POST", "PUT"]
upstream = "app"
public = true

[[routes]]
name = "svc"
path_prefix = "/svc"
upstream = "app"
public = true
strip_prefix = true

[[routes]]
name = "exact"
path_exact = "/status"
upstream = "app"
public = true

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "app"

[[routes]]
name = "tenant"
hosts = ["api.example.com"]
path_prefix = "/hosted"
upstream = "app"
public = true

[[routes]]
name = "blocked"
path_prefix = "/blocked"
upstream = "app"
public = true
ip_deny = ["127.0.0.0/8"]

[[routes]]
name = "big"
path_prefix = "/big"
upstream = "app"
public = true
limits = {{ max_body_bytes = "4KiB" }}
"#,
        fixture = public_route(up.addr, "public", "/public")
    )
}

#[test]
fn routes_and_forwards_with_request_id_round_trip() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let r = gw.get("/api/items/7?x=1&y=two");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("test"));
    let id = r
        .header("x-request-id")
        .expect("request id on the response")
        .to_string();
    assert_eq!(id.len(), 32);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/api/items/7?x=1&y=two");
    assert_eq!(seen[0].header("x-request-id"), Some(id.as_str()));
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    // Each request gets its own id.
    let again = gw.get("/api/items/7");
    assert_ne!(again.header("x-request-id"), Some(id.as_str()));
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    gw.get("/nothing/here").assert_problem(404);
    gw.get("/").assert_problem(404);
    let r = gw.raw("DELETE /api/items/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    r.assert_problem(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT"));
    // Exact paths match only themselves.
    assert_eq!(gw.get("/status").status, 200);
    gw.get("/status/more").assert_problem(404);
    assert_eq!(up.requests().len(), 1, "only /status reached the upstream");
    assert_eq!(
        gw.wait_metric(
            "portcullis_requests_total",
            &[("route", "unmatched"), ("status", "404")],
            3.0
        ),
        3.0
    );
    assert_eq!(
        gw.wait_metric(
            "portcullis_requests_total",
            &[("route", "unmatched"), ("status", "405")],
            1.0
        ),
        1.0
    );
}

#[test]
fn prefix_matches_only_at_segment_boundaries() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    assert_eq!(gw.get("/public").status, 200);
    assert_eq!(gw.get("/public/").status, 200);
    assert_eq!(gw.get("/public/a/b").status, 200);
    gw.get("/publicX").assert_problem(404);
    gw.get("/public-admin").assert_problem(404);
    let uris: Vec<String> = up.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, vec!["/public", "/public/", "/public/a/b"]);
}

#[test]
fn hosts_select_routes() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let ok =
        gw.raw("GET /hosted/x HTTP/1.1\r\nHost: API.example.com:8443\r\nConnection: close\r\n\r\n");
    assert_eq!(ok.status, 200);
    gw.raw("GET /hosted/x HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n")
        .assert_problem(404);
    let twice = gw.raw("GET /public HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n");
    assert_eq!(twice.status, 400);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn size_limits_refuse_before_the_upstream() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let long = format!("/public/{}", "a".repeat(600));
    gw.get(&long).assert_problem(414);

    let mut many = String::from("GET /public HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    gw.raw(&many).assert_problem(431);

    let big = format!(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(5000)
    );
    gw.raw(&big).assert_problem(431);

    let declared =
        "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n";
    gw.raw(declared).assert_problem(413);
    // A route may raise the limit.
    let body = "z".repeat(2000);
    let allowed = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{body}"
    );
    assert_eq!(gw.raw(&allowed).status, 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "only the allowed body reached the upstream");
    assert_eq!(seen[0].body, body.as_bytes());
    // Within the limit still passes.
    assert_eq!(gw.get("/public/ok").status, 200);
    for reason in [
        "uri_too_long",
        "too_many_headers",
        "headers_too_large",
        "body_too_large",
    ] {
        let labels = [("route", "unmatched"), ("reason", reason)];
        let labels = if reason == "body_too_large" {
            [("route", "public"), ("reason", reason)]
        } else {
            labels
        };
        assert_eq!(
            gw.wait_metric("portcullis_validation_rejections_total", &labels, 1.0),
            1.0,
            "{reason}"
        );
    }
}

#[test]
fn chunked_body_over_the_limit_is_cut_off() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let chunk = "a".repeat(600);
    let request = format!(
        "POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = gw.raw(&request);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        up.requests().iter().all(|s| s.body.len() <= 1000),
        "the upstream never got a complete over-limit body"
    );
}

#[test]
fn conflicting_framing_is_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let cl_te = "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(gw.raw(cl_te).status, 400);
    let two_cl =
        "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_eq!(gw.raw(two_cl).status, 400);
    let list_cl = "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!";
    assert_eq!(gw.raw(list_cl).status, 400);
    assert!(
        up.requests().is_empty(),
        "the upstream saw nothing: {:?}",
        up.requests()
    );
    assert_eq!(gw.get("/public").status, 200, "still serving");
}

#[test]
fn spoofed_identity_and_forwarding_headers_are_not_passed_on() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let r = gw.raw(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6\r\nX-Consumer-Id: admin\r\nX-Consumer-Groups: root\r\n\
         X-Authenticated-Scopes: all\r\nX-Request-Id: forged-id\r\nAuthorization: Bearer abc\r\n\
         X-API-Key: k\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-request-id"), Some("forged-id"));
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header_count("x-forwarded-for"), 1);
    assert!(seen.header("forwarded").is_none());
    assert!(seen.header("x-consumer-id").is_none());
    assert!(seen.header("x-consumer-groups").is_none());
    assert!(seen.header("x-authenticated-scopes").is_none());
    assert!(seen.header("authorization").is_none());
    assert!(seen.header("x-api-key").is_none());
    assert_eq!(seen.header("x-request-id"), r.header("x-request-id"));
}

#[test]
fn trusted_proxy_request_id_and_client_ip_are_believed() {
    let up = Upstream::start();
    let gw = Gateway::start_with(&routes(&up), "trusted_proxies = [\"127.0.0.1/32\"]");
    let r = gw.raw(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7, 127.0.0.1\r\n\
         X-Request-Id: edge-1234\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("edge-1234"));
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-request-id"), Some("edge-1234"));
    assert_eq!(seen.header("x-real-ip"), Some("198.51.100.7"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.1, 127.0.0.1")
    );
    // A malformed id is replaced even from a trusted proxy.
    let bad = gw.raw(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Request-Id: a b<c>\r\nConnection: close\r\n\r\n",
    );
    assert_ne!(bad.header("x-request-id"), Some("a b<c>"));
    // The IP rule sees the forwarded client, not the proxy.
    let denied = gw.raw("GET /blocked HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\nConnection: close\r\n\r\n");
    assert_eq!(denied.status, 200, "198.51.100.7 is not in ip_deny");
}

#[test]
fn ip_deny_refuses_with_403() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    // The peer is 127.0.0.1, denied; a spoofed X-Forwarded-For from an untrusted peer is ignored.
    gw.raw(
        "GET /blocked HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 8.8.8.8\r\nConnection: close\r\n\r\n",
    )
    .assert_problem(403);
    assert!(up.requests().is_empty());
    assert_eq!(
        gw.wait_metric(
            "portcullis_authz_denials_total",
            &[("route", "blocked"), ("reason", "ip_denied")],
            1.0
        ),
        1.0
    );
}

#[test]
fn non_public_route_without_auth_denies_by_default() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let r = gw.get("/admin/users");
    r.assert_problem(401);
    assert!(r.header("www-authenticate").is_some());
    assert!(up.requests().is_empty());
}

#[test]
fn strip_prefix_forwards_the_rest() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    assert_eq!(gw.get("/svc/a/b?q=1").status, 200);
    assert_eq!(gw.get("/svc").status, 200);
    assert_eq!(gw.get("/svc/").status, 200);
    let uris: Vec<String> = up.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, vec!["/a/b?q=1", "/", "/"]);
}

#[test]
fn paths_are_normalised_before_matching_and_forwarding() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    // Climbing out of /public into /admin lands on /admin's rules (401), never on /public's.
    gw.get("/public/%2e%2e/admin").assert_problem(401);
    gw.get("/public/../admin/x").assert_problem(401);
    gw.get("/public/%2E%2e/admin").assert_problem(401);
    assert!(up.requests().is_empty(), "nothing reached the upstream");

    for (sent, forwarded) in [
        ("/public/./a//b", "/public/a/b"),
        ("//public///a", "/public/a"),
        ("/public/a/../b", "/public/b"),
        ("/public/%61%62c", "/public/abc"),
        ("/public/x%20y", "/public/x%20y"),
        ("/public/%7e", "/public/~"),
        ("/svc/%2e/a", "/a"),
    ] {
        up.clear();
        let r = gw.get(sent);
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(up.requests()[0].uri, forwarded, "{sent}");
    }
    // Double encoding survives normalisation (it is a literal "%2e" to the upstream), but
    // threat protection (on by default) refuses a traversal hidden that way.
    up.clear();
    let hidden = gw.get("/public/%252e%252e/admin");
    assert_eq!(hidden.status, 400, "{}", hidden.text());
    assert!(hidden.text().contains("path traversal"));
    for bad in [
        "/public%2fadmin",
        "/public/a%2Fb",
        "/public/a%5cb",
        "/public/%00",
        "/public/a%0d%0aX-Injected:%20yes",
        "/public/%zz",
        "/..",
        "/public/../../etc/passwd",
        "/%2e%2e/etc/passwd",
    ] {
        let r = gw.get(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        if r.header("content-type") == Some("application/problem+json") {
            r.assert_problem(400);
        }
    }
    assert!(
        up.requests().is_empty(),
        "no refused path reached the upstream: {:?}",
        up.requests()
    );
}

#[test]
fn head_refusals_have_no_body_and_keep_alive_still_works() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut stream).unwrap();
    first.assert_problem(404);
    stream
        .write_all(b"GET /public/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let second = read_response(&mut stream).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn access_log_lines_have_every_field_and_no_secrets() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    gw.raw(
        "GET /public/x?token=tok-SECRET-1&custom_secret=cs-SECRET-2&page=3 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer auth-SECRET-3\r\nCookie: c=cookie-SECRET-4\r\nUser-Agent: test-agent\r\n\
         Connection: close\r\n\r\n",
    );
    gw.get("/nope?api_key=key-SECRET-5");
    let mut log = String::new();
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        log = gw.access_log();
        log.lines().count() >= 2
    }));
    assert!(
        !log.contains("SECRET"),
        "secrets leaked into the log: {log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Lines are written as requests finish, not necessarily in the order they were sent.
    let by_path = |prefix: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no line for {prefix}: {log}"))
    };
    let first = by_path("/public/x");
    let second = by_path("/nope");
    for field in [
        "ts",
        "request_id",
        "client_ip",
        "method",
        "path",
        "status",
        "route",
        "consumer",
        "auth",
        "decision",
        "upstream",
        "upstream_status",
        "bytes_sent",
        "duration_ms",
        "user_agent",
        "trace_id",
    ] {
        assert!(first.get(field).is_some(), "missing {field} in {first}");
    }
    assert_eq!(
        first["path"],
        "/public/x?token=REDACTED&custom_secret=REDACTED&page=3"
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "public");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["upstream"], "app");
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["user_agent"], "test-agent");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(second["decision"], "no_route");
    assert_eq!(second["route"], "unmatched");
    assert_eq!(second["status"], 404);
}

#[test]
fn metrics_listener_exports_the_core_metrics() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    assert_eq!(gw.get("/public").status, 200);
    let mut text = String::new();
    // The request is counted in Pingora's logging phase, just after the response is sent.
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        text = gw.metrics();
        text.contains("portcullis_requests_total{")
    }));
    for name in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_upstream_duration_seconds_bucket",
        "portcullis_upstream_connections_total",
        "portcullis_upstream_target_healthy",
        "portcullis_inflight_requests",
        "portcullis_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(
        metric_value(
            &text,
            "portcullis_requests_total",
            &[("route", "public"), ("method", "GET"), ("status", "200")]
        ),
        Some(1.0)
    );
    let other = raw_request(
        gw.metrics_port,
        b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(other.status, 404);
}

#[test]
fn ip_rules_apply_to_ipv4_and_ipv6_clients() {
    let up = Upstream::start();
    let v6_available = std::net::TcpListener::bind("[::1]:0").is_ok();
    let port6 = free_port();
    let v6_listener = if v6_available {
        format!("[[listeners]]\naddress = \"[::1]:{port6}\"\n")
    } else {
        String::new()
    };
    let gw = Gateway::start_with(
        &format!(
            r#"
{v6_listener}
{fixture}
ip_allow = ["2001:db8::/32", "::1"]
ip_deny = ["2001:db8:bad::/48"]

[[routes]]
name = "v4-only"
path_prefix = "/v4"
upstream = "app"
public = true
ip_allow = ["198.51.100.0/24"]
"#,
            fixture = public_route(up.addr, "v6-only", "/v6")
        ),
        // Only the proxy at 127.0.0.2 is trusted: 127.0.0.1 (the test client) is not.
        "trusted_proxies = [\"127.0.0.2\"]",
    );
    let with_xff = |path: &str, xff: &str| {
        gw.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
        ))
    };
    // From an untrusted peer, X-Forwarded-For cannot claim an allowed address.
    with_xff("/v4/a", "198.51.100.9").assert_problem(403);
    with_xff("/v6/a", "2001:db8::1").assert_problem(403);
    assert!(up.requests().is_empty());
    assert!(
        gw.wait_metric(
            "portcullis_authz_denials_total",
            &[("route", "v4-only"), ("reason", "ip_denied")],
            1.0
        ) >= 1.0
    );
    if v6_available {
        let mut stream = std::net::TcpStream::connect(("::1", port6)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        use std::io::Write;
        stream
            .write_all(b"GET /v6/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut stream).unwrap();
        assert_eq!(r.status, 200, "::1 is allowed: {}", r.text());
        assert_eq!(up.requests()[0].header("x-real-ip"), Some("::1"));
        let mut stream = std::net::TcpStream::connect(("::1", port6)).unwrap();
        stream
            .write_all(b"GET /v4/no HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_response(&mut stream).unwrap().assert_problem(403);
    } else {
        eprintln!("::1 is not available here; the IPv6 listener part is not exercised");
    }
}

#[test]
fn ip_rules_use_the_client_address_vouched_for_by_a_trusted_proxy() {
    let up = Upstream::start();
    let gw = Gateway::start_with(
        &format!(
            r#"
{fixture}
ip_allow = ["2001:db8::/32"]
ip_deny = ["2001:db8:bad::/48"]

[[routes]]
name = "v4-only"
path_prefix = "/v4"
upstream = "app"
public = true
ip_allow = ["198.51.100.0/24"]
ip_deny = ["198.51.100.66"]
"#,
            fixture = public_route(up.addr, "v6-only", "/v6")
        ),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let with_xff = |path: &str, xff: &str| {
        gw.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
        ))
        .status
    };
    assert_eq!(with_xff("/v6/a", "2001:db8::1"), 200);
    assert_eq!(
        with_xff("/v6/a", "2001:db8:bad::1"),
        403,
        "deny wins over allow"
    );
    assert_eq!(with_xff("/v6/a", "203.0.113.5"), 403);
    assert_eq!(with_xff("/v4/a", "198.51.100.9"), 200);
    assert_eq!(
        with_xff("/v4/a", "::ffff:198.51.100.9"),
        200,
        "IPv4-mapped IPv6 is IPv4"
    );
    assert_eq!(with_xff("/v4/a", "::ffff:198.51.100.66"), 403);
    assert_eq!(with_xff("/v4/a", "198.51.100.66"), 403);
    // The rightmost untrusted hop counts: a client cannot prepend an allowed address.
    assert_eq!(with_xff("/v4/a", "198.51.100.9, 203.0.113.7"), 403);
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn trace_context_is_kept_when_valid_and_started_when_not() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let get = |headers: &str| {
        gw.raw(&format!(
            "GET /public/t HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        ))
    };

    // Kept: the upstream gets the client's trace, tracestate alongside; the log names it.
    let r = get(&format!(
        "traceparent: {valid}\r\ntracestate: vendor=abc\r\ntracestate: other=1\r\n"
    ));
    assert_eq!(r.status, 200);
    let seen = up.requests().pop().expect("forwarded");
    assert_eq!(seen.header_count("traceparent"), 1);
    assert_eq!(seen.header("traceparent"), Some(valid));
    assert_eq!(seen.header("tracestate"), Some("vendor=abc,other=1"));
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(
        gw.access_line(&id)["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    // Malformed (upper-case hex, a script, two headers, an all-zero id): replaced by a new
    // trace whose id is the request id; the bad value and its tracestate are not passed on.
    for bad in [
        "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\r\n".to_string(),
        "traceparent: <script>alert(1)</script>\r\n".to_string(),
        format!("traceparent: {valid}\r\ntraceparent: {valid}\r\n"),
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n".to_string(),
    ] {
        up.clear();
        let r = get(&format!("{bad}tracestate: vendor=abc\r\n"));
        assert_eq!(r.status, 200, "{bad}");
        let seen = up.requests().pop().expect("forwarded");
        assert_eq!(seen.header_count("traceparent"), 1, "{bad}");
        let sent = seen.header("traceparent").unwrap();
        let id = r.header("x-request-id").unwrap();
        assert!(
            sent.starts_with(&format!("00-{id}-")) && sent.ends_with("-01") && sent.len() == 55,
            "{bad} became {sent}"
        );
        assert_ne!(sent, valid);
        assert_eq!(seen.header("tracestate"), None, "{bad}");
        assert_eq!(gw.access_line(id)["trace_id"], id);
    }

    // None sent: one is started all the same.
    up.clear();
    let r = get("");
    let seen = up.requests().pop().expect("forwarded");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(seen.header("traceparent").map(|t| &t[3..35]), Some(id));

    // A refused request is logged with its trace id too; the upstream saw nothing.
    up.clear();
    let r = gw.raw(&format!(
        "GET /admin/x HTTP/1.1\r\nHost: x\r\ntraceparent: {valid}\r\nConnection: close\r\n\r\n"
    ));
    r.assert_problem(401);
    assert!(up.requests().is_empty());
    let id = r.header("x-request-id").unwrap();
    assert_eq!(
        gw.access_line(id)["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

/// The harness waits for a gateway by the ownership of its listening sockets: a port another
/// process took between the harness's choice and the gateway's bind is not mistaken for ours.
#[test]
fn the_harness_tells_whose_listener_a_port_is() {
    let up = Upstream::start();
    let gw = Gateway::start(&routes(&up));
    let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mine.local_addr().unwrap().port();
    assert!(owns_listener(std::process::id(), port));
    assert!(!owns_listener(gw.pid(), port));
    assert!(owns_listener(gw.pid(), gw.port));
    assert!(owns_listener(gw.pid(), gw.metrics_port));
    drop(mine);
    assert!(!owns_listener(std::process::id(), port));
}

#[test]
fn trace_context_from_trusted_proxies_only_when_configured() {
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ask = format!(
        "GET /public/t HTTP/1.1\r\nHost: x\r\ntraceparent: {valid}\r\ntracestate: v=1\r\nConnection: close\r\n\r\n"
    );
    // The client (127.0.0.1) is not a trusted proxy: its trace is not joined.
    let up = Upstream::start();
    let gw = Gateway::start_with(
        &routes(&up),
        "trace_context = \"trusted_proxies\"\ntrusted_proxies = [\"192.0.2.0/24\"]",
    );
    let r = gw.raw(&ask);
    assert_eq!(r.status, 200);
    let seen = up.requests().pop().expect("forwarded");
    let id = r.header("x-request-id").unwrap();
    let sent = seen.header("traceparent").unwrap();
    assert!(sent.starts_with(&format!("00-{id}-")), "{sent}");
    assert_eq!(seen.header("tracestate"), None);
    assert_eq!(gw.access_line(id)["trace_id"], id);
    // The same request from a trusted proxy keeps its trace.
    let up = Upstream::start();
    let gw = Gateway::start_with(
        &routes(&up),
        "trace_context = \"trusted_proxies\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    assert_eq!(gw.raw(&ask).status, 200);
    let seen = up.requests().pop().expect("forwarded");
    assert_eq!(seen.header("traceparent"), Some(valid));
    assert_eq!(seen.header("tracestate"), Some("v=1"));
}
