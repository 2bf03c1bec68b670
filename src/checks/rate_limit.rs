//! SPEC §3 step 8: rate limits and concurrency caps. Each policy counts requests per key
//! (consumer, client IP, route, or a header's value) with `pingora-limits` over a sliding
//! window: the previous fixed window's count, weighted by how much of it is still inside the
//! last `per`, plus the current one — so a burst straddling a window boundary gets no double
//! allowance. A refused request gets 429 with `Retry-After`; every answer of a limited route
//! carries the IETF `RateLimit-Policy` and `RateLimit` fields.

use crate::problem::Refusal;
use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

/// Counts per key over a sliding window of `per`.
pub struct SlidingWindow {
    rate: Rate,
    limit: f64,
    per: Duration,
}

/// What a window says about one key right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowState {
    /// Estimated events in the last `per`.
    pub count: f64,
    /// Seconds until the estimate falls below the limit again (at least 1).
    pub retry_after: u64,
    /// Seconds until the current fixed window ends.
    pub reset: u64,
}

impl SlidingWindow {
    pub fn new(limit: u32, per: Duration) -> Self {
        SlidingWindow {
            rate: Rate::new(per),
            limit: f64::from(limit),
            per,
        }
    }

    pub fn limit(&self) -> f64 {
        self.limit
    }

    fn state(&self, prev: f64, curr: f64, frac: f64) -> WindowState {
        let per = self.per.as_secs_f64();
        let limit = self.limit;
        let wait = if curr >= limit {
            // The current window must end, then its count decay below the limit.
            (1.0 - frac) * per + per * (1.0 - limit / curr.max(1.0))
        } else if prev > 0.0 {
            // The previous window's share must decay: prev * (1 - f) + curr < limit.
            let needed = 1.0 - (limit - curr) / prev;
            (needed - frac).max(0.0) * per
        } else {
            0.0
        };
        WindowState {
            count: prev * (1.0 - frac) + curr,
            retry_after: wait.ceil().max(1.0) as u64,
            reset: ((1.0 - frac) * per).ceil().max(1.0) as u64,
        }
    }

    /// The state of a key without counting an event.
    pub fn peek<K: Hash>(&self, key: &K) -> WindowState {
        self.rate.rate_with(key, |c| {
            self.state(
                c.prev_samples as f64,
                c.curr_samples as f64,
                c.current_interval_fraction,
            )
        })
    }

    /// Count one event.
    pub fn record<K: Hash>(&self, key: &K) {
        self.rate.observe(key, 1);
    }

    /// Count one event if the limit allows it; otherwise leave the count as it was.
    pub fn try_acquire<K: Hash>(&self, key: &K) -> Result<WindowState, WindowState> {
        // Count first, then look: concurrent requests each see their own increment, so the
        // limit is not overshot by a race between looking and counting.
        let curr = self.rate.observe(key, 1) as f64;
        let state = self.rate.rate_with(key, |c| {
            self.state(c.prev_samples as f64, curr, c.current_interval_fraction)
        });
        if state.count > self.limit {
            self.rate.observe(key, -1);
            Err(state)
        } else {
            Ok(state)
        }
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

/// A refused request: the 429 and the key kind for the metric.
#[derive(Debug)]
pub struct Limited {
    pub refusal: Refusal,
    pub key: &'static str,
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
    pub fn limited(&self, policy: &Policy, retry_after: u64) -> Limited {
        let refusal = Refusal::new(429, "rate_limited", "too many requests; retry later")
            .with_header("Retry-After", retry_after.to_string())
            .with_header("RateLimit-Policy", self.policy_field.clone())
            .with_header(
                "RateLimit",
                format!("\"{}\";r=0;t={retry_after}", policy.name),
            );
        Limited {
            refusal,
            key: policy.key.label(),
        }
    }

    /// Apply every policy. All must allow the request; a refused one undoes nothing of the
    /// others (their count stands: the client did send the request).
    pub fn check(&self, subject: &Subject) -> Result<Option<RateLimitFields>, Limited> {
        if self.policies.is_empty() {
            return Ok(None);
        }
        // The field reports the policy with the least room left.
        let mut tightest: Option<(f64, &Policy, u64)> = None;
        for policy in &self.policies {
            let value = key_value(&policy.key, subject);
            match policy.window.try_acquire(&value) {
                Ok(state) => {
                    let remaining = (policy.window.limit() - state.count).floor().max(0.0);
                    if tightest.is_none_or(|(r, _, _)| remaining < r) {
                        tightest = Some((remaining, policy, state.reset));
                    }
                }
                Err(state) => return Err(self.limited(policy, state.retry_after)),
            }
        }
        Ok(tightest.map(|(remaining, policy, reset)| RateLimitFields {
            policy: self.policy_field.clone(),
            current: format!("\"{}\";r={};t={reset}", policy.name, remaining as u64),
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
        let refused = policies.check(&subject(&req)).err().unwrap().refusal;
        assert_eq!(refused.status, 429);
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
        assert_eq!(fields.current, "\"t-0\";r=1;t=60");
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
