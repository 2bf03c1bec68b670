//! Observability: Prometheus metrics (and their listener) and the JSON access log.

pub mod access_log;
pub mod metrics;
