//! SPEC §3 step 6: authentication. A route lists the methods it accepts (`jwt:<provider>`,
//! `api_key`, `mtls`); any one of them suffices. The result is a `Principal` (who, which groups,
//! which scopes, by which method) or a 401 whose detail names only the class of failure.

pub mod api_key;
pub mod dpop_nonce;
pub mod introspection;
pub mod jwt;
pub mod key_store;
pub mod mtls;
pub mod sender;
pub mod token_cache;

use super::throttle::FailureThrottle;
use crate::problem::Refusal;
use api_key::ApiKeyIndex;
use api_key::PresentedKey;
use introspection::{Answer, IntrospectionProvider};
use jwt::JwtFailure;
use jwt::JwtProvider;
use jwt::TokenIdentity;
use mtls::MtlsSubject;
use mtls::PeerCert;
use pingora_http::RequestHeader;
use sender::{Confirmation, DpopSettings, ReplayGuard, Scheme, SenderFailure, Target};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub id: String,
    pub groups: Vec<String>,
    pub mtls_subjects: Vec<MtlsSubject>,
}

/// Everyone who can authenticate, and how: consumers, their key hashes, the JWT providers.
#[derive(Debug, Default)]
pub struct Identities {
    pub consumers: Vec<Consumer>,
    pub by_id: HashMap<String, usize>,
    pub api_keys: ApiKeyIndex,
    pub jwt_providers: Vec<JwtProvider>,
    pub introspection: Vec<IntrospectionProvider>,
    /// `[security] dpop_proof_lifetime`.
    pub dpop: DpopSettings,
}

impl Identities {
    pub fn consumer_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Index into `Identities::jwt_providers`.
    Jwt(usize),
    /// Index into `Identities::introspection`.
    Introspection(usize),
    ApiKey,
    Mtls,
}

/// What step 6 asks of a route's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    /// `public = true`: no credential is looked at and no principal results.
    Public,
    /// Any one of these methods suffices; with none, every request is refused
    /// (`no_auth_configured`: deny by default).
    AnyOf(Vec<AuthMethod>),
}

impl AuthPolicy {
    pub fn is_public(&self) -> bool {
        matches!(self, AuthPolicy::Public)
    }

    /// The accepted methods (none on a public route).
    pub fn methods(&self) -> &[AuthMethod] {
        match self {
            AuthPolicy::Public => &[],
            AuthPolicy::AnyOf(methods) => methods,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub consumer: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// `jwt:<provider>`, `introspection:<provider>`, `api_key` or `mtls`.
    pub method: String,
    /// The label of the API key presented, when it has one.
    pub key_label: Option<std::sync::Arc<str>>,
    /// How the token was presented, when a token authenticated the request.
    pub token_scheme: Option<Scheme>,
    /// The token's `cnf`, when it has one.
    pub confirmation: Option<Confirmation>,
    /// A DPoP nonce for the response's `DPoP-Nonce`: the proof's was about to go out of date.
    pub dpop_nonce: Option<String>,
}

/// A failed authentication: the 401 to send, and whether it counts toward the brute-force
/// throttle (a credential was presented and was wrong).
#[derive(Debug)]
pub struct AuthFailure {
    /// Boxed: a failure is the rare path, and it keeps the `Result` of `authenticate` small.
    pub refusal: Box<Refusal>,
    pub counted: bool,
    /// The JWT provider whose key was unknown, so that its key set may be refetched.
    pub unknown_kid_provider: Option<usize>,
    /// Introspection providers whose answer for the token is not cached: `check` asks them.
    pub introspect: Vec<usize>,
    /// The refusal only stands for the first of `introspect`, whose answer decides it.
    pub placeholder: bool,
}

/// Query parameters that carry credentials; a request with one is refused, never accepted.
const CREDENTIAL_QUERY_PARAMS: &[&str] =
    &["api_key", "apikey", "api-key", "x-api-key", "access_token"];

fn credential_in_query(query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        CREDENTIAL_QUERY_PARAMS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
    })
}

