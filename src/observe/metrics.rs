//! Prometheus metrics of SPEC §5, registered once in the gateway's own registry (with process
//! metrics), and the small HTTP app that serves them on the metrics listener.

use crate::problem::{Family, Refusal};
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub upstream_duration_seconds: HistogramVec,
    pub auth_failures_total: IntCounterVec,
    pub authz_denials_total: IntCounterVec,
    pub rate_limited_total: IntCounterVec,
    pub validation_rejections_total: IntCounterVec,
    pub threats_total: IntCounterVec,
    pub cors_preflights_total: IntCounterVec,
    pub upstream_errors_masked_total: IntCounterVec,
    pub websocket_tunnels: IntGaugeVec,
    pub grpc_requests_total: IntCounterVec,
    pub api_key_requests_total: IntCounterVec,
    pub websocket_closed_total: IntCounterVec,
    pub upstream_connections_total: IntCounterVec,
    pub upstream_target_healthy: IntGaugeVec,
    pub inflight_requests: IntGauge,
    pub build_info: IntGaugeVec,
    pub config_info: IntGaugeVec,
    pub refusals_total: IntCounterVec,
    pub access_log_dropped_total: prometheus::IntCounter,
    pub rate_limit_store_errors_total: prometheus::IntCounter,
    pub jwks_refresh_failures_total: IntCounterVec,
    pub tls_handshake_failures_total: IntCounterVec,
    /// The four families of token introspection, handed to each provider.
    pub introspection: IntrospectionMetrics,
}

