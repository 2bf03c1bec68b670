//! Fetching JWKS documents over HTTP(S) with Pingora's own connector, as a Pingora background
//! service: on start, every `jwks_refresh`, and when a request asks because a token named an
//! unknown key. A provider with `discovery` first fetches its OpenID Connect discovery document
//! (OpenID Connect Discovery 1.0 §4): its `issuer` must equal the provider's exactly, and its
//! `jwks_uri` must be https (or plain http on loopback, for tests). A failed fetch keeps the last
//! good key set, and a failed discovery the last good `jwks_uri`. Never runs on the request path.

use crate::checks::auth::key_store::{parse_jwks, KeySet, KeySource, KeyStore, RemoteJwks};
use crate::outbound::{self, parse_url, Url};
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// A JWKS larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A discovery document larger than this is refused (real ones are a few KiB).
pub const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Whole fetch: connect, request, response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetch and parse a JWKS. TLS certificates and host names are verified.
pub async fn fetch(url: &Url, connector: &Connector) -> Result<KeySet, String> {
    parse_jwks(&get(url, connector, MAX_JWKS_BYTES, "the JWKS").await?)
}

/// Fetch a discovery document and return the `jwks_uri` it names, checked.
pub async fn discover(url: &str, issuer: &str, connector: &Connector) -> Result<String, String> {
    let parsed = parse_url(url)?;
    let text = get(
        &parsed,
        connector,
        MAX_DISCOVERY_BYTES,
        "the discovery document",
    )
    .await?;
    read_discovery(&text, issuer)
}

