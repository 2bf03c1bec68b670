//! `[rate_limit_store]`: the Redis URL, its password and CA, and what to do when it is down.

use super::secret;
use super::values::pem_certificates;
use crate::checks::rate_limit::shared::StoreSettings;
use crate::config::diagnostics::Errors;
use crate::config::lint;
use crate::config::raw::*;
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
                    e.warn(lint::password_in_url("rate_limit_store.redis"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::rate_limit::shared::OnStoreError;
    use crate::config::compile::testing::section;

    fn compile(toml: &str) -> (StoreSettings, Vec<String>, Vec<String>) {
        section(toml, |e, s: &RawRateLimitStore, file| {
            store_settings(e, s, file)
        })
    }

    #[test]
    fn a_plain_url_and_the_default_policy() {
        let (s, errors, warnings) = compile("redis = \"redis://127.0.0.1:6379/0\"");
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{errors:?} {warnings:?}"
        );
        assert_eq!(s.on_store_error, OnStoreError::Local);
        assert!(s.password.is_none() && s.ca.is_none());
    }

    #[test]
    fn a_password_in_the_url_is_warned_about_and_never_shown() {
        let (s, errors, warnings) =
            compile("redis = \"redis://:s3cret@127.0.0.1:6379\"\non_store_error = \"deny\"");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.on_store_error, OnStoreError::Deny);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("rate_limit_store.redis: the URL carries a password"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn each_mistake_names_its_key_without_the_secret() {
        let cases = [
            (
                "redis = \"http://:s3cret@host\"",
                "rate_limit_store.redis: \"http://***@host\"",
            ),
            (
                "redis = \"rediss://h:1#insecure\"",
                "rate_limit_store.redis: #insecure",
            ),
            (
                "redis = \"redis://h:1\"\npassword_env = \"A\"\npassword_file = \"b\"",
                "rate_limit_store: password_env and password_file both set",
            ),
            (
                "redis = \"redis://h:1\"\non_store_error = \"maybe\"",
                "rate_limit_store.on_store_error",
            ),
        ];
        for (toml, expected) in cases {
            let (_, errors, _) = compile(toml);
            assert!(
                errors.iter().any(|x| x.starts_with(expected)),
                "{toml}: {errors:?}"
            );
            assert!(errors.iter().all(|x| !x.contains("s3cret")), "{errors:?}");
        }
    }
}
