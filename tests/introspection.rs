//! OAuth 2.0 token introspection (RFC 7662) against a real endpoint on loopback: opaque tokens
//! accepted when the endpoint says active (and its claims fit), refused when it does not, the
//! answers cached (positive up to `cache_ttl` and never past `exp`, negative briefly), one call
//! for many concurrent requests with one new token, and an endpoint that is down, slow, failing
//! or nonsensical never leading to an accept.

mod harness;

use harness::introspect::Mode;
use harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

const SECRET: &str = "s3cret-for-the-gateway";

/// Provider `as` of kind introspection on `endpoint` (with `extra` settings), guarding
/// `/orders`.
fn config(up: &Upstream, endpoint: &IntrospectionServer, extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "as"
kind = "introspection"
introspection_endpoint = "{url}"
client_id = "gateway"
secret_file = "as.secret"
issuer = "https://as.example.com"
audiences = ["orders-api"]
{extra}

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["introspection:as"]
allow = {{ consumers = ["*"] }}
"#,
        up = up.addr,
        url = endpoint.url()
    )
}

fn start(up: &Upstream, endpoint: &IntrospectionServer, extra: &str) -> Gateway {
    Gateway::start_with_files(
        &config(up, endpoint, extra),
        "",
        &[("as.secret", SECRET.as_bytes())],
    )
}

fn active(sub: &str) -> serde_json::Value {
    json!({
        "active": true, "sub": sub, "scope": "orders:read",
        "aud": "orders-api", "iss": "https://as.example.com",
        "exp": unix_now() + 600, "token_type": "Bearer"
    })
}

/// A 401 for a token, seen from both sides: the problem, the Bearer challenge, nothing
/// upstream.
fn assert_refused(r: &HttpResponse, up: &Upstream, reason: &str) {
    r.assert_problem(401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"portcullis\""),
        "{challenge}"
    );
    let error = if reason == "malformed_token" {
        "invalid_request"
    } else {
        "invalid_token"
    };
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
    assert!(up.requests().is_empty(), "{reason}: {:?}", up.requests());
}

#[test]
fn an_active_token_passes_once_asked_and_then_from_the_cache() {
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    endpoint.set_token("2YotnFZFEjr1zCsicMWpAA", active("alice"));
    let gw = start(&up, &endpoint, "");

    let r = bearer_get(gw.port, "2YotnFZFEjr1zCsicMWpAA");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consumer-id"), Some("alice"));
    assert_eq!(
        seen[0].header("x-authenticated-scopes"),
        Some("orders:read")
    );
    assert_eq!(
        seen[0].header("authorization"),
        None,
        "the token stays at the gateway"
    );

    // What the endpoint saw: a form POST with the token, authenticated as the gateway.
    let calls = endpoint.seen();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.authorization.as_deref(),
        Some(endpoint.expected_authorization.as_str())
    );
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(call.form["token"], "2YotnFZFEjr1zCsicMWpAA");
    assert_eq!(call.form["token_type_hint"], "access_token");

    // Asked once: the next requests are answered from the cache.
    for _ in 0..5 {
        assert_eq!(bearer_get(gw.port, "2YotnFZFEjr1zCsicMWpAA").status, 200);
    }
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(up.requests().len(), 6);
    let metric =
        |name: &str, result: &str| gw.metric(name, &[("provider", "as"), ("result", result)]);
    assert_eq!(
        metric("portcullis_introspection_calls_total", "active"),
        Some(1.0)
    );
    assert_eq!(
        metric("portcullis_introspection_cache_total", "hit"),
        Some(5.0)
    );
    assert_eq!(
        metric("portcullis_introspection_cache_total", "miss"),
        Some(1.0)
    );
    assert!(gw
        .metrics()
        .contains("portcullis_introspection_duration_seconds_count{provider=\"as\"} 1"));
    let line = gw.access_line(seen[0].header("x-request-id").unwrap());
    assert_eq!(line["auth"], "introspection:as");
    assert_eq!(line["consumer"], "alice");
    assert!(
        !gw.access_log().contains("2YotnFZFEjr1zCsicMWpAA"),
        "no token in the log"
    );
}

