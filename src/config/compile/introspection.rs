//! Compiling a `[[jwt_providers]]` entry of `kind = "introspection"` (RFC 7662): its endpoint
//! (https, or plain http on loopback), client credentials (the secret from `secret_env` or
//! `secret_file`), the claims it is checked against, its caches and its timeout.

use super::secret;
use crate::checks::auth::introspection::{EndpointSource, IntrospectionProvider, Settings};
use crate::config::diagnostics::Errors;
use crate::config::lint;
use crate::config::raw::RawJwtProvider;
use std::path::Path;
use std::time::Duration;

/// Keys that only a JWT provider (`kind = "jwt"`, the default) has.
const JWT_ONLY: &[&str] = &[
    "algorithms",
    "jwks_file",
    "jwks_url",
    "jwks_refresh",
    "leeway",
];

/// Keys that only an introspection provider has.
pub(super) const INTROSPECTION_ONLY: &[&str] = &[
    "introspection_endpoint",
    "client_id",
    "cache_ttl",
    "negative_cache_ttl",
    "timeout",
];

/// Which of `keys` are set on `p`.
pub(super) fn set_keys<'a>(p: &RawJwtProvider, keys: &[&'a str]) -> Vec<&'a str> {
    keys.iter()
        .copied()
        .filter(|k| match *k {
            "algorithms" => !p.algorithms.is_empty(),
            "jwks_file" => p.jwks_file.is_some(),
            "jwks_url" => p.jwks_url.is_some(),
            "discovery" => p.discovery.is_some(),
            "jwks_refresh" => p.jwks_refresh.is_some(),
            "leeway" => p.leeway.is_some(),
            "introspection_endpoint" => p.introspection_endpoint.is_some(),
            "client_id" => p.client_id.is_some(),
            "cache_ttl" => p.cache_ttl.is_some(),
            "negative_cache_ttl" => p.negative_cache_ttl.is_some(),
            "timeout" => p.timeout.is_some(),
            _ => false,
        })
        .collect()
}

pub(super) fn compile(
    e: &mut Errors,
    key: &str,
    p: &RawJwtProvider,
    file: &Path,
) -> Option<IntrospectionProvider> {
    for k in set_keys(p, JWT_ONLY) {
        e.add(
            format!("{key}.{k}"),
            "only applies to kind = \"jwt\"; an introspection provider asks its endpoint instead",
        );
    }
    let mut issuer = p.issuer.clone().filter(|i| !i.is_empty());
    let endpoint = endpoint_source(e, key, p, &mut issuer)?;
    let client_id = match p.client_id.as_deref() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            e.add(
                format!("{key}.client_id"),
                "needed: the client id the gateway authenticates to the endpoint with",
            );
            return None;
        }
    };
    if p.secret_env.is_none() && p.secret_file.is_none() {
        e.add(
            key,
            "needs the client secret: secret_env (an environment variable's name) or secret_file",
        );
        return None;
    }
    let client_secret = secret::read(
        e,
        key,
        ("secret_env", p.secret_env.as_deref()),
        ("secret_file", p.secret_file.as_deref()),
        file,
    )?;
    let cache_ttl = e.duration_at_most(
        &format!("{key}.cache_ttl"),
        p.cache_ttl.as_ref(),
        Duration::from_secs(60),
        (
            Duration::from_secs(3600),
            "at most 1h: a revoked token is accepted from the cache for up to this long",
        ),
    );
    let negative_cache_ttl = e.duration_at_most(
        &format!("{key}.negative_cache_ttl"),
        p.negative_cache_ttl.as_ref(),
        Duration::from_secs(5),
        (
            Duration::from_secs(300),
            "at most 5m: a newly issued token that was refused stays refused this long",
        ),
    );
    let timeout = e.duration_at_most(
        &format!("{key}.timeout"),
        p.timeout.as_ref(),
        Duration::from_secs(2),
        (
            Duration::from_secs(30),
            "at most 30s: requests wait this long for the endpoint",
        ),
    );
    if p.audiences.is_empty() {
        e.warn(lint::no_audiences(format!("{key}.audiences")));
    }
    let cache_entries = match p.token_cache {
        Some(0) => 0,
        raw => e.count(&format!("{key}.token_cache"), raw, 10_000, 1_000_000),
    };
    Some(IntrospectionProvider::new(
        endpoint,
        Settings {
            name: p.name.clone(),
            client_id,
            client_secret,
            issuer,
            audiences: p.audiences.clone(),
            consumer_claim: p.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
            scopes_claim: p.scopes_claim.clone().unwrap_or_else(|| "scope".into()),
            cache_ttl,
            negative_cache_ttl,
            timeout,
            cache_entries,
        },
    ))
}

