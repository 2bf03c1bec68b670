//! portcullis: a security-first HTTP API gateway on Pingora.
//!
//! `config` compiles the TOML file into an immutable model; `gateway` is the `ProxyHttp`
//! implementation that runs the checks of `checks` in SPEC order; `server` assembles the
//! Pingora services.

pub mod audit;
pub mod checks;
pub mod config;
pub mod context;
pub mod discovery;
pub mod echo;
pub mod files;
pub mod gateway;
pub mod health;
pub mod jwks;
pub mod keys;
pub mod observe;
pub mod outbound;
pub mod percent;
pub mod problem;
pub mod request;
pub mod server;
pub mod stream;
pub mod text;
pub mod tls;
pub mod upstream;
pub mod waf;
