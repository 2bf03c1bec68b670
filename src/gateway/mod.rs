//! The Pingora `ProxyHttp` implementation. Each phase delegates: the checks of SPEC §3 to
//! `pipeline` (one line a step), every response portcullis makes itself and every access-log
//! line to `respond`, step 11 to `request::forward`.

mod delegate;
mod pipeline;
pub mod respond;

use crate::checks::auth::sender::ReplayGuard;
use crate::checks::rate_limit::shared::SharedLimiter;
use crate::checks::throttle::FailureThrottle;
use crate::checks::{ip, Checked};
use crate::config::Config;
use crate::context::{InflightGuard, RequestCtx};
use crate::observe::metrics::Metrics;
use crate::request::forward::{self, Forwarding};
use crate::request::{grpc, response};
use crate::stream::client;
use crate::upstream::{self, connect_retryable, Upstreams};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use respond::{Labels, Respond, UNMATCHED};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Cloned once per proxy service (plain and h2c listeners are served by two); every field is
/// shared.
#[derive(Clone)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub respond: Arc<Respond>,
    pub throttle: Option<Arc<FailureThrottle>>,
    pub shared_limits: Option<Arc<SharedLimiter>>,
    /// DPoP proofs seen (here, and through the shared store when there is one).
    pub replay: Arc<ReplayGuard>,
}

impl Gateway {
    fn route_label(&self, ctx: &RequestCtx) -> &str {
        match ctx.route {
            Some(i) => &self.config.routes.get(i).name,
            None => UNMATCHED,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // A subrequest carrying a validated HTTP/2 body: its checks were passed already.
        if delegate::take_over(session, ctx) {
            return Ok(false);
        }
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
        ctx.grpc = grpc::is_grpc(session.req_header());
        match self.run_checks(session, ctx).await {
            Ok(Checked::Forward) => Ok(false),
            Ok(Checked::Subrequest(body)) => {
                delegate::forward(session, ctx, body).await?;
                Ok(true)
            }
            Ok(Checked::Preflight(headers)) => {
                let route = self.route_label(ctx);
                self.respond.preflight(session, ctx, route, headers).await?;
                Ok(true)
            }
            Err(refusal) => {
                let route = self.route_label(ctx);
                self.respond.refuse(session, ctx, route, refusal).await?;
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
        // A WebSocket tunnel's bytes are frames, held to its own message limit instead.
        if ctx.tunnel.is_some() {
            return Ok(());
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.max_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        match self.upstreams.select(route.upstream, &ctx.tried) {
            Some(target) => {
                ctx.tried.push(target);
                ctx.upstream_started = Some(Instant::now());
                let mut peer = self.upstreams.peer(route.upstream, target);
                if let Some(policy) = ctx.websocket {
                    upstream::tunnel_peer(&mut peer, policy.idle_timeout);
                }
                // A gRPC deadline shorter than the upstream's read timeout bounds each wait.
                if let Some(deadline) = ctx
                    .grpc
                    .then(|| grpc::timeout(session.req_header()))
                    .flatten()
                {
                    let read = peer
                        .options
                        .read_timeout
                        .map_or(deadline, |t| t.min(deadline));
                    peer.options.read_timeout = Some(read);
                }
                Ok(Box::new(peer))
            }
            None if ctx.tried.is_empty() => {
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
            &Forwarding {
                keep_credentials: route.keep_credentials,
                request_id: &ctx.request_id,
                client_ip: ctx.client_ip.unwrap_or(unknown),
                peer_ip: ctx.peer_ip.unwrap_or(unknown),
                peer_trusted: ctx.peer_trusted,
                tls: ctx.tls,
                path_and_query: &ctx.upstream_path,
                consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
                groups: ctx.principal.as_ref().map_or(&[], |p| p.groups.as_slice()),
                scopes: ctx.principal.as_ref().map_or(&[], |p| p.scopes.as_slice()),
                trace: ctx.trace.as_ref(),
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
        if ctx.grpc {
            ctx.grpc_status = grpc_status(upstream_response.headers.get("grpc-status"));
        }
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
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.map(|i| self.config.routes.get(i)) {
            let head_only = session.req_header().method == http::Method::HEAD;
            if response::masks(upstream_response, &route.response, head_only) {
                let (head, body) = response::masked(upstream_response, &ctx.request_id)?;
                self.metrics
                    .upstream_errors_masked_total
                    .with_label_values(&[route.name.as_str(), head.status.as_str()])
                    .inc();
                *upstream_response = head;
                ctx.masked = Some(Some(body));
            }
            response::harden(upstream_response, &route.response)?;
        }
        if let Some(cors) = &ctx.cors {
            response::cors(upstream_response, cors)?;
        }
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if let Some(nonce) = ctx.principal.as_ref().and_then(|p| p.dpop_nonce.as_deref()) {
            upstream_response.insert_header("DPoP-Nonce", nonce)?;
        }
        if let Some(fields) = &ctx.admission.fields {
            upstream_response.insert_header("RateLimit-Policy", fields.policy.as_str())?;
            upstream_response.insert_header("RateLimit", fields.current.as_str())?;
        }
        self.respond.tls_headers(upstream_response, ctx.tls)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(masked) = &mut ctx.masked {
            *body = masked.take();
        }
        Ok(None)
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Bytes>> {
        if ctx.grpc {
            ctx.grpc_status = grpc_status(upstream_trailers.get("grpc-status")).or(ctx.grpc_status);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let route = self.route_label(ctx);
        self.respond.proxy_failure(session, ctx, route, e).await
    }

    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &RequestCtx) -> bool {
        // Only HTTP/2 bodies past the retry buffer need one (`delegate`).
        session.as_downstream().is_http2()
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.delegated {
            return;
        }
        let upstream = ctx
            .route
            .filter(|_| !ctx.tried.is_empty())
            .map(|i| self.upstreams.name(self.config.routes.get(i).upstream));
        let labels = Labels {
            route: self.route_label(ctx),
            upstream,
            redact_query_params: &self.config.logging.redact_query_params,
        };
        self.respond.log(session, ctx, &labels);
        ctx.inflight = None;
    }
}

/// A `grpc-status` value (0 to 16).
fn grpc_status(value: Option<&http::HeaderValue>) -> Option<u8> {
    value?.to_str().ok()?.parse().ok().filter(|s| *s <= 16)
}
