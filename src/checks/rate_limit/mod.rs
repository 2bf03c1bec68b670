//! SPEC §3 step 8: rate limits and concurrency caps. Each policy counts requests per key
//! (consumer, client IP, route, or a header's value) over a sliding window kept exact to a
//! twentieth of `per`: no interval of length `per` ever admits more than the limit, a burst
//! gets the whole limit at once, and the `Retry-After` of a refusal is a promise — a request
//! sent that many seconds later is admitted if nothing else was admitted in between. Every
//! answer of a limited route carries the IETF `RateLimit-Policy` and `RateLimit` fields.
//!
//! (`pingora_limits::rate::Rate`, used before, starts each interval lazily at the first event
//! after the last one expired and estimates the previous interval as evenly spread; neither
//! guarantee above held with it.)

pub mod shared;

use crate::problem::{Family, Refusal};
use pingora_limits::inflight::{Guard, Inflight};
use shared::{OnStoreError, Quota, SharedLimiter, Take};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets a window is divided into: the count is exact to `per / BUCKETS`.
const BUCKETS: u64 = 20;
/// The buckets one key keeps: every bucket an interval of `per` can touch.
const RING: usize = BUCKETS as usize + 2;
/// Keys tracked per window; past this, new keys share one overflow count (stricter, never
/// looser) until old keys expire. About 100 bytes a key.
const MAX_KEYS: usize = 65_536;
const SHARDS: usize = 16;

/// One key's counts: `counts[i % RING]` for the `RING` buckets up to `newest`.
#[derive(Debug, Clone, Copy)]
struct Counts {
    newest: u64,
    counts: [u32; RING],
}

impl Counts {
    fn new(bucket: u64) -> Self {
        Counts {
            newest: bucket,
            counts: [0; RING],
        }
    }

    /// Move to `bucket`, clearing the buckets passed over.
    fn advance(&mut self, bucket: u64) {
        if bucket <= self.newest {
            return;
        }
        let gap = bucket - self.newest;
        if gap >= RING as u64 {
            self.counts = [0; RING];
        } else {
            for b in self.newest + 1..=bucket {
                self.counts[(b % RING as u64) as usize] = 0;
            }
        }
        self.newest = bucket;
    }

    fn get(&self, bucket: u64) -> u32 {
        if bucket > self.newest || self.newest - bucket >= RING as u64 {
            0
        } else {
            self.counts[(bucket % RING as u64) as usize]
        }
    }

    fn add(&mut self, bucket: u64) {
        let slot = &mut self.counts[(bucket % RING as u64) as usize];
        *slot = slot.saturating_add(1);
    }
}

/// Counts per key over a sliding window of `per`.
pub struct SlidingWindow {
    limit: u32,
    per_ms: u64,
    bucket_ms: u64,
    start: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<u64, Counts>,
    /// Shared by the keys that found the shard full.
    overflow: Option<Counts>,
    /// The bucket of the last sweep of expired keys, so that a full shard is swept at most
    /// once a bucket.
    swept: u64,
}

/// What a window says about one key right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// Events counted in the window, including this one when it was admitted.
    pub used: u32,
    /// Seconds until one more event fits (at least 1), if nothing else is counted meanwhile.
    pub retry_after: u64,
    /// Seconds until every event counted now has left the window.
    pub reset: u64,
}

