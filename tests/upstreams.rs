//! Upstream behaviour against real servers: connection pooling, failover on health checks,
//! and the 502 / 503 / 504 answers.

mod harness;

use harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn closed_port_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn keep_alive_requests_reuse_pooled_upstream_connections() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_route(up.addr, "all", "/"));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let total = 2000;
    for i in 0..total {
        stream
            .write_all(format!("GET /item/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut stream).expect("a response");
        assert_eq!(r.status, 200, "request {i}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bounded in time"
        );
    }
    assert_eq!(up.requests().len(), total);
    let opened = up.connections.load(Ordering::SeqCst);
    // The target: at least 99.9 % of requests on a reused connection.
    assert!(
        opened * 1000 <= total,
        "{opened} upstream connections for {total} sequential requests (reuse below 99.9 %)"
    );
    let reused = gw.wait_metric(
        "portcullis_upstream_connections_total",
        &[("upstream", "app"), ("reused", "true")],
        (total - opened) as f64,
    );
    let fresh = gw
        .metric(
            "portcullis_upstream_connections_total",
            &[("upstream", "app"), ("reused", "false")],
        )
        .expect("the first request opened a connection");
    assert_eq!(reused + fresh, total as f64);
    assert!(
        fresh * 1000.0 <= total as f64,
        "fresh connections counted: {fresh}"
    );
}

/// Sends `count` requests to `path` and returns how many each upstream saw.
fn spread(gw: &Gateway, ups: [&Upstream; 2], path: &str, count: usize) -> [usize; 2] {
    for u in ups {
        u.clear();
    }
    for i in 0..count {
        let r = gw.get(&format!("{path}/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    ups.map(|u| u.requests().len())
}

#[test]
fn round_robin_over_two_live_targets_and_a_target_recovers() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let gw = Gateway::start(&format!(
        r#"
[[upstreams]]
name = "pair"
targets = ["{a}", "{b}"]
health_check = {{ path = "/healthz", interval = "200ms" }}

[[routes]]
name = "pair"
path_prefix = "/pair"
upstream = "pair"
public = true
"#,
        a = a.addr,
        b = b.addr,
    ));
    let healthy = |u: &Upstream| {
        gw.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "pair"), ("target", &u.addr.to_string())],
        )
    };
    assert_eq!(
        spread(&gw, [&a, &b], "/pair", 20),
        [10, 10],
        "strict alternation"
    );

    // b fails its health checks: everything goes to a.
    b.failing_health.store(true, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || healthy(&b) == Some(0.0)));
    assert_eq!(healthy(&a), Some(1.0));
    assert_eq!(spread(&gw, [&a, &b], "/pair/degraded", 10), [10, 0]);

    // b passes again: it is marked healthy and gets its share back.
    b.failing_health.store(false, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || healthy(&b) == Some(1.0)));
    assert_eq!(spread(&gw, [&a, &b], "/pair/recovered", 20), [10, 10]);
}

#[test]
fn failover_to_the_healthy_target_then_503_when_all_are_down() {
    let up = Upstream::start();
    let dead = closed_port_addr();
    let gw = Gateway::start(&format!(
        r#"
[[upstreams]]
name = "pair"
targets = ["{live}", "{dead}"]
connect_timeout = "500ms"
health_check = {{ path = "/healthz", interval = "200ms" }}

[[upstreams]]
name = "gone"
targets = ["{dead}", "{dead2}"]
connect_timeout = "500ms"
health_check = {{ path = "/healthz", interval = "200ms" }}

[[routes]]
name = "pair"
path_prefix = "/pair"
upstream = "pair"
public = true

[[routes]]
name = "gone"
path_prefix = "/gone"
upstream = "gone"
public = true
"#,
        live = up.addr,
        dead2 = closed_port_addr(),
    ));
    // Even before the health check has marked the dead target, a refused connection is retried
    // on the other target; after it, the dead one is skipped altogether.
    for i in 0..20 {
        let r = gw.get(&format!("/pair/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "pair"), ("target", dead.as_str())],
        ) == Some(0.0)
    }));
    for i in 0..20 {
        assert_eq!(gw.get(&format!("/pair/after/{i}")).status, 200);
    }
    assert_eq!(up.requests().len(), 40);
    assert_eq!(
        gw.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "pair"), ("target", &up.addr.to_string())]
        ),
        Some(1.0)
    );

    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric(
            "portcullis_upstream_target_healthy",
            &[("upstream", "gone")],
        ) == Some(0.0)
    }));
    let r = gw.get("/gone/x");
    let problem = r.assert_problem(503);
    assert!(problem["detail"].as_str().unwrap().contains("healthy"));
}

