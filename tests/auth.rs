//! Authentication and authorization against the real gateway and a real upstream, with tokens
//! minted here. Every refusal is checked from both sides: status, problem+json body and metric
//! reason for the client; nothing at the upstream.

mod harness;

use base64::Engine;
use harness::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HS_SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes-long!";
const MOBILE_KEY: &str = "mobile-key-0123456789abcdefghijklmnop";
const MOBILE_KEY_ROTATED: &str = "mobile-key-rotated-0123456789abcdefgh";
const OPS_KEY: &str = "ops-key-0123456789abcdefghijklmnopqrst";
const REVOKED_KEY: &str = "revoked-key-0123456789abcdefghijklmno";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hash(key: &str) -> String {
    portcullis::keys::config_hash(key)
}

fn config(up: &Upstream) -> String {
    format!(
        r#"
[security]
auth_failure_limit = {{ failures = 1000, per = "1m" }}

[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "corp"
issuer = "https://id.example.com"
audiences = ["orders-api"]
algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
jwks_file = "{jwks}"
leeway = "30s"

[[jwt_providers]]
name = "shared"
issuer = "https://hs.example.com"
audiences = ["orders-api"]
algorithms = ["HS256", "HS384", "HS512"]
secret_file = "hs.secret"

[[consumers]]
id = "mobile-app"
groups = ["partners"]
api_keys = ["{mobile}", "{mobile2}"]

[[consumers]]
id = "ops"
groups = ["staff"]
api_keys = ["{ops}"]

[[consumers]]
id = "alice"
groups = ["staff"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["jwt:corp", "jwt:shared", "api_key"]
allow = {{ groups = ["partners", "staff"], consumers = ["bob"] }}

[[routes]]
name = "scoped"
path_prefix = "/scoped"
upstream = "app"
auth = ["jwt:corp"]
allow = {{ scopes = ["orders:read", "orders:list"] }}

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "app"
auth = ["api_key"]
allow = {{ consumers = ["ops"] }}

[[routes]]
name = "nobody"
path_prefix = "/nobody"
upstream = "app"
auth = ["api_key"]

[[routes]]
name = "keeps"
path_prefix = "/keeps"
upstream = "app"
auth = ["api_key"]
allow = {{ consumers = ["*"] }}
keep_credentials = true
"#,
        up = up.addr,
        jwks = data("jwt/jwks.json"),
        mobile = hash(MOBILE_KEY),
        mobile2 = hash(MOBILE_KEY_ROTATED),
        ops = hash(OPS_KEY),
    )
}

fn start(up: &Upstream) -> Gateway {
    Gateway::start_with_files(&config(up), "", &[("hs.secret", HS_SECRET)])
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(data(&format!("jwt/{name}"))).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "iss": "https://id.example.com",
        "aud": "orders-api",
        "exp": now() + 600,
        "iat": now(),
        "scope": "orders:read orders:list",
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let key = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(&pem("rsa.pem")).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec256.pem")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&pem("ec384.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed25519.pem")).unwrap(),
        _ => EncodingKey::from_secret(HS_SECRET).unwrap(),
    };
    encode(&header, claims, &key).unwrap()
}

/// RS256 with the `rsa` key of the provider's JWKS.
fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa"), claims)
}