/// The token of the request (`Authorization: Bearer` or `DPoP`): `Ok(None)` when there is
/// none, `Err` when ambiguous (two tokens, whatever their schemes).
fn bearer(req: &RequestHeader) -> Result<Option<(Scheme, &str)>, ()> {
    let mut found = None;
    for value in req.headers.get_all("authorization") {
        let Ok(text) = value.to_str() else {
            return Err(());
        };
        let Some((scheme, rest)) = text.split_once(' ') else {
            continue;
        };
        let scheme = if scheme.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else if scheme.eq_ignore_ascii_case("dpop") {
            Scheme::Dpop
        } else {
            continue;
        };
        if found.is_some() {
            return Err(());
        }
        found = Some((scheme, rest.trim()));
    }
    Ok(found)
}

/// The `WWW-Authenticate` challenges of a route, with the RFC 6750 error when a token failed.
fn challenge(methods: &[AuthMethod], jwt_failure: Option<JwtFailure>) -> String {
    let mut parts = Vec::new();
    if methods
        .iter()
        .any(|m| matches!(m, AuthMethod::Jwt(_) | AuthMethod::Introspection(_)))
    {
        match jwt_failure {
            Some(f) => parts.push(format!(
                "Bearer realm=\"portcullis\", error=\"{}\", error_description=\"{}\"",
                f.bearer_error(),
                f.detail()
            )),
            None => {
                // No token: say both schemes a token can come in (RFC 9449 section 7.1), so a
                // DPoP client learns the proof algorithms before its first try.
                parts.push("Bearer realm=\"portcullis\"".to_string());
                parts.push(format!(
                    "DPoP realm=\"portcullis\", algs=\"{}\"",
                    sender::DPOP_ALGS
                ));
            }
        }
    }
    if methods.contains(&AuthMethod::ApiKey) {
        parts.push("ApiKey realm=\"portcullis\"".to_string());
    }
    if parts.is_empty() {
        // mTLS only: the credential is the certificate; still say how to authenticate.
        parts.push("Mutual-TLS realm=\"portcullis\"".to_string());
    }
    parts.join(", ")
}

fn unauthorized(
    methods: &[AuthMethod],
    reason: &'static str,
    detail: &'static str,
    jwt_failure: Option<JwtFailure>,
) -> Refusal {
    Refusal::unauthorized(reason, detail)
        .with_header("WWW-Authenticate", challenge(methods, jwt_failure))
}

fn principal(ids: &Identities, consumer: String, scopes: Vec<String>, method: &str) -> Principal {
    let groups = ids
        .consumer_index(&consumer)
        .map(|i| ids.consumers[i].groups.clone())
        .unwrap_or_default();
    Principal {
        consumer,
        groups,
        scopes,
        method: method.to_string(),
        key_label: None,
        token_scheme: None,
        confirmation: None,
        dpop_nonce: None,
    }
}

/// The principal of a token that passed: its consumer, scopes and binding.
fn token_principal(
    ids: &Identities,
    identity: TokenIdentity,
    method: &str,
    scheme: Scheme,
) -> Principal {
    let mut p = principal(ids, identity.consumer, identity.scopes, method);
    p.token_scheme = Some(scheme);
    p.confirmation = identity.cnf;
    p
}

/// How long a request waits for a JWKS refetch that its unknown `kid` triggered.
const JWKS_REFETCH_WAIT: Duration = Duration::from_secs(3);

/// What step 6 needs besides the route's policy: the request, the TLS client certificate, the
/// identities, and the brute-force throttle (step 5) that a wrong credential counts toward.
pub struct Credentials<'a> {
    pub req: &'a RequestHeader,
    pub cert: Option<&'a PeerCert>,
    pub client_ip: IpAddr,
    pub throttle: Option<&'a FailureThrottle>,
    /// `https` or `http` as the client used it: DPoP proofs name the URL.
    pub scheme: &'a str,
    /// The route's `sender_constrained`: tokens must be bound to their holder.
    pub sender_constrained: bool,
    /// Where DPoP proofs are remembered (`None` only in tests without DPoP).
    pub replay: Option<&'a ReplayGuard>,
}

