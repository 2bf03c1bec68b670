//! Property-based fuzzing (proptest) of everything that parses untrusted input: the config
//! loader, JWT headers and claims, the JSON depth scanner and body checks, the built-in
//! threat rules (in every part of a request), the API-key header parser, `X-Forwarded-For`, path normalisation, the SecLang
//! rule parser, and the access-log line writer (which must keep any text inside its string).
//!
//! Each target runs 256 generated cases under `cargo test` (bounded: a few seconds in all).
//! Longer runs: `PROPTEST_CASES=200000 cargo test --release --test fuzz`. A failing case is
//! shrunk by proptest and saved under `proptest-regressions/`; every crash found is also
//! written out as a named regression test at the bottom of this file.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora_http::RequestHeader;
use portcullis::checks::auth::api_key::{presented, PresentedKey};
use portcullis::checks::body::json_too_deep;
use portcullis::checks::ip::{canonical, client_ip, CidrSet};
use portcullis::checks::path::normalise;
use portcullis::config::load_str;
use portcullis::observe::access_log::AccessRecord;
use portcullis::waf::seclang::parse;
use proptest::prelude::*;
use std::net::IpAddr;
use std::path::Path;

const SECRET: &[u8] = b"fuzzing-secret-of-enough-length-0123456789";

/// Bytes biased towards what parsers find interesting: structure, escapes, encodings.
fn hostile_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => any::<u8>().prop_map(|b| vec![b]),
        2 => prop::sample::select(vec![
            &b"%"[..], b"%25", b"%2e", b"%2f", b"%5c", b"%00", b"%u002e", b"%c0%ae", b"..", b"/",
            b"\\", b"'", b"\"", b"--", b"/*", b"*/", b"<", b">", b"{", b"}", b"[", b"]", b",",
            b":", b"\\u0000", b"\\\"", b"\r\n", b"\n", b"\0", b" ", b"+", b"=", b"&", b";", b"|",
            b"`", b"$(", b"OR 1=1", b"UNION SELECT", b"<script>", b"javascript:", b"\xc0\xaf",
            b"\xff", b"\xe2\x80\xae", b"1e999", b"-0", b"null", b"true",
        ])
        .prop_map(|s| s.to_vec()),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    hostile_bytes(max).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An arbitrary JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        text(12).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(text(8), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request(headers: &[(&str, Vec<u8>)]) -> Option<RequestHeader> {
    let mut req = RequestHeader::build("GET", b"/", None).ok()?;
    for (name, value) in headers {
        let value = http::HeaderValue::from_bytes(value).ok()?;
        req.append_header(name.to_string(), value).ok()?;
    }
    Some(req)
}

fn true_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(true_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(true_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The one HS256 provider of a config made once for all cases.
fn provider() -> &'static portcullis::checks::auth::jwt::JwtProvider {
    static LOADED: std::sync::OnceLock<portcullis::config::Loaded> = std::sync::OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        jwt_config(dir.path())
    });
    &loaded.config.identities.jwt_providers[0]
}

