//! Body validation (SPEC §3 step 9) against the real gateway and a real upstream that records
//! every body: sizes around Pingora's 64 KiB retry buffer arrive byte for byte, with
//! Content-Length and chunked; every refusal happens before the upstream is contacted.

mod harness;

use harness::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn start(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
[limits]
max_body_bytes = "2MiB"
body_read_timeout = "1s"
max_json_depth = 32

{fixture}
validate = {{ content_types = ["application/json"], json_schema = "{order}" }}

[[routes]]
name = "people"
path_prefix = "/people"
upstream = "app"
public = true
validate = {{ json_schema = "{draft7}", max_body_bytes = "1KiB" }}

[[routes]]
name = "blobs"
path_prefix = "/blobs"
upstream = "app"
public = true
validate = {{ content_types = ["application/octet-stream"] }}
"#,
        fixture = public_route(up.addr, "orders", "/orders"),
        order = data("schemas/order.json"),
        draft7 = data("schemas/draft7.json"),
    ))
}

fn post(path: &str, content_type: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
    )
    .into_bytes();
    if chunked {
        request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(10_000) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
    } else {
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
    }
    request
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn bodies_of_every_size_arrive_byte_for_byte() {
    let up = Upstream::start();
    let gw = start(&up);
    for size in [
        1usize,
        1024,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        1024 * 1024,
        2 * 1024 * 1024,
    ] {
        for chunked in [false, true] {
            up.clear();
            let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let r = raw_request(
                gw.port,
                &post("/blobs/x", "application/octet-stream", &body, chunked),
            );
            assert_eq!(r.status, 200, "size {size} chunked {chunked}: {}", r.text());
            let seen = up.requests();
            assert_eq!(seen.len(), 1, "size {size} chunked {chunked}");
            assert_eq!(seen[0].body.len(), size, "size {size} chunked {chunked}");
            assert_eq!(
                sha(&seen[0].body),
                sha(&body),
                "size {size} chunked {chunked}"
            );
        }
    }
    // An empty body is simply forwarded.
    up.clear();
    assert_eq!(
        raw_request(
            gw.port,
            &post("/blobs/x", "application/octet-stream", b"", false)
        )
        .status,
        200
    );
    assert_eq!(up.requests()[0].body.len(), 0);
}

