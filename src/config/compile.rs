//! Raw configuration → validated model. Every problem is collected (not just the first), and
//! each names its key path and the fix. Files a setting points at (keys, certificates, JWKS,
//! schemas) are read and checked here, so a config that loads is a config that runs.

use super::model::*;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{identities, waf, ConfigError, Warning};
use crate::checks::body::{self, BodyRules};
use crate::checks::ip::CidrSet;
use crate::checks::path::normalise;
use crate::checks::rate_limit::{ConcurrencyCap, LimitKey, Policy, RateLimits};
use crate::checks::route::RouteTable;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Errors<'a> {
    pub(super) file: &'a Path,
    list: Vec<ConfigError>,
    /// Security warnings found while compiling (those that need the raw input).
    warnings: Vec<Warning>,
}

impl Errors<'_> {
    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn push(&mut self, error: ConfigError) {
        self.list.push(error);
    }

    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        raw: Option<&String>,
        default: Duration,
    ) -> Duration {
        match raw {
            None => default,
            Some(text) => match parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    self.add(key, "must be greater than zero");
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.add(key, e);
                    default
                }
            },
        }
    }

    pub(super) fn size(&mut self, key: &str, raw: Option<&RawSize>, default: u64) -> u64 {
        match raw.map(parse_size) {
            None => default,
            Some(Ok(0)) => {
                self.add(key, "must be greater than zero");
                default
            }
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                self.add(key, e);
                default
            }
        }
    }

    pub(super) fn count(
        &mut self,
        key: &str,
        raw: Option<i64>,
        default: usize,
        max: usize,
    ) -> usize {
        match raw {
            None => default,
            Some(n) if n >= 1 && (n as u64) <= max as u64 => n as usize,
            Some(n) => {
                self.add(
                    key,
                    format!("{n} is out of range; use a whole number from 1 to {max}"),
                );
                default
            }
        }
    }

    pub(super) fn cidrs(&mut self, key: &str, entries: &[String]) -> CidrSet {
        match CidrSet::parse(entries) {
            Ok(set) => set,
            Err((index, message)) => {
                self.add(format!("{key}[{index}]"), message);
                CidrSet::default()
            }
        }
    }
}

/// Names that become metric labels and log fields: short and plain.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn socket_addr(errors: &mut Errors, key: &str, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.add(
                key,
                format!("invalid address {text:?}; write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            None
        }
    }
}

