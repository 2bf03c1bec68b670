//! `[rate_limit_store]`: the Redis URL, its password and CA, and what to do when it is down.

use super::{pem_certificates, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::secret;
use std::path::Path;

/// `[rate_limit_store]`. The URL is only ever shown with its userinfo hidden.
pub(super) fn store_settings(e: &mut Errors, s: &RawRateLimitStore, file: &Path) -> StoreSettings {
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
    let password = secret::read(
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