#[test]
fn json_bodies_are_validated_then_forwarded_unchanged() {
    let up = Upstream::start();
    let gw = start(&up);
    // Spacing and key order are the client's: the upstream gets exactly these bytes.
    let body = br#"{ "items":[{"sku":"a-1","qty":2}],  "email":"ann@example.com", "id":7 }"#;
    let r = raw_request(
        gw.port,
        &post("/orders", "application/json; charset=utf-8", body, false),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].body, body);
    // Big valid JSON, past the retry buffer, chunked.
    up.clear();
    let note = "n".repeat(300 * 1024);
    let big = format!(r#"{{"id":1,"email":"b@example.com","items":[],"note":"{note}"}}"#);
    let r = raw_request(
        gw.port,
        &post("/orders", "application/json", big.as_bytes(), true),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha(&up.requests()[0].body), sha(big.as_bytes()));
    // Draft 7 schema.
    up.clear();
    assert_eq!(
        raw_request(
            gw.port,
            &post("/people", "application/json", br#"{"name":"Zoe"}"#, false)
        )
        .status,
        200
    );
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn invalid_bodies_are_refused_before_the_upstream() {
    let up = Upstream::start();
    let gw = start(&up);
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/orders",
            "text/plain",
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/orders",
            "application/json; charset=iso-8859-1",
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/orders",
            "application/json",
            b"{\"id\": ".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "/orders",
            "application/json",
            deep.into_bytes(),
            400,
            "json_too_deep",
        ),
        (
            "/orders",
            "application/json",
            b"{\"id\": \"\xff\xfe\"}".to_vec(),
            400,
            "invalid_utf8",
        ),
        (
            "/orders",
            "application/json",
            br#"{"id":1,"id":2,"email":"a@b.co","items":[]}"#.to_vec(),
            400,
            "json_duplicate_key",
        ),
        (
            "/people",
            "application/json",
            vec![b' '; 2000],
            413,
            "body_too_large",
        ),
    ];
    for (path, content_type, body, status, reason) in cases {
        for chunked in [false, true] {
            let r = raw_request(gw.port, &post(path, content_type, &body, chunked));
            r.assert_problem(status);
            assert!(
                gw.wait_metric(
                    "portcullis_validation_rejections_total",
                    &[("reason", reason)],
                    1.0
                ) >= 1.0,
                "{reason}"
            );
        }
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn schema_violations_are_422_with_json_pointers() {
    let up = Upstream::start();
    let gw = start(&up);
    let check = |body: &str, expected: &[&str]| {
        let r = raw_request(
            gw.port,
            &post("/orders", "application/json", body.as_bytes(), false),
        );
        let v = r.assert_problem(422);
        let detail = v["detail"].as_str().unwrap().to_string();
        for e in expected {
            assert!(detail.contains(e), "{e:?} not in {detail:?}");
        }
    };
    check(r#"{"email":"a@b.co","items":[]}"#, &["/: required"]);
    check(
        r#"{"id":"seven","email":"a@b.co","items":[]}"#,
        &["/id: type"],
    );
    check(
        r#"{"id":1,"email":"a@b.co","items":[],"admin":true}"#,
        &["/: additionalProperties"],
    );
    check(
        r#"{"id":1,"email":"not-an-email","items":[]}"#,
        &["/email: format"],
    );
    check(
        r#"{"id":1,"email":"a@b.co","items":[{"sku":"x","qty":0}]}"#,
        &["/items/0/qty: minimum"],
    );
    // At most ten violations are listed.
    let many: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"sku":{i},"qty":"x"}}"#))
        .collect();
    let body = format!(
        r#"{{"id":1,"email":"a@b.co","items":[{}]}}"#,
        many.join(",")
    );
    let r = raw_request(
        gw.port,
        &post("/orders", "application/json", body.as_bytes(), false),
    );
    let detail = r.assert_problem(422)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(detail.matches("/items/").count(), 10, "{detail}");
    // For programs: an `errors` array (RFC 9457 §3), at most ten entries, each with a JSON
    // pointer, the keyword and what the rule asks, naming an unexpected member but never
    // echoing a value the client sent.
    let body =
        r#"{"id":"sk_live_S3CRET","email":"a@b.co","items":[],"admin":"<script>x</script>"}"#;
    let r = raw_request(
        gw.port,
        &post("/orders", "application/json", body.as_bytes(), false),
    );
    let v = r.assert_problem(422);
    let errors = v["errors"].as_array().expect("an errors array");
    assert!(!errors.is_empty() && errors.len() <= 10, "{errors:?}");
    let entry = |pointer: &str, keyword: &str| {
        errors
            .iter()
            .find(|e| e["pointer"] == pointer && e["keyword"] == keyword)
            .unwrap_or_else(|| panic!("no {pointer} {keyword} in {errors:?}"))["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(entry("#/id", "type"), "must be of type integer");
    assert!(entry("#", "additionalProperties").contains("\"admin\""));
    let text = r.text();
    assert!(
        !text.contains("S3CRET") && !text.contains("<script>"),
        "{text}"
    );
    assert!(up.requests().is_empty());
}

#[test]
fn oversized_and_slow_bodies_are_cut_off_without_the_upstream() {
    let up = Upstream::start();
    let gw = start(&up);
    // Declared too large: refused before the body is read.
    let head = "POST /blobs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2097153\r\n\r\n";
    gw.raw(head).assert_problem(413);
    // Chunked and crossing the limit: refused as soon as it is crossed.
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /blobs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let piece = vec![b'z'; 64 * 1024];
    let mut sent = 0;
    // Keep sending (bounded) until the gateway answers or stops reading.
    while sent < 3 * 1024 * 1024 {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += piece.len();
    }
    let r = read_response(&mut stream).expect("a 413");
    r.assert_problem(413);
    // Half a body, then silence: cut off after body_read_timeout.
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /blobs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nhalf")
        .unwrap();
    let started = Instant::now();
    let r = read_response(&mut stream).expect("a 408");
    r.assert_problem(408);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn keep_alive_and_expect_continue_work_on_validated_routes() {
    let up = Upstream::start();
    let gw = start(&up);
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = br#"{"id":1,"email":"a@b.co","items":[]}"#;
    for i in 0..3 {
        let head = format!(
            "POST /orders/{i} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let r = read_response(&mut stream).expect("a response");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(up.requests().len(), 3);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Expect: 100-continue gets its 100 before the body is read.
    up.clear();
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let interim = read_response(&mut stream).expect("100 Continue");
    assert_eq!(interim.status, 100);
    stream.write_all(body).unwrap();
    let r = read_response(&mut stream).expect("final response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].body, body);
    assert!(up.requests()[0].header("expect").is_none());
}

#[test]
fn a_body_broken_off_by_the_client_is_refused_before_the_upstream() {
    let up = Upstream::start();
    let gw = start(&up);
    for (framing, partial) in [
        ("Content-Length: 1000\r\n", &b"{\"id\":1,"[..]),
        (
            "Transfer-Encoding: chunked\r\n",
            &b"8\r\n{\"id\":1,\r\n"[..],
        ),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /orders/cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(partial).unwrap();
        // The client stops sending for good (half-close): the body can never be complete.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let started = Instant::now();
        let r = read_response(&mut stream).expect("an answer to a broken-off body");
        r.assert_problem(400);
        assert!(started.elapsed() < Duration::from_secs(1), "{framing}");
    }
    assert!(
        wait_until(Duration::from_secs(3), || gw
            .access_log()
            .matches(r#""decision":"body_unreadable""#)
            .count()
            == 2),
        "{}",
        gw.access_log()
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}
