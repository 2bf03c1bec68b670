//! Sender-constrained tokens: a token that names its holder's key (`cnf`, RFC 7800) is only
//! accepted from that holder.
//!
//! - RFC 8705: `cnf.x5t#S256`, the SHA-256 thumbprint of a client certificate: the request
//!   must come over a TLS connection whose verified client certificate has it.
//! - RFC 9449 (DPoP): `cnf.jkt`, the thumbprint (RFC 7638) of a public key: the token must come
//!   with `Authorization: DPoP` (never as a bearer token) and one `DPoP` header holding a proof
//!   signed with that key — `typ` `dpop+jwt`, an asymmetric `alg`, a public `jwk`, `htm` and
//!   `htu` naming this request, `iat` within `max_age` (5 s of clock skew ahead), `ath` the
//!   token's hash, and a `jti` never seen before (`ReplayCache` here, shared through Redis by
//!   the caller when a store is configured).
//! - A route with `sender_constrained = true` takes bound tokens only.
//! - Other `cnf` members (`jwk`, `jku`, `kid`) cannot be checked here: such a token is refused
//!   rather than accepted unbound.

use super::dpop_nonce::{NonceCheck, NonceIssuer};
use super::mtls::PeerCert;
use crate::checks::rate_limit::shared::{OnStoreError, SharedLimiter, StoreUnavailable};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use pingora_http::RequestHeader;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The algorithms a DPoP proof may use: asymmetric only (a proof's key is public).
pub const DPOP_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];
/// `algs` of every DPoP challenge: the proof algorithms accepted, as RFC 9449 section 7.1 asks.
pub const DPOP_ALGS: &str = "ES256 ES384 RS256 RS384 RS512 PS256 PS384 PS512 EdDSA";
/// A proof longer than this is refused unread.
const MAX_PROOF_BYTES: usize = 8 * 1024;
/// How far ahead of the gateway's clock a proof's `iat` may be.
const IAT_AHEAD: u64 = 5;
/// JWK members that only a private key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The `cnf` claim of a token (or introspection answer), as far as it can be checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// `x5t#S256`: base64url SHA-256 of the client certificate (RFC 8705).
    pub x5t_s256: Option<String>,
    /// `jkt`: base64url SHA-256 JWK thumbprint of the DPoP key (RFC 9449).
    pub jkt: Option<String>,
    /// Some other confirmation method was named (`jwk`, `jku`, `kid`, …).
    pub other: bool,
}

/// A `cnf` claim that is not an object, or whose `x5t#S256` or `jkt` is not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedConfirmation;

/// Read `cnf` from claims: `Ok(None)` without one.
pub fn confirmation(
    claims: &Map<String, Value>,
) -> Result<Option<Confirmation>, MalformedConfirmation> {
    let cnf = match claims.get("cnf") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(cnf)) => cnf,
        Some(_) => return Err(MalformedConfirmation),
    };
    let mut found = Confirmation::default();
    for (name, value) in cnf {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        match name.as_str() {
            "x5t#S256" => found.x5t_s256 = Some(text(value).ok_or(MalformedConfirmation)?),
            "jkt" => found.jkt = Some(text(value).ok_or(MalformedConfirmation)?),
            _ => found.other = true,
        }
    }
    Ok(Some(found))
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// Why a token was refused for who sent it. Each is a 401 (a 503 for `StoreDown`) with a
/// metric reason and a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderFailure {
    NotConstrained,
    UnsupportedBinding,
    CertificateMismatch,
    BoundTokenAsBearer,
    NotDpopBound,
    ProofMissing,
    ProofInvalid,
    ProofKeyMismatch,
    ProofReplayed,
    /// `[security] dpop_nonce`: the proof has no nonce, or not a recent one of the gateway's.
    NonceNeeded,
    StoreDown,
}

