//! Giving a body that `request_filter` has already read back to Pingora, so that it is
//! forwarded byte for byte. Pingora forwards a consumed body only from its retry buffer, which
//! holds 64 KiB; a larger validated body would otherwise never reach the upstream.
//!
//! A body of up to 64 KiB is forwarded from the retry buffer, over HTTP/1 and HTTP/2 alike.
//! A larger HTTP/1 body: the downstream session is rebuilt on the same connection, wrapped so
//! that it first reads the request head again (now framed by `Content-Length`) and the body,
//! which Pingora parses exactly as if the client had sent them; then the connection continues
//! as before. A larger HTTP/2 body goes through a subrequest (`gateway::delegate`).
//!
//! This retires once Pingora can forward a body read before `upstream_peer` itself: the
//! opt-in early body buffering of cloudflare/pingora pull request #816 (issue #780), not
//! merged in the Pingora 0.9 used here.

use bytes::{BufMut, Bytes, BytesMut};
use pingora_core::protocols::http::v1::server::HttpSession as SessionV1;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_core::protocols::Stream;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Prepare a session whose body is about to be read in `request_filter`: Pingora keeps what
/// is read, up to 64 KiB, in its retry buffer.
pub fn before_reading(session: &mut Session) {
    session.as_downstream_mut().enable_retry_buffering();
}

/// The request head as HTTP/1.1 bytes, framed by `Content-Length: body_len`.
fn request_head(session: &SessionV1, body_len: usize) -> Result<BytesMut> {
    let mut head = session.req_header().clone();
    head.remove_header("transfer-encoding");
    head.remove_header("content-length");
    // The body is here already: the client must not be told to send it again.
    head.remove_header("expect");
    head.insert_header("Content-Length", body_len.to_string())?;
    let version = if head.version == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut out = BytesMut::with_capacity(512 + body_len);
    out.put_slice(head.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.raw_path());
    out.put_u8(b' ');
    out.put_slice(version.as_bytes());
    out.put_slice(b"\r\n");
    head.header_to_h1_wire(&mut out);
    out.put_slice(b"\r\n");
    Ok(out)
}

/// The connection, with bytes to be read again before whatever the client sends next.
pub(super) struct ReplayStream {
    pending: Bytes,
    inner: Stream,
}

impl std::fmt::Debug for ReplayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayStream")
            .field("pending", &self.pending.len())
            .field("inner", &self.inner)
            .finish()
    }
}

impl ReplayStream {
    /// The connection under the replayed bytes.
    pub(super) fn inner(&self) -> &Stream {
        &self.inner
    }

    /// Wrap `inner`; a previous wrapper (from an earlier request on this connection) is
    /// unwrapped so that wrappers never nest.
    fn wrap(replayed: Bytes, inner: Stream) -> Stream {
        let (rest, inner) = if inner.as_any().is::<ReplayStream>() {
            match inner.into_any().downcast::<ReplayStream>() {
                Ok(previous) => (previous.pending, previous.inner),
                Err(_) => unreachable!("type checked just above"),
            }
        } else {
            (Bytes::new(), inner)
        };
        let pending = if rest.is_empty() {
            replayed
        } else {
            let mut joined = BytesMut::with_capacity(replayed.len() + rest.len());
            joined.put_slice(&replayed);
            joined.put_slice(&rest);
            joined.freeze()
        };
        Box::new(ReplayStream { pending, inner })
    }
}

impl AsyncRead for ReplayStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            let chunk = self.pending.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReplayStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::pass_through_io!(ReplayStream);

/// Where a body handed back goes from.
pub enum Replayed {
    /// The session forwards it (retry buffer, or a rebuilt HTTP/1 session).
    InPlace,
    /// Only a subrequest can carry it (an HTTP/2 body past the retry buffer).
    Subrequest(Bytes),
}

/// Hand `body` back to Pingora for forwarding. The replayed head is parsed once on its own
/// before the connection is touched, so a failure leaves the session as it was and the
/// refusal still reaches the client.
pub async fn replay(session: &mut Session, body: Bytes) -> Result<Replayed> {
    // A body of up to 64 KiB is whole in the retry buffer, which Pingora forwards first (over
    // HTTP/1 its framing header stays as the client sent it; the bytes are the same).
    let buffered = |session: &Session| {
        session
            .as_downstream()
            .get_retry_buffer()
            .is_some_and(|buffer| buffer == body)
    };
    let replayed = match &*session.downstream_session {
        HttpSession::H2(_) if buffered(session) => return Ok(Replayed::InPlace),
        // Past the retry buffer an HTTP/2 stream cannot give its body again.
        HttpSession::H2(_) => return Ok(Replayed::Subrequest(body)),
        HttpSession::H1(_) if buffered(session) => {
            // The body is here already: the upstream must not wait to be told to send it.
            session.req_header_mut().remove_header("expect");
            return Ok(Replayed::InPlace);
        }
        HttpSession::H1(current) => {
            let head = request_head(current, body.len())?;
            if !parses(head.clone().freeze()).await {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "the replayed request head does not parse",
                );
            }
            let mut replayed = head;
            replayed.put_slice(&body);
            replayed.freeze()
        }
        _ => {
            return Error::e_explain(
                ErrorType::InternalError,
                "cannot replay the body of this session type",
            )
        }
    };
    let placeholder = HttpSession::new_http1(Box::new(tokio::io::duplex(1).0));
    let HttpSession::H1(mut old) = std::mem::replace(&mut *session.downstream_session, placeholder)
    else {
        unreachable!("matched as HTTP/1 just above");
    };
    let settings = Settings::of(&mut old);
    let mut fresh = SessionV1::new(ReplayStream::wrap(replayed, old.into_inner()));
    // The head was parsed above from the same bytes, which are read from memory before the
    // connection: this parse cannot fail where that one succeeded.
    let parsed = fresh.read_request().await;
    settings.apply(&mut fresh);
    *session.downstream_session = HttpSession::H1(fresh);
    match parsed {
        Ok(Some(_)) => Ok(Replayed::InPlace),
        Ok(None) => Error::e_explain(ErrorType::InternalError, "the replayed request is empty"),
        Err(e) => Err(e),
    }
}

