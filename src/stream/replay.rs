//! Giving a body that `request_filter` has already read back to Pingora, so that it is
//! forwarded byte for byte. Pingora forwards a consumed body only from its retry buffer, which
//! holds 64 KiB; a larger validated body would otherwise never reach the upstream.
//!
//! HTTP/1: the downstream session is rebuilt on the same connection, wrapped so that it first
//! reads the request head again (now framed by `Content-Length`) and the body, which Pingora
//! parses exactly as if the client had sent them; then the connection continues as before. HTTP/2: the retry buffer is used, so bodies are
//! limited to 64 KiB there.

use bytes::{BufMut, Bytes, BytesMut};
use pingora_core::protocols::http::v1::server::HttpSession as SessionV1;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_core::protocols::Stream;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest body that can be replayed over HTTP/2 (Pingora's retry buffer).
pub const H2_REPLAY_LIMIT: usize = 64 * 1024;

/// Prepare a session whose body is about to be read in `request_filter`.
pub fn before_reading(session: &mut Session) {
    if session.as_downstream().is_http2() {
        session.as_downstream_mut().enable_retry_buffering();
    }
}

/// Whether an HTTP/2 body went past what can be replayed.
pub fn h2_over_limit(session: &Session) -> bool {
    session.as_downstream().is_http2() && session.as_downstream().retry_buffer_truncated()
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

/// Hand `body` back to Pingora for forwarding.
pub async fn replay(session: &mut Session, body: Bytes) -> Result<()> {
    if session.as_downstream().is_http2() {
        // Pingora forwards the retry buffer, which holds exactly what was read.
        return Ok(());
    }
    let placeholder = HttpSession::new_http1(Box::new(tokio::io::duplex(1).0));
    let previous = std::mem::replace(&mut *session.downstream_session, placeholder);
    let old = match previous {
        HttpSession::H1(old) => old,
        other => {
            *session.downstream_session = other;
            return Error::e_explain(
                ErrorType::InternalError,
                "cannot replay the body of this session type",
            );
        }
    };
    let keepalive = old.get_keepalive_timeout();
    let read_timeout = old.get_read_timeout();
    let write_timeout = old.get_write_timeout();
    let mut replayed = request_head(&old, body.len())?;
    replayed.put_slice(&body);
    let mut fresh = SessionV1::new(ReplayStream::wrap(replayed.freeze(), old.into_inner()));
    match fresh.read_request().await? {
        Some(_) => {}
        None => {
            return Error::e_explain(
                ErrorType::InternalError,
                "the replayed request did not parse",
            )
        }
    }
    fresh.set_read_timeout(read_timeout);
    fresh.set_write_timeout(write_timeout);
    let mut rebuilt = HttpSession::H1(fresh);
    rebuilt.set_keepalive(keepalive);
    *session.downstream_session = rebuilt;
    Ok(())
}
