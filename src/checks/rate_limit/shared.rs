//! Rate limits shared by every instance through Redis (`[rate_limit_store]`). The request path
//! stays local: an instance reserves a batch of a key's quota at a time with one `INCRBY`
//! (a tenth of the limit), and spends it without Redis until it is gone. Redis holds one
//! counter per policy, key and fixed wall-clock window, so the instances together never admit
//! more than the limit in a window; unused reservations can only make them admit less (at
//! most `instances × batch`). When Redis cannot be reached, `on_store_error` decides: `local`
//! keeps each instance's own limits, `deny` refuses. The client reconnects by itself.

use crate::problem::Refusal;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the store counts for one `rate_limit` policy: its name (part of the Redis key) and
/// its limit.
#[derive(Debug, Clone, Copy)]
pub struct Quota<'a> {
    pub name: &'a str,
    pub requests: u32,
    pub per: Duration,
}

/// Longest wait for Redis on the request path (only when a reservation runs out).
const STORE_TIMEOUT: Duration = Duration::from_millis(100);
/// After a store failure, requests use local limits for this long before Redis is tried again.
const RETRY_STORE_AFTER: Duration = Duration::from_secs(1);
/// Store errors are logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// How many reserved-but-idle entries are kept before old windows are swept.
const MAX_POOLS: usize = 100_000;

/// `[rate_limit_store]`, compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `redis://` or `rediss://` (TLS) URL as written; show it only through `shown()`.
    pub redis: String,
    /// From `password_env` / `password_file`; overrides a password in the URL.
    pub password: Option<String>,
    /// `ca_file` (PEM): the CAs that may sign the store's certificate instead of the system's.
    pub ca: Option<Vec<u8>>,
    pub on_store_error: OnStoreError,
}

impl StoreSettings {
    /// The URL for messages and logs: userinfo hidden.
    pub fn shown(&self) -> String {
        crate::observe::redact::redact_url(&self.redis)
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("redis", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca", &self.ca.is_some())
            .field("on_store_error", &self.on_store_error)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Local,
    Deny,
}

/// The store gave no answer (its `on_store_error` decides what that means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// The outcome of asking for one request's worth of shared quota.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Granted,
    /// The instances together used up the limit of this window; seconds until it ends.
    Exhausted(u64),
    StoreDown,
}

#[derive(Debug, Clone, Copy)]
struct Pool {
    window: u64,
    tokens: u64,
    exhausted: bool,
}

pub struct SharedLimiter {
    settings: StoreSettings,
    pub on_error: OnStoreError,
    connection: ArcSwapOption<ConnectionManager>,
    pools: Mutex<HashMap<(String, [u8; 16]), Pool>>,
    errors: prometheus::IntCounter,
    /// When a request-path error and a connection error were last logged: each kind at most
    /// every `ERROR_LOG_EVERY`, so that "not connected" never hides why the connection failed.
    last_logged: [Mutex<Option<Instant>>; 2],
    /// After a failure the store is not asked again until then: requests must not each wait
    /// for a timeout while Redis is away.
    down_until: Mutex<Option<Instant>>,
}

fn window_of(per: Duration) -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let per = per.as_secs().max(1);
    (now / per, per - now % per)
}

impl SharedLimiter {
    pub fn new(settings: StoreSettings, errors: prometheus::IntCounter) -> Self {
        SharedLimiter {
            on_error: settings.on_store_error,
            settings,
            connection: ArcSwapOption::empty(),
            pools: Mutex::new(HashMap::new()),
            errors,
            last_logged: [Mutex::new(None), Mutex::new(None)],
            down_until: Mutex::new(None),
        }
    }

    fn store_error(&self, what: &str) {
        self.log_store_error(0, what);
    }

    fn connect_error(&self, what: &str) {
        self.log_store_error(1, what);
    }

