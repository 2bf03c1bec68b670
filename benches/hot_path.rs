//! Criterion micro-benchmarks of each hot-path step, in SPEC order: path normalisation and
//! route match (10 and 1,000 routes), JWT verification per algorithm family (and a cached
//! token), a cached token introspection answer, a DPoP proof, API-key lookup, the ACL decision, the rate-limit check, JSON validation with a
//! schema (1 KiB and 64 KiB bodies), the built-in rules on a GET, a JSON order and a form, one
//! access-log line, and the SecLang engine running CRS v4 at PL1 on a benign GET and a 1 KiB JSON POST.
//!
//! Run: `cargo bench --bench hot_path` (add a filter, e.g. `-- jwt`). See BENCHMARKS.md.

#[path = "shared/requests.rs"]
mod requests;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
use portcullis::checks::acl::authorize;
use portcullis::checks::acl::Allow;
use portcullis::checks::auth::api_key::ApiKeyIndex;
use portcullis::checks::auth::jwt::{self, JwtProvider};
use portcullis::checks::auth::key_store::{self, JwtKey, KeySet, KeyStore};
use portcullis::checks::auth::token_cache::{unix_now, TokenCache};
use portcullis::checks::auth::Principal;
use portcullis::checks::body::{check_json, BodyRules};
use portcullis::checks::path::normalise;
use portcullis::checks::rate_limit::{LimitKey, Policy, RateLimits, Subject};
use portcullis::checks::route::{PathMatch, Route, RouteTable};
use portcullis::observe::access_log::AccessRecord;
use std::hint::black_box;
use std::sync::Arc;

fn data(rel: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    let raw = "/v1/service-7/items/./1234//details/%7Eview";
    g.bench_function("normalise", |b| b.iter(|| normalise(black_box(raw)).ok()));
    for n in [10usize, 1000] {
        let table = RouteTable::new(
            (0..n)
                .map(|i| {
                    let mut r = Route::public(
                        &format!("route-{i}"),
                        PathMatch::Prefix(format!("/v1/service-{i}/items")),
                        0,
                    );
                    r.methods = Some(vec![http::Method::GET, http::Method::POST]);
                    r
                })
                .collect(),
        );
        let hit = format!("/v1/service-{}/items/1234/details", n / 2);
        g.bench_with_input(BenchmarkId::new("match", n), &hit, |b, path| {
            b.iter(|| {
                table
                    .match_request(None, black_box(path), &http::Method::GET)
                    .ok()
            })
        });
        let miss = "/v2/unknown/path/with/several/segments";
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, path| {
            b.iter(|| {
                table
                    .match_request(None, black_box(path), &http::Method::GET)
                    .ok()
            })
        });
    }
    g.finish();
}

fn provider(alg: Algorithm, keys: KeySet, cache: usize) -> JwtProvider {
    JwtProvider {
        name: "bench".into(),
        label: "jwt:bench".into(),
        algorithms: vec![alg],
        validations: jwt::validations(&[alg], Some("https://id.bench"), &["api".into()], 30),
        keys: Arc::new(KeyStore::new(keys)),
        consumer_claim: "sub".into(),
        scopes_claim: "scope".into(),
        leeway: 30,
        cache: TokenCache::new(cache),
    }
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let claims = serde_json::json!({
        "iss": "https://id.bench", "aud": "api", "sub": "bench-user",
        "exp": unix_now() + 3600, "scope": "orders:read orders:write",
    });
    encode(&header, &claims, key).expect("a signed token")
}

