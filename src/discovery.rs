//! OpenID Connect discovery (OpenID Connect Discovery 1.0 §4; the same document as RFC 8414's
//! authorization server metadata): a provider's document names where its keys are
//! (`jwks_uri`, for JWT providers: `jwks.rs`) or its token introspection endpoint
//! (`introspection_endpoint`, for introspection providers: the refresher below). The
//! document's `issuer` must equal the provider's exactly, and the address it names must be
//! https (plain http only on loopback, for tests). Nothing here runs on the request path.

use crate::checks::auth::introspection::EndpointState;
use crate::outbound::{self, parse_url};
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// A discovery document larger than this is refused (real ones are a few KiB).
pub const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Whole fetch of a document: connect, request, answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The member naming a JWT provider's key set.
pub const JWKS_URI: &str = "jwks_uri";
/// The member naming an introspection provider's endpoint.
pub const INTROSPECTION_ENDPOINT: &str = "introspection_endpoint";
/// How often an introspection provider's document is read again once it named an endpoint.
pub const INTROSPECTION_REFRESH: Duration = Duration::from_secs(300);
/// How soon a provider that has no endpoint yet tries again.
pub const INTROSPECTION_RETRY: Duration = Duration::from_secs(10);

/// Fetch the discovery document at `url` and return the address its `member` names, checked.
pub async fn discover(
    url: &str,
    issuer: &str,
    member: &str,
    connector: &Connector,
) -> Result<String, String> {
    let parsed = parse_url(url)?;
    let text = outbound::get(
        &parsed,
        connector,
        MAX_DISCOVERY_BYTES,
        "the discovery document",
        FETCH_TIMEOUT,
    )
    .await?;
    read_discovery(&text, issuer, member)
}

/// Check a discovery document against the provider's issuer; returns the address `member`
/// names.
pub fn read_discovery(text: &str, issuer: &str, member: &str) -> Result<String, String> {
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
    let Some(address) = doc.get(member).and_then(serde_json::Value::as_str) else {
        return Err(format!("the document has no {member}"));
    };
    let parsed = parse_url(address).map_err(|e| format!("{member}: {e}"))?;
    if !parsed.tls && !parsed.is_loopback() {
        return Err(format!(
            "{member} {:?} is plain http; only https (or loopback) is used",
            crate::observe::redact::redact_url(address)
        ));
    }
    Ok(address.to_string())
}

/// Keeps the endpoint of every introspection provider with `discovery` known: read at start,
/// every `INTROSPECTION_REFRESH` after, every `INTROSPECTION_RETRY` while none is known. A
/// failed read keeps the last good endpoint.
pub struct IntrospectionDiscovery {
    pub providers: Vec<(String, Arc<EndpointState>)>,
    /// `portcullis_introspection_errors_total`: a failed read counts as reason `discovery`.
    pub errors: prometheus::IntCounterVec,
}

async fn discovery_loop(
    name: String,
    state: Arc<EndpointState>,
    errors: prometheus::IntCounterVec,
    mut shutdown: ShutdownWatch,
) {
    let Some((url, issuer)) = state.discovery() else {
        return;
    };
    let connector = Connector::new(None);
    loop {
        let first = state.endpoint_text().is_none();
        let found = discover(url, issuer, INTROSPECTION_ENDPOINT, &connector).await;
        let error = match found.and_then(|endpoint| state.discovered(&endpoint)) {
            Ok(Some(old)) => {
                log::warn!(
                    "introspection provider {name}: the discovery document {url} now names the endpoint {} (was {old})",
                    state.endpoint_text().unwrap_or_default()
                );
                None
            }
            Ok(None) => {
                if first {
                    log::info!(
                        "introspection provider {name}: {url} names the endpoint {}",
                        state.endpoint_text().unwrap_or_default()
                    );
                }
                None
            }
            Err(e) => {
                errors
                    .with_label_values(&[name.as_str(), "discovery"])
                    .inc();
                let error = match state.endpoint_text() {
                    Some(last) => format!("cannot refresh the discovery document {url}: {e}; keeping the last good endpoint {last}"),
                    None => format!("cannot read the discovery document {url}: {e}; requests that need this provider are refused with 503"),
                };
                log::error!("introspection provider {name}: {error}");
                Some(error)
            }
        };
        state.attempted(error);
        let wait = if state.endpoint_text().is_some() {
            INTROSPECTION_REFRESH
        } else {
            INTROSPECTION_RETRY
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[async_trait]
impl BackgroundService for IntrospectionDiscovery {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .providers
            .iter()
            .map(|(name, state)| {
                tokio::spawn(discovery_loop(
                    name.clone(),
                    state.clone(),
                    self.errors.clone(),
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
            read_discovery(
                &doc(issuer, "https://id.example.com/keys"),
                issuer,
                JWKS_URI
            )
            .unwrap(),
            "https://id.example.com/keys"
        );
        assert_eq!(
            read_discovery(&doc(issuer, "http://127.0.0.1:8080/keys"), issuer, JWKS_URI).unwrap(),
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
            let e = read_discovery(&text, issuer, JWKS_URI).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn the_introspection_endpoint_is_read_the_same_way() {
        let issuer = "https://id.example.com";
        let doc = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": "https://id.example.com/keys",
            "introspection_endpoint": "https://id.example.com/introspect",
        })
        .to_string();
        assert_eq!(
            read_discovery(&doc, issuer, INTROSPECTION_ENDPOINT).unwrap(),
            "https://id.example.com/introspect"
        );
        let plain = doc.replace(
            "https://id.example.com/introspect",
            "http://id.example.com/i",
        );
        let e = read_discovery(&plain, issuer, INTROSPECTION_ENDPOINT).unwrap_err();
        assert!(e.starts_with("introspection_endpoint \"http"), "{e}");
        let without = serde_json::json!({ "issuer": issuer }).to_string();
        let e = read_discovery(&without, issuer, INTROSPECTION_ENDPOINT).unwrap_err();
        assert_eq!(e, "the document has no introspection_endpoint");
    }
}
