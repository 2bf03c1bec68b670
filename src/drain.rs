//! Draining kept-alive connections on a graceful upgrade or shutdown. Pingora aborts idle
//! keep-alive connections as soon as the old process stops listening; a client that sends its
//! next request at that moment sees the connection close under it. Here the abort is held back
//! until shortly before the grace period ends: meanwhile the next request on each kept-alive
//! connection is served with `Connection: close` (Pingora does that once shutdown has begun),
//! and only connections still idle at the end are closed.

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP app whose shutdown clean-up waits `hold` first.
pub struct Draining<A> {
    pub inner: Arc<A>,
    pub hold: Duration,
}

#[async_trait]
impl<A> HttpServerApp for Draining<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora_core::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(self.hold).await;
        self.inner.http_cleanup().await;
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}