/// Resolve a path relative to the directory of the configuration file.
pub(super) fn relative_to(config_file: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

pub fn compile(raw: RawConfig, file: &Path) -> Result<(Config, Vec<Warning>), Vec<ConfigError>> {
    let mut errors = Errors {
        file,
        list: Vec::new(),
        warnings: Vec::new(),
    };
    let e = &mut errors;

    let server = compile_server(e, &raw.server, file);

    let mut listeners = Vec::new();
    let mut bound: HashSet<SocketAddr> = HashSet::new();
    if raw.listeners.is_empty() {
        e.add(
            "listeners",
            "no listener; add e.g. [[listeners]] address = \"127.0.0.1:8080\"",
        );
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(addr) = socket_addr(e, &format!("{key}.address"), &l.address) {
            if !bound.insert(addr) {
                e.add(format!("{key}.address"), format!("{addr} is listed twice"));
            }
        }
        let tls = l.tls.as_ref().map(|t| ListenerTls {
            cert: existing_file(e, &format!("{key}.tls.cert"), file, &t.cert),
            key: existing_file(e, &format!("{key}.tls.key"), file, &t.key),
            client_ca: t
                .client_ca
                .as_ref()
                .map(|ca| existing_file(e, &format!("{key}.tls.client_ca"), file, ca)),
        });
        listeners.push(Listener {
            address: l.address.clone(),
            tls,
        });
    }

    let metrics = raw.metrics.as_ref().map(|m| {
        if let Some(addr) = socket_addr(e, "metrics.address", &m.address) {
            if bound.contains(&addr) {
                e.add(
                    "metrics.address",
                    format!("{addr} is also a [[listeners]] address; give metrics its own port"),
                );
            }
        }
        MetricsSettings {
            address: m.address.clone(),
        }
    });

    let demo_echo = raw.demo_echo.as_ref().map(|d| {
        if let Some(addr) = socket_addr(e, "demo_echo.address", &d.address) {
            if bound.contains(&addr) {
                e.add(
                    "demo_echo.address",
                    format!("{addr} is also a [[listeners]] address; give the demo echo server its own port"),
                );
            }
        }
        d.address.clone()
    });

    let logging = LoggingSettings {
        access_log: match raw.logging.access_log.as_deref() {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                e.add(
                    "logging.access_log",
                    "empty; write \"stdout\", \"off\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            Some(path) => AccessLogTarget::File(relative_to(file, path)),
        },
        redact_query_params: raw
            .logging
            .redact_query_params
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect(),
    };

    let auth_failure_limit = raw
        .security
        .auth_failure_limit
        .as_ref()
        .map(|l| FailureLimit {
            failures: e.count(
                "security.auth_failure_limit.failures",
                Some(l.failures),
                10,
                1_000_000,
            ) as u32,
            per: e.duration(
                "security.auth_failure_limit.per",
                Some(&l.per),
                Duration::from_secs(60),
            ),
        });
    let rate_limit_store = raw
        .rate_limit_store
        .as_ref()
        .map(|s| store_settings(e, s, file));
    let identities = identities::compile(e, &raw.jwt_providers, &raw.consumers, file);
    let mtls_listener = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));

    let limits = compile_limits(e, &raw.limits);
    let upstreams = compile_upstreams(e, &raw.upstreams, file);
    let waf = waf::compile(e, raw.waf.as_ref(), file);
    let routes = compile_routes(
        e,
        &raw.routes,
        &upstreams,
        &RouteDefaults {
            limits: &limits,
            ids: &identities,
            mtls_listener,
            waf: waf.as_ref(),
        },
        file,
    );

    if errors.list.is_empty() {
        let warnings = std::mem::take(&mut errors.warnings);
        Ok((
            Config {
                source: file.to_path_buf(),
                server,
                listeners,
                metrics,
                logging,
                limits,
                upstreams,
                routes: RouteTable::new(routes),
                identities,
                auth_failure_limit,
                demo_echo,
                rate_limit_store,
                waf,
            },
            warnings,
        ))
    } else {
        Err(errors.list)
    }
}

fn compile_server(e: &mut Errors, s: &RawServer, file: &Path) -> ServerSettings {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let path_setting =
        |e: &mut Errors, key: &str, value: &Option<String>, default: &str| match value {
            Some(v) if v.trim().is_empty() => {
                e.add(key, "empty; write a file path");
                default.to_string()
            }
            Some(v) => relative_to(file, v).to_string_lossy().into_owned(),
            None => default.to_string(),
        };
    ServerSettings {
        threads: e.count("server.threads", s.threads, cores, 1024),
        pid_file: path_setting(
            e,
            "server.pid_file",
            &s.pid_file,
            "/run/portcullis/portcullis.pid",
        ),
        upgrade_sock: path_setting(
            e,
            "server.upgrade_sock",
            &s.upgrade_sock,
            "/run/portcullis/upgrade.sock",
        ),
        grace_period: whole_seconds(
            e,
            "server.grace_period",
            s.grace_period.as_ref(),
            Duration::from_secs(5),
            "kept-alive connections are drained during its first half",
        ),
        graceful_shutdown_timeout: whole_seconds(
            e,
            "server.graceful_shutdown_timeout",
            s.graceful_shutdown_timeout.as_ref(),
            Duration::from_secs(5),
            "requests still running then are cut",
        ),
        trusted_proxies: e.cidrs("server.trusted_proxies", &s.trusted_proxies),
    }
}

/// A shutdown duration: Pingora counts these in whole seconds, so anything else would be
/// silently rounded down.
fn whole_seconds(
    e: &mut Errors,
    key: &str,
    raw: Option<&String>,
    default: Duration,
    why: &str,
) -> Duration {
    let d = e.duration(key, raw, default);
    if d.subsec_nanos() != 0 || d < Duration::from_secs(1) {
        e.add(
            key,
            format!(
                "use whole seconds of at least 1s, e.g. \"{}s\" (Pingora counts it in seconds; {why})",
                d.as_secs().max(1)
            ),
        );
        return Duration::from_secs(d.as_secs().max(1));
    }
    d
}

