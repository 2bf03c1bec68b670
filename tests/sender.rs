//! Sender-constrained tokens through the real gateway: DPoP (RFC 9449) with proofs made here
//! with real keys, replays refused in one instance and across two sharing a redis-server, and
//! certificate-bound tokens (RFC 8705) over TLS with rcgen client certificates. Every refusal
//! is checked from both sides: the status, the problem, the `WWW-Authenticate` challenge, and
//! an upstream that saw nothing.

mod harness;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use harness::*;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora_core::tls::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn key(name: &str) -> EncodingKey {
    let pem = std::fs::read(data(&format!("jwt/{name}"))).unwrap();
    if name.starts_with("ec") {
        EncodingKey::from_ec_pem(&pem).unwrap()
    } else {
        EncodingKey::from_rsa_pem(&pem).unwrap()
    }
}

/// The client's DPoP key pair and its public JWK.
struct Holder {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Jwk,
}

impl Holder {
    fn new(name: &str, alg: Algorithm) -> Holder {
        let key = key(name);
        let jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        Holder { key, alg, jwk }
    }

    fn jkt(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    /// A proof for `method` `htu`, bound to `token`, with its own `jti`.
    fn proof(&self, method: &str, htu: &str, token: &str, jti: &str) -> String {
        self.proof_with_nonce(method, htu, token, jti, None)
    }

    /// `proof`, carrying the server's `nonce` when given.
    fn proof_with_nonce(
        &self,
        method: &str,
        htu: &str,
        token: &str,
        jti: &str,
        nonce: Option<&str>,
    ) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let mut claims = json!({
            "jti": jti, "htm": method, "htu": htu, "iat": unix_now(),
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())),
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        encode(&header, &claims, &self.key).unwrap()
    }
}

/// An access token from provider `corp` (signed with tests/data/jwt/rsa.pem) for `sub`, with
/// `cnf` when given.
fn access_token(sub: &str, cnf: Option<serde_json::Value>) -> String {
    let mut claims = json!({"sub": sub, "aud": "orders-api", "exp": unix_now() + 600});
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    rs256_token("rsa", "rsa.pem", &claims)
}

/// Provider `corp` and two routes: `/orders` (any token) and `/bound` (sender-constrained
/// tokens only), plus `extra` at the top.
fn config(up: &Upstream, extra: &str) -> String {
    format!(
        r#"{extra}
[[upstreams]]
name = "app"
targets = ["{up}"]

[[jwt_providers]]
name = "corp"
audiences = ["orders-api"]
algorithms = ["RS256"]
jwks_file = "{jwks}"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
auth = ["jwt:corp"]
allow = {{ consumers = ["*"] }}

[[routes]]
name = "bound"
path_prefix = "/bound"
upstream = "app"
auth = ["jwt:corp"]
sender_constrained = true
allow = {{ consumers = ["*"] }}
"#,
        up = up.addr,
        jwks = data("jwt/jwks.json")
    )
}

fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: api.test:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    raw_request(port, text.as_bytes())
}

/// A 401 with `reason` and a challenge of `scheme` with `error`; nothing upstream.
fn assert_refused(r: &HttpResponse, up: &Upstream, reason: &str, scheme: &str, error: &str) {
    r.assert_problem(401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(&format!("{scheme} realm=\"portcullis\", error=\"{error}\"")),
        "{reason}: {challenge}"
    );
    if scheme == "DPoP" {
        assert!(challenge.contains("algs=\"ES256"), "{challenge}");
    }
    assert!(up.requests().is_empty(), "{reason}: {:?}", up.requests());
}

