//! gRPC over HTTP/2: how a gRPC call is recognised, what a refusal looks like to a gRPC client
//! (a trailers-only answer: HTTP 200 with `grpc-status` and `grpc-message`, never
//! problem+json, which a gRPC client cannot read), and its `grpc-timeout`.

use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// A gRPC call: `content-type: application/grpc` or `application/grpc+<codec>`. (gRPC-Web,
/// `application/grpc-web*`, frames its trailers in the body and is not one.)
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_type(v.as_bytes()))
}

fn is_grpc_type(value: &[u8]) -> bool {
    let grpc = b"application/grpc";
    value.len() >= grpc.len()
        && value[..grpc.len()].eq_ignore_ascii_case(grpc)
        && matches!(value.get(grpc.len()), None | Some(b'+') | Some(b';'))
}

/// The gRPC status code for a refusal's HTTP status (gRPC's HTTP-to-gRPC mapping, with the
/// gateway's own meanings: a 401 is UNAUTHENTICATED, a 429 RESOURCE_EXHAUSTED).
pub fn status_for(http: u16) -> u8 {
    match http {
        401 => 16,                                    // UNAUTHENTICATED
        403 => 7,                                     // PERMISSION_DENIED
        429 => 8,                                     // RESOURCE_EXHAUSTED
        404 | 405 | 426 => 12,                        // UNIMPLEMENTED
        400 | 411 | 413 | 414 | 415 | 422 | 431 => 3, // INVALID_ARGUMENT
        408 | 504 => 4,                               // DEADLINE_EXCEEDED
        502 | 503 => 14,                              // UNAVAILABLE
        _ => 13,                                      // INTERNAL
    }
}

/// The trailers-only answer for a refused call: HTTP 200, `content-type: application/grpc`,
/// `grpc-status`, and `grpc-message` percent-encoded as the gRPC spec asks.
pub fn refusal_header(status: u16, detail: &str) -> pingora_core::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(200, Some(6))?;
    header.insert_header("Content-Type", "application/grpc")?;
    header.insert_header("grpc-status", status_for(status).to_string())?;
    header.insert_header("grpc-message", encode_message(detail))?;
    Ok(header)
}

/// `grpc-message`: bytes outside printable ASCII, and `%`, as `%XX`.
fn encode_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let text = req.headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_request;

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc;x=1",
        ] {
            assert!(
                is_grpc(&test_request("POST", "/a.B/C", &[("content-type", yes)])),
                "{yes}"
            );
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "application/grpcx",
        ] {
            assert!(
                !is_grpc(&test_request("POST", "/a.B/C", &[("content-type", no)])),
                "{no}"
            );
        }
        assert!(!is_grpc(&test_request("POST", "/a.B/C", &[])));
    }

    #[test]
    fn refusals_map_to_grpc_statuses() {
        for (http, grpc) in [
            (401, 16),
            (403, 7),
            (429, 8),
            (404, 12),
            (405, 12),
            (400, 3),
            (413, 3),
            (502, 14),
            (503, 14),
            (504, 4),
            (500, 13),
        ] {
            assert_eq!(status_for(http), grpc, "{http}");
        }
        let h = refusal_header(401, "no credentials; 100% sure\n").unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.headers["grpc-status"], "16");
        assert_eq!(h.headers["grpc-message"], "no credentials; 100%25 sure%0A");
        assert_eq!(h.headers["content-type"], "application/grpc");
    }

    #[test]
    fn grpc_timeouts_parse_or_are_ignored() {
        let t = |v: &str| timeout(&test_request("POST", "/", &[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "é"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