impl SlidingWindow {
    pub fn new(limit: u32, per: Duration) -> Self {
        // Whole milliseconds, rounded up: a window is never shorter than configured.
        let per_ms = (per.as_micros().div_ceil(1000) as u64).max(1);
        SlidingWindow {
            limit,
            per_ms,
            bucket_ms: per_ms.div_ceil(BUCKETS),
            start: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The oldest bucket an event still inside the window may be counted in.
    fn oldest_bucket(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.per_ms) / self.bucket_ms
    }

    fn used(&self, counts: &Counts, now_ms: u64) -> u32 {
        let newest = now_ms / self.bucket_ms;
        (self.oldest_bucket(now_ms)..=newest)
            .map(|b| counts.get(b))
            .fold(0u32, u32::saturating_add)
    }

    /// Milliseconds until the counted events of buckets `..=last` have left the window.
    fn leaves_after(&self, last: u64, now_ms: u64) -> u64 {
        ((last + 1) * self.bucket_ms + self.per_ms).saturating_sub(now_ms)
    }

    fn state(&self, counts: &Counts, now_ms: u64) -> WindowState {
        let used = self.used(counts, now_ms);
        let newest = now_ms / self.bucket_ms;
        // The oldest buckets must leave until fewer than `limit` events remain.
        let mut wait_ms = 0;
        if used >= self.limit {
            let mut left = used;
            for b in self.oldest_bucket(now_ms)..=newest {
                left -= counts.get(b).min(left);
                if left < self.limit {
                    wait_ms = self.leaves_after(b, now_ms);
                    break;
                }
            }
        }
        let last_counted = (self.oldest_bucket(now_ms)..=newest)
            .rev()
            .find(|b| counts.get(*b) > 0);
        let reset_ms = last_counted.map_or(0, |b| self.leaves_after(b, now_ms));
        WindowState {
            used,
            retry_after: wait_ms.div_ceil(1000).max(1),
            reset: reset_ms.div_ceil(1000).max(1),
        }
    }

    /// Runs `f` on the counts of `key`, created if absent and `create` (or the shard's overflow
    /// counts when the shard is full of live keys). Without `create`, an absent key with room
    /// for it is seen as no events, and nothing is stored.
    fn with_counts<K: Hash, T>(
        &self,
        key: &K,
        now_ms: u64,
        create: bool,
        f: impl FnOnce(&mut Counts) -> T,
    ) -> T {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = match shard.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = now_ms / self.bucket_ms;
        let oldest = self.oldest_bucket(now_ms);
        if shard.keys.len() >= MAX_KEYS / SHARDS
            && !shard.keys.contains_key(&hash)
            && shard.swept != bucket
        {
            shard.swept = bucket;
            shard.keys.retain(|_, c| c.newest >= oldest);
        }
        let room = shard.keys.len() < MAX_KEYS / SHARDS;
        if !create && room && !shard.keys.contains_key(&hash) {
            return f(&mut Counts::new(bucket));
        }
        let counts = if room || shard.keys.contains_key(&hash) {
            shard
                .keys
                .entry(hash)
                .or_insert_with(|| Counts::new(bucket))
        } else {
            shard.overflow.get_or_insert_with(|| Counts::new(bucket))
        };
        counts.advance(bucket);
        f(counts)
    }

    /// The state of a key without counting an event.
    pub fn peek<K: Hash>(&self, key: &K) -> WindowState {
        self.peek_at(key, self.now_ms())
    }

    fn peek_at<K: Hash>(&self, key: &K, now_ms: u64) -> WindowState {
        self.with_counts(key, now_ms, false, |c| self.state(c, now_ms))
    }

    /// Count one event, whatever the limit.
    pub fn record<K: Hash>(&self, key: &K) {
        let now_ms = self.now_ms();
        self.with_counts(key, now_ms, true, |c| c.add(now_ms / self.bucket_ms));
    }

    /// Count one event if the limit allows it; otherwise leave the count as it was.
    pub fn try_acquire<K: Hash>(&self, key: &K) -> Result<WindowState, WindowState> {
        self.try_acquire_at(key, self.now_ms())
    }

    fn try_acquire_at<K: Hash>(&self, key: &K, now_ms: u64) -> Result<WindowState, WindowState> {
        self.with_counts(key, now_ms, true, |c| {
            if self.used(c, now_ms) < self.limit {
                c.add(now_ms / self.bucket_ms);
                Ok(self.state(c, now_ms))
            } else {
                Err(self.state(c, now_ms))
            }
        })
    }
}

/// What a policy counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Consumer,
    Ip,
    Route,
    Header(http::HeaderName),
}

impl LimitKey {
    pub fn label(&self) -> &'static str {
        match self {
            LimitKey::Consumer => "consumer",
            LimitKey::Ip => "ip",
            LimitKey::Route => "route",
            LimitKey::Header(_) => "header",
        }
    }
}

/// The value a request is counted under. A missing consumer or header is a bucket of its own.
#[derive(Debug, Hash)]
enum KeyValue<'a> {
    Missing,
    Text(&'a [u8]),
    Ip(IpAddr),
    Route,
}

