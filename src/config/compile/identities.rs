//! Compiling who may authenticate: `[[jwt_providers]]` (keys loaded and parsed now),
//! `[[consumers]]` (key hashes indexed, certificate subjects parsed), and each route's
//! `auth` and `allow`. Secrets are read from the environment or a file, never the config.

use super::introspection;
use super::secret;
use crate::checks::acl::Allow;
use crate::checks::auth::api_key::{parse_hash, parse_not_after, ApiKeyEntry};
use crate::checks::auth::jwt::{self, JwtProvider};
use crate::checks::auth::key_store::{self, JwtKey, KeySet, KeySource, KeyStore};
use crate::checks::auth::mtls::parse_subject;
use crate::checks::auth::token_cache::TokenCache;
use crate::checks::auth::{AuthMethod, AuthPolicy, Consumer, Identities};
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::lint;
use crate::config::raw::{RawApiKey, RawConsumer, RawJwtProvider, RawRoute};
use jsonwebtoken::DecodingKey;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
        match p.kind.as_deref() {
            None | Some("jwt") => {
                for k in introspection::set_keys(p, introspection::INTROSPECTION_ONLY) {
                    e.add(
                        format!("{key}.{k}"),
                        "only applies to kind = \"introspection\"",
                    );
                }
                if let Some(provider) = compile_provider(e, &key, p, file) {
                    ids.jwt_providers.push(provider);
                }
            }
            Some("introspection") => {
                if let Some(provider) = introspection::compile(e, &key, p, file) {
                    ids.introspection.push(provider);
                }
            }
            Some(other) => e.add(
                format!("{key}.kind"),
                format!("unknown kind {other:?}; use \"jwt\" (the default) or \"introspection\""),
            ),
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
        for (k, raw) in c.api_keys.iter().enumerate() {
            let at = format!("{key}.api_keys[{k}]");
            if let Some(entry) = api_key_entry(e, &at, raw, index) {
                let hash = match raw {
                    RawApiKey::Hash(text) => text,
                    RawApiKey::Entry(entry) => &entry.hash,
                };
                let hash_key = match raw {
                    RawApiKey::Hash(_) => at.clone(),
                    RawApiKey::Entry(_) => format!("{at}.hash"),
                };
                if let Err(message) = parse_hash(hash).and_then(|h| ids.api_keys.insert(h, entry)) {
                    e.add(hash_key, message);
                }
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
    secret::read(
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
        p.discovery.is_some(),
        p.secret_env.is_some(),
        p.secret_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        e.add(
            key,
            "needs exactly one key source: jwks_file, jwks_url, discovery, secret_env or secret_file",
        );
        return None;
    }
    let mut issuer = p.issuer.clone().filter(|i| !i.is_empty());
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
        match key_store::parse_jwks(&text) {
            Ok(set) => set,
            Err(message) => {
                e.add(
                    format!("{key}.jwks_file"),
                    format!("{}: {message}", path.display()),
                );
                return None;
            }
        }
    } else if p.jwks_url.is_some() || p.discovery.is_some() {
        let source = remote_source(e, key, p, &mut issuer)?;
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
        remote_store = Some(KeyStore::remote(source, refresh));
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
    if p.jwks_refresh.is_some() && p.jwks_url.is_none() && p.discovery.is_none() {
        e.add(
            format!("{key}.jwks_refresh"),
            "only applies with jwks_url or discovery",
        );
    }
    let leeway = e.duration(
        &format!("{key}.leeway"),
        p.leeway.as_ref(),
        Duration::from_secs(30),
    );
    if leeway > Duration::from_secs(300) {
        e.warn(lint::long_leeway(format!("{key}.leeway")));
    }
    let cache_size = match p.token_cache {
        Some(0) => 0,
        raw => e.count(&format!("{key}.token_cache"), raw, 10_000, 1_000_000),
    };
    Some(JwtProvider {
        name: p.name.clone(),
        label: format!("jwt:{}", p.name),
        validations: jwt::validations(
            &algorithms,
            issuer.as_deref(),
            &p.audiences,
            leeway.as_secs(),
        ),
        algorithms,
        keys: Arc::new(remote_store.unwrap_or_else(|| KeyStore::new(keys))),
        consumer_claim: p.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
        scopes_claim: p.scopes_claim.clone().unwrap_or_else(|| "scope".into()),
        leeway: leeway.as_secs(),
        cache: TokenCache::new(cache_size),
    })
}

/// The `jwks_url` or `discovery` of a provider, checked; `None` (with an error) when unusable. A discovery provider without `issuer` takes the one its
/// address implies (the part before `/.well-known/openid-configuration`), which the document
/// must then name exactly.
fn remote_source(
    e: &mut Errors,
    key: &str,
    p: &RawJwtProvider,
    issuer: &mut Option<String>,
) -> Option<KeySource> {
    let (field, url) = match (&p.jwks_url, &p.discovery) {
        (Some(url), _) => ("jwks_url", url),
        (None, Some(url)) => ("discovery", url),
        (None, None) => {
            e.add(key, "needs jwks_url or discovery");
            return None;
        }
    };
    let parsed = match crate::outbound::parse_url(url) {
        Ok(parsed) => parsed,
        Err(message) => {
            e.add(format!("{key}.{field}"), message);
            return None;
        }
    };
    if field == "jwks_url" {
        if !parsed.tls && !parsed.is_loopback() {
            e.warn(lint::plain_http_jwks(format!("{key}.jwks_url")));
        }
        return Some(KeySource::Jwks(url.clone()));
    }
    let issuer = super::discovery::issuer(e, key, url, &parsed, issuer)?;
    Some(KeySource::Discovery {
        url: url.clone(),
        issuer,
    })
}

/// `jwt:<name>` or `introspection:<name>`: the provider it names, of that kind.
fn provider_method(
    e: &mut Errors,
    at: &str,
    text: &str,
    jwt: &HashMap<&str, usize>,
    introspection: &HashMap<&str, usize>,
) -> Option<AuthMethod> {
    let (kind, name) = text.split_once(':').unwrap_or(("", text));
    let (own, other, other_kind, method): (_, _, _, fn(usize) -> AuthMethod) = match kind {
        "jwt" => (jwt, introspection, "introspection", AuthMethod::Jwt),
        "introspection" => (introspection, jwt, "jwt", AuthMethod::Introspection),
        _ => {
            e.add(
                at,
                format!("unknown method {text:?}; use \"jwt:<provider>\", \"introspection:<provider>\", \"api_key\" or \"mtls\""),
            );
            return None;
        }
    };
    if let Some(&i) = own.get(name) {
        return Some(method(i));
    }
    if other.contains_key(name) {
        e.add(
            at,
            format!("provider {name:?} is of kind \"{other_kind}\"; write \"{other_kind}:{name}\""),
        );
    } else {
        e.add(
            at,
            format!(
                "unknown {} provider {name:?}; define it under [[jwt_providers]]",
                if kind == "jwt" {
                    "JWT"
                } else {
                    "introspection"
                }
            ),
        );
    }
    None
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
    let introspection: HashMap<&str, usize> = ids
        .introspection
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name(), i))
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
            other => provider_method(
                e,
                &format!("{key}.auth[{m}]"),
                other,
                &providers,
                &introspection,
            ),
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

/// A key's label and `not_after`, checked (a key that expires within 14 days, or has, is a
/// warning of `check`).
fn api_key_entry(
    e: &mut Errors,
    at: &str,
    raw: &RawApiKey,
    consumer: usize,
) -> Option<ApiKeyEntry> {
    let consumer = u32::try_from(consumer).ok()?;
    let RawApiKey::Entry(entry) = raw else {
        return Some(ApiKeyEntry {
            consumer,
            label: None,
            not_after: None,
        });
    };
    if let Some(label) = &entry.label {
        e.name(format!("{at}.label"), "key label", label, None);
    }
    let not_after = match entry.not_after.as_deref().map(parse_not_after) {
        None => None,
        Some(Ok(end)) => {
            let left = end.duration_since(SystemTime::now()).unwrap_or_default();
            if left < KEY_EXPIRY_WARNING {
                e.warn(lint::key_expiring(format!("{at}.not_after"), left));
            }
            Some(end)
        }
        Some(Err(message)) => {
            e.add(format!("{at}.not_after"), message);
            None
        }
    };
    Some(ApiKeyEntry {
        consumer,
        label: entry.label.as_deref().map(Arc::from),
        not_after,
    })
}

/// `check` warns about keys that expire sooner than this.
const KEY_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Providers {
        jwt_providers: Vec<RawJwtProvider>,
    }

    /// A secret file of `len` bytes (mode 600), for `secret_file`.
    fn secret_file(len: usize) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "portcullis-identities-{}-{len}.secret",
            std::process::id()
        ));
        std::fs::write(&path, "s".repeat(len)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    /// One provider named `main` with `body` (audiences given unless `body` sets them), compiled:
    /// the provider when it was made, and every error and warning as `key: message`.
    fn provider(body: &str) -> (Option<JwtProvider>, Vec<String>, Vec<String>) {
        let audiences = match body.contains("audiences") {
            true => "",
            false => "audiences = [\"orders\"]\n",
        };
        let toml = format!("[[jwt_providers]]\nname = \"main\"\n{audiences}{body}");
        let (ids, errors, warnings) = section(&toml, |e, s: &Providers, file| {
            compile(e, &s.jwt_providers, &[], file)
        });
        (ids.jwt_providers.into_iter().next(), errors, warnings)
    }

    const JWKS: &str = "jwks_file = \"jwt/jwks.json\"\n";

    #[test]
    fn a_provider_with_keys_and_an_allow_list_compiles() {
        let (made, errors, warnings) = provider(&format!(
            "{JWKS}algorithms = [\"RS256\", \"ES256\"]\nissuer = \"https://id.example.com\"\nleeway = \"10s\""
        ));
        assert_eq!((errors, warnings), (vec![], vec![]));
        let made = made.expect("a provider");
        assert_eq!(made.label, "jwt:main");
        assert_eq!(
            made.algorithms,
            [
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256
            ]
        );
        assert_eq!(made.leeway, 10);
        assert!(made.cache.is_some(), "caching is on by default");
    }

    #[test]
    fn the_algorithm_allow_list_is_explicit_and_never_none() {
        let secret = format!("secret_file = {:?}\n", secret_file(32));
        // The allow-list, the key source, and the error it gets (key: start of the message).
        let cases: Vec<(&str, &str, &str)> = vec![
            ("[]", JWKS, "jwt_providers[0].algorithms: empty;"),
            (
                "[\"none\"]",
                JWKS,
                "jwt_providers[0].algorithms[0]: \"none\" is never accepted",
            ),
            (
                "[\"RS256\", \"NoNe\"]",
                JWKS,
                "jwt_providers[0].algorithms[1]: \"none\" is never accepted",
            ),
            (
                "[\"RS256\", \"RS256\"]",
                JWKS,
                "jwt_providers[0].algorithms[1]: RS256 is listed twice",
            ),
            (
                "[\"XS256\"]",
                JWKS,
                "jwt_providers[0].algorithms[0]: unknown algorithm \"XS256\"",
            ),
            (
                "[\"rs256\"]",
                JWKS,
                "jwt_providers[0].algorithms[0]: unknown algorithm \"rs256\"",
            ),
            // Key confusion: a public-key algorithm checked with a shared secret, or an HS
            // algorithm with keys anyone can fetch, is refused outright.
            (
                "[\"RS256\"]",
                &secret,
                "jwt_providers[0].algorithms: a shared secret can only verify HS256",
            ),
            (
                "[\"HS256\"]",
                "jwks_url = \"https://id.example.com/jwks\"\n",
                "jwt_providers[0].algorithms: a remote JWKS is for public-key algorithms",
            ),
        ];
        for (algorithms, source, expected) in cases {
            let (_, errors, _) = provider(&format!("{source}algorithms = {algorithms}"));
            assert_eq!(errors.len(), 1, "{algorithms} {source}: {errors:?}");
            assert!(
                errors[0].starts_with(expected),
                "{algorithms} {source}: {errors:?}"
            );
        }
    }

    #[test]
    fn exactly_one_key_source_and_settings_that_fit_it() {
        let cases: Vec<(String, &str)> = vec![
            (
                "algorithms = [\"RS256\"]".into(),
                "jwt_providers[0]: needs exactly one key source",
            ),
            (
                format!("{JWKS}jwks_url = \"https://id.example.com/jwks\"\nalgorithms = [\"RS256\"]"),
                "jwt_providers[0]: needs exactly one key source",
            ),
            (
                format!("{JWKS}jwks_refresh = \"5m\"\nalgorithms = [\"RS256\"]"),
                "jwt_providers[0].jwks_refresh: only applies with jwks_url",
            ),
            (
                "jwks_url = \"https://id.example.com/jwks\"\njwks_refresh = \"1s\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].jwks_refresh: at least 10s",
            ),
            (
                "jwks_url = \"ftp://id.example.com/jwks\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].jwks_url: ",
            ),
            (
                "jwks_file = \"jwt/missing.json\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].jwks_file: cannot read ",
            ),
            (
                "jwks_file = \"jwt/rsa.pem\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].jwks_file: ",
            ),
        ];
        for (body, expected) in cases {
            let (made, errors, _) = provider(&body);
            assert!(made.is_none() || !errors.is_empty(), "{body}");
            assert_eq!(errors.len(), 1, "{body}: {errors:?}");
            assert!(errors[0].starts_with(expected), "{body}: {errors:?}");
        }
    }

    #[test]
    fn a_discovery_provider_takes_its_issuer_from_the_address_or_the_config() {
        let well_known = "https://id.example.com/realms/a/.well-known/openid-configuration";
        let source = |made: Option<JwtProvider>| {
            let made = made.expect("a provider");
            let remote = made.keys.remote.as_ref().expect("remote keys");
            (remote.source.clone(), made.validations)
        };
        let (made, errors, warnings) = provider(&format!(
            "discovery = {well_known:?}
algorithms = [\"RS256\"]"
        ));
        assert_eq!((errors, warnings), (vec![], vec![]));
        let (found, validations) = source(made);
        let implied = "https://id.example.com/realms/a".to_string();
        assert_eq!(
            found,
            KeySource::Discovery {
                url: well_known.into(),
                issuer: implied.clone()
            }
        );
        let rs256 = &validations[&jsonwebtoken::Algorithm::RS256];
        assert_eq!(
            rs256.iss,
            Some(HashSet::from([implied])),
            "tokens must carry it"
        );

        // A configured issuer wins, and an address elsewhere needs one.
        let (made, errors, _) = provider(
            "discovery = \"https://id.example.com/oidc.json\"\nissuer = \"https://id.example.com\"\nalgorithms = [\"RS256\"]",
        );
        assert_eq!(errors, Vec::<String>::new());
        assert!(
            matches!(source(made).0, KeySource::Discovery { issuer, .. } if issuer == "https://id.example.com")
        );
        // Plain http on this machine is for tests.
        let (_, errors, warnings) = provider(
            "discovery = \"http://127.0.0.1:9/.well-known/openid-configuration\"\nalgorithms = [\"ES256\"]",
        );
        assert_eq!((errors, warnings), (vec![], vec![]));
    }

    #[test]
    fn discovery_settings_that_cannot_work_are_errors() {
        let well_known = "https://id.example.com/.well-known/openid-configuration";
        let cases: Vec<(String, &str)> = vec![
            (
                "discovery = \"https://id.example.com/oidc.json\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].issuer: needed: ",
            ),
            (
                "discovery = \"/.well-known/openid-configuration\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].discovery: ",
            ),
            (
                "discovery = \"http://id.example.com/.well-known/openid-configuration\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].discovery: plain http is only allowed on loopback",
            ),
            (
                format!("discovery = {well_known:?}\njwks_url = \"https://id.example.com/k\"\nalgorithms = [\"RS256\"]"),
                "jwt_providers[0]: needs exactly one key source",
            ),
            (
                format!("discovery = {well_known:?}\nalgorithms = [\"HS256\"]"),
                "jwt_providers[0].algorithms: a remote JWKS is for public-key algorithms",
            ),
            (
                format!("discovery = {well_known:?}\njwks_refresh = \"2s\"\nalgorithms = [\"RS256\"]"),
                "jwt_providers[0].jwks_refresh: at least 10s",
            ),
        ];
        for (body, expected) in cases {
            let (_, errors, _) = provider(&body);
            assert_eq!(errors.len(), 1, "{body}: {errors:?}");
            assert!(errors[0].starts_with(expected), "{body}: {errors:?}");
        }
    }

    #[test]
    fn a_route_names_a_provider_by_its_kind() {
        let jwt = HashMap::from([("corp", 0)]);
        let introspection = HashMap::from([("as", 0)]);
        let mut e = Errors::new(Path::new("p.toml"));
        let mut method =
            |text: &str| provider_method(&mut e, "auth[0]", text, &jwt, &introspection);
        assert_eq!(method("jwt:corp"), Some(AuthMethod::Jwt(0)));
        assert_eq!(
            method("introspection:as"),
            Some(AuthMethod::Introspection(0))
        );
        assert_eq!(method("jwt:as"), None);
        assert_eq!(method("introspection:corp"), None);
        assert_eq!(method("introspection:nope"), None);
        assert_eq!(method("oauth:as"), None);
        let errors: Vec<String> = e.errors().iter().map(|x| x.message.clone()).collect();
        assert_eq!(
            errors,
            [
                "provider \"as\" is of kind \"introspection\"; write \"introspection:as\"",
                "provider \"corp\" is of kind \"jwt\"; write \"jwt:corp\"",
                "unknown introspection provider \"nope\"; define it under [[jwt_providers]]",
                "unknown method \"oauth:as\"; use \"jwt:<provider>\", \"introspection:<provider>\", \"api_key\" or \"mtls\"",
            ]
        );
    }

    #[test]
    fn risky_but_working_settings_are_warnings() {
        let short = format!("secret_file = {:?}\n", secret_file(8));
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{short}algorithms = [\"HS256\"]"),
                "jwt_providers[0].secret: the HS secret has 8 bytes",
            ),
            (
                format!("{JWKS}algorithms = [\"RS256\", \"HS256\"]"),
                "jwt_providers[0].algorithms: mixes HS",
            ),
            (
                format!("{JWKS}algorithms = [\"RS256\"]\naudiences = []"),
                "jwt_providers[0].audiences: no audiences",
            ),
            (
                format!("{JWKS}algorithms = [\"RS256\"]\nleeway = \"10m\""),
                "jwt_providers[0].leeway: more than 5 minutes",
            ),
            (
                "jwks_url = \"http://id.example.com/jwks\"\nalgorithms = [\"RS256\"]".into(),
                "jwt_providers[0].jwks_url: plain http",
            ),
        ];
        for (body, expected) in cases {
            let (_, errors, warnings) = provider(&body);
            assert_eq!(errors, Vec::<String>::new(), "{body}");
            assert_eq!(warnings.len(), 1, "{body}: {warnings:?}");
            assert!(warnings[0].starts_with(expected), "{body}: {warnings:?}");
        }
        // A JWKS on this machine may be fetched over plain HTTP.
        let (_, _, warnings) =
            provider("jwks_url = \"http://127.0.0.1:9/jwks\"\nalgorithms = [\"RS256\"]");
        assert_eq!(warnings, Vec::<String>::new());
    }

    #[test]
    fn consumers_keys_and_subjects_are_checked() {
        #[derive(Deserialize)]
        struct Consumers {
            consumers: Vec<RawConsumer>,
        }
        let hash = "sha256:".to_string() + &"ab".repeat(32);
        let toml = format!(
            "[[consumers]]\nid = \"app\"\ngroups = [\"partners\"]\napi_keys = [\"{hash}\"]\nmtls_subjects = [\"CN=client\"]\n\
             [[consumers]]\nid = \"app\"\napi_keys = [\"{hash}\", \"md5:00\"]\nmtls_subjects = [\"OU=nothing\"]\ngroups = [\"a b\"]"
        );
        let (ids, errors, _) = section(&toml, |e, s: &Consumers, file| {
            compile(e, &[], &s.consumers, file)
        });
        assert_eq!(ids.consumers[0].groups, ["partners"]);
        assert_eq!(
            ids.consumer_index("app"),
            Some(1),
            "the last of a duplicate"
        );
        let keys: Vec<&str> = errors
            .iter()
            .map(|x| x.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "consumers[1].id",
                "consumers[1].groups[0]",
                "consumers[1].api_keys[0]",
                "consumers[1].api_keys[1]",
                "consumers[1].mtls_subjects[0]",
            ],
            "{errors:?}"
        );
    }
}
