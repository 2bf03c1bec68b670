//! A validated HTTP/2 body larger than Pingora's 64 KiB retry buffer, forwarded through a
//! Pingora subrequest: the body was read whole by step 9, so Pingora cannot forward it from
//! the HTTP/2 stream any more. The request goes on in a subrequest of the same gateway whose
//! body is the validated bytes (framed by `Content-Length`), and whose answer Pingora pipes
//! back to the client's stream. The subrequest carries the request's context over — route,
//! identity, rate-limit slots, request id — so no check runs twice, and it alone logs and
//! counts the request.

use crate::context::RequestCtx;
use bytes::Bytes;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora_proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use pingora_proxy::Session;

/// What the request hands its subrequest.
struct Delegated {
    ctx: Option<RequestCtx>,
    body_len: usize,
}

/// Forward `body` through a subrequest and pipe its answer to the client; the request's
/// context moves into the subrequest (`ctx` is left empty and `delegated`).
pub(super) async fn forward(
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<()> {
    // Pingora makes the subrequest's head by writing this one as HTTP/1 text and parsing it
    // back: it must say HTTP/1.1 and carry the authority as `Host`.
    let head = session.req_header_mut();
    head.set_version(http::Version::HTTP_11);
    if !head.headers.contains_key(http::header::HOST) {
        if let Some(authority) = head.uri.authority().map(|a| a.as_str().to_string()) {
            head.insert_header(http::header::HOST, authority)?;
        }
    }
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Error::e_explain(ErrorType::InternalError, "no subrequest spawner");
    };
    let parent = std::mem::take(ctx);
    ctx.delegated = true;
    let delegated = Delegated {
        ctx: Some(parent),
        body_len: body.len(),
    };
    let sub_ctx = SubrequestCtx::builder()
        .body_mode(BodyMode::ExpectBody)
        .user_ctx(Box::new(delegated))
        .build();
    let (prepared, handle) = spawner.create_subrequest(session.as_downstream(), sub_ctx);
    let input = InputBodyType::Preset(InputBody::Bytes(vec![body]));
    match pipe_subrequest(session, prepared, handle, |task| Ok(Some(task)), input).await {
        Ok(state) => {
            // The subrequest writes the access-log line: let it finish first.
            if let Some(join) = state.join_handle {
                let _ = join.await;
            }
            Ok(())
        }
        Err(failed) => Err(failed.error),
    }
}

/// In a subrequest made by `forward`: take over the request's context and frame the body by
/// its length. `false` for any other request.
pub(super) fn take_over(session: &mut Session, ctx: &mut RequestCtx) -> bool {
    let delegated = session
        .subrequest_ctx
        .as_mut()
        .and_then(|c| c.user_ctx_mut())
        .and_then(|u| u.downcast_mut::<Delegated>());
    let Some(delegated) = delegated else {
        return false;
    };
    if let Some(parent) = delegated.ctx.take() {
        *ctx = parent;
    }
    let len = delegated.body_len.to_string();
    let head = session.req_header_mut();
    head.remove_header("transfer-encoding");
    head.remove_header("expect");
    // A header value of digits is always valid.
    let _ = head.insert_header("Content-Length", len);
    true
}