fn jwts(c: &mut Criterion) {
    let mut g = c.benchmark_group("jwt_verify");
    let jwks = || {
        let text = String::from_utf8(data("jwt/jwks.json")).expect("UTF-8");
        key_store::parse_jwks(&text).expect("the test JWKS")
    };
    let secret = b"0123456789abcdef0123456789abcdef-bench-secret";
    let hs = KeySet::new(vec![JwtKey {
        kid: None,
        alg: None,
        key: DecodingKey::from_secret(secret).expect("an HMAC key"),
    }]);
    let cases = [
        (
            "HS256",
            Algorithm::HS256,
            None,
            EncodingKey::from_secret(secret).expect("an HMAC key"),
            Some(hs),
        ),
        (
            "RS256",
            Algorithm::RS256,
            Some("rsa"),
            EncodingKey::from_rsa_pem(&data("jwt/rsa.pem")).expect("RSA key"),
            None,
        ),
        (
            "ES256",
            Algorithm::ES256,
            Some("ec256"),
            EncodingKey::from_ec_pem(&data("jwt/ec256.pem")).expect("EC key"),
            None,
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            Some("ed25519"),
            EncodingKey::from_ed_pem(&data("jwt/ed25519.pem")).expect("Ed25519 key"),
            None,
        ),
    ];
    for (name, alg, kid, key, keys) in cases {
        let t = token(alg, kid, &key);
        let p = provider(alg, keys.unwrap_or_else(jwks), 0);
        assert!(p.verify(&t).is_ok(), "{name} token verifies");
        g.bench_function(name, |b| b.iter(|| p.verify(black_box(&t))));
    }
    let t = token(
        Algorithm::ES256,
        Some("ec256"),
        &EncodingKey::from_ec_pem(&data("jwt/ec256.pem")).expect("EC key"),
    );
    let cached = provider(Algorithm::ES256, jwks(), 10_000);
    assert!(cached.verify(&t).is_ok());
    g.bench_function("ES256 cached", |b| b.iter(|| cached.verify(black_box(&t))));
    g.finish();
}

/// An introspection endpoint that answers every call `answer` (a thread on loopback, one
/// connection at a time): enough to fill a provider's cache for the benchmark.
fn answering_endpoint(answer: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    addr
}

/// Token introspection: the cost of a request whose token's answer is in the cache (the
/// endpoint was asked once, before timing), beside a cache miss of a token never seen.
fn introspection(c: &mut Criterion) {
    use portcullis::checks::auth::introspection::{
        Answer, EndpointSource, IntrospectionProvider, Settings,
    };
    let addr = answering_endpoint(
        r#"{"active":true,"sub":"alice","scope":"orders:read orders:write","aud":"orders-api"}"#,
    );
    let url = format!("http://{addr}/introspect");
    let endpoint = EndpointSource::Fixed {
        url: portcullis::outbound::parse_url(&url).expect("url"),
        text: url,
    };
    let provider = IntrospectionProvider::new(
        endpoint,
        Settings {
            name: "bench".into(),
            client_id: "gateway".into(),
            client_secret: b"secret".to_vec(),
            issuer: None,
            audiences: vec!["orders-api".into()],
            consumer_claim: "sub".into(),
            scopes_claim: "scope".into(),
            cache_ttl: std::time::Duration::from_secs(3600),
            negative_cache_ttl: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(5),
            cache_entries: 10_000,
        },
    );
    let token = "2YotnFZFEjr1zCsicMWpAA-an-opaque-access-token-of-typical-length";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let first = runtime.block_on(provider.introspect(token));
    assert!(matches!(first, Answer::Active(_)), "{first:?}");
    assert!(matches!(provider.cached(token), Some(Answer::Active(_))));
    let mut g = c.benchmark_group("introspection");
    g.bench_function("cached hit", |b| {
        b.iter(|| provider.cached(black_box(token)))
    });
    g.bench_function("cache miss (lookup only)", |b| {
        b.iter(|| provider.cached(black_box("a-token-nobody-has-introspected")))
    });
    g.finish();
}

