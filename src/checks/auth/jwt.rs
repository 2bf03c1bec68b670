//! JWT verification (SPEC §3 step 6). The provider's `algorithms` is an allow-list, the key's
//! family must match the token's algorithm (no HS/RS confusion), `exp` is required, `nbf`,
//! `iss` and `aud` are checked with `leeway`. Header fields that point at keys (`jku`, `x5u`,
//! `x5c`, `jwk`) are never followed: only the provider's own keys verify a token.

use super::key_store::{KeySet, KeyStore};
use super::sender::{confirmation, Confirmation};
use super::token_cache::{self, TokenCache};
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A compiled `[[jwt_providers]]` entry.
pub struct JwtProvider {
    pub name: String,
    /// The label used in `auth` lists, logs and metrics: `jwt:<name>`.
    pub label: String,
    pub algorithms: Vec<Algorithm>,
    /// One prepared `Validation` per allowed algorithm (jsonwebtoken wants a single family).
    pub validations: HashMap<Algorithm, Validation>,
    pub keys: Arc<KeyStore>,
    pub consumer_claim: String,
    pub scopes_claim: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// Verified tokens (`token_cache` entries; `None` when set to 0).
    pub cache: Option<TokenCache<TokenIdentity>>,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider")
            .field("name", &self.name)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a bearer token was refused — a JWT verified here, or a token an introspection endpoint
/// answered for (`Inactive` only there). Each is one class the client may learn, and a metric
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtFailure {
    TooLong,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    NoConsumer,
    Inactive,
}

impl JwtFailure {
    pub fn reason(self) -> &'static str {
        match self {
            JwtFailure::TooLong => "token_too_long",
            JwtFailure::Malformed => "malformed_token",
            JwtFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtFailure::UnknownKey => "unknown_kid",
            JwtFailure::BadSignature => "bad_signature",
            JwtFailure::Expired => "token_expired",
            JwtFailure::NotYetValid => "token_not_yet_valid",
            JwtFailure::WrongIssuer => "wrong_issuer",
            JwtFailure::WrongAudience => "wrong_audience",
            JwtFailure::MissingClaim => "missing_claim",
            JwtFailure::NoConsumer => "no_consumer_claim",
            JwtFailure::Inactive => "inactive_token",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            JwtFailure::TooLong => "the token is too long",
            JwtFailure::Malformed => "the token is malformed",
            JwtFailure::AlgorithmNotAllowed => "the token's algorithm is not accepted",
            JwtFailure::UnknownKey => "the token's signing key is not known",
            JwtFailure::BadSignature => "the token's signature is invalid",
            JwtFailure::Expired => "the token has expired",
            JwtFailure::NotYetValid => "the token is not valid yet",
            JwtFailure::WrongIssuer => "the token's issuer is not accepted",
            JwtFailure::WrongAudience => "the token's audience is not accepted",
            JwtFailure::MissingClaim => "the token lacks a required claim",
            JwtFailure::NoConsumer => "the token does not name a consumer",
            JwtFailure::Inactive => "the token is not active",
        }
    }

    /// The RFC 6750 `error` code for `WWW-Authenticate`.
    pub fn bearer_error(self) -> &'static str {
        match self {
            JwtFailure::TooLong | JwtFailure::Malformed => "invalid_request",
            _ => "invalid_token",
        }
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub consumer: String,
    pub scopes: Vec<String>,
    /// `cnf`: the key or certificate the token is bound to (`sender`).
    pub cnf: Option<Confirmation>,
}

fn map_error(e: &jsonwebtoken::errors::Error) -> JwtFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => JwtFailure::BadSignature,
        K::ExpiredSignature => JwtFailure::Expired,
        K::ImmatureSignature => JwtFailure::NotYetValid,
        K::InvalidIssuer => JwtFailure::WrongIssuer,
        K::InvalidAudience => JwtFailure::WrongAudience,
        K::MissingRequiredClaim(_) => JwtFailure::MissingClaim,
        K::InvalidAlgorithm
        | K::MissingAlgorithm
        | K::UnsupportedAlgorithm
        | K::InvalidAlgorithmName => JwtFailure::AlgorithmNotAllowed,
        K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
            JwtFailure::AlgorithmNotAllowed
        }
        _ => JwtFailure::Malformed,
    }
}