/// One `rate_limit` policy of a route.
pub struct Policy {
    /// Name used in the RateLimit fields, e.g. `orders-0`.
    pub name: String,
    pub requests: u32,
    pub per: Duration,
    pub key: LimitKey,
    pub window: SlidingWindow,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("requests", &self.requests)
            .field("per", &self.per)
            .field("key", &self.key)
            .finish()
    }
}

impl Policy {
    pub fn new(name: String, requests: u32, per: Duration, key: LimitKey) -> Self {
        Policy {
            name,
            requests,
            per,
            key,
            window: SlidingWindow::new(requests, per),
        }
    }

    fn field(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.requests,
            self.per.as_secs().max(1)
        )
    }
}

/// What the request carries that a key may need.
pub struct Subject<'a> {
    pub consumer: Option<&'a str>,
    pub ip: IpAddr,
    pub req: &'a pingora_http::RequestHeader,
}

fn key_value<'a>(key: &LimitKey, subject: &Subject<'a>) -> KeyValue<'a> {
    match key {
        LimitKey::Consumer => subject
            .consumer
            .map_or(KeyValue::Missing, |c| KeyValue::Text(c.as_bytes())),
        LimitKey::Ip => KeyValue::Ip(subject.ip),
        LimitKey::Route => KeyValue::Route,
        LimitKey::Header(name) => subject
            .req
            .headers
            .get(name)
            .map_or(KeyValue::Missing, |v| KeyValue::Text(v.as_bytes())),
    }
}

/// A stable identifier of the value a policy counts this request under, the same in every
/// instance (used as the shared store's key; the value itself never leaves the gateway).
pub fn key_id(key: &LimitKey, subject: &Subject) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    match key_value(key, subject) {
        KeyValue::Missing => hasher.update(b"missing"),
        KeyValue::Text(bytes) => {
            hasher.update(b"text:");
            hasher.update(bytes);
        }
        KeyValue::Ip(ip) => {
            hasher.update(b"ip:");
            hasher.update(ip.to_string().as_bytes());
        }
        KeyValue::Route => hasher.update(b"route"),
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The RateLimit fields of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitFields {
    pub policy: String,
    pub current: String,
}

/// What step 8 admitted a request with: the `RateLimit` fields of its answer, and the
/// concurrency slots it holds until it ends.
#[derive(Default)]
pub struct Admission {
    pub fields: Option<RateLimitFields>,
    pub slots: Vec<Guard>,
}

/// What step 8 holds a route's requests to: its `rate_limit` policies (all must allow a
/// request) and its `max_inflight` cap.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub rates: Arc<RateLimits>,
    pub max_inflight: Option<Arc<ConcurrencyCap>>,
}

/// Step 8: every policy of the route, in this instance and then (with `[rate_limit_store]`)
/// across instances, then the route's and the upstream's concurrency caps.
pub async fn check(
    limits: &RouteLimits,
    subject: &Subject<'_>,
    shared: Option<&SharedLimiter>,
    upstream_cap: Option<&ConcurrencyCap>,
) -> Result<Admission, Refusal> {
    let fields = limits.rates.check(subject)?;
    if let Some(shared) = shared {
        take_shared_quota(&limits.rates, subject, shared).await?;
    }
    let mut slots = Vec::new();
    if let Some(cap) = &limits.max_inflight {
        slots.push(cap.enter("route_busy")?);
    }
    if let Some(cap) = upstream_cap {
        slots.push(cap.enter("upstream_busy")?);
    }
    Ok(Admission { fields, slots })
}

/// Spend the shared quota of each policy; a store that cannot be reached refuses only with
/// `on_store_error = "deny"`.
async fn take_shared_quota(
    limits: &RateLimits,
    subject: &Subject<'_>,
    shared: &SharedLimiter,
) -> Result<(), Refusal> {
    for policy in &limits.policies {
        let quota = Quota {
            name: &policy.name,
            requests: policy.requests,
            per: policy.per,
        };
        match shared.take(quota, key_id(&policy.key, subject)).await {
            Take::Granted => {}
            Take::Exhausted(retry_after) => return Err(limits.limited(policy, retry_after)),
            Take::StoreDown if shared.on_error == OnStoreError::Deny => {
                return Err(SharedLimiter::store_down())
            }
            Take::StoreDown => {}
        }
    }
    Ok(())
}

