//! Rate limits shared by every instance through Redis (`[rate_limit_store]`). The request path
//! stays local: an instance reserves a batch of a key's quota at a time (a tenth of the limit)
//! with one atomic script, and spends it without Redis until it is gone or one window old.
//! The window slides: Redis counts reservations per twentieth of the window, and grants one
//! only while the current twentieth and the twenty before it hold no more than the limit.
//! Every window-long interval lies within such a span, and a reservation is spent within one
//! window of being made, so the instances together never admit more than the limit in any
//! window-long interval, boundaries included; unused reservations can only make them admit
//! less (at most `instances × batch`). When Redis cannot be reached, `on_store_error` decides:
//! `local` keeps each instance's own limits, `deny` refuses. The client reconnects by itself.

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

/// An instance's unspent reservation of one key's quota.
#[derive(Debug, Clone, Copy)]
struct Pool {
    tokens: u64,
    /// Unix milliseconds of the reservation: its tokens are spent within one window of it.
    reserved_ms: u64,
    /// The store said no: refused without asking again until this Unix millisecond.
    exhausted_until_ms: u64,
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

/// Sub-windows a window is counted in. A reservation is counted in its sub-window, and
/// admitted only while the current sub-window and the `BUCKETS` before it hold no more than the
/// limit: every interval of one window lies within that span.
const BUCKETS: u64 = 20;

/// Reserve up to `ARGV[1]` of the limit `ARGV[2]`, counted in `KEYS[1]` (the current
/// sub-window) against the sum of every key given (it and the `BUCKETS` before it); the key
/// expires after `ARGV[3]` ms. Returns the grant, then each key's count, newest first.
const RESERVE: &str = r"
local counts = {}
local sum = 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  counts[i] = n
  sum = sum + n
end
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - sum)
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  grant = 0
end
table.insert(counts, 1, grant)
return counts
";

/// The sorted set of throttle suspects: hex keys scored by when they stop being suspect.
const SUSPECTS: &str = "portcullis:throttle:suspects";
/// Suspects read at most (a flood of failing addresses beyond it is throttled locally only).
const MAX_SUSPECTS: isize = 100_000;