impl SenderFailure {
    pub fn reason(self) -> &'static str {
        match self {
            SenderFailure::NotConstrained => "token_not_sender_constrained",
            SenderFailure::UnsupportedBinding => "unsupported_token_binding",
            SenderFailure::CertificateMismatch => "certificate_binding_mismatch",
            SenderFailure::BoundTokenAsBearer => "dpop_token_as_bearer",
            SenderFailure::NotDpopBound => "token_not_dpop_bound",
            SenderFailure::ProofMissing => "dpop_proof_missing",
            SenderFailure::ProofInvalid => "invalid_dpop_proof",
            SenderFailure::ProofKeyMismatch => "dpop_key_mismatch",
            SenderFailure::ProofReplayed => "dpop_proof_replayed",
            SenderFailure::NonceNeeded => "dpop_nonce_required",
            SenderFailure::StoreDown => "replay_store_down",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            SenderFailure::NotConstrained => "this route needs a sender-constrained token",
            SenderFailure::UnsupportedBinding => "the token's binding cannot be verified",
            SenderFailure::CertificateMismatch => {
                "the token is bound to another client certificate"
            }
            SenderFailure::BoundTokenAsBearer => {
                "a DPoP-bound token must be sent with the DPoP scheme and a proof"
            }
            SenderFailure::NotDpopBound => "the token is not bound to a DPoP key",
            SenderFailure::ProofMissing => "a DPoP proof is required",
            SenderFailure::ProofInvalid => "the DPoP proof is invalid",
            SenderFailure::ProofKeyMismatch => "the DPoP proof is signed with another key",
            SenderFailure::ProofReplayed => "the DPoP proof was used before",
            SenderFailure::NonceNeeded => {
                "the DPoP proof must carry the nonce given in the DPoP-Nonce header"
            }
            SenderFailure::StoreDown => "the DPoP proof cannot be checked now; try again shortly",
        }
    }

    /// The failure counts toward the client's throttle (it presented something wrong). Asking
    /// for a nonce is a normal step of DPoP, not a wrong credential.
    pub fn counted(self) -> bool {
        !matches!(self, SenderFailure::StoreDown | SenderFailure::NonceNeeded)
    }

    /// The `WWW-Authenticate` value: Bearer for certificate binding, DPoP (with `algs`) for
    /// everything about DPoP.
    pub fn challenge(self) -> String {
        let (scheme, error) = match self {
            SenderFailure::NotConstrained
            | SenderFailure::UnsupportedBinding
            | SenderFailure::CertificateMismatch => ("Bearer", "invalid_token"),
            SenderFailure::BoundTokenAsBearer | SenderFailure::NotDpopBound => {
                ("DPoP", "invalid_token")
            }
            SenderFailure::NonceNeeded => ("DPoP", "use_dpop_nonce"),
            _ => ("DPoP", "invalid_dpop_proof"),
        };
        let algs = match scheme {
            "DPoP" => format!(", algs=\"{DPOP_ALGS}\""),
            _ => String::new(),
        };
        format!(
            "{scheme} realm=\"portcullis\", error=\"{error}\", error_description=\"{}\"{algs}",
            self.detail()
        )
    }
}

/// What stays to be checked of a verified proof: that its `jti` is new. `key` names the proof
/// (its key's thumbprint and `jti`); `ttl` is how long it must be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofSeen {
    pub key: [u8; 32],
    pub ttl: Duration,
    /// The current nonce, when the proof carried the previous one: the response hands it out.
    pub next_nonce: Option<String>,
}

/// `[security] dpop_proof_lifetime`: how old a proof may be; `dpop_nonce`: the nonces a proof
/// must carry, when it must.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    pub max_age: Duration,
    pub nonces: Option<Arc<NonceIssuer>>,
}

impl Default for DpopSettings {
    fn default() -> Self {
        DpopSettings {
            max_age: Duration::from_secs(60),
            nonces: None,
        }
    }
}

/// The request a proof must name.
pub struct Target<'a> {
    pub req: &'a RequestHeader,
    /// `https` or `http`, as the client used it (the connection, or a trusted proxy's word).
    pub scheme: &'a str,
    pub cert: Option<&'a PeerCert>,
    pub now: u64,
}