#[test]
fn dpop_bound_tokens_pass_only_with_a_fresh_proof_of_their_key() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, ""));
    let holder = Holder::new("ec256.pem", Algorithm::ES256);
    let token = access_token("alice", Some(json!({"jkt": holder.jkt()})));
    let htu = format!("http://api.test:{}/orders/1", gw.port);
    let dpop = format!("DPoP {token}");

    let proof = holder.proof("GET", &htu, &token, "jti-1");
    let r = send(
        gw.port,
        "GET",
        "/orders/1?page=2",
        &[("Authorization", &dpop), ("DPoP", &proof)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consumer-id"), Some("alice"));
    assert_eq!(
        seen[0].header("dpop"),
        None,
        "the proof stays at the gateway"
    );
    assert_eq!(seen[0].header("authorization"), None);
    up.clear();

    // No token at all: the challenge offers both schemes, DPoP with its proof algorithms.
    let r = send(gw.port, "GET", "/orders/1", &[]);
    r.assert_problem(401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge
            .starts_with("Bearer realm=\"portcullis\", DPoP realm=\"portcullis\", algs=\"ES256 "),
        "{challenge}"
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());

    // The same proof again: a replay.
    let r = send(
        gw.port,
        "GET",
        "/orders/1?page=2",
        &[("Authorization", &dpop), ("DPoP", &proof)],
    );
    assert_refused(&r, &up, "dpop_proof_replayed", "DPoP", "invalid_dpop_proof");
    assert_eq!(r.json()["detail"], "the DPoP proof was used before");

    let attacker = Holder::new("attacker.pem", Algorithm::RS256);
    let unbound = access_token("mallory", None);
    // Headers, then the reason, challenge scheme and error the refusal must carry.
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str, &'a str);
    let with_proof = |proof: String| vec![("Authorization", dpop.clone()), ("DPoP", proof)];
    let bad_proof = |proof: String| -> Case {
        (
            with_proof(proof),
            "invalid_dpop_proof",
            "DPoP",
            "invalid_dpop_proof",
        )
    };
    let other_url = format!("http://api.test:{}/orders/2", gw.port);
    let cases: Vec<Case> = vec![
        // The bound token as a bearer token, with or without a proof.
        (
            vec![("Authorization", format!("Bearer {token}"))],
            "dpop_token_as_bearer",
            "DPoP",
            "invalid_token",
        ),
        (
            vec![
                ("Authorization", format!("Bearer {token}")),
                ("DPoP", holder.proof("GET", &htu, &token, "jti-2")),
            ],
            "dpop_token_as_bearer",
            "DPoP",
            "invalid_token",
        ),
        (
            vec![("Authorization", dpop.clone())],
            "dpop_proof_missing",
            "DPoP",
            "invalid_dpop_proof",
        ),
        bad_proof(holder.proof("POST", &htu, &token, "jti-3")),
        bad_proof(holder.proof("GET", &other_url, &token, "jti-4")),
        bad_proof(holder.proof("GET", &htu, &unbound, "jti-5")),
        // A stolen token with the thief's own key.
        (
            with_proof(attacker.proof("GET", &htu, &token, "jti-6")),
            "dpop_key_mismatch",
            "DPoP",
            "invalid_dpop_proof",
        ),
        // An unbound token with the DPoP scheme.
        (
            vec![
                ("Authorization", format!("DPoP {unbound}")),
                ("DPoP", holder.proof("GET", &htu, &unbound, "jti-7")),
            ],
            "token_not_dpop_bound",
            "DPoP",
            "invalid_token",
        ),
    ];
    for (headers, reason, scheme, error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = send(gw.port, "GET", "/orders/1", &headers);
        assert_refused(&r, &up, reason, scheme, error);
        let id = r.json()["request_id"].as_str().unwrap().to_string();
        assert_eq!(gw.access_line(&id)["decision"], reason);
    }
    assert!(
        gw.metric(
            "portcullis_auth_failures_total",
            &[("route", "orders"), ("reason", "dpop_proof_replayed")]
        ) == Some(1.0)
    );

    // A route that takes bound tokens only.
    let r = send(
        gw.port,
        "GET",
        "/bound/x",
        &[("Authorization", &format!("Bearer {unbound}"))],
    );
    assert_refused(
        &r,
        &up,
        "token_not_sender_constrained",
        "Bearer",
        "invalid_token",
    );
    let bound_htu = format!("http://api.test:{}/bound/x", gw.port);
    let r = send(
        gw.port,
        "GET",
        "/bound/x",
        &[
            ("Authorization", &dpop),
            ("DPoP", &holder.proof("GET", &bound_htu, &token, "jti-8")),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Behind a trusted TLS-terminating proxy the client used https: the proof names that.
#[test]
fn the_proof_names_the_url_the_client_used() {
    let up = Upstream::start();
    let gw = Gateway::start_with(&config(&up, ""), "trusted_proxies = [\"127.0.0.1/32\"]");
    let holder = Holder::new("ec256.pem", Algorithm::ES256);
    let token = access_token("alice", Some(json!({"jkt": holder.jkt()})));
    let dpop = format!("DPoP {token}");
    let https = format!("https://api.test:{}/orders/1", gw.port);
    let http = format!("http://api.test:{}/orders/1", gw.port);
    let with_proto = |proof: String| {
        send(
            gw.port,
            "GET",
            "/orders/1",
            &[
                ("Authorization", &dpop),
                ("DPoP", &proof),
                ("X-Forwarded-Proto", "https"),
            ],
        )
    };
    assert_eq!(
        with_proto(holder.proof("GET", &https, &token, "a")).status,
        200
    );
    up.clear();
    let r = with_proto(holder.proof("GET", &http, &token, "b"));
    assert_refused(&r, &up, "invalid_dpop_proof", "DPoP", "invalid_dpop_proof");
}

/// Two instances sharing one redis-server: a proof spent at one is refused at the other.
#[test]
fn a_proof_used_at_one_instance_is_refused_at_another() {
    let up = Upstream::start();
    let redis = RedisServer::start();
    let store = format!(
        "[rate_limit_store]\nredis = \"redis://127.0.0.1:{}\"\non_store_error = \"deny\"\n",
        redis.port
    );
    let a = Gateway::start(&config(&up, &store));
    let b = Gateway::start(&config(&up, &store));
    let holder = Holder::new("ec256.pem", Algorithm::ES256);
    let token = access_token("alice", Some(json!({"jkt": holder.jkt()})));
    let dpop = format!("DPoP {token}");
    // Both gateways are reached as the same host name, so one proof fits both.
    let htu = |gw: &Gateway| format!("http://api.test:{}/orders/1", gw.port);
    let send_to = |gw: &Gateway, proof: &str| {
        raw_request(
            gw.port,
            format!(
                "GET /orders/1 HTTP/1.1\r\nHost: api.test:{}\r\nAuthorization: {dpop}\r\nDPoP: {proof}\r\nConnection: close\r\n\r\n",
                a.port
            )
            .as_bytes(),
        )
    };
    // Wait until both are connected to the store (a refused check would be a 503 meanwhile).
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        n += 1;
        let p = holder.proof("GET", &htu(&a), &token, &format!("warm-{n}"));
        send_to(&a, &p).status == 200 && {
            let q = holder.proof("GET", &htu(&a), &token, &format!("warm-b-{n}"));
            send_to(&b, &q).status == 200
        }
    }));
    up.clear();
    let proof = holder.proof("GET", &htu(&a), &token, "spent-once");
    assert_eq!(send_to(&a, &proof).status, 200);
    assert_eq!(up.requests().len(), 1);
    up.clear();
    let r = send_to(&b, &proof);
    assert_refused(&r, &up, "dpop_proof_replayed", "DPoP", "invalid_dpop_proof");
    // The key is in the store, named by a digest, never by the proof itself.
    let keys = redis.cli(&["--scan", "--pattern", "portcullis:dpop:*"]);
    assert!(keys.lines().count() >= 1, "{keys}");
    assert!(!keys.contains("spent-once"));

    // With the store away and on_store_error = "deny", proofs cannot be checked: 503.
    drop(redis);
    up.clear();
    let (mut last, mut passed, mut n) = (None, 0, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        n += 1;
        let r = send_to(
            &a,
            &holder.proof("GET", &htu(&a), &token, &format!("down-{n}")),
        );
        passed += usize::from(r.status == 200);
        let done = r.status == 503;
        last = Some(r);
        done
    }));
    // Only what passed before the store was found gone reached the upstream; the 503 did not.
    assert_eq!(up.requests().len(), passed);
    let r = last.unwrap();
    assert_eq!(
        r.assert_problem(503)["detail"],
        "the DPoP proof cannot be checked now; try again shortly"
    );
}