fn compile_limits(e: &mut Errors, l: &RawLimits) -> Limits {
    let d = Limits::default();
    let max_uri_bytes = e.size(
        "limits.max_uri_bytes",
        l.max_uri_bytes.as_ref(),
        d.max_uri_bytes as u64,
    );
    let max_header_bytes = e.size(
        "limits.max_header_bytes",
        l.max_header_bytes.as_ref(),
        d.max_header_bytes as u64,
    );
    // Pingora itself refuses request heads over 1 MiB; a larger limit could never apply.
    let head_cap = 1024 * 1024;
    if max_uri_bytes > head_cap {
        e.add(
            "limits.max_uri_bytes",
            "at most 1MiB (Pingora's own cap on a request head)",
        );
    }
    if max_header_bytes > head_cap {
        e.add(
            "limits.max_header_bytes",
            "at most 1MiB (Pingora's own cap on a request head)",
        );
    }
    Limits {
        max_uri_bytes: max_uri_bytes.min(head_cap) as usize,
        max_header_bytes: max_header_bytes.min(head_cap) as usize,
        max_headers: e.count("limits.max_headers", l.max_headers, d.max_headers, 256),
        max_body_bytes: e.size(
            "limits.max_body_bytes",
            l.max_body_bytes.as_ref(),
            d.max_body_bytes,
        ),
        max_json_depth: e.count(
            "limits.max_json_depth",
            l.max_json_depth,
            d.max_json_depth,
            10_000,
        ),
        body_read_timeout: e.duration(
            "limits.body_read_timeout",
            l.body_read_timeout.as_ref(),
            d.body_read_timeout,
        ),
        header_read_timeout: e.duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_ref(),
            d.header_read_timeout,
        ),
    }
}

fn compile_upstreams(e: &mut Errors, raw: &[RawUpstream], file: &Path) -> Vec<Upstream> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        if !valid_name(&u.name) {
            e.add(
                format!("{key}.name"),
                format!(
                    "invalid name {:?}; use 1-64 letters, digits, '-', '_' or '.'",
                    u.name
                ),
            );
        } else if !seen.insert(u.name.clone()) {
            e.add(
                format!("{key}.name"),
                format!(
                    "duplicate upstream name {:?}; each upstream needs its own name",
                    u.name
                ),
            );
        }
        if u.targets.is_empty() {
            e.add(
                format!("{key}.targets"),
                "no targets; list at least one, e.g. [\"127.0.0.1:9000\"]",
            );
        }
        let mut targets = Vec::new();
        for (t, target) in u.targets.iter().enumerate() {
            // Names are resolved once, at start-up; the first address is used.
            match target.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) if addr.port() != 0 => {
                    if targets.contains(&addr) {
                        e.add(
                            format!("{key}.targets[{t}]"),
                            format!("{target} is listed twice"),
                        );
                    }
                    targets.push(addr)
                }
                _ => e.add(
                    format!("{key}.targets[{t}]"),
                    format!("invalid target {target:?}; write HOST:PORT, e.g. \"127.0.0.1:9000\""),
                ),
            }
        }
        let tls = match &u.tls {
            None | Some(RawUpstreamTls::Enabled(false)) => None,
            Some(RawUpstreamTls::Enabled(true)) => Some(upstream_tls(
                e,
                &key,
                &RawUpstreamTlsSettings::default(),
                &u.targets,
                file,
            )),
            Some(RawUpstreamTls::Settings(s)) => Some(upstream_tls(e, &key, s, &u.targets, file)),
        };
        let health_check = u.health_check.as_ref().map(|h| {
            let hkey = format!("{key}.health_check");
            if !h.path.starts_with('/') {
                e.add(
                    format!("{hkey}.path"),
                    "must start with '/', e.g. \"/healthz\"",
                );
            }
            let interval = e.duration(
                &format!("{hkey}.interval"),
                h.interval.as_ref(),
                Duration::from_secs(2),
            );
            HealthCheck {
                path: h.path.clone(),
                interval,
                timeout: e.duration(
                    &format!("{hkey}.timeout"),
                    h.timeout.as_ref(),
                    interval.min(Duration::from_secs(1)),
                ),
                healthy_threshold: e.count(
                    &format!("{hkey}.healthy_threshold"),
                    h.healthy_threshold,
                    1,
                    100,
                ),
                unhealthy_threshold: e.count(
                    &format!("{hkey}.unhealthy_threshold"),
                    h.unhealthy_threshold,
                    1,
                    100,
                ),
            }
        });
        out.push(Upstream {
            name: u.name.clone(),
            targets,
            tls,
            connect_timeout: e.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_ref(),
                Duration::from_secs(1),
            ),
            read_timeout: e.duration(
                &format!("{key}.read_timeout"),
                u.read_timeout.as_ref(),
                Duration::from_secs(30),
            ),
            write_timeout: e.duration(
                &format!("{key}.write_timeout"),
                u.write_timeout.as_ref(),
                Duration::from_secs(30),
            ),
            idle_timeout: e.duration(
                &format!("{key}.idle_timeout"),
                u.idle_timeout.as_ref(),
                Duration::from_secs(60),
            ),
            health_check,
            max_inflight: u
                .max_inflight
                .map(|n| e.count(&format!("{key}.max_inflight"), Some(n), 1, 1_000_000) as u32),
        });
    }
    out
}

