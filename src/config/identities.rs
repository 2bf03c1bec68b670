//! Compiling who may authenticate: `[[jwt_providers]]` (keys loaded and parsed now),
//! `[[consumers]]` (key hashes indexed, certificate subjects parsed), and each route's
//! `auth` and `allow`. Secrets are read from the environment or a file, never the config.

use super::compile::{relative_to, Errors};
use super::lint;
use super::raw::{RawConsumer, RawJwtProvider, RawRoute};
use crate::checks::acl::Allow;
use crate::checks::auth::api_key::parse_hash;
use crate::checks::auth::jwt::{self, JwtKey, JwtProvider, KeySet, KeyStore};
use crate::checks::auth::mtls::parse_subject;
use crate::checks::auth::token_cache::TokenCache;
use crate::checks::auth::{AuthMethod, AuthPolicy, Consumer, Identities};
use jsonwebtoken::DecodingKey;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// HS secrets shorter than this are a `check` warning (RFC 7518 §3.2 wants ≥ the hash size).
const MIN_HS_SECRET: usize = 32;

pub(super) fn compile(
    e: &mut Errors,
    providers: &[RawJwtProvider],
    consumers: &[RawConsumer],
    file: &Path,
) -> Identities {
    let mut ids = Identities::default();
    let mut names = HashSet::new();
    for (i, p) in providers.iter().enumerate() {
        let key = format!("jwt_providers[{i}]");
        e.name(
            format!("{key}.name"),
            "provider name",
            &p.name,
            Some(&mut names),
        );
        if let Some(provider) = compile_provider(e, &key, p, file) {
            ids.jwt_providers.push(provider);
        }
    }
    let mut ids_seen = HashSet::new();
    for (i, c) in consumers.iter().enumerate() {
        let key = format!("consumers[{i}]");
        e.name(
            format!("{key}.id"),
            "consumer id",
            &c.id,
            Some(&mut ids_seen),
        );
        for (g, group) in c.groups.iter().enumerate() {
            e.name(format!("{key}.groups[{g}]"), "group name", group, None);
        }
        let index = ids.consumers.len();
        for (k, text) in c.api_keys.iter().enumerate() {
            match parse_hash(text).and_then(|hash| ids.api_keys.insert(hash, index)) {
                Ok(()) => {}
                Err(message) => e.add(format!("{key}.api_keys[{k}]"), message),
            }
        }
        let mut subjects = Vec::new();
        for (s, text) in c.mtls_subjects.iter().enumerate() {
            match parse_subject(text) {
                Ok(subject) => subjects.push(subject),
                Err(message) => e.add(format!("{key}.mtls_subjects[{s}]"), message),
            }
        }
        ids.by_id.insert(c.id.clone(), index);
        ids.consumers.push(Consumer {
            id: c.id.clone(),
            groups: c.groups.clone(),
            mtls_subjects: subjects,
        });
    }
    ids
}

fn read_secret(e: &mut Errors, key: &str, p: &RawJwtProvider, file: &Path) -> Option<Vec<u8>> {
    super::secret::read(
        e,
        key,
        ("secret_env", p.secret_env.as_deref()),
        ("secret_file", p.secret_file.as_deref()),
        file,
    )
}