#[test]
fn inactive_and_unfitting_tokens_are_refused_and_remembered_briefly() {
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    // Cache deadlines are whole seconds: a 2 s negative entry lasts between 1 and 2 s.
    let gw = start(&up, &endpoint, "negative_cache_ttl = \"2s\"");
    let with = |token: &str, key: &str, value: serde_json::Value| {
        let mut answer = active("alice");
        answer.as_object_mut().unwrap().insert(key.into(), value);
        endpoint.set_token(token, answer);
    };
    with("other-audience", "aud", json!(["billing"]));
    with("other-issuer", "iss", json!("https://evil.example"));
    with("expired", "exp", json!(unix_now() - 10));
    with("no-subject", "sub", json!(null));
    with("revoked", "active", json!(false));
    let cases = [
        ("never-issued", "inactive_token"),
        ("revoked", "inactive_token"),
        ("other-audience", "wrong_audience"),
        ("other-issuer", "wrong_issuer"),
        ("expired", "token_expired"),
        ("no-subject", "no_consumer_claim"),
    ];
    for (token, reason) in cases {
        let r = bearer_get(gw.port, token);
        assert_refused(&r, &up, reason);
        assert_eq!(
            gw.access_line(r.json()["request_id"].as_str().unwrap())["decision"],
            reason
        );
    }
    assert_eq!(endpoint.calls(), cases.len());
    // Tokens that are not RFC 6750 b64tokens are refused without a call.
    for token in ["has space", "quo\"te", "semi;colon"] {
        assert_refused(&bearer_get(gw.port, token), &up, "malformed_token");
    }
    assert_eq!(endpoint.calls(), cases.len());

    // Refusals are remembered for negative_cache_ttl, then asked again: a token issued a
    // moment after it was first refused is accepted soon.
    assert_refused(&bearer_get(gw.port, "never-issued"), &up, "inactive_token");
    assert_eq!(endpoint.calls(), cases.len());
    endpoint.set_token("never-issued", active("bob"));
    std::thread::sleep(Duration::from_millis(2100));
    let r = bearer_get(gw.port, "never-issued");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(endpoint.calls(), cases.len() + 1);
    assert_eq!(
        gw.metric(
            "portcullis_auth_failures_total",
            &[("route", "orders"), ("reason", "inactive_token")]
        ),
        Some(3.0)
    );
}

/// Revocation before `exp`: an active answer is cached no longer than `cache_ttl`, and never
/// past the token's `exp`.
#[test]
fn a_revoked_token_is_refused_once_its_cached_answer_ends() {
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    let gw = start(&up, &endpoint, "cache_ttl = \"2s\"");
    endpoint.set_token("tok-a", active("alice"));
    assert_eq!(bearer_get(gw.port, "tok-a").status, 200);
    endpoint.set_token("tok-a", json!({"active": false}));
    assert_eq!(
        bearer_get(gw.port, "tok-a").status,
        200,
        "cached within cache_ttl"
    );
    std::thread::sleep(Duration::from_millis(2100));
    up.clear();
    assert_refused(&bearer_get(gw.port, "tok-a"), &up, "inactive_token");

    // A token whose exp comes before cache_ttl ends is not served from the cache past it.
    let mut soon = active("carol");
    soon["exp"] = json!(unix_now() + 1);
    endpoint.set_token("tok-b", soon);
    assert_eq!(bearer_get(gw.port, "tok-b").status, 200);
    let calls = endpoint.calls();
    std::thread::sleep(Duration::from_millis(2100));
    up.clear();
    let r = bearer_get(gw.port, "tok-b");
    assert_eq!(endpoint.calls(), calls + 1, "asked again after exp");
    assert_refused(&r, &up, "token_expired");
}