/// `[rate_limit_store]`. The URL is only ever shown with its userinfo hidden.
fn store_settings(e: &mut Errors, s: &RawRateLimitStore, file: &Path) -> StoreSettings {
    let shown = crate::observe::redact::redact_url(&s.redis);
    let tls = s.redis.starts_with("rediss://");
    if !tls && !s.redis.starts_with("redis://") {
        e.add(
            "rate_limit_store.redis",
            format!("{shown:?} is not a redis:// or rediss:// URL; write e.g. \"redis://127.0.0.1:6379\""),
        );
    } else {
        match redis::IntoConnectionInfo::into_connection_info(s.redis.as_str()) {
            Err(_) => e.add(
                "rate_limit_store.redis",
                format!(
                    "{shown:?} is not a valid Redis URL; write e.g. \"redis://127.0.0.1:6379/0\""
                ),
            ),
            Ok(info) => {
                if info.redis_settings().password().is_some() {
                    e.warn(
                        "rate_limit_store.redis",
                        "the URL carries a password: anyone who reads the config reads it; move it to password_env or password_file",
                    );
                }
            }
        }
        if tls && s.redis.contains("#insecure") {
            e.add(
                "rate_limit_store.redis",
                "#insecure turns off verification of the store's certificate; remove it and name the store's CA in ca_file",
            );
        }
    }
    if s.password_env.is_some() && s.password_file.is_some() {
        e.add(
            "rate_limit_store",
            "password_env and password_file both set; keep one",
        );
    }
    let password = super::secret::read(
        e,
        "rate_limit_store",
        ("password_env", s.password_env.as_deref()),
        ("password_file", s.password_file.as_deref()),
        file,
    )
    .and_then(|bytes| match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(_) => {
            e.add(
                "rate_limit_store.password",
                "the password is not UTF-8 text",
            );
            None
        }
    });
    let ca = s.ca_file.as_deref().and_then(|value| {
        if !tls {
            e.add(
                "rate_limit_store.ca_file",
                "only applies to a rediss:// (TLS) URL",
            );
        }
        pem_certificates(e, "rate_limit_store.ca_file", file, value).map(|(pem, _)| pem)
    });
    StoreSettings {
        redis: s.redis.clone(),
        password,
        ca,
        on_store_error: match s.on_store_error.as_deref() {
            None | Some("local") => crate::checks::rate_limit::shared::OnStoreError::Local,
            Some("deny") => crate::checks::rate_limit::shared::OnStoreError::Deny,
            Some(other) => {
                e.add(
                    "rate_limit_store.on_store_error",
                    format!("invalid value {other:?}; write \"local\" or \"deny\""),
                );
                crate::checks::rate_limit::shared::OnStoreError::Local
            }
        },
    }
}

