//! `/healthz` and `/readyz` on the metrics listener, as a load balancer meets them: ready when
//! everything is, 503 naming what is missing, and 503 on the old process once a graceful
//! shutdown has begun.

mod harness;

use harness::*;
use sha2::Digest;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn get(port: u16, path: &str) -> HttpResponse {
    raw_request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

use harness::readyz_check as check;

fn app(up: &Upstream) -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{}"]
health_check = {{ path = "/healthz", interval = "200ms" }}

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "app"
public = true
"#,
        up.addr
    )
}

#[test]
fn a_ready_gateway_says_so_and_drains_on_sigterm() {
    let up = Upstream::start();
    let mut gw = Gateway::start_with(&app(&up), "grace_period = \"3s\"");
    let alive = get(gw.metrics_port, "/healthz");
    assert_eq!(alive.status, 200);
    assert_eq!(alive.header("content-type"), Some("application/json"));
    assert_eq!(alive.header("cache-control"), Some("no-store"));
    assert_eq!(alive.json()["status"], "alive");

    let ready = get(gw.metrics_port, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let v = ready.json();
    assert_eq!(v["status"], "ready");
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
    // The config check names the running file by its SHA-256, as the metric does.
    let text = std::fs::read(gw.path().join("portcullis.toml")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&text));
    assert!(check(&v, "config")["detail"]
        .as_str()
        .unwrap()
        .contains(&sha));
    assert_eq!(
        gw.metric("portcullis_config_info", &[("sha256", &sha)]),
        Some(1.0)
    );
    assert_eq!(check(&v, "listeners[0]")["ok"], true);
    assert_eq!(
        check(&v, "upstream app")["detail"],
        "1 of 1 target(s) healthy"
    );

    // Other methods and paths are refused as problems.
    let post = raw_request(
        gw.metrics_port,
        b"POST /readyz HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        post.header("content-type"),
        Some("application/problem+json")
    );
    let missing = get(gw.metrics_port, "/ready");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);

    // A load balancer's kept-alive connection: ready, then draining once SIGTERM arrives
    // (new connections are refused by then: the listener closes at once).
    let mut lb = TcpStream::connect(("127.0.0.1", gw.metrics_port)).unwrap();
    lb.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = b"GET /readyz HTTP/1.1\r\nHost: lb\r\n\r\n";
    lb.write_all(ask).unwrap();
    assert_eq!(read_response(&mut lb).map(|r| r.status), Some(200));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    lb.write_all(ask).unwrap();
    let draining = read_response(&mut lb).expect("an answer while draining");
    assert_eq!(draining.status, 503, "{}", draining.text());
    let v = draining.json();
    assert_eq!(v["status"], "draining");
    assert_eq!(check(&v, "shutdown")["ok"], false);
    // Requests still in flight or arriving on the proxy are not this test's business; the
    // process exits cleanly within the grace period.
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn readyz_names_each_missing_piece() {
    let up = Upstream::start();
    let jwks = DocServer::start("{ not a key set");
    let dead = free_port(); // nothing listens there
    let gw = Gateway::start(&format!(
        r#"
{app}
[[upstreams]]
name = "gone"
targets = ["127.0.0.1:{dead}"]
health_check = {{ path = "/healthz", interval = "200ms" }}

[[routes]]
name = "gone"
path_prefix = "/gone"
upstream = "gone"
public = true

[[jwt_providers]]
name = "corp"
issuer = "https://id.example.com"
audiences = ["orders-api"]
algorithms = ["RS256"]
jwks_url = "http://{jwks}/jwks.json"
"#,
        app = app(&up),
        jwks = jwks.addr
    ));
    let mut last = serde_json::Value::Null;
    let gone_seen = wait_until(Duration::from_secs(10), || {
        let r = get(gw.metrics_port, "/readyz");
        last = r.json();
        r.status == 503 && check(&last, "upstream gone")["ok"] == false
    });
    assert!(gone_seen, "{last}");
    assert_eq!(last["status"], "not_ready");
    assert_eq!(
        check(&last, "upstream gone")["detail"],
        "0 of 1 target(s) healthy"
    );
    assert_eq!(check(&last, "upstream app")["ok"], true);
    let corp = check(&last, "jwt provider corp");
    assert_eq!(corp["ok"], false);
    assert!(
        corp["detail"].as_str().unwrap().contains("no keys"),
        "{corp}"
    );
    assert_eq!(check(&last, "shutdown")["ok"], true);
    // Alive all the same: the process answers.
    assert_eq!(get(gw.metrics_port, "/healthz").status, 200);
    // The health endpoints are the metrics listener's, not the proxy's.
    let r = gw.get("/readyz");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn on_a_graceful_upgrade_the_old_process_drains_and_the_new_one_is_ready() {
    let up = Upstream::start();
    let config = app(&up);
    let mut gw = Gateway::start_with(&config, "grace_period = \"3s\"");
    // The load balancer's kept-alive connection is to the old process.
    let mut lb = TcpStream::connect(("127.0.0.1", gw.metrics_port)).unwrap();
    lb.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = b"GET /readyz HTTP/1.1\r\nHost: lb\r\n\r\n";
    lb.write_all(ask).unwrap();
    assert_eq!(read_response(&mut lb).map(|r| r.status), Some(200));
    gw.upgrade(&config);
    // The old process answers its own connection: draining once it has handed its sockets
    // over (until then it is still the one serving, and ready).
    let mut old = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        lb.write_all(ask).unwrap();
        let r = read_response(&mut lb).expect("the old process answers");
        if r.status != 200 {
            old = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = old.expect("the old process never said it was draining");
    assert_eq!(old.status, 503, "{}", old.text());
    assert_eq!(old.json()["status"], "draining");
    // New connections reach the new process, which inherited the metrics socket: ready. (For
    // Pingora's 5 s close timeout both processes accept on the shared socket, so a fresh
    // connection may still meet the old one and hear "draining".)
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = get(gw.metrics_port, "/readyz");
            last = r.text();
            r.status == 200 && r.json()["status"] == "ready"
        }),
        "{last}"
    );
    assert_eq!(gw.get("/public/after").status, 200);
}
