//! Observability: Prometheus metrics (and their listener, which also answers the health
//! endpoints), the JSON access log, and what a log may show of a URL.

pub mod access_log;
pub mod grpc;
pub mod handshakes;
pub mod metrics;
pub mod redact;
pub mod tunnels;
