//! CORS (issue 35): preflights answered by the gateway on routes that declare `cors`, before
//! authentication and without reaching the upstream; the CORS headers on every other answer
//! for an allowed origin and on none for another; a real browser (headless Chromium) calling a
//! protected route from another origin.

mod harness;

use harness::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes-long!";
const APP: &str = "https://app.example.com";

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({"sub": sub, "iss": "https://id.example.com", "aud": "orders-api", "exp": now + 600});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// `[cors]` and three routes: `orders` (JWT, `cors = true`), `partners` (its own `cors`
/// table), `plain` (JWT, no CORS) and `open` (public, no CORS, any method).
fn config(up: &Upstream, app_origins: &[&str]) -> String {
    let origins: Vec<String> = app_origins.iter().map(|o| format!("{o:?}")).collect();
    format!(
        r#"
[cors]
origins = [{origins}]
credentials = true
max_age = "5m"

[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "spa"
issuer = "https://id.example.com"
audiences = ["orders-api"]
algorithms = ["HS256"]
secret_file = "hs.secret"

[[routes]]
name = "orders"
path_prefix = "/orders"
methods = ["GET", "POST"]
upstream = "app"
auth = ["jwt:spa"]
allow = {{ consumers = ["*"] }}
cors = true

[[routes]]
name = "partners"
path_prefix = "/partners"
upstream = "app"
public = true
cors = {{ origins = ["https://*.partner.example"], credentials = false, headers = ["*"], methods = ["GET", "PUT"] }}

[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "app"
auth = ["jwt:spa"]
allow = {{ consumers = ["*"] }}

[[routes]]
name = "open"
path_prefix = "/open"
upstream = "app"
public = true
"#,
        origins = origins.join(", "),
        up = up.addr,
    )
}

fn start(up: &Upstream, app_origins: &[&str]) -> Gateway {
    Gateway::start_with_files(&config(up, app_origins), "", &[("hs.secret", SECRET)])
}

fn preflight(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut head =
        format!("OPTIONS {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    gw.raw(&head)
}

fn request(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    browser_request(gw.port, method, path, headers, b"")
}

#[test]
fn an_allowed_preflight_is_answered_by_the_gateway_before_authentication() {
    let up = Upstream::start();
    let gw = start(&up, &[APP]);
    let r = preflight(
        &gw,
        "/orders/7",
        &[
            ("Origin", APP),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,Content-Type",
            ),
        ],
    );
    assert_eq!(r.status, 204, "{:?}", r.headers);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(
        r.header("Access-Control-Allow-Methods"),
        Some("GET, POST, HEAD")
    );
    assert_eq!(
        r.header("Access-Control-Allow-Headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("Access-Control-Max-Age"), Some("300"));
    assert!(r.header("Vary").is_some_and(|v| v.starts_with("Origin")));
    let id = r.header("X-Request-Id").expect("a request id").to_string();
    assert!(up.requests().is_empty(), "the upstream saw the preflight");
    assert_eq!(
        gw.wait_metric(
            "portcullis_cors_preflights_total",
            &[("route", "orders"), ("result", "allowed")],
            1.0
        ),
        1.0
    );
    let line = gw.access_line(&id);
    assert_eq!(line["decision"], "cors_preflight");
    assert_eq!(line["status"], 204);
    assert_eq!(line["route"], "orders");

    // A wildcard subdomain origin, any requested header, on a public route.
    let r = preflight(
        &gw,
        "/partners",
        &[
            ("Origin", "https://eu.partner.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "x-anything"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://eu.partner.example")
    );
    assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    assert_eq!(r.header("Access-Control-Allow-Headers"), Some("x-anything"));
    assert!(up.requests().is_empty());
}

#[test]
fn a_preflight_asking_for_more_than_the_route_allows_is_refused() {
    let up = Upstream::start();
    let gw = start(&up, &[APP]);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 8] = [
        (
            "/orders",
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "cors_origin",
        ),
        (
            "/orders",
            &[("Origin", "null"), ("Access-Control-Request-Method", "GET")],
            "cors_origin",
        ),
        (
            "/orders",
            &[
                ("Origin", "https://app.example.com.evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "cors_origin",
        ),
        (
            "/orders",
            &[
                ("Origin", "http://app.example.com"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "cors_origin",
        ),
        (
            "/orders",
            &[
                ("Origin", APP),
                ("Origin", APP),
                ("Access-Control-Request-Method", "GET"),
            ],
            "cors_origin",
        ),
        (
            "/orders",
            &[
                ("Origin", APP),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization, x-admin"),
            ],
            "cors_headers",
        ),
        (
            "/partners",
            &[
                ("Origin", "https://partner.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "cors_origin",
        ),
        (
            "/partners",
            &[
                ("Origin", "https://eu.partner.example"),
                ("Access-Control-Request-Method", "PATCH"),
            ],
            "cors_method",
        ),
    ];
    for (i, (path, headers, reason)) in cases.iter().enumerate() {
        let r = preflight(&gw, path, headers);
        let problem = r.assert_problem(403);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("browser")),
            "case {i}: {problem}"
        );
        assert_eq!(r.header("Access-Control-Allow-Origin"), None, "case {i}");
        assert!(
            r.header("Vary").is_some_and(|v| v.starts_with("Origin")),
            "case {i}"
        );
        let line = gw.access_line(r.header("X-Request-Id").unwrap());
        assert_eq!(line["decision"], *reason, "case {i}");
    }
    assert!(
        up.requests().is_empty(),
        "the upstream saw a refused preflight"
    );
    for (route, result, count) in [
        ("orders", "cors_origin", 5.0),
        ("orders", "cors_headers", 1.0),
        ("partners", "cors_origin", 1.0),
        ("partners", "cors_method", 1.0),
    ] {
        assert_eq!(
            gw.wait_metric(
                "portcullis_cors_preflights_total",
                &[("route", route), ("result", result)],
                count
            ),
            count,
            "{route} {result}"
        );
    }
    // A method the route does not serve: routed as the preflight asks, it finds no route
    // method, and answers as an OPTIONS request would (405).
    let r = preflight(
        &gw,
        "/orders",
        &[("Origin", APP), ("Access-Control-Request-Method", "DELETE")],
    );
    r.assert_problem(405);
    assert!(up.requests().is_empty());
}

#[test]
fn other_answers_carry_cors_headers_for_an_allowed_origin_only() {
    let up = Upstream::start();
    let gw = start(&up, &[APP]);
    let bearer = format!("Bearer {}", token("alice"));

    let ok = request(
        &gw,
        "GET",
        "/orders/own-cors",
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"own-cors");
    // The upstream's own CORS headers are replaced: the gateway alone speaks CORS here.
    let acao: Vec<&str> = ok
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("access-control-allow-origin"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(acao, vec![APP]);
    assert_eq!(ok.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(
        ok.header("Access-Control-Expose-Headers"),
        Some("x-request-id, ratelimit, ratelimit-policy, retry-after, dpop-nonce")
    );
    let vary: Vec<&str> = ok
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("vary"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        vary.contains(&"Accept-Encoding") && vary.contains(&"Origin"),
        "{vary:?}"
    );
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        up.requests()[0].header("origin"),
        Some(APP),
        "the request goes on as sent"
    );

    // Another origin is served (CORS binds browsers, not servers) but told nothing.
    let other = request(
        &gw,
        "GET",
        "/orders/own-cors",
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(other.status, 200);
    assert!(
        other
            .headers
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-")),
        "{:?}",
        other.headers
    );
    assert_eq!(other.header("Vary"), Some("Accept-Encoding"));
    assert!(other
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v == "Origin"));
    let null = request(
        &gw,
        "GET",
        "/orders/x",
        &[("Origin", "null"), ("Authorization", &bearer)],
    );
    assert_eq!(null.status, 200);
    assert_eq!(null.header("Access-Control-Allow-Origin"), None);

    // A refusal an allowed page should read carries them too; the upstream saw nothing.
    up.clear();
    let refused = request(&gw, "GET", "/orders/x", &[("Origin", APP)]);
    refused.assert_problem(401);
    assert_eq!(refused.header("Access-Control-Allow-Origin"), Some(APP));
    assert_eq!(
        refused.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    assert_eq!(refused.header("Vary"), Some("Origin"));
    let refused = request(
        &gw,
        "GET",
        "/orders/x",
        &[("Origin", "https://evil.example")],
    );
    refused.assert_problem(401);
    assert_eq!(refused.header("Access-Control-Allow-Origin"), None);
    assert!(up.requests().is_empty());
}

#[test]
fn routes_without_cors_keep_treating_options_as_a_request() {
    let up = Upstream::start();
    let gw = start(&up, &[APP]);
    let asks = [("Origin", APP), ("Access-Control-Request-Method", "GET")];
    // Protected: the preflight carries no credential, so it is refused like any request.
    let r = preflight(&gw, "/plain/x", &asks);
    r.assert_problem(401);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    assert!(up.requests().is_empty());
    // Public: it goes to the upstream, which may answer CORS itself.
    let r = preflight(&gw, "/open/own-cors", &asks);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "OPTIONS");
}

#[test]
fn check_refuses_cors_configs_browsers_would_refuse() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("origins = [\"*\"]\ncredentials = true", "cors.credentials"),
        ("origins = [\"null\"]", "cors.origins[0]"),
        (
            "origins = [\"https://app.example.com/\"]",
            "cors.origins[0]",
        ),
        (
            "origins = [\"https://app.example.com:443\"]",
            "cors.origins[0]",
        ),
        (
            "origins = [\"https://a.example\"]\nmax_age = \"3d\"",
            "cors.max_age",
        ),
        (
            "origins = [\"https://a.example\"]\nwildcard = true",
            "unknown field",
        ),
    ];
    for (global, key) in cases {
        let path = dir.path().join("p.toml");
        let text = config(&up, &[APP]).replacen(
            "[cors]\norigins = [\"https://app.example.com\"]\ncredentials = true\nmax_age = \"5m\"",
            &format!("[cors]\n{global}"),
            1,
        );
        std::fs::write(dir.path().join("hs.secret"), SECRET).unwrap();
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = cli(&["check", "-c", path.to_str().unwrap()], None);
        assert_eq!(code, 1, "{global}: {out}{err}");
        assert!(err.contains(key), "{global}: {err}");
    }
}

/// A page server for the browser test: `/` is a page that calls the gateway with a bearer
/// token (a JSON POST, so the browser sends a preflight first) and reports what it could read
/// to `/result?…`, which this server keeps. It starts before the gateway, whose config needs
/// the page's origin; the page is written once the gateway's port is known.
struct PageServer {
    port: u16,
    page: Arc<Mutex<String>>,
    results: Arc<Mutex<Vec<String>>>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let page = Arc::new(Mutex::new(String::new()));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (served, kept) = (page.clone(), results.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                        break;
                    }
                }
                let target = line.split(' ').nth(1).unwrap_or("/").to_string();
                let body = match target.strip_prefix("/result?") {
                    Some(result) => {
                        kept.lock().unwrap().push(percent_decode(result));
                        String::new()
                    }
                    None if target == "/" => served.lock().unwrap().clone(),
                    None => String::new(),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PageServer {
            port,
            page,
            results,
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn call(&self, gateway_port: u16, bearer: &str) {
        *self.page.lock().unwrap() = format!(
            r#"<!doctype html><html><body><script>
const report = (text) => fetch("/result?" + encodeURIComponent(text));
fetch("http://127.0.0.1:{gateway_port}/orders/browser", {{
  method: "POST",
  headers: {{ "Authorization": "{bearer}", "Content-Type": "application/json" }},
  body: JSON.stringify({{ item: "tea", qty: 2 }}),
}}).then(async (r) => report("status=" + r.status + " id=" + (r.headers.get("x-request-id") ? "read" : "hidden") + " body=" + await r.text()))
  .catch((e) => report("error=" + e.name));
</script></body></html>"#
        );
    }

    /// Load the page in headless Chromium and wait (at most 60 s) for its report.
    fn load_in_browser(&self) -> String {
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("{}/", self.origin()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (Debian package chromium) is installed");
        let done = wait_until(Duration::from_secs(60), || {
            !self.results.lock().unwrap().is_empty()
        });
        let _ = browser.kill();
        let _ = browser.wait();
        assert!(done, "the page reported nothing within 60 s");
        self.results.lock().unwrap()[0].clone()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_real_browser_calls_a_protected_route_from_an_allowed_origin_only() {
    let up = Upstream::start();
    let bearer = format!("Bearer {}", token("alice"));
    let allowed = PageServer::start();
    let other = PageServer::start();
    let gw = start(&up, &[&allowed.origin()]);

    allowed.call(gw.port, &bearer);
    let result = allowed.load_in_browser();
    assert!(result.starts_with("status=200 id=read body="), "{result}");
    assert!(result.contains("/orders/browser"), "{result}");
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the call reaches the upstream, not its preflight"
    );
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, br#"{"item":"tea","qty":2}"#);
    assert_eq!(seen[0].header("x-consumer-id"), Some("alice"));
    assert_eq!(
        gw.wait_metric(
            "portcullis_cors_preflights_total",
            &[("route", "orders"), ("result", "allowed")],
            1.0
        ),
        1.0
    );

    up.clear();
    other.call(gw.port, &bearer);
    assert_eq!(other.load_in_browser(), "error=TypeError");
    assert!(
        up.requests().is_empty(),
        "the upstream saw a call from a foreign page"
    );
    assert_eq!(
        gw.wait_metric(
            "portcullis_cors_preflights_total",
            &[("route", "orders"), ("result", "cors_origin")],
            1.0
        ),
        1.0
    );
}
