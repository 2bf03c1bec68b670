//! The validated, immutable configuration that the gateway runs on. It is built once by
//! `config::compile`; a request only ever reads it.

// The check types a config compiles into belong to the checks, which never import this module;
// `config::compile` imports them from their checks.
use crate::checks::auth::Identities;
use crate::checks::ip::CidrSet;
use crate::checks::limits::Limits;
use crate::checks::rate_limit::shared::StoreSettings;
use crate::checks::route::RouteTable;
use crate::checks::threat::rules::OverLimit;
use crate::observe::access_log::AccessLogTarget;
use crate::request::trace::TraceTrust;
use crate::waf::ruleset::RuleSet;
use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::CertKey;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    /// The file this was loaded from, for messages.
    pub source: PathBuf,
    /// SHA-256 of the file's text (hex): `portcullis_config_info{sha256}` and `/readyz` name
    /// the running configuration with it.
    pub sha256: String,
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub metrics: Option<MetricsSettings>,
    pub logging: LoggingSettings,
    pub limits: Limits,
    pub upstreams: Vec<Upstream>,
    pub routes: RouteTable,
    pub identities: Identities,
    /// `[security] auth_failure_limit`: failed authentications per client IP per window.
    pub auth_failure_limit: Option<FailureLimit>,
    pub demo_echo: Option<String>,
    /// `[rate_limit_store]`: limits shared by every instance through Redis.
    pub rate_limit_store: Option<StoreSettings>,
    /// The rule set threat protection runs: `[waf]`, or the built-in rules (`None` only after
    /// an error).
    pub waf: Option<WafDefaults>,
    /// `Strict-Transport-Security` on every answer of a TLS listener (`[response] hsts`);
    /// `None` with `hsts = false`.
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    pub failures: u32,
    pub per: Duration,
}

#[derive(Debug)]
pub struct ServerSettings {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub trusted_proxies: CidrSet,
    /// Whose `traceparent` is kept (`server.trace_context`).
    pub trace_from: TraceTrust,
}

#[derive(Debug)]
pub struct Listener {
    pub address: String,
    pub tls: Option<ListenerTls>,
    /// Plain HTTP/2 with prior knowledge is accepted beside HTTP/1.
    pub h2c: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a client certificate signed by this CA is required (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) the client certificate is checked against.
    pub crl: Option<PathBuf>,
}

#[derive(Debug)]
pub struct MetricsSettings {
    pub address: String,
}

#[derive(Debug)]
pub struct LoggingSettings {
    pub access_log: AccessLogTarget,
    /// Lower-cased query parameter names whose values are replaced by `REDACTED`.
    pub redact_query_params: HashSet<String>,
}

/// TLS towards an upstream. Verification never depends on an optional key: with `verify`
/// on, each target's name (`sni`, else the host name it was written with) is both sent as SNI
/// and checked against its certificate.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Per target, in the order of `Upstream::targets`: the SNI sent and, with `verify`, the
    /// name the certificate must carry. Empty only with `verify = false` and an IP target.
    pub names: Vec<String>,
    pub verify: bool,
    /// `ca_file`: the CAs that may sign the upstream's certificate instead of the system's.
    pub ca: Option<Arc<CaType>>,
    /// `client_cert` / `client_key`: the certificate presented to the upstream (mTLS).
    pub client_cert: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("names", &self.names)
            .field("verify", &self.verify)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<SocketAddr>,
    pub tls: Option<UpstreamTls>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// Concurrent requests to this upstream, over all routes.
    pub max_inflight: Option<u32>,
    /// Whether requests go over HTTP/2 (`protocol = "h2"` with TLS, `"h2c"` without).
    pub http2: bool,
}

/// `[waf]` compiled, or the built-in rules without it: the shared rule set and the defaults of
/// every route.
#[derive(Debug, Clone)]
pub struct WafDefaults {
    pub rules: Arc<RuleSet>,
    pub source: RuleSource,
    pub paranoia_level: u8,
    pub anomaly_threshold: i64,
    pub max_body_bytes: usize,
    pub over_limit: OverLimit,
    pub removed_ids: Vec<(u64, u64)>,
    pub removed_targets: Vec<((u64, u64), String)>,
}

/// Where a gateway's threat-protection rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// No `[waf]`: the rules compiled into the binary (`portcullis rules --print`).
    Builtin,
    /// `[waf] rules`, each glob expanded, in order.
    Files(Vec<PathBuf>),
}
