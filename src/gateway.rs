//! The Pingora `ProxyHttp` implementation. It shows the phases and the order of checks of
//! SPEC §3 and delegates each to its module; refusals become responses, metrics and log
//! lines in one place (`refuse`).

use crate::checks::auth::mtls::PeerCert;
use crate::checks::forward::{self, Forwarding};
use crate::checks::route::{host_without_port, upstream_path, RouteMiss};
use crate::checks::threat;
use crate::checks::throttle::FailureThrottle;
use crate::checks::waf::{self, OverLimit, WafPolicy};
use crate::checks::{acl, auth, body, identity, ip, limits, path, rate_limit};
use crate::config::model::{Route, ThreatMode};
use crate::config::Config;
use crate::context::{InflightGuard, RequestCtx};
use crate::observe::access_log::{self, redacted_path, AccessLog, AccessRecord};
use crate::observe::metrics::{method_label, Metrics};
use crate::problem::{self, Refusal};
use crate::shared_limits::{OnStoreError, SharedLimiter, Take};
use crate::stream::client::{self, EarlyRefusals};
use crate::stream::replay;
use crate::upstream::{connect_retryable, failure_status, Upstreams};
use async_trait::async_trait;
use bytes::Bytes;
use bytes::BytesMut;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Sent on every response of a TLS listener: browsers keep to HTTPS for a year.
const HSTS: &str = "max-age=31536000";

/// Header values scanned by threat protection: those an application is likely to store or show.
const SCANNED_HEADERS: &[&str] = &["user-agent", "referer", "origin"];

/// A body read and validated in step 9, kept for step 10 and then replayed.
struct ValidatedBody {
    bytes: bytes::Bytes,
    json: Option<serde_json::Value>,
}

/// How long a request waits for a JWKS refetch that its unknown `kid` triggered.
const JWKS_REFETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Gateway {
    pub config: Arc<Config>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    pub throttle: Option<FailureThrottle>,
    pub shared_limits: Option<Arc<SharedLimiter>>,
}

impl Gateway {
    /// SPEC §3, in order. Each step either fills the context or refuses the request.
    async fn run_checks(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        let cfg = &self.config;
        let req = session.req_header();

        // 1. Request id and client IP.
        let peer = ctx.peer_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let who = identity::identify(req, peer, &cfg.server.trusted_proxies);
        ctx.request_id = who.request_id;
        ctx.client_ip = Some(who.client_ip);
        ctx.peer_trusted = who.peer_trusted;

        // 2. Size limits and unambiguous framing.
        limits::check_sizes(req, &cfg.limits)?;
        let raw_head = if req.headers.contains_key("transfer-encoding") {
            session
                .as_downstream()
                .as_http1()
                .map(|h1| h1.get_headers_raw_bytes())
        } else {
            None
        };
        let declared_body = limits::declared_length(req, raw_head.as_deref())?;

        // 3. Route, on the normalised path.
        let normalised = path::normalise(req.uri.path())
            .map_err(|e| Refusal::bad_request("bad_path", e.detail()))?;
        let host = request_host(req)?;
        let index = cfg
            .routes
            .match_request(host, &normalised, &req.method)
            .map_err(|miss| match miss {
                RouteMiss::NotFound => Refusal::not_found(),
                RouteMiss::MethodNotAllowed(allow) => Refusal::method_not_allowed(allow),
            })?;
        let route = cfg.routes.get(index);
        ctx.route = Some(index);
        ctx.max_body_bytes = route.max_body_bytes;
        limits::check_declared_body(declared_body, route.max_body_bytes)?;
        ctx.upstream_path = match req.uri.query() {
            Some(q) => format!("{}?{q}", upstream_path(route, &normalised)),
            None => upstream_path(route, &normalised).to_string(),
        };
        ctx.normalised_path = normalised;

        // 4. IP rules.
        if !ip::admitted(who.client_ip, &route.ip_allow, &route.ip_deny) {
            return Err(Refusal::forbidden(
                "ip_denied",
                "requests from this address are not allowed on this route",
            ));
        }

        if !route.public {
            // 5. Brute-force throttle, before any credential is looked at.
            if let Some(throttle) = &self.throttle {
                throttle.check(&who.client_ip)?;
            }

            // 6. Authentication.
            let mut outcome = auth::authenticate(route, req, peer_cert(session), &cfg.identities);
            if let Err(auth::AuthFailure {
                unknown_kid_provider: Some(index),
                ..
            }) = &outcome
            {
                // A token signed by a key we do not know yet: the provider may have rotated. Ask
                // for a refetch (rate limited) and wait briefly for it; no lock is held meanwhile.
                let keys = &cfg.identities.jwt_providers[*index].keys;
                if let Some(mut refetched) = keys.request_refetch() {
                    let _ = tokio::time::timeout(JWKS_REFETCH_WAIT, refetched.changed()).await;
                    outcome = auth::authenticate(route, req, peer_cert(session), &cfg.identities);
                }
            }
            let principal = match outcome {
                Ok(principal) => principal,
                Err(failure) => {
                    if let (true, Some(throttle)) = (failure.counted, &self.throttle) {
                        throttle.record_failure(&who.client_ip);
                    }
                    return Err(failure.refusal);
                }
            };

            // 7. Authorization: deny by default.
            if let Some(p) = &principal {
                acl::authorize(route.allow.as_ref(), p)?;
            }
            ctx.principal = principal;
        }

        // 8. Rate limits and concurrency caps.
        let subject = rate_limit::Subject {
            consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
            ip: who.client_ip,
            req,
        };
        let limited = match route.rate_limits.check(&subject) {
            Ok(fields) => {
                ctx.rate_limit_fields = fields;
                self.take_shared_quota(route, &subject).await?
            }
            Err(limited) => Some(limited),
        };
        if let Some(limited) = limited {
            self.metrics
                .rate_limited_total
                .with_label_values(&[route.name.as_str(), limited.key])
                .inc();
            return Err(limited.refusal);
        }
        if let Some(cap) = &route.max_inflight {
            ctx.slots.push(cap.enter("route_busy")?);
        }
        if let Some(cap) = self.upstreams.cap(route.upstream) {
            ctx.slots.push(cap.enter("upstream_busy")?);
        }
        Ok(())
    }

