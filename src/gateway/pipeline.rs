//! SPEC §3 in order, a line a step. Each step's module owns its refusal, its policy and its
//! metric family; this file only carries what one step found to the next.

use super::Gateway;
use crate::checks::auth::mtls::PeerCert;
use crate::checks::auth::{self, Credentials};
use crate::checks::rate_limit::{self, Subject};
use crate::checks::throttle::FailureThrottle;
use crate::checks::{acl, body, ip, limits, route, threat};
use crate::checks::{cors, websocket, Checked};
use crate::context::RequestCtx;
use crate::observe::tunnels::TunnelReport;
use crate::problem::Refusal;
use crate::request::{forward, identity, trace};
use crate::stream::client;
use crate::stream::replay::{self, Replayed};
use crate::stream::tunnel::TunnelSettings;
use pingora_proxy::Session;
use std::net::{IpAddr, Ipv4Addr};

impl Gateway {
    /// Steps 1 to 10. Each either fills the context or refuses the request.
    pub(super) async fn run_checks(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Checked, Refusal> {
        let cfg = &*self.config;
        let peer = ctx.peer_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

        // 1. Request id, client IP and trace context.
        let who = identity::identify(session.req_header(), peer, &cfg.server.trusted_proxies);
        let client_ip = who.client_ip;
        ctx.identified(who);
        ctx.trace = Some(trace::check(
            session.req_header(),
            &ctx.request_id,
            cfg.server.trace_from,
            ctx.peer_trusted,
        ));
        // 2. Size limits and unambiguous framing.
        let declared_body = limits::check(session, &cfg.limits)?;
        // 3. Route, on the normalised path; then the declared body against its limit. A CORS
        // preflight is routed by the method it asks for, and answered here on a CORS route.
        let preflight = cors::Preflight::of(session.req_header());
        let matched = match preflight.as_ref().and_then(|p| {
            route::check_as(session.req_header(), &cfg.routes, &p.method)
                .ok()
                .filter(|m| cfg.routes.get(m.index).cors.is_some())
        }) {
            Some(matched) => matched,
            None => route::check(session.req_header(), &cfg.routes)?,
        };
        let route = cfg.routes.get(matched.index);
        ctx.routed(matched, route.body.max_bytes);
        declared_body.within(route.body.max_bytes)?;
        if let Some(policy) = &route.cors {
            if let Some(asked) = &preflight {
                return policy.preflight(asked).map(Checked::Preflight);
            }
            ctx.cors = Some(policy.response_headers(session.req_header()));
        }
        let upgrade = route.websocket.as_ref();
        ctx.websocket =
            websocket::check(session.req_header(), upgrade, route.cors.as_ref())?.copied();
        // 4. IP rules.
        ip::check(client_ip, &route.ip)?;
        // 5. Brute-force throttle, before any credential is looked at.
        let public = route.auth.is_public();
        FailureThrottle::check_route(self.throttle.as_deref(), public, &client_ip).await?;
        // 6. Authentication.
        let credentials = Credentials {
            req: session.req_header(),
            cert: peer_cert(session),
            client_ip,
            throttle: self.throttle.as_deref(),
            scheme: forward::client_scheme(session.req_header(), ctx.tls, ctx.peer_trusted),
            sender_constrained: route.sender_constrained,
            replay: Some(&self.replay),
        };
        ctx.principal = auth::check(&route.auth, &cfg.identities, &credentials).await?;
        // 7. Authorization: deny by default.
        acl::check(route.allow.as_ref(), ctx.principal.as_ref())?;
        // 8. Rate limits and concurrency caps.
        let subject = Subject {
            consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
            ip: client_ip,
            req: session.req_header(),
        };
        let shared = self.shared_limits.as_deref();
        let upstream_cap = self.upstreams.cap(route.upstream);
        ctx.admission = rate_limit::check(&route.limits, &subject, shared, upstream_cap).await?;
        // 9. Body.
        // gRPC messages are binary and may stream for long: they go on unread.
        let body = match ctx.grpc && route.body.validate.is_none() {
            true => None,
            false => body::check(session, &route.body, cfg.limits.body_read_timeout).await?,
        };
        // 10. Threat protection.
        let inputs = threat::Inputs {
            head: session.req_header(),
            normalised_path: &ctx.normalised_path,
            body: body.as_ref(),
            client_ip,
            request_id: &ctx.request_id,
            route: &route.name,
        };
        threat::check(&route.threat, &inputs, &mut ctx.threats)?;

        // A body read whole in step 9 goes on to the upstream as it came.
        if let Some(body) = body {
            let replayed = replay::replay(session, body.bytes).await.map_err(|e| {
                log::error!("cannot hand the validated body back for forwarding: {e}");
                Refusal::new(500, "replay_failed", "the request could not be forwarded")
            })?;
            if let Replayed::Subrequest(bytes) = replayed {
                return Ok(Checked::Subrequest(bytes));
            }
        }
        // A WebSocket upgrade that passed every step becomes a tunnel once the upstream agrees.
        if let Some(policy) = ctx.websocket {
            let report = TunnelReport::new(&self.metrics, &route.name);
            let settings = TunnelSettings {
                idle_timeout: policy.idle_timeout,
                max_lifetime: policy.max_lifetime,
                max_message_bytes: policy.max_message_bytes,
                events: report.clone(),
            };
            let armed = session
                .as_downstream()
                .stream()
                .is_some_and(|stream| client::arm_tunnel(stream, settings));
            if !armed {
                return Err(Refusal::bad_request(
                    "websocket_handshake",
                    "this connection cannot become a WebSocket: the client sent data before the handshake's answer",
                ));
            }
            // The tunnel times idleness itself: `body_read_timeout` would cut a quiet client.
            session.as_downstream_mut().set_read_timeout(None);
            ctx.tunnel = Some(report);
        }
        Ok(Checked::Forward)
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