/// DPoP (RFC 9449): verifying one proof — header, public key, signature, thumbprint, claims —
/// for an ES256 and an RS256 key, and the replay cache's record of its `jti`.
fn dpop(c: &mut Criterion) {
    use base64::Engine;
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    use portcullis::checks::auth::sender::{
        verify, Confirmation, DpopSettings, ReplayCache, Scheme, Target,
    };
    use sha2::Digest;
    let token = "an-access-token-bound-to-the-client-key";
    let mut req = pingora_http::RequestHeader::build("GET", b"/orders/1", None).unwrap();
    req.insert_header("Host", "api.example.com").unwrap();
    let mut g = c.benchmark_group("dpop");
    for (name, alg, key) in [
        (
            "verify ES256 proof",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&data("jwt/ec256.pem")).expect("EC key"),
        ),
        (
            "verify RS256 proof",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&data("jwt/rsa.pem")).expect("RSA key"),
        ),
    ] {
        let jwk = Jwk::from_encoding_key(&key, alg).expect("a public JWK");
        let cnf = Confirmation {
            jkt: Some(jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint")),
            ..Confirmation::default()
        };
        let mut header = Header::new(alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(jwk);
        let claims = serde_json::json!({
            "jti": "bench", "htm": "GET", "htu": "https://api.example.com/orders/1",
            "iat": unix_now(),
            "ath": base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(token.as_bytes())),
        });
        let proof = encode(&header, &claims, &key).expect("a proof");
        let mut req = req.clone();
        req.insert_header("DPoP", proof).unwrap();
        let target = Target {
            req: &req,
            scheme: "https",
            cert: None,
            now: unix_now(),
        };
        let settings = DpopSettings::default();
        assert!(verify(Scheme::Dpop, token, Some(&cnf), false, &target, &settings).is_ok());
        g.bench_function(name, |b| {
            b.iter(|| {
                verify(
                    Scheme::Dpop,
                    black_box(token),
                    Some(&cnf),
                    false,
                    &target,
                    &settings,
                )
            })
        });
    }
    // `[security] dpop_nonce`: what checking a proof's nonce adds to its verification.
    let nonces = portcullis::checks::auth::dpop_nonce::NonceIssuer::new(
        b"a-nonce-secret-of-at-least-32-bytes!",
        std::time::Duration::from_secs(60),
    )
    .expect("a nonce issuer");
    let now = unix_now();
    let current = nonces.current(now);
    let previous = nonces.current(now - 60);
    g.bench_function("nonce check, current", |b| {
        b.iter(|| nonces.check(Some(black_box(current.as_str())), now))
    });
    g.bench_function("nonce check, previous window", |b| {
        b.iter(|| nonces.check(Some(black_box(previous.as_str())), now))
    });
    let cache = ReplayCache::new(200_000);
    let mut n = 0u64;
    g.bench_function("replay cache, a new jti", |b| {
        b.iter(|| {
            n += 1;
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&n.to_le_bytes());
            cache.first_use(&portcullis::checks::auth::sender::ProofSeen {
                key,
                ttl: std::time::Duration::from_secs(70),
                next_nonce: None,
            })
        })
    });
    g.finish();
}

fn api_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("api_key");
    for n in [10usize, 1000] {
        let mut index = ApiKeyIndex::default();
        for i in 0..n {
            let hash = portcullis::keys::config_hash(&format!("key-number-{i}-0123456789abcdef"));
            let parsed = portcullis::checks::auth::api_key::parse_hash(&hash).expect("a hash");
            let entry = portcullis::checks::auth::api_key::ApiKeyEntry {
                consumer: i as u32,
                label: None,
                not_after: None,
            };
            index.insert(parsed, entry).expect("distinct keys");
        }
        let present = format!("key-number-{}-0123456789abcdef", n / 2);
        assert!(index.find(&present).is_some());
        g.bench_with_input(BenchmarkId::new("lookup", n), &present, |b, k| {
            b.iter(|| index.find(black_box(k)))
        });
    }
    g.finish();
}

fn acl(c: &mut Criterion) {
    let allow = Allow {
        any_consumer: false,
        consumers: vec!["ops".into(), "billing".into()],
        groups: vec!["partners".into(), "staff".into()],
        scopes: vec!["orders:write".into()],
    };
    let who = Principal {
        consumer: "bench-user".into(),
        groups: vec!["customers".into(), "staff".into()],
        scopes: vec!["orders:read".into(), "orders:write".into()],
        method: "jwt:bench".into(),
        key_label: None,
        token_scheme: None,
        confirmation: None,
        dpop_nonce: None,
    };
    c.bench_function("acl/allow", |b| {
        b.iter(|| authorize(Some(black_box(&allow)), black_box(&who)).is_ok())
    });
}

/// Step 1's trace context: a client's traceparent kept, or a trace started.
fn trace_context(c: &mut Criterion) {
    use portcullis::request::trace;
    let mut g = c.benchmark_group("trace");
    let id = "0af7651916cd43dd8448eb211c80319c";
    let mut kept = pingora_http::RequestHeader::build("GET", b"/v1/orders", None).unwrap();
    kept.append_header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .unwrap();
    kept.append_header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        .unwrap();
    let none = pingora_http::RequestHeader::build("GET", b"/v1/orders", None).unwrap();
    g.bench_function("kept", |b| {
        b.iter(|| trace::check(black_box(&kept), id, trace::TraceTrust::Anyone, false))
    });
    g.bench_function("started", |b| {
        b.iter(|| trace::check(black_box(&none), id, trace::TraceTrust::Anyone, false))
    });
    g.finish();
}

