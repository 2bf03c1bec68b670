//! Hostile and malformed input over raw sockets: whatever arrives, the gateway answers or
//! closes, never panics, never forwards what it refused, and keeps serving everyone else.

mod harness;

use harness::*;
use std::io::Write;
use std::time::Duration;

fn send_and_drain(port: u16, payload: &[u8]) -> Vec<u8> {
    raw_exchange(port, payload, true, Duration::from_secs(3))
}

#[test]
fn malformed_requests_never_crash_or_leak_through() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&public_route(up.addr, "public", "/public"));
    let long_header = format!(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = {
        let mut s = String::from("GET /public HTTP/1.1\r\nHost: x\r\n");
        for i in 0..300 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s + "\r\n"
    };
    let payloads: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03garbage\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\n".to_vec(),
        b"GET /public\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_vec(),
        b"FOO /public HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\xfe\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\n folded: header\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\nHost: x\n\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n".to_vec(),
        b"POST /public HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET /public/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: \r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /public HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        long_header.into_bytes(),
        many_headers.into_bytes(),
        vec![b'A'; 2 * 1024 * 1024],
    ];
    for payload in &payloads {
        let response = send_and_drain(gw.port, payload);
        if let Some(status) = status_of(&response) {
            assert!(
                status == 200 || (400..500).contains(&status),
                "unexpected {status} for {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(80)])
            );
        }
        assert!(
            gw.is_running(),
            "gateway died on {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(80)])
        );
    }
    // Absolute-form: the upstream is told the host that routing used.
    up.clear();
    let r = gw.raw("GET http://api.example.com/public/abs HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/public/abs");
    assert_eq!(seen.header("host"), Some("api.example.com"));
    // Still serving, and no panic was logged.
    assert_eq!(gw.get("/public/after").status, 200);
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
    // Nothing refused reached the upstream with a smuggled second request.
    assert!(up.requests().iter().all(|s| !s.uri.contains("smuggled")));
}