/// `claims("alice")` with `changes` applied; `Value::Null` removes the claim.
fn alice_with(changes: &[(&str, Value)]) -> Value {
    let mut c = claims("alice");
    for (name, value) in changes {
        match value {
            Value::Null => c.as_object_mut().unwrap().remove(*name),
            v => c
                .as_object_mut()
                .unwrap()
                .insert(name.to_string(), v.clone()),
        };
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header and signature, for attacks jsonwebtoken would not make.
fn forge(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

/// The same base64url text with its middle character changed to another one.
fn flip_middle(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    gw.raw(&request)
}

fn bearer(gw: &Gateway, path: &str, token: &str) -> HttpResponse {
    get_with(gw, path, &[("Authorization", &format!("Bearer {token}"))])
}

/// A refusal seen from both sides: status, problem body, reason metric, silent upstream.
fn assert_refused(
    gw: &Gateway,
    up: &Upstream,
    r: &HttpResponse,
    status: u16,
    route: &str,
    reason: &str,
) {
    let body = r.assert_problem(status);
    let family = if status == 401 {
        "portcullis_auth_failures_total"
    } else {
        "portcullis_authz_denials_total"
    };
    assert!(
        gw.wait_metric(family, &[("route", route), ("reason", reason)], 1.0) >= 1.0,
        "metric {family}{{route={route},reason={reason}}} missing; body {body}"
    );
    assert!(
        up.requests().is_empty(),
        "the upstream saw {:?}",
        up.requests()
    );
}

#[test]
fn valid_tokens_of_every_algorithm_family_pass_with_identity_headers() {
    let up = Upstream::start();
    let gw = start(&up);
    for (alg, kid) in [
        (Algorithm::RS256, Some("rsa")),
        (Algorithm::PS256, Some("rsa")),
        (Algorithm::ES256, Some("ec256")),
        (Algorithm::ES384, Some("ec384")),
        (Algorithm::EdDSA, Some("ed25519")),
        (Algorithm::RS256, None),
    ] {
        up.clear();
        let token = sign(alg, kid, &claims("alice"));
        let r = get_with(
            &gw,
            "/orders/1",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("X-Consumer-Id", "root"),
                ("X-Authenticated-Scopes", "admin"),
            ],
        );
        assert_eq!(r.status, 200, "{alg:?}: {}", r.text());
        let seen = &up.requests()[0];
        assert_eq!(seen.header("x-consumer-id"), Some("alice"), "{alg:?}");
        assert_eq!(seen.header_count("x-consumer-id"), 1);
        assert_eq!(seen.header("x-consumer-groups"), Some("staff"));
        assert_eq!(
            seen.header("x-authenticated-scopes"),
            Some("orders:read orders:list")
        );
        assert!(
            seen.header("authorization").is_none(),
            "the credential is removed"
        );
    }
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut c = claims("alice");
        c["iss"] = json!("https://hs.example.com");
        assert_eq!(
            bearer(&gw, "/orders/2", &sign(alg, None, &c)).status,
            200,
            "{alg:?}"
        );
    }
    // Scopes as an array, and a consumer not listed in [[consumers]] (no groups) on a scope rule.
    let mut c = claims("carol");
    c["scope"] = json!(["orders:read", "orders:list", "extra"]);
    up.clear();
    assert_eq!(
        bearer(&gw, "/scoped/x", &sign(Algorithm::ES256, Some("ec256"), &c)).status,
        200
    );
    assert_eq!(up.requests()[0].header("x-consumer-id"), Some("carol"));
    // No groups: the header is left out, not sent empty.
    assert!(up.requests()[0].header("x-consumer-groups").is_none());
    assert_eq!(
        up.requests()[0].header("x-authenticated-scopes"),
        Some("orders:read orders:list extra")
    );
}

#[test]
fn hostile_and_invalid_tokens_are_refused() {
    let up = Upstream::start();
    let gw = start(&up);
    let good = claims("alice");
    let valid = rs256(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let attacker_key = || EncodingKey::from_rsa_pem(&pem("attacker.pem")).unwrap();
    let attacker_jwk = || {
        let jwks: Value =
            serde_json::from_slice(&std::fs::read(data("jwt/attacker-jwks.json")).unwrap())
                .unwrap();
        serde_json::from_value(jwks["keys"][0].clone()).ok()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            forge(json!({"alg": "none", "typ": "JWT"}), &good, ""),
            "malformed_token",
        ),
        (
            "alg NONE",
            forge(json!({"alg": "NONE", "kid": "rsa"}), &good, ""),
            "malformed_token",
        ),
        (
            "alg None",
            forge(json!({"alg": "None"}), &good, &b64(b"sig")),
            "malformed_token",
        ),
        (
            "HS256 with the RSA public key",
            encode(
                &Header {
                    kid: Some("rsa".into()),
                    ..Header::new(Algorithm::HS256)
                },
                &good,
                &EncodingKey::from_secret(&pem("rsa.pub.pem")).unwrap(),
            )
            .unwrap(),
            "algorithm_not_allowed",
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(
                    alice_with(&[("sub", json!("admin")), ("scope", json!("everything"))])
                        .to_string()
                        .as_bytes()
                ),
                parts[2]
            ),
            "bad_signature",
        ),
        (
            "tampered signature",
            // A character in the middle: the last one may only carry base64 padding bits.
            format!("{}.{}.{}", parts[0], parts[1], flip_middle(parts[2])),
            "bad_signature",
        ),
        (
            "truncated",
            format!("{}.{}", parts[0], parts[1]),
            "malformed_token",
        ),
        ("bad base64", "!!!.???.***".to_string(), "malformed_token"),
        (
            "expired",
            rs256(&alice_with(&[("exp", json!(now() - 3600))])),
            "token_expired",
        ),
        (
            "nbf in the future",
            rs256(&alice_with(&[("nbf", json!(now() + 3600))])),
            "token_not_yet_valid",
        ),
        (
            "wrong iss",
            rs256(&alice_with(&[("iss", json!("https://evil.example.com"))])),
            "wrong_issuer",
        ),
        (
            "wrong aud",
            rs256(&alice_with(&[("aud", json!("other-api"))])),
            "wrong_audience",
        ),
        (
            "missing exp",
            rs256(&alice_with(&[("exp", Value::Null)])),
            "missing_claim",
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("nope"), &good),
            "unknown_kid",
        ),
        (
            "alg not allowed",
            sign(Algorithm::RS512, Some("rsa"), &good),
            "algorithm_not_allowed",
        ),
        (
            "jku to an attacker key",
            encode(
                &Header {
                    kid: Some("attacker".into()),
                    jku: Some(format!("http://{}/attacker-jwks.json", up.addr)),
                    ..Header::new(Algorithm::RS256)
                },
                &good,
                &attacker_key(),
            )
            .unwrap(),
            "unknown_kid",
        ),
        (
            "embedded jwk",
            encode(
                &Header {
                    jwk: attacker_jwk(),
                    ..Header::new(Algorithm::RS256)
                },
                &good,
                &attacker_key(),
            )
            .unwrap(),
            "bad_signature",
        ),
        (
            "9 KiB token",
            format!("{}.{}.{}", parts[0], "A".repeat(9 * 1024), parts[2]),
            "token_too_long",
        ),
    ];
    for (name, token, reason) in cases {
        up.clear();
        let r = bearer(&gw, "/orders/1", &token);
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert_refused(&gw, &up, &r, 401, "orders", reason);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("Bearer realm=\"portcullis\""),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains("error=\"invalid_"),
            "{name}: {challenge}"
        );
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(
            !detail.contains(&token[..token.len().min(20)]),
            "{name}: detail echoes the token"
        );
    }
    // The token in the query string is refused even when it is valid.
    let r = gw.get(&format!("/orders/1?access_token={valid}"));
    assert_refused(&gw, &up, &r, 401, "orders", "credential_in_query");
    // And the valid token in the header passes: the refusals were about the tokens.
    assert_eq!(bearer(&gw, "/orders/1", &valid).status, 200);
}

