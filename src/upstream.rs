//! Upstreams: round robin over healthy targets, active HTTP health checks run as Pingora
//! background services (whose health flips set the flags the round robin reads), peers carrying the configured timeouts (so Pingora's connection pool
//! reuses them), and the mapping of upstream failures to 502 / 503 / 504.

use crate::checks::rate_limit::ConcurrencyCap;
use crate::config::model::{HealthCheck, Upstream, UpstreamTls};
use crate::observe::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::services::background::{background_service, GenBackgroundService};
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{
    HealthCheck as TargetCheck, HealthObserve, HttpHealthCheck,
};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Pingora's balancer, kept for what it runs: the health checks. Targets are chosen by `Pool`.
pub type Balancer = LoadBalancer<RoundRobin>;

struct Pool {
    config: Upstream,
    /// One flag per target of `config.targets`: healthy until a health check says otherwise.
    healthy: Arc<[AtomicBool]>,
    /// The round robin's counter.
    next: AtomicUsize,
    cap: Option<ConcurrencyCap>,
}

/// All upstreams, indexed like `Config::upstreams`.
pub struct Upstreams {
    pools: Vec<Pool>,
}

/// When a health check flips a target: its flag for the round robin, the gauge
/// `portcullis_upstream_target_healthy` and a log line.
struct HealthGauge {
    metrics: Arc<Metrics>,
    upstream: String,
    targets: Vec<SocketAddr>,
    healthy: Arc<[AtomicBool]>,
}

#[async_trait]
impl HealthObserve for HealthGauge {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if let Some(i) = target
            .addr
            .as_inet()
            .and_then(|addr| self.targets.iter().position(|t| t == addr))
        {
            if let Some(flag) = self.healthy.get(i) {
                flag.store(healthy, Ordering::Relaxed);
            }
        }
        let addr = target.addr.to_string();
        if healthy {
            log::info!("upstream {} target {addr} is healthy again", self.upstream);
        } else {
            log::warn!(
                "upstream {} target {addr} failed its health check",
                self.upstream
            );
        }
        self.metrics
            .upstream_target_healthy
            .with_label_values(&[self.upstream.as_str(), addr.as_str()])
            .set(i64::from(healthy));
    }
}

/// Applies an upstream's TLS settings for one target to a peer: the target's name is sent as
/// SNI and, with `verify`, checked against the certificate. Pingora turns verification off
/// for an empty SNI, so compile refuses `verify` without a name.
fn apply_tls(peer: &mut HttpPeer, tls: &UpstreamTls, name: &str) {
    peer.sni = name.to_string();
    peer.options.verify_cert = tls.verify;
    peer.options.verify_hostname = tls.verify;
    peer.options.ca = tls.ca.clone();
    peer.client_cert_key = tls.client_cert.clone();
}

/// The TLS name of a target: the SNI it gets and the name its certificate must carry.
fn tls_name(upstream: &Upstream, target: SocketAddr) -> &str {
    let tls = upstream.tls.as_ref();
    upstream
        .targets
        .iter()
        .position(|t| *t == target)
        .and_then(|i| tls.and_then(|t| t.names.get(i)))
        .map_or("", String::as_str)
}

/// Health checks per target, each with that target's TLS name (targets of one upstream may
/// be different hosts with different certificates).
struct TargetHealthChecks {
    checks: Vec<(SocketAddr, HttpHealthCheck)>,
    /// Consecutive successes and failures that flip a target's health.
    thresholds: (usize, usize),
    gauge: HealthGauge,
}

#[async_trait]
impl TargetCheck for TargetHealthChecks {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        let check = target
            .addr
            .as_inet()
            .and_then(|addr| self.checks.iter().find(|(a, _)| a == addr));
        match check {
            Some((_, check)) => check.check(target).await,
            None => Error::e_explain(ErrorType::InternalError, "target has no health check"),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.gauge.observe(target, healthy).await;
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.thresholds.0
        } else {
            self.thresholds.1
        }
    }
}

