//! OpenID Connect discovery: a provider names `discovery` instead of `issuer` + `jwks_url`. A
//! real document server on loopback serves the discovery document and the key sets it points
//! at. The document's issuer must be the provider's exactly, its `jwks_uri` https or loopback;
//! a document that fails either check loads no keys (its JWKS is never fetched), and a failed
//! refresh keeps the last good `jwks_uri` and keys. `/readyz` names the discovery address.

mod harness;

use harness::*;
use serde_json::json;
use std::time::Duration;

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// The issuer a discovery address on `docs` implies.
fn issuer_of(docs: &DocServer) -> String {
    format!("http://{}", docs.addr)
}

fn discovery_doc(issuer: &str, jwks_uri: &str) -> String {
    json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string()
}

fn token(iss: &str, kid: &str, pem_file: &str) -> String {
    let claims = json!({"sub": "alice", "iss": iss, "aud": "orders-api", "exp": unix_now() + 600});
    rs256_token(kid, pem_file, &claims)
}

/// `providers` (TOML) guarding `/orders` with `auth`, on upstream `up`.
fn config(up: &Upstream, providers: &str, auth: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
targets = ["{up}"]

{providers}

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = {auth}
allow = {{ consumers = ["*"] }}
"#,
        up = up.addr
    )
}

fn provider(name: &str, discovery: &str, extra: &str) -> String {
    format!(
        "[[jwt_providers]]\nname = \"{name}\"\naudiences = [\"orders-api\"]\nalgorithms = [\"RS256\"]\ndiscovery = \"{discovery}\"\n{extra}\n"
    )
}

fn jwks(name: &str) -> String {
    std::fs::read_to_string(data(&format!("jwt/{name}"))).unwrap()
}