impl JwtProvider {
    /// Verify a bearer token against this provider's current keys, or find it in the cache of
    /// tokens verified before with the same keys and not expired since.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, JwtFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtFailure::TooLong);
        }
        let keys = self.keys.load();
        let Some(cache) = &self.cache else {
            return self.verify_with(token, &keys).map(|(identity, _)| identity);
        };
        let now = token_cache::unix_now();
        let digest = token_cache::digest(token);
        if let Some(identity) = cache.get(&digest, keys.generation(), now) {
            return Ok(identity);
        }
        let (identity, exp) = self.verify_with(token, &keys)?;
        if let Some(exp) = exp {
            let valid_until = exp.saturating_add(self.leeway);
            cache.insert(
                digest,
                identity.clone(),
                keys.generation(),
                valid_until,
                now,
            );
        }
        Ok(identity)
    }

    /// Full verification. Also returns `exp`, when it is a whole number of seconds.
    fn verify_with(
        &self,
        token: &str,
        keys: &KeySet,
    ) -> Result<(TokenIdentity, Option<u64>), JwtFailure> {
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(JwtFailure::Malformed);
        }
        // `alg: none` (any casing) and unknown algorithms fail here: jsonwebtoken has no `none`.
        let header = decode_header(token).map_err(|e| match map_error(&e) {
            JwtFailure::AlgorithmNotAllowed => JwtFailure::AlgorithmNotAllowed,
            _ => JwtFailure::Malformed,
        })?;
        let alg = header.alg;
        let Some(validation) = self.validations.get(&alg) else {
            return Err(JwtFailure::AlgorithmNotAllowed);
        };
        let family = alg.family();
        let mut candidates = keys
            .keys
            .iter()
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtFailure::UnknownKey);
        }
        let mut failure = JwtFailure::AlgorithmNotAllowed;
        for key in candidates {
            // The key's own family and declared algorithm must agree with the token's.
            if key.key.family() != family || key.alg.is_some_and(|a| a != alg) {
                continue;
            }
            match decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    let exp = data.claims.get("exp").and_then(Value::as_u64);
                    return Ok((self.identity(&data.claims)?, exp));
                }
                Err(e) => {
                    failure = map_error(&e);
                    if failure != JwtFailure::BadSignature {
                        // The signature verified (or the token is bad whatever the key).
                        return Err(failure);
                    }
                }
            }
        }
        Err(failure)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<TokenIdentity, JwtFailure> {
        identity_from(claims, &self.consumer_claim, &self.scopes_claim)
    }
}

/// The consumer and scopes a token's claims name (`consumer_claim`: a string; `scopes_claim`: a
/// space-separated string or an array of strings). Both travel upstream in headers, so only
/// visible ASCII, at most 256 bytes each, is accepted.
pub fn identity_from(
    claims: &Map<String, Value>,
    consumer_claim: &str,
    scopes_claim: &str,
) -> Result<TokenIdentity, JwtFailure> {
    // The consumer and scopes travel upstream in headers: visible ASCII only.
    let header_safe =
        |s: &str| !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic());
    let consumer = match claims.get(consumer_claim) {
        Some(Value::String(s)) if header_safe(s) => s.clone(),
        _ => return Err(JwtFailure::NoConsumer),
    };
    let scopes = match claims.get(scopes_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            let scopes: Vec<String> = s.split_ascii_whitespace().map(str::to_string).collect();
            if !scopes.iter().all(|s| header_safe(s)) {
                return Err(JwtFailure::Malformed);
            }
            scopes
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) if header_safe(s) => out.push(s.clone()),
                    _ => return Err(JwtFailure::Malformed),
                }
            }
            out
        }
        Some(_) => return Err(JwtFailure::Malformed),
    };
    let cnf = confirmation(claims).map_err(|_| JwtFailure::Malformed)?;
    Ok(TokenIdentity {
        consumer,
        scopes,
        cnf,
    })
}

/// Build the per-algorithm validations of a provider.
pub fn validations(
    algorithms: &[Algorithm],
    issuer: Option<&str>,
    audiences: &[String],
    leeway_seconds: u64,
) -> HashMap<Algorithm, Validation> {
    algorithms
        .iter()
        .map(|&alg| {
            let mut v = Validation::new(alg);
            v.leeway = leeway_seconds;
            v.validate_exp = true;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            if let Some(iss) = issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            if audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(audiences);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            (alg, v)
        })
        .collect()
}

/// Parse an algorithm name of the allow-list. `none` is refused with its own message.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("\"none\" is never accepted: unsigned tokens prove nothing".into());
    }
    name.parse::<Algorithm>().map_err(|_| {
        format!("unknown algorithm {name:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
    })
}

pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> JwtProvider {
        JwtProvider {
            name: "t".into(),
            label: "jwt:t".into(),
            algorithms: vec![],
            validations: HashMap::new(),
            keys: Arc::new(KeyStore::new(KeySet::default())),
            consumer_claim: "sub".into(),
            scopes_claim: "scope".into(),
            leeway: 0,
            cache: None,
        }
    }

    #[test]
    fn identities_must_be_safe_to_forward_in_headers() {
        let p = provider();
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(p
            .identity(&claims(serde_json::json!({"sub": "alice", "scope": "a b"})))
            .is_ok());
        assert_eq!(
            p.identity(&claims(
                serde_json::json!({"sub": "alice\r\nX-Consumer-Id: root"})
            )),
            Err(JwtFailure::NoConsumer)
        );
        assert_eq!(
            p.identity(&claims(serde_json::json!({"sub": "ålice"}))),
            Err(JwtFailure::NoConsumer)
        );
        assert_eq!(
            p.identity(&claims(serde_json::json!({"sub": 7}))),
            Err(JwtFailure::NoConsumer)
        );
        assert_eq!(
            p.identity(&claims(
                serde_json::json!({"sub": "a", "scope": ["ok", "bad\u{0}"]})
            )),
            Err(JwtFailure::Malformed)
        );
        assert_eq!(
            p.identity(&claims(serde_json::json!({"sub": "a", "scope": {"x": 1}}))),
            Err(JwtFailure::Malformed)
        );
    }

    #[test]
    fn none_and_unknown_algorithms_are_refused_at_load() {
        assert!(parse_algorithm("none")
            .unwrap_err()
            .contains("never accepted"));
        assert!(parse_algorithm("NoNe").is_err());
        assert!(parse_algorithm("HS1").is_err());
        assert_eq!(parse_algorithm("ES384"), Ok(Algorithm::ES384));
    }
}