/// `leeway = "30s"` on the corp provider: a token 25 s past `exp` or 25 s before `nbf` is
/// accepted, one 35 s past or before is refused (5 s either side of the edge for clock ticks).
#[test]
fn leeway_is_honoured_on_both_edges_of_exp_and_nbf() {
    let up = Upstream::start();
    let gw = start(&up);
    let with = |claim: &str, value: u64| {
        let mut c = claims("alice");
        c[claim] = json!(value);
        sign(Algorithm::ES256, Some("ec256"), &c)
    };
    for (what, token) in [
        ("exp 25 s ago", with("exp", now() - 25)),
        ("nbf in 25 s", with("nbf", now() + 25)),
    ] {
        up.clear();
        let r = bearer(&gw, "/scoped/leeway", &token);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = up.requests();
        assert_eq!(seen.len(), 1, "{what}");
        assert_eq!(seen[0].header("x-consumer-id"), Some("alice"), "{what}");
    }
    for (what, token, reason) in [
        ("exp 35 s ago", with("exp", now() - 35), "token_expired"),
        (
            "nbf in 35 s",
            with("nbf", now() + 35),
            "token_not_yet_valid",
        ),
    ] {
        up.clear();
        let r = bearer(&gw, "/scoped/leeway", &token);
        assert_refused(&gw, &up, &r, 401, "scoped", reason);
        assert!(r.header("www-authenticate").is_some(), "{what}");
    }
}

