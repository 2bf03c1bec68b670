//! SPEC §3 step 11: what the upstream receives. Identity headers a client could forge are
//! removed, the gateway's own are set, the credential is removed unless the route keeps it,
//! forwarding headers are rebuilt, and the path is the normalised one.

use super::route::Route;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// What the earlier checks established about the request.
pub struct Forwarding<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub peer_ip: IpAddr,
    pub peer_trusted: bool,
    pub tls: bool,
    /// Path (normalised, prefix stripped) plus `?query` when there is one.
    pub path_and_query: &'a str,
    pub consumer: Option<&'a str>,
    pub groups: &'a [String],
    pub scopes: &'a [String],
}

fn is_identity_header(name: &str) -> bool {
    let lower = name.as_bytes();
    lower.len() > 11
        && (lower[..11].eq_ignore_ascii_case(b"x-consumer-")
            || (lower.len() > 16 && lower[..16].eq_ignore_ascii_case(b"x-authenticated-")))
}

pub fn prepare(req: &mut RequestHeader, route: &Route, f: &Forwarding) -> pingora_core::Result<()> {
    let forged: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    for name in forged {
        req.remove_header(&name);
    }
    if let Some(consumer) = f.consumer {
        req.insert_header("X-Consumer-Id", consumer)?;
        req.insert_header("X-Consumer-Groups", f.groups.join(","))?;
        req.insert_header("X-Authenticated-Scopes", f.scopes.join(" "))?;
    }
    req.insert_header("X-Request-Id", f.request_id)?;
    if !route.keep_credentials {
        req.remove_header("authorization");
        req.remove_header("x-api-key");
    }

    // Forwarding headers: believed (and extended) only from a trusted proxy.
    let existing_xff = if f.peer_trusted {
        let joined: Vec<String> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        None
    };
    let proto_from_proxy = if f.peer_trusted {
        req.headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|v| *v == "http" || *v == "https")
            .map(str::to_string)
    } else {
        None
    };
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-real-ip"] {
        req.remove_header(name);
    }
    if !f.peer_trusted {
        req.remove_header("x-forwarded-host");
        req.remove_header("forwarded");
    }
    let xff = match existing_xff {
        Some(chain) => format!("{chain}, {}", f.peer_ip),
        None => f.peer_ip.to_string(),
    };
    req.insert_header("X-Forwarded-For", xff)?;
    let proto =
        proto_from_proxy.unwrap_or_else(|| if f.tls { "https" } else { "http" }.to_string());
    req.insert_header("X-Forwarded-Proto", proto)?;
    req.insert_header("X-Real-IP", f.client_ip.to_string())?;

    // Absolute-form (`GET http://host/path`): the authority, which routing used, wins over any
    // Host header (RFC 9112 §3.2.2), so the upstream sees the host the gateway routed on.
    if let Some(authority) = req.uri.authority().cloned() {
        req.insert_header("Host", authority.as_str())?;
    }
    let uri: http::Uri = f.path_and_query.parse().map_err(|e| {
        pingora_core::Error::because(
            pingora_core::ErrorType::InternalError,
            "normalised path is not a valid URI",
            e,
        )
    })?;
    req.set_uri(uri);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::route::PathMatch;

    fn route(keep: bool) -> Route {
        let mut r = Route::public("r", PathMatch::Prefix("/".into()), 0);
        r.keep_credentials = keep;
        r
    }

    fn forwarding(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            request_id: "rid",
            client_ip: "192.0.2.7".parse().unwrap(),
            peer_ip: "10.0.0.1".parse().unwrap(),
            peer_trusted: trusted,
            tls: false,
            path_and_query: "/a/b?x=1",
            consumer: None,
            groups: &[],
            scopes: &[],
        }
    }

    fn req() -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/a/../a/b?x=1", None).unwrap();
        for (k, v) in [
            ("X-Consumer-Id", "admin"),
            ("x-consumer-groups", "root"),
            ("X-Authenticated-Scopes", "all"),
            ("Authorization", "Bearer secret"),
            ("X-API-Key", "k"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Request-Id", "spoofed"),
        ] {
            r.append_header(k, v).unwrap();
        }
        r
    }

    #[test]
    fn untrusted_peer_gets_clean_headers() {
        let mut r = req();
        prepare(&mut r, &route(false), &forwarding(false)).unwrap();
        assert!(r.headers.get("x-consumer-id").is_none());
        assert!(r.headers.get("x-consumer-groups").is_none());
        assert!(r.headers.get("x-authenticated-scopes").is_none());
        assert!(r.headers.get("authorization").is_none());
        assert!(r.headers.get("x-api-key").is_none());
        assert!(r.headers.get("forwarded").is_none());
        assert_eq!(r.headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(r.headers["x-request-id"], "rid");
        assert_eq!(r.headers["x-real-ip"], "192.0.2.7");
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.uri.to_string(), "/a/b?x=1");
    }

    #[test]
    fn trusted_peer_chain_extended_and_credentials_kept_on_request() {
        let mut r = req();
        prepare(&mut r, &route(true), &forwarding(true)).unwrap();
        assert_eq!(r.headers["x-forwarded-for"], "6.6.6.6, 10.0.0.1");
        assert_eq!(r.headers["authorization"], "Bearer secret");
        assert!(r.headers.get("x-consumer-id").is_none());
    }
}
