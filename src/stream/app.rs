//! The app around Pingora's HTTP proxy that every client connection passes through
//! (`ClientApp`): it wraps each connection in `client::ClientStream`, which times request heads,
//! and holds back the abort of idle kept-alive connections when the process drains.
//!
//! Heads: every connection is wrapped in `stream::client` before the proxy sees it, so
//! that an HTTP/1 head that trickles in (slowloris), or an HTTP/2 preface that never comes, is
//! cut after `limits.header_read_timeout`.
//!
//! Draining on a graceful upgrade or shutdown: Pingora aborts idle keep-alive connections as
//! soon as the old process stops listening; a client that sends its next request at that
//! moment sees the connection close under it, and a connection accepted just before the
//! listener closed loses its first request. Here the abort is held back for half the grace
//! period (`server::drain_hold`): meanwhile the next request on each kept-alive connection is
//! served with `Connection: close` (Pingora does that once shutdown has begun), and only
//! connections still idle at the end are closed.

use super::client::{ClientStream, EarlyRefusals};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// An app whose connections get a head deadline and whose shutdown clean-up waits `hold`.
pub struct ClientApp<A> {
    pub inner: Arc<A>,
    pub hold: Duration,
    /// `limits.header_read_timeout`.
    pub head_deadline: Duration,
    /// The answers to requests Pingora refuses before the gateway sees them.
    pub early: Arc<dyn EarlyRefusals>,
    /// Plain connections may open with the HTTP/2 preface (h2c with prior knowledge).
    pub h2c: bool,
}

/// What an HTTP/2 connection opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
impl<A> ServerApp for ClientApp<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // HTTP/2 (negotiated by ALPN, or h2c) multiplexes binary frames: only its preface is
        // timed. On an h2c listener the first bytes tell, within the head deadline.
        let mut stream = stream;
        let mut h2 = stream.selected_alpn_proto() == Some(ALPN::H2);
        if self.h2c && stream.get_ssl_digest().is_none() {
            let mut first = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout(self.head_deadline, stream.try_peek(&mut first)).await {
                Ok(Ok(_)) => h2 = first == *H2_PREFACE,
                // Silent past the deadline, or gone.
                _ => return None,
            }
        }
        let stream = if h2 {
            ClientStream::wrap_h2(stream, self.head_deadline)
        } else {
            ClientStream::wrap(
                stream,
                self.head_deadline,
                Some(self.early.clone()),
                Some(shutdown.clone()),
            )
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.hold).await;
        self.inner.cleanup().await;
    }
}
