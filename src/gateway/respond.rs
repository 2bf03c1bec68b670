//! The one place where portcullis answers for itself. A check's refusal, a failure to proxy and
//! a request Pingora refused before `request_filter` all become the same problem+json response
//! here, counted in `portcullis_refusals_total` and in the family the `Refusal` names; and
//! every request, answered by us or by an upstream, gets its metrics and access-log line here.

use crate::checks::body::has_body;
use crate::checks::cors::{CorsHeader, VARY_ORIGIN};
use crate::checks::ip;
use crate::context::{Decision, RequestCtx};
use crate::observe::access_log::{AccessLog, AccessRecord};
use crate::observe::grpc::GrpcLabels;
use crate::observe::metrics::{method_label, Metrics};
use crate::problem::{self, AfterRefusal, Refusal};
use crate::request::{grpc, identity};
use crate::stream::client::EarlyRefusals;
use bytes::{Bytes, BytesMut};
use pingora_core::{Error, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The route label of a request no route was found for.
pub const UNMATCHED: &str = "unmatched";

/// Add the headers every response of a TLS listener carries, ours or an upstream's: HSTS
/// (`[response] hsts`), replacing the upstream's own.
fn tls_headers(header: &mut ResponseHeader, hsts: Option<&str>) -> Result<()> {
    if let Some(value) = hsts {
        header.insert_header("Strict-Transport-Security", value)?;
    }
    Ok(())
}

/// What the access-log line of a request names besides the request itself.
pub struct Labels<'a> {
    /// The route's name, or `unmatched`.
    pub route: &'a str,
    /// The upstream that was tried, if any.
    pub upstream: Option<&'a str>,
    pub redact_query_params: &'a HashSet<String>,
}

pub struct Respond {
    pub metrics: Arc<Metrics>,
    /// The (service, method) labels of `portcullis_grpc_requests_total` so far.
    pub grpc_labels: GrpcLabels,
    pub access_log: Arc<AccessLog>,
    /// The `Strict-Transport-Security` value (`Config::hsts`).
    pub hsts: Option<String>,
}

impl Respond {
    /// HSTS for an answer on a TLS connection (`tls`), if configured.
    fn hsts(&self, tls: bool) -> Option<&str> {
        self.hsts.as_deref().filter(|_| tls)
    }

    /// The headers every answer on a TLS connection carries (an upstream's too).
    pub fn tls_headers(&self, header: &mut ResponseHeader, tls: bool) -> Result<()> {
        tls_headers(header, self.hsts(tls))
    }