#[test]
fn api_keys_valid_rotated_unknown_revoked_and_near_misses() {
    let up = Upstream::start();
    let gw = start(&up);
    for key in [MOBILE_KEY, MOBILE_KEY_ROTATED] {
        up.clear();
        let r = get_with(&gw, "/orders/1", &[("X-API-Key", key)]);
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = &up.requests()[0];
        assert_eq!(seen.header("x-consumer-id"), Some("mobile-app"));
        assert_eq!(seen.header("x-consumer-groups"), Some("partners"));
        // An API key carries no scopes: the header is left out, not sent empty.
        assert!(seen.header("x-authenticated-scopes").is_none());
        assert!(seen.header("x-api-key").is_none());
    }
    up.clear();
    let r = get_with(
        &gw,
        "/orders/1",
        &[("Authorization", &format!("ApiKey {MOBILE_KEY}"))],
    );
    assert_eq!(r.status, 200);
    assert!(up.requests()[0].header("authorization").is_none());

    let mut near = MOBILE_KEY.to_string();
    near.pop();
    near.push('X');
    for (name, key) in [
        ("unknown", "no-such-key-0123456789abcdefghijklmn"),
        ("revoked", REVOKED_KEY),
        ("near miss", near.as_str()),
    ] {
        up.clear();
        let r = get_with(&gw, "/orders/1", &[("X-API-Key", key)]);
        assert_eq!(r.status, 401, "{name}");
        assert_refused(&gw, &up, &r, 401, "orders", "unknown_api_key");
        assert_eq!(
            r.json()["detail"],
            "the API key is not valid",
            "{name}: same answer for every wrong key"
        );
        assert!(r.header("www-authenticate").unwrap().contains("ApiKey"));
    }
    up.clear();
    let r = gw.get(&format!("/orders/1?api_key={MOBILE_KEY}"));
    assert_refused(&gw, &up, &r, 401, "orders", "credential_in_query");
    let r = get_with(
        &gw,
        "/orders/1",
        &[("X-API-Key", MOBILE_KEY), ("X-API-Key", OPS_KEY)],
    );
    assert_refused(&gw, &up, &r, 401, "orders", "malformed_api_key");
    // keep_credentials forwards the key.
    let r = get_with(&gw, "/keeps/1", &[("X-API-Key", MOBILE_KEY)]);
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[0].header("x-api-key"), Some(MOBILE_KEY));
}

/// What a request of a table test carries.
enum Credential {
    ApiKey(&'static str),
    Jwt(Value),
    Nothing,
}

/// What a table test expects: forwarded once, or refused (status, route label, reason).
enum Expect {
    Forwarded,
    Refused(u16, &'static str, &'static str),
}

#[test]
fn acl_groups_consumers_scopes_and_deny_by_default() {
    use Credential::*;
    use Expect::*;
    let up = Upstream::start();
    let gw = start(&up);
    let cases = [
        (
            "in an allowed group",
            "/orders/1",
            ApiKey(MOBILE_KEY),
            Forwarded,
        ),
        (
            "not among /admin's consumers",
            "/admin/1",
            ApiKey(MOBILE_KEY),
            Refused(403, "admin", "consumer_not_allowed"),
        ),
        (
            "among /admin's consumers",
            "/admin/1",
            ApiKey(OPS_KEY),
            Forwarded,
        ),
        (
            "a JWT subject in no group on a group rule",
            "/orders/1",
            Jwt(claims("mallory")),
            Refused(403, "orders", "consumer_not_allowed"),
        ),
        (
            "listed by name though in no group",
            "/orders/1",
            Jwt(claims("bob")),
            Forwarded,
        ),
        (
            "one scope short",
            "/scoped/1",
            Jwt(alice_with(&[("scope", json!("orders:read"))])),
            Refused(403, "scoped", "missing_scope"),
        ),
        (
            "a route with no allow rule: deny by default",
            "/nobody/1",
            ApiKey(MOBILE_KEY),
            Refused(403, "nobody", "no_allow_rule"),
        ),
        (
            "no credentials on a non-public route",
            "/orders/1",
            Nothing,
            Refused(401, "orders", "no_credentials"),
        ),
    ];
    for (what, path, credential, expect) in cases {
        up.clear();
        let r = match &credential {
            ApiKey(key) => get_with(&gw, path, &[("X-API-Key", key)]),
            Jwt(claims) => bearer(&gw, path, &rs256(claims)),
            Nothing => gw.get(path),
        };
        match expect {
            Forwarded => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(up.requests().len(), 1, "{what}");
            }
            Refused(status, route, reason) => {
                assert_eq!(r.status, status, "{what}: {}", r.text());
                assert_refused(&gw, &up, &r, status, route, reason);
            }
        }
        if let Nothing = credential {
            // The challenge names every method the route accepts.
            let challenge = r.header("www-authenticate").unwrap();
            assert!(
                challenge.contains("Bearer") && challenge.contains("ApiKey"),
                "{challenge}"
            );
        }
    }
}