/// Step 6. A token signed by a key not yet known makes the provider refetch its key set (rate
/// limited) and is tried once more when the new set arrives; no lock is held meanwhile. A
/// wrong credential counts toward the client's throttle.
pub async fn check(
    policy: &AuthPolicy,
    ids: &Identities,
    c: &Credentials<'_>,
) -> Result<Option<Principal>, Refusal> {
    let mut outcome = authenticate(policy, c.req, c.cert, ids);
    if let Err(AuthFailure {
        unknown_kid_provider: Some(index),
        ..
    }) = &outcome
    {
        if let Some(mut refetched) = ids.jwt_providers[*index].keys.request_refetch() {
            let _ = tokio::time::timeout(JWKS_REFETCH_WAIT, refetched.changed()).await;
            outcome = authenticate(policy, c.req, c.cert, ids);
        }
    }
    if let Err(failure) = outcome {
        outcome = match failure.introspect.is_empty() {
            true => Err(failure),
            false => introspect(ids, c.req, policy.methods(), failure).await,
        };
    }
    let mut principal = match outcome {
        Ok(principal) => principal,
        Err(failure) => {
            if let (true, Some(throttle)) = (failure.counted, c.throttle) {
                throttle.record_failure(&c.client_ip).await;
            }
            return Err(*failure.refusal);
        }
    };
    if let Some(scheme) = principal.as_ref().and_then(|p| p.token_scheme) {
        let cnf = principal.as_ref().and_then(|p| p.confirmation.as_ref());
        // A plain bearer token on a route that does not ask for binding: nothing to check.
        let unbound = scheme == Scheme::Bearer && cnf.is_none() && !c.sender_constrained;
        if unbound {
            return Ok(principal);
        }
        match binding(scheme, cnf, &ids.dpop, c).await {
            Ok(next_nonce) => {
                if let Some(p) = principal.as_mut() {
                    p.dpop_nonce = next_nonce;
                }
            }
            Err(f) => {
                if let (true, Some(throttle)) = (f.counted(), c.throttle) {
                    throttle.record_failure(&c.client_ip).await;
                }
                return Err(binding_refusal(f, &ids.dpop));
            }
        }
    }
    Ok(principal)
}

/// Step 6's last part: the token that authenticated the request was sent by its holder.
/// `Ok(Some(nonce))`: a DPoP nonce to hand out with the response.
async fn binding(
    scheme: Scheme,
    cnf: Option<&Confirmation>,
    dpop: &DpopSettings,
    c: &Credentials<'_>,
) -> Result<Option<String>, SenderFailure> {
    let Ok(Some((_, token))) = bearer(c.req) else {
        return Err(SenderFailure::NotConstrained);
    };
    let target = Target {
        req: c.req,
        scheme: c.scheme,
        cert: c.cert,
        now: token_cache::unix_now(),
    };
    let Some(seen) = sender::verify(scheme, token, cnf, c.sender_constrained, &target, dpop)?
    else {
        return Ok(None);
    };
    let first = match c.replay {
        Some(guard) => guard.first_use(&seen).await?,
        None => true,
    };
    if first {
        Ok(seen.next_nonce)
    } else {
        Err(SenderFailure::ProofReplayed)
    }
}

fn binding_refusal(f: SenderFailure, dpop: &DpopSettings) -> Refusal {
    let refusal = match f {
        SenderFailure::StoreDown => Refusal::new(503, f.reason(), f.detail())
            .in_family(crate::problem::Family::Authentication)
            .with_header("Retry-After", "1"),
        _ => Refusal::unauthorized(f.reason(), f.detail()),
    };
    let refusal = refusal.with_header("WWW-Authenticate", f.challenge());
    match (f, &dpop.nonces) {
        (SenderFailure::NonceNeeded, Some(issuer)) => {
            refusal.with_header("DPoP-Nonce", issuer.current(token_cache::unix_now()))
        }
        _ => refusal,
    }
}

