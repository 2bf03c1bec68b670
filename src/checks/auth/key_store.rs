//! A JWT provider's verification keys: parsed from a JWKS document, held in a `KeyStore` that
//! a background refresher may replace whole (`jwks.rs`), and, for remote keys, where they come
//! from — a `jwks_url`, or an OpenID Connect discovery document that names the JWKS.

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// One verification key.
pub struct JwtKey {
    pub kid: Option<String>,
    /// The algorithm the key declares for itself, if it does.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// The keys of a provider at one moment. Replaced whole when a JWKS is refetched.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<JwtKey>,
    /// Set by the `KeyStore` when the set is installed; the token cache keys on it, so that
    /// replacing the keys invalidates every token verified with the old ones.
    generation: u64,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

impl KeySet {
    pub fn new(keys: Vec<JwtKey>) -> Self {
        KeySet {
            keys,
            generation: 0,
        }
    }

    /// Which installation of keys this is; changes whenever the store's keys are replaced.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parse a JWKS document. Keys meant for encryption, or of kinds that cannot verify, are skipped;
/// a document with no usable key is an error.
pub fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            skipped.push(format!("keys[{i}] is for encryption"));
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match ka.to_string().parse::<Algorithm>() {
                Ok(a) => Some(a),
                Err(_) => {
                    skipped.push(format!("keys[{i}] has a non-signing alg"));
                    continue;
                }
            },
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(JwtKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            }),
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    if keys.is_empty() {
        return Err(if skipped.is_empty() {
            "the JWKS has no keys".to_string()
        } else {
            format!("the JWKS has no usable key ({})", skipped.join("; "))
        });
    }
    Ok(KeySet::new(keys))
}

/// Where a provider's keys live. `Arc` so that a background refresher can share it.
pub struct KeyStore {
    current: ArcSwap<KeySet>,
    /// Set when the keys come from a `jwks_url` or a discovery document.
    pub remote: Option<RemoteJwks>,
}

/// Where remote keys are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A `jwks_url`.
    Jwks(String),
    /// An OpenID Connect discovery document (`discovery`), whose `issuer` must equal `issuer`
    /// exactly and whose `jwks_uri` names the key set.
    Discovery { url: String, issuer: String },
}

/// What the last attempts found, for `/readyz` and the logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The JWKS address in use: the `jwks_url`, or the last good discovered `jwks_uri`.
    pub jwks_uri: Option<String>,
    /// Why the last attempt failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// A JWKS fetched over HTTP: refreshed on a schedule, and on demand when a token names an
/// unknown `kid` — at most once per `FORCED_REFETCH_EVERY`, so tokens cannot drive a fetch storm.
pub struct RemoteJwks {
    pub source: KeySource,
    pub refresh: Duration,
    wake: Notify,
    /// Bumped after every fetch attempt, so that a request waiting for a refetch wakes up.
    attempts: watch::Sender<u64>,
    last_forced: Mutex<Option<Instant>>,
    status: Mutex<RemoteStatus>,
}

pub const FORCED_REFETCH_EVERY: Duration = Duration::from_secs(30);

impl RemoteJwks {
    pub fn new(source: KeySource, refresh: Duration) -> Self {
        let jwks_uri = match &source {
            KeySource::Jwks(url) => Some(url.clone()),
            KeySource::Discovery { .. } => None,
        };
        RemoteJwks {
            source,
            refresh,
            wake: Notify::new(),
            attempts: watch::channel(0).0,
            last_forced: Mutex::new(None),
            status: Mutex::new(RemoteStatus {
                jwks_uri,
                last_error: None,
            }),
        }
    }

    /// Resolves when a refetch is asked for.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// One attempt is over: `error` says why it failed, `None` when it succeeded.
    pub fn attempted(&self, error: Option<String>) {
        if let Ok(mut status) = self.status.lock() {
            status.last_error = error;
        }
        self.attempts.send_modify(|n| *n += 1);
    }

