//! Test harness: the real `portcullis` binary on ephemeral loopback ports (`gateway`), real
//! upstream servers that record what they saw (`upstream`), a raw HTTP/1.1 client so that tests
//! control every byte on the wire (`wire`: HTTP client libraries normalise paths themselves),
//! test certificates (`pki`), a real Redis (`redis`), a switchable document server for JWKS
//! (`docs`), and the CRS corpus (`crs`). `tests/README.md` says which test file covers what.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_imports)]

pub mod crs;
pub mod docs;
pub mod gateway;
pub mod introspect;
pub mod pki;
pub mod redis;
pub mod upstream;
pub mod wire;
pub mod ws;

pub use docs::DocServer;
pub use gateway::{cli, metric_value, owns_listener, public_route, signal, Gateway};
pub use introspect::IntrospectionServer;
pub use pki::Pki;
pub use redis::RedisServer;
pub use upstream::{header_map, Seen, Silent, Upstream};
pub use wire::{
    browser_request, raw_exchange, raw_request, read_response, read_until_closed, status_of,
    HttpResponse,
};
pub use ws::{WsSeen, WsUpstream};

use std::net::TcpListener;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// The check named `name` in a `/readyz` answer.
pub fn readyz_check(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

/// An RS256 token signed with `tests/data/jwt/<pem_file>`, its header naming `kid`.
pub fn rs256_token(kid: &str, pem_file: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let pem = std::fs::read(data(&format!("jwt/{pem_file}"))).expect("a test key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

/// `GET /orders/1` with `Authorization: Bearer <token>`: the request of the token tests.
pub fn bearer_get(port: u16, token: &str) -> HttpResponse {
    raw_request(
        port,
        format!(
            "GET /orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Absolute path of a file under `tests/data`.
pub fn data(path: &str) -> String {
    format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The first value of header `name` (any case) in a list of (name, value) pairs.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