#[test]
fn brute_force_throttle_blocks_one_ip_until_the_window_passes() {
    let up = Upstream::start();
    let body = config(&up).replace(
        "failures = 1000, per = \"1m\"",
        "failures = 3, per = \"2s\"",
    );
    let gw = Gateway::start_with_files(
        &body,
        "trusted_proxies = [\"127.0.0.1\"]",
        &[("hs.secret", HS_SECRET)],
    );
    let from = |ip: &str, key: &str| {
        get_with(
            &gw,
            "/orders/1",
            &[("X-Forwarded-For", ip), ("X-API-Key", key)],
        )
    };
    for _ in 0..3 {
        assert_eq!(
            from("198.51.100.1", "wrong-key-0123456789abcdefghijklmnopq").status,
            401
        );
    }
    up.clear();
    // Even the valid key is refused now, before it is checked.
    let r = from("198.51.100.1", MOBILE_KEY);
    r.assert_problem(429);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry), "Retry-After {retry}");
    assert!(up.requests().is_empty());
    assert!(
        gw.wait_metric(
            "portcullis_auth_failures_total",
            &[("reason", "auth_failures_throttled")],
            1.0
        ) >= 1.0
    );
    // Another IP is unaffected.
    assert_eq!(from("198.51.100.2", MOBILE_KEY).status, 200);
    // A client that obeys Retry-After gets through (bounded wait).
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    std::thread::sleep(Duration::from_secs(retry));
    let mut status = from("198.51.100.1", MOBILE_KEY).status;
    while status == 429 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        status = from("198.51.100.1", MOBILE_KEY).status;
    }
    assert_eq!(status, 200);
}

#[test]
fn access_log_never_contains_credentials() {
    let up = Upstream::start();
    let gw = start(&up);
    let token = rs256(&claims("alice"));
    bearer(&gw, "/orders/jwt", &token);
    bearer(&gw, "/orders/garbage", "garbage.token.value");
    get_with(&gw, "/orders/key", &[("X-API-Key", MOBILE_KEY)]);
    get_with(&gw, "/orders/revoked", &[("X-API-Key", REVOKED_KEY)]);
    gw.get(&format!(
        "/orders/query?api_key={MOBILE_KEY}&access_token={token}"
    ));
    let mut log = String::new();
    assert!(wait_until(Duration::from_secs(5), || {
        log = gw.access_log();
        log.lines().count() >= 5
    }));
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token.as_str(),
        signature,
        MOBILE_KEY,
        REVOKED_KEY,
        "garbage.token.value",
        "Bearer",
        "ApiKey",
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the access log:\n{log}"
        );
    }
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Lines are written as requests finish, not necessarily in the order they were sent.
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with(path)))
            .unwrap_or_else(|| panic!("no line for {path}: {log}"))
    };
    assert_eq!(line("/orders/jwt")["consumer"], "alice");
    assert_eq!(line("/orders/jwt")["auth"], "jwt:corp");
    assert_eq!(line("/orders/garbage")["decision"], "malformed_token");
    assert_eq!(line("/orders/key")["auth"], "api_key");
    assert_eq!(line("/orders/key")["consumer"], "mobile-app");
    assert_eq!(line("/orders/revoked")["decision"], "unknown_api_key");
    assert_eq!(line("/orders/query")["decision"], "credential_in_query");
    assert!(!gw.stderr().contains(MOBILE_KEY) && !gw.stderr().contains(signature));
}