/// RFC 8705: a token bound to a client certificate passes over TLS with that certificate only.
#[test]
fn certificate_bound_tokens_need_their_certificate() {
    let up = Upstream::start();
    let pki = Pki::new("portcullis sender test CA");
    let (server_cert, server_key) = pki.issue("localhost", &["localhost", "127.0.0.1"], false);
    let tls_port = free_port();
    let listener = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = {{ cert = \"server.pem\", key = \"server.key\", client_ca = \"ca.pem\" }}\n"
    );
    let ca = pki.ca.pem();
    let gw = Gateway::start_with_files(
        &config(&up, &listener),
        "",
        &[
            ("server.pem", server_cert.as_bytes()),
            ("server.key", server_key.as_bytes()),
            ("ca.pem", ca.as_bytes()),
        ],
    );
    let owner = pki.issue("owner", &[], false);
    let other = pki.issue("other", &[], false);
    let der = STANDARD
        .decode(
            owner
                .0
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let x5t = URL_SAFE_NO_PAD.encode(Sha256::digest(&der));
    let token = access_token("alice", Some(json!({"x5t#S256": x5t})));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    let over_tls = |client: Option<&(String, String)>,
                    path: &str,
                    token: &str|
     -> Option<HttpResponse> {
        let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
        builder.set_ca_file(dir.path().join("ca.pem")).unwrap();
        builder.set_verify(SslVerifyMode::PEER);
        if let Some((cert, key)) = client {
            std::fs::write(dir.path().join("c.pem"), cert).unwrap();
            std::fs::write(dir.path().join("c.key"), key).unwrap();
            builder
                .set_certificate_file(dir.path().join("c.pem"), SslFiletype::PEM)
                .unwrap();
            builder
                .set_private_key_file(dir.path().join("c.key"), SslFiletype::PEM)
                .unwrap();
        }
        let tcp = TcpStream::connect(("127.0.0.1", tls_port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = builder.build().connect("localhost", tcp).ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .ok()?;
        read_response(&mut stream)
    };
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", tls_port)
    )
    .is_ok()));

    let r = over_tls(Some(&owner), "/bound/x", &token).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].header("x-consumer-id"), Some("alice"));
    up.clear();
    let r = over_tls(Some(&other), "/orders/1", &token).expect("an answer");
    assert_refused(
        &r,
        &up,
        "certificate_binding_mismatch",
        "Bearer",
        "invalid_token",
    );
    // Without a certificate, if the listener lets the handshake finish at all.
    if let Some(r) = over_tls(None, "/orders/1", &token) {
        assert_refused(
            &r,
            &up,
            "certificate_binding_mismatch",
            "Bearer",
            "invalid_token",
        );
    }
    // Over plain HTTP there is no certificate either.
    let r = send(
        gw.port,
        "GET",
        "/orders/1",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_refused(
        &r,
        &up,
        "certificate_binding_mismatch",
        "Bearer",
        "invalid_token",
    );
}