/// Check a token's binding against the request. `Ok(Some)`: a DPoP proof passed and its `jti`
/// must now be recorded; `Ok(None)`: nothing more to check.
pub fn verify(
    presented: Scheme,
    token: &str,
    cnf: Option<&Confirmation>,
    required: bool,
    target: &Target<'_>,
    dpop: &DpopSettings,
) -> Result<Option<ProofSeen>, SenderFailure> {
    let bound = cnf.is_some_and(|c| c.x5t_s256.is_some() || c.jkt.is_some());
    if cnf.is_some_and(|c| c.other) && !bound {
        return Err(SenderFailure::UnsupportedBinding);
    }
    if required && !bound {
        return Err(SenderFailure::NotConstrained);
    }
    let cnf = cnf.cloned().unwrap_or_default();
    if let Some(thumbprint) = &cnf.x5t_s256 {
        let matches = target
            .cert
            .is_some_and(|c| URL_SAFE_NO_PAD.encode(c.fingerprint) == *thumbprint);
        if !matches {
            return Err(SenderFailure::CertificateMismatch);
        }
    }
    match (presented, &cnf.jkt) {
        (Scheme::Bearer, Some(_)) => Err(SenderFailure::BoundTokenAsBearer),
        (Scheme::Dpop, None) => Err(SenderFailure::NotDpopBound),
        (Scheme::Bearer, None) => Ok(None),
        (Scheme::Dpop, Some(jkt)) => verify_proof(token, jkt, target, dpop).map(Some),
    }
}

fn invalid<E>(_: E) -> SenderFailure {
    SenderFailure::ProofInvalid
}

fn verify_proof(
    token: &str,
    jkt: &str,
    target: &Target<'_>,
    dpop: &DpopSettings,
) -> Result<ProofSeen, SenderFailure> {
    let mut values = target.req.headers.get_all("dpop").iter();
    let proof = match (values.next(), values.next()) {
        (None, _) => return Err(SenderFailure::ProofMissing),
        (Some(one), None) => one.to_str().map_err(invalid)?,
        (Some(_), Some(_)) => return Err(SenderFailure::ProofInvalid),
    };
    if proof.len() > MAX_PROOF_BYTES || proof.split('.').count() != 3 {
        return Err(SenderFailure::ProofInvalid);
    }
    let header_part = proof.split('.').next().unwrap_or_default();
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header_part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(SenderFailure::ProofInvalid)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(SenderFailure::ProofInvalid);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<Algorithm>().ok())
        .filter(|a| DPOP_ALGORITHMS.contains(a))
        .ok_or(SenderFailure::ProofInvalid)?;
    let jwk_value = match header.get("jwk") {
        Some(Value::Object(jwk)) if !PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) => {
            Value::Object(jwk.clone())
        }
        _ => return Err(SenderFailure::ProofInvalid),
    };
    let jwk: Jwk = serde_json::from_value(jwk_value).map_err(invalid)?;
    let thumbprint = jwk.thumbprint(ThumbprintHash::SHA256).map_err(invalid)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims::<&str>(&[]);
    let claims = decode::<Map<String, Value>>(proof, &key, &validation)
        .map_err(invalid)?
        .claims;
    // The signature is good: now the key must be the token's.
    if thumbprint != jkt {
        return Err(SenderFailure::ProofKeyMismatch);
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(SenderFailure::ProofInvalid)?;
    if text("htm") != Some(target.req.method.as_str()) {
        return Err(SenderFailure::ProofInvalid);
    }
    let expected = expected_htu(target.req, target.scheme).ok_or(SenderFailure::ProofInvalid)?;
    if text("htu").and_then(normalise_htu) != Some(expected) {
        return Err(SenderFailure::ProofInvalid);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(SenderFailure::ProofInvalid)?;
    let max_age = dpop.max_age.as_secs();
    if iat > target.now + IAT_AHEAD || iat + max_age < target.now {
        return Err(SenderFailure::ProofInvalid);
    }
    if text("ath")
        != Some(
            URL_SAFE_NO_PAD
                .encode(Sha256::digest(token.as_bytes()))
                .as_str(),
        )
    {
        return Err(SenderFailure::ProofInvalid);
    }
    let next_nonce = match &dpop.nonces {
        None => None,
        Some(issuer) => match issuer.check(text("nonce"), target.now) {
            NonceCheck::Current => None,
            NonceCheck::Stale(current) => Some(current),
            NonceCheck::Refused => return Err(SenderFailure::NonceNeeded),
        },
    };
    let mut digest = Sha256::new();
    digest.update(jkt.as_bytes());
    digest.update(b".");
    digest.update(jti.as_bytes());
    Ok(ProofSeen {
        key: digest.finalize().into(),
        ttl: Duration::from_secs(max_age + 2 * IAT_AHEAD),
        next_nonce,
    })
}

/// The URL the client asked for, as `htu` must name it: scheme, host (lower case, without the
/// scheme's default port) and path; no query.
pub fn expected_htu(req: &RequestHeader, scheme: &str) -> Option<String> {
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })?;
    normalise_htu(&format!("{scheme}://{host}{}", req.uri.path()))
}