fn health_checks(
    upstream: &Upstream,
    hc: &HealthCheck,
    metrics: &Arc<Metrics>,
    healthy: &Arc<[AtomicBool]>,
) -> Result<TargetHealthChecks, String> {
    let mut checks = Vec::with_capacity(upstream.targets.len());
    for target in &upstream.targets {
        let name = tls_name(upstream, *target);
        let host = if name.is_empty() {
            upstream.name.as_str()
        } else {
            name
        };
        let mut check = HttpHealthCheck::new(host, upstream.tls.is_some());
        let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)
            .map_err(|e| format!("health check path {:?}: {e}", hc.path))?;
        req.insert_header("Host", host)
            .and_then(|_| req.insert_header("User-Agent", "portcullis-health-check"))
            .map_err(|e| format!("health check request: {e}"))?;
        check.req = req;
        let options = &mut check.peer_template.options;
        options.connection_timeout = Some(hc.timeout.min(upstream.connect_timeout));
        options.read_timeout = Some(hc.timeout);
        if let Some(tls) = &upstream.tls {
            apply_tls(&mut check.peer_template, tls, name);
        }
        if upstream.http2 {
            http2_only(&mut check.peer_template);
        }
        checks.push((*target, check));
    }
    Ok(TargetHealthChecks {
        checks,
        thresholds: (hc.healthy_threshold, hc.unhealthy_threshold),
        gauge: HealthGauge {
            metrics: metrics.clone(),
            upstream: upstream.name.clone(),
            targets: upstream.targets.clone(),
            healthy: healthy.clone(),
        },
    })
}

impl Upstreams {
    /// Build the balancers; returns the health-check services to add to the server.
    pub fn build(
        configs: &[Upstream],
        metrics: &Arc<Metrics>,
    ) -> Result<(Self, Vec<GenBackgroundService<Balancer>>), String> {
        let mut pools = Vec::with_capacity(configs.len());
        let mut services = Vec::new();
        for upstream in configs {
            let mut balancer = Balancer::try_from_iter(upstream.targets.iter().copied())
                .map_err(|e| format!("upstream {:?}: {e}", upstream.name))?;
            for target in &upstream.targets {
                metrics
                    .upstream_target_healthy
                    .with_label_values(&[upstream.name.as_str(), target.to_string().as_str()])
                    .set(1);
            }
            let healthy: Arc<[AtomicBool]> = upstream
                .targets
                .iter()
                .map(|_| AtomicBool::new(true))
                .collect();
            if let Some(hc) = &upstream.health_check {
                balancer
                    .set_health_check(Box::new(health_checks(upstream, hc, metrics, &healthy)?));
                balancer.health_check_frequency = Some(hc.interval);
                balancer.parallel_health_check = true;
                services.push(background_service(
                    &format!("health check {}", upstream.name),
                    balancer,
                ));
            }
            pools.push(Pool {
                config: upstream.clone(),
                healthy,
                next: AtomicUsize::new(0),
                cap: upstream.max_inflight.map(ConcurrencyCap::new),
            });
        }
        Ok((Upstreams { pools }, services))
    }

    pub fn name(&self, index: usize) -> &str {
        &self.pools[index].config.name
    }

