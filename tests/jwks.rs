//! JWKS over HTTP: a real JWKS server on loopback, keys fetched in the background, rotation
//! picked up through the unknown-`kid` refetch (at most once per 30 s), and the last good
//! keys kept when the server goes away.

mod harness;

use harness::*;
use serde_json::json;
use std::time::Duration;

fn token(kid: &str, pem_file: &str) -> String {
    let claims = json!({"sub": "alice", "iss": "https://id.example.com", "aud": "orders-api", "exp": unix_now() + 600});
    rs256_token(kid, pem_file, &claims)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(&format!("jwt/{name}"))).unwrap()
}

/// Provider `corp` on the JWKS server `jwks` (with `provider_extra` settings), guarding
/// `/orders`.
fn corp_config(up: &Upstream, jwks: &DocServer, provider_extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "corp"
issuer = "https://id.example.com"
audiences = ["orders-api"]
algorithms = ["RS256"]
jwks_url = "http://{jwks}/.well-known/jwks.json"
{provider_extra}

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["jwt:corp"]
allow = {{ consumers = ["*"] }}
"#,
        up = up.addr,
        jwks = jwks.addr
    )
}

#[test]
fn keys_rotate_through_the_refetch_rule() {
    let up = Upstream::start();
    let jwks = DocServer::start(&read("jwks.json"));
    let gw = Gateway::start(&corp_config(&up, &jwks, "jwks_refresh = \"1h\""));
    let original = token("rsa", "rsa.pem");
    assert!(
        wait_until(Duration::from_secs(10), || bearer_get(gw.port, &original)
            .status
            == 200),
        "the initial fetch makes the key known"
    );
    let after_start = jwks.hits();
    assert!(after_start >= 1);

    // The provider rotates: the first token with the new kid triggers one refetch and passes.
    jwks.set(&read("jwks-rotated.json"));
    let rotated = token("rotated", "rotated.pem");
    let r = bearer_get(gw.port, &rotated);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwks.hits(), after_start + 1);

    // The old key is gone now; unknown kids cannot make it fetch again within 30 s.
    for i in 0..10 {
        let r = bearer_get(gw.port, &token(&format!("made-up-{i}"), "attacker.pem"));
        r.assert_problem(401);
    }
    let r = bearer_get(gw.port, &original);
    assert_eq!(r.json()["detail"], "the token's signing key is not known");
    assert_eq!(jwks.hits(), after_start + 1, "no refetch storm");
    assert!(up
        .requests()
        .iter()
        .all(|s| s.header("x-consumer-id") == Some("alice")));
}

/// Refreshes that really fail — a broken document, then no server at all — keep the last good
/// keys: fresh tokens (the token cache is off, so each one is verified) still pass, and tokens
/// of unknown keys are still refused.
#[test]
fn the_last_good_keys_survive_failed_refreshes() {
    let up = Upstream::start();
    let mut jwks = DocServer::start(&read("jwks.json"));
    let gw = Gateway::start(&corp_config(
        &up,
        &jwks,
        "jwks_refresh = \"10s\"\ntoken_cache = 0",
    ));
    let failures = |gw: &Gateway| {
        gw.metric(
            "portcullis_jwks_refresh_failures_total",
            &[("provider", "corp")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || bearer_get(
            gw.port,
            &token("rsa", "rsa.pem")
        )
        .status
            == 200),
        "the initial fetch makes the key known"
    );
    // No refresh has failed yet: the per-provider series is not there at all.
    assert_eq!(failures(&gw), None);

    // A broken document: the unknown kid forces a refetch, which fails.
    jwks.set("{ not json");
    up.clear();
    let hits = jwks.hits();
    bearer_get(gw.port, &token("rotated", "rotated.pem")).assert_problem(401);
    assert!(wait_until(Duration::from_secs(5), || failures(&gw)
        .is_some_and(|n| n >= 1.0)));
    assert!(jwks.hits() > hits, "the refetch reached the server");
    assert!(up.requests().is_empty());
    let r = bearer_get(gw.port, &token("rsa", "rsa.pem"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);

    // No server at all: the next scheduled refresh fails too, and the keys are still there.
    jwks.stop();
    let before = failures(&gw).expect("counted above");
    assert!(
        wait_until(Duration::from_secs(20), || failures(&gw)
            .is_some_and(|n| n > before)),
        "no refresh attempt failed after the server stopped"
    );
    up.clear();
    let r = bearer_get(gw.port, &token("rsa", "rsa.pem"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
    bearer_get(gw.port, &token("made-up", "attacker.pem")).assert_problem(401);
    assert_eq!(up.requests().len(), 1);
    assert!(gw.stderr().contains("keeping the last good keys"));
}

#[test]
fn an_oversized_or_broken_jwks_is_not_loaded() {
    let up = Upstream::start();
    let huge = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let big = DocServer::start(&huge);
    let broken = DocServer::start("{ not json");
    let gw = Gateway::start(&format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "big"
algorithms = ["RS256"]
audiences = ["orders-api"]
jwks_url = "http://{big}/jwks"

[[jwt_providers]]
name = "broken"
algorithms = ["RS256"]
audiences = ["orders-api"]
jwks_url = "http://{broken}/jwks"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["jwt:big", "jwt:broken"]
allow = {{ consumers = ["*"] }}
"#,
        up = up.addr,
        big = big.addr,
        broken = broken.addr
    ));
    assert!(wait_until(Duration::from_secs(10), || big.hits() >= 1
        && broken.hits() >= 1));
    std::thread::sleep(Duration::from_millis(300));
    bearer_get(gw.port, &token("rsa", "rsa.pem")).assert_problem(401);
    assert!(up.requests().is_empty());
    let log = gw.stderr();
    assert!(log.contains("larger than"), "{log}");
    assert!(log.contains("keeping the last good keys"), "{log}");
}