/// An `htu` compared as RFC 9449 §4.3 asks: without query and fragment, scheme and host in
/// lower case, the default port dropped.
pub fn normalise_htu(htu: &str) -> Option<String> {
    let uri: http::Uri = htu.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(match uri.port_u16() {
        Some(port) if port != default => format!("{scheme}://{host}:{port}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    })
}

/// The `jti`s of proofs seen in this process, each kept for its proof's lifetime. Bounded:
/// every proof lives equally long, so entries expire in the order they came; each shard keeps
/// that order, drops what has expired as it goes, and when full drops its oldest (constant
/// time whatever the load).
pub struct ReplayCache {
    shards: Vec<Mutex<ReplayShard>>,
    per_shard: usize,
}

#[derive(Default)]
struct ReplayShard {
    until: HashMap<[u8; 32], Instant>,
    order: VecDeque<([u8; 32], Instant)>,
}

impl ReplayShard {
    fn pop_front(&mut self) {
        if let Some((key, until)) = self.order.pop_front() {
            // A key seen again after it expired has a newer entry: keep that one.
            if self.until.get(&key) == Some(&until) {
                self.until.remove(&key);
            }
        }
    }
}

const REPLAY_SHARDS: usize = 16;

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            shards: (0..REPLAY_SHARDS)
                .map(|_| Mutex::new(ReplayShard::default()))
                .collect(),
            per_shard: capacity.div_ceil(REPLAY_SHARDS).max(1),
        }
    }

    /// Record a proof: `true` the first time, `false` if it is still remembered.
    pub fn first_use(&self, seen: &ProofSeen) -> bool {
        let Some(Ok(mut shard)) = self
            .shards
            .get(usize::from(seen.key[0]) % REPLAY_SHARDS)
            .map(|s| s.lock())
        else {
            return false;
        };
        let now = Instant::now();
        if shard.until.get(&seen.key).is_some_and(|until| *until > now) {
            return false;
        }
        while shard.order.front().is_some_and(|(_, until)| *until <= now) {
            shard.pop_front();
        }
        while shard.order.len() >= self.per_shard {
            shard.pop_front();
        }
        let until = now + seen.ttl;
        shard.until.insert(seen.key, until);
        shard.order.push_back((seen.key, until));
        true
    }
}

/// Where proofs are remembered: this process's cache, and the shared store when one is
/// configured, so that a proof used at one instance is refused at every other.
pub struct ReplayGuard {
    pub local: ReplayCache,
    pub shared: Option<Arc<SharedLimiter>>,
}