/// A PEM file of one or more certificates (`key` names the setting in errors): its bytes and
/// the certificates parsed from them.
fn pem_certificates(
    e: &mut Errors,
    key: &str,
    file: &Path,
    value: &str,
) -> Option<(Vec<u8>, Vec<pingora_core::tls::x509::X509>)> {
    let path = relative_to(file, value);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => {
            e.add(key, format!("cannot read {}: {err}", path.display()));
            return None;
        }
    };
    match pingora_core::tls::x509::X509::stack_from_pem(&bytes) {
        Ok(certs) if !certs.is_empty() => Some((bytes, certs)),
        _ => {
            e.add(
                key,
                format!("{} holds no PEM certificate; write the path of a PEM file (-----BEGIN CERTIFICATE-----)", path.display()),
            );
            None
        }
    }
}

/// The host part of a target as written (`name:port`, `1.2.3.4:port`, `[::1]:port`), and
/// whether it is an IP address rather than a name.
fn target_host(target: &str) -> (&str, bool) {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, host.parse::<std::net::IpAddr>().is_ok())
}

/// `upstreams[i].tls`: the name each target is verified against, and the CA and client
/// certificate files, loaded now so that a config that loads is one whose handshakes can work.
fn upstream_tls(
    e: &mut Errors,
    key: &str,
    s: &RawUpstreamTlsSettings,
    targets: &[String],
    file: &Path,
) -> UpstreamTls {
    use pingora_core::tls::pkey::PKey;
    let verify = s.verify.unwrap_or(true);
    let mut names = Vec::with_capacity(targets.len());
    match s.sni.as_deref() {
        Some(sni)
            if sni.is_empty()
                || sni.parse::<std::net::IpAddr>().is_ok()
                || !sni
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
        {
            e.add(
                format!("{key}.tls.sni"),
                format!("{sni:?} is not a host name; write the name the upstream's certificate carries, e.g. \"orders.internal\""),
            );
            names.resize(targets.len(), String::new());
        }
        Some(sni) => names.resize(targets.len(), sni.to_ascii_lowercase()),
        None => {
            for (t, target) in targets.iter().enumerate() {
                match target_host(target) {
                    (host, false) => names.push(host.to_ascii_lowercase()),
                    (_, true) => {
                        if verify {
                            e.add(
                                format!("{key}.targets[{t}]"),
                                format!("{target:?} is an IP address, so there is no name to verify the upstream's certificate against; set tls.sni to the name its certificate carries (or write the target as HOST:PORT)"),
                            );
                        }
                        names.push(String::new());
                    }
                }
            }
        }
    }
    let certificates = |e: &mut Errors, field: &str, value: &str| {
        pem_certificates(e, &format!("{key}.tls.{field}"), file, value).map(|(_, certs)| certs)
    };
    let ca = s
        .ca_file
        .as_deref()
        .and_then(|f| certificates(e, "ca_file", f))
        .map(|certs| Arc::new(certs.into_boxed_slice()));
    if ca.is_some() && !verify {
        e.add(
            format!("{key}.tls.ca_file"),
            "has no effect with verify = false; remove one of them",
        );
    }
    let client_cert = match (s.client_cert.as_deref(), s.client_key.as_deref()) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            e.add(
                format!("{key}.tls"),
                "client_cert and client_key go together; set both (PEM files) or neither",
            );
            None
        }
        (Some(cert), Some(private)) => {
            let chain = certificates(e, "client_cert", cert);
            let key_path = relative_to(file, private);
            let key_bytes = match std::fs::read(&key_path) {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    e.add(
                        format!("{key}.tls.client_key"),
                        format!("cannot read {}: {err}", key_path.display()),
                    );
                    None
                }
            };
            let pkey = key_bytes.and_then(|bytes| {
                #[cfg(unix)]
                if super::lint::readable_by_others(&key_path) {
                    e.warn(
                        format!("{key}.tls.client_key"),
                        format!("{private:?} is readable by group or others; chmod 600 it"),
                    );
                }
                match PKey::private_key_from_pem(&bytes) {
                    Ok(k) => Some(k),
                    Err(_) => {
                        e.add(
                            format!("{key}.tls.client_key"),
                            format!("{private:?} holds no PEM private key"),
                        );
                        None
                    }
                }
            });
            match (chain, pkey) {
                (Some(chain), Some(pkey)) => {
                    let matching = chain[0]
                        .public_key()
                        .map(|public| public.public_eq(&pkey))
                        .unwrap_or(false);
                    if matching {
                        Some(Arc::new(pingora_core::utils::tls::CertKey::new(
                            chain, pkey,
                        )))
                    } else {
                        e.add(
                            format!("{key}.tls.client_key"),
                            "does not belong to the first certificate of client_cert",
                        );
                        None
                    }
                }
                _ => None,
            }
        }
    };
    UpstreamTls {
        names,
        verify,
        ca,
        client_cert,
    }
}

