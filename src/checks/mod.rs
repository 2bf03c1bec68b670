//! One module per check of SPEC §3, each with one entry point, `check`: it reads the request
//! (and what earlier steps found) and answers `Ok` with what it found, or `Err(Refusal)` to
//! stop. A refusal names its metric family (`problem::Family`); the step's policy — the JWKS
//! refetch, the throttle's bookkeeping, the shared quota, block or detect — stays inside the
//! module. Only `gateway::respond` turns a refusal into a response, metrics and a log line.

pub mod acl;
pub mod auth;
pub mod body;
pub mod cors;
pub mod ip;
pub mod limits;
pub mod path;
pub mod rate_limit;
pub mod route;
pub mod threat;
pub mod throttle;
pub mod websocket;

/// What the checks let a request go on to.
pub enum Checked {
    /// The upstream.
    Forward,
    /// Nowhere: a CORS preflight, answered `204` with these headers.
    Preflight(Vec<cors::CorsHeader>),
    /// The upstream, through a subrequest carrying this body (an HTTP/2 body read whole that
    /// Pingora's retry buffer could not hold).
    Subrequest(bytes::Bytes),
}

/// A request head for unit tests of the checks.
#[cfg(test)]
pub(crate) fn test_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> pingora_http::RequestHeader {
    let mut r = pingora_http::RequestHeader::build(method, path.as_bytes(), None)
        .expect("a valid test request");
    for (k, v) in headers {
        r.append_header(k.to_string(), *v)
            .expect("a valid test header");
    }
    r
}
