//! `[server]`, `[[listeners]]`, `[metrics]`, `[demo_echo]`, `[logging]` and `[security]`: what
//! the process binds, logs and throttles.

use super::values::{existing_file, socket_addr};
use crate::checks::auth::sender::DpopSettings;
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use crate::observe::access_log::AccessLogTarget;
use crate::request::trace::TraceTrust;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub(super) fn compile_server(e: &mut Errors, s: &RawServer, file: &Path) -> ServerSettings {
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
        trace_from: match s.trace_context.as_deref() {
            None | Some("accept") => TraceTrust::Anyone,
            Some("trusted_proxies") => TraceTrust::TrustedProxies,
            Some(other) => {
                e.add(
                    "server.trace_context",
                    format!(
                        "{other:?} is not a choice; write \"accept\" (keep any client's traceparent) or \"trusted_proxies\" (only from server.trusted_proxies; others start a trace)"
                    ),
                );
                TraceTrust::Anyone
            }
        },
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

/// The listeners, and every address they bind (for the other sections' clash checks).
pub(super) fn compile_listeners(
    e: &mut Errors,
    raw: &[RawListener],
    file: &Path,
) -> (Vec<Listener>, HashSet<SocketAddr>) {
    let mut listeners = Vec::new();
    let mut bound: HashSet<SocketAddr> = HashSet::new();
    if raw.is_empty() {
        e.add(
            "listeners",
            "no listener; add e.g. [[listeners]] address = \"127.0.0.1:8080\"",
        );
    }
    for (i, l) in raw.iter().enumerate() {
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
        if l.h2c && tls.is_some() {
            e.add(
                format!("{key}.h2c"),
                "is for plain listeners; a TLS listener offers HTTP/2 by ALPN already",
            );
        }
        listeners.push(Listener {
            address: l.address.clone(),
            tls,
            h2c: l.h2c,
        });
    }
    (listeners, bound)
}

/// An address of its own for a side listener (`what` names it in the message).
fn own_address(e: &mut Errors, key: &str, address: &str, bound: &HashSet<SocketAddr>, what: &str) {
    if let Some(addr) = socket_addr(e, key, address) {
        if bound.contains(&addr) {
            e.add(
                key,
                format!("{addr} is also a [[listeners]] address; give {what} its own port"),
            );
        }
    }
}

pub(super) fn compile_metrics(
    e: &mut Errors,
    raw: Option<&RawMetrics>,
    bound: &HashSet<SocketAddr>,
) -> Option<MetricsSettings> {
    let m = raw?;
    own_address(e, "metrics.address", &m.address, bound, "metrics");
    Some(MetricsSettings {
        address: m.address.clone(),
    })
}

pub(super) fn compile_demo_echo(
    e: &mut Errors,
    raw: Option<&RawDemoEcho>,
    bound: &HashSet<SocketAddr>,
) -> Option<String> {
    let d = raw?;
    own_address(
        e,
        "demo_echo.address",
        &d.address,
        bound,
        "the demo echo server",
    );
    Some(d.address.clone())
}

pub(super) fn compile_logging(e: &mut Errors, raw: &RawLogging, file: &Path) -> LoggingSettings {
    LoggingSettings {
        access_log: match raw.access_log.as_deref() {
            None | Some("stdout") | Some("-") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                e.add(
                    "logging.access_log",
                    "empty; write \"stdout\" (or \"-\"), \"off\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            Some(path) => AccessLogTarget::File(relative_to(file, path)),
        },
        redact_query_params: raw
            .redact_query_params
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect(),
    }
}

/// `[security] dpop_proof_lifetime`: how old a DPoP proof may be (default 60s, 5s to 10m).
pub(super) fn compile_dpop(e: &mut Errors, raw: &RawSecurity) -> DpopSettings {
    let key = "security.dpop_proof_lifetime";
    let max_age = e.duration(
        key,
        raw.dpop_proof_lifetime.as_ref(),
        Duration::from_secs(60),
    );
    if !(Duration::from_secs(5)..=Duration::from_secs(600)).contains(&max_age) {
        e.add(
            key,
            "between 5s and 10m: a proof is accepted (and remembered against replay) this long",
        );
    }
    DpopSettings { max_age }
}

pub(super) fn compile_security(e: &mut Errors, raw: &RawSecurity) -> Option<FailureLimit> {
    let l = raw.auth_failure_limit.as_ref()?;
    Some(FailureLimit {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use serde::Deserialize;

    /// The process-wide sections as one TOML document.
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        server: RawServer,
        #[serde(default)]
        listeners: Vec<RawListener>,
        metrics: Option<RawMetrics>,
        demo_echo: Option<RawDemoEcho>,
        #[serde(default)]
        logging: RawLogging,
        #[serde(default)]
        security: RawSecurity,
    }

    struct Made {
        server: ServerSettings,
        listeners: Vec<Listener>,
        metrics: Option<MetricsSettings>,
        logging: LoggingSettings,
        security: Option<FailureLimit>,
    }

    fn compile(toml: &str) -> (Made, Vec<String>) {
        let (made, errors, _) = section(toml, |e, s: &Sections, file| {
            let (listeners, bound) = compile_listeners(e, &s.listeners, file);
            compile_demo_echo(e, s.demo_echo.as_ref(), &bound);
            Made {
                server: compile_server(e, &s.server, file),
                metrics: compile_metrics(e, s.metrics.as_ref(), &bound),
                logging: compile_logging(e, &s.logging, file),
                security: compile_security(e, &s.security),
                listeners,
            }
        });
        (made, errors)
    }

    const LISTENER: &str = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n";

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let (m, errors) = compile(LISTENER);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.listeners.len(), 1);
        assert_eq!(m.server.grace_period, Duration::from_secs(5));
        assert_eq!(m.server.pid_file, "/run/portcullis/portcullis.pid");
        assert!(m.server.trusted_proxies.is_empty());
        assert_eq!(m.logging.access_log, AccessLogTarget::Stdout);
        assert!(m.metrics.is_none() && m.security.is_none());
    }

    #[test]
    fn paths_are_relative_to_the_config_file_and_names_lower_cased() {
        let (m, errors) = compile(&format!(
            "{LISTENER}[server]\npid_file = \"run/p.pid\"\n\
             [logging]\naccess_log = \"access.log\"\nredact_query_params = [\"Token\"]\n\
             [security]\nauth_failure_limit = {{ failures = 3, per = \"30s\" }}"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            m.server.pid_file.ends_with("tests/data/run/p.pid"),
            "{}",
            m.server.pid_file
        );
        match m.logging.access_log {
            AccessLogTarget::File(p) => assert!(p.ends_with("tests/data/access.log")),
            other => panic!("{other:?}"),
        }
        assert!(m.logging.redact_query_params.contains("token"));
        let limit = m.security.unwrap();
        assert_eq!((limit.failures, limit.per), (3, Duration::from_secs(30)));
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("", "listeners: no listener"),
            (
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:1\"",
                "listeners[1].address: 127.0.0.1:1 is listed twice",
            ),
            ("[[listeners]]\naddress = \"localhost\"", "listeners[0].address: "),
            (
                "[metrics]\naddress = \"127.0.0.1:8080\"",
                "metrics.address: 127.0.0.1:8080 is also a [[listeners]] address",
            ),
            (
                "[demo_echo]\naddress = \"127.0.0.1:8080\"",
                "demo_echo.address: 127.0.0.1:8080 is also a [[listeners]] address",
            ),
            ("[logging]\naccess_log = \"\"", "logging.access_log: empty"),
            ("[server]\npid_file = \" \"", "server.pid_file: empty"),
            ("[server]\ngrace_period = \"1500ms\"", "server.grace_period: "),
            ("[server]\nthreads = 0", "server.threads: 0 is out of range"),
            ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]", "server.trusted_proxies"),
            (
                "[server]\ntrace_context = \"everyone\"",
                "server.trace_context: \"everyone\" is not a choice",
            ),
            (
                "[security]\nauth_failure_limit = { failures = 0, per = \"1m\" }",
                "security.auth_failure_limit.failures: 0 is out of range",
            ),
        ];
        for (extra, expected) in cases {
            let toml = if extra.starts_with("[[listeners]]") || extra.is_empty() {
                extra.to_string()
            } else {
                format!("{LISTENER}{extra}")
            };
            let (_, errors) = compile(&toml);
            assert_eq!(errors.len(), 1, "{toml}: {errors:?}");
            assert!(errors[0].starts_with(expected), "{toml}: {errors:?}");
        }
    }
}