/// API keys with a label and a `not_after` (issue 36, item 5): the label names the key in the
/// access log and the metrics, an expired key is refused with its own reason, and `check`
/// warns about keys that expire within 14 days.
#[test]
fn labelled_keys_are_named_and_expired_ones_refused() {
    const CURRENT: &str = "k-current-7Hq2mZpX9vLw4RtY8uN3cB6dF1gJ5";
    const OLD: &str = "k-old-7Hq2mZpX9vLw4RtY8uN3cB6dF1gJ5sKe0";
    const SOON: &str = "k-soon-7Hq2mZpX9vLw4RtY8uN3cB6dF1gJ5sKe";
    let up = Upstream::start();
    let in_days = |days: i64| {
        let t = SystemTime::now() + Duration::from_secs((days.max(0) * 86_400) as u64)
            - Duration::from_secs((-days.min(0) * 86_400) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let body = format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{up}"]

[[consumers]]
id = "ci"
api_keys = [
  {{ hash = "{current}", label = "ci-2027", not_after = "{far}" }},
  {{ hash = "{old}", label = "ci-2025", not_after = "{past}" }},
  {{ hash = "{soon}", label = "ci-rotating", not_after = "{near}" }},
]

[[routes]]
name = "deploy"
path_prefix = "/deploy"
upstream = "app"
auth = ["api_key"]
allow = {{ consumers = ["ci"] }}
"#,
        up = up.addr,
        current = portcullis::keys::config_hash(CURRENT),
        old = portcullis::keys::config_hash(OLD),
        soon = portcullis::keys::config_hash(SOON),
        far = in_days(300),
        past = in_days(-2),
        near = in_days(3),
    );
    let gw = Gateway::start(&body);
    let get = |key: &str| {
        gw.raw(&format!(
            "GET /deploy/x HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        ))
    };
    let ok = get(CURRENT);
    assert_eq!(ok.status, 200);
    assert_eq!(get(SOON).status, 200, "expiring soon is still valid");
    let expired = get(OLD);
    let problem = expired.assert_problem(401);
    assert_eq!(problem["detail"], "the API key has expired");
    assert_eq!(
        up.requests().len(),
        2,
        "the expired key reached the upstream"
    );
    let line = gw.access_line(ok.header("X-Request-Id").unwrap());
    assert_eq!(line["key_label"], "ci-2027");
    assert_eq!(line["consumer"], "ci");
    let refused = gw.access_line(expired.header("X-Request-Id").unwrap());
    assert_eq!(refused["decision"], "expired_api_key");
    assert!(!gw.access_log().contains(CURRENT) && !gw.access_log().contains(OLD));
    assert_eq!(
        gw.wait_metric(
            "portcullis_api_key_requests_total",
            &[("route", "deploy"), ("label", "ci-2027")],
            1.0
        ),
        1.0
    );
    assert_eq!(
        gw.wait_metric(
            "portcullis_auth_failures_total",
            &[("route", "deploy"), ("reason", "expired_api_key")],
            1.0
        ),
        1.0
    );

    // `check` names both keys; --strict fails on them.
    let path = gw.path().join("keys.toml");
    std::fs::write(
        &path,
        format!("[[listeners]]\naddress = \"127.0.0.1:18080\"\n{body}"),
    )
    .unwrap();
    let (code, out, err) = cli(&["check", "--strict", "-c", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("consumers[0].api_keys[1].not_after") && err.contains("has expired"),
        "{err}"
    );
    assert!(
        err.contains("consumers[0].api_keys[2].not_after") && err.contains("expires in 3 day(s)"),
        "{err}"
    );
    assert!(!err.contains("api_keys[0]"), "{err}");
}