fn compile_provider(
    e: &mut Errors,
    key: &str,
    p: &RawJwtProvider,
    file: &Path,
) -> Option<JwtProvider> {
    if p.algorithms.is_empty() {
        e.add(
            format!("{key}.algorithms"),
            "empty; list the algorithms you accept, e.g. [\"RS256\"]",
        );
    }
    let mut algorithms = Vec::new();
    for (a, name) in p.algorithms.iter().enumerate() {
        match jwt::parse_algorithm(name) {
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => e.add(
                format!("{key}.algorithms[{a}]"),
                format!("{name} is listed twice"),
            ),
            Err(message) => e.add(format!("{key}.algorithms[{a}]"), message),
        }
    }
    let hmac = algorithms.iter().any(|a| jwt::is_hmac(*a));
    let asymmetric = algorithms.iter().any(|a| !jwt::is_hmac(*a));
    if hmac && asymmetric {
        e.warn(lint::mixed_jwt_algorithms(format!("{key}.algorithms")));
    }
    if p.audiences.is_empty() {
        e.warn(lint::no_audiences(format!("{key}.audiences")));
    }
    let sources = [
        p.jwks_file.is_some(),
        p.jwks_url.is_some(),
        p.secret_env.is_some(),
        p.secret_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        e.add(
            key,
            "needs exactly one key source: jwks_file, jwks_url, secret_env or secret_file",
        );
        return None;
    }
    let mut remote_store = None;
    let keys = if let Some(jwks) = &p.jwks_file {
        let path = relative_to(file, jwks);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                e.add(
                    format!("{key}.jwks_file"),
                    format!("cannot read {}: {err}", path.display()),
                );
                return None;
            }
        };
        match jwt::parse_jwks(&text) {
            Ok(set) => set,
            Err(message) => {
                e.add(
                    format!("{key}.jwks_file"),
                    format!("{}: {message}", path.display()),
                );
                return None;
            }
        }
    } else if let Some(url) = &p.jwks_url {
        match crate::jwks::parse_url(url) {
            Ok(parsed) => {
                let loopback = parsed
                    .host
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(parsed.host == "localhost");
                if !parsed.tls && !loopback {
                    e.warn(lint::plain_http_jwks(format!("{key}.jwks_url")));
                }
            }
            Err(message) => {
                e.add(format!("{key}.jwks_url"), message);
                return None;
            }
        }
        if hmac {
            e.add(
                format!("{key}.algorithms"),
                "a remote JWKS is for public-key algorithms; HS algorithms need secret_env or secret_file",
            );
        }
        let refresh = e.duration(
            &format!("{key}.jwks_refresh"),
            p.jwks_refresh.as_ref(),
            Duration::from_secs(300),
        );
        if refresh < Duration::from_secs(10) {
            e.add(
                format!("{key}.jwks_refresh"),
                "at least 10s: the identity provider is not to be hammered",
            );
        }
        remote_store = Some(KeyStore::remote(url.clone(), refresh));
        KeySet::default()
    } else {
        let secret = read_secret(e, key, p, file)?;
        if asymmetric {
            e.add(
                format!("{key}.algorithms"),
                "a shared secret can only verify HS256, HS384 or HS512; use jwks_file for public-key algorithms",
            );
        }
        if secret.len() < MIN_HS_SECRET {
            e.warn(lint::short_hs_secret(
                format!("{key}.secret"),
                secret.len(),
                MIN_HS_SECRET,
            ));
        }
        let decoding = match DecodingKey::from_secret(&secret) {
            Ok(k) => k,
            Err(err) => {
                e.add(format!("{key}.secret"), format!("unusable secret: {err}"));
                return None;
            }
        };
        KeySet::new(vec![JwtKey {
            kid: None,
            alg: None,
            key: decoding,
        }])
    };
    if p.jwks_refresh.is_some() && p.jwks_url.is_none() {
        e.add(format!("{key}.jwks_refresh"), "only applies with jwks_url");
    }
    let leeway = e.duration(
        &format!("{key}.leeway"),
        p.leeway.as_ref(),
        Duration::from_secs(30),
    );
    if leeway > Duration::from_secs(300) {
        e.warn(lint::long_leeway(format!("{key}.leeway")));
    }
    let issuer = p.issuer.as_deref().filter(|i| !i.is_empty());
    let cache_size = match p.token_cache {
        Some(0) => 0,
        raw => e.count(&format!("{key}.token_cache"), raw, 10_000, 1_000_000),
    };
    Some(JwtProvider {
        name: p.name.clone(),
        label: format!("jwt:{}", p.name),
        validations: jwt::validations(&algorithms, issuer, &p.audiences, leeway.as_secs()),
        algorithms,
        keys: Arc::new(remote_store.unwrap_or_else(|| KeyStore::new(keys))),
        consumer_claim: p.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
        scopes_claim: p.scopes_claim.clone().unwrap_or_else(|| "scope".into()),
        leeway: leeway.as_secs(),
        cache: TokenCache::new(cache_size),
    })
}

/// A route's `auth` methods and `allow` rule.
pub(super) fn route_access(
    e: &mut Errors,
    key: &str,
    r: &RawRoute,
    ids: &Identities,
    mtls_listener: bool,
) -> (AuthPolicy, Option<Allow>) {
    let providers: HashMap<&str, usize> = ids
        .jwt_providers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut methods = Vec::new();
    for (m, text) in r.auth.iter().enumerate() {
        let method = match text.as_str() {
            "api_key" => Some(AuthMethod::ApiKey),
            "mtls" => {
                if !mtls_listener {
                    e.add(
                        format!("{key}.auth[{m}]"),
                        "\"mtls\" needs a listener with tls.client_ca, so that client certificates are verified",
                    );
                }
                Some(AuthMethod::Mtls)
            }
            other => {
                match other.strip_prefix("jwt:") {
                    Some(name) => match providers.get(name) {
                        Some(&i) => Some(AuthMethod::Jwt(i)),
                        None => {
                            e.add(
                            format!("{key}.auth[{m}]"),
                            format!("unknown JWT provider {name:?}; define it under [[jwt_providers]]"),
                        );
                            None
                        }
                    },
                    None => {
                        e.add(
                        format!("{key}.auth[{m}]"),
                        format!("unknown method {other:?}; use \"jwt:<provider>\", \"api_key\" or \"mtls\""),
                    );
                        None
                    }
                }
            }
        };
        if let Some(method) = method {
            if methods.contains(&method) {
                e.add(
                    format!("{key}.auth[{m}]"),
                    format!("{text:?} is listed twice"),
                );
            }
            methods.push(method);
        }
    }
    if r.public && !r.auth.is_empty() {
        e.add(
            format!("{key}.public"),
            "a public route cannot also require auth; remove one",
        );
    }
    if methods.contains(&AuthMethod::ApiKey) && ids.api_keys.is_empty() {
        e.warn(lint::api_key_without_keys(format!("{key}.auth")));
    }
    let allow = r.allow.as_ref().map(|a| {
        if r.public {
            e.add(
                format!("{key}.allow"),
                "a public route has no authenticated consumer to allow; remove allow or public",
            );
        }
        for (g, group) in a.groups.iter().enumerate() {
            e.name(
                format!("{key}.allow.groups[{g}]"),
                "group name",
                group,
                None,
            );
        }
        Allow {
            any_consumer: a.consumers.iter().any(|c| c == "*"),
            consumers: a.consumers.iter().filter(|c| *c != "*").cloned().collect(),
            groups: a.groups.clone(),
            scopes: a.scopes.clone(),
        }
    });
    if !r.public && !methods.is_empty() {
        match &allow {
            None => e.warn(lint::auth_without_allow(key.to_string())),
            Some(a)
                if !a.any_consumer
                    && a.consumers.is_empty()
                    && a.groups.is_empty()
                    && a.scopes.is_empty() =>
            {
                e.warn(lint::empty_allow(format!("{key}.allow")))
            }
            Some(_) => {}
        }
    }
    let policy = match r.public {
        true => AuthPolicy::Public,
        false => AuthPolicy::AnyOf(methods),
    };
    (policy, allow)
}
