//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>), part of step 1: the request's
//! place in a distributed trace.
//!
//! A well-formed `traceparent` from the client is kept: the upstream gets the same trace id,
//! parent id and flags (the gateway records no span of its own, so the client's span stays the
//! upstream's parent). A missing or malformed one — and a request with two — starts a trace:
//! a new random trace id and parent id, flag `01` (sampled: the gateway has recorded the
//! request, in its access log). A malformed value is never forwarded. `tracestate` goes along
//! only with a kept `traceparent`, and only when it is well formed (several headers are
//! joined, as the specification allows); otherwise it is dropped.

use pingora_http::RequestHeader;

/// The trace context the upstream gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<parent id>-<flags>`, always version 00 and 55 characters.
    pub traceparent: String,
    pub tracestate: Option<String>,
    /// Whether the client's `traceparent` was kept (else this trace started here).
    pub continued: bool,
}

impl TraceContext {
    /// The 32 lower-case hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or("")
    }
}

/// Whose trace context is kept (`server.trace_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceTrust {
    /// Any client's (`"accept"`, the default).
    Anyone,
    /// Only that of a peer in `server.trusted_proxies`; anyone else's is replaced, so that a
    /// public client cannot join an internal trace or set the sampled flag on every request.
    TrustedProxies,
}

/// Longest `tracestate` passed on: the specification's 32 members of up to 256 characters
/// each would allow 8 KiB; it asks vendors to pass at least 512 characters.
const TRACESTATE_MAX: usize = 512;
const TRACESTATE_MEMBERS_MAX: usize = 32;

/// Read the client's trace context, or start one. `request_id` is used as the new trace id
/// when it has the shape of one (the gateway's own ids do), so that the two match. `trust`
/// (`server.trace_context`) says whose trace context may be kept at all; `peer_trusted`: the
/// peer is one of `server.trusted_proxies`.
pub fn check(
    req: &RequestHeader,
    request_id: &str,
    trust: TraceTrust,
    peer_trusted: bool,
) -> TraceContext {
    let believed = match trust {
        TraceTrust::Anyone => true,
        TraceTrust::TrustedProxies => peer_trusted,
    };
    let mut values = req.headers.get_all("traceparent").iter();
    let kept = match (believed, values.next(), values.next()) {
        (true, Some(v), None) => parse_traceparent(v.as_bytes()),
        _ => None,
    };
    match kept {
        Some(traceparent) => TraceContext {
            traceparent,
            tracestate: tracestate(req),
            continued: true,
        },
        None => TraceContext {
            traceparent: start(request_id),
            tracestate: None,
            continued: false,
        },
    }
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A `traceparent` value in version-00 form, or `None` when it is malformed.
fn parse_traceparent(value: &[u8]) -> Option<String> {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
    let head = value.get(..55)?;
    let (version, trace_id, parent_id, flags) =
        (&head[0..2], &head[3..35], &head[36..52], &head[53..55]);
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    if !is_lower_hex(version) || version == b"ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may add fields after a dash, and
    // is read (and passed on) as version 00.
    if version == b"00" {
        if value.len() != 55 {
            return None;
        }
    } else if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
        return None;
    }
    if trace_id.iter().all(|&b| b == b'0') || parent_id.iter().all(|&b| b == b'0') {
        return None;
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    // Checked above: all ASCII hex.
    out.push_str(std::str::from_utf8(&head[3..]).ok()?);
    Some(out)
}

/// The client's `tracestate` (all its headers, joined by `,`), when well formed.
fn tracestate(req: &RequestHeader) -> Option<String> {
    let mut joined = String::new();
    for value in req.headers.get_all("tracestate") {
        let text = value.to_str().ok()?;
        let text = text.trim_matches([' ', '\t']);
        if text.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
        if joined.len() > TRACESTATE_MAX {
            return None;
        }
    }
    let mut members = 0;
    for member in joined.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let (key, value) = member.split_once('=')?;
        if members > TRACESTATE_MEMBERS_MAX || !valid_key(key) || !valid_value(value) {
            return None;
        }
    }
    (members > 0).then_some(joined)
}

/// `key = simple-key / multi-tenant-key`: lower-case letters, digits and `_-*/`, starting with
/// a letter (or a digit, for a tenant id), at most 256 characters, with at most one `@`.
fn valid_key(key: &str) -> bool {
    let part = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        None => part(key, 256) && key.as_bytes()[0].is_ascii_lowercase(),
        Some((tenant, system)) => {
            part(tenant, 241) && part(system, 14) && system.as_bytes()[0].is_ascii_lowercase()
        }
    }
}

/// `value`: printable ASCII except `,` and `=`, not ending in a space, at most 256 characters.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b',' && b != b'=')
}