/// The throttle's Redis keys for `key` (newest twentieth first), the current twentieth's number
/// and its length in ms.
fn throttle_keys(key: [u8; 16], per: Duration) -> (Vec<String>, u64, u64) {
    let per_ms = (per.as_millis() as u64).max(BUCKETS);
    let bucket_ms = per_ms.div_ceil(BUCKETS);
    let bucket = unix_ms() / bucket_ms;
    let prefix = format!("portcullis:throttle:{}", hex::encode(key));
    let keys = (0..=BUCKETS)
        .map(|age| format!("{prefix}:{}", bucket.saturating_sub(age)))
        .collect();
    (keys, bucket, bucket_ms)
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// When enough of the counted reservations (`counts`, newest sub-window first) have aged out
/// of the span for one more request to fit under `limit`: Unix milliseconds.
pub fn frees_at(counts: &[u64], limit: u64, bucket: u64, bucket_ms: u64) -> u64 {
    let sum: u64 = counts.iter().sum();
    let need = (sum + 1).saturating_sub(limit);
    let mut freed = 0;
    for (age, n) in counts.iter().enumerate().rev() {
        freed += n;
        if freed >= need {
            // Sub-window `bucket - age` leaves the span when `bucket - age + BUCKETS + 1` begins.
            return (bucket + BUCKETS + 1).saturating_sub(age as u64) * bucket_ms;
        }
    }
    (bucket + BUCKETS + 1) * bucket_ms
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
        let now_ms = unix_ms();
        let per_ms = (policy.per.as_millis() as u64).max(BUCKETS);
        let bucket_ms = per_ms.div_ceil(BUCKETS);
        let bucket = now_ms / bucket_ms;
        let pool_key = (policy.name.to_string(), key);
        let retry = |until_ms: u64| until_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
        {
            let Ok(mut pools) = self.pools.lock() else {
                return Take::StoreDown;
            };
            if let Some(pool) = pools.get_mut(&pool_key) {
                if pool.tokens > 0 && now_ms < pool.reserved_ms + per_ms {
                    pool.tokens -= 1;
                    return Take::Granted;
                }
                if now_ms < pool.exhausted_until_ms {
                    return Take::Exhausted(retry(pool.exhausted_until_ms));
                }
            }
        }
        let limit = u64::from(policy.requests);
        let batch = limit.div_ceil(10).max(1);
        let prefix = format!("portcullis:rl:{}:{}", policy.name, hex::encode(key));
        let mut reserve = redis::cmd("EVAL");
        reserve.arg(RESERVE).arg(BUCKETS + 1);
        for age in 0..=BUCKETS {
            reserve.arg(format!("{prefix}:{}", bucket.saturating_sub(age)));
        }
        reserve.arg(batch).arg(limit).arg(per_ms * 2);
        let Ok(mut conn) = self.connection_or_error() else {
            return Take::StoreDown;
        };
        let Ok(answer) = self
            .answered(reserve.query_async::<Vec<u64>>(&mut conn))
            .await
        else {
            return Take::StoreDown;
        };
        let granted = answer.first().copied().unwrap_or(0);
        let Ok(mut pools) = self.pools.lock() else {
            return Take::StoreDown;
        };
        if pools.len() >= MAX_POOLS {
            pools.retain(|_, p| {
                (p.tokens > 0 && now_ms < p.reserved_ms + per_ms) || now_ms < p.exhausted_until_ms
            });
        }
        let (pool, outcome) = if granted > 0 {
            let pool = Pool {
                tokens: granted - 1,
                reserved_ms: now_ms,
                exhausted_until_ms: 0,
            };
            (pool, Take::Granted)
        } else {
            let until = frees_at(answer.get(1..).unwrap_or(&[]), limit, bucket, bucket_ms);
            let pool = Pool {
                tokens: 0,
                reserved_ms: now_ms,
                exhausted_until_ms: until,
            };
            (pool, Take::Exhausted(retry(until)))
        };
        pools.insert(pool_key, pool);
        outcome
    }

    /// The shared throttle's count for `key`: the failures in each of the last twenty-one
    /// twentieths of `per`, newest first, and the current twentieth's number and length (ms).
    pub async fn failures(
        &self,
        key: [u8; 16],
        per: Duration,
    ) -> Result<(Vec<u64>, u64, u64), StoreUnavailable> {
        let (keys, bucket, bucket_ms) = throttle_keys(key, per);
        let mut get = redis::cmd("MGET");
        for k in &keys {
            get.arg(k);
        }
        let mut conn = self.connection_or_error()?;
        let counts: Vec<Option<u64>> = self.answered(get.query_async(&mut conn)).await?;
        Ok((
            counts.into_iter().map(Option::unwrap_or_default).collect(),
            bucket,
            bucket_ms,
        ))
    }

    /// Count one failed authentication for `key` in the shared throttle, and name `key` a
    /// suspect (for `suspects`) for one `per`.
    pub async fn record_failure(
        &self,
        key: [u8; 16],
        per: Duration,
    ) -> Result<(), StoreUnavailable> {
        let (keys, _, _) = throttle_keys(key, per);
        let per_ms = per.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&keys[0], 1)
            .ignore()
            .pexpire(&keys[0], (per_ms * 2) as i64)
            .ignore()
            .zadd(SUSPECTS, hex::encode(key), unix_ms() + per_ms)
            .ignore();
        let mut conn = self.connection_or_error()?;
        self.answered(pipe.query_async::<()>(&mut conn)).await
    }

    /// The keys with a failed authentication within their `per`, at any instance (expired
    /// ones are removed on the way).
    pub async fn suspects(&self) -> Result<Vec<[u8; 16]>, StoreUnavailable> {
        if self.connection.load().is_none() {
            // Not connected yet (or any more): the connector says why; nothing to count here.
            return Err(StoreUnavailable);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(SUSPECTS)
            .arg("-inf")
            .arg(unix_ms())
            .ignore()
            .cmd("ZRANGE")
            .arg(SUSPECTS)
            .arg(0)
            .arg(MAX_SUSPECTS - 1);
        let mut conn = self.connection_or_error()?;
        let (names,): (Vec<String>,) = self.answered(pipe.query_async(&mut conn)).await?;
        Ok(names
            .iter()
            .filter_map(|n| hex::decode(n).ok()?.try_into().ok())
            .collect())
    }

    fn connection_or_error(&self) -> Result<ConnectionManager, StoreUnavailable> {
        if self
            .down_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
        {
            return Err(StoreUnavailable);
        }
        match self.connection.load_full() {
            Some(connection) => Ok((*connection).clone()),
            None => {
                self.store_error("not connected");
                Err(StoreUnavailable)
            }
        }
    }

    /// The answer of a command or pipeline sent on a connection of `connection_or_error`,
    /// within `STORE_TIMEOUT`; a failure is counted and logged (and keeps the store unasked
    /// for a moment).
    async fn answered<T>(
        &self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreUnavailable> {
        match tokio::time::timeout(STORE_TIMEOUT, work).await {
            Ok(Ok(value)) => Ok(value),
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

    /// Record `key` in the store for `ttl` unless it is there already (`SET NX PX`): `Ok(true)`
    /// the first time any instance records it, `Ok(false)` after, `Err` when the store cannot
    /// say (the caller applies `on_error`).
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreUnavailable> {
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let mut conn = self.connection_or_error()?;
        let answer = self
            .answered(set.query_async::<Option<String>>(&mut conn))
            .await?;
        Ok(answer.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_waits_until_enough_old_reservations_leave_the_span() {
        // 21 sub-windows of 100 ms, newest first; the limit is 10.
        let mut counts = vec![0u64; 21];
        counts[0] = 4; // now
        counts[5] = 3;
        counts[20] = 3; // the oldest still counted
                        // 10 counted: one more needs 1 freed, which the oldest gives when it leaves.
        assert_eq!(frees_at(&counts, 10, 1_000, 100), (1_000 - 20 + 21) * 100);
        // Needing 4 freed waits for the sub-window 5 old as well.
        counts[0] = 7;
        assert_eq!(frees_at(&counts, 10, 1_000, 100), (1_000 - 5 + 21) * 100);
        // Over the limit by everything: the current sub-window must leave too.
        assert_eq!(frees_at(&[50], 10, 7, 100), (7 + 21) * 100);
    }
}