#[test]
fn unreachable_target_without_health_check_is_502() {
    let gw = Gateway::start(&format!(
        r#"
[[upstreams]]
name = "down"
targets = ["{}"]
connect_timeout = "500ms"

[[routes]]
name = "down"
path_prefix = "/"
upstream = "down"
public = true
"#,
        closed_port_addr()
    ));
    gw.get("/x").assert_problem(502);
    let mut log = String::new();
    assert!(wait_until(Duration::from_secs(5), || {
        log = gw.access_log();
        !log.is_empty()
    }));
    assert!(log.contains("\"decision\":\"upstream_error\""), "{log}");
}

#[test]
fn an_upstream_that_never_answers_is_504_within_read_timeout() {
    let silent = Silent::start();
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        r#"
[[upstreams]]
name = "silent"
targets = ["{silent}"]
read_timeout = "700ms"

[[upstreams]]
name = "slow"
targets = ["{slow}"]
read_timeout = "700ms"

[[routes]]
name = "silent"
path_prefix = "/silent"
upstream = "silent"
public = true

[[routes]]
name = "slow"
path_prefix = "/slow"
upstream = "slow"
public = true
"#,
        silent = silent.addr,
        slow = up.addr,
    ));
    let started = Instant::now();
    gw.get("/silent/x").assert_problem(504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "gave up too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let started = Instant::now();
    gw.get("/slow/3000").assert_problem(504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(gw.get("/slow/10").status, 200, "a fast answer still passes");
    assert_eq!(
        gw.wait_metric(
            "portcullis_requests_total",
            &[("route", "silent"), ("status", "504")],
            1.0
        ),
        1.0
    );
}

/// SPEC §3 step 11 and `[response]`: what upstream software says of itself (`Server`,
/// `X-Powered-By`, the ASP.NET versions) is removed on the way back, whatever its case;
/// `nosniff` is added where the upstream did not say it, `Cache-Control: no-store` on an
/// authenticated route where the upstream set none, and the configured headers, the route's
/// over the global ones. The upstream's other headers and its body pass.
#[test]
fn upstream_responses_are_hardened_as_configured() {
    let up = Upstream::start();
    let key = "k-0123456789abcdef0123456789abcdef";
    let gw = Gateway::start(&format!(
        r#"
[response]
headers = {{ "Referrer-Policy" = "no-referrer", "X-Frame-Options" = "DENY" }}

[[upstreams]]
name = "app"
targets = ["{up}"]

[[consumers]]
id = "ops"
api_keys = ["{hash}"]

[[routes]]
name = "open"
path_prefix = "/open"
upstream = "app"
public = true

[[routes]]
name = "own"
path_prefix = "/own"
upstream = "app"
public = true
response = {{ nosniff = false, headers = {{ "x-frame-options" = "SAMEORIGIN", "Content-Security-Policy" = "default-src 'none'" }} }}

[[routes]]
name = "keyed"
path_prefix = "/keyed"
upstream = "app"
auth = ["api_key"]
allow = {{ consumers = ["ops"] }}
"#,
        up = up.addr,
        hash = portcullis::keys::config_hash(key),
    ));
    let r = gw.get("/open/banners");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"banners");
    for name in [
        "Server",
        "X-Powered-By",
        "X-AspNet-Version",
        "X-AspNetMvc-Version",
    ] {
        assert_eq!(r.header(name), None, "{name} in {:?}", r.headers);
    }
    assert_eq!(r.header("X-Upstream"), Some("test"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(r.header("Referrer-Policy"), Some("no-referrer"));
    assert_eq!(
        r.header("Cache-Control"),
        None,
        "a public route is cacheable"
    );

    let own = gw.get("/own/x");
    assert_eq!(own.status, 200);
    assert_eq!(own.header("X-Content-Type-Options"), None);
    assert_eq!(own.header("X-Frame-Options"), Some("SAMEORIGIN"));
    assert_eq!(own.header("Referrer-Policy"), Some("no-referrer"));
    assert_eq!(
        own.header("Content-Security-Policy"),
        Some("default-src 'none'")
    );

    let keyed = |path: &str| {
        gw.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        ))
    };
    let private = keyed("/keyed/x");
    assert_eq!(private.status, 200);
    assert_eq!(private.header("Cache-Control"), Some("no-store"));
    let cached = keyed("/keyed/cached");
    assert_eq!(cached.header("Cache-Control"), Some("public, max-age=60"));
    assert_eq!(
        cached
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-content-type-options"))
            .count(),
        1
    );
    assert_eq!(up.requests().len(), 4, "the upstream answered each");

    // The gateway's own answers name no server either, and reach no upstream.
    let refused = gw.get("/open/%2e%2e/%2e%2e/x");
    assert!(refused.status >= 400, "{}", refused.status);
    assert_eq!(refused.header("Server"), None, "{:?}", refused.headers);
    assert_eq!(up.requests().len(), 4);
}

