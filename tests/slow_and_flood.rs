//! Slow and flood attacks against the real gateway on loopback, each bounded in count and
//! time: slowloris heads (cut by `limits.header_read_timeout`), slow bodies, thousands of idle
//! connections, header floods (431 before any upstream contact), and slowhttptest as a real
//! attacker.

mod harness;

use harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config(up: &Upstream, limits: &str) -> String {
    format!(
        r#"
[limits]
{limits}

{fixture}"#,
        fixture = public_route(up.addr, "public", "/public")
    )
}

/// Read until the gateway closes the connection (or `limit` passes); returns what was read
/// and how long it took. A reset counts as closed.
#[test]
fn slowloris_heads_are_cut_at_the_header_read_timeout() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, r#"header_read_timeout = "1s""#));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /public/slow HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // One header line every 200 ms: each read is quick, the head never ends.
    let mut closed_after = None;
    for i in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        if stream
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .is_err()
        {
            closed_after = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(1));
        if closed.is_some() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the gateway kept a trickling head open for 5 s");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    // A client that sends its head at once is served, on a new connection and on a kept-alive
    // one after a pause longer than the deadline (idle time between requests is not timed).
    let mut keep = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        keep.write_all(b"GET /public/ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut keep).map(|r| r.status), Some(200));
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert_eq!(up.seen().len(), 2);
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, r#"header_read_timeout = "1s""#));
    let mut silent = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let (bytes, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    let closed = closed.expect("an idle connection outlived the header deadline by 4 s");
    assert!(closed >= Duration::from_millis(900), "{closed:?}");
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    assert!(up.seen().is_empty());
}

#[test]
fn thousands_of_idle_connections_do_not_stop_service() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, r#"header_read_timeout = "2s""#));
    let mut idle = Vec::with_capacity(2000);
    let started = Instant::now();
    while idle.len() < 2000 && started.elapsed() < Duration::from_secs(20) {
        match TcpStream::connect(("127.0.0.1", gw.port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
    }
    assert_eq!(idle.len(), 2000);
    // With 2,000 idle connections open, others are served promptly.
    for i in 0..20 {
        let t = Instant::now();
        let r = gw.get(&format!("/public/busy/{i}"));
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // And the idle ones are closed at the deadline (from when each was accepted), not kept
    // for Pingora's 60 s.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut still_open = 0;
    for s in idle.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if read_until_closed(s, left.max(Duration::from_millis(1)))
            .1
            .is_none()
        {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "idle connections still open 8 s after the deadline"
    );
    assert_eq!(up.seen().len(), 20);
}

#[test]
fn header_floods_get_431_without_upstream_contact() {
    let up = Upstream::start();
    // The default limits: 100 headers, 32 KiB of headers.
    let gw = Gateway::start(&config(&up, ""));
    let mut many = String::from("GET /public/flood HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-Flood-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let v = gw.raw(&many).assert_problem(431);
    assert!(v["detail"].as_str().unwrap_or("").contains("header"), "{v}");

    let big = format!(
        "GET /public/flood HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    gw.raw(&big).assert_problem(431);

    // Many small headers adding up to more than 32 KiB.
    let mut wide = String::from("GET /public/flood HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..90 {
        wide.push_str(&format!("X-W{i}: {}\r\n", "w".repeat(400)));
    }
    wide.push_str("\r\n");
    gw.raw(&wide).assert_problem(431);
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    assert_eq!(gw.get("/public/after").status, 200);
    assert_eq!(up.seen().len(), 1);
}

#[test]
fn slow_bodies_on_streamed_routes_do_not_hold_the_upstream_forever() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, r#"body_read_timeout = "1s""#));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .write_all(b"POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nstart")
        .unwrap();
    // The client stops sending; the gateway gives up on it after body_read_timeout.
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let r = read_response(&mut stream).expect("an answer within 8 s");
    let waited = started.elapsed();
    r.assert_problem(408);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(2));
    assert!(closed.is_some(), "the connection stayed open");
    assert!(
        wait_until(Duration::from_secs(3), || gw
            .access_log()
            .contains(r#""decision":"body_timeout""#)),
        "{}",
        gw.access_log()
    );
    // The upstream saw the head and the bytes that came, never a complete 100-byte body.
    assert!(
        up.seen().iter().all(|s| s.body.len() < 100),
        "{:?}",
        up.seen()
    );
}

/// slowhttptest's slowloris mode: 300 connections that each send one more header line a
/// second, against a 2 s head deadline.
#[test]
fn slowhttptest_slowloris_is_survived() {
    if !std::process::Command::new("slowhttptest")
        .arg("-h")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    {
        panic!(
            "slowhttptest is not installed: run `bash .ci/deps` (apt-get install -y slowhttptest)"
        );
    }
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, r#"header_read_timeout = "2s""#));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let url = format!("http://127.0.0.1:{}/public/attack", gw.port);
    let attacker = std::process::Command::new("slowhttptest")
        .args([
            "-H", "-c", "300", "-r", "150", "-i", "1", "-l", "8", "-p", "2", "-g",
        ])
        .arg("-o")
        .arg(&report)
        .args(["-u", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start slowhttptest");
    // Meanwhile, ordinary clients are served.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(300));
        let r = gw.get("/public/meanwhile");
        assert_eq!(r.status, 200, "during the attack");
        served += 1;
    }
    let out = attacker.wait_with_output().expect("slowhttptest ran");
    let csv = std::fs::read_to_string(report.with_extension("csv")).unwrap_or_else(|e| {
        panic!(
            "no slowhttptest report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    // slowhttptest ends early when the server has closed every one of its connections; it
    // would hit its 8 s limit if the gateway kept them open.
    assert!(
        stdout.contains("No open connections left"),
        "slowhttptest still had connections open at its time limit: {csv}"
    );
    // Columns: seconds, closed, pending, connected, service available (0 when its probe
    // connection failed).
    let rows: Vec<Vec<u64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|r: &Vec<u64>| r.len() == 5)
        .collect();
    assert!(rows.len() >= 3, "too short a report: {csv}");
    assert!(
        rows.iter().any(|r| r[1] >= 250),
        "the report never shows the slowloris connections closed: {csv}"
    );
    assert!(
        rows.iter().all(|r| r[4] > 0),
        "slowhttptest saw the service unavailable: {csv}"
    );
    assert!(served >= 15, "{served}");
    // No slowloris request reached the upstream: besides the ordinary requests, only
    // slowhttptest's availability probes (complete requests, about one a second) did.
    let seen = up.seen();
    let ordinary = seen.iter().filter(|s| s.uri == "/public/meanwhile").count();
    let attack = seen.iter().filter(|s| s.uri == "/public/attack").count();
    assert_eq!(ordinary, served);
    assert_eq!(ordinary + attack, seen.len());
    assert!(
        attack <= 10,
        "{attack} attack requests reached the upstream"
    );
}
