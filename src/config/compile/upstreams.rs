//! `[[upstreams]]`: targets resolved, timeouts, health checks, and TLS towards each target
//! (names verified, CA and client certificate read now).

use super::values::pem_certificates;
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use std::collections::HashSet;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn compile_upstreams(e: &mut Errors, raw: &[RawUpstream], file: &Path) -> Vec<Upstream> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        e.name(
            format!("{key}.name"),
            "upstream name",
            &u.name,
            Some(&mut seen),
        );
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
        let http2 = match (u.protocol.as_deref(), tls.is_some()) {
            (None | Some("http1"), _) => false,
            (Some("h2"), true) | (Some("h2c"), false) => true,
            (Some("h2"), false) => {
                e.add(
                    format!("{key}.protocol"),
                    "\"h2\" is HTTP/2 over TLS; add tls, or write \"h2c\" for plain HTTP/2",
                );
                false
            }
            (Some("h2c"), true) => {
                e.add(
                    format!("{key}.protocol"),
                    "\"h2c\" is plain HTTP/2; with tls write \"h2\"",
                );
                false
            }
            (Some(other), _) => {
                e.add(
                    format!("{key}.protocol"),
                    format!("invalid value {other:?}; write \"http1\", \"h2\" or \"h2c\""),
                );
                false
            }
        };
        out.push(Upstream {
            name: u.name.clone(),
            targets,
            tls,
            http2,
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
                if crate::config::lint::readable_by_others(&key_path) {
                    e.warn(crate::config::lint::secret_file_readable(
                        format!("{key}.tls.client_key"),
                        &key_path,
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Sections {
        upstreams: Vec<RawUpstream>,
    }

    fn compile(toml: &str) -> (Vec<Upstream>, Vec<String>, Vec<String>) {
        section(toml, |e, s: &Sections, file| {
            compile_upstreams(e, &s.upstreams, file)
        })
    }

    #[test]
    fn targets_timeouts_and_health_checks() {
        let (ups, errors, warnings) = compile(
            "[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:9000\", \"[::1]:9001\"]\n\
             read_timeout = \"2s\"\nmax_inflight = 10\n\
             health_check = { path = \"/healthz\", interval = \"500ms\" }",
        );
        assert!(errors.is_empty() && warnings.is_empty(), "{errors:?}");
        let a = &ups[0];
        assert_eq!(a.targets.len(), 2);
        assert_eq!(a.read_timeout, Duration::from_secs(2));
        assert_eq!(a.connect_timeout, Duration::from_secs(1));
        assert_eq!(a.max_inflight, Some(10));
        let hc = a.health_check.as_ref().unwrap();
        // The timeout defaults to the interval when that is shorter than a second.
        assert_eq!(hc.timeout, Duration::from_millis(500));
        assert!(a.tls.is_none());
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("name = \"a b\"\ntargets = [\"127.0.0.1:1\"]", "upstreams[0].name: invalid upstream name"),
            ("name = \"a\"\ntargets = []", "upstreams[0].targets: no targets"),
            ("name = \"a\"\ntargets = [\"127.0.0.1\"]", "upstreams[0].targets[0]: invalid target"),
            (
                "name = \"a\"\ntargets = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
                "upstreams[0].targets[1]: 127.0.0.1:1 is listed twice",
            ),
            (
                "name = \"a\"\ntargets = [\"127.0.0.1:1\"]\nhealth_check = { path = \"healthz\" }",
                "upstreams[0].health_check.path: must start with '/'",
            ),
            (
                "name = \"a\"\ntargets = [\"127.0.0.1:1\"]\nidle_timeout = \"0s\"",
                "upstreams[0].idle_timeout: must be greater than zero",
            ),
            (
                "name = \"a\"\ntargets = [\"127.0.0.1:1\"]\ntls = { sni = \"u.internal\", ca_file = \"missing.pem\" }",
                "upstreams[0].tls.ca_file: ",
            ),
        ];
        for (body, expected) in cases {
            let (_, errors, _) = compile(&format!("[[upstreams]]\n{body}"));
            assert!(
                errors.first().is_some_and(|x| x.starts_with(expected)),
                "{body}: {errors:?}"
            );
        }
        let (_, errors, _) = compile(
            "[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:1\"]\n\
             [[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:2\"]",
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("upstreams[1].name: duplicate upstream name"));
    }

    #[test]
    fn unverified_tls_is_allowed_and_verified_tls_needs_a_name() {
        let (ups, errors, _) = compile(
            "[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:1\"]\ntls = { verify = false }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(ups[0].tls.as_ref().is_some_and(|t| !t.verify));
        let (_, errors, _) =
            compile("[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:1\"]\ntls = true");
        assert_eq!(
            errors.len(),
            1,
            "an IP target with verify and no sni: {errors:?}"
        );
        assert!(
            errors[0].starts_with("upstreams[0].targets[0]: \"127.0.0.1:1\" is an IP address"),
            "{errors:?}"
        );
    }
}
