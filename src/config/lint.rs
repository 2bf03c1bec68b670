//! Security warnings for `portcullis check`: settings that work but are probably not what an
//! operator meant. `check --strict` turns them into failures.

use super::model::Config;
use super::Warning;
use std::net::SocketAddr;

fn is_loopback(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |key: String, message: &str| {
        out.push(Warning {
            key,
            message: message.to_string(),
        })
    };

    for (i, listener) in config.listeners.iter().enumerate() {
        if listener.tls.is_none() && !is_loopback(&listener.address) {
            warn(
                format!("listeners[{i}].address"),
                "plain HTTP on a non-loopback address: credentials and data cross the network unencrypted; terminate TLS in front of portcullis or bind to 127.0.0.1",
            );
        }
    }
    if let Some(metrics) = &config.metrics {
        if !is_loopback(&metrics.address) {
            warn(
                "metrics.address".into(),
                "the metrics listener is not on a loopback address: anyone who can reach it reads route names and traffic figures; bind it to 127.0.0.1",
            );
        }
    }
    if let Some(echo) = &config.demo_echo {
        if !is_loopback(echo) {
            warn(
                "demo_echo.address".into(),
                "the demo echo server reflects every header it receives; never expose it beyond loopback",
            );
        }
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        if upstream.tls.as_ref().is_some_and(|t| !t.verify) {
            warn(
                format!("upstreams[{i}].tls.verify"),
                "false: the upstream's certificate is not checked, so anyone on the path can impersonate it",
            );
        }
    }
    for (i, route) in config.routes.routes().iter().enumerate() {
        if !route.public && route.auth.is_empty() {
            warn(
                format!("routes[{i}]"),
                "route is not public and has no auth: every request to it is refused with 401; add auth or public = true",
            );
        }
    }
    out
}

/// A secret file that others may read: group or world permission bits set.
#[cfg(unix)]
pub fn readable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}