fn rate_limits(c: &mut Criterion) {
    let limits = RateLimits::new(vec![
        Policy::new(
            "orders-0".into(),
            u32::MAX / 2,
            std::time::Duration::from_secs(1),
            LimitKey::Consumer,
        ),
        Policy::new(
            "orders-1".into(),
            u32::MAX / 2,
            std::time::Duration::from_secs(60),
            LimitKey::Ip,
        ),
    ]);
    let req = pingora_http::RequestHeader::build("GET", b"/orders", None).expect("a request");
    let subject = Subject {
        consumer: Some("bench-user"),
        ip: "192.0.2.7".parse().expect("an address"),
        req: &req,
    };
    c.bench_function("rate_limit/two policies", |b| {
        b.iter(|| limits.check(black_box(&subject)).is_ok())
    });
}

/// A JSON order of about `size` bytes that the order schema accepts.
fn order(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 60;
    let mut i = 0;
    while len < size.saturating_sub(40) {
        let item = format!(r#"{{"sku":"SKU-{i:05}-BLUE-M","qty":{}}}"#, i % 7 + 1);
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!(
        r#"{{"id":4711,"email":"buyer@example.com","items":[{}],"note":"fragile, ring twice"}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn bodies(c: &mut Criterion) {
    let schema: serde_json::Value =
        serde_json::from_slice(&data("schemas/order.json")).expect("the order schema");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid schema");
    let rules = BodyRules {
        content_types: vec!["application/json".into()],
        schema: Some(Arc::new(validator)),
        max_json_depth: 32,
    };
    let mut g = c.benchmark_group("json_schema");
    for size in [1024usize, 64 * 1024] {
        let body = order(size);
        assert!(check_json(&rules, &body).is_ok(), "the order is valid");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("validate", size), &body, |b, body| {
            b.iter(|| check_json(&rules, black_box(body)).is_ok())
        });
    }
    g.finish();
}

/// The built-in rules (the threat protection of a config without `[waf]`) in the engine: a
/// browser-like GET, a 1 KiB JSON order and 1 KiB of free text in a form.
fn builtin_rules(c: &mut Criterion) {
    use portcullis::waf::eval::{evaluate, Request};
    let set = portcullis::waf::builtin::compile().expect("the built-in rules compile");
    let request = |method, uri, content_type: Option<&'static [u8]>, body| {
        let mut headers = requests::browser_headers();
        headers.extend(content_type.map(|t| ("Content-Type", t)));
        Request {
            method,
            uri,
            protocol: "HTTP/1.1",
            headers,
            body,
            remote_addr: "192.0.2.10",
            unique_id: "bench",
            json: None,
        }
    };
    let get = request("GET", "/v1/orders?status=shipped&page=2", None, b"");
    let body = order(1024);
    let post = request("POST", "/v1/orders", Some(b"application/json"), &body);
    let prose = "note=Please+deliver+after+6+pm%2C+the+side+door+is+open%3B+call+Fatima+D%27Angelo+%283rd+floor%29+if+nobody+answers.+".repeat(10);
    let form = request(
        "POST",
        "/v1/notes",
        Some(b"application/x-www-form-urlencoded"),
        &prose.as_bytes()[..1024],
    );
    let mut g = c.benchmark_group("builtin_rules");
    for (name, r) in [
        ("benign GET", &get),
        ("1 KiB JSON POST", &post),
        ("1 KiB form of prose", &form),
    ] {
        assert_eq!(evaluate(&set, r).denied_by, None, "{name} is benign");
        g.bench_function(name, |b| b.iter(|| evaluate(&set, black_box(r))));
    }
    g.finish();
}

/// libinjection's detectors (behind `@detectSQLi` and `@detectXSS`), on a typical JSON value
/// that is not plain.
fn threat_parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("threat_parts");
    let value = b"SKU-00042-BLUE-M";
    g.bench_function("detect_sqli", |b| {
        b.iter(|| libinjectionrs::detect_sqli(black_box(value)).is_injection())
    });
    g.bench_function("SqliState::detect", |b| {
        b.iter(|| {
            libinjectionrs::SqliState::new(black_box(value), libinjectionrs::SqliFlags::FLAG_NONE)
                .detect()
        })
    });
    g.bench_function("detect_xss", |b| {
        b.iter(|| libinjectionrs::detect_xss(black_box(value)).is_injection())
    });
    g.finish();
}