/// Authenticate a request for a route. Public routes need nothing and yield no principal.
pub fn authenticate(
    policy: &AuthPolicy,
    req: &RequestHeader,
    cert: Option<&PeerCert>,
    ids: &Identities,
) -> Result<Option<Principal>, AuthFailure> {
    let methods = match policy {
        AuthPolicy::Public => return Ok(None),
        AuthPolicy::AnyOf(methods) => methods.as_slice(),
    };
    let fail = |refusal: Refusal, counted: bool| AuthFailure {
        refusal: Box::new(refusal),
        counted,
        unknown_kid_provider: None,
        introspect: Vec::new(),
        placeholder: false,
    };
    if methods.is_empty() {
        return Err(fail(
            unauthorized(
                methods,
                "no_auth_configured",
                "authentication is required",
                None,
            ),
            false,
        ));
    }
    if credential_in_query(req.uri.query()) {
        return Err(fail(
            unauthorized(
                methods,
                "credential_in_query",
                "credentials are not accepted in the query string",
                None,
            ),
            false,
        ));
    }
    let token = bearer(req).map_err(|()| {
        fail(
            unauthorized(
                methods,
                "malformed_credentials",
                "the Authorization header is malformed",
                None,
            ),
            true,
        )
    })?;
    let key = api_key::presented(req);

    // The first failure of a presented credential is what the client is told.
    let mut failure: Option<AuthFailure> = None;
    let mut pending = Vec::new();
    let mut remember = |f: AuthFailure| {
        if failure.is_none() {
            failure = Some(f);
        }
    };
    for method in methods {
        match method {
            AuthMethod::Jwt(index) => {
                let Some((scheme, token)) = token else {
                    continue;
                };
                let provider = &ids.jwt_providers[*index];
                match provider.verify(token) {
                    Ok(identity) => {
                        return Ok(Some(token_principal(
                            ids,
                            identity,
                            &provider.label,
                            scheme,
                        )))
                    }
                    Err(f) => remember(AuthFailure {
                        unknown_kid_provider: (f == JwtFailure::UnknownKey).then_some(*index),
                        ..token_failure(methods, f)
                    }),
                }
            }
            AuthMethod::Introspection(index) => {
                let Some((scheme, token)) = token else {
                    continue;
                };
                let provider = &ids.introspection[*index];
                match provider.cached(token) {
                    Some(Answer::Active(identity)) => {
                        return Ok(Some(token_principal(
                            ids,
                            identity,
                            &provider.label,
                            scheme,
                        )))
                    }
                    Some(Answer::Refused(f)) => remember(token_failure(methods, f)),
                    Some(Answer::Unavailable(_)) | None => {
                        pending.push(*index);
                        remember(AuthFailure {
                            placeholder: true,
                            ..fail(unavailable(), false)
                        });
                    }
                }
            }
            AuthMethod::ApiKey => match key {
                PresentedKey::Absent => {}
                PresentedKey::Malformed => remember(fail(
                    unauthorized(
                        methods,
                        "malformed_api_key",
                        "the API key is malformed",
                        None,
                    ),
                    true,
                )),
                PresentedKey::Key(k) => match ids.api_keys.find(k) {
                    Some(entry) if entry.expired(std::time::SystemTime::now()) => remember(fail(
                        unauthorized(methods, "expired_api_key", "the API key has expired", None),
                        true,
                    )),
                    Some(entry) => {
                        let consumer = ids.consumers[entry.consumer as usize].id.clone();
                        let mut found = principal(ids, consumer, Vec::new(), "api_key");
                        found.key_label = entry.label.clone();
                        return Ok(Some(found));
                    }
                    None => remember(fail(
                        unauthorized(methods, "unknown_api_key", "the API key is not valid", None),
                        true,
                    )),
                },
            },
            AuthMethod::Mtls => {
                let Some(cert) = cert else { continue };
                let subjects = ids.consumers.iter().map(|c| c.mtls_subjects.as_slice());
                match mtls::consumer_for_cert(subjects, cert) {
                    Some(i) => {
                        let consumer = ids.consumers[i].id.clone();
                        return Ok(Some(principal(ids, consumer, Vec::new(), "mtls")));
                    }
                    None => remember(fail(
                        unauthorized(
                            methods,
                            "unknown_certificate",
                            "the client certificate is not mapped to a consumer",
                            None,
                        ),
                        true,
                    )),
                }
            }
        }
    }
    let mut failure = failure.unwrap_or_else(|| {
        fail(
            unauthorized(
                methods,
                "no_credentials",
                "no accepted credentials were presented",
                None,
            ),
            false,
        )
    });
    failure.introspect = pending;
    Err(failure)
}