    /// Answer a refusal: the problem+json response, the metrics, the log decision.
    pub async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &str,
        mut refusal: Refusal,
    ) -> Result<()> {
        ctx.decision = Decision::Refused(refusal.reason);
        // A page of an allowed origin may read why its request was refused.
        if let Some(cors) = &ctx.cors {
            refusal.headers.extend(cors.iter().cloned());
            refusal.headers.push(("Vary", VARY_ORIGIN.to_string()));
        }
        self.metrics.count_refusal(route, &refusal);
        if ctx.request_id.is_empty() {
            ctx.request_id = identity::new_request_id();
        }
        // The body of a refused request is never read, so the connection cannot be reused.
        if has_body(session.req_header()) || refusal.connection == AfterRefusal::Close {
            session.set_keepalive(None);
        }
        if ctx.grpc {
            // A gRPC client reads a status, not a body: a trailers-only answer.
            let mut header = grpc::refusal_header(refusal.status, &refusal.detail)?;
            header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
            for (name, value) in &refusal.headers {
                header.insert_header(*name, value.as_str())?;
            }
            tls_headers(&mut header, self.hsts(ctx.tls))?;
            ctx.grpc_status = Some(grpc::status_for(refusal.status));
            session
                .write_response_header(Box::new(header), true)
                .await?;
            drain_h2(session).await;
            return Ok(());
        }
        let (header, body) = problem_response(&refusal, &ctx.request_id, self.hsts(ctx.tls))?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        drain_h2(session).await;
        Ok(())
    }

    /// Answer a CORS preflight that asked for what the route allows: `204` with `headers`.
    pub async fn preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &str,
        headers: Vec<CorsHeader>,
    ) -> Result<()> {
        ctx.decision = Decision::Preflight;
        self.metrics
            .cors_preflights_total
            .with_label_values(&[route, "allowed"])
            .inc();
        if has_body(session.req_header()) {
            session.set_keepalive(None);
        }
        let mut header = ResponseHeader::build(204, Some(headers.len() + 2))?;
        header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        for (name, value) in headers {
            header.append_header(name, value)?;
        }
        self.tls_headers(&mut header, ctx.tls)?;
        session.write_response_header(Box::new(header), true).await
    }

    /// Answer a failure to proxy, unless a response was already under way.
    pub async fn proxy_failure(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &str,
        e: &Error,
    ) -> FailToProxy {
        let status = crate::upstream::failure_status(e);
        let gone = FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        };
        let Some(refusal) = failure_refusal(status) else {
            if ctx.decision == Decision::Allowed {
                ctx.decision = Decision::ClientGone;
            }
            return gone;
        };
        if session.response_written().is_some() {
            if ctx.decision == Decision::Allowed {
                ctx.decision = Decision::Refused(refusal.reason);
            }
            return gone;
        }
        if let Err(err) = self.refuse(session, ctx, route, refusal).await {
            log::debug!("cannot send the error response: {err}");
        }
        gone
    }

    /// The metrics and the access-log line of a request, at its end.
    pub fn log(&self, session: &Session, ctx: &RequestCtx, labels: &Labels) {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let detected = ctx.threats.detected.as_ref();
        if let Some(detected) = detected {
            self.metrics.count_detected(labels.route, &detected.refusal);
        }
        // Forwarded: the decision says what was let through, unless the proxying failed.
        let decision = match (ctx.decision, detected) {
            (Decision::Allowed, Some(detected)) => detected.decision,
            (decision, _) => decision.label(),
        };
        let findings = ctx.threats.findings.as_ref();
        let elapsed = ctx.started.elapsed();
        let key_label = ctx.principal.as_ref().and_then(|p| p.key_label.clone());
        if let Some(label) = &key_label {
            self.metrics
                .api_key_requests_total
                .with_label_values(&[labels.route, label])
                .inc();
        }
        let grpc_status = ctx.grpc.then(|| match (ctx.grpc_status, status) {
            (Some(code), _) => Some(code),
            // The upstream's own HTTP error reaches a gRPC client as this status.
            (None, http) if http != 200 && http != 0 => Some(grpc::status_for(http)),
            (None, _) => None,
        });
        if let (Some(code), true) = (grpc_status, ctx.route.is_some()) {
            let code = code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
            self.grpc_labels
                .count(&self.metrics, labels.route, req.uri.path(), &code);
        }
        self.account(
            method_label(&req.method),
            elapsed,
            &AccessRecord {
                ts: SystemTime::now(),
                request_id: &ctx.request_id,
                client_ip: ctx.client_ip,
                method: req.method.as_str(),
                path: req.uri.path(),
                query: req.uri.query(),
                redact: labels.redact_query_params,
                status,
                route: labels.route,
                consumer: ctx.principal.as_ref().map(|p| p.consumer.as_str()),
                auth: ctx.principal.as_ref().map(|p| p.method.as_str()),
                decision,
                upstream: labels.upstream,
                upstream_status: ctx.upstream_status,
                bytes_sent: session.body_bytes_sent(),
                duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
                user_agent: req.headers.get("user-agent").map(|v| v.as_bytes()),
                trace_id: ctx.trace.as_ref().map(|t| t.trace_id()),
                waf_rules: findings.map(|w| w.rules.as_slice()),
                anomaly_score: findings.map(|w| w.anomaly_score),
                waf_body: findings.and_then(|w| w.body_prefix.then_some("prefix")),
                upstream_body: ctx.masked.as_ref().map(|_| "masked"),
                websocket_close: ctx.tunnel.as_ref().and_then(|t| t.reason.get().copied()),
                grpc_status: grpc_status.flatten(),
                key_label: key_label.as_deref(),
            },
        );
    }

    /// `portcullis_requests_total`, the duration histogram and the access-log line.
    fn account(&self, method: &str, elapsed: Duration, record: &AccessRecord) {
        let status = http::StatusCode::from_u16(record.status);
        let status = status.as_ref().map_or("0", |s| s.as_str());
        self.metrics
            .requests_total
            .with_label_values(&[record.route, method, status])
            .inc();
        self.metrics
            .request_duration_seconds
            .with_label_values(&[record.route])
            .observe(elapsed.as_secs_f64());
        self.access_log.record(record);
    }
}

/// The answers to requests that Pingora refuses before `request_filter` sees them (a head it
/// cannot parse, `CONNECT`): the same problem+json, access-log line and metrics as any other
/// refusal, in place of Pingora's empty error page.
impl EarlyRefusals for Respond {
    fn respond(&self, status: u16, client: Option<IpAddr>, tls: bool) -> Bytes {
        let refusal = early_refusal(status);
        self.metrics.count_refusal(UNMATCHED, &refusal);
        let request_id = identity::new_request_id();
        let mut out = BytesMut::with_capacity(1024);
        out.extend_from_slice(
            format!("HTTP/1.1 {status} {}\r\n", problem::title(status)).as_bytes(),
        );
        let body = match problem_response(&refusal, &request_id, self.hsts(tls)) {
            Ok((mut header, body)) => {
                let _ = header.insert_header("Connection", "close");
                header.header_to_h1_wire(&mut out);
                body
            }
            Err(e) => {
                log::error!("cannot build the problem response header: {e}");
                Bytes::new()
            }
        };
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        self.account(
            "OTHER",
            Duration::ZERO,
            &AccessRecord {
                ts: SystemTime::now(),
                request_id: &request_id,
                client_ip: client.map(ip::canonical),
                method: "-",
                path: "-",
                query: None,
                redact: &HashSet::new(),
                status,
                route: UNMATCHED,
                consumer: None,
                auth: None,
                decision: refusal.reason,
                upstream: None,
                upstream_status: None,
                bytes_sent: out.len(),
                duration_ms: 0.0,
                trace_id: None,
                user_agent: None,
                waf_rules: None,
                anomaly_score: None,
                waf_body: None,
                upstream_body: None,
                websocket_close: None,
                grpc_status: None,
                key_label: None,
            },
        );
        out.freeze()
    }
}

