//! Reading typed values out of the raw configuration: durations, sizes, counts, CIDR lists,
//! socket addresses, and the files a setting points at (read and checked now, so that a config
//! that loads is a config that runs). Each problem is recorded in `Errors` under its key.

use crate::checks::ip::CidrSet;
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::raw::RawSize;
use crate::config::units::{parse_duration, parse_size};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl Errors<'_> {
    pub(crate) fn duration(
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

    /// `duration`, with `message` recorded when it is longer than `max`.
    pub(crate) fn duration_at_most(
        &mut self,
        key: &str,
        raw: Option<&String>,
        default: Duration,
        (max, message): (Duration, &str),
    ) -> Duration {
        let d = self.duration(key, raw, default);
        if d > max {
            self.add(key, message);
        }
        d
    }

    pub(crate) fn size(&mut self, key: &str, raw: Option<&RawSize>, default: u64) -> u64 {
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

    pub(crate) fn count(
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

    pub(crate) fn cidrs(&mut self, key: &str, entries: &[String]) -> CidrSet {
        match CidrSet::parse(entries) {
            Ok(set) => set,
            Err((index, message)) => {
                self.add(format!("{key}[{index}]"), message);
                CidrSet::default()
            }
        }
    }
}

pub(super) fn socket_addr(errors: &mut Errors, key: &str, text: &str) -> Option<SocketAddr> {
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

/// A file that must exist now (certificates, keys): resolved and checked at load.
pub(super) fn existing_file(e: &mut Errors, key: &str, config_file: &Path, value: &str) -> PathBuf {
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
