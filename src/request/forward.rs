//! SPEC §3 step 11: what the upstream receives. Identity headers a client could forge are
//! removed, the gateway's own are set, the credential is removed unless the route keeps it,
//! forwarding headers are rebuilt, and the path is the normalised one.

use super::trace::TraceContext;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// What the earlier checks established about the request, and what the route asks.
pub struct Forwarding<'a> {
    /// `keep_credentials` of the route: the client's credential goes on to the upstream.
    pub keep_credentials: bool,
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
    /// Step 1's trace context (`None` only in tests of other headers).
    pub trace: Option<&'a TraceContext>,
}

fn is_identity_header(name: &str) -> bool {
    let lower = name.as_bytes();
    lower.len() > 11
        && (lower[..11].eq_ignore_ascii_case(b"x-consumer-")
            || (lower.len() > 16 && lower[..16].eq_ignore_ascii_case(b"x-authenticated-")))
}

/// Which of the headers this step replaces or drops the client sent, found in one pass over
/// the names: most requests carry none of them, and a removal of an absent header costs a
/// parse and a lookup in each of Pingora's two header maps.
#[derive(Default)]
struct Present {
    /// `X-Consumer-*` and `X-Authenticated-*` (lower case, as `http` keeps names).
    forged: Vec<http::HeaderName>,
    credentials: bool,
    forwarding: bool,
    proxy_only: bool,
    /// `traceparent` or `tracestate`.
    trace: bool,
}

impl Present {
    fn scan(req: &RequestHeader) -> Self {
        let mut p = Present::default();
        for name in req.headers.keys() {
            match name.as_str() {
                "authorization" | "x-api-key" | "dpop" => p.credentials = true,
                "x-forwarded-for" | "x-forwarded-proto" | "x-real-ip" => p.forwarding = true,
                "x-forwarded-host" | "forwarded" => p.proxy_only = true,
                "traceparent" | "tracestate" => p.trace = true,
                other if is_identity_header(other) && !p.forged.contains(name) => {
                    p.forged.push(name.clone())
                }
                _ => {}
            }
        }
        p
    }
}

/// The scheme the client used: the connection's, or what a trusted proxy says in
/// `X-Forwarded-Proto` (`http` or `https`; anything else is ignored).
pub fn client_scheme(req: &RequestHeader, tls: bool, peer_trusted: bool) -> &'static str {
    if peer_trusted {
        match req.headers.get("x-forwarded-proto").map(|v| v.as_bytes()) {
            Some(b"http") => return "http",
            Some(b"https") => return "https",
            _ => {}
        }
    }
    if tls {
        "https"
    } else {
        "http"
    }
}