/// Over HTTP/2, a refused request's unread body is read and dropped (up to 8 MiB, for at most
/// 2 s): a stream closed while the client is still sending is reset, and clients (curl among
/// them) then drop the answer already sent.
async fn drain_h2(session: &mut Session) {
    const MAX_DRAIN: usize = 8 << 20;
    if !session.as_downstream().is_http2() || session.as_downstream_mut().is_body_done() {
        return;
    }
    let drain = async {
        let mut drained = 0;
        while let Ok(Some(chunk)) = session.as_downstream_mut().read_request_body().await {
            drained += chunk.len();
            if drained > MAX_DRAIN {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

/// The problem+json head and body of a refusal.
fn problem_response(
    refusal: &Refusal,
    request_id: &str,
    hsts: Option<&str>,
) -> Result<(ResponseHeader, Bytes)> {
    let body = problem::body(refusal.status, &refusal.detail, request_id, &refusal.errors);
    let mut header = problem::header(refusal.status, body.len(), request_id, &refusal.headers)?;
    tls_headers(&mut header, hsts)?;
    Ok((header, body))
}

/// What Pingora answered before the gateway saw the request: 400 to a head it cannot parse,
/// 405 to `CONNECT` (`stream::client` replaces only those two).
fn early_refusal(status: u16) -> Refusal {
    match status {
        405 => Refusal::new(405, "method_not_allowed", "this method is not allowed"),
        _ => Refusal::bad_request(
            "malformed_request",
            "the request could not be parsed as HTTP",
        ),
    }
}

/// The answer to a failure to proxy, by the status `upstream::failure_status` chose; `None`
/// when the client is gone and nothing can be sent.
fn failure_refusal(status: u16) -> Option<Refusal> {
    Some(match status {
        0 => return None,
        502 => Refusal::new(
            502,
            "upstream_error",
            "the upstream could not be reached or answered badly",
        ),
        503 => Refusal::new(
            503,
            "no_healthy_target",
            "no healthy upstream target is available",
        ),
        504 => Refusal::new(
            504,
            "upstream_timeout",
            "the upstream did not answer in time",
        ),
        // A chunked body over the route's limit, as it streamed.
        413 => Refusal::invalid(
            413,
            "body_too_large",
            "the request body is larger than this route allows",
        ),
        // The head was read before any upstream work: only a body can time out.
        408 => Refusal::invalid(408, "body_timeout", "the request was not received in time"),
        400 => Refusal::bad_request("error", "the request could not be read"),
        _ => Refusal::new(status, "error", "the request could not be completed"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Family;

    #[test]
    fn each_proxy_failure_has_one_answer() {
        let cases = [
            (502, "upstream_error", Family::Unclassified),
            (503, "no_healthy_target", Family::Unclassified),
            (504, "upstream_timeout", Family::Unclassified),
            (413, "body_too_large", Family::Validation),
            (408, "body_timeout", Family::Validation),
            (400, "error", Family::Validation),
            (500, "error", Family::Unclassified),
        ];
        for (status, reason, family) in cases {
            let r = failure_refusal(status).unwrap();
            assert_eq!((r.status, r.reason, r.family), (status, reason, family));
            assert!(!r.detail.is_empty());
        }
        assert!(failure_refusal(0).is_none());
    }

    #[test]
    fn early_answers_are_a_parse_failure_or_connect() {
        let r = early_refusal(400);
        assert_eq!((r.status, r.reason), (400, "malformed_request"));
        assert_eq!(r.family, Family::Validation);
        let r = early_refusal(405);
        assert_eq!((r.status, r.reason), (405, "method_not_allowed"));
        assert_eq!(r.family, Family::Unclassified);
    }

    #[test]
    fn problem_responses_carry_the_hsts_they_are_given() {
        let refusal = Refusal::forbidden("ip_denied", "no").with_header("Retry-After", "1");
        let (plain, body) = problem_response(&refusal, "id-1", None).unwrap();
        assert!(plain.headers.get("strict-transport-security").is_none());
        assert_eq!(plain.headers["retry-after"], "1");
        assert_eq!(plain.headers["x-request-id"], "id-1");
        assert_eq!(
            plain.headers["content-length"].to_str().unwrap(),
            body.len().to_string()
        );
        let hsts = "max-age=60; includeSubDomains";
        let (tls, _) = problem_response(&refusal, "id-1", Some(hsts)).unwrap();
        assert_eq!(tls.headers["strict-transport-security"], hsts);
    }
}
