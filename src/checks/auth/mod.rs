//! SPEC §3 step 6: authentication. A route lists the methods it accepts (`jwt:<provider>`,
//! `api_key`, `mtls`); any one of them suffices. The result is a `Principal` (who, which groups,
//! which scopes, by which method) or a 401 whose detail names only the class of failure.

pub mod api_key;
pub mod jwt;
pub mod mtls;
pub mod token_cache;

use super::route::Route;
use super::throttle::FailureThrottle;
use crate::problem::Refusal;
use api_key::ApiKeyIndex;
use api_key::PresentedKey;
use jwt::JwtFailure;
use jwt::JwtProvider;
use mtls::MtlsSubject;
use mtls::PeerCert;
use pingora_http::RequestHeader;
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
    ApiKey,
    Mtls,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub consumer: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// `jwt:<provider>`, `api_key` or `mtls`.
    pub method: String,
}

/// A failed authentication: the 401 to send, and whether it counts toward the brute-force
/// throttle (a credential was presented and was wrong).
#[derive(Debug)]
pub struct AuthFailure {
    pub refusal: Refusal,
    pub counted: bool,
    /// The JWT provider whose key was unknown, so that its key set may be refetched.
    pub unknown_kid_provider: Option<usize>,
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

/// The bearer token of the request: `Ok(None)` when there is none, `Err` when ambiguous.
fn bearer(req: &RequestHeader) -> Result<Option<&str>, ()> {
    let mut found = None;
    for value in req.headers.get_all("authorization") {
        let Ok(text) = value.to_str() else {
            return Err(());
        };
        let Some((scheme, rest)) = text.split_once(' ') else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            if found.is_some() {
                return Err(());
            }
            found = Some(rest.trim());
        }
    }
    Ok(found)
}

/// The `WWW-Authenticate` challenges of a route, with the RFC 6750 error when a token failed.
fn challenge(route: &Route, jwt_failure: Option<JwtFailure>) -> String {
    let mut parts = Vec::new();
    if route.auth.iter().any(|m| matches!(m, AuthMethod::Jwt(_))) {
        match jwt_failure {
            Some(f) => parts.push(format!(
                "Bearer realm=\"portcullis\", error=\"{}\", error_description=\"{}\"",
                f.bearer_error(),
                f.detail()
            )),
            None => parts.push("Bearer realm=\"portcullis\"".to_string()),
        }
    }
    if route.auth.contains(&AuthMethod::ApiKey) {
        parts.push("ApiKey realm=\"portcullis\"".to_string());
    }
    if parts.is_empty() {
        // mTLS only: the credential is the certificate; still say how to authenticate.
        parts.push("Mutual-TLS realm=\"portcullis\"".to_string());
    }
    parts.join(", ")
}

fn unauthorized(
    route: &Route,
    reason: &'static str,
    detail: &'static str,
    jwt_failure: Option<JwtFailure>,
) -> Refusal {
    Refusal::unauthorized(reason, detail)
        .with_header("WWW-Authenticate", challenge(route, jwt_failure))
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
    }
}

/// How long a request waits for a JWKS refetch that its unknown `kid` triggered.
const JWKS_REFETCH_WAIT: Duration = Duration::from_secs(3);

/// What step 6 needs besides the route: the request, the TLS client certificate, the
/// identities, and the brute-force throttle (step 5) that a wrong credential counts toward.
pub struct Credentials<'a> {
    pub req: &'a RequestHeader,
    pub cert: Option<&'a PeerCert>,
    pub client_ip: IpAddr,
    pub throttle: Option<&'a FailureThrottle>,
}

/// Step 6. A token signed by a key not yet known makes the provider refetch its key set (rate
/// limited) and is tried once more when the new set arrives; no lock is held meanwhile. A
/// wrong credential counts toward the client's throttle.
pub async fn check(
    route: &Route,
    ids: &Identities,
    c: &Credentials<'_>,
) -> Result<Option<Principal>, Refusal> {
    let mut outcome = authenticate(route, c.req, c.cert, ids);
    if let Err(AuthFailure {
        unknown_kid_provider: Some(index),
        ..
    }) = &outcome
    {
        if let Some(mut refetched) = ids.jwt_providers[*index].keys.request_refetch() {
            let _ = tokio::time::timeout(JWKS_REFETCH_WAIT, refetched.changed()).await;
            outcome = authenticate(route, c.req, c.cert, ids);
        }
    }
    outcome.map_err(|failure| {
        if let (true, Some(throttle)) = (failure.counted, c.throttle) {
            throttle.record_failure(&c.client_ip);
        }
        failure.refusal
    })
}

/// Authenticate a request for a route. Public routes need nothing and yield no principal.
pub fn authenticate(
    route: &Route,
    req: &RequestHeader,
    cert: Option<&PeerCert>,
    ids: &Identities,
) -> Result<Option<Principal>, AuthFailure> {
    if route.public {
        return Ok(None);
    }
    let fail = |refusal: Refusal, counted: bool| AuthFailure {
        refusal,
        counted,
        unknown_kid_provider: None,
    };
    if route.auth.is_empty() {
        return Err(fail(
            unauthorized(
                route,
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
                route,
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
                route,
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
    let mut remember = |f: AuthFailure| {
        if failure.is_none() {
            failure = Some(f);
        }
    };
    for method in &route.auth {
        match method {
            AuthMethod::Jwt(index) => {
                let Some(token) = token else { continue };
                let provider = &ids.jwt_providers[*index];
                match provider.verify(token) {
                    Ok(identity) => {
                        return Ok(Some(principal(
                            ids,
                            identity.consumer,
                            identity.scopes,
                            &provider.label,
                        )))
                    }
                    Err(f) => remember(AuthFailure {
                        refusal: unauthorized(route, f.reason(), f.detail(), Some(f)),
                        counted: true,
                        unknown_kid_provider: (f == JwtFailure::UnknownKey).then_some(*index),
                    }),
                }
            }
            AuthMethod::ApiKey => match key {
                PresentedKey::Absent => {}
                PresentedKey::Malformed => remember(fail(
                    unauthorized(route, "malformed_api_key", "the API key is malformed", None),
                    true,
                )),
                PresentedKey::Key(k) => match ids.api_keys.find(k) {
                    Some(i) => {
                        let consumer = ids.consumers[i].id.clone();
                        return Ok(Some(principal(ids, consumer, Vec::new(), "api_key")));
                    }
                    None => remember(fail(
                        unauthorized(route, "unknown_api_key", "the API key is not valid", None),
                        true,
                    )),
                },
            },
            AuthMethod::Mtls => {
                let Some(cert) = cert else { continue };
                match mtls::consumer_for_cert(ids, cert) {
                    Some(i) => {
                        let consumer = ids.consumers[i].id.clone();
                        return Ok(Some(principal(ids, consumer, Vec::new(), "mtls")));
                    }
                    None => remember(fail(
                        unauthorized(
                            route,
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
    Err(failure.unwrap_or_else(|| {
        fail(
            unauthorized(
                route,
                "no_credentials",
                "no accepted credentials were presented",
                None,
            ),
            false,
        )
    }))
}
