//! Raw configuration → validated model, one file per section of the TOML (as `raw.rs` and
//! `model.rs` are laid out). Every problem is collected (not just the first), and each names
//! its key path and the fix. Files a setting points at (keys, certificates, JWKS, schemas) are
//! read and checked here, so a config that loads is a config that runs.

mod cors;
mod discovery;
mod identities;
mod introspection;
mod limits;
mod response;
mod routes;
mod secret;
mod server;
mod store;
mod upstreams;
mod values;
mod waf;
mod websocket;

use super::diagnostics::{ConfigError, Errors, Warning};
use super::model::*;
use super::raw::*;
use crate::checks::route::RouteTable;
use std::path::Path;

pub fn compile(raw: RawConfig, file: &Path) -> Result<(Config, Vec<Warning>), Vec<ConfigError>> {
    let mut errors = Errors::new(file);
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
    let mut identities = identities::compile(e, &raw.jwt_providers, &raw.consumers, file);
    identities.dpop = server::compile_dpop(e, &raw.security, file);
    let mtls_listener = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
    let limits = limits::compile_limits(e, &raw.limits);
    let upstreams = upstreams::compile_upstreams(e, &raw.upstreams, file);
    let waf = waf::compile(e, raw.waf.as_ref(), file);
    let response = response::defaults(e, &raw.response);
    let cors = cors::defaults(e, raw.cors.as_ref());
    let routes = routes::compile_routes(
        e,
        &raw.routes,
        &upstreams,
        &routes::RouteDefaults {
            limits: &limits,
            ids: &identities,
            mtls_listener,
            waf: waf.as_ref(),
            response: &response,
            cors: &cors,
        },
        file,
    );

    let warnings = errors.finish()?;
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
            hsts: response.hsts.clone(),
        },
        warnings,
    ))
}

/// Compiling one section on its own, for the sections' unit tests.
#[cfg(test)]
mod testing {
    use crate::config::diagnostics::Errors;
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
        let mut e = Errors::new(file);
        let made = compile(&mut e, &raw, file);
        let errors = e
            .errors()
            .iter()
            .map(|x| format!("{}: {}", x.key, x.message));
        let warnings = e
            .warnings()
            .iter()
            .map(|w| format!("{}: {}", w.key, w.message));
        (made, errors.collect(), warnings.collect())
    }
}