/// `[security] dpop_nonce`: a proof without the gateway's nonce is answered with
/// `use_dpop_nonce` and a `DPoP-Nonce` (not counted toward the throttle); the retry with that
/// nonce passes. Two instances sharing the secret accept each other's nonces; a made-up nonce
/// or one of another secret does not pass.
#[test]
fn with_nonces_a_proof_must_carry_a_recent_one() {
    let up = Upstream::start();
    let security = "[security]\ndpop_nonce = true\ndpop_nonce_secret_file = \"nonce.secret\"\nauth_failure_limit = { failures = 10, per = \"1m\" }\n";
    let secret: &[u8] = b"a-shared-secret-of-at-least-32-bytes-for-nonces";
    let start = |secret: &[u8]| {
        Gateway::start_with_files(&config(&up, security), "", &[("nonce.secret", secret)])
    };
    let a = start(secret);
    let b = start(secret);
    let other = start(b"another-secret-of-at-least-32-bytes-for-nonces!");
    let holder = Holder::new("ec256.pem", Algorithm::ES256);
    let token = access_token("alice", Some(json!({"jkt": holder.jkt()})));
    let dpop = format!("DPoP {token}");
    let mut jti = 0;
    let mut call = |gw: &Gateway, nonce: Option<&str>| {
        jti += 1;
        let htu = format!("http://api.test:{}/orders/1", gw.port);
        let proof = holder.proof_with_nonce("GET", &htu, &token, &format!("n-{jti}"), nonce);
        send(
            gw.port,
            "GET",
            "/orders/1",
            &[("Authorization", &dpop), ("DPoP", &proof)],
        )
    };

    // No nonce: asked for one, more times than the throttle allows failures.
    let mut nonce = String::new();
    for _ in 0..12 {
        let r = call(&a, None);
        assert_refused(&r, &up, "dpop_nonce_required", "DPoP", "use_dpop_nonce");
        nonce = r.header("dpop-nonce").unwrap_or_default().to_string();
        assert_eq!(nonce.len(), 22, "{:?}", r.header("dpop-nonce"));
    }
    // The retry with the nonce passes; so does one at the instance sharing the secret.
    let r = call(&a, Some(&nonce));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
    assert_eq!(call(&b, Some(&nonce)).status, 200);
    up.clear();

    // Made up, or of another secret: asked again, nothing upstream.
    for (gw, nonce) in [(&a, "AAAAAAAAAAAAAAAAAAAAAA"), (&other, nonce.as_str())] {
        let r = call(gw, Some(nonce));
        assert_refused(&r, &up, "dpop_nonce_required", "DPoP", "use_dpop_nonce");
        assert!(r.header("dpop-nonce").is_some_and(|n| n != nonce));
    }
    // Nonces are checked after the proof itself: a bad proof is still invalid.
    let htu = format!("http://api.test:{}/orders/2", a.port);
    let wrong_url = holder.proof_with_nonce("GET", &htu, &token, "wrong-url", Some(&nonce));
    let r = send(
        a.port,
        "GET",
        "/orders/1",
        &[("Authorization", &dpop), ("DPoP", &wrong_url)],
    );
    assert_refused(&r, &up, "invalid_dpop_proof", "DPoP", "invalid_dpop_proof");
    assert_eq!(r.header("dpop-nonce"), None);
}