/// `upstream_errors = "mask"`: an upstream 5xx body (an HTML stack trace here) is replaced by
/// the gateway's problem+json, status and `Retry-After` kept; other statuses, `HEAD` and
/// routes that pass errors are untouched.
#[test]
fn upstream_errors_are_masked_where_configured() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        r#"
[response]
upstream_errors = "mask"

[[upstreams]]
name = "app"
targets = ["{up}"]

[[routes]]
name = "masked"
path_prefix = "/masked"
upstream = "app"
public = true

[[routes]]
name = "passed"
path_prefix = "/passed"
upstream = "app"
public = true
response = {{ upstream_errors = "pass" }}
"#,
        up = up.addr,
    ));
    let r = gw.get("/masked/crash");
    let problem = r.assert_problem(503);
    let id = r.header("X-Request-Id").unwrap().to_string();
    assert_eq!(problem["request_id"], id.as_str());
    let text = r.text();
    for leak in ["java", "Tomcat", "Db.get", "html"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert_eq!(r.header("Retry-After"), Some("7"));
    assert_eq!(r.header("Set-Cookie"), None);
    assert_eq!(r.header("X-Upstream"), None);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(up.requests().len(), 1, "the request reached the upstream");
    let line = gw.access_line(&id);
    assert_eq!(line["status"], 503);
    assert_eq!(line["upstream_status"], 503);
    assert_eq!(line["upstream_body"], "masked");
    assert_eq!(
        gw.wait_metric(
            "portcullis_upstream_errors_masked_total",
            &[("route", "masked"), ("status", "503")],
            1.0
        ),
        1.0
    );
    // The connection stays usable: the masked body has its own length.
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for path in ["/masked/crash", "/masked/status/500", "/masked/x"] {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut stream).expect("an answer on the same connection");
        match path {
            "/masked/x" => assert_eq!(r.status, 200),
            _ => assert!(r.json()["detail"].as_str().unwrap().contains("withheld")),
        }
    }

    // Below 500 the upstream speaks for itself; HEAD has no body to hide.
    let r = gw.get("/masked/status/404");
    assert_eq!(
        (r.status, r.text()),
        (404, "the upstream's own 404".to_string())
    );
    let head = raw_exchange(
        gw.port,
        b"HEAD /masked/crash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    // A route that passes errors.
    let r = gw.get("/passed/crash");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("IllegalStateException"));
}