/// Check a discovery document against the provider's issuer; returns its `jwks_uri`.
pub fn read_discovery(text: &str, issuer: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a discovery document: {e}"))?;
    match doc.get("issuer") {
        Some(serde_json::Value::String(found)) if found == issuer => {}
        Some(serde_json::Value::String(found)) => {
            return Err(format!(
                "the document's issuer {found:?} is not {issuer:?}; they must match exactly"
            ))
        }
        _ => return Err("the document has no issuer".into()),
    }
    let Some(jwks_uri) = doc.get("jwks_uri").and_then(serde_json::Value::as_str) else {
        return Err("the document has no jwks_uri".into());
    };
    let parsed = parse_url(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
    if !parsed.tls && !parsed.is_loopback() {
        return Err(format!(
            "jwks_uri {:?} is plain http; keys are only fetched over https (or from loopback)",
            crate::observe::redact::redact_url(jwks_uri)
        ));
    }
    Ok(jwks_uri.to_string())
}

/// GET one document of at most `limit` bytes; `what` names it in errors.
async fn get(url: &Url, connector: &Connector, limit: usize, what: &str) -> Result<String, String> {
    let request = outbound::Request {
        url,
        headers: &[],
        body: None,
        limit,
        what,
        timeout: FETCH_TIMEOUT,
    };
    let (status, body) = outbound::send(&request, connector)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    String::from_utf8(body).map_err(|_| format!("{what} is not UTF-8"))
}

/// Keeps every remote key store fresh.
pub struct JwksRefresher {
    pub stores: Vec<(String, Arc<KeyStore>)>,
    pub failures: prometheus::IntCounterVec,
}

/// One refresh of a remote store: the keys, if they were fetched, and every error met. When
/// discovery fails but a `jwks_uri` was found before, the JWKS is still refreshed from it.
async fn refresh(
    name: &str,
    remote: &RemoteJwks,
    connector: &Connector,
) -> (Option<KeySet>, Vec<String>) {
    let mut errors = Vec::new();
    if let KeySource::Discovery { url, issuer } = &remote.source {
        match discover(url, issuer, connector).await {
            Ok(jwks_uri) => match remote.discovered(&jwks_uri) {
                Some(old) => log::warn!(
                    "jwt provider {name}: the discovery document {url} now names the JWKS {jwks_uri} (was {old})"
                ),
                None => log::debug!("jwt provider {name}: {url} names the JWKS {jwks_uri}"),
            },
            Err(e) => errors.push(match remote.status().jwks_uri {
                Some(last) => format!(
                    "cannot refresh the discovery document {url}: {e}; keeping the last good jwks_uri {last}"
                ),
                None => format!("cannot read the discovery document {url}: {e}"),
            }),
        }
    }
    let Some(jwks_uri) = remote.status().jwks_uri else {
        return (None, errors);
    };
    let fetched = match parse_url(&jwks_uri) {
        Ok(url) => fetch(&url, connector).await,
        Err(e) => Err(e),
    };
    match fetched {
        Ok(keys) => {
            log::info!(
                "jwt provider {name}: loaded {} key(s) from {jwks_uri}",
                keys.len()
            );
            (Some(keys), errors)
        }
        Err(e) => {
            errors.push(format!(
                "cannot refresh the JWKS from {jwks_uri}: {e}; keeping the last good keys"
            ));
            (None, errors)
        }
    }
}

async fn refresh_loop(
    name: String,
    store: Arc<KeyStore>,
    failures: prometheus::IntCounterVec,
    mut shutdown: ShutdownWatch,
) {
    let Some(remote) = store.remote.as_ref() else {
        return;
    };
    let connector = Connector::new(None);
    loop {
        let (keys, errors) = refresh(&name, remote, &connector).await;
        for e in &errors {
            failures.with_label_values(&[name.as_str()]).inc();
            log::error!("jwt provider {name}: {e}");
        }
        if let Some(keys) = keys {
            store.replace(keys);
        }
        remote.attempted(errors.last().cloned());
        tokio::select! {
            _ = tokio::time::sleep(remote.refresh) => {}
            _ = remote.woken() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .stores
            .iter()
            .map(|(name, store)| {
                tokio::spawn(refresh_loop(
                    name.clone(),
                    store.clone(),
                    self.failures.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents() {
        let issuer = "https://id.example.com";
        let doc = |iss: &str, jwks: &str| {
            serde_json::json!({ "issuer": iss, "jwks_uri": jwks }).to_string()
        };
        assert_eq!(
            read_discovery(&doc(issuer, "https://id.example.com/keys"), issuer).unwrap(),
            "https://id.example.com/keys"
        );
        assert_eq!(
            read_discovery(&doc(issuer, "http://127.0.0.1:8080/keys"), issuer).unwrap(),
            "http://127.0.0.1:8080/keys"
        );
        let refused = [
            (
                doc("https://id.example.com/", "https://id.example.com/k"),
                "must match exactly",
            ),
            (
                doc("https://ID.example.com", "https://id.example.com/k"),
                "must match exactly",
            ),
            (
                doc("https://evil.example", "https://id.example.com/k"),
                "must match exactly",
            ),
            (doc(issuer, "http://id.example.com/keys"), "plain http"),
            (doc(issuer, "ftp://id.example.com/keys"), "jwks_uri: "),
            (
                doc(issuer, "https://u:p@id.example.com/keys"),
                "credentials",
            ),
            (doc(issuer, "/keys"), "jwks_uri: "),
            (
                serde_json::json!({ "jwks_uri": "https://id.example.com/k" }).to_string(),
                "no issuer",
            ),
            (
                serde_json::json!({ "issuer": 7, "jwks_uri": "https://id.example.com/k" })
                    .to_string(),
                "no issuer",
            ),
            (
                serde_json::json!({ "issuer": issuer }).to_string(),
                "no jwks_uri",
            ),
            (
                serde_json::json!({ "issuer": issuer, "jwks_uri": ["https://x/"] }).to_string(),
                "no jwks_uri",
            ),
            ("[]".to_string(), "no issuer"),
            ("{ not json".to_string(), "not a discovery document"),
        ];
        for (text, expected) in refused {
            let e = read_discovery(&text, issuer).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