/// A nonce of the previous window still passes, and the response hands out the current one in
/// `DPoP-Nonce`, so a client moves on without a refusal.
#[test]
fn a_nonce_about_to_go_out_of_date_is_replaced_on_the_response() {
    let up = Upstream::start();
    let security = "[security]\ndpop_nonce = true\ndpop_proof_lifetime = \"5s\"\n";
    let gw = Gateway::start(&config(&up, security));
    let holder = Holder::new("ec256.pem", Algorithm::ES256);
    let token = access_token("alice", Some(json!({"jkt": holder.jkt()})));
    let dpop = format!("DPoP {token}");
    let htu = format!("http://api.test:{}/orders/1", gw.port);
    let call = |jti: &str, nonce: Option<&str>| {
        let proof = holder.proof_with_nonce("GET", &htu, &token, jti, nonce);
        send(
            gw.port,
            "GET",
            "/orders/1",
            &[("Authorization", &dpop), ("DPoP", &proof)],
        )
    };
    let asked = call("first", None);
    assert_refused(&asked, &up, "dpop_nonce_required", "DPoP", "use_dpop_nonce");
    let nonce = asked.header("dpop-nonce").unwrap_or_default().to_string();
    let r = call("same-window", Some(&nonce));
    assert_eq!(r.status, 200, "{}", r.text());
    // Windows are 5 s long: within 6 s the next one begins, and the nonce becomes the
    // previous window's.
    let mut next = None;
    let started = std::time::Instant::now();
    let mut n = 0;
    while next.is_none() && started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(250));
        n += 1;
        let r = call(&format!("later-{n}"), Some(&nonce));
        assert_eq!(r.status, 200, "{}", r.text());
        next = r.header("dpop-nonce").map(str::to_string);
    }
    let next = next.expect("a fresh nonce on a response within 6 s");
    assert_ne!(next, nonce);
    assert_eq!(call("with-next", Some(&next)).status, 200);
    // Every call that passed reached the upstream; the one asked for a nonce did not.
    assert_eq!(up.requests().len(), n + 2);
}