/// `introspection_endpoint`, or `discovery` (whose document names it): exactly one.
fn endpoint_source(
    e: &mut Errors,
    key: &str,
    p: &RawJwtProvider,
    issuer: &mut Option<String>,
) -> Option<EndpointSource> {
    let (field, text) = match (&p.introspection_endpoint, &p.discovery) {
        (Some(_), Some(_)) => {
            e.add(
                format!("{key}.discovery"),
                "set introspection_endpoint or discovery, not both",
            );
            return None;
        }
        (Some(text), None) => ("introspection_endpoint", text),
        (None, Some(text)) => ("discovery", text),
        (None, None) => {
            e.add(
                format!("{key}.introspection_endpoint"),
                "needed with kind = \"introspection\" (or discovery): the authorization server's RFC 7662 endpoint",
            );
            return None;
        }
    };
    let url = match crate::outbound::parse_url(text) {
        Ok(url) => url,
        Err(message) => {
            e.add(format!("{key}.{field}"), message);
            return None;
        }
    };
    if field == "discovery" {
        let issuer = super::discovery::issuer(e, key, text, &url, issuer)?;
        return Some(EndpointSource::Discovery {
            url: text.clone(),
            issuer,
        });
    }
    if !url.tls && !url.is_loopback() {
        e.add(
            format!("{key}.introspection_endpoint"),
            "plain http is only allowed on loopback: tokens and the client secret would travel in clear text; use https://",
        );
        return None;
    }
    Some(EndpointSource::Fixed {
        url,
        text: crate::observe::redact::redact_url(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Providers {
        jwt_providers: Vec<RawJwtProvider>,
    }

    const GOOD: &str = "introspection_endpoint = \"https://as.example.com/introspect\"\nclient_id = \"gw\"\nsecret_env = \"PORTCULLIS_TEST_INTROSPECTION_SECRET\"\naudiences = [\"orders\"]\n";

    /// One provider of kind introspection with `body`: the provider when made, every error.
    fn provider(body: &str) -> (Option<IntrospectionProvider>, Vec<String>, Vec<String>) {
        std::env::set_var("PORTCULLIS_TEST_INTROSPECTION_SECRET", "s3cret");
        let toml = format!("[[jwt_providers]]\nname = \"as\"\nkind = \"introspection\"\n{body}");
        section(&toml, |e, s: &Providers, file| {
            compile(e, "jwt_providers[0]", &s.jwt_providers[0], file)
        })
    }

    #[test]
    fn a_complete_provider_compiles() {
        let (made, errors, warnings) = provider(&format!(
            "{GOOD}cache_ttl = \"30s\"\nnegative_cache_ttl = \"2s\"\ntimeout = \"1s\""
        ));
        assert_eq!((errors, warnings), (vec![], vec![]));
        let made = made.expect("a provider");
        assert_eq!(made.label, "introspection:as");
        // Plain http on this machine is for tests.
        let local = GOOD.replace("https://as.example.com", "http://127.0.0.1:9");
        assert_eq!(provider(&local).1, Vec::<String>::new());
    }

    #[test]
    fn discovery_names_the_endpoint_and_the_issuer() {
        let body = GOOD.replace(
            "introspection_endpoint = \"https://as.example.com/introspect\"",
            "discovery = \"https://as.example.com/realms/x/.well-known/openid-configuration\"",
        );
        let (made, errors, _) = provider(&body);
        assert_eq!(errors, Vec::<String>::new());
        let made = made.expect("a provider");
        assert_eq!(
            made.endpoint().discovery(),
            Some((
                "https://as.example.com/realms/x/.well-known/openid-configuration",
                "https://as.example.com/realms/x"
            ))
        );
        assert_eq!(made.endpoint().endpoint_text(), None, "read at start");
        // A set issuer is the one the document must name.
        let (made, errors, _) = provider(&format!("{body}issuer = \"https://as.example.com\"\n"));
        assert_eq!(errors, Vec::<String>::new());
        let made = made.expect("a provider");
        assert_eq!(
            made.endpoint().discovery().map(|d| d.1),
            Some("https://as.example.com")
        );
    }

    #[test]
    fn what_cannot_work_is_an_error_naming_the_key() {
        let cases: Vec<(String, &str)> = vec![
            (
                GOOD.replace(
                    "introspection_endpoint = \"https://as.example.com/introspect\"\n",
                    "",
                ),
                "jwt_providers[0].introspection_endpoint: needed",
            ),
            (
                GOOD.replace("https://as.example.com", "http://as.example.com"),
                "jwt_providers[0].introspection_endpoint: plain http is only allowed on loopback",
            ),
            (
                GOOD.replace("https://as.example.com", "https://gw:pw@as.example.com"),
                "jwt_providers[0].introspection_endpoint: ",
            ),
            (
                GOOD.replace("client_id = \"gw\"\n", ""),
                "jwt_providers[0].client_id: needed",
            ),
            (
                GOOD.replace(
                    "secret_env = \"PORTCULLIS_TEST_INTROSPECTION_SECRET\"\n",
                    "",
                ),
                "jwt_providers[0]: needs the client secret",
            ),
            (
                GOOD.replace(
                    "PORTCULLIS_TEST_INTROSPECTION_SECRET",
                    "PORTCULLIS_TEST_UNSET_VARIABLE",
                ),
                "jwt_providers[0].secret_env: the environment variable",
            ),
            (
                format!("{GOOD}algorithms = [\"RS256\"]"),
                "jwt_providers[0].algorithms: only applies to kind = \"jwt\"",
            ),
            (
                format!("{GOOD}jwks_url = \"https://as.example.com/jwks\""),
                "jwt_providers[0].jwks_url: only applies to kind = \"jwt\"",
            ),
            (
                format!(
                    "{GOOD}discovery = \"https://as.example.com/.well-known/openid-configuration\""
                ),
                "jwt_providers[0].discovery: set introspection_endpoint or discovery, not both",
            ),
            (
                GOOD.replace(
                    "introspection_endpoint = \"https://as.example.com/introspect\"",
                    "discovery = \"http://as.example.com/.well-known/openid-configuration\"",
                ),
                "jwt_providers[0].discovery: plain http is only allowed on loopback",
            ),
            (
                GOOD.replace(
                    "introspection_endpoint = \"https://as.example.com/introspect\"",
                    "discovery = \"https://as.example.com/metadata.json\"",
                ),
                "jwt_providers[0].issuer: needed",
            ),
            (
                format!("{GOOD}cache_ttl = \"2h\""),
                "jwt_providers[0].cache_ttl: at most 1h",
            ),
            (
                format!("{GOOD}negative_cache_ttl = \"10m\""),
                "jwt_providers[0].negative_cache_ttl: at most 5m",
            ),
            (
                format!("{GOOD}timeout = \"0s\""),
                "jwt_providers[0].timeout: ",
            ),
            (
                format!("{GOOD}timeout = \"1m\""),
                "jwt_providers[0].timeout: at most 30s",
            ),
        ];
        for (body, expected) in cases {
            let (_, errors, _) = provider(&body);
            assert_eq!(errors.len(), 1, "{body}: {errors:?}");
            assert!(errors[0].starts_with(expected), "{body}: {errors:?}");
        }
        let (_, _, warnings) = provider(&GOOD.replace("audiences = [\"orders\"]\n", ""));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("jwt_providers[0].audiences: no audiences"));
    }
}