/// The `rate_limit` policies of a route, with their `RateLimit-Policy` field written once at
/// start-up.
#[derive(Debug, Default)]
pub struct RateLimits {
    pub policies: Vec<Policy>,
    policy_field: String,
}

impl RateLimits {
    pub fn new(policies: Vec<Policy>) -> Self {
        let policy_field = policies
            .iter()
            .map(Policy::field)
            .collect::<Vec<_>>()
            .join(", ");
        RateLimits {
            policies,
            policy_field,
        }
    }

    /// The 429 for a policy that refused, whether counted here or in the shared store.
    pub fn limited(&self, policy: &Policy, retry_after: u64) -> Refusal {
        Refusal::new(429, "rate_limited", "too many requests; retry later")
            .in_family(Family::RateLimited {
                key: policy.key.label(),
            })
            .with_header("Retry-After", retry_after.to_string())
            .with_header("RateLimit-Policy", self.policy_field.clone())
            .with_header(
                "RateLimit",
                format!("\"{}\";r=0;t={retry_after}", policy.name),
            )
    }

    /// Apply every policy. All must allow the request; a refused one undoes nothing of the
    /// others (their count stands: the client did send the request).
    pub fn check(&self, subject: &Subject) -> Result<Option<RateLimitFields>, Refusal> {
        if self.policies.is_empty() {
            return Ok(None);
        }
        // The field reports the policy with the least room left.
        let mut tightest: Option<(u32, &Policy, u64)> = None;
        for policy in &self.policies {
            let value = key_value(&policy.key, subject);
            match policy.window.try_acquire(&value) {
                Ok(state) => {
                    let remaining = policy.window.limit().saturating_sub(state.used);
                    if tightest.is_none_or(|(r, _, _)| remaining < r) {
                        tightest = Some((remaining, policy, state.reset));
                    }
                }
                Err(state) => return Err(self.limited(policy, state.retry_after)),
            }
        }
        Ok(tightest.map(|(remaining, policy, reset)| RateLimitFields {
            policy: self.policy_field.clone(),
            current: format!("\"{}\";r={remaining};t={reset}", policy.name),
        }))
    }
}

/// A concurrency cap (`max_inflight`).
pub struct ConcurrencyCap {
    inflight: Inflight,
    max: isize,
}

impl std::fmt::Debug for ConcurrencyCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyCap")
            .field("max", &self.max)
            .finish()
    }
}

impl ConcurrencyCap {
    pub fn new(max: u32) -> Self {
        ConcurrencyCap {
            inflight: Inflight::new(),
            max: max as isize,
        }
    }

