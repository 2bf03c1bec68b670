//! SPEC §3 step 1: the request id and the client IP. An incoming `X-Request-Id` is kept only
//! from a trusted proxy and only when well formed; otherwise portcullis makes one.

use crate::checks::ip::{client_ip, CidrSet};
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// Longest incoming request id that is kept.
const MAX_REQUEST_ID: usize = 128;

fn well_formed_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn new_request_id() -> String {
    // Written straight into a buffer: `to_string` goes through `core::fmt`, several times the
    // cost of the hex encoding itself.
    let mut buffer = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// Who sent the request, and the id it is known by.
#[derive(Debug, Clone)]
pub struct Identity {
    pub request_id: String,
    pub client_ip: IpAddr,
    pub peer_trusted: bool,
}

pub fn identify(req: &RequestHeader, peer: IpAddr, trusted: &CidrSet) -> Identity {
    let peer_trusted = !trusted.is_empty() && trusted.contains(peer);
    let request_id = if peer_trusted {
        let mut values = req.headers.get_all("x-request-id").iter();
        match (values.next(), values.next()) {
            (Some(v), None) if well_formed_request_id(v.as_bytes()) => {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => new_request_id(),
        }
    } else {
        new_request_id()
    };
    let forwarded = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    Identity {
        request_id,
        client_ip: client_ip(peer, forwarded, trusted),
        peer_trusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        crate::checks::test_request("GET", "/", headers)
    }

    #[test]
    fn request_id_kept_only_from_trusted_well_formed() {
        let trusted = CidrSet::parse(&["10.0.0.0/8"]).unwrap();
        let r = req(&[("X-Request-Id", "abc-123")]);
        assert_eq!(
            identify(&r, "10.1.1.1".parse().unwrap(), &trusted).request_id,
            "abc-123"
        );
        assert_ne!(
            identify(&r, "192.0.2.1".parse().unwrap(), &trusted).request_id,
            "abc-123"
        );
        let bad = req(&[("X-Request-Id", "abc 123<script>")]);
        assert_ne!(
            identify(&bad, "10.1.1.1".parse().unwrap(), &trusted).request_id,
            "abc 123<script>"
        );
        let long = "a".repeat(200);
        let r = req(&[("X-Request-Id", &long)]);
        assert_eq!(
            identify(&r, "10.1.1.1".parse().unwrap(), &trusted)
                .request_id
                .len(),
            32
        );
        let twice = req(&[("X-Request-Id", "a"), ("X-Request-Id", "b")]);
        assert_eq!(
            identify(&twice, "10.1.1.1".parse().unwrap(), &trusted)
                .request_id
                .len(),
            32
        );
    }

    #[test]
    fn new_request_ids_are_32_lower_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn spoofed_forwarded_for_ignored_from_untrusted() {
        let trusted = CidrSet::parse(&["10.0.0.0/8"]).unwrap();
        let r = req(&[("X-Forwarded-For", "1.2.3.4")]);
        let id = identify(&r, "192.0.2.1".parse().unwrap(), &trusted);
        assert_eq!(id.client_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(!id.peer_trusted);
        let id = identify(&r, "10.0.0.1".parse().unwrap(), &trusted);
        assert_eq!(id.client_ip, "1.2.3.4".parse::<IpAddr>().unwrap());
    }
}
