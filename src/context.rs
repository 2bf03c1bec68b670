//! What one request carries through the phases: filled by the checks, read by forwarding,
//! metrics and the access log.

use crate::checks::auth::Principal;
use crate::checks::cors::CorsHeader;
use crate::checks::rate_limit::Admission;
use crate::checks::route::Matched;
use crate::checks::threat::ThreatReport;
use crate::checks::websocket::WebSocketPolicy;
use crate::observe::tunnels::TunnelReport;
use crate::request::identity::Identity;
use crate::request::trace::TraceContext;
use prometheus::IntGauge;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    /// RateLimit fields for the answer, and the concurrency slots held until the request ends.
    pub admission: Admission,
    /// The access log's `decision`, as far as it is known.
    pub decision: Decision,
    /// Largest body this request may send, once its route is known.
    pub max_body_bytes: u64,
    pub body_bytes: u64,
    /// Targets tried for this request, in order.
    pub tried: Vec<SocketAddr>,
    pub upstream_started: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// What threat protection found (for the access log and the metrics).
    pub threats: ThreatReport,
    /// The W3C trace context passed to the upstream (step 1).
    pub trace: Option<TraceContext>,
    /// On a CORS route: the CORS headers of this request's answer (empty for an origin that
    /// is not allowed); `None` on any other route.
    pub cors: Option<Vec<CorsHeader>>,
    /// An upstream 5xx is being masked: the problem+json body still to send (taken by the
    /// first body chunk; the upstream's own chunks are dropped).
    pub masked: Option<Option<bytes::Bytes>>,
    /// A WebSocket upgrade on a route with `websocket` (step 3): its tunnel's policy.
    pub websocket: Option<WebSocketPolicy>,
    /// The tunnel's report, once armed: the close reason for the access log.
    pub tunnel: Option<Arc<TunnelReport>>,
    /// A gRPC call (`content-type: application/grpc*`): refusals are gRPC statuses.
    pub grpc: bool,
    /// The call's `grpc-status`: the upstream's (header or trailer) or the gateway's.
    pub grpc_status: Option<u8>,
    /// The request went on in a subrequest (`gateway::delegate`), which logs and counts it.
    pub delegated: bool,
}

/// What became of a request, for the access log's `decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through to the upstream (so far).
    Allowed,
    /// Refused by a check, or failed while proxying, for this reason (`Refusal::reason`).
    Refused(&'static str),
    /// The client went away before an answer could be sent.
    ClientGone,
    /// A CORS preflight the gateway answered itself, allowing what it asked.
    Preflight,
}

impl Decision {
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allowed => "allow",
            Decision::Refused(reason) => reason,
            Decision::ClientGone => "client_gone",
            Decision::Preflight => "cors_preflight",
        }
    }
}

impl RequestCtx {
    /// Step 1's findings.
    pub fn identified(&mut self, who: Identity) {
        self.request_id = who.request_id;
        self.client_ip = Some(who.client_ip);
        self.peer_trusted = who.peer_trusted;
    }

    /// Step 3's findings.
    pub fn routed(&mut self, matched: Matched, max_body_bytes: u64) {
        self.route = Some(matched.index);
        self.normalised_path = matched.normalised;
        self.upstream_path = matched.upstream_path;
        self.max_body_bytes = max_body_bytes;
    }

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
            admission: Admission::default(),
            decision: Decision::Allowed,
            max_body_bytes: u64::MAX,
            body_bytes: 0,
            tried: Vec::new(),
            upstream_started: None,
            upstream_status: None,
            threats: ThreatReport::default(),
            trace: None,
            cors: None,
            masked: None,
            websocket: None,
            tunnel: None,
            grpc: false,
            grpc_status: None,
            delegated: false,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