    /// A slot, held until the guard is dropped (the end of the request), or a 503.
    pub fn enter(&self, reason: &'static str) -> Result<Guard, Refusal> {
        let (guard, count) = self.inflight.incr(0u8, 1);
        if count > self.max {
            drop(guard);
            return Err(
                Refusal::new(503, reason, "too many requests in progress; retry shortly")
                    .with_header("Retry-After", "1"),
            );
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(req: &pingora_http::RequestHeader) -> Subject<'_> {
        Subject {
            consumer: None,
            ip: "192.0.2.1".parse().unwrap(),
            req,
        }
    }

    #[test]
    fn a_burst_gets_exactly_the_limit() {
        let req = crate::checks::test_request("GET", "/", &[]);
        let policies = RateLimits::new(vec![Policy::new(
            "p-0".into(),
            50,
            Duration::from_secs(60),
            LimitKey::Ip,
        )]);
        let allowed = (0..500)
            .filter(|_| policies.check(&subject(&req)).is_ok())
            .count();
        assert_eq!(allowed, 50);
        let refused = policies.check(&subject(&req)).err().unwrap();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.family, Family::RateLimited { key: "ip" });
        let names: Vec<&str> = refused.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["Retry-After", "RateLimit-Policy", "RateLimit"]);
        assert_eq!(refused.headers[1].1, "\"p-0\";q=50;w=60");
    }

    #[test]
    fn missing_header_is_its_own_bucket_and_other_keys_are_apart() {
        let key = http::HeaderName::from_static("x-tenant");
        let policies = RateLimits::new(vec![Policy::new(
            "t-0".into(),
            2,
            Duration::from_secs(60),
            LimitKey::Header(key),
        )]);
        let none = crate::checks::test_request("GET", "/", &[]);
        let a = crate::checks::test_request("GET", "/", &[("X-Tenant", "a")]);
        assert!(policies.check(&subject(&none)).is_ok());
        assert!(policies.check(&subject(&none)).is_ok());
        assert!(
            policies.check(&subject(&none)).is_err(),
            "no header is limited, not exempt"
        );
        let fields = policies.check(&subject(&a)).unwrap().unwrap();
        // The whole quota is back once the twentieth of the window holding this request
        // has left it: at most 60 + 3 seconds.
        assert!(
            [
                "\"t-0\";r=1;t=60",
                "\"t-0\";r=1;t=61",
                "\"t-0\";r=1;t=62",
                "\"t-0\";r=1;t=63"
            ]
            .contains(&fields.current.as_str()),
            "{}",
            fields.current
        );
    }

    /// The whole step: a policy, then the route's cap, then the upstream's; slots are held by
    /// the admission and freed with it.
    #[tokio::test]
    async fn the_step_spends_policies_then_caps() {
        let route = RouteLimits {
            rates: Arc::new(RateLimits::new(vec![Policy::new(
                "r-0".into(),
                3,
                Duration::from_secs(60),
                LimitKey::Route,
            )])),
            max_inflight: Some(Arc::new(ConcurrencyCap::new(1))),
        };
        let upstream = ConcurrencyCap::new(1);
        let req = crate::checks::test_request("GET", "/", &[]);
        let first = check(&route, &subject(&req), None, Some(&upstream))
            .await
            .unwrap();
        assert_eq!(first.slots.len(), 2);
        assert!(first.fields.is_some());
        let busy = check(&route, &subject(&req), None, Some(&upstream))
            .await
            .err()
            .unwrap();
        assert_eq!((busy.status, busy.reason), (503, "route_busy"));
        assert_eq!(busy.family, Family::Unclassified);
        drop(first);
        let second = check(&route, &subject(&req), None, Some(&upstream)).await;
        assert!(second.is_ok());
        let limited = check(&route, &subject(&req), None, None)
            .await
            .err()
            .unwrap();
        assert_eq!((limited.status, limited.reason), (429, "rate_limited"));
        assert_eq!(limited.family, Family::RateLimited { key: "route" });
    }

    /// The observation: 20 per 2 s, a burst, then a wait of exactly `Retry-After`.
    #[test]
    fn a_request_sent_after_retry_after_is_admitted() {
        for start in [0, 1, 999, 1_000, 1_999, 12_345] {
            let w = SlidingWindow::new(20, Duration::from_secs(2));
            for i in 0..20 {
                assert!(w.try_acquire_at(&7u8, start + i).is_ok());
            }
            let refused = w.try_acquire_at(&7u8, start + 20).unwrap_err();
            assert_eq!(refused.used, 20);
            let wait = refused.retry_after * 1_000;
            assert!(refused.retry_after <= 3, "{refused:?}");
            assert!(
                w.try_acquire_at(&7u8, start + 20 + wait).is_ok(),
                "start {start}: refused again after Retry-After {}",
                refused.retry_after
            );
        }
    }

    #[test]
    fn refused_requests_do_not_count_and_keys_are_apart() {
        let w = SlidingWindow::new(2, Duration::from_secs(1));
        assert!(w.try_acquire_at(&"a", 0).is_ok());
        assert!(w.try_acquire_at(&"a", 10).is_ok());
        for t in 20..500 {
            assert!(w.try_acquire_at(&"a", t).is_err());
        }
        assert!(w.try_acquire_at(&"b", 500).is_ok());
        // Both of a's events are out of the window (and of the bucket after it) by 1,050 ms.
        assert!(w.try_acquire_at(&"a", 1_050).is_ok());
    }

    /// The brute-force throttle peeks at every authenticating client's IP: a peek must not
    /// take a slot of the table (it would fill with clients that never failed).
    #[test]
    fn peeking_stores_nothing() {
        let w = SlidingWindow::new(3, Duration::from_secs(60));
        for ip in 0..10_000u32 {
            assert_eq!(w.peek_at(&ip, 5).used, 0);
        }
        let stored = |w: &SlidingWindow| -> usize {
            w.shards.iter().map(|s| s.lock().unwrap().keys.len()).sum()
        };
        assert_eq!(stored(&w), 0);
        assert!(w.try_acquire_at(&7u32, 6).is_ok());
        assert_eq!(stored(&w), 1);
        assert_eq!(w.peek_at(&7u32, 7).used, 1);
    }

    #[test]
    fn a_full_table_puts_new_keys_in_one_shared_count() {
        let w = SlidingWindow::new(1, Duration::from_secs(60));
        let admitted = (0..MAX_KEYS as u64 + 10_000)
            .filter(|k| w.try_acquire_at(k, 5).is_ok())
            .count();
        // Every shard filled up, then its overflow count admitted one more.
        assert!(admitted <= MAX_KEYS + SHARDS, "{admitted}");
        assert!(admitted >= MAX_KEYS, "{admitted}");
        // A tracked key is still limited...
        assert!(w.try_acquire_at(&0u64, 6).is_err());
        // ...and once the window has passed, expired keys are swept and new ones tracked.
        let later = 60_000 + 3_000 + 10;
        assert!(w.try_acquire_at(&(u64::MAX - 1), later).is_ok());
        assert!(w.try_acquire_at(&(u64::MAX - 2), later).is_ok());
    }

    #[derive(Debug, Clone)]
    enum Next {
        /// The next request comes this many milliseconds later.
        After(u64),
        /// The next request comes exactly the last `Retry-After` later.
        AsAnnounced,
    }

    use proptest::prelude::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// For any arrival pattern: no interval of `per` admits more than the limit, and a
        /// request at or after an announced `Retry-After` is admitted when nothing was
        /// admitted in between.
        #[test]
        fn the_limit_and_retry_after_hold_for_any_arrivals(
            limit in 1u32..25,
            per_s in 1u64..5,
            arrivals in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => (0u64..40).prop_map(Next::After),
                    2 => (0u64..3_000).prop_map(Next::After),
                    1 => proptest::strategy::Just(Next::AsAnnounced),
                ],
                1..400,
            ),
        ) {
            let w = SlidingWindow::new(limit, Duration::from_secs(per_s));
            let per_ms = per_s * 1_000;
            let mut now = 0u64;
            let mut admitted: Vec<u64> = Vec::new();
            // The earliest time a refusal promised admission, while nothing was admitted.
            let mut promised: Option<u64> = None;
            let mut last_retry_after = 1;
            for next in arrivals {
                now += match next {
                    Next::After(ms) => ms,
                    Next::AsAnnounced => last_retry_after * 1_000,
                };
                match w.try_acquire_at(&"k", now) {
                    Ok(state) => {
                        admitted.push(now);
                        let in_window = admitted.iter().filter(|t| **t + per_ms > now).count();
                        prop_assert!(in_window <= limit as usize,
                            "{in_window} admitted in the {per_ms} ms up to {now}");
                        // Whole buckets are counted: never fewer events than really in the window.
                        prop_assert!(state.used as usize >= in_window);
                        promised = None;
                    }
                    Err(state) => {
                        if let Some(p) = promised {
                            prop_assert!(now < p, "refused at {now}, admission was promised from {p}");
                        }
                        let p = now + state.retry_after * 1_000;
                        promised = Some(promised.map_or(p, |q| q.min(p)));
                        last_retry_after = state.retry_after;
                        prop_assert!(state.retry_after * 1_000 <= per_ms + per_ms / 10 + 1_000);
                    }
                }
            }
        }
    }

    #[test]
    fn concurrency_cap() {
        let cap = ConcurrencyCap::new(2);
        let a = cap.enter("busy").unwrap();
        let _b = cap.enter("busy").unwrap();
        assert_eq!(cap.enter("busy").unwrap_err().status, 503);
        drop(a);
        assert!(cap.enter("busy").is_ok());
    }
}
