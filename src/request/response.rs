//! An upstream's response on its way back (SPEC §3 step 11): its banners removed, then the
//! route's response headers applied — `X-Content-Type-Options: nosniff` and, on a route that
//! authenticates, `Cache-Control: no-store` where the upstream set none, and the headers the
//! config names.

use crate::checks::cors::{CorsHeader, VARY_ORIGIN};
use http::{HeaderName, HeaderValue};
use pingora_core::Result;
use pingora_http::ResponseHeader;

/// What upstream software says of itself: names and versions an attacker matches against known
/// vulnerabilities, of no use to a client.
pub const BANNERS: [&str; 4] = [
    "Server",
    "X-Powered-By",
    "X-AspNet-Version",
    "X-AspNetMvc-Version",
];

/// A route's response headers (`[response]`, overridden per route by `response = {…}`).
#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    /// `X-Content-Type-Options: nosniff` where the upstream did not say it.
    pub nosniff: bool,
    /// `Cache-Control: no-store` where the upstream set no `Cache-Control` (authenticated
    /// routes, unless turned off: what one consumer was sent is not kept by a shared cache).
    pub no_store: bool,
    /// Set on every response, replacing the upstream's.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Default for ResponsePolicy {
    /// As for a public route with no `[response]`.
    fn default() -> Self {
        ResponsePolicy {
            nosniff: true,
            no_store: false,
            headers: Vec::new(),
        }
    }
}

/// Apply `policy` to an upstream's response head.
pub fn harden(header: &mut ResponseHeader, policy: &ResponsePolicy) -> Result<()> {
    for name in BANNERS {
        header.remove_header(name);
    }
    if policy.nosniff && header.headers.get("x-content-type-options").is_none() {
        header.insert_header("X-Content-Type-Options", "nosniff")?;
    }
    if policy.no_store && header.headers.get("cache-control").is_none() {
        header.insert_header("Cache-Control", "no-store")?;
    }
    for (name, value) in &policy.headers {
        header.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// On a CORS route the gateway alone speaks CORS: the upstream's `Access-Control-*` headers
/// are replaced by `headers` (none for an origin that is not allowed), and `Vary: Origin` is
/// added so that no cache hands one origin's answer to another.
pub fn cors(header: &mut ResponseHeader, headers: &[CorsHeader]) -> Result<()> {
    let upstream_own: Vec<HeaderName> = header
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream_own {
        header.remove_header(&name);
    }
    for (name, value) in headers {
        header.insert_header(*name, value.as_str())?;
    }
    header.append_header("Vary", VARY_ORIGIN)?;
    Ok(())
}
