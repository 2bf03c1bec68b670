//! `[server]`, `[[listeners]]`, `[metrics]`, `[demo_echo]`, `[logging]` and `[security]`: what
//! the process binds, logs and throttles.

use super::values::{existing_file, socket_addr};
use crate::checks::auth::dpop_nonce::NonceIssuer;
use crate::checks::auth::sender::DpopSettings;
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::lint;
use crate::config::model::*;
use crate::config::raw::*;
use crate::observe::access_log::AccessLogTarget;
use crate::request::trace::TraceTrust;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
            crl: t.crl.as_ref().and_then(|crl| {
                let at = format!("{key}.tls.crl");
                if t.client_ca.is_none() {
                    e.add(
                        &at,
                        "only applies with client_ca: revocation is of client certificates",
                    );
                }
                revocation_lists(e, &at, file, crl)
            }),
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

/// `check` warns about a CRL whose next update is sooner than this.
const CRL_UPDATE_WARNING: u32 = 7;

/// A listener's `tls.crl`: a PEM file of one or more CRLs, each parsed; one past its
/// `nextUpdate` is an error (OpenSSL would refuse every client certificate), one due within 7
/// days a warning.
fn revocation_lists(e: &mut Errors, key: &str, file: &Path, value: &str) -> Option<PathBuf> {
    use openssl::asn1::Asn1Time;
    use pingora_core::tls::x509::X509Crl;
    let path = relative_to(file, value);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            e.add(key, format!("cannot read {}: {err}", path.display()));
            return None;
        }
    };
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    let blocks: Vec<&str> = text.match_indices(BEGIN).map(|(i, _)| &text[i..]).collect();
    if blocks.is_empty() {
        e.add(
            key,
            format!("{} holds no PEM CRL ({BEGIN})", path.display()),
        );
        return None;
    }
    let (Ok(now), Ok(soon)) = (
        Asn1Time::days_from_now(0),
        Asn1Time::days_from_now(CRL_UPDATE_WARNING),
    ) else {
        return Some(path);
    };
    for (n, block) in blocks.iter().enumerate() {
        let crl = match X509Crl::from_pem(block.as_bytes()) {
            Ok(crl) => crl,
            Err(err) => {
                e.add(
                    key,
                    format!("CRL {} of {} does not parse: {err}", n + 1, path.display()),
                );
                continue;
            }
        };
        match crl.next_update() {
            Some(next) if *next < now => e.add(
                key,
                format!(
                    "CRL {} of {} was due for renewal on {next}: every client certificate would be refused; install the current CRL",
                    n + 1,
                    path.display()
                ),
            ),
            Some(next) if *next < soon => e.warn(lint::crl_due(key.to_string(), next.to_string())),
            _ => {}
        }
    }
    Some(path)
}

/// `[security] dpop_proof_lifetime`: how old a DPoP proof may be (default 60s, 5s to 10m);
/// `dpop_nonce`: proofs must carry a nonce of the gateway's, made with the secret of
/// `dpop_nonce_secret_env` or `_file` (shared by instances) or one drawn at start.
pub(super) fn compile_dpop(e: &mut Errors, raw: &RawSecurity, file: &Path) -> DpopSettings {
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
    let secret_key = if raw.dpop_nonce_secret_env.is_some() {
        "security.dpop_nonce_secret_env"
    } else {
        "security.dpop_nonce_secret_file"
    };
    let secret = super::secret::read(
        e,
        "security",
        (
            "dpop_nonce_secret_env",
            raw.dpop_nonce_secret_env.as_deref(),
        ),
        (
            "dpop_nonce_secret_file",
            raw.dpop_nonce_secret_file.as_deref(),
        ),
        file,
    );
    let issuer = match (raw.dpop_nonce.unwrap_or(false), secret) {
        (false, None) => {
            return DpopSettings {
                max_age,
                nonces: None,
            }
        }
        (false, Some(_)) => Err((
            secret_key,
            "only applies with dpop_nonce = true; set that, or remove this key".to_string(),
        )),
        (true, Some(secret)) => NonceIssuer::new(&secret, max_age).map_err(|m| (secret_key, m)),
        (true, None) => NonceIssuer::random(max_age).map_err(|m| ("security.dpop_nonce", m)),
    };
    let nonces = match issuer {
        Ok(issuer) => Some(std::sync::Arc::new(issuer)),
        Err((key, message)) => {
            e.add(key, message);
            None
        }
    };
    DpopSettings { max_age, nonces }
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

    /// (year, month, day) of `days` from today, UTC (civil-from-days, proleptic Gregorian).
    fn date_in(days: i64) -> (i32, u8, u8) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let z = now / 86_400 + days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y as i32, m as u8, d as u8)
    }

    /// A CRL of a fresh CA, issued a year before `next_update`.
    fn crl_file(dir: &Path, name: &str, next_update: (i32, u8, u8)) -> String {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let (y, m, d) = next_update;
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(y - 1, m, d.min(28)),
            next_update: rcgen::date_time_ymd(y, m, d),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        let path = dir.join(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path.display().to_string()
    }

    #[test]
    fn crls_are_read_and_their_dates_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("p.toml");
        let mut e = Errors::new(&config);
        let current = crl_file(dir.path(), "current.pem", date_in(100));
        assert!(revocation_lists(&mut e, "tls.crl", &config, &current).is_some());
        assert!(e.errors().is_empty() && e.warnings().is_empty());

        let soon = crl_file(dir.path(), "soon.pem", date_in(3));
        revocation_lists(&mut e, "tls.crl", &config, &soon);
        assert_eq!(e.warnings().len(), 1);
        assert!(
            e.warnings()[0].message.contains("due for renewal"),
            "{:?}",
            e.warnings()
        );

        let expired = crl_file(dir.path(), "expired.pem", date_in(-3));
        revocation_lists(&mut e, "tls.crl", &config, &expired);
        assert_eq!(e.errors().len(), 1);
        assert!(
            e.errors()[0]
                .message
                .contains("every client certificate would be refused"),
            "{:?}",
            e.errors()
        );

        std::fs::write(dir.path().join("not.pem"), "hello").unwrap();
        revocation_lists(&mut e, "tls.crl", &config, "not.pem");
        std::fs::write(
            dir.path().join("bad.pem"),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        revocation_lists(&mut e, "tls.crl", &config, "bad.pem");
        revocation_lists(&mut e, "tls.crl", &config, "missing.pem");
        let messages: Vec<&str> = e.errors().iter().map(|x| x.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[1].contains("holds no PEM CRL"), "{messages:?}");
        assert!(messages[2].contains("does not parse"), "{messages:?}");
        assert!(messages[3].starts_with("cannot read"), "{messages:?}");
    }
}
