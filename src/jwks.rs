//! Fetching JWKS documents over HTTP(S) with Pingora's own connector, as a Pingora background
//! service: on start, every `jwks_refresh`, and when a request asks because a token named an
//! unknown key. A provider with `discovery` first fetches its OpenID Connect discovery document
//! (OpenID Connect Discovery 1.0 §4): its `issuer` must equal the provider's exactly, and its
//! `jwks_uri` must be https (or plain http on loopback, for tests). A failed fetch keeps the last
//! good key set, and a failed discovery the last good `jwks_uri`. Never runs on the request path.

use crate::checks::auth::key_store::{parse_jwks, KeySet, KeySource, KeyStore, RemoteJwks};
use crate::discovery::{discover, JWKS_URI};
use crate::outbound::{self, parse_url, Url};
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// A JWKS larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Whole fetch: connect, request, response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetch and parse a JWKS. TLS certificates and host names are verified.
pub async fn fetch(url: &Url, connector: &Connector) -> Result<KeySet, String> {
    parse_jwks(&outbound::get(url, connector, MAX_JWKS_BYTES, "the JWKS", FETCH_TIMEOUT).await?)
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
        match discover(url, issuer, JWKS_URI, connector).await {
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