/// A config with one HS256 provider whose secret is in `dir` (read at load).
fn jwt_config(dir: &Path) -> portcullis::config::Loaded {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:9"]

[[jwt_providers]]
name = "fuzz"
issuer = "https://issuer.example"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "secret"
token_cache = 0

[[routes]]
name = "r"
path_prefix = "/"
upstream = "app"
auth = ["jwt:fuzz"]
allow = { consumers = ["*"] }
"#;
    load_str(text, &dir.join("portcullis.toml")).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The built-in rule that refuses a POST (GET without a body) of `uri` with `headers` and
/// `body`, if any.
fn builtin_verdict(uri: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Option<u64> {
    use portcullis::waf::eval::{evaluate, Request};
    static RULES: std::sync::OnceLock<portcullis::waf::ruleset::RuleSet> =
        std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| portcullis::waf::builtin::compile().unwrap());
    let mut all: Vec<(&str, &[u8])> = vec![("Host", b"api.example.com")];
    all.extend_from_slice(headers);
    let request = Request {
        method: if body.is_empty() { "GET" } else { "POST" },
        uri,
        protocol: "HTTP/1.1",
        headers: all,
        body,
        remote_addr: "192.0.2.1",
        unique_id: "fuzz",
        json: None,
    };
    evaluate(rules, &request).denied_by
}

/// Every byte outside the unreserved set percent-encoded.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (*b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes as a config file: an error list or a config, never a panic.
    #[test]
    fn config_loader_takes_any_text(bytes in hostile_bytes(200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_str(&text, Path::new("/nonexistent/portcullis.toml"));
    }

    /// The shipped config with one line replaced by hostile text: still never a panic, and
    /// every error names a key.
    #[test]
    fn config_loader_takes_mutated_configs(line in 0usize..200, replacement in text(60)) {
        let base = include_str!("../conf/portcullis.toml");
        let mut lines: Vec<&str> = base.lines().collect();
        let at = line % lines.len().max(1);
        lines[at] = &replacement;
        let text = lines.join("\n");
        if let Err(errors) = load_str(&text, Path::new("conf/portcullis.toml")) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// Tokens of arbitrary parts: refused, never a panic.
    #[test]
    fn jwt_takes_any_token(parts in prop::collection::vec(text(80), 0..5)) {
        prop_assert!(provider().verify(&parts.join(".")).is_err());
    }

    /// Tokens with arbitrary base64url-encoded header and payload bytes and a valid signature:
    /// the header and claims parsers see everything; none of it may panic.
    #[test]
    fn jwt_takes_any_signed_header_and_claims(
        header in prop_oneof![
            hostile_bytes(80),
            Just(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()),
            (json_value(), text(10)).prop_map(|(v, k)| {
                serde_json::to_vec(&serde_json::json!({"alg": "HS256", "kid": v, k: 1})).unwrap_or_default()
            }),
        ],
        claims in prop_oneof![
            hostile_bytes(120),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        ],
    ) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(&header), b64.encode(&claims));
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{signing_input}.{signature}");
        let _ = provider().verify(&token);
    }

    /// Correctly signed tokens with arbitrary claim values: accepted only when every
    /// registered claim is right.
    #[test]
    fn jwt_claims_are_checked_whatever_their_types(
        sub in json_value(), exp in json_value(), aud in json_value(), extra in json_value(),
        good_exp in any::<bool>(), good_aud in any::<bool>(), good_sub in any::<bool>(),
    ) {
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), "https://issuer.example".into());
        claims.insert("sub".into(), if good_sub { "alice".into() } else { sub });
        claims.insert("exp".into(), if good_exp { (now() + 600).into() } else { exp });
        claims.insert("aud".into(), if good_aud { "api".into() } else { aud });
        claims.insert("scope".into(), extra);
        let claims = serde_json::Value::Object(claims);
        let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap();
        let result = provider().verify(&token);
        if let Ok(identity) = &result {
            // Accepted: then the claims that matter were right.
            prop_assert!(claims["exp"].as_f64().is_some_and(|e| e > now() as f64 - 31.0), "{claims}");
            prop_assert!(claims["aud"] == "api" || claims["aud"].as_array().is_some_and(|a| a.iter().any(|x| x == "api")), "{claims}");
            prop_assert!(!identity.consumer.is_empty());
        }
        // Scopes travel upstream in a header: only visible ASCII words are accepted.
        let scope_ok = claims["scope"].is_null()
            || claims["scope"].as_str().is_some_and(|s| {
                s.split_ascii_whitespace().all(|w| w.len() <= 256 && w.bytes().all(|b| b.is_ascii_graphic()))
            });
        if let Ok(identity) = &result {
            prop_assert!(scope_ok || claims["scope"].is_array(), "{claims}");
            prop_assert!(identity.scopes.iter().all(|s| s.bytes().all(|b| b.is_ascii_graphic())));
        }
        if good_exp && good_aud && good_sub && scope_ok {
            prop_assert!(result.is_ok(), "{claims} {result:?}");
        }
    }

    /// The depth scanner agrees with a real parser on every document the parser accepts, and
    /// never panics on anything else.
    #[test]
    fn json_depth_scanner_agrees_with_the_parser(v in json_value(), max in 0usize..6) {
        let text = serde_json::to_vec(&v).unwrap();
        prop_assert_eq!(json_too_deep(&text, max), true_depth(&v) > max, "{}", String::from_utf8_lossy(&text));
    }

    #[test]
    fn json_depth_scanner_takes_any_bytes(bytes in hostile_bytes(300), max in 0usize..40) {
        let _ = json_too_deep(&bytes, max);
    }

    /// Deep nesting of any size is measured without recursion.
    #[test]
    fn json_depth_scanner_survives_deep_nesting(depth in 1usize..200_000, open in prop::sample::select(vec![b'[', b'{'])) {
        let mut doc = vec![open; depth];
        if open == b'{' {
            doc = b"{\"a\":".repeat(depth);
        }
        prop_assert!(json_too_deep(&doc, 32) == (depth > 32));
    }

    /// The built-in rules on any bytes in any part of a request: a verdict, never a panic.
    #[test]
    fn builtin_rules_take_any_value(bytes in hostile_bytes(200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = builtin_verdict(&format!("/{text}?q={text}&{text}=1"), &[], b"");
        let _ = builtin_verdict(&format!("/a?q={}", percent_encode(&bytes)), &[("Cookie", &bytes), ("Referer", &bytes)], b"");
        for content_type in ["application/json", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", "text/plain"] {
            let _ = builtin_verdict("/a", &[("Content-Type", content_type.as_bytes())], &bytes);
        }
        let _ = builtin_verdict("/a", &[], &bytes);
    }

    #[test]
    fn builtin_rules_take_any_json(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        let _ = builtin_verdict("/a", &[("Content-Type", b"application/json")], &body);
    }

    /// A classic payload stays refused however it is wrapped in plain text, in a query and in
    /// a JSON body.
    #[test]
    fn builtin_rules_find_payloads_in_any_padding(prefix in "[a-z ]{0,20}", suffix in "[a-z ]{0,20}") {
        for payload in ["' OR '1'='1' --", "<script>alert(1)</script>", "; cat /etc/passwd"] {
            let value = format!("{prefix}{payload}{suffix}");
            let uri = format!("/a?q={}", percent_encode(value.as_bytes()));
            prop_assert!(builtin_verdict(&uri, &[], b"").is_some(), "{value:?} in the query");
            let body = serde_json::to_vec(&serde_json::json!({ "note": value })).unwrap();
            prop_assert!(
                builtin_verdict("/a", &[("Content-Type", b"application/json")], &body).is_some(),
                "{value:?} in JSON"
            );
        }
    }

    /// The API-key header parser: a key only when one well-formed key was presented, the same
    /// in every place it was presented.
    #[test]
    fn api_key_parser_takes_any_headers(
        values in prop::collection::vec((prop::sample::select(vec!["authorization", "x-api-key"]), hostile_bytes(40)), 0..4)
    ) {
        let headers: Vec<(&str, Vec<u8>)> = values.iter().map(|(n, v)| (*n, v.clone())).collect();
        if let Some(req) = request(&headers) {
            if let PresentedKey::Key(key) = presented(&req) {
                prop_assert!(!key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
                let appears = headers.iter().any(|(_, v)| String::from_utf8_lossy(v).contains(key));
                prop_assert!(appears);
            }
        }
    }

    /// `X-Forwarded-For`: from an untrusted peer the peer is the client whatever the header
    /// says; from a trusted one the answer is the peer or an address of some hop; and behind
    /// a chain of well-formed hops, the rightmost untrusted one.
    #[test]
    fn forwarded_for_takes_any_values(
        values in prop::collection::vec(hostile_bytes(60), 0..4),
        peer_trusted in any::<bool>(),
        hops in prop::collection::vec(any::<[u8; 4]>(), 0..4),
    ) {
        let trusted = CidrSet::parse(&["10.0.0.0/8"]).unwrap();
        let peer: IpAddr = if peer_trusted { "10.1.2.3".parse().unwrap() } else { "192.0.2.7".parse().unwrap() };
        let chain = hops.iter().map(|h| IpAddr::from(*h).to_string()).collect::<Vec<_>>().join(", ");
        let mut lines = values.clone();
        lines.push(chain.clone().into_bytes());
        let ip = client_ip(peer, lines.iter().map(|v| v.as_slice()), &trusted);
        if !peer_trusted {
            prop_assert_eq!(ip, peer);
        } else if ip != peer {
            let hop_addresses: Vec<IpAddr> = lines
                .iter()
                .flat_map(|l| String::from_utf8_lossy(l).split(',').map(|h| h.trim().to_string()).collect::<Vec<_>>())
                .filter_map(|h| h.parse::<IpAddr>().ok().or_else(|| h.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())))
                .map(canonical)
                .collect();
            prop_assert!(hop_addresses.contains(&ip), "{ip} not among {hop_addresses:?}");
        }
        // Only the well-formed chain: the rightmost untrusted hop, or the leftmost hop when all
        // are trusted proxies, or the peer when there is no hop.
        let ip = client_ip(peer, std::iter::once(chain.as_bytes()), &trusted);
        let addresses: Vec<IpAddr> = hops.iter().map(|h| IpAddr::from(*h)).collect();
        let expected = if !peer_trusted {
            peer
        } else {
            addresses
                .iter()
                .rev()
                .find(|a| !trusted.contains(**a))
                .or(addresses.first())
                .copied()
                .unwrap_or(peer)
        };
        prop_assert_eq!(ip, expected, "{}", chain);
    }

    /// Path normalisation: either refused, or a canonical path that normalises to itself and
    /// has no dot segments, encoded slashes or NULs left.
    #[test]
    fn path_normalisation_is_idempotent(bytes in hostile_bytes(80)) {
        let raw = format!("/{}", String::from_utf8_lossy(&bytes));
        if let Ok(path) = normalise(&raw) {
            prop_assert!(path.starts_with('/'), "{path:?}");
            prop_assert!(!path.split('/').any(|s| s == ".." || s == "."), "{path:?}");
            prop_assert!(!path.contains('\0'));
            let again = normalise(&path);
            prop_assert_eq!(again.as_deref(), Ok(path.as_str()));
        }
    }

    /// SecLang: any text parses or is refused with a line inside the text; never a panic.
    #[test]
    fn seclang_parser_takes_any_text(
        bytes in hostile_bytes(200),
        directive in prop::sample::select(vec!["", "SecRule ", "SecAction ", "SecRuleRemoveById ", "SecRuleUpdateTargetById 1 "]),
    ) {
        let text = format!("{directive}{}", String::from_utf8_lossy(&bytes));
        match parse(&text, Path::new("fuzz.conf")) {
            Ok(directives) => {
                for d in directives {
                    prop_assert!(d.at.line >= 1 && d.at.line <= text.lines().count().max(1));
                }
            }
            Err(e) => {
                prop_assert!(e.at.line >= 1 && e.at.line <= text.lines().count().max(1), "{e}");
                prop_assert!(e.to_string().starts_with("fuzz.conf:"));
            }
        }
    }

    #[test]
    fn access_log_lines_hold_any_text(
        id in text(60),
        route in text(40),
        path in text(60),
        query in prop::option::of(text(60)),
        ua in prop::option::of(hostile_bytes(60)),
    ) {
        let redact = std::collections::HashSet::new();
        let record = AccessRecord {
            ts: std::time::SystemTime::now(),
            request_id: &id,
            client_ip: Some(IpAddr::from([192, 0, 2, 1])),
            method: "GET",
            path: &path,
            query: query.as_deref(),
            redact: &redact,
            status: 200,
            route: &route,
            consumer: Some(&id),
            auth: None,
            decision: "allow",
            upstream: None,
            upstream_status: None,
            bytes_sent: 0,
            duration_ms: 0.5,
            user_agent: ua.as_deref(),
            trace_id: None,
            waf_rules: None,
            anomaly_score: None,
            waf_body: None,
            upstream_body: None,
            websocket_close: None,
            grpc_status: None,
            key_label: None,
        };
        let mut line = String::new();
        record.write_json(&mut line);
        // One line, one object, every string back exactly as it was given.
        prop_assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        prop_assert_eq!(v["request_id"].as_str(), Some(id.as_str()));
        prop_assert_eq!(v["consumer"].as_str(), Some(id.as_str()));
        prop_assert_eq!(v["route"].as_str(), Some(route.as_str()));
        prop_assert_eq!(v["status"].as_u64(), Some(200));
        let ua_text = ua.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        prop_assert_eq!(v["user_agent"].as_str(), ua_text.as_deref());
        let logged = v["path"].as_str().unwrap_or_default();
        prop_assert!(logged.starts_with(path.as_str()), "{logged:?}");
        prop_assert_eq!(logged.len() == path.len(), query.is_none());
    }
}