/// The endpoint failing in every way: each is a 503 (not an accept, not a 401 that would make
/// the client drop a good token), nothing reaches the upstream, nothing is cached, and the
/// token passes once the endpoint is back.
#[test]
fn an_endpoint_that_is_down_slow_or_wrong_never_leads_to_an_accept() {
    let up = Upstream::start();
    let mut endpoint = IntrospectionServer::start("gateway", SECRET);
    let wrong_secret = IntrospectionServer::start("gateway", "another-secret");
    endpoint.set_token("tok", active("alice"));
    wrong_secret.set_token("tok", active("alice"));
    let gw = start(&up, &endpoint, "timeout = \"500ms\"");
    let unavailable = |gw: &Gateway, what: &str| {
        let started = Instant::now();
        let r = bearer_get(gw.port, "tok");
        let v = r.assert_problem(503);
        assert_eq!(
            v["detail"], "the token could not be checked now; try again shortly",
            "{what}"
        );
        assert_eq!(r.header("retry-after"), Some("5"), "{what}");
        assert!(
            up.requests().is_empty(),
            "{what}: the upstream saw {:?}",
            up.requests()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            gw.access_line(v["request_id"].as_str().unwrap())["decision"],
            "introspection_unavailable"
        );
    };
    let errors = |gw: &Gateway, reason: &str| {
        gw.metric(
            "portcullis_introspection_errors_total",
            &[("provider", "as"), ("reason", reason)],
        )
    };

    endpoint.set_mode(Mode::Status(500));
    unavailable(&gw, "HTTP 500");
    unavailable(&gw, "HTTP 500 again: errors are not cached");
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(errors(&gw, "status"), Some(2.0));

    endpoint.set_mode(Mode::Garbage);
    unavailable(&gw, "an HTML login page");
    assert_eq!(errors(&gw, "response"), Some(1.0));

    endpoint.set_mode(Mode::Normal);
    endpoint.set_delay(Duration::from_secs(2));
    unavailable(&gw, "slower than the timeout");
    assert_eq!(errors(&gw, "timeout"), Some(1.0));

    endpoint.set_delay(Duration::ZERO);
    let r = bearer_get(gw.port, "tok");
    assert_eq!(r.status, 200, "back: {}", r.text());
    up.clear();

    // The endpoint refusing the gateway's own credentials.
    let other = start(&up, &wrong_secret, "");
    let r = bearer_get(other.port, "tok");
    r.assert_problem(503);
    assert!(up.requests().is_empty());
    assert_eq!(
        wrong_secret.seen()[0].authorization.as_deref(),
        Some(endpoint.expected_authorization.as_str())
    );
    assert!(
        other.stderr().contains("HTTP status 401"),
        "{}",
        other.stderr()
    );
    assert!(
        !other.stderr().contains(SECRET),
        "the secret is never logged"
    );

    // Nothing listening at all.
    endpoint.stop();
    let fresh = Gateway::start_with_files(
        &config(&up, &endpoint, "").replace("name = \"as\"", "name = \"as\"\ntoken_cache = 0"),
        "",
        &[("as.secret", SECRET.as_bytes())],
    );
    unavailable(&fresh, "connection refused");
    assert_eq!(errors(&fresh, "connect"), Some(1.0));
}