/// A file that must exist now (certificates, keys): resolved and checked at load.
fn existing_file(e: &mut Errors, key: &str, config_file: &Path, value: &str) -> PathBuf {
    let path = relative_to(config_file, value);
    if let Err(err) = std::fs::metadata(&path) {
        e.add(key, format!("cannot read {}: {err}", path.display()));
    }
    path
}

fn compile_path(e: &mut Errors, key: &str, text: &str) -> String {
    match normalise(text) {
        Ok(n) => {
            let canonical = if n.len() > 1 {
                n.trim_end_matches('/').to_string()
            } else {
                n
            };
            let written = if text.len() > 1 {
                text.trim_end_matches('/')
            } else {
                text
            };
            if canonical != written {
                e.add(
                    key,
                    format!("{text:?} is not in normalised form; write {canonical:?} (requests are matched after normalisation)"),
                );
            }
            canonical
        }
        Err(err) => {
            e.add(key, format!("invalid path {text:?}: {}", err.detail()));
            String::new()
        }
    }
}

fn compile_host(e: &mut Errors, key: &str, host: &str) -> String {
    let lower = host.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    if !ok {
        e.add(
            key,
            format!("invalid host {host:?}; write a name like \"api.example.com\" or \"*.example.com\", without a port"),
        );
    }
    lower
}

/// What the sections before `[[routes]]` give every route.
struct RouteDefaults<'a> {
    limits: &'a Limits,
    ids: &'a Identities,
    mtls_listener: bool,
    waf: Option<&'a waf::WafDefaults>,
}

