//! OAuth 2.0 token introspection (RFC 7662): a provider of `kind = "introspection"` asks its
//! authorization server whether a bearer token is active, for opaque tokens and for tokens that
//! may be revoked before their `exp`.
//!
//! - The gateway authenticates to the endpoint with HTTP Basic (RFC 6749 §2.3.1: client id
//!   and secret form-encoded first); the secret comes from `secret_env` or `secret_file`.
//! - Answers are cached by the token's SHA-256: an active token until `cache_ttl` or its `exp`,
//!   whichever is first (never beyond `exp`); an inactive or unacceptable one for
//!   `negative_cache_ttl`. Failed calls are never cached.
//! - Concurrent requests with the same token that is not cached share one call (coalescing):
//!   the first starts it, the others wait for its answer.
//! - Fail closed: a call that times out, cannot connect, gets a status other than 200 or an
//!   answer that is not an introspection response ends in `Unavailable` (a 503 to the client),
//!   never in an accept.
//! - The endpoint is configured, or named by a discovery document (`discovery.rs` reads it in
//!   the background; until it has, calls fail as `no_endpoint`, never accept).
//! - Calls per provider are bounded (`MAX_CONCURRENT_CALLS`); past it a request waits within
//!   the same `timeout`.

use super::jwt::{identity_from, JwtFailure, TokenIdentity, MAX_TOKEN_BYTES};
use super::token_cache::{self, TokenCache, TokenDigest};
use crate::observe::metrics::IntrospectionMetrics;
use crate::outbound::{self, Url};
use pingora_core::connectors::http::Connector;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};

/// Calls to one endpoint at the same time; more wait (within `timeout`).
pub const MAX_CONCURRENT_CALLS: usize = 64;
/// An introspection answer larger than this is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the endpoint's answer means for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Active(TokenIdentity),
    Refused(JwtFailure),
    /// No usable answer (the reason is a metric label): the request is refused with 503.
    Unavailable(&'static str),
}

/// The settings of a provider, as compiled from its config entry.
pub struct Settings {
    pub name: String,
    pub client_id: String,
    pub client_secret: Vec<u8>,
    /// When set, an answer's `iss` (if it has one) must be this.
    pub issuer: Option<String>,
    /// When set, an answer's `aud` must name one of them.
    pub audiences: Vec<String>,
    pub consumer_claim: String,
    pub scopes_claim: String,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub timeout: Duration,
    /// Entries of the answer cache; 0 turns caching off (every request asks, coalesced).
    pub cache_entries: usize,
}

/// Where a provider's endpoint comes from.
pub enum EndpointSource {
    /// `introspection_endpoint`: `text` is the address for log lines (credentials redacted).
    Fixed { url: Url, text: String },
    /// `discovery`: the document's `introspection_endpoint`, once read (`discovery.rs`); the
    /// document's `issuer` must be `issuer` exactly.
    Discovery { url: String, issuer: String },
}

/// An endpoint in use: its address parsed, and as text for log lines and `/readyz`.
#[derive(Debug)]
struct Endpoint {
    url: Url,
    text: String,
}

/// A provider's endpoint and, with `discovery`, what reading the document last found; shared
/// with the discovery refresher and `/readyz`.
#[derive(Debug)]
pub struct EndpointState {
    /// `discovery` and the issuer the document must name.
    discovery: Option<(String, String)>,
    current: Mutex<Option<Arc<Endpoint>>>,
    last_error: Mutex<Option<String>>,
}

impl EndpointState {
    fn new(source: EndpointSource) -> Self {
        let (discovery, current) = match source {
            EndpointSource::Fixed { url, text } => (None, Some(Arc::new(Endpoint { url, text }))),
            EndpointSource::Discovery { url, issuer } => (Some((url, issuer)), None),
        };
        EndpointState {
            discovery,
            current: Mutex::new(current),
            last_error: Mutex::new(None),
        }
    }

    /// `discovery` and the issuer it must name; `None` for a configured endpoint.
    pub fn discovery(&self) -> Option<(&str, &str)> {
        self.discovery
            .as_ref()
            .map(|(url, issuer)| (url.as_str(), issuer.as_str()))
    }