    /// Step 8 across instances: spend the shared quota of each policy (`[rate_limit_store]`).
    async fn take_shared_quota(
        &self,
        route: &Route,
        subject: &rate_limit::Subject<'_>,
    ) -> std::result::Result<Option<rate_limit::Limited>, Refusal> {
        let Some(shared) = &self.shared_limits else {
            return Ok(None);
        };
        for policy in &route.rate_limits.policies {
            let key = rate_limit::key_id(&policy.key, subject);
            match shared.take(policy, key).await {
                Take::Granted => {}
                Take::Exhausted(retry_after) => {
                    return Ok(Some(route.rate_limits.limited(policy, retry_after)))
                }
                Take::StoreDown if shared.on_error == OnStoreError::Deny => {
                    return Err(SharedLimiter::store_down())
                }
                Take::StoreDown => {}
            }
        }
        Ok(None)
    }

    /// Step 9, the body of a route with `validate` or with `[waf]` rules: read up to the
    /// route's limit before any upstream is chosen, checked, then handed back to Pingora to be
    /// forwarded byte for byte.
    async fn check_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Option<ValidatedBody>, Refusal> {
        let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) else {
            return Ok(None);
        };
        // A body that stalls is given up after `body_read_timeout`, streamed or validated
        // (Pingora's own wait for each read is 60 s).
        session
            .as_downstream_mut()
            .set_read_timeout(Some(self.config.limits.body_read_timeout));
        if (route.body.is_none() && route.waf.is_none()) || !request_has_body(session.req_header())
        {
            return Ok(None);
        }
        let content_type = session
            .req_header()
            .headers
            .get("content-type")
            .map(|v| v.as_bytes());
        let media = match &route.body {
            Some(rules) => Some(body::check_content_type(rules, content_type)?),
            None => None,
        };
        // Past what the rules inspect, `refuse` stops reading at once.
        let limit = match &route.waf {
            Some(w) if w.over_limit == OverLimit::Refuse => {
                route.max_body_bytes.min(w.max_body_bytes as u64)
            }
            _ => route.max_body_bytes,
        };
        replay::before_reading(session);
        let expects_continue = session
            .req_header()
            .headers
            .get("expect")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            session
                .as_downstream_mut()
                .write_continue_response()
                .await
                .map_err(|_| {
                    Refusal::bad_request("body_unreadable", "the request body could not be read")
                })?;
        }
        let timeout = self.config.limits.body_read_timeout;
        let mut buffer = BytesMut::new();
        loop {
            let chunk = match tokio::time::timeout(timeout, session.read_request_body()).await {
                // Pingora's own read timeout is the same `body_read_timeout` (check_body sets
                // it); whichever of the two fires first, the answer is the same.
                Err(_) => return Err(body_timeout()),
                Ok(Err(e)) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                    return Err(body_timeout())
                }
                Ok(Err(_)) => {
                    return Err(Refusal::bad_request(
                        "body_unreadable",
                        "the request body could not be read",
                    ))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(match &route.waf {
                    Some(w) if limit < route.max_body_bytes => waf::body_over_limit(w),
                    _ => limits::body_too_large(route.max_body_bytes),
                });
            }
            buffer.extend_from_slice(&chunk);
        }
        if replay::h2_over_limit(session) {
            return Err(Refusal::new(
                413,
                "body_too_large",
                format!(
                    "over HTTP/2, bodies that are validated or inspected are limited to {} bytes",
                    replay::H2_REPLAY_LIMIT
                ),
            ));
        }
        let json = match (&route.body, media) {
            (Some(rules), Some(media)) if body::is_json(&media) => {
                Some(body::check_json(rules, &buffer)?)
            }
            _ => None,
        };
        Ok(Some(ValidatedBody {
            bytes: buffer.freeze(),
            json,
        }))
    }

    /// Step 10 with `[waf]`: the route's rules on the whole request. `block` refuses what
    /// the rules refuse; `detect` logs it and forwards.
    fn check_waf(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        policy: &WafPolicy,
        route: &Route,
        body: &[u8],
    ) -> std::result::Result<(), Refusal> {
        let client_ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let findings = waf::inspect(
            policy,
            &waf::Inputs {
                head: session.req_header(),
                body,
                client_ip: &client_ip,
                request_id: &ctx.request_id,
            },
        );
        if !findings.noteworthy() {
            return Ok(());
        }
        let block = route.threat_protection == ThreatMode::Block;
        let action = if block { "block" } else { "detect" };
        if findings.refused {
            for family in &findings.families {
                self.metrics
                    .threats_total
                    .with_label_values(&[route.name.as_str(), family, action])
                    .inc();
            }
            // The matched values are never logged: they are attacker-controlled and may hold
            // secrets. The rule ids and the score are in the access log.
            log::warn!(
                "request {} on route {}: {} (anomaly score {}) {}",
                ctx.request_id,
                route.name,
                findings.main_family(),
                findings.anomaly_score,
                if block {
                    "blocked"
                } else {
                    "detected, forwarded"
                }
            );
        }
        let refusal = (findings.refused && block).then(|| findings.refusal());
        if findings.refused && !block {
            ctx.decision = findings.detected_decision();
        }
        ctx.waf = Some(findings);
        refusal.map_or(Ok(()), Err)
    }

    /// Step 10, threat protection over the path, the query, selected headers and the strings
    /// of a validated JSON body. `block` refuses; `detect` counts, logs and lets it pass.
    fn check_threats(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        body: Option<&ValidatedBody>,
    ) -> std::result::Result<(), Refusal> {
        let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) else {
            return Ok(());
        };
        if route.threat_protection == ThreatMode::Off {
            return Ok(());
        }
        if let Some(policy) = &route.waf {
            return self.check_waf(session, ctx, policy, route, body.map_or(&[], |b| &b.bytes));
        }
        let json = body.and_then(|b| b.json.as_ref());
        let req = session.req_header();
        let found = threat::scan_path(&ctx.normalised_path)
            .or_else(|| req.uri.query().and_then(threat::scan_query))
            .or_else(|| {
                SCANNED_HEADERS.iter().find_map(|name| {
                    req.headers
                        .get_all(*name)
                        .iter()
                        .find_map(|v| threat::scan(v.as_bytes(), threat::Field::Header))
                })
            })
            .or_else(|| json.and_then(threat::scan_json));
        let Some(kind) = found else {
            return Ok(());
        };
        let block = route.threat_protection == ThreatMode::Block;
        self.metrics
            .threats_total
            .with_label_values(&[
                route.name.as_str(),
                kind.label(),
                if block { "block" } else { "detect" },
            ])
            .inc();
        // The payload itself is never logged: it is attacker-controlled and may hold secrets.
        log::warn!(
            "request {} on route {}: {} {}",
            ctx.request_id,
            route.name,
            kind.label(),
            if block {
                "blocked"
            } else {
                "detected, forwarded"
            }
        );
        if block {
            return Err(Refusal::bad_request(kind.blocked_reason(), kind.detail()));
        }
        ctx.decision = kind.detected_decision();
        Ok(())
    }

    /// Turn a refusal into the problem+json response, the metrics and the log decision.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<()> {
        ctx.decision = refusal.reason;
        let route = self.route_label(ctx);
        self.metrics
            .count_refusal(route, refusal.status, refusal.reason);
        if ctx.request_id.is_empty() {
            ctx.request_id = identity::new_request_id();
        }
        // The body of a refused request is never read, so the connection cannot be reused.
        if request_has_body(session.req_header()) || refusal.reason == "ambiguous_framing" {
            session.set_keepalive(None);
        }
        let body = problem::body(refusal.status, &refusal.detail, &ctx.request_id);
        let mut header = problem::header(
            refusal.status,
            body.len(),
            &ctx.request_id,
            &refusal.headers,
        )?;
        if ctx.tls {
            header.insert_header("Strict-Transport-Security", HSTS)?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    fn route_label(&self, ctx: &RequestCtx) -> &str {
        match ctx.route {
            Some(i) => &self.config.routes.get(i).name,
            None => "unmatched",
        }
    }
}