/// Whether `head` parses as a request head, on its own.
async fn parses(head: Bytes) -> bool {
    let (mut client, server) = tokio::io::duplex(head.len() + 1);
    if tokio::io::AsyncWriteExt::write_all(&mut client, &head)
        .await
        .is_err()
    {
        return false;
    }
    drop(client);
    matches!(
        SessionV1::new(Box::new(server)).read_request().await,
        Ok(Some(_))
    )
}

/// What a rebuilt session must keep of the one it replaces: every setting Pingora or the
/// gateway sets on a downstream HTTP/1 session and that can be read back. Pingora 0.9 offers
/// no getter for `min_send_rate`, `ignore_info_resp`, `abort_on_close` and
/// `close_on_response_before_downstream_finish`; neither Pingora's proxy nor portcullis sets
/// them (they keep their defaults, which the new session has too), and the pipelined prefix
/// exists only with pipelining, which portcullis never enables.
struct Settings {
    keepalive: Option<u64>,
    reuses_remaining: Option<u32>,
    read_timeout: Option<std::time::Duration>,
    write_timeout: Option<std::time::Duration>,
    total_drain_timeout: Option<std::time::Duration>,
    proxy_tasks: bool,
    pipelining: bool,
    user_context: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Settings {
    fn of(session: &mut SessionV1) -> Self {
        Settings {
            keepalive: session.get_keepalive_timeout(),
            reuses_remaining: session.get_keepalive_reuses_remaining(),
            read_timeout: session.get_read_timeout(),
            write_timeout: session.get_write_timeout(),
            total_drain_timeout: session.get_total_drain_timeout(),
            proxy_tasks: session.proxy_tasks_enabled(),
            pipelining: session.pipelining_enabled(),
            user_context: session.take_connection_user_context(),
        }
    }

    fn apply(self, session: &mut SessionV1) {
        session.set_server_keepalive(self.keepalive);
        session.set_keepalive_reuses_remaining(self.reuses_remaining);
        session.set_read_timeout(self.read_timeout);
        session.set_write_timeout(self.write_timeout);
        session.set_total_drain_timeout(self.total_drain_timeout);
        session.set_proxy_tasks_enabled(self.proxy_tasks);
        session.set_pipelining_enabled(self.pipelining);
        session.set_connection_user_context(self.user_context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn whole_body(session: &mut Session) -> Vec<u8> {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        body
    }

    fn v1(session: &mut Session) -> &mut SessionV1 {
        match &mut *session.downstream_session {
            HttpSession::H1(s) => s,
            _ => panic!("an HTTP/1 session"),
        }
    }

    #[tokio::test]
    async fn a_read_body_is_read_again_with_the_session_settings_kept() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let sent = b"POST /orders?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
                     Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        client.write_all(sent).await.unwrap();
        let mut session = Session::new_h1(Box::new(server));
        assert!(session.read_request().await.unwrap());
        session.set_keepalive(Some(30));
        let s = v1(&mut session);
        s.set_keepalive_reuses_remaining(Some(3));
        s.set_read_timeout(Some(Duration::from_secs(7)));
        s.set_write_timeout(Some(Duration::from_secs(8)));
        s.set_total_drain_timeout(Some(Duration::from_secs(9)));
        s.set_connection_user_context(Some(Box::new(42u32)));
        let body = whole_body(&mut session).await;
        assert_eq!(body, b"hello");

        replay(&mut session, Bytes::from(body)).await.unwrap();

        let head = session.req_header();
        assert_eq!(head.uri, "/orders?x=1");
        assert_eq!(head.headers["content-length"], "5");
        assert!(head.headers.get("transfer-encoding").is_none());
        assert!(head.headers.get("expect").is_none());
        assert_eq!(whole_body(&mut session).await, b"hello");
        let s = v1(&mut session);
        assert_eq!(s.get_keepalive_timeout(), Some(30));
        assert_eq!(s.get_keepalive_reuses_remaining(), Some(3));
        assert_eq!(s.get_read_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(s.get_write_timeout(), Some(Duration::from_secs(8)));
        assert_eq!(s.get_total_drain_timeout(), Some(Duration::from_secs(9)));
        let context = s.take_connection_user_context().unwrap();
        assert_eq!(context.downcast_ref::<u32>(), Some(&42));
        // The connection goes on: what the client sends next arrives, and answers reach it.
        let stream = match std::mem::replace(
            &mut *session.downstream_session,
            HttpSession::new_http1(Box::new(tokio::io::duplex(1).0)),
        ) {
            HttpSession::H1(s) => s.into_inner(),
            _ => unreachable!(),
        };
        let mut stream = stream;
        client.write_all(b"GET /next HTTP/1.1").await.unwrap();
        let mut next = [0u8; 18];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut next));
        read.await.unwrap().unwrap();
        assert_eq!(&next, b"GET /next HTTP/1.1");
        stream.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut answer = [0u8; 17];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK\r\n");
    }

    #[tokio::test]
    async fn only_a_complete_head_parses() {
        assert!(parses(Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).await);
        assert!(!parses(Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n")).await);
        assert!(!parses(Bytes::from_static(b"\x01\x02 nonsense\r\n\r\n")).await);
        assert!(!parses(Bytes::new()).await);
    }
}
