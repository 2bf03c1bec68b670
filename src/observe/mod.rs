//! Observability: Prometheus metrics and health endpoints (and their listener), the JSON access
//! log, and what a log may show of a URL.

pub mod access_log;
pub mod health;
pub mod metrics;
pub mod redact;