#[test]
fn the_default_config_runs_with_its_demo_upstream() {
    // The shipped config, on free ports so that it cannot collide with anything.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/portcullis.toml"))
            .unwrap();
    let echo = free_port();
    let tls = free_port();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/demo/");
    // The harness writes [server], the first listener, [metrics] and [logging] itself.
    let body = shipped
        .split("[security]")
        .nth(1)
        .map(|rest| format!("[security]{rest}"))
        .unwrap()
        .replace("127.0.0.1:9080", &format!("127.0.0.1:{echo}"))
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{tls}"))
        .replace("\"demo/", &format!("\"{demo}"))
        .replace(
            "\"schemas/",
            concat!("\"", env!("CARGO_MANIFEST_DIR"), "/conf/schemas/"),
        );
    let gw = Gateway::start(&body);
    // The health check of the demo upstream must pass before requests go through reliably.
    assert!(wait_until(Duration::from_secs(10), || gw
        .get("/public/hello")
        .status
        == 200));
    // The route allows 5 requests a second per client: let the polling above age out.
    std::thread::sleep(Duration::from_millis(2100));
    let r = gw.get("/public/hello?name=world");
    let v = r.json();
    assert_eq!(v["service"], "portcullis demo echo");
    assert_eq!(v["path"], "/public/hello");
    assert_eq!(v["query"], "name=world");
    let r = gw.raw(
        "POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    let v = r.json();
    assert_eq!(v["path"], "/x");
    assert_eq!(v["body"], "hello");
    gw.get("/v1/orders").assert_problem(401);
    gw.raw("DELETE /public/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .assert_problem(405);
    // The demo credentials the README shows.
    let r = gw.raw(
        "GET /v1/orders HTTP/1.1\r\nHost: x\r\nX-API-Key: demo-key-DO-NOT-USE-IN-PRODUCTION-0001\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.json()["headers"].to_string().contains("demo-app"),
        "{}",
        r.text()
    );
    let token = std::fs::read_to_string(format!("{demo}demo-token.jwt")).unwrap();
    let r = gw.raw(&format!(
        "GET /v1/reports/daily HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["headers"].to_string().contains("demo-user"));
    // The validated route.
    let feedback = |body: &str| {
        gw.raw(&format!(
            "POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    assert_eq!(
        feedback(r#"{"email":"a@example.com","rating":5}"#).status,
        200
    );
    feedback(r#"{"email":"a@example.com","rating":9}"#).assert_problem(422);
    feedback(r#"{"email":"a@example.com","rating":5,"comment":"<script>alert(1)</script>"}"#)
        .assert_problem(400);
}

/// Requests Pingora refuses before the gateway sees them (a head it cannot parse, `CONNECT`)
/// get the same problem+json, access-log line and metrics as every other refusal.
#[test]
fn requests_pingora_refuses_itself_get_problem_json_and_are_logged() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_route(up.addr, "public", "/"));
    let cases: [(&str, u16, &str); 4] = [
        (
            "GET /public HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            "GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab",
            400,
            "malformed_request",
        ),
        (
            "GET /public HTTP/1.1\r\nHost: x\r\nX-\x01Bad: v\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            405,
            "method_not_allowed",
        ),
    ];
    let mut ids = Vec::new();
    for (request, status, _) in &cases {
        let r = gw.raw(request);
        let v = r.assert_problem(*status);
        assert_eq!(r.header("connection"), Some("close"), "{request:?}");
        ids.push(v["request_id"].as_str().unwrap_or_default().to_string());
    }
    // Each has its access-log line, with its request id and decision.
    let log = |id: &str| {
        gw.access_log()
            .lines()
            .find(|l| l.contains(id))
            .map(str::to_string)
    };
    assert!(
        wait_until(Duration::from_secs(3), || ids
            .iter()
            .all(|id| log(id).is_some())),
        "{}",
        gw.access_log()
    );
    for ((_, status, reason), id) in cases.iter().zip(&ids) {
        let line: serde_json::Value = serde_json::from_str(&log(id).unwrap_or_default()).unwrap();
        assert_eq!(line["status"], *status);
        assert_eq!(line["decision"], *reason);
        assert_eq!(line["route"], "unmatched");
        assert_eq!(line["client_ip"], "127.0.0.1");
    }
    assert_eq!(
        gw.metric(
            "portcullis_refusals_total",
            &[("route", "unmatched"), ("reason", "malformed_request")]
        ),
        Some(3.0)
    );
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    // A well-formed request on the next connection is the gateway's again, untouched.
    assert_eq!(gw.get("/public/ok").status, 200);
    assert_eq!(up.seen().len(), 1);
    // On a kept-alive connection: a good request, then one Pingora cannot parse.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /public/first HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).map(|r| r.status), Some(200));
    stream
        .write_all(b"GET /public/second HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        .unwrap();
    let second = read_response(&mut stream).expect("an answer to the second request");
    second.assert_problem(400);
    assert_eq!(up.seen().len(), 2);
}

/// Only Pingora's own 400 and 405 are rewritten as problem+json: an upstream's 400 and 405 reach
/// the client as the upstream sent them, on a fresh connection and on a kept-alive one.
#[test]
fn an_upstreams_own_400_and_405_pass_unchanged() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_route(up.addr, "public", "/"));
    let assert_upstreams = |r: &HttpResponse, code: u16| {
        assert_eq!(r.status, code, "{}", r.text());
        assert_eq!(r.text(), format!("the upstream's own {code}"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("x-upstream"), Some("test"));
        assert_eq!(r.header("allow"), Some("GET"));
    };
    for code in [400, 405] {
        let r = gw.get(&format!("/a/status/{code}"));
        assert_upstreams(&r, code);
        let id = r.header("x-request-id").expect("a request id").to_string();
        // Logged as forwarded, with the upstream's status.
        let mut line = serde_json::Value::Null;
        assert!(wait_until(Duration::from_secs(3), || {
            line = gw
                .access_log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["request_id"] == id.as_str())
                .unwrap_or_default();
            !line.is_null()
        }));
        assert_eq!(line["decision"], "allow", "{line}");
        assert_eq!(line["upstream_status"], code, "{line}");
        assert_eq!(line["status"], code, "{line}");
    }
    assert_eq!(up.seen().len(), 2);
    // Two in a row on one kept-alive connection, then an ordinary request on it.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for code in [405, 400] {
        stream
            .write_all(format!("GET /b/status/{code} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut stream).expect("an answer");
        assert_upstreams(&r, code);
    }
    stream
        .write_all(b"GET /b/after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).map(|r| r.status), Some(200));
    assert_eq!(up.seen().len(), 5);
}