pub fn prepare(req: &mut RequestHeader, f: &Forwarding) -> pingora_core::Result<()> {
    let present = Present::scan(req);
    for name in &present.forged {
        req.remove_header(name);
    }
    if let Some(consumer) = f.consumer {
        req.insert_header("X-Consumer-Id", consumer)?;
        // No groups or no scopes: the header is left out, not sent empty (an empty value is
        // one that some upstreams misread); any copy the client sent is already gone.
        if !f.groups.is_empty() {
            req.insert_header("X-Consumer-Groups", f.groups.join(","))?;
        }
        if !f.scopes.is_empty() {
            req.insert_header("X-Authenticated-Scopes", f.scopes.join(" "))?;
        }
    }
    req.insert_header("X-Request-Id", f.request_id)?;
    // The client's trace headers are replaced by the checked ones (trace.rs), never passed
    // on as they came (an insert replaces every copy; a tracestate not kept is removed).
    match f.trace {
        Some(trace) => {
            req.insert_header("traceparent", trace.traceparent.as_str())?;
            match &trace.tracestate {
                Some(state) => {
                    req.insert_header("tracestate", state.as_str())?;
                }
                None if present.trace => {
                    req.remove_header("tracestate");
                }
                None => {}
            }
        }
        None if present.trace => {
            req.remove_header("traceparent");
            req.remove_header("tracestate");
        }
        None => {}
    }
    if present.credentials && !f.keep_credentials {
        req.remove_header("authorization");
        req.remove_header("x-api-key");
        req.remove_header("dpop");
    }

    // Forwarding headers: believed (and extended) only from a trusted proxy.
    let mut xff = String::new();
    let proto = client_scheme(req, f.tls, f.peer_trusted && present.forwarding);
    if present.forwarding {
        if f.peer_trusted {
            for value in req.headers.get_all("x-forwarded-for") {
                if let Ok(text) = value.to_str() {
                    if !xff.is_empty() {
                        xff.push_str(", ");
                    }
                    xff.push_str(text);
                }
            }
        }
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-real-ip"] {
            req.remove_header(name);
        }
    }
    if present.proxy_only && !f.peer_trusted {
        req.remove_header("x-forwarded-host");
        req.remove_header("forwarded");
    }
    if !xff.is_empty() {
        xff.push_str(", ");
    }
    crate::text::push_ip(&mut xff, f.peer_ip);
    // Without a trusted proxy the client is the peer: the address is formatted once.
    let real_ip = if !f.peer_trusted && f.client_ip == f.peer_ip {
        xff.clone()
    } else {
        crate::text::ip_string(f.client_ip)
    };
    req.insert_header("X-Forwarded-For", xff)?;
    req.insert_header("X-Forwarded-Proto", http::HeaderValue::from_static(proto))?;
    req.insert_header("X-Real-IP", real_ip)?;

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

    fn forwarding(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            keep_credentials: false,
            request_id: "rid",
            client_ip: "192.0.2.7".parse().unwrap(),
            peer_ip: "10.0.0.1".parse().unwrap(),
            peer_trusted: trusted,
            tls: false,
            path_and_query: "/a/b?x=1",
            consumer: None,
            groups: &[],
            scopes: &[],
            trace: None,
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
        prepare(&mut r, &forwarding(false)).unwrap();
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
    fn identity_headers_without_groups_or_scopes_are_left_out() {
        let groups = ["staff".to_string(), "ops".to_string()];
        let scopes = ["orders:read".to_string()];
        for (groups, scopes, want_groups, want_scopes) in [
            (
                &groups[..],
                &scopes[..],
                Some("staff,ops"),
                Some("orders:read"),
            ),
            (&groups[..], &[][..], Some("staff,ops"), None),
            (&[][..], &scopes[..], None, Some("orders:read")),
            (&[][..], &[][..], None, None),
        ] {
            let mut r = req();
            let f = Forwarding {
                consumer: Some("alice"),
                groups,
                scopes,
                ..forwarding(false)
            };
            prepare(&mut r, &f).unwrap();
            assert_eq!(r.headers["x-consumer-id"], "alice");
            // The client's forged copies are gone in every case.
            let value = |name: &str| {
                let all: Vec<_> = r.headers.get_all(name).iter().collect();
                assert!(all.len() <= 1, "{name}: {all:?}");
                all.first().map(|v| v.to_str().unwrap().to_string())
            };
            assert_eq!(value("x-consumer-groups").as_deref(), want_groups);
            assert_eq!(value("x-authenticated-scopes").as_deref(), want_scopes);
        }
    }

    #[test]
    fn trusted_peer_chain_extended_and_credentials_kept_on_request() {
        let mut r = req();
        let f = Forwarding {
            keep_credentials: true,
            ..forwarding(true)
        };
        prepare(&mut r, &f).unwrap();
        assert_eq!(r.headers["x-forwarded-for"], "6.6.6.6, 10.0.0.1");
        assert_eq!(r.headers["authorization"], "Bearer secret");
        assert!(r.headers.get("x-consumer-id").is_none());
    }

    #[test]
    fn forwarding_headers_follow_trust() {
        // (peer trusted, client's extra headers, expected X-Forwarded-For, -Proto, X-Real-IP,
        // whether X-Forwarded-Host survives)
        type Case<'a> = (
            bool,
            &'a [(&'a str, &'a str)],
            &'a str,
            &'a str,
            &'a str,
            bool,
        );
        let cases: &[Case] = &[
            (false, &[], "10.0.0.1", "http", "192.0.2.7", false),
            (
                false,
                &[
                    ("X-Forwarded-Proto", "https"),
                    ("X-Real-IP", "6.6.6.6"),
                    ("X-Forwarded-Host", "evil"),
                ],
                "10.0.0.1",
                "http",
                "192.0.2.7",
                false,
            ),
            (
                true,
                &[
                    ("X-Forwarded-For", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "api.example"),
                ],
                "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1",
                "https",
                "192.0.2.7",
                true,
            ),
            (
                true,
                &[("X-Forwarded-Proto", "ftp")],
                "10.0.0.1",
                "http",
                "192.0.2.7",
                false,
            ),
        ];
        for &(trusted, extra, xff, proto, real, host_kept) in cases {
            let mut r = RequestHeader::build("GET", b"/a", None).unwrap();
            for (k, v) in extra {
                r.append_header(*k, *v).unwrap();
            }
            prepare(&mut r, &forwarding(trusted)).unwrap();
            let all = |name: &str| -> Vec<&str> {
                r.headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect()
            };
            assert_eq!(all("x-forwarded-for"), [xff], "{extra:?}");
            assert_eq!(all("x-forwarded-proto"), [proto], "{extra:?}");
            assert_eq!(all("x-real-ip"), [real], "{extra:?}");
            assert_eq!(r.headers.contains_key("x-forwarded-host"), host_kept);
        }
    }

    #[test]
    fn every_copy_of_a_forged_identity_header_goes() {
        let mut r = RequestHeader::build("GET", b"/a", None).unwrap();
        for (k, v) in [
            ("X-Consumer-Id", "admin"),
            ("x-consumer-id", "root"),
            ("X-CONSUMER-GROUPS", "ops"),
            ("X-Authenticated-Userid", "admin"),
            ("X-Consumer", "not an identity header, kept"),
        ] {
            r.append_header(k, v).unwrap();
        }
        let mut f = forwarding(false);
        f.consumer = Some("alice");
        prepare(&mut r, &f).unwrap();
        let ids: Vec<_> = r.headers.get_all("x-consumer-id").iter().collect();
        assert_eq!(ids, ["alice"]);
        // The forged groups are gone, and alice has none: no header at all.
        assert!(r.headers.get("x-consumer-groups").is_none());
        assert!(r.headers.get("x-authenticated-userid").is_none());
        assert_eq!(r.headers["x-consumer"], "not an identity header, kept");
        // What goes on the wire has one line per header, in the case it was set in.
        let mut wire = bytes::BytesMut::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        assert_eq!(
            wire.matches("X-Consumer-Id: alice\r\n").count(),
            1,
            "{wire}"
        );
        assert!(!wire.to_ascii_lowercase().contains("admin"), "{wire}");
    }
}