    fn log_store_error(&self, kind: usize, what: &str) {
        self.errors.inc();
        if let Ok(mut until) = self.down_until.lock() {
            *until = Some(Instant::now() + RETRY_STORE_AFTER);
        }
        let Ok(mut last) = self.last_logged[kind].lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            *last = Some(Instant::now());
            log::error!(
                "rate limit store {}: {}; {} until it answers again",
                self.settings.shown(),
                redact_error(what, &self.settings),
                match self.on_error {
                    OnStoreError::Local => "each instance applies its own limits",
                    OnStoreError::Deny => "requests on shared-limited routes are refused",
                }
            );
        }
    }

    /// Spend one unit of the shared quota of `policy` for `key`.
    pub async fn take(&self, policy: Quota<'_>, key: [u8; 16]) -> Take {
        let (window, left) = window_of(policy.per);
        let pool_key = (policy.name.to_string(), key);
        {
            let Ok(mut pools) = self.pools.lock() else {
                return Take::StoreDown;
            };
            if let Some(pool) = pools.get_mut(&pool_key) {
                if pool.window == window {
                    if pool.tokens > 0 {
                        pool.tokens -= 1;
                        return Take::Granted;
                    }
                    if pool.exhausted {
                        return Take::Exhausted(left);
                    }
                }
            }
        }
        if self
            .down_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
        {
            return Take::StoreDown;
        }
        let Some(connection) = self.connection.load_full() else {
            self.store_error("not connected");
            return Take::StoreDown;
        };
        let batch = u64::from(policy.requests).div_ceil(10).max(1);
        let redis_key = format!(
            "portcullis:rl:{}:{}:{window}",
            policy.name,
            hex::encode(key)
        );
        let mut conn = (*connection).clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&redis_key, batch)
            .expire(&redis_key, (policy.per.as_secs() * 2 + 1) as i64)
            .ignore();
        let total: u64 = match tokio::time::timeout(
            STORE_TIMEOUT,
            pipe.query_async::<(u64,)>(&mut conn),
        )
        .await
        {
            Ok(Ok((total,))) => total,
            Ok(Err(e)) => {
                self.store_error(&e.to_string());
                return Take::StoreDown;
            }
            Err(_) => {
                self.store_error("no answer in time");
                return Take::StoreDown;
            }
        };
        let limit = u64::from(policy.requests);
        let before = total.saturating_sub(batch);
        let granted = limit.saturating_sub(before).min(batch);
        let Ok(mut pools) = self.pools.lock() else {
            return Take::StoreDown;
        };
        if pools.len() >= MAX_POOLS {
            pools.retain(|_, p| p.window >= window.saturating_sub(1));
        }
        let pool = pools.entry(pool_key).or_insert(Pool {
            window,
            tokens: 0,
            exhausted: false,
        });
        if pool.window != window {
            *pool = Pool {
                window,
                tokens: 0,
                exhausted: false,
            };
        }
        pool.tokens += granted;
        pool.exhausted = granted < batch;
        if pool.tokens > 0 {
            pool.tokens -= 1;
            Take::Granted
        } else {
            Take::Exhausted(left)
        }
    }

    /// Record `key` in the store for `ttl` unless it is there already (`SET NX PX`): `Ok(true)`
    /// the first time any instance records it, `Ok(false)` after, `Err` when the store cannot
    /// say (the caller applies `on_error`).
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreUnavailable> {
        if self
            .down_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
        {
            return Err(StoreUnavailable);
        }
        let Some(connection) = self.connection.load_full() else {
            self.store_error("not connected");
            return Err(StoreUnavailable);
        };
        let mut conn = (*connection).clone();
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        match tokio::time::timeout(STORE_TIMEOUT, set.query_async::<Option<String>>(&mut conn))
            .await
        {
            Ok(Ok(answer)) => Ok(answer.is_some()),
            Ok(Err(e)) => {
                self.store_error(&e.to_string());
                Err(StoreUnavailable)
            }
            Err(_) => {
                self.store_error("no answer in time");
                Err(StoreUnavailable)
            }
        }
    }

    pub fn store_down() -> Refusal {
        Refusal::new(
            503,
            "rate_limit_store_down",
            "the rate limit store is unavailable; retry later",
        )
        .with_header("Retry-After", "1")
    }
}

/// The Redis client: the URL's address and options, the password from `password_env` /
/// `password_file` when set, and for `rediss://` the certificate verified against `ca_file`
/// (else the system's CAs).
fn client(settings: &StoreSettings) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = settings.redis.as_str().into_connection_info()?;
    if let Some(password) = &settings.password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    match &settings.ca {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
}

/// A store error for the log, with any trace of the password removed (a client library may
/// quote the URL or the AUTH arguments it was given).
fn redact_error(what: &str, settings: &StoreSettings) -> String {
    let mut text = what.replace(&settings.redis, &settings.shown());
    let inline = redis::IntoConnectionInfo::into_connection_info(settings.redis.as_str())
        .ok()
        .and_then(|info| info.redis_settings().password().map(str::to_string));
    for secret in [settings.password.as_deref(), inline.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        text = text.replace(secret, "***");
    }
    text
}

/// Connects to Redis in the background and keeps trying until it can; the connection
/// manager then reconnects by itself.
pub struct StoreConnector {
    pub limiter: Arc<SharedLimiter>,
}

#[async_trait]
impl BackgroundService for StoreConnector {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let limiter = &self.limiter;
        loop {
            let attempt = async {
                let client = client(&limiter.settings)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(STORE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(client, config).await
            };
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(manager)) => {
                    log::info!("rate limit store {} connected", limiter.settings.shown());
                    limiter.connection.store(Some(Arc::new(manager)));
                    return;
                }
                Ok(Err(e)) => limiter.connect_error(&format!("cannot connect: {e}")),
                Err(_) => limiter.connect_error("cannot connect: timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