fn compile_routes(
    e: &mut Errors,
    raw: &[RawRoute],
    upstreams: &[Upstream],
    defaults: &RouteDefaults,
    file: &Path,
) -> Vec<Route> {
    let RouteDefaults {
        limits,
        ids,
        mtls_listener,
        waf,
    } = *defaults;
    let upstream_index: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let mut names = HashSet::new();
    let mut out: Vec<Route> = Vec::with_capacity(raw.len());
    if raw.is_empty() {
        e.add(
            "routes",
            "no routes; every request would get 404. Add a [[routes]] table",
        );
    }
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !valid_name(&r.name) {
            e.add(
                format!("{key}.name"),
                format!(
                    "invalid name {:?}; use 1-64 letters, digits, '-', '_' or '.'",
                    r.name
                ),
            );
        } else if r.name == "unmatched" {
            e.add(
                format!("{key}.name"),
                "\"unmatched\" is reserved for requests that match no route",
            );
        } else if !names.insert(r.name.clone()) {
            e.add(
                format!("{key}.name"),
                format!(
                    "duplicate route name {:?}; each route needs its own name",
                    r.name
                ),
            );
        }
        let path = match (&r.path_prefix, &r.path_exact) {
            (Some(p), None) => PathMatch::Prefix(compile_path(e, &format!("{key}.path_prefix"), p)),
            (None, Some(p)) => PathMatch::Exact(compile_path(e, &format!("{key}.path_exact"), p)),
            (Some(_), Some(_)) => {
                e.add(key.clone(), "has both path_prefix and path_exact; keep one");
                PathMatch::Prefix("/".into())
            }
            (None, None) => {
                e.add(
                    key.clone(),
                    "has no path; add path_prefix = \"/…\" or path_exact = \"/…\"",
                );
                PathMatch::Prefix("/".into())
            }
        };
        let methods = if r.methods.is_empty() {
            None
        } else {
            let mut list = Vec::new();
            for (m, text) in r.methods.iter().enumerate() {
                let upper = text.to_ascii_uppercase();
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if !upper.is_empty() => list.push(method),
                    _ => e.add(
                        format!("{key}.methods[{m}]"),
                        format!("invalid method {text:?}"),
                    ),
                }
            }
            Some(list)
        };
        let upstream = match upstream_index.get(r.upstream.as_str()) {
            Some(&index) => index,
            None => {
                e.add(
                    format!("{key}.upstream"),
                    format!(
                        "unknown upstream {:?}; define it under [[upstreams]] or fix the name",
                        r.upstream
                    ),
                );
                0
            }
        };
        if r.strip_prefix && !matches!(path, PathMatch::Prefix(_)) {
            e.add(
                format!("{key}.strip_prefix"),
                "only applies to a path_prefix route",
            );
        }
        let (auth, allow) = identities::route_access(e, &key, r, ids, mtls_listener);
        let rate_limits = compile_rate_limits(e, &key, r);
        let max_inflight = r.max_inflight.map(|n| {
            let max = e.count(&format!("{key}.max_inflight"), Some(n), 1, 1_000_000) as u32;
            std::sync::Arc::new(ConcurrencyCap::new(max))
        });
        let threat_protection = match r.threat_protection.as_deref() {
            None | Some("block") => ThreatMode::Block,
            Some("detect") => ThreatMode::Detect,
            Some("off") => ThreatMode::Off,
            Some(other) => {
                e.add(
                    format!("{key}.threat_protection"),
                    format!("invalid value {other:?}; write \"block\", \"detect\" or \"off\""),
                );
                ThreatMode::Block
            }
        };
        let waf = waf::route_policy(
            e,
            &key,
            waf,
            r.waf.as_ref(),
            threat_protection != ThreatMode::Off,
        );
        let route_limit = r.limits.as_ref().and_then(|l| l.max_body_bytes.as_ref());
        let validate_limit = r.validate.as_ref().and_then(|v| v.max_body_bytes.as_ref());
        if route_limit.is_some() && validate_limit.is_some() {
            e.add(
                format!("{key}.validate.max_body_bytes"),
                "also set in limits.max_body_bytes; keep one",
            );
        }
        let max_body_bytes = match (route_limit, validate_limit) {
            (_, Some(v)) => e.size(
                &format!("{key}.validate.max_body_bytes"),
                Some(v),
                limits.max_body_bytes,
            ),
            (r, None) => e.size(
                &format!("{key}.limits.max_body_bytes"),
                r,
                limits.max_body_bytes,
            ),
        };
        let body = r
            .validate
            .as_ref()
            .and_then(|v| compile_validate(e, &format!("{key}.validate"), v, limits, file));
        let mut hosts: Vec<String> = r
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| compile_host(e, &format!("{key}.hosts[{h}]"), host))
            .collect();
        hosts.sort();
        hosts.dedup();
        let route = Route {
            name: r.name.clone(),
            hosts,
            path,
            methods,
            upstream,
            strip_prefix: r.strip_prefix,
            public: r.public,
            auth,
            allow,
            keep_credentials: r.keep_credentials.unwrap_or(false),
            ip_allow: e.cidrs(&format!("{key}.ip_allow"), &r.ip_allow),
            ip_deny: e.cidrs(&format!("{key}.ip_deny"), &r.ip_deny),
            max_body_bytes,
            body,
            threat_protection,
            waf,
            rate_limits: std::sync::Arc::new(RateLimits::new(rate_limits)),
            max_inflight,
        };
        if let Some(j) = out.iter().position(|other| shadows(other, &route)) {
            e.add(
                key.clone(),
                format!(
                    "matches the same path, hosts and methods as routes[{j}] ({:?}), so it could never be chosen; merge them or make them differ",
                    out[j].name
                ),
            );
        }
        out.push(route);
    }
    out
}

