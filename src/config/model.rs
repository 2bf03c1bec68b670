//! The validated, immutable configuration that the gateway runs on. It is built once by
//! `config::compile`; a request only ever reads it.

use crate::checks::auth::api_key::ApiKeyIndex;
use crate::checks::auth::jwt::JwtProvider;
use crate::checks::auth::mtls::{matches, MtlsSubject, PeerCert};
use crate::checks::body::BodyRules;
use crate::checks::ip::CidrSet;
use crate::checks::rate_limit::{ConcurrencyCap, RateLimits};
use crate::checks::route::RouteTable;
use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::CertKey;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    /// The file this was loaded from, for messages.
    pub source: PathBuf,
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
    /// `[waf]`: the rule set threat protection runs (`None`: the built-in detector).
    pub waf: Option<super::waf::WafDefaults>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `redis://` or `rediss://` (TLS) URL as written; show it only through `shown()`.
    pub redis: String,
    /// From `password_env` / `password_file`; overrides a password in the URL.
    pub password: Option<String>,
    /// `ca_file` (PEM): the CAs that may sign the store's certificate instead of the system's.
    pub ca: Option<Vec<u8>>,
    pub on_store_error: crate::checks::rate_limit::shared::OnStoreError,
}

impl StoreSettings {
    /// The URL for messages and logs: userinfo hidden.
    pub fn shown(&self) -> String {
        super::secret::redact_url(&self.redis)
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("redis", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca", &self.ca.is_some())
            .field("on_store_error", &self.on_store_error)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    pub failures: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub id: String,
    pub groups: Vec<String>,
    pub mtls_subjects: Vec<MtlsSubject>,
}

/// Everyone who can authenticate, and how: consumers, their key hashes, the JWT providers.
#[derive(Debug, Default)]
pub struct Identities {
    pub consumers: Vec<Consumer>,
    pub by_id: HashMap<String, usize>,
    pub api_keys: ApiKeyIndex,
    pub jwt_providers: Vec<JwtProvider>,
}

impl Identities {
    pub fn consumer_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn consumer_for_cert(&self, cert: &PeerCert) -> Option<usize> {
        self.consumers
            .iter()
            .position(|c| c.mtls_subjects.iter().any(|s| matches(s, cert)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Index into `Identities::jwt_providers`.
    Jwt(usize),
    ApiKey,
    Mtls,
}

/// A route's `allow` rule (see `checks::acl`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    pub any_consumer: bool,
    pub consumers: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug)]
pub struct ServerSettings {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub trusted_proxies: CidrSet,
}

#[derive(Debug)]
pub struct Listener {
    pub address: String,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a client certificate signed by this CA is required (mTLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug)]
pub struct MetricsSettings {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug)]
pub struct LoggingSettings {
    pub access_log: AccessLogTarget,
    /// Lower-cased query parameter names whose values are replaced by `REDACTED`.
    pub redact_query_params: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_json_depth: usize,
    /// Longest wait for the next piece of a body that is read for validation.
    pub body_read_timeout: Duration,
    /// Longest time a client may take to send a whole request head (zero: no limit).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri_bytes: 8192,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_json_depth: 32,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
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
}

/// `threat_protection` of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreatMode {
    Block,
    Detect,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lower-cased host names; `*.example.com` matches one or more labels before it.
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// `None`: any method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub strip_prefix: bool,
    pub public: bool,
    /// Accepted methods, any one suffices; empty on a public route.
    pub auth: Vec<AuthMethod>,
    pub allow: Option<Allow>,
    pub keep_credentials: bool,
    pub ip_allow: CidrSet,
    pub ip_deny: CidrSet,
    pub max_body_bytes: u64,
    pub threat_protection: ThreatMode,
    /// The rules of `[waf]` as this route runs them; `None` without `[waf]` or when
    /// `threat_protection = "off"`.
    pub waf: Option<Arc<crate::checks::waf::WafPolicy>>,
    /// `rate_limit` policies; all must allow a request.
    pub rate_limits: Arc<RateLimits>,
    /// `max_inflight`: concurrent requests on this route.
    pub max_inflight: Option<Arc<ConcurrencyCap>>,
    /// `validate`: the body is read, checked and replayed before the upstream is chosen.
    pub body: Option<BodyRules>,
}

impl Route {
    /// A public route with no restrictions, for building tables in tests and benchmarks.
    pub fn public(name: &str, path: PathMatch, upstream: usize) -> Self {
        Route {
            name: name.to_string(),
            hosts: Vec::new(),
            path,
            methods: None,
            upstream,
            strip_prefix: false,
            public: true,
            auth: Vec::new(),
            allow: None,
            keep_credentials: false,
            ip_allow: CidrSet::default(),
            ip_deny: CidrSet::default(),
            max_body_bytes: Limits::default().max_body_bytes,
            body: None,
            threat_protection: ThreatMode::Block,
            waf: None,
            rate_limits: Arc::new(RateLimits::default()),
            max_inflight: None,
        }
    }
}