    pub fn status(&self) -> RemoteStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A discovery document named this JWKS; returns the one it replaces, if it differs.
    pub fn discovered(&self, jwks_uri: &str) -> Option<String> {
        let mut status = self.status.lock().ok()?;
        if status.jwks_uri.as_deref() == Some(jwks_uri) {
            return None;
        }
        status.jwks_uri.replace(jwks_uri.to_string())
    }
}

impl KeyStore {
    pub fn new(mut keys: KeySet) -> Self {
        keys.generation = next_generation();
        KeyStore {
            current: ArcSwap::from_pointee(keys),
            remote: None,
        }
    }

    pub fn remote(source: KeySource, refresh: Duration) -> Self {
        KeyStore {
            current: ArcSwap::from_pointee(KeySet::default()),
            remote: Some(RemoteJwks::new(source, refresh)),
        }
    }

    pub fn load(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    pub fn replace(&self, mut keys: KeySet) {
        keys.generation = next_generation();
        self.current.store(Arc::new(keys));
    }

    /// Ask the refresher for a new fetch because a token named an unknown key. Returns a
    /// receiver that changes after the next attempt, or `None` when this store is not remote
    /// or a forced refetch happened less than `FORCED_REFETCH_EVERY` ago.
    pub fn request_refetch(&self) -> Option<watch::Receiver<u64>> {
        let remote = self.remote.as_ref()?;
        if *remote.attempts.borrow() == 0 {
            // The first fetch is still under way: wait for it without spending the budget of
            // forced refetches.
            let mut receiver = remote.attempts.subscribe();
            receiver.mark_unchanged();
            return Some(receiver);
        }
        {
            let mut last = remote.last_forced.lock().ok()?;
            if last.is_some_and(|t| t.elapsed() < FORCED_REFETCH_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let mut receiver = remote.attempts.subscribe();
        receiver.mark_unchanged();
        remote.wake.notify_one();
        Some(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_refetches_are_rate_limited_once_the_first_fetch_is_done() {
        let source = KeySource::Jwks("http://127.0.0.1:1/jwks".into());
        let store = KeyStore::remote(source, Duration::from_secs(300));
        // Before the first fetch finished, requests wait for it and spend nothing.
        assert!(store.request_refetch().is_some());
        assert!(store.request_refetch().is_some());
        store.remote.as_ref().unwrap().attempted(None);
        assert!(
            store.request_refetch().is_some(),
            "the first forced refetch is allowed"
        );
        assert!(
            store.request_refetch().is_none(),
            "the second within 30 s is not"
        );
        assert!(
            KeyStore::new(KeySet::default()).request_refetch().is_none(),
            "a file store never refetches"
        );
    }

    #[test]
    fn the_status_names_the_jwks_in_use_and_the_last_error() {
        let url = "http://127.0.0.1:1/jwks".to_string();
        let remote = RemoteJwks::new(KeySource::Jwks(url.clone()), Duration::from_secs(300));
        assert_eq!(remote.status().jwks_uri.as_ref(), Some(&url));
        remote.attempted(Some("HTTP status 500".into()));
        assert_eq!(
            remote.status().last_error.as_deref(),
            Some("HTTP status 500")
        );
        remote.attempted(None);
        assert_eq!(remote.status().last_error, None);

        let discovery = KeySource::Discovery {
            url: "https://id.example.com/.well-known/openid-configuration".into(),
            issuer: "https://id.example.com".into(),
        };
        let remote = RemoteJwks::new(discovery, Duration::from_secs(300));
        assert_eq!(remote.status().jwks_uri, None, "not discovered yet");
        assert_eq!(remote.discovered("https://id.example.com/k1"), None);
        assert_eq!(remote.discovered("https://id.example.com/k1"), None);
        assert_eq!(
            remote.discovered("https://id.example.com/k2").as_deref(),
            Some("https://id.example.com/k1"),
            "a changed jwks_uri names the one it replaces"
        );
        assert_eq!(
            remote.status().jwks_uri.as_deref(),
            Some("https://id.example.com/k2")
        );
    }
}
