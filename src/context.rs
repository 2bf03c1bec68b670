//! What one request carries through the phases: filled by the checks, read by forwarding,
//! metrics and the access log.

use crate::checks::auth::Principal;
use crate::checks::rate_limit::RateLimitFields;
use pingora_limits::inflight::Guard;
use prometheus::IntGauge;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Counts the request in `portcullis_inflight_requests` for exactly as long as it lives.
pub struct InflightGuard(IntGauge);

impl InflightGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        InflightGuard(gauge.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct RequestCtx {
    pub started: Instant,
    pub inflight: Option<InflightGuard>,
    pub request_id: String,
    pub peer_ip: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    pub peer_trusted: bool,
    pub tls: bool,
    /// Index of the matched route in the route table.
    pub route: Option<usize>,
    /// The normalised request path (step 3), without the query.
    pub normalised_path: String,
    /// Normalised (and prefix-stripped) path plus query, as the upstream will get it.
    pub upstream_path: String,
    /// Who the request is from, once authenticated.
    pub principal: Option<Principal>,
    /// RateLimit fields for the answer, when the route has rate limits.
    pub rate_limit_fields: Option<RateLimitFields>,
    /// Concurrency-cap slots, released when the request ends.
    pub slots: Vec<Guard>,
    /// `allow`, or the reason the request was refused or failed.
    pub decision: &'static str,
    /// Largest body this request may send, once its route is known.
    pub max_body_bytes: u64,
    pub body_bytes: u64,
    /// Targets tried for this request, in order.
    pub tried: Vec<SocketAddr>,
    pub upstream_started: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// What the `[waf]` rules found, when anything (for the access log).
    pub waf: Option<crate::checks::waf::Findings>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            inflight: None,
            request_id: String::new(),
            peer_ip: None,
            client_ip: None,
            peer_trusted: false,
            tls: false,
            route: None,
            normalised_path: String::new(),
            upstream_path: String::new(),
            principal: None,
            rate_limit_fields: None,
            slots: Vec::new(),
            decision: "allow",
            max_body_bytes: u64::MAX,
            body_bytes: 0,
            tried: Vec::new(),
            upstream_started: None,
            upstream_status: None,
            waf: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
