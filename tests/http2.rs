//! HTTP/2 bodies (issue 35): a body that a route validates or inspects is read whole before
//! the upstream is chosen; over HTTP/2 it now reaches the upstream byte for byte up to the
//! route's `max_body_bytes`, past Pingora's 64 KiB retry buffer. The client is curl, speaking
//! HTTP/2 with prior knowledge to an h2c listener. Refusals of requests whose bodies were not
//! read reach the client too.

mod harness;

use harness::*;
use std::process::Command;

struct Setup {
    gw: Gateway,
    up: Upstream,
    h2c_port: u16,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let up = Upstream::start();
    let h2c_port = free_port();
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
address = "127.0.0.1:{h2c_port}"
h2c = true

[[upstreams]]
name = "app"
targets = ["{up}"]

[[routes]]
name = "validated"
path_prefix = "/validated"
upstream = "app"
public = true
validate = {{ content_types = ["application/json"], max_body_bytes = "2MiB" }}

[[routes]]
name = "secret"
path_prefix = "/secret"
upstream = "app"
auth = ["api_key"]

[[routes]]
name = "inspected"
path_prefix = "/inspected"
upstream = "app"
public = true
limits = {{ max_body_bytes = "2MiB" }}
"#,
        up = up.addr,
    ));
    Setup {
        gw,
        up,
        h2c_port,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// POST `body` as JSON over HTTP/2; (HTTP version, status, response body).
    fn post(&self, path: &str, body: &[u8]) -> (String, u16, String) {
        let file = self.dir.path().join("body.json");
        std::fs::write(&file, body).unwrap();
        let out_file = self.dir.path().join("out");
        let out = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-o"])
            .arg(&out_file)
            .args([
                "-w",
                "%{http_version} %{http_code}",
                "-H",
                "content-type: application/json",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("http://127.0.0.1:{}{path}", self.h2c_port))
            .output()
            .expect("curl (Debian package curl; .ci/deps installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (version, status) = text.split_once(' ').unwrap_or(("?", "0"));
        let answer = std::fs::read_to_string(&out_file).unwrap_or_default();
        (version.to_string(), status.parse().unwrap_or(0), answer)
    }
}

/// A JSON document of exactly `len` bytes: one long string.
fn json_of(len: usize) -> Vec<u8> {
    let mut out = b"{\"data\":\"".to_vec();
    let filler = len - out.len() - 2;
    out.extend((0..filler).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]));
    out.extend_from_slice(b"\"}");
    out
}

#[test]
fn bodies_past_64_kib_reach_the_upstream_byte_for_byte() {
    let s = setup();
    for (path, len) in [
        ("/validated/orders", 1 << 20),
        ("/validated/orders", 64 * 1024 - 1),
        ("/validated/orders", 64 * 1024 + 1),
        ("/inspected/upload", 1 << 20),
    ] {
        s.up.clear();
        let body = json_of(len);
        let (version, status, answer) = s.post(path, &body);
        assert_eq!(
            (version.as_str(), status),
            ("2", 200),
            "{path} {len}: {answer}"
        );
        let seen = s.up.requests();
        assert_eq!(seen.len(), 1, "{path} {len}");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].body.len(), body.len(), "{path} {len}");
        assert!(
            seen[0].body == body,
            "{path} {len}: the body changed on the way"
        );
        assert_eq!(
            seen[0].header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    // One access-log line and one count per request, with what the checks found.
    let log = s.gw.access_log();
    let big: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/validated/orders"))
        .collect();
    assert_eq!(big.len(), 3, "{log}");
    for line in big {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (v["status"].as_u64(), v["route"].as_str()),
            (Some(200), Some("validated"))
        );
        assert_eq!(v["decision"], "allow");
    }
    assert_eq!(
        s.gw.wait_metric(
            "portcullis_requests_total",
            &[("route", "validated"), ("status", "200")],
            3.0
        ),
        3.0
    );
}

#[test]
fn refused_http2_bodies_never_reach_the_upstream() {
    let s = setup();
    for (path, body, status) in [
        ("/validated/orders", json_of(3 << 20), 413),
        ("/validated/orders", b"{\"broken\":".repeat(10_000), 400),
        ("/inspected/upload", json_of(3 << 20), 413),
        // Refused before its body is read: the client still gets the answer.
        ("/secret/x", json_of(200_000), 401),
    ] {
        let (version, got, answer) = s.post(path, &body);
        assert_eq!((version.as_str(), got), ("2", status), "{path}: {answer}");
        let problem: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(problem["status"], status);
    }
    assert!(s.up.requests().is_empty(), "{:?}", s.up.requests().len());
}
