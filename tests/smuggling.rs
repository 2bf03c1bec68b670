//! Request smuggling and framing over raw TCP against the real gateway: for each trick, the
//! gateway refuses or normalises, and the upstream never sees two requests where the client
//! sent one, nor a tunnel the route did not allow.

mod harness;

use harness::*;
use std::time::Duration;

fn start(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
{fixture}
threat_protection = "off"
rate_limit = {{ requests = 100000, per = "1s" }}

[[routes]]
name = "secret"
path_prefix = "/secret"
upstream = "app"
auth = ["api_key"]
allow = {{ consumers = ["*"] }}
"#,
        fixture = public_route(up.addr, "open", "/")
    ))
}

/// Send raw bytes, read whatever comes back until the server closes or goes quiet.
fn exchange(port: u16, payload: &[u8]) -> String {
    String::from_utf8_lossy(&raw_exchange(port, payload, false, Duration::from_secs(4)))
        .into_owned()
}

const SMUGGLED: &str = "GET /secret/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn framing_tricks_never_smuggle_a_second_request() {
    let up = Upstream::start();
    let gw = start(&up);
    let cases: Vec<(&str, String)> = vec![
        ("CL.TE", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("TE.CL", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len())),
        ("TE.TE case", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("TE.TE space", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("TE chunked, identity", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("TE twice", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("TE xchunked", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("CL twice differing", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n{SMUGGLED}")),
        ("CL not a number", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x2c\r\n\r\n{SMUGGLED}")),
        ("CL negative", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{SMUGGLED}")),
        ("chunk size overflow", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nA\r\n0\r\n\r\n{SMUGGLED}")),
        ("chunk extension", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=\"a\r\nb\"\r\nA\r\n0\r\n\r\n{SMUGGLED}")),
        ("bare LF in chunk", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\nA\n0\n\n{SMUGGLED}")),
        ("obs-fold TE", format!("POST / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("HTTP/1.0 with TE", format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("h2c upgrade", format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n{SMUGGLED}")),
        ("websocket upgrade", format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{SMUGGLED}")),
        ("CONNECT", format!("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n{SMUGGLED}")),
    ];
    for (i, (name, payload)) in cases.into_iter().enumerate() {
        // Each case has its own path, so that a late request of another case is not counted.
        let path = format!("/case-{i}");
        let payload = payload.replacen(" / HTTP", &format!(" {path} HTTP"), 1);
        let answer = exchange(gw.port, payload.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        let all = up.requests();
        assert!(
            all.iter().all(|s| !s.uri.contains("smuggled")),
            "{name}: the upstream saw a smuggled request: {all:?}\nclient got: {answer}"
        );
        let seen: Vec<Seen> = all.into_iter().filter(|s| s.uri == path).collect();
        assert!(
            seen.iter().all(|s| !s.uri.contains("smuggled")),
            "{name}: the upstream saw a smuggled request: {seen:?}\nclient got: {answer}"
        );
        assert!(
            seen.len() <= 1,
            "{name}: one request became {}: {seen:?}",
            seen.len()
        );
        // A pipelined second request, if served at all, is judged on its own: /secret needs a key.
        assert!(
            !answer.contains("\"uri\":\"/secret/smuggled\""),
            "{name}: {answer}"
        );
        for s in &seen {
            assert!(
                s.header("upgrade").is_none(),
                "{name}: an upgrade was forwarded: {s:?}"
            );
            assert!(
                s.header("transfer-encoding")
                    .is_none_or(|te| te.eq_ignore_ascii_case("chunked")),
                "{name}: {s:?}"
            );
        }
    }
    assert_eq!(gw.get("/after").status, 200, "still serving");
    assert!(!gw.stderr().contains("panicked"));
}

#[test]
fn http10_keep_alive_and_pipelining_stay_one_request_each() {
    let up = Upstream::start();
    let gw = start(&up);
    let answer = exchange(
        gw.port,
        b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n",
    );
    let uris: Vec<String> = up.requests().into_iter().map(|s| s.uri).collect();
    assert!(uris.iter().all(|u| u == "/a" || u == "/b"), "{uris:?}");
    assert!(!uris.is_empty(), "{answer}");
    assert!(uris.len() <= 2);
}