impl ReplayGuard {
    /// `Ok(true)` for a proof never seen; `Ok(false)` for a replay. When the store cannot
    /// answer, its `on_store_error` decides: `local` trusts this process's cache, `deny` refuses.
    pub async fn first_use(&self, seen: &ProofSeen) -> Result<bool, SenderFailure> {
        if !self.local.first_use(seen) {
            return Ok(false);
        }
        let Some(shared) = &self.shared else {
            return Ok(true);
        };
        let key = format!("portcullis:dpop:{}", hex::encode(seen.key));
        match shared.claim_once(&key, seen.ttl).await {
            Ok(first) => Ok(first),
            Err(StoreUnavailable) if shared.on_error == OnStoreError::Local => Ok(true),
            Err(StoreUnavailable) => Err(SenderFailure::StoreDown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const TOKEN: &str = "an-access-token";

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/jwt/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_pem(&pem("ec256.pem")).unwrap()
    }

    fn public_jwk(key: &EncodingKey, alg: Algorithm) -> Jwk {
        Jwk::from_encoding_key(key, alg).unwrap()
    }

    fn thumbprint(jwk: &Jwk) -> String {
        jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    fn ath(token: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
    }

    fn claims() -> Value {
        json!({"jti": "j-1", "htm": "GET", "htu": "https://api.example.com/orders/1",
               "iat": NOW, "ath": ath(TOKEN)})
    }

    /// A proof signed by `key` naming `jwk` (as a JSON value, so tests can tamper with it).
    fn proof_with(
        key: &EncodingKey,
        alg: Algorithm,
        jwk: Value,
        typ: &str,
        claims: &Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.typ = Some(typ.into());
        let text = encode(&header, claims, key).unwrap();
        // Put the jwk in by hand: a test may need one jsonwebtoken would not write.
        let mut parts: Vec<String> = text.split('.').map(str::to_string).collect();
        let mut h: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
        h["jwk"] = jwk;
        parts[0] = URL_SAFE_NO_PAD.encode(h.to_string());
        // Re-sign over the new header.
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        parts[2] = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).unwrap();
        parts.join(".")
    }

    fn proof(claims: &Value) -> String {
        let key = ec_key();
        let jwk = serde_json::to_value(public_jwk(&key, Algorithm::ES256)).unwrap();
        proof_with(&key, Algorithm::ES256, jwk, "dpop+jwt", claims)
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut all = vec![("Host", "API.example.com:443")];
        all.extend_from_slice(headers);
        crate::checks::test_request("GET", "/orders/1?page=2", &all)
    }

    fn bound_to_ec() -> Confirmation {
        Confirmation {
            jkt: Some(thumbprint(&public_jwk(&ec_key(), Algorithm::ES256))),
            ..Confirmation::default()
        }
    }

    fn check(
        scheme: Scheme,
        cnf: Option<&Confirmation>,
        required: bool,
        req: &RequestHeader,
        cert: Option<&PeerCert>,
    ) -> Result<Option<ProofSeen>, SenderFailure> {
        let target = Target {
            req,
            scheme: "https",
            cert,
            now: NOW,
        };
        verify(
            scheme,
            TOKEN,
            cnf,
            required,
            &target,
            &DpopSettings::default(),
        )
    }

    #[test]
    fn with_nonces_a_proof_needs_a_recent_one() {
        let issuer = NonceIssuer::new(&[7u8; 32], Duration::from_secs(60)).unwrap();
        let settings = DpopSettings {
            nonces: Some(Arc::new(issuer)),
            ..DpopSettings::default()
        };
        let issuer = settings.nonces.as_deref().unwrap();
        let run = |nonce: Option<String>| {
            let mut c = claims();
            if let Some(nonce) = nonce {
                c["nonce"] = json!(nonce);
            }
            let req = request(&[("DPoP", &proof(&c))]);
            let target = Target {
                req: &req,
                scheme: "https",
                cert: None,
                now: NOW,
            };
            verify(
                Scheme::Dpop,
                TOKEN,
                Some(&bound_to_ec()),
                false,
                &target,
                &settings,
            )
        };
        assert_eq!(run(None), Err(SenderFailure::NonceNeeded));
        assert_eq!(run(Some("made-up".into())), Err(SenderFailure::NonceNeeded));
        let seen = run(Some(issuer.current(NOW))).unwrap().unwrap();
        assert_eq!(seen.next_nonce, None);
        // The previous window's nonce passes and the current one is handed out.
        let seen = run(Some(issuer.current(NOW - 60))).unwrap().unwrap();
        assert_eq!(seen.next_nonce, Some(issuer.current(NOW)));
        assert_eq!(
            run(Some(issuer.current(NOW - 120))),
            Err(SenderFailure::NonceNeeded)
        );
        // Asking for a nonce is a step of the protocol, not a wrong credential.
        assert!(!SenderFailure::NonceNeeded.counted());
        assert!(SenderFailure::NonceNeeded
            .challenge()
            .starts_with("DPoP realm=\"portcullis\", error=\"use_dpop_nonce\""));
    }

    #[test]
    fn a_good_proof_passes_once_per_jti() {
        let req = request(&[("DPoP", &proof(&claims()))]);
        let seen = check(Scheme::Dpop, Some(&bound_to_ec()), true, &req, None)
            .unwrap()
            .expect("a proof to remember");
        assert_eq!(seen.ttl, Duration::from_secs(70));
        let cache = ReplayCache::new(100);
        assert!(cache.first_use(&seen));
        assert!(!cache.first_use(&seen), "the same jti again is a replay");
        let mut other = claims();
        other["jti"] = json!("j-2");
        let req = request(&[("DPoP", &proof(&other))]);
        let seen2 = check(Scheme::Dpop, Some(&bound_to_ec()), false, &req, None)
            .unwrap()
            .unwrap();
        assert_ne!(seen.key, seen2.key);
        assert!(cache.first_use(&seen2));
    }

    #[test]
    fn every_part_of_the_proof_counts() {
        let cnf = bound_to_ec();
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let key = ec_key();
        let jwk = serde_json::to_value(public_jwk(&key, Algorithm::ES256)).unwrap();
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        let attacker = EncodingKey::from_rsa_pem(&pem("attacker.pem")).unwrap();
        let attacker_jwk = serde_json::to_value(public_jwk(&attacker, Algorithm::RS256)).unwrap();
        let cases: Vec<(String, SenderFailure)> = vec![
            (
                proof(&with("htm", json!("POST"))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("htu", json!("https://api.example.com/orders/2"))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("htu", json!("http://api.example.com/orders/1"))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("htu", json!("https://evil.example/orders/1"))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("iat", json!(NOW - 61))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("iat", json!(NOW + 6))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("iat", json!("now"))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof(&with("ath", json!(ath("another-token")))),
                SenderFailure::ProofInvalid,
            ),
            (proof(&without("ath")), SenderFailure::ProofInvalid),
            (proof(&without("jti")), SenderFailure::ProofInvalid),
            (
                proof(&with("jti", json!("x".repeat(257)))),
                SenderFailure::ProofInvalid,
            ),
            (
                proof_with(&key, Algorithm::ES256, jwk.clone(), "JWT", &claims()),
                SenderFailure::ProofInvalid,
            ),
            (
                proof_with(&key, Algorithm::ES256, private, "dpop+jwt", &claims()),
                SenderFailure::ProofInvalid,
            ),
            (
                proof_with(
                    &key,
                    Algorithm::ES256,
                    json!("not a key"),
                    "dpop+jwt",
                    &claims(),
                ),
                SenderFailure::ProofInvalid,
            ),
            // Signed by another key than the one it names: the signature fails.
            (
                proof_with(
                    &attacker,
                    Algorithm::RS256,
                    jwk.clone(),
                    "dpop+jwt",
                    &claims(),
                ),
                SenderFailure::ProofInvalid,
            ),
            // Signed by another key that it names honestly: not the token's key.
            (
                proof_with(
                    &attacker,
                    Algorithm::RS256,
                    attacker_jwk,
                    "dpop+jwt",
                    &claims(),
                ),
                SenderFailure::ProofKeyMismatch,
            ),
            ("not.a.proof".into(), SenderFailure::ProofInvalid),
            ("x".repeat(9000), SenderFailure::ProofInvalid),
        ];
        for (p, expected) in cases {
            let req = request(&[("DPoP", &p)]);
            assert_eq!(
                check(Scheme::Dpop, Some(&cnf), false, &req, None),
                Err(expected),
                "{p}"
            );
        }
        // An HS256 proof is refused before any key is tried.
        let hs = EncodingKey::from_secret(b"a shared secret of thirty-two bytes!").unwrap();
        let p = proof_with(
            &hs,
            Algorithm::HS256,
            json!({"kty": "oct", "k": "AAAA"}),
            "dpop+jwt",
            &claims(),
        );
        assert_eq!(
            check(
                Scheme::Dpop,
                Some(&cnf),
                false,
                &request(&[("DPoP", &p)]),
                None
            ),
            Err(SenderFailure::ProofInvalid)
        );
        // A query in htu is ignored, as RFC 9449 says; case and the default port too.
        let p = proof(&with(
            "htu",
            json!("HTTPS://api.EXAMPLE.com:443/orders/1?x=1"),
        ));
        assert!(check(
            Scheme::Dpop,
            Some(&cnf),
            false,
            &request(&[("DPoP", &p)]),
            None
        )
        .is_ok());
        // No proof, or two.
        assert_eq!(
            check(Scheme::Dpop, Some(&cnf), false, &request(&[]), None),
            Err(SenderFailure::ProofMissing)
        );
        let good = proof(&claims());
        assert_eq!(
            check(
                Scheme::Dpop,
                Some(&cnf),
                false,
                &request(&[("DPoP", &good), ("DPoP", &good)]),
                None
            ),
            Err(SenderFailure::ProofInvalid)
        );
    }

    #[test]
    fn schemes_bindings_and_the_route_option() {
        let req = request(&[]);
        let dpop = bound_to_ec();
        assert_eq!(check(Scheme::Bearer, None, false, &req, None), Ok(None));
        assert_eq!(
            check(Scheme::Bearer, None, true, &req, None),
            Err(SenderFailure::NotConstrained)
        );
        assert_eq!(
            check(Scheme::Bearer, Some(&dpop), false, &req, None),
            Err(SenderFailure::BoundTokenAsBearer)
        );
        assert_eq!(
            check(Scheme::Dpop, None, false, &req, None),
            Err(SenderFailure::NotDpopBound)
        );
        let other = Confirmation {
            other: true,
            ..Confirmation::default()
        };
        assert_eq!(
            check(Scheme::Bearer, Some(&other), false, &req, None),
            Err(SenderFailure::UnsupportedBinding)
        );
        // Certificate binding.
        let cert = PeerCert {
            fingerprint: [7; 32],
            ..PeerCert::default()
        };
        let to_cert = Confirmation {
            x5t_s256: Some(URL_SAFE_NO_PAD.encode([7u8; 32])),
            ..Confirmation::default()
        };
        assert_eq!(
            check(Scheme::Bearer, Some(&to_cert), true, &req, Some(&cert)),
            Ok(None)
        );
        let stranger = PeerCert {
            fingerprint: [8; 32],
            ..PeerCert::default()
        };
        for presented in [None, Some(&stranger)] {
            assert_eq!(
                check(Scheme::Bearer, Some(&to_cert), false, &req, presented),
                Err(SenderFailure::CertificateMismatch)
            );
        }
    }

    #[test]
    fn confirmation_claims_are_read_strictly() {
        let read = |v: Value| confirmation(v.as_object().unwrap());
        assert_eq!(read(json!({})), Ok(None));
        assert_eq!(read(json!({"cnf": null})), Ok(None));
        assert_eq!(
            read(json!({"cnf": {"jkt": "abc"}})),
            Ok(Some(Confirmation {
                jkt: Some("abc".into()),
                ..Confirmation::default()
            }))
        );
        assert_eq!(
            read(json!({"cnf": {"jwk": {}}})),
            Ok(Some(Confirmation {
                other: true,
                ..Confirmation::default()
            }))
        );
        for bad in [
            json!({"cnf": "x"}),
            json!({"cnf": {"jkt": 1}}),
            json!({"cnf": {"x5t#S256": ""}}),
        ] {
            assert_eq!(read(bad.clone()), Err(MalformedConfirmation), "{bad}");
        }
    }

    #[test]
    fn htu_comparison_and_challenges() {
        assert_eq!(
            normalise_htu("HTTPS://Example.COM:443/a/b?c#d").as_deref(),
            Some("https://example.com/a/b")
        );
        assert_eq!(
            normalise_htu("http://x:8080").as_deref(),
            Some("http://x:8080/")
        );
        assert_eq!(normalise_htu("ftp://x/"), None);
        assert_eq!(normalise_htu("/relative"), None);
        let c = SenderFailure::ProofReplayed.challenge();
        assert!(
            c.starts_with("DPoP realm=\"portcullis\", error=\"invalid_dpop_proof\""),
            "{c}"
        );
        assert!(c.contains("algs=\"ES256"), "{c}");
        let c = SenderFailure::CertificateMismatch.challenge();
        assert!(
            c.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{c}"
        );
    }

    #[test]
    fn the_replay_cache_stays_bounded() {
        let cache = ReplayCache::new(32);
        for i in 0..10_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            assert!(cache.first_use(&ProofSeen {
                key,
                ttl: Duration::from_secs(60),
                next_nonce: None,
            }));
        }
        let held: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().unwrap().until.len())
            .sum();
        assert!(held <= 32, "{held}");
    }
}
