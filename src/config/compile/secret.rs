//! Secrets in the configuration: read from the environment or a file, never written in the
//! config itself. (URLs are shown with their userinfo hidden by `observe::redact`.)

use crate::config::diagnostics::{relative_to, Errors};
use std::path::Path;

/// Read a secret from `{key}.{env_key}` (an environment variable's name) or `{key}.{file_key}`
/// (a file, trailing newlines dropped). `None` when neither is set or on an error (recorded).
pub(super) fn read(
    e: &mut Errors,
    key: &str,
    (env_key, env): (&str, Option<&str>),
    (file_key, path): (&str, Option<&str>),
    config_file: &Path,
) -> Option<Vec<u8>> {
    if let Some(name) = env {
        return match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value.into_bytes()),
            Ok(_) => {
                e.add(
                    format!("{key}.{env_key}"),
                    format!("the environment variable {name} is empty"),
                );
                None
            }
            Err(_) => {
                e.add(
                    format!("{key}.{env_key}"),
                    format!("the environment variable {name} is not set; export it before starting portcullis"),
                );
                None
            }
        };
    }
    let path = relative_to(config_file, path?);
    match std::fs::read(&path) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if bytes.is_empty() {
                e.add(
                    format!("{key}.{file_key}"),
                    format!("{} is empty", path.display()),
                );
                return None;
            }
            #[cfg(unix)]
            if crate::config::lint::readable_by_others(&path) {
                e.warn(crate::config::lint::secret_file_readable(
                    format!("{key}.{file_key}"),
                    &path,
                ));
            }
            Some(bytes)
        }
        Err(err) => {
            e.add(
                format!("{key}.{file_key}"),
                format!("cannot read {}: {err}", path.display()),
            );
            None
        }
    }
}