/// The families of token introspection, handed to each provider (`install_metrics`).
#[derive(Clone)]
pub struct IntrospectionMetrics {
    /// `{provider, result}`: active, inactive (any refusal), error.
    pub calls: prometheus::IntCounterVec,
    /// `{provider, result}`: hit, negative_hit, miss.
    pub cache: prometheus::IntCounterVec,
    /// `{provider, reason}`: timeout, connect, exchange, status, response.
    pub errors: prometheus::IntCounterVec,
    /// `{provider}`: the time of each call.
    pub seconds: prometheus::HistogramVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let metrics = Metrics {
            requests_total: counter(
                "portcullis_requests_total",
                "Requests answered, by route, method and status.",
                &["route", "method", "status"],
            )?,
            request_duration_seconds: histogram(
                "portcullis_request_duration_seconds",
                "Time from request to the end of the response.",
                &["route"],
            )?,
            upstream_duration_seconds: histogram(
                "portcullis_upstream_duration_seconds",
                "Time from choosing an upstream to its response header.",
                &["upstream"],
            )?,
            auth_failures_total: counter(
                "portcullis_auth_failures_total",
                "Failed authentications.",
                &["route", "reason"],
            )?,
            authz_denials_total: counter(
                "portcullis_authz_denials_total",
                "Requests denied by authorization or IP rules.",
                &["route", "reason"],
            )?,
            rate_limited_total: counter(
                "portcullis_rate_limited_total",
                "Requests refused by rate limits.",
                &["route", "key"],
            )?,
            validation_rejections_total: counter(
                "portcullis_validation_rejections_total",
                "Requests refused by size, framing, path or body validation.",
                &["route", "reason"],
            )?,
            threats_total: counter(
                "portcullis_threats_total",
                "Threats detected.",
                &["route", "kind", "action"],
            )?,
            cors_preflights_total: counter(
                "portcullis_cors_preflights_total",
                "CORS preflights answered, by route and result (allowed, or what was refused).",
                &["route", "result"],
            )?,
            upstream_errors_masked_total: counter(
                "portcullis_upstream_errors_masked_total",
                "Upstream 5xx answers whose body was replaced by problem+json (upstream_errors = \"mask\").",
                &["route", "status"],
            )?,
            websocket_tunnels: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "portcullis_websocket_tunnels",
                        "WebSocket tunnels open now, by route.",
                    ),
                    &["route"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            grpc_requests_total: counter(
                "portcullis_grpc_requests_total",
                "gRPC calls by route, service, method and grpc-status (the upstream's, or the gateway's for a refusal).",
                &["route", "service", "method", "grpc_status"],
            )?,
            api_key_requests_total: counter(
                "portcullis_api_key_requests_total",
                "Requests authenticated by a labelled API key, by route and key label (never the key).",
                &["route", "label"],
            )?,
            websocket_closed_total: counter(
                "portcullis_websocket_closed_total",
                "WebSocket tunnels closed, by route and reason (client, upstream, idle, lifetime, message_too_big, protocol_error, shutdown, disconnected).",
                &["route", "reason"],
            )?,
            upstream_connections_total: counter(
                "portcullis_upstream_connections_total",
                "Upstream connections used, new or reused from the pool.",
                &["upstream", "reused"],
            )?,
            refusals_total: counter(
                "portcullis_refusals_total",
                "Requests refused by the gateway, by route and reason.",
                &["route", "reason"],
            )?,
            upstream_target_healthy: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "portcullis_upstream_target_healthy",
                        "1 when the target passes its health check.",
                    ),
                    &["upstream", "target"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            inflight_requests: {
                let g = IntGauge::new("portcullis_inflight_requests", "Requests in progress.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            build_info: {
                let g = IntGaugeVec::new(
                    Opts::new("portcullis_build_info", "Build information; always 1."),
                    &["version"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            config_info: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "portcullis_config_info",
                        "The running configuration (SHA-256 of its file); always 1.",
                    ),
                    &["sha256"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            jwks_refresh_failures_total: counter(
                "portcullis_jwks_refresh_failures_total",
                "Failed fetches of a JWKS document.",
                &["provider"],
            )?,
            tls_handshake_failures_total: counter(
                "portcullis_tls_handshake_failures_total",
                "Failed TLS handshakes on the listeners, by reason.",
                &["reason"],
            )?,
            introspection: IntrospectionMetrics {
                calls: counter(
                    "portcullis_introspection_calls_total",
                    "Calls to a token introspection endpoint, by provider and result (active, inactive, error).",
                    &["provider", "result"],
                )?,
                cache: counter(
                    "portcullis_introspection_cache_total",
                    "Introspection cache lookups, by provider and result (hit, negative_hit, miss).",
                    &["provider", "result"],
                )?,
                errors: counter(
                    "portcullis_introspection_errors_total",
                    "Introspection calls without a usable answer, by provider and reason.",
                    &["provider", "reason"],
                )?,
                seconds: histogram(
                    "portcullis_introspection_duration_seconds",
                    "Time of each call to a token introspection endpoint.",
                    &["provider"],
                )?,
            },
            rate_limit_store_errors_total: {
                let c = prometheus::IntCounter::new(
                    "portcullis_rate_limit_store_errors_total",
                    "Failed exchanges with the shared rate-limit store.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            access_log_dropped_total: {
                let c = prometheus::IntCounter::new(
                    "portcullis_access_log_dropped_total",
                    "Access log lines dropped because the writer fell behind.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(SelfProcess::new()))?;
        Ok(metrics)
    }

    /// Count a refusal: `portcullis_refusals_total`, and the family the refusal names.
    pub fn count_refusal(&self, route: &str, refusal: &Refusal) {
        let reason = refusal.reason;
        self.refusals_total
            .with_label_values(&[route, reason])
            .inc();
        let by_reason = match &refusal.family {
            Family::Unclassified => None,
            Family::Authentication => Some(&self.auth_failures_total),
            Family::Authorization => Some(&self.authz_denials_total),
            Family::Validation | Family::Threat { .. } => Some(&self.validation_rejections_total),
            Family::Cors => {
                self.cors_preflights_total
                    .with_label_values(&[route, reason])
                    .inc();
                None
            }
            Family::RateLimited { key } => {
                self.rate_limited_total
                    .with_label_values(&[route, key])
                    .inc();
                None
            }
        };
        if let Some(counter) = by_reason {
            counter.with_label_values(&[route, reason]).inc();
        }
        self.count_threats(route, refusal, "block");
    }

    /// Count a threat that `detect` mode forwarded: only `portcullis_threats_total`, from the
    /// refusal `block` mode would have answered.
    pub fn count_detected(&self, route: &str, refusal: &Refusal) {
        self.count_threats(route, refusal, "detect");
    }

    fn count_threats(&self, route: &str, refusal: &Refusal, action: &str) {
        if let Family::Threat { kinds } = &refusal.family {
            for kind in kinds {
                self.threats_total
                    .with_label_values(&[route, kind, action])
                    .inc();
            }
        }
    }

    /// The name of every metric family this registry exports (without histogram suffixes).
    pub fn family_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: Vec<&dyn Collector> = vec![
            &self.requests_total,
            &self.request_duration_seconds,
            &self.upstream_duration_seconds,
            &self.auth_failures_total,
            &self.authz_denials_total,
            &self.rate_limited_total,
            &self.validation_rejections_total,
            &self.threats_total,
            &self.cors_preflights_total,
            &self.upstream_errors_masked_total,
            &self.websocket_tunnels,
            &self.grpc_requests_total,
            &self.api_key_requests_total,
            &self.websocket_closed_total,
            &self.upstream_connections_total,
            &self.upstream_target_healthy,
            &self.inflight_requests,
            &self.build_info,
            &self.config_info,
            &self.refusals_total,
            &self.access_log_dropped_total,
            &self.rate_limit_store_errors_total,
            &self.jwks_refresh_failures_total,
            &self.tls_handshake_failures_total,
            &self.introspection.calls,
            &self.introspection.cache,
            &self.introspection.errors,
            &self.introspection.seconds,
        ];
        collectors
            .into_iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| d.fq_name.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Process metrics (CPU, memory, open fds) of the process that is serving the scrape.
/// `ProcessCollector::for_self` remembers the pid it was made in, which is wrong after
/// Pingora forks into a daemon; this asks for the current pid at every scrape.
#[cfg(target_os = "linux")]
struct SelfProcess {
    descs: Vec<prometheus::core::Desc>,
}

#[cfg(target_os = "linux")]
impl SelfProcess {
    fn new() -> Self {
        use prometheus::core::Collector;
        let template = prometheus::process_collector::ProcessCollector::for_self();
        SelfProcess {
            descs: template.desc().into_iter().cloned().collect(),
        }
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for SelfProcess {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        prometheus::process_collector::ProcessCollector::for_self().collect()
    }
}

/// Bounded `method` label: the standard methods by name, anything else as `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `GET /metrics` in the Prometheus text format; anything else is 404.
/// What `/readyz` answers: the status and a JSON body (`crate::health` decides it).
pub trait Ready: Send + Sync {
    fn answer(&self) -> (u16, Vec<u8>);
}

pub struct MetricsApp {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<dyn Ready>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let readable = req.method == http::Method::GET || req.method == http::Method::HEAD;
        let path = req.uri.path();
        let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
        let (status, content_type, body) = match path {
            _ if !known => {
                let detail = "the metrics listener serves /metrics, /healthz and /readyz";
                let body = crate::problem::body(404, detail, "", &[]);
                (404, "application/problem+json", body.to_vec())
            }
            _ if !readable => {
                let body = crate::problem::body(405, "use GET or HEAD", "", &[]);
                (405, "application/problem+json", body.to_vec())
            }
            "/metrics" => (200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => (200, "application/json", br#"{"status":"alive"}"#.to_vec()),
            _ => {
                let (status, body) = self.readiness.answer();
                (status, "application/json", body)
            }
        };
        let mut response = Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .header("X-Content-Type-Options", "nosniff")
            .header("Cache-Control", "no-store");
        if status == 405 {
            response = response.header("Allow", "GET, HEAD");
        }
        response
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(counter: &IntCounterVec, labels: &[&str]) -> u64 {
        counter.with_label_values(labels).get()
    }

    #[test]
    fn a_refusal_is_counted_in_the_family_it_names() {
        let m = Metrics::new().unwrap();
        let r = |status, reason, family| Refusal::new(status, reason, "").in_family(family);
        m.count_refusal("api", &r(401, "no_credentials", Family::Authentication));
        m.count_refusal(
            "api",
            &r(429, "auth_failures_throttled", Family::Authentication),
        );
        m.count_refusal("api", &r(403, "ip_denied", Family::Authorization));
        m.count_refusal("api", &r(414, "uri_too_long", Family::Validation));
        m.count_refusal(
            "api",
            &r(429, "rate_limited", Family::RateLimited { key: "ip" }),
        );
        m.count_refusal("api", &r(503, "route_busy", Family::Unclassified));
        let threat = Family::Threat {
            kinds: vec!["sqli", "xss"],
        };
        m.count_refusal("api", &r(400, "threat_sqli", threat));

        assert_eq!(count(&m.auth_failures_total, &["api", "no_credentials"]), 1);
        assert_eq!(
            count(&m.auth_failures_total, &["api", "auth_failures_throttled"]),
            1
        );
        assert_eq!(count(&m.authz_denials_total, &["api", "ip_denied"]), 1);
        assert_eq!(
            count(&m.validation_rejections_total, &["api", "uri_too_long"]),
            1
        );
        assert_eq!(count(&m.rate_limited_total, &["api", "ip"]), 1);
        assert_eq!(
            count(&m.validation_rejections_total, &["api", "threat_sqli"]),
            1
        );
        assert_eq!(count(&m.threats_total, &["api", "sqli", "block"]), 1);
        assert_eq!(count(&m.threats_total, &["api", "xss", "block"]), 1);
        assert_eq!(count(&m.refusals_total, &["api", "route_busy"]), 1);
        // Nothing lands in a family it does not name.
        assert_eq!(
            count(&m.validation_rejections_total, &["api", "route_busy"]),
            0
        );
        assert_eq!(
            count(&m.validation_rejections_total, &["api", "rate_limited"]),
            0
        );
        assert_eq!(count(&m.auth_failures_total, &["api", "rate_limited"]), 0);
    }

    #[test]
    fn a_detected_threat_is_counted_as_detect_and_is_no_refusal() {
        let m = Metrics::new().unwrap();
        let would_refuse =
            Refusal::new(400, "threat_xss", "").in_family(Family::Threat { kinds: vec!["xss"] });
        m.count_detected("api", &would_refuse);
        assert_eq!(count(&m.threats_total, &["api", "xss", "detect"]), 1);
        assert_eq!(count(&m.threats_total, &["api", "xss", "block"]), 0);
        assert_eq!(count(&m.refusals_total, &["api", "threat_xss"]), 0);
        assert_eq!(
            count(&m.validation_rejections_total, &["api", "threat_xss"]),
            0
        );
    }
}