#[test]
fn discovery_finds_the_keys_follows_rotation_and_keeps_the_last_good_document() {
    let up = Upstream::start();
    let docs = DocServer::start("not found");
    let issuer = issuer_of(&docs);
    let first = format!("{issuer}/keys/1");
    docs.set_path(WELL_KNOWN, 200, &discovery_doc(&issuer, &first));
    docs.set_path("/keys/1", 200, &jwks("jwks.json"));
    let discovery = format!("{issuer}{WELL_KNOWN}");
    let gw = Gateway::start(&config(
        &up,
        &provider(
            "corp",
            &discovery,
            "jwks_refresh = \"10s\"\ntoken_cache = 0",
        ),
        "[\"jwt:corp\"]",
    ));
    let good = token(&issuer, "rsa", "rsa.pem");
    assert!(
        wait_until(Duration::from_secs(10), || bearer_get(gw.port, &good)
            .status
            == 200),
        "the keys the document points at are loaded"
    );
    assert!(docs.hits_of(WELL_KNOWN) >= 1 && docs.hits_of("/keys/1") >= 1);
    let seen = up.requests();
    assert_eq!(seen.last().unwrap().header("x-consumer-id"), Some("alice"));

    // /readyz names where the keys came from.
    let ready = gw.readyz();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let corp = readyz_check(&ready.json(), "jwt provider corp");
    assert_eq!(corp["ok"], true);
    let count = serde_json::from_str::<serde_json::Value>(&jwks("jwks.json")).unwrap()["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        corp["detail"],
        format!("{count} key(s) loaded from {first}, discovery {discovery}")
    );

    // The issuer is the discovered one, exactly: a token of another issuer signed with the same
    // key is refused, and the upstream sees nothing.
    up.clear();
    for other in [
        "https://id.example.com".to_string(),
        format!("{issuer}/"),
        issuer.to_uppercase(),
    ] {
        let r = bearer_get(gw.port, &token(&other, "rsa", "rsa.pem"));
        let v = r.assert_problem(401);
        assert_eq!(v["detail"], "the token's issuer is not accepted", "{other}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    assert!(up.requests().is_empty());

    // The provider rotates to a new key set at a new address; the first token with the new
    // kid makes the gateway read the document again and follow it.
    docs.set_path(
        WELL_KNOWN,
        200,
        &discovery_doc(&issuer, &format!("{issuer}/keys/2")),
    );
    docs.set_path("/keys/2", 200, &jwks("jwks-rotated.json"));
    let rotated = token(&issuer, "rotated", "rotated.pem");
    let r = bearer_get(gw.port, &rotated);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(docs.hits_of("/keys/2"), 1);
    assert!(
        gw.stderr().contains("now names the JWKS"),
        "{}",
        gw.stderr()
    );

    // Now the document goes bad — another issuer — and then away. Each scheduled refresh
    // fails, is counted, and keeps the last good jwks_uri: the keys there are still refreshed
    // and still verify.
    let failures = |gw: &Gateway| {
        gw.metric(
            "portcullis_jwks_refresh_failures_total",
            &[("provider", "corp")],
        )
        .unwrap_or(0.0)
    };
    let fetched = docs.hits_of("/keys/2");
    docs.set_path(
        WELL_KNOWN,
        200,
        &discovery_doc("https://evil.example", "http://127.0.0.1:1/keys"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || failures(&gw) >= 1.0),
        "a refresh read the bad document"
    );
    assert!(
        wait_until(Duration::from_secs(5), || docs.hits_of("/keys/2") > fetched),
        "the keys at the last good jwks_uri are still refreshed"
    );
    up.clear();
    let r = bearer_get(gw.port, &rotated);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
    let ready = gw.readyz();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let detail = readyz_check(&ready.json(), "jwt provider corp")["detail"].to_string();
    assert!(
        detail.contains(&format!("loaded from {issuer}/keys/2")),
        "{detail}"
    );
    assert!(detail.contains("must match exactly"), "{detail}");
    assert!(gw.stderr().contains("keeping the last good jwks_uri"));

    docs.set_path(WELL_KNOWN, 500, "{}");
    let before = failures(&gw);
    assert!(wait_until(Duration::from_secs(20), || failures(&gw) > before));
    let r = bearer_get(gw.port, &rotated);
    assert_eq!(r.status, 200, "{}", r.text());
    bearer_get(gw.port, &good).assert_problem(401);
}

/// Documents that fail their checks load no keys at all: the JWKS they name is never fetched,
/// tokens are refused with nothing reaching the upstream, and `/readyz` says why.
#[test]
fn a_document_that_fails_its_checks_loads_no_keys() {
    let up = Upstream::start();
    let docs = DocServer::start("not found");
    let issuer = issuer_of(&docs);
    let keys = format!("{issuer}/keys");
    docs.set_path("/keys", 200, &jwks("jwks.json"));
    // Each provider's discovery document lives at its own path below the same server, so the
    // issuer is configured (an address elsewhere than the well-known path needs one).
    let cases = [
        (
            "mismatch",
            discovery_doc("https://evil.example", &keys),
            "must match exactly",
        ),
        (
            "slash",
            discovery_doc(&format!("{issuer}/"), &keys),
            "must match exactly",
        ),
        (
            "plain",
            discovery_doc(&issuer, "http://id.example.com/keys"),
            "plain http",
        ),
        (
            "nokeys",
            json!({ "issuer": issuer }).to_string(),
            "no jwks_uri",
        ),
        (
            "broken",
            "{ not json".to_string(),
            "not a discovery document",
        ),
        (
            "huge",
            format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024)),
            "larger than",
        ),
    ];
    let mut providers = String::new();
    let mut auth = Vec::new();
    for (name, doc, _) in &cases {
        let path = format!("/{name}/openid-configuration");
        docs.set_path(&path, 200, doc);
        providers.push_str(&provider(
            name,
            &format!("{issuer}{path}"),
            &format!("issuer = \"{issuer}\""),
        ));
        auth.push(format!("\"jwt:{name}\""));
    }
    providers.push_str(&provider("down", &format!("{issuer}/down{WELL_KNOWN}"), ""));
    docs.set_path(&format!("/down{WELL_KNOWN}"), 503, "{}");
    auth.push("\"jwt:down\"".into());
    let gw = Gateway::start(&config(&up, &providers, &format!("[{}]", auth.join(", "))));

    let mut last = serde_json::Value::Null;
    let all_tried = wait_until(Duration::from_secs(10), || {
        last = gw.readyz().json();
        last["checks"].as_array().is_some_and(|c| {
            c.iter()
                .filter(|c| c["detail"].to_string().contains("failed"))
                .count()
                == 7
        })
    });
    assert!(all_tried, "{last}");
    assert_eq!(last["status"], "not_ready");
    for (name, _, why) in cases
        .iter()
        .chain([&("down", String::new(), "HTTP status 503")])
    {
        let check = readyz_check(&last, &format!("jwt provider {name}"));
        assert_eq!(check["ok"], false, "{check}");
        let detail = check["detail"].as_str().unwrap();
        assert!(detail.starts_with("no keys yet, discovery "), "{detail}");
        assert!(detail.contains(why), "{name}: {detail}");
    }
    assert_eq!(
        docs.hits_of("/keys"),
        0,
        "no document named a JWKS that passed"
    );
    let r = bearer_get(gw.port, &token(&issuer, "rsa", "rsa.pem"));
    r.assert_problem(401);
    assert!(up.requests().is_empty());
    assert_eq!(docs.hits_of("/keys"), 0);
}