#[cfg(test)]
mod cache_tests {
    //! The token cache may only ever answer what a full verification would answer now.
    use super::*;
    use crate::checks::auth::key_store::parse_jwks;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::time::Duration;

    fn data(name: &str) -> String {
        let path = format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    fn provider() -> JwtProvider {
        JwtProvider {
            name: "t".into(),
            label: "jwt:t".into(),
            algorithms: vec![Algorithm::ES256],
            validations: validations(&[Algorithm::ES256], Some("iss"), &["aud".into()], 0),
            keys: Arc::new(KeyStore::new(parse_jwks(&data("jwks.json")).unwrap())),
            consumer_claim: "sub".into(),
            scopes_claim: "scope".into(),
            leeway: 0,
            cache: TokenCache::new(100),
        }
    }

    fn sign(exp: u64) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec256".into());
        let key = EncodingKey::from_ec_pem(data("ec256.pem").as_bytes()).unwrap();
        let claims = serde_json::json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp});
        encode(&header, &claims, &key).unwrap()
    }

    fn cached(p: &JwtProvider) -> usize {
        p.cache.as_ref().map_or(0, TokenCache::len)
    }

    #[test]
    fn a_changed_signature_is_verified_not_looked_up() {
        let p = provider();
        let token = sign(token_cache::unix_now() + 600);
        assert!(p.verify(&token).is_ok());
        assert_eq!(cached(&p), 1);
        assert!(p.verify(&token).is_ok(), "served from the cache");
        let mut altered = token.clone().into_bytes();
        let i = altered.len() - 20;
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(p.verify(&altered), Err(JwtFailure::BadSignature));
        assert_eq!(p.verify(&altered), Err(JwtFailure::BadSignature));
        assert_eq!(cached(&p), 1, "failures are never cached");
    }

    #[test]
    fn a_revoked_key_ends_its_cached_tokens() {
        let p = provider();
        let token = sign(token_cache::unix_now() + 600);
        assert!(p.verify(&token).is_ok());
        assert!(p.verify(&token).is_ok());
        // The JWKS is refreshed and no longer holds the key that signed the token.
        p.keys
            .replace(parse_jwks(&data("jwks-rotated.json")).unwrap());
        assert_eq!(p.verify(&token), Err(JwtFailure::UnknownKey));
        // Put back, the key verifies the token again (a fresh verification).
        p.keys.replace(parse_jwks(&data("jwks.json")).unwrap());
        assert!(p.verify(&token).is_ok());
    }

    #[test]
    fn a_cached_token_is_refused_once_expired() {
        let p = provider();
        let exp = token_cache::unix_now() + 2;
        let token = sign(exp);
        assert!(p.verify(&token).is_ok());
        assert_eq!(cached(&p), 1);
        // Wait (bounded) until the clock is past `exp`; the cache must not outlive it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while token_cache::unix_now() <= exp && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(p.verify(&token), Err(JwtFailure::Expired));
        assert_eq!(cached(&p), 0, "the stale entry is dropped");
    }

    #[test]
    fn a_token_with_a_fractional_exp_is_never_cached() {
        let p = provider();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec256".into());
        let key = EncodingKey::from_ec_pem(data("ec256.pem").as_bytes()).unwrap();
        let exp = token_cache::unix_now() as f64 + 600.5;
        let claims = serde_json::json!({"sub": "alice", "iss": "iss", "aud": "aud", "exp": exp});
        let token = encode(&header, &claims, &key).unwrap();
        // Accepted (the exp is in the future), verified each time, never cached: the cache's
        // deadline is whole seconds and a fractional exp has none that is exact.
        for _ in 0..2 {
            let identity = p
                .verify(&token)
                .expect("a valid token with a fractional exp");
            assert_eq!(identity.consumer, "alice");
            assert_eq!(cached(&p), 0);
        }
        // The same token with a whole exp is cached: the check above can fail.
        assert!(p.verify(&sign(token_cache::unix_now() + 600)).is_ok());
        assert_eq!(cached(&p), 1);
    }
}
