//! The configuration file exactly as written: serde structs that mirror SPEC §2.
//! Nothing here is trusted yet; `config::compile` turns it into the validated model.
//! Every struct refuses unknown keys so that a typo never silently drops a setting.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub security: RawSecurity,
    pub rate_limit_store: Option<RawRateLimitStore>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub jwt_providers: Vec<RawJwtProvider>,
    #[serde(default)]
    pub consumers: Vec<RawConsumer>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub demo_echo: Option<RawDemoEcho>,
    pub waf: Option<RawWaf>,
    #[serde(default)]
    pub response: RawResponse,
    pub cors: Option<RawCors>,
}

/// `[cors]` (defaults), and a route's `cors = {…}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub credentials: Option<bool>,
    pub max_age: Option<String>,
}

/// A route's `cors = true | false | {…}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteCors {
    Enabled(bool),
    Settings(RawCors),
}

/// `[response]`, and a route's `response = {…}`: the headers of upstream responses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    pub nosniff: Option<bool>,
    pub no_store_authenticated: Option<bool>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `pass` (default) or `mask`: an upstream's 5xx body replaced by problem+json.
    pub upstream_errors: Option<String>,
    /// `[response]` only: `Strict-Transport-Security` on TLS listeners.
    pub hsts: Option<RawHsts>,
}

/// `hsts = false`, or `hsts = { max_age = "365d", include_subdomains = true, preload = false }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHsts {
    Enabled(bool),
    Settings(RawHstsSettings),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHstsSettings {
    pub max_age: Option<String>,
    pub include_subdomains: Option<bool>,
    pub preload: Option<bool>,
}

/// `[waf]`: the SecLang rules (the OWASP Core Rule Set) that threat protection runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaf {
    /// Files or globs, in load order (`crs-setup.conf` first, then `rules/*.conf`).
    #[serde(default)]
    pub rules: Vec<String>,
    pub paranoia_level: Option<i64>,
    pub anomaly_threshold: Option<i64>,
    pub max_body_bytes: Option<RawSize>,
    /// `refuse` (413) or `scan_prefix`.
    pub body_over_limit: Option<String>,
    #[serde(default)]
    pub exclude_rules: Vec<RawRuleIds>,
    #[serde(default)]
    pub exclude_targets: Vec<RawTargetExclusion>,
}

/// A route's own `waf = { … }`: overrides and extra exclusions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteWaf {
    pub paranoia_level: Option<i64>,
    pub anomaly_threshold: Option<i64>,
    #[serde(default)]
    pub exclude_rules: Vec<RawRuleIds>,
    #[serde(default)]
    pub exclude_targets: Vec<RawTargetExclusion>,
}

/// `942100` or `"942100-942999"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRuleIds {
    One(i64),
    Range(String),
}

/// `{ rule = 942100, target = "ARGS:password" }`: the rule(s) no longer look at that input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetExclusion {
    pub rule: RawRuleIds,
    pub target: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<i64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub grace_period: Option<String>,
    pub graceful_shutdown_timeout: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub trace_context: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub tls: Option<RawListenerTls>,
    /// Plain listeners: also accept HTTP/2 with prior knowledge (h2c).
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    pub crl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub access_log: Option<String>,
    #[serde(default)]
    pub redact_query_params: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub auth_failure_limit: Option<RawWindowLimit>,
    pub dpop_proof_lifetime: Option<String>,
    pub dpop_nonce: Option<bool>,
    pub dpop_nonce_secret_env: Option<String>,
    pub dpop_nonce_secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindowLimit {
    pub failures: i64,
    pub per: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitStore {
    pub redis: String,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub on_store_error: Option<String>,
}

/// A size: an integer number of bytes or a string such as "64KiB".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_uri_bytes: Option<RawSize>,
    pub max_header_bytes: Option<RawSize>,
    pub max_headers: Option<i64>,
    pub max_body_bytes: Option<RawSize>,
    pub max_json_depth: Option<i64>,
    pub body_read_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
}

/// `tls = false`, `tls = true`, or
/// `tls = { sni = "…", verify = true, ca_file = "…", client_cert = "…", client_key = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstreamTls {
    Enabled(bool),
    Settings(RawUpstreamTlsSettings),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTlsSettings {
    pub sni: Option<String>,
    pub verify: Option<bool>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub targets: Vec<String>,
    pub tls: Option<RawUpstreamTls>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub max_inflight: Option<i64>,
    /// `http1` (default), `h2` (over TLS, by ALPN) or `h2c` (plain, prior knowledge).
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtProvider {
    pub name: String,
    /// `jwt` (the default) or `introspection`.
    pub kind: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub cache_ttl: Option<String>,
    pub negative_cache_ttl: Option<String>,
    pub timeout: Option<String>,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub discovery: Option<String>,
    pub jwks_refresh: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub leeway: Option<String>,
    pub consumer_claim: Option<String>,
    pub scopes_claim: Option<String>,
    pub token_cache: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub id: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    #[serde(default)]
    pub mtls_subjects: Vec<String>,
}

/// `"sha256:…"`, or `{ hash = "sha256:…", label = "ci-2027", not_after = "2027-06-30" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawApiKey {
    Hash(String),
    Entry(RawApiKeyEntry),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyEntry {
    pub hash: String,
    pub label: Option<String>,
    pub not_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub consumers: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitPolicy {
    pub requests: i64,
    pub per: String,
    pub key: Option<String>,
}

/// `rate_limit = { … }` or `rate_limit = [{ … }, { … }]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRateLimit {
    One(RawRateLimitPolicy),
    Many(Vec<RawRateLimitPolicy>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidate {
    #[serde(default)]
    pub content_types: Vec<String>,
    pub json_schema: Option<String>,
    pub max_body_bytes: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub auth: Vec<String>,
    #[serde(default)]
    pub public: bool,
    pub keep_credentials: Option<bool>,
    pub sender_constrained: Option<bool>,
    pub allow: Option<RawAllow>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub ip_deny: Vec<String>,
    pub rate_limit: Option<RawRateLimit>,
    pub max_inflight: Option<i64>,
    pub validate: Option<RawValidate>,
    pub threat_protection: Option<String>,
    pub waf: Option<RawRouteWaf>,
    pub limits: Option<RawRouteLimits>,
    pub response: Option<RawResponse>,
    pub cors: Option<RawRouteCors>,
    pub websocket: Option<RawRouteWebSocket>,
}

/// A route's `websocket = true | false | { idle_timeout, max_lifetime, max_message_bytes }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteWebSocket {
    Enabled(bool),
    Settings(RawWebSocket),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub idle_timeout: Option<String>,
    pub max_lifetime: Option<String>,
    pub max_message_bytes: Option<RawSize>,
}

/// Per-route overrides of `[limits]` that can apply once the route is known.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub max_body_bytes: Option<RawSize>,
}

/// The built-in demo upstream: an echo server so that the default config needs no other program.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemoEcho {
    pub address: String,
}