/// A route's `rate_limit`: one policy or a list of them.
fn compile_rate_limits(e: &mut Errors, key: &str, r: &RawRoute) -> Vec<Policy> {
    let raw: Vec<&RawRateLimitPolicy> = match &r.rate_limit {
        None => Vec::new(),
        Some(RawRateLimit::One(p)) => vec![p],
        Some(RawRateLimit::Many(list)) => list.iter().collect(),
    };
    if matches!(&r.rate_limit, Some(RawRateLimit::Many(list)) if list.is_empty()) {
        e.add(
            format!("{key}.rate_limit"),
            "empty list; give at least one policy or remove it",
        );
    }
    let mut out = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let pkey = match &r.rate_limit {
            Some(RawRateLimit::Many(_)) => format!("{key}.rate_limit[{i}]"),
            _ => format!("{key}.rate_limit"),
        };
        let requests = e.count(
            &format!("{pkey}.requests"),
            Some(p.requests),
            1,
            1_000_000_000,
        ) as u32;
        let per = e.duration(&format!("{pkey}.per"), Some(&p.per), Duration::from_secs(1));
        if per < Duration::from_secs(1) || per.subsec_nanos() != 0 {
            e.add(
                format!("{pkey}.per"),
                "use whole seconds of at least 1s (the RateLimit headers count in seconds)",
            );
        }
        let limit_key = match p.key.as_deref().unwrap_or("ip") {
            "consumer" => {
                if r.public {
                    e.warn(
                        format!("{pkey}.key"),
                        "key = \"consumer\" on a public route: every request is anonymous and shares one bucket",
                    );
                }
                LimitKey::Consumer
            }
            "ip" => LimitKey::Ip,
            "route" => LimitKey::Route,
            other => match other
                .strip_prefix("header:")
                .map(|n| http::HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(name)) => LimitKey::Header(name),
                _ => {
                    e.add(
                        format!("{pkey}.key"),
                        format!("invalid key {other:?}; use \"consumer\", \"ip\", \"route\" or \"header:NAME\""),
                    );
                    LimitKey::Ip
                }
            },
        };
        out.push(Policy::new(
            format!("{}-{i}", r.name),
            requests,
            per,
            limit_key,
        ));
    }
    if r.public && out.is_empty() {
        e.warn(
            key,
            "public route without rate_limit: anyone can send it as much traffic as they like",
        );
    }
    out
}

/// A route's `validate` table: content types, and the JSON Schema read and compiled now.
fn compile_validate(
    e: &mut Errors,
    key: &str,
    v: &RawValidate,
    limits: &Limits,
    file: &Path,
) -> Option<BodyRules> {
    let mut content_types = Vec::new();
    for (i, text) in v.content_types.iter().enumerate() {
        let media = body::media_type(text);
        let valid = media
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !media.contains(['*', ' ']));
        if !valid || text.contains(';') {
            e.add(
                format!("{key}.content_types[{i}]"),
                format!("invalid media type {text:?}; write e.g. \"application/json\" (no wildcards, no parameters)"),
            );
        }
        content_types.push(media);
    }
    let schema = match &v.json_schema {
        None => None,
        Some(path) => {
            let path = relative_to(file, path);
            let skey = format!("{key}.json_schema");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) => {
                    e.add(skey, format!("cannot read {}: {err}", path.display()));
                    return None;
                }
            };
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(json) => json,
                Err(err) => {
                    e.add(skey, format!("{} is not JSON: {err}", path.display()));
                    return None;
                }
            };
            match jsonschema::options()
                .should_validate_formats(true)
                .build(&json)
            {
                Ok(validator) => Some(std::sync::Arc::new(validator)),
                Err(err) => {
                    e.add(
                        skey,
                        format!("{} is not a usable JSON Schema: {err}", path.display()),
                    );
                    return None;
                }
            }
        }
    };
    if content_types.is_empty() {
        if schema.is_some() {
            content_types.push("application/json".to_string());
        } else {
            e.add(
                format!("{key}.content_types"),
                "empty; list the accepted media types, e.g. [\"application/json\"]",
            );
        }
    }
    if schema.is_some() && !content_types.iter().all(|c| body::is_json(c)) {
        e.add(
            format!("{key}.content_types"),
            "a json_schema needs JSON media types only (application/json or */*+json)",
        );
    }
    Some(BodyRules {
        content_types,
        schema,
        max_json_depth: limits.max_json_depth,
    })
}

/// Two routes with the same path and hosts whose method sets overlap: the later is dead.
fn shadows(a: &Route, b: &Route) -> bool {
    if a.path != b.path || a.hosts != b.hosts {
        return false;
    }
    match (&a.methods, &b.methods) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
    }
}
