//! Security warnings for `portcullis check`: settings that work but are probably not what an
//! operator meant. `check --strict` turns them into failures. Every warning portcullis gives
//! is written here: `warnings` finds those the compiled model shows; the others (a secret
//! file's permissions, a secret's length, a URL's password — facts the model no longer
//! holds) are spotted while compiling, which reports them through the functions below.

use super::diagnostics::{Warning, WarningKind};
use super::model::Config;
use crate::checks::auth::AuthPolicy;
use std::net::SocketAddr;

fn is_loopback(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |key: String, message: &str| out.push(warning(key, message));

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
        if matches!(&route.auth, AuthPolicy::AnyOf(methods) if methods.is_empty()) {
            warn(
                format!("routes[{i}]"),
                "route is not public and has no auth: every request to it is refused with 401; add auth or public = true",
            );
        }
    }
    out
}

/// A warning at `key`.
fn warning(key: impl Into<String>, message: impl Into<String>) -> Warning {
    Warning {
        key: key.into(),
        message: message.into(),
        kind: WarningKind::Risk,
    }
}

/// A file holding a secret or a private key that group or others may read.
pub fn secret_file_readable(key: String, path: &std::path::Path) -> Warning {
    let message = format!(
        "{} is readable by group or others; chmod 600 it",
        path.display()
    );
    warning(key, message)
}

/// A Redis URL that carries its password.
pub fn password_in_url(key: &str) -> Warning {
    warning(key, "the URL carries a password: anyone who reads the config reads it; move it to password_env or password_file")
}

/// An HS secret shorter than `min` bytes.
pub fn short_hs_secret(key: String, len: usize, min: usize) -> Warning {
    warning(
        key,
        format!("the HS secret has {len} bytes; use at least {min} random bytes"),
    )
}

/// A JWT provider that accepts HS and public-key algorithms alike.
pub fn mixed_jwt_algorithms(key: String) -> Warning {
    warning(key, "mixes HS (shared secret) with public-key algorithms; keep one kind per provider to rule out key confusion")
}

/// A JWT provider with no audience to check.
pub fn no_audiences(key: String) -> Warning {
    warning(key, "no audiences: tokens issued for any other service of this issuer are accepted; list this API's audience")
}

/// A JWKS fetched over plain HTTP from another host.
pub fn plain_http_jwks(key: String) -> Warning {
    warning(
        key,
        "plain http: whoever can alter the response can mint tokens; use https",
    )
}

/// A CRL due for renewal within a week.
pub fn crl_due(key: String, next_update: String) -> Warning {
    warning(
        key,
        format!("the CRL is due for renewal on {next_update}; past it every client certificate is refused; install the next one before then"),
    )
}

/// A JWT leeway of more than five minutes.
pub fn long_leeway(key: String) -> Warning {
    warning(
        key,
        "more than 5 minutes of leeway keeps expired tokens alive",
    )
}

/// A route that accepts API keys when no consumer has one.
pub fn api_key_without_keys(key: String) -> Warning {
    warning(key, "accepts api_key but no consumer has a key")
}

/// An authenticated route without `allow`.
pub fn auth_without_allow(key: String) -> Warning {
    warning(key, "route has auth but no allow: deny by default refuses every request with 403; add allow = { consumers = [\"*\"] } or a narrower rule")
}

/// An `allow` that admits no one.
pub fn empty_allow(key: String) -> Warning {
    warning(key, "allow is empty: every request is refused with 403")
}

/// A rate limit keyed by consumer on a route where no one is authenticated.
pub fn consumer_key_on_public_route(key: String) -> Warning {
    warning(
        key,
        "key = \"consumer\" on a public route: every request is anonymous and shares one bucket",
    )
}

/// An API key that expires within 14 days (or has expired).
pub fn key_expiring(key: String, left: std::time::Duration) -> Warning {
    let message = if left.is_zero() {
        "this API key has expired: it is refused; remove it".to_string()
    } else {
        format!(
            "this API key expires in {} day(s): give its consumer a new one and list both",
            left.as_secs().div_ceil(86_400)
        )
    };
    warning(key, &message)
}

/// A public route with no rate limit.
pub fn public_without_rate_limit(key: String) -> Warning {
    warning(
        key,
        "public route without rate_limit: anyone can send it as much traffic as they like",
    )
}

/// What loading the `[waf]` rules noticed in the operator's files (a `SecRuleRemoveByTag` that
/// only reaches the rules before it).
pub fn waf_rules(message: &str) -> Warning {
    warning("waf.rules", message)
}

/// A part of the `[waf]` rules the engine leaves out on purpose: a note, not a risk the
/// operator can fix.
pub fn waf_gap(message: &str) -> Warning {
    Warning {
        kind: WarningKind::EngineGap,
        ..warning("waf.rules", message)
    }
}

/// A secret file that others may read: group or world permission bits set.
#[cfg(unix)]
pub fn readable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}
