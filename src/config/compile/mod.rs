//! Raw configuration → validated model, one file per section of the TOML (as `raw.rs` and
//! `model.rs` are laid out). Every problem is collected (not just the first), and each names
//! its key path and the fix. Files a setting points at (keys, certificates, JWKS, schemas) are
//! read and checked here, so a config that loads is a config that runs.

mod limits;
mod routes;
mod server;
mod store;
mod upstreams;

use super::model::*;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{identities, waf, ConfigError, Warning};
use crate::checks::ip::CidrSet;
use crate::checks::route::RouteTable;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) struct Errors<'a> {
    pub(super) file: &'a Path,
    list: Vec<ConfigError>,
    /// Security warnings found while compiling (those that need the raw input).
    warnings: Vec<Warning>,
}

impl Errors<'_> {
    /// Record a security warning; its text comes from `lint`.
    pub(super) fn warn(&mut self, warning: Warning) {
        self.warnings.push(warning);
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

    /// A name that other keys, metric labels and log fields refer to (an upstream, a route, a
    /// provider, a consumer id, a group): it must be plain, and, given the names of its kind seen
    /// so far, new. `what` names it in the error ("route name", "consumer id").
    pub(super) fn name(
        &mut self,
        key: String,
        what: &str,
        name: &str,
        seen: Option<&mut HashSet<String>>,
    ) -> bool {
        if !valid_name(name) {
            self.add(
                key,
                format!("invalid {what} {name:?}; use 1-64 letters, digits, '-', '_' or '.'"),
            );
            return false;
        }
        if let Some(seen) = seen {
            if !seen.insert(name.to_owned()) {
                self.add(key, format!("duplicate {what} {name:?}; give each its own"));
                return false;
            }
        }
        true
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
fn valid_name(name: &str) -> bool {
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

/// A file that must exist now (certificates, keys): resolved and checked at load.
fn existing_file(e: &mut Errors, key: &str, config_file: &Path, value: &str) -> PathBuf {
    let path = relative_to(config_file, value);
    if let Err(err) = std::fs::metadata(&path) {
        e.add(key, format!("cannot read {}: {err}", path.display()));
    }
    path
}

/// A PEM file of one or more certificates (`key` names the setting in errors): its bytes and
/// the certificates parsed from them.
pub(super) fn pem_certificates(
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

pub fn compile(raw: RawConfig, file: &Path) -> Result<(Config, Vec<Warning>), Vec<ConfigError>> {
    let mut errors = Errors {
        file,
        list: Vec::new(),
        warnings: Vec::new(),
    };
    let e = &mut errors;

    let server = server::compile_server(e, &raw.server, file);
    let (listeners, bound) = server::compile_listeners(e, &raw.listeners, file);
    let metrics = server::compile_metrics(e, raw.metrics.as_ref(), &bound);
    let demo_echo = server::compile_demo_echo(e, raw.demo_echo.as_ref(), &bound);
    let logging = server::compile_logging(e, &raw.logging, file);
    let auth_failure_limit = server::compile_security(e, &raw.security);
    let rate_limit_store = raw
        .rate_limit_store
        .as_ref()
        .map(|s| store::store_settings(e, s, file));
    let identities = identities::compile(e, &raw.jwt_providers, &raw.consumers, file);
    let mtls_listener = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
    let limits = limits::compile_limits(e, &raw.limits);
    let upstreams = upstreams::compile_upstreams(e, &raw.upstreams, file);
    let waf = waf::compile(e, raw.waf.as_ref(), file);
    let routes = routes::compile_routes(
        e,
        &raw.routes,
        &upstreams,
        &routes::RouteDefaults {
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
                sha256: String::new(),
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

/// Compiling one section on its own, for the sections' unit tests.
#[cfg(test)]
mod testing {
    use super::Errors;
    use serde::de::DeserializeOwned;
    use std::path::Path;

    /// What a section made of `toml` (its raw struct's fields), and each error and warning as
    /// `key: message`. Relative paths are relative to `tests/data/`.
    pub fn section<R: DeserializeOwned, T>(
        toml: &str,
        compile: impl FnOnce(&mut Errors, &R, &Path) -> T,
    ) -> (T, Vec<String>, Vec<String>) {
        let raw: R = toml::from_str(toml).expect("the test's TOML parses");
        let file = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test.toml"));
        let mut e = Errors {
            file,
            list: Vec::new(),
            warnings: Vec::new(),
        };
        let made = compile(&mut e, &raw, file);
        let errors = e.list.iter().map(|x| format!("{}: {}", x.key, x.message));
        let warnings = e
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.key, w.message));
        (made, errors.collect(), warnings.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Errors;
    use std::collections::HashSet;
    use std::path::Path;

    #[test]
    fn a_name_is_plain_and_new_among_its_kind() {
        let mut e = Errors {
            file: Path::new("portcullis.toml"),
            list: Vec::new(),
            warnings: Vec::new(),
        };
        let mut seen = HashSet::new();
        let long = "a".repeat(65);
        let cases: [(&str, bool); 8] = [
            ("api-v1.read_only", true),
            ("API", true),
            ("api-v1.read_only", false),
            ("", false),
            ("a b", false),
            ("caf\u{e9}", false),
            ("a\"b", false),
            (&long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                e.name("routes[0].name".into(), "route name", name, Some(&mut seen)),
                ok,
                "{name:?}"
            );
        }
        // Without a set of seen names, only the spelling counts.
        assert!(e.name("g".into(), "group name", "API", None));
        let errors: Vec<String> = e.list.iter().map(|x| x.message.clone()).collect();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert_eq!(
            errors[0],
            "duplicate route name \"api-v1.read_only\"; give each its own"
        );
        assert!(errors[1].starts_with("invalid route name \"\"; use 1-64 letters"));
        assert_eq!(seen.len(), 2);
    }
}