/// 1,000 concurrent requests carrying the same new token: one call to the endpoint, whose
/// answer every request shares.
#[test]
fn a_thousand_concurrent_requests_with_one_new_token_make_one_call() {
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    endpoint.set_token("shared-new-token", active("alice"));
    endpoint.set_delay(Duration::from_millis(1500));
    let gw = start(&up, &endpoint, "timeout = \"10s\"");
    let port = gw.port;
    let started = Instant::now();
    let clients: Vec<_> = (0..1000)
        .map(|_| {
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || bearer_get(port, "shared-new-token").status)
                .expect("a client thread")
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut tally = std::collections::BTreeMap::new();
    for s in &statuses {
        *tally.entry(*s).or_insert(0) += 1;
    }
    assert_eq!(tally.get(&200), Some(&1000), "statuses: {tally:?}");
    assert_eq!(endpoint.calls(), 1, "one call for all of them");
    assert_eq!(up.requests().len(), 1000);
    assert!(started.elapsed() < Duration::from_secs(30));
    let cache = |result: &str| {
        gw.metric(
            "portcullis_introspection_cache_total",
            &[("provider", "as"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(cache("miss") + cache("hit"), 1000.0);
}

/// A route that takes JWTs and opaque tokens: a JWT its provider verifies never costs a call,
/// an opaque token is introspected, and a wrong API key beside a good token does not stop it.
#[test]
fn a_route_may_take_jwts_and_introspected_tokens() {
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    endpoint.set_token("opaque-ok", active("bob"));
    let body = config(&up, &endpoint, "")
        .replace(
            "auth = [\"introspection:as\"]",
            "auth = [\"api_key\", \"jwt:corp\", \"introspection:as\"]",
        )
        .replace(
            "[[routes]]",
            &format!(
                "[[jwt_providers]]\nname = \"corp\"\naudiences = [\"orders-api\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n\n[[consumers]]\nid = \"ci\"\napi_keys = [\"sha256:{}\"]\n\n[[routes]]",
                data("jwt/jwks.json"),
                "ab".repeat(32)
            ),
        );
    let gw = Gateway::start_with_files(&body, "", &[("as.secret", SECRET.as_bytes())]);
    let jwt = rs256_token(
        "rsa",
        "rsa.pem",
        &json!({"sub": "alice", "aud": "orders-api", "exp": unix_now() + 600}),
    );
    let r = bearer_get(gw.port, &jwt);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(endpoint.calls(), 0, "a verified JWT needs no call");
    let r = raw_request(
        gw.port,
        b"GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key\r\nAuthorization: Bearer opaque-ok\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(endpoint.calls(), 1);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-consumer-id"), Some("alice"));
    assert_eq!(seen[1].header("x-consumer-id"), Some("bob"));
    // A wrong key and an inactive token: the first failure (the key) is what the client hears.
    up.clear();
    let r = raw_request(
        gw.port,
        b"GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key\r\nAuthorization: Bearer opaque-no\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.assert_problem(401)["detail"], "the API key is not valid");
    assert_eq!(endpoint.calls(), 2);
    assert!(up.requests().is_empty());
}

/// `discovery` instead of `introspection_endpoint`: the document's `introspection_endpoint`
/// is used once the document names the configured issuer exactly; a document of another
/// issuer is never followed (tokens are 503 and the endpoint it names is never asked), and
/// `/readyz` says which endpoint is in use, or why there is none.
#[test]
fn discovery_names_the_endpoint_only_for_the_right_issuer() {
    const WELL_KNOWN: &str = "/.well-known/openid-configuration";
    let up = Upstream::start();
    let endpoint = IntrospectionServer::start("gateway", SECRET);
    endpoint.set_token("tok", active("alice"));
    let docs = DocServer::start("{}");
    let doc = |issuer: &str| {
        json!({ "issuer": issuer, "introspection_endpoint": endpoint.url(),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"] })
        .to_string()
    };
    docs.set_path(
        &format!("/good{WELL_KNOWN}"),
        200,
        &doc("https://as.example.com"),
    );
    docs.set_path(
        &format!("/evil{WELL_KNOWN}"),
        200,
        &doc("https://evil.example"),
    );
    let with_discovery = |path: &str| {
        let discovery = format!("http://{}/{path}{WELL_KNOWN}", docs.addr);
        let text = config(&up, &endpoint, "").replace(
            &format!("introspection_endpoint = \"{}\"", endpoint.url()),
            &format!("discovery = \"{discovery}\""),
        );
        let gw = Gateway::start_with_files(&text, "", &[("as.secret", SECRET.as_bytes())]);
        (gw, discovery)
    };

    let (gw, discovery) = with_discovery("good");
    let ready = wait_until(Duration::from_secs(5), || gw.readyz().status == 200);
    let v = gw.readyz().json();
    assert!(ready, "{v}");
    assert_eq!(
        readyz_check(&v, "introspection provider as")["detail"],
        format!("endpoint {}, discovery {discovery}", endpoint.url())
    );
    let r = bearer_get(gw.port, "tok");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].header("x-consumer-id"), Some("alice"));
    assert_eq!(endpoint.calls(), 1);
    up.clear();

    // A document naming another issuer: the endpoint it names is never asked.
    let (evil, discovery) = with_discovery("evil");
    evil.wait_metric(
        "portcullis_introspection_errors_total",
        &[("provider", "as"), ("reason", "discovery")],
        1.0,
    );
    let r = bearer_get(evil.port, "tok");
    let v = r.assert_problem(503);
    assert_eq!(
        evil.access_line(v["request_id"].as_str().unwrap())["decision"],
        "introspection_unavailable"
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(
        endpoint.calls(),
        1,
        "the endpoint was asked for the evil document"
    );
    let ready = evil.readyz();
    assert_eq!(ready.status, 503);
    let check = readyz_check(&ready.json(), "introspection provider as");
    assert_eq!(check["ok"], false);
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("no endpoint yet, discovery {discovery}; the last refresh failed: cannot read the discovery document"))
            && detail.contains("must match exactly"),
        "{detail}"
    );
    assert!(
        evil.stderr()
            .contains("no introspection endpoint discovered yet"),
        "{}",
        evil.stderr()
    );
}