/// The refusal of a bearer token that failed (a wrong token counts toward the throttle).
fn token_failure(methods: &[AuthMethod], f: JwtFailure) -> AuthFailure {
    AuthFailure {
        refusal: Box::new(unauthorized(methods, f.reason(), f.detail(), Some(f))),
        counted: true,
        unknown_kid_provider: None,
        introspect: Vec::new(),
        placeholder: false,
    }
}

/// An introspection endpoint gave no usable answer: the token is neither accepted nor called
/// wrong. Not the client's fault, so not counted toward its throttle.
fn unavailable() -> Refusal {
    Refusal::new(
        503,
        "introspection_unavailable",
        "the token could not be checked now; try again shortly",
    )
    .in_family(crate::problem::Family::Authentication)
    .with_header("Retry-After", "5")
}

/// Ask the introspection providers a request is waiting on, in the route's order: the first
/// active answer authenticates it. Otherwise the refusal stands, or, when it only stood for the
/// first provider's answer, becomes that answer's refusal (401, or 503 with no answer).
async fn introspect(
    ids: &Identities,
    req: &RequestHeader,
    methods: &[AuthMethod],
    mut failure: AuthFailure,
) -> Result<Option<Principal>, AuthFailure> {
    let Ok(Some((scheme, token))) = bearer(req) else {
        return Err(failure);
    };
    let pending = std::mem::take(&mut failure.introspect);
    for (n, index) in pending.into_iter().enumerate() {
        let provider = &ids.introspection[index];
        let answer = provider.introspect(token).await;
        match answer {
            Answer::Active(identity) => {
                return Ok(Some(token_principal(
                    ids,
                    identity,
                    &provider.label,
                    scheme,
                )))
            }
            Answer::Refused(f) if n == 0 && failure.placeholder => {
                failure = token_failure(methods, f);
            }
            Answer::Unavailable(_) | Answer::Refused(_) => {}
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// One consumer, `app` (group `partners`), with the API key `k-right` and the mTLS
    /// subject `CN=client`.
    fn identities() -> Identities {
        let mut ids = Identities::default();
        ids.consumers.push(Consumer {
            id: "app".into(),
            groups: vec!["partners".into()],
            mtls_subjects: vec![MtlsSubject::CommonName("client".into())],
        });
        ids.by_id.insert("app".into(), 0);
        ids.api_keys
            .insert(
                Sha256::digest(b"k-right").into(),
                api_key::ApiKeyEntry {
                    consumer: 0,
                    label: None,
                    not_after: None,
                },
            )
            .unwrap();
        ids
    }

    fn route(auth: Vec<AuthMethod>) -> AuthPolicy {
        AuthPolicy::AnyOf(auth)
    }

    fn cert(cn: &str) -> PeerCert {
        PeerCert {
            common_names: vec![cn.into()],
            ..PeerCert::default()
        }
    }

    /// What `authenticate` says: the consumer and method, or the reason and whether the
    /// failure counts toward the throttle.
    fn outcome(
        route: &AuthPolicy,
        target: &str,
        headers: &[(&str, &str)],
        c: Option<&PeerCert>,
    ) -> String {
        let req = crate::checks::test_request("GET", target, headers);
        match authenticate(route, &req, c, &identities()) {
            Ok(Some(p)) => format!("{} by {}", p.consumer, p.method),
            Ok(None) => "public".into(),
            Err(f) => format!(
                "{} {} counted={}",
                f.refusal.status, f.refusal.reason, f.counted
            ),
        }
    }

    #[test]
    fn each_credential_and_each_failure() {
        let key_or_mtls = route(vec![AuthMethod::ApiKey, AuthMethod::Mtls]);
        let client = cert("client");
        let stranger = cert("stranger");
        // Request target, headers, client certificate, what `outcome` says.
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a PeerCert>,
            &'a str,
        );
        let cases: &[Case] = &[
            ("/", &[("X-API-Key", "k-right")], None, "app by api_key"),
            (
                "/",
                &[("Authorization", "ApiKey k-right")],
                None,
                "app by api_key",
            ),
            ("/", &[], Some(&client), "app by mtls"),
            ("/", &[], None, "401 no_credentials counted=false"),
            (
                "/",
                &[("X-API-Key", "k-wrong")],
                None,
                "401 unknown_api_key counted=true",
            ),
            // Any one accepted credential suffices, even beside a wrong one.
            (
                "/",
                &[("X-API-Key", "k-wrong")],
                Some(&client),
                "app by mtls",
            ),
            (
                "/",
                &[],
                Some(&stranger),
                "401 unknown_certificate counted=true",
            ),
            (
                "/?api_key=k-right",
                &[],
                None,
                "401 credential_in_query counted=false",
            ),
            (
                "/",
                &[("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
                None,
                "401 malformed_credentials counted=true",
            ),
        ];
        for (target, headers, c, expected) in cases {
            assert_eq!(
                &outcome(&key_or_mtls, target, headers, *c),
                expected,
                "{target} {headers:?}"
            );
        }
        assert_eq!(
            outcome(&route(Vec::new()), "/", &[("X-API-Key", "k-right")], None),
            "401 no_auth_configured counted=false"
        );
        assert_eq!(outcome(&AuthPolicy::Public, "/", &[], None), "public");
    }

    #[test]
    fn the_refusal_is_an_authentication_failure_with_a_challenge() {
        let req = crate::checks::test_request("GET", "/", &[("X-API-Key", "k-wrong")]);
        let failure =
            authenticate(&route(vec![AuthMethod::ApiKey]), &req, None, &identities()).unwrap_err();
        assert_eq!(
            failure.refusal.family,
            crate::problem::Family::Authentication
        );
        assert_eq!(
            failure.refusal.headers,
            vec![(
                "WWW-Authenticate",
                "ApiKey realm=\"portcullis\"".to_string()
            )]
        );
    }

    #[test]
    fn a_token_route_without_a_token_offers_bearer_and_dpop() {
        let methods = [AuthMethod::Jwt(0), AuthMethod::ApiKey];
        assert_eq!(
            challenge(&methods, None),
            format!(
                "Bearer realm=\"portcullis\", DPoP realm=\"portcullis\", algs=\"{}\", \
                 ApiKey realm=\"portcullis\"",
                sender::DPOP_ALGS
            )
        );
        // A token that failed is answered in its own scheme only, with the error.
        let failed = challenge(&methods, Some(JwtFailure::Expired));
        assert!(failed.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""));
        assert!(!failed.contains("DPoP"), "{failed}");
    }

    #[tokio::test]
    async fn only_a_wrong_credential_counts_toward_the_throttle() {
        let throttle = FailureThrottle::new(2, std::time::Duration::from_secs(60), None);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let ids = identities();
        let r = route(vec![AuthMethod::ApiKey]);
        let attempt = |headers: &'static [(&'static str, &'static str)]| {
            let req = crate::checks::test_request("GET", "/", headers);
            let ids = &ids;
            let r = &r;
            let throttle = &throttle;
            async move {
                let c = Credentials {
                    req: &req,
                    cert: None,
                    client_ip: ip,
                    throttle: Some(throttle),
                    scheme: "http",
                    sender_constrained: false,
                    replay: None,
                };
                check(r, ids, &c).await.map(|p| p.map(|p| p.consumer))
            }
        };
        for _ in 0..3 {
            assert!(
                attempt(&[]).await.is_err(),
                "no credential: refused, not counted"
            );
        }
        assert!(throttle.check(&ip).await.is_ok());
        assert_eq!(
            attempt(&[("X-API-Key", "k-right")]).await,
            Ok(Some("app".into()))
        );
        assert!(attempt(&[("X-API-Key", "nope")]).await.is_err());
        assert!(throttle.check(&ip).await.is_ok());
        assert!(attempt(&[("X-API-Key", "nope")]).await.is_err());
        assert_eq!(throttle.check(&ip).await.unwrap_err().status, 429);
    }
}