fn access_log(c: &mut Criterion) {
    let redact = std::collections::HashSet::new();
    c.bench_function("access_log/format line", |b| {
        b.iter(|| {
            let record = AccessRecord {
                ts: std::time::SystemTime::now(),
                request_id: "0b5e1c6e2f0b4f0c9a7d6e5f4a3b2c1d",
                client_ip: Some(std::net::IpAddr::from([192, 0, 2, 7])),
                method: "POST",
                path: "/v1/orders",
                query: Some("page=2"),
                redact: &redact,
                status: 200,
                route: "orders",
                consumer: Some("bench-user"),
                auth: Some("jwt:bench"),
                decision: "allow",
                upstream: Some("app"),
                upstream_status: Some(200),
                bytes_sent: 1234,
                duration_ms: 0.731,
                user_agent: Some(b"bench/1.0"),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                waf_rules: None,
                anomaly_score: None,
                waf_body: None,
                upstream_body: None,
                websocket_close: None,
                grpc_status: None,
                key_label: None,
            };
            let mut line = String::with_capacity(384);
            black_box(&record).write_json(&mut line);
            line
        })
    });
}

/// This process's resident memory (Linux), in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The SecLang engine with the real CRS v4 at its default paranoia level 1 (the issue's cost
/// bars: a benign GET with 8 headers, 2 query arguments and 3 cookies; a 1 KiB JSON order).
fn crs(c: &mut Criterion) {
    use portcullis::waf::eval::{evaluate, Request};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs");
    let mut files = vec![root.join("crs-setup.conf.example")];
    files.extend(portcullis::waf::seclang::rule_files(&root.join("rules")).expect("../shared/crs"));
    let before = resident_kib();
    let started = std::time::Instant::now();
    let directives = portcullis::waf::seclang::parse_files(&files).expect("CRS parses");
    let set = portcullis::waf::ruleset::compile::compile(&directives).expect("CRS compiles");
    drop(directives);
    // As the gateway does after loading its configuration.
    portcullis::waf::release_compile_memory();
    println!(
        "CRS v4 rule set: compiled in {:.2} s, resident memory +{:.1} MiB (issue 14's bar: 40 MiB)",
        started.elapsed().as_secs_f64(),
        resident_kib().saturating_sub(before) as f64 / 1024.0
    );
    let headers = requests::browser_headers();
    let get = Request {
        method: "GET",
        uri: "/v1/orders?status=shipped&page=2",
        protocol: "HTTP/1.1",
        headers: headers.clone(),
        body: b"",
        remote_addr: "192.0.2.10",
        unique_id: "bench",
        json: None,
    };
    assert_eq!(evaluate(&set, &get).denied_by, None, "the GET is benign");
    let body = order(1024);
    let mut post_headers = headers.clone();
    post_headers.push(("Content-Type", b"application/json"));
    let post = Request {
        method: "POST",
        uri: "/v1/orders",
        protocol: "HTTP/1.1",
        headers: post_headers,
        body: &body,
        remote_addr: "192.0.2.10",
        unique_id: "bench",
        json: None,
    };
    assert_eq!(evaluate(&set, &post).denied_by, None, "the order is benign");
    let mut g = c.benchmark_group("crs_v4_pl1");
    g.bench_function("benign GET", |b| b.iter(|| evaluate(&set, black_box(&get))));
    g.bench_function("1 KiB JSON POST", |b| {
        b.iter(|| evaluate(&set, black_box(&post)))
    });
    g.finish();
}

criterion_group!(
    benches,
    crs,
    routes,
    jwts,
    introspection,
    dpop,
    api_keys,
    acl,
    trace_context,
    rate_limits,
    bodies,
    builtin_rules,
    threat_parts,
    access_log
);
criterion_main!(benches);