    /// The upstream's concurrency cap, if it has one.
    pub fn cap(&self, index: usize) -> Option<&ConcurrencyCap> {
        self.pools[index].cap.as_ref()
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// How many of the upstream's targets the health checks count as healthy now.
    pub fn healthy_count(&self, index: usize) -> usize {
        self.pools[index]
            .healthy
            .iter()
            .filter(|flag| flag.load(Ordering::Relaxed))
            .count()
    }

    pub fn target_count(&self, index: usize) -> usize {
        self.pools[index].config.targets.len()
    }

    /// The next healthy target in round-robin order that this request has not tried yet.
    pub fn select(&self, index: usize, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let pool = &self.pools[index];
        let targets = &pool.config.targets;
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        (0..targets.len())
            .map(|k| start.wrapping_add(k) % targets.len())
            .find(|&i| {
                pool.healthy
                    .get(i)
                    .is_some_and(|flag| flag.load(Ordering::Relaxed))
                    && !tried.contains(&targets[i])
            })
            .map(|i| targets[i])
    }

    /// The peer for a target, with the upstream's timeouts and TLS settings.
    pub fn peer(&self, index: usize, target: SocketAddr) -> HttpPeer {
        let config = &self.pools[index].config;
        let mut peer = HttpPeer::new(target, config.tls.is_some(), String::new());
        if let Some(tls) = &config.tls {
            apply_tls(&mut peer, tls, tls_name(config, target));
        }
        // Pingora's pool key covers the address, SNI, verification flags and client
        // certificate, but not the CAs: without this, a connection verified against one
        // upstream's `ca_file` could be reused by another upstream of the same address that
        // trusts other CAs.
        peer.group_key = index as u64;
        let options = &mut peer.options;
        options.connection_timeout = Some(config.connect_timeout);
        options.read_timeout = Some(config.read_timeout);
        options.write_timeout = Some(config.write_timeout);
        options.idle_timeout = Some(config.idle_timeout);
        // Protocol upgrades (WebSocket, h2c) are not forwarded: a tunnel would bypass every check.
        options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        if config.http2 {
            http2_only(&mut peer);
        }
        peer
    }
}

/// HTTP/2 only (`protocol = "h2"` or `"h2c"`): over TLS ALPN must choose h2; in plain text
/// the upstream is spoken to with prior knowledge. One connection carries up to 100 streams.
fn http2_only(peer: &mut HttpPeer) {
    peer.options.set_http_version(2, 2);
    peer.options.max_h2_streams = MAX_H2_STREAMS;
}

/// Concurrent requests on one HTTP/2 connection to an upstream.
const MAX_H2_STREAMS: usize = 100;

/// Let a WebSocket upgrade through to `peer` (Pingora forwards a valid one, normalised, and
/// carries the tunnel). Its reads wait up to the tunnel's idle timeout, plus the time a client
/// gets to finish a frame when the gateway closes: the tunnel times idleness itself and closes
/// with 1001 first.
pub fn tunnel_peer(peer: &mut HttpPeer, idle_timeout: std::time::Duration) {
    peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::standard();
    peer.options.read_timeout = Some(idle_timeout + std::time::Duration::from_secs(6));
}

/// The status a client gets for a failure to proxy, and whether a response can still be sent.
pub fn failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout
            if e.esource() != &ErrorSource::Downstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                // Gone: the connection failed, or (HTTP/2) the client reset or closed its
                // stream, which Pingora reports as a downstream H2Error.
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error => 0,
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Whether a failed connection attempt may go to another target: nothing was sent yet.
pub fn connect_retryable(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn each_failure_has_its_status() {
        use ErrorSource::{Downstream, Internal, Upstream};
        let cases = [
            (ErrorType::HTTPStatus(413), Internal, 413),
            (ErrorType::ConnectTimedout, Upstream, 504),
            (ErrorType::ReadTimedout, Upstream, 504),
            (ErrorType::ConnectRefused, Upstream, 502),
            (ErrorType::InvalidHTTPHeader, Upstream, 502),
            (ErrorType::ReadTimedout, Downstream, 408),
            (ErrorType::ConnectionClosed, Downstream, 0),
            (ErrorType::WriteError, Downstream, 0),
            (ErrorType::H2Error, Downstream, 0),
            (ErrorType::H2Error, Upstream, 502),
            (ErrorType::InvalidHTTPHeader, Downstream, 400),
            (ErrorType::InternalError, Internal, 500),
        ];
        for (etype, source, status) in cases {
            let e = error(etype.clone(), source.clone());
            assert_eq!(failure_status(&e), status, "{etype:?} from {source:?}");
        }
    }

    #[test]
    fn only_failures_before_anything_was_sent_are_retried() {
        assert!(connect_retryable(&error(
            ErrorType::ConnectRefused,
            ErrorSource::Upstream
        )));
        assert!(connect_retryable(&error(
            ErrorType::TLSHandshakeFailure,
            ErrorSource::Upstream
        )));
        assert!(!connect_retryable(&error(
            ErrorType::ReadTimedout,
            ErrorSource::Upstream
        )));
        assert!(!connect_retryable(&error(
            ErrorType::HTTPStatus(502),
            ErrorSource::Upstream
        )));
    }
}
