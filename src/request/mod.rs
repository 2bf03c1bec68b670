//! What the gateway learns about a request and adds to it, around the checks: the request id,
//! the client IP and the trace context (SPEC §3 step 1), and the headers the upstream receives
//! (step 11). None of these refuses a request; the checks that may are in `checks`.

pub mod forward;
pub mod grpc;
pub mod identity;
pub mod response;
pub mod trace;
