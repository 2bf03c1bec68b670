//! Reading a body that step 9 or 10 must see whole: `100-continue` answered, each read bounded
//! by `body_read_timeout`, reading stopped as soon as the limit is crossed, and an HTTP/2 body
//! held to what Pingora can hand back for forwarding (`stream::replay`).

use crate::problem::Refusal;
use crate::stream::replay;
use bytes::{Bytes, BytesMut};
use pingora_core::ErrorType;
use pingora_proxy::Session;
use std::time::Duration;

/// Read the whole body, up to `limit` bytes; past it, `over_limit` is the answer.
pub async fn whole(
    session: &mut Session,
    limit: u64,
    timeout: Duration,
    over_limit: impl Fn() -> Refusal,
) -> Result<Bytes, Refusal> {
    replay::before_reading(session);
    let expects_continue = session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|_| unreadable())?;
    }
    let mut buffer = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(timeout, session.read_request_body()).await {
            // Pingora's own read timeout is the same `body_read_timeout` (`super::check` sets
            // it); whichever of the two fires first, the answer is the same.
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) if matches!(e.etype(), ErrorType::ReadTimedout) => return Err(timed_out()),
            Ok(Err(_)) => return Err(unreadable()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(over_limit());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Whether the request has a body to read: chunked, or a non-zero `Content-Length`.
pub fn has_body(req: &pingora_http::RequestHeader) -> bool {
    req.headers.contains_key("transfer-encoding")
        || req
            .headers
            .get("content-length")
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn timed_out() -> Refusal {
    Refusal::invalid(
        408,
        "body_timeout",
        "the request body was not received in time",
    )
}

fn unreadable() -> Refusal {
    Refusal::bad_request("body_unreadable", "the request body could not be read")
}