/// The host the request is for; several `Host` headers are refused.
fn request_host(req: &RequestHeader) -> std::result::Result<Option<&str>, Refusal> {
    let mut hosts = req.headers.get_all("host").iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::bad_request(
            "bad_host",
            "the request has several Host headers",
        ));
    }
    if let Some(authority) = req.uri.authority() {
        return Ok(Some(host_without_port(authority.as_str())));
    }
    match header.map(|h| h.to_str()) {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(host_without_port(value.trim()))),
        Some(Err(_)) => Err(Refusal::bad_request(
            "bad_host",
            "the Host header is not valid",
        )),
    }
}

/// The client certificate, as the TLS handshake recorded it (mTLS listeners only).
fn peer_cert(session: &Session) -> Option<&PeerCert> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<PeerCert>()
}

fn body_timeout() -> Refusal {
    Refusal::new(
        408,
        "body_timeout",
        "the request body was not received in time",
    )
}

fn request_has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key("transfer-encoding")
        || req
            .headers
            .get("content-length")
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // From here on, whatever this request is answered with is the gateway's own.
        if let Some(stream) = session.as_downstream().stream() {
            client::mark_seen(stream);
        }
        ctx.inflight = Some(InflightGuard::new(&self.metrics.inflight_requests));
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| ip::canonical(a.ip()));
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let verdict = async {
            self.run_checks(session, ctx).await?;
            let body = self.check_body(session, ctx).await?;
            self.check_threats(session, ctx, body.as_ref())?;
            if let Some(body) = body {
                replay::replay(session, body.bytes).await.map_err(|e| {
                    log::error!("cannot hand the validated body back for forwarding: {e}");
                    Refusal::new(500, "replay_failed", "the request could not be forwarded")
                })?;
            }
            Ok(())
        }
        .await;
        match verdict {
            Ok(()) => Ok(false),
            Err(refusal) => {
                self.refuse(session, ctx, refusal).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A body without a declared length (chunked) is held to the same limit as it streams.
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.max_body_bytes {
                ctx.decision = "body_too_large";
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        match self.upstreams.select(route.upstream, &ctx.tried) {
            Some(target) => {
                ctx.tried.push(target);
                ctx.upstream_started = Some(Instant::now());
                Ok(Box::new(self.upstreams.peer(route.upstream, target)))
            }
            None if ctx.tried.is_empty() => {
                ctx.decision = "no_healthy_target";
                Error::e_explain(ErrorType::HTTPStatus(503), "no healthy target")
            }
            None => Error::e_explain(ErrorType::HTTPStatus(502), "every target failed"),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let targets = ctx
            .route
            .map(|i| {
                self.upstreams
                    .target_count(self.config.routes.get(i).upstream)
            })
            .unwrap_or(0);
        // Nothing was sent yet: another target may serve the request.
        if connect_retryable(&e) && ctx.tried.len() < targets {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) {
            self.metrics
                .upstream_connections_total
                .with_label_values(&[
                    self.upstreams.name(route.upstream),
                    if reused { "true" } else { "false" },
                ])
                .inc();
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let unknown = IpAddr::from([0, 0, 0, 0]);
        // 11. What the upstream sees.
        forward::prepare(
            upstream_request,
            route,
            &Forwarding {
                request_id: &ctx.request_id,
                client_ip: ctx.client_ip.unwrap_or(unknown),
                peer_ip: ctx.peer_ip.unwrap_or(unknown),
                peer_trusted: ctx.peer_trusted,
                tls: ctx.tls,
                path_and_query: &ctx.upstream_path,
                consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
                groups: ctx.principal.as_ref().map_or(&[], |p| p.groups.as_slice()),
                scopes: ctx.principal.as_ref().map_or(&[], |p| p.scopes.as_slice()),
            },
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if let (Some(started), Some(route)) = (ctx.upstream_started, ctx.route) {
            let upstream = self.upstreams.name(self.config.routes.get(route).upstream);
            self.metrics
                .upstream_duration_seconds
                .with_label_values(&[upstream])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if let Some(fields) = &ctx.rate_limit_fields {
            upstream_response.insert_header("RateLimit-Policy", fields.policy.as_str())?;
            upstream_response.insert_header("RateLimit", fields.current.as_str())?;
        }
        if ctx.tls {
            upstream_response.insert_header("Strict-Transport-Security", HSTS)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let status = failure_status(e);
        if ctx.decision == "allow" {
            ctx.decision = match status {
                502 => "upstream_error",
                503 => "no_healthy_target",
                504 => "upstream_timeout",
                413 => "body_too_large",
                // The head was read before any upstream work: only a body can time out.
                408 => "body_timeout",
                0 => "client_gone",
                _ => "error",
            };
        }
        if status > 0 && session.response_written().is_none() {
            let detail = match status {
                502 => "the upstream could not be reached or answered badly",
                503 => "no healthy upstream target is available",
                504 => "the upstream did not answer in time",
                413 => "the request body is larger than this route allows",
                408 => "the request was not received in time",
                400 => "the request could not be read",
                _ => "the request could not be completed",
            };
            if let Err(err) = self
                .refuse(session, ctx, Refusal::new(status, ctx.decision, detail))
                .await
            {
                log::debug!("cannot send the error response: {err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let route = self.route_label(ctx);
        let method = method_label(&req.method);
        let elapsed = ctx.started.elapsed();
        self.metrics
            .requests_total
            .with_label_values(&[route, method, status.to_string().as_str()])
            .inc();
        self.metrics
            .request_duration_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        let upstream = ctx
            .route
            .filter(|_| !ctx.tried.is_empty())
            .map(|i| self.upstreams.name(self.config.routes.get(i).upstream));
        self.access_log.record(&AccessRecord {
            ts: access_log::timestamp(),
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip.map(|ip| ip.to_string()),
            method: req.method.as_str(),
            path: redacted_path(
                req.uri.path(),
                req.uri.query(),
                &self.config.logging.redact_query_params,
            ),
            status,
            route,
            consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
            auth: ctx.principal.as_ref().map(|p| p.method.as_str()),
            decision: ctx.decision,
            upstream,
            upstream_status: ctx.upstream_status,
            bytes_sent: session.body_bytes_sent(),
            duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            user_agent: req
                .headers
                .get("user-agent")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            waf_rules: ctx.waf.as_ref().map(|w| w.rules.as_slice()),
            anomaly_score: ctx.waf.as_ref().map(|w| w.anomaly_score),
            waf_body: ctx
                .waf
                .as_ref()
                .and_then(|w| w.body_prefix.then_some("prefix")),
        });
        ctx.inflight = None;
    }
}

/// The answers to requests that Pingora refuses before `request_filter` sees them (a head it
/// cannot parse, `CONNECT`): the same problem+json, access-log line and metrics as any other
/// refusal, in place of Pingora's empty error page.
pub struct EarlyAnswers {
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
}

impl EarlyRefusals for EarlyAnswers {
    fn respond(&self, status: u16, client: Option<IpAddr>, tls: bool) -> Bytes {
        // Pingora answers 400 to a head it cannot parse and 405 to `CONNECT`.
        let (reason, detail) = match status {
            405 => ("method_not_allowed", "this method is not allowed"),
            _ => (
                "malformed_request",
                "the request could not be parsed as HTTP",
            ),
        };
        let route = "unmatched";
        self.metrics.count_refusal(route, status, reason);
        self.metrics
            .requests_total
            .with_label_values(&[route, "OTHER", status.to_string().as_str()])
            .inc();
        let request_id = identity::new_request_id();
        let body = problem::body(status, detail, &request_id);
        let mut out = BytesMut::with_capacity(512 + body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {status} {}\r\n", problem::title(status)).as_bytes(),
        );
        match problem::header(status, body.len(), &request_id, &[]) {
            Ok(mut header) => {
                let _ = header.insert_header("Connection", "close");
                if tls {
                    let _ = header.insert_header("Strict-Transport-Security", HSTS);
                }
                header.header_to_h1_wire(&mut out);
            }
            Err(e) => log::error!("cannot build the problem response header: {e}"),
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        self.access_log.record(&AccessRecord {
            ts: access_log::timestamp(),
            request_id: &request_id,
            client_ip: client.map(|ip| ip::canonical(ip).to_string()),
            method: "-",
            path: "-".to_string(),
            status,
            route,
            consumer: None,
            auth: None,
            decision: reason,
            upstream: None,
            upstream_status: None,
            bytes_sent: out.len(),
            duration_ms: 0.0,
            user_agent: None,
            waf_rules: None,
            anomaly_score: None,
            waf_body: None,
        });
        out.freeze()
    }
}