/// A new `traceparent`: the request id as trace id when it is 32 lower-case hex digits (not all
/// zero), else a fresh random one; a random parent id; sampled.
fn start(request_id: &str) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    let id = request_id.as_bytes();
    if id.len() == 32 && is_lower_hex(id) && !id.iter().all(|&b| b == b'0') {
        out.push_str(request_id);
    } else {
        let mut buffer = [0u8; uuid::fmt::Simple::LENGTH];
        out.push_str(uuid::Uuid::new_v4().simple().encode_lower(&mut buffer));
    }
    out.push('-');
    // A version-4 UUID fixes 6 of its 128 bits (the version nibble in byte 6, the variant in
    // byte 8); bytes 0–5 and 9–15 are random. The parent id takes eight of those.
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut parent = [0u8; 8];
    parent[..6].copy_from_slice(&random[..6]);
    parent[6..].copy_from_slice(&random[9..11]);
    if parent == [0; 8] {
        parent[7] = 1;
    }
    out.push_str(&hex::encode(parent));
    out.push_str("-01");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_request;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace(headers: &[(&str, &str)]) -> TraceContext {
        check(
            &test_request("GET", "/", headers),
            "0af7651916cd43dd8448eb211c80319c",
            TraceTrust::Anyone,
            false,
        )
    }

    #[test]
    fn a_valid_traceparent_and_tracestate_are_kept() {
        let t = trace(&[
            ("traceparent", VALID),
            ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ("TraceState", "tenant@vendor=x y"),
        ]);
        assert!(t.continued);
        assert_eq!(t.traceparent, VALID);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.tracestate.as_deref(),
            Some("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,tenant@vendor=x y")
        );
        // A later version is read as 00: its extra fields go, the ids stay.
        let t = trace(&[(
            "traceparent",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes",
        )]);
        assert_eq!(t.traceparent, VALID);
    }

    #[test]
    fn a_malformed_traceparent_is_replaced_and_its_tracestate_dropped() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            let t = trace(&[("traceparent", value), ("tracestate", "a=b")]);
            assert!(!t.continued, "{value:?} was kept");
            assert_ne!(t.traceparent, value);
            assert_eq!(t.tracestate, None);
            // The new trace takes the request id as its trace id.
            assert_eq!(t.trace_id(), "0af7651916cd43dd8448eb211c80319c");
            assert!(parse_traceparent(t.traceparent.as_bytes()).is_some());
        }
        // Two traceparent headers: which one is meant is unknown, so neither is.
        let t = trace(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert!(!t.continued);
    }

    #[test]
    fn started_traces_are_well_formed_and_differ() {
        let a = check(
            &test_request("GET", "/", &[]),
            "from-a-proxy",
            TraceTrust::Anyone,
            false,
        );
        let b = check(
            &test_request("GET", "/", &[]),
            "from-a-proxy",
            TraceTrust::Anyone,
            false,
        );
        for t in [&a, &b] {
            assert_eq!(t.traceparent.len(), 55);
            assert_eq!(
                parse_traceparent(t.traceparent.as_bytes()).as_deref(),
                Some(t.traceparent.as_str())
            );
            assert!(t.traceparent.ends_with("-01"));
        }
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.traceparent[36..52], b.traceparent[36..52]);
    }

    #[test]
    fn a_peer_not_believed_starts_a_trace_even_with_a_valid_one() {
        let req = test_request("GET", "/", &[("traceparent", VALID), ("tracestate", "a=b")]);
        let id = "0af7651916cd43dd8448eb211c80319c";
        let t = check(&req, id, TraceTrust::TrustedProxies, false);
        assert!(!t.continued);
        assert_eq!(t.trace_id(), id);
        assert_eq!(t.tracestate, None);
        // A trusted proxy's is kept under the same setting, and anyone's under the default.
        assert!(check(&req, id, TraceTrust::TrustedProxies, true).continued);
        assert!(check(&req, id, TraceTrust::Anyone, false).continued);
    }

    #[test]
    fn malformed_tracestates_are_dropped() {
        let long = format!("k={}", "v".repeat(TRACESTATE_MAX));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        for bad in [
            "novalue",
            "Upper=x",
            "k=a,b",
            "k=x=y",
            "k=é",
            "1abc=x",
            "k@=x",
            long.as_str(),
            many.as_str(),
        ] {
            let t = trace(&[("traceparent", VALID), ("tracestate", bad)]);
            assert!(t.continued);
            assert_eq!(t.tracestate, None, "{bad:?} was kept");
        }
        let t = trace(&[("traceparent", VALID), ("tracestate", " , ")]);
        assert_eq!(t.tracestate, None);
    }
}