    fn current(&self) -> Option<Arc<Endpoint>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The endpoint in use, as text; `None` until a discovery document named one.
    pub fn endpoint_text(&self) -> Option<String> {
        self.current().map(|e| e.text.clone())
    }

    /// The document names `address` (checked by `discovery::read_discovery`): use it from now
    /// on. Returns the endpoint it replaces, if it differs.
    pub fn discovered(&self, address: &str) -> Result<Option<String>, String> {
        let url = crate::outbound::parse_url(address)?;
        let text = crate::observe::redact::redact_url(address);
        let mut current = self
            .current
            .lock()
            .map_err(|_| "the endpoint's lock is poisoned".to_string())?;
        if current.as_ref().is_some_and(|c| c.url == url) {
            return Ok(None);
        }
        let old = current.replace(Arc::new(Endpoint { url, text }));
        Ok(old.map(|old| old.text.clone()))
    }

    /// One read of the document is over: `error` says why it failed, `None` when it did not.
    pub fn attempted(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    /// Why the last read of the document failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// A compiled `kind = "introspection"` provider.
pub struct IntrospectionProvider {
    /// `introspection:<name>`: in `auth` lists, logs and metrics' `auth` values.
    pub label: String,
    settings: Settings,
    endpoint: Arc<EndpointState>,
    /// `Basic …`, prepared once.
    authorization: String,
    cache: Option<TokenCache<Answer>>,
    inflight: Mutex<HashMap<TokenDigest, Arc<OnceCell<Answer>>>>,
    calls: Semaphore,
    connector: Connector,
    metrics: OnceLock<IntrospectionMetrics>,
    /// Unix second of the last error logged: at most one line a second per provider.
    last_logged: AtomicU64,
}

impl std::fmt::Debug for IntrospectionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionProvider")
            .field("name", &self.settings.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` encoding of bytes: unreserved characters stay, every
/// other byte is `%XX`.
pub fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 6750 `b64token`: the only characters a bearer token may have.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

impl IntrospectionProvider {
    pub fn new(endpoint: EndpointSource, settings: Settings) -> Self {
        use base64::Engine;
        let endpoint = Arc::new(EndpointState::new(endpoint));
        let credentials = format!(
            "{}:{}",
            form_encode(settings.client_id.as_bytes()),
            form_encode(&settings.client_secret)
        );
        IntrospectionProvider {
            label: format!("introspection:{}", settings.name),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            cache: TokenCache::new(settings.cache_entries),
            settings,
            endpoint,
            inflight: Mutex::new(HashMap::new()),
            calls: Semaphore::new(MAX_CONCURRENT_CALLS),
            connector: Connector::new(None),
            metrics: OnceLock::new(),
            last_logged: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Its endpoint, for the discovery refresher and `/readyz`.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.endpoint
    }

    /// Hand the provider its metrics (once; later calls are ignored).
    pub fn install_metrics(&self, metrics: IntrospectionMetrics) {
        let _ = self.metrics.set(metrics);
    }

    fn count(&self, pick: impl FnOnce(&IntrospectionMetrics)) {
        if let Some(m) = self.metrics.get() {
            pick(m);
        }
    }

    /// What is known of `token` without a call: `Some` for a token refused on its form or
    /// found in the cache, `None` when the endpoint must be asked (`introspect`).
    pub fn cached(&self, token: &str) -> Option<Answer> {
        if token.len() > MAX_TOKEN_BYTES {
            return Some(Answer::Refused(JwtFailure::TooLong));
        }
        if !is_b64token(token) {
            return Some(Answer::Refused(JwtFailure::Malformed));
        }
        let cache = self.cache.as_ref()?;
        let found = cache.get(&token_cache::digest(token), 0, token_cache::unix_now());
        let result = match &found {
            Some(Answer::Active(_)) => "hit",
            Some(_) => "negative_hit",
            None => "miss",
        };
        self.count(|m| m.cache.with_label_values(&[self.name(), result]).inc());
        found
    }

    /// Ask the endpoint about `token` (its form already checked by `cached`), sharing the call
    /// with every concurrent request for the same token.
    pub async fn introspect(&self, token: &str) -> Answer {
        let digest = token_cache::digest(token);
        let joined = Joined::new(&self.inflight, digest);
        match joined.cell() {
            Some(cell) => cell.get_or_init(|| self.call(token, digest)).await.clone(),
            None => Answer::Unavailable("internal"),
        }
    }

    /// One call, its answer cached (when it is one).
    async fn call(&self, token: &str, digest: TokenDigest) -> Answer {
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.settings.timeout, self.exchange(token)).await {
            Ok(answer) => answer,
            Err(_) => Err(("timeout", "no answer in time".to_string())),
        };
        self.count(|m| {
            m.seconds
                .with_label_values(&[self.name()])
                .observe(started.elapsed().as_secs_f64())
        });
        let now = token_cache::unix_now();
        let answer = match answer {
            Ok(body) => self.evaluate(&body, now),
            Err((reason, message)) => {
                self.log_error(&message);
                (Answer::Unavailable(reason), now)
            }
        };
        let result = match &answer.0 {
            Answer::Active(_) => "active",
            Answer::Refused(_) => "inactive",
            Answer::Unavailable(reason) => {
                self.count(|m| m.errors.with_label_values(&[self.name(), reason]).inc());
                "error"
            }
        };
        self.count(|m| m.calls.with_label_values(&[self.name(), result]).inc());
        if let (Some(cache), false) = (&self.cache, matches!(answer.0, Answer::Unavailable(_))) {
            cache.insert(digest, answer.0.clone(), 0, answer.1, now);
        }
        answer.0
    }

    /// POST the token; the answer's body when the status is 200.
    async fn exchange(&self, token: &str) -> Result<Vec<u8>, (&'static str, String)> {
        let Some(endpoint) = self.endpoint.current() else {
            let why = self
                .endpoint
                .last_error()
                .unwrap_or_else(|| "not read yet".into());
            return Err((
                "no_endpoint",
                format!("no introspection endpoint discovered yet ({why})"),
            ));
        };
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|_| ("internal", "the call limiter is closed".to_string()))?;
        let body = format!(
            "token={}&token_type_hint=access_token",
            form_encode(token.as_bytes())
        );
        let headers = [
            ("Authorization", self.authorization.clone()),
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
        ];
        let request = outbound::Request {
            url: &endpoint.url,
            headers: &headers,
            body: Some(body.as_bytes()),
            limit: MAX_ANSWER_BYTES,
            what: "the introspection answer",
            timeout: self.settings.timeout,
        };
        let (status, body) = outbound::send(&request, &self.connector)
            .await
            .map_err(|e| (e.kind(), e.to_string()))?;
        if status != 200 {
            return Err(("status", format!("HTTP status {status}")));
        }
        Ok(body)
    }

    /// What an answer of the endpoint means, and until when (Unix seconds) it may be cached.
    pub fn evaluate(&self, body: &[u8], now: u64) -> (Answer, u64) {
        let s = &self.settings;
        let negative_until = now.saturating_add(s.negative_cache_ttl.as_secs());
        let refuse = |f: JwtFailure| (Answer::Refused(f), negative_until);
        let not_an_answer = |why: &str| {
            self.log_error(&format!("not an introspection response: {why}"));
            (Answer::Unavailable("response"), now)
        };
        let doc: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(doc)) => doc,
            Ok(_) => return not_an_answer("not a JSON object"),
            Err(_) => return not_an_answer("not JSON"),
        };
        match doc.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return refuse(JwtFailure::Inactive),
            _ => return not_an_answer("no boolean \"active\""),
        }
        let seconds = |name: &str| -> Result<Option<u64>, ()> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| *f >= 0.0)
                    .map(|f| Some(f as u64))
                    .ok_or(()),
            }
        };
        let (Ok(exp), Ok(nbf)) = (seconds("exp"), seconds("nbf")) else {
            return not_an_answer("exp or nbf is not a number");
        };
        if exp.is_some_and(|exp| exp <= now) {
            return refuse(JwtFailure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now) {
            return refuse(JwtFailure::NotYetValid);
        }
        if let Some(want) = &s.issuer {
            match doc.get("iss") {
                None => {}
                Some(Value::String(iss)) if iss == want => {}
                Some(_) => return refuse(JwtFailure::WrongIssuer),
            }
        }
        if !s.audiences.is_empty() {
            let named = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| s.audiences.iter().any(|w| w == a))
            };
            let ok = match doc.get("aud") {
                Some(Value::Array(list)) => list.iter().any(named),
                Some(one) => named(one),
                None => false,
            };
            if !ok {
                return refuse(JwtFailure::WrongAudience);
            }
        }
        match identity_from(&doc, &s.consumer_claim, &s.scopes_claim) {
            Ok(identity) => {
                let until = now.saturating_add(s.cache_ttl.as_secs());
                let until = exp.map_or(until, |exp| until.min(exp));
                (Answer::Active(identity), until)
            }
            Err(f) => refuse(f),
        }
    }

    fn log_error(&self, message: &str) {
        let now = token_cache::unix_now();
        if self.last_logged.swap(now, Ordering::Relaxed) != now {
            let at = match (self.endpoint.endpoint_text(), self.endpoint.discovery()) {
                (Some(text), _) => text,
                (None, Some((discovery, _))) => discovery.to_string(),
                (None, None) => String::new(),
            };
            log::warn!(
                "introspection provider {}: {at}: {message}; requests that need it are refused with 503",
                self.settings.name,
            );
        }
    }
}

/// A request's share of a call in flight for one token. The last one to leave removes the call
/// from the map, whether it finished or was abandoned (its client went away).
struct Joined<'a> {
    map: &'a Mutex<HashMap<TokenDigest, Arc<OnceCell<Answer>>>>,
    digest: TokenDigest,
    cell: Option<Arc<OnceCell<Answer>>>,
}

impl<'a> Joined<'a> {
    fn new(
        map: &'a Mutex<HashMap<TokenDigest, Arc<OnceCell<Answer>>>>,
        digest: TokenDigest,
    ) -> Self {
        let cell = map
            .lock()
            .ok()
            .map(|mut m| m.entry(digest).or_default().clone());
        Joined { map, digest, cell }
    }

    fn cell(&self) -> Option<&OnceCell<Answer>> {
        self.cell.as_deref()
    }
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else { return };
        // Clones are made and dropped under the lock, so the count read here is exact.
        let Ok(mut map) = self.map.lock() else { return };
        drop(cell);
        if map
            .get(&self.digest)
            .is_some_and(|c| Arc::strong_count(c) == 1)
        {
            map.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(cache_entries: usize) -> IntrospectionProvider {
        let endpoint = EndpointSource::Fixed {
            url: outbound::parse_url("http://127.0.0.1:1/introspect").unwrap(),
            text: "http://127.0.0.1:1/introspect".into(),
        };
        IntrospectionProvider::new(
            endpoint,
            Settings {
                name: "t".into(),
                client_id: "gate way".into(),
                client_secret: b"s3cr:t/".to_vec(),
                issuer: Some("https://as.example.com".into()),
                audiences: vec!["orders-api".into()],
                consumer_claim: "sub".into(),
                scopes_claim: "scope".into(),
                cache_ttl: Duration::from_secs(60),
                negative_cache_ttl: Duration::from_secs(5),
                timeout: Duration::from_millis(300),
                cache_entries,
            },
        )
    }

    fn answer(p: &IntrospectionProvider, doc: Value) -> (Answer, u64) {
        p.evaluate(doc.to_string().as_bytes(), 1_000)
    }

    #[test]
    fn client_credentials_are_form_encoded_then_basic() {
        use base64::Engine;
        let p = provider(10);
        let encoded = p.authorization.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"gate%20way:s3cr%3At%2F");
        assert_eq!(form_encode(b"a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn an_active_answer_is_cached_until_the_ttl_or_exp() {
        let p = provider(10);
        let good = json!({"active": true, "sub": "alice", "scope": "orders:read orders:write",
            "aud": ["x", "orders-api"], "iss": "https://as.example.com", "exp": 1_030});
        let (a, until) = answer(&p, good.clone());
        assert_eq!(
            a,
            Answer::Active(TokenIdentity {
                consumer: "alice".into(),
                scopes: vec!["orders:read".into(), "orders:write".into()],
                cnf: None,
            })
        );
        assert_eq!(until, 1_030, "never beyond exp");
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(answer(&p, no_exp).1, 1_060, "the ttl");
        let mut no_iss = good;
        no_iss.as_object_mut().unwrap().remove("iss");
        assert!(
            matches!(answer(&p, no_iss).0, Answer::Active(_)),
            "iss is optional in RFC 7662"
        );
    }

    #[test]
    fn refusals_are_cached_briefly_and_non_answers_not_at_all() {
        let p = provider(10);
        let base = json!({"active": true, "sub": "alice", "aud": "orders-api"});
        let with = |k: &str, v: Value| {
            let mut d = base.clone();
            d.as_object_mut().unwrap().insert(k.into(), v);
            d
        };
        let refused = [
            (json!({"active": false}), JwtFailure::Inactive),
            (with("exp", json!(1_000)), JwtFailure::Expired),
            (with("nbf", json!(1_001)), JwtFailure::NotYetValid),
            (
                with("iss", json!("https://evil.example")),
                JwtFailure::WrongIssuer,
            ),
            (with("aud", json!("other")), JwtFailure::WrongAudience),
            (with("aud", json!(["a", "b"])), JwtFailure::WrongAudience),
            (with("aud", json!(null)), JwtFailure::WrongAudience),
            (with("sub", json!("a b")), JwtFailure::NoConsumer),
            (with("sub", json!(7)), JwtFailure::NoConsumer),
            (
                with("scope", json!(["ok", "no\u{0}"])),
                JwtFailure::Malformed,
            ),
        ];
        for (doc, failure) in refused {
            assert_eq!(
                answer(&p, doc.clone()),
                (Answer::Refused(failure), 1_005),
                "{doc}"
            );
        }
        let mut no_aud = base.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            answer(&p, no_aud).0,
            Answer::Refused(JwtFailure::WrongAudience)
        );
        for body in [
            "[]".to_string(),
            "{ not json".to_string(),
            json!({"active": "true", "sub": "alice"}).to_string(),
            json!({"sub": "alice"}).to_string(),
            json!({"active": true, "sub": "alice", "aud": "orders-api", "exp": "soon"}).to_string(),
            json!({"active": true, "sub": "alice", "aud": "orders-api", "exp": -5}).to_string(),
        ] {
            assert_eq!(
                p.evaluate(body.as_bytes(), 1_000).0,
                Answer::Unavailable("response"),
                "{body}"
            );
        }
    }

    #[test]
    fn tokens_are_refused_on_their_form_before_any_call() {
        let p = provider(10);
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(p.cached(&long), Some(Answer::Refused(JwtFailure::TooLong)));
        for bad in ["", "===", "a b", "a\"b", "tok,en", "t%20k", "é"] {
            assert_eq!(
                p.cached(bad),
                Some(Answer::Refused(JwtFailure::Malformed)),
                "{bad:?}"
            );
        }
        for good in ["2YotnFZFEjr1zCsicMWpAA", "a.b.c", "abc+/==", "x-y_z~"] {
            assert_eq!(p.cached(good), None, "{good:?}");
        }
    }

    /// Nothing listens on the endpoint: the answer is Unavailable, never cached, and the
    /// in-flight entry is gone afterwards.
    #[tokio::test]
    async fn a_dead_endpoint_is_unavailable_and_leaves_nothing_behind() {
        let p = provider(10);
        assert_eq!(p.introspect("abc").await, Answer::Unavailable("connect"));
        assert_eq!(p.cached("abc"), None);
        assert!(p.inflight.lock().unwrap().is_empty());
    }
}
