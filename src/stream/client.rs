//! The wrapper around every client connection, which follows its request/response exchange
//! from the bytes it sees. It does two things Pingora's proxy has no hook for.
//!
//! **A deadline on reading each HTTP/1 request head**: the slowloris defence. Pingora times each
//! read on its own (a client that sends one byte a minute keeps its connection forever) and
//! has no limit on the whole head. Here the clock starts when a connection is accepted, and
//! again at the first byte of each later request on a kept-alive connection; a head that is
//! not complete (`\r\n\r\n`, or bare `\n\n`) when `limits.header_read_timeout` runs out fails
//! the read, and Pingora closes the connection without forwarding anything.
//!
//! The wrapper follows the exchange from the bytes it sees: a head is read, then (once a final
//! response starts to be written) the next byte read begins the next head. Body bytes read
//! before the response are not timed here (`limits.body_read_timeout` and the upstream's
//! timeouts cover them); informational responses (`100 Continue`) do not end the exchange.
//!
//! HTTP/2 (ALPN `h2`) multiplexes binary frames, so only its connection preface
//! (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, which ends like a head) is timed: a client that completes
//! the TLS handshake and then sends nothing is closed at the deadline.
//!
//! **Pingora's own refusals become problem+json.** Pingora answers some requests before the
//! gateway sees them: a head it cannot parse (400), `CONNECT` (405). Its answer is an empty
//! error page, unlogged and uncounted. The gateway marks each request it sees (`mark_seen`);
//! a final response that starts while the request was not seen is Pingora's, and is replaced
//! by the response `EarlyRefusals` makes, which also logs and counts it. Only those two
//! statuses are replaced: were the mark ever to miss (the stream not found under Pingora's
//! session), every other response still passes untouched, and the miss is logged.

use super::tunnel::{self, Tunnel, TunnelSettings};
use bytes::{Buf, Bytes};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the connection is in its request/response exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head; `newline` says whether the last byte that counts was `\n`
    /// (`\r` does not count, so `\r\n\r\n` and `\n\n` both end the head).
    Head { newline: bool },
    /// The head is complete; bytes read now are its body.
    Body,
    /// A response has begun; the next byte read starts a new head.
    Answered,
}

pub struct ClientStream {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    /// When the head being read must be complete.
    deadline: Instant,
    /// Made the first time a read has to wait, then moved to each new deadline: a client that
    /// sends its head at once never touches the timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// HTTP/2: only the connection preface is timed; responses never start a new head.
    preface_only: bool,
    /// The gateway has seen the request being answered (see `mark_seen`).
    seen: AtomicBool,
    /// Who answers for requests Pingora refuses before the gateway sees them.
    early: Option<Arc<dyn EarlyRefusals>>,
    /// The answer being sent in place of Pingora's own; once set, everything Pingora writes
    /// after it is dropped (Pingora closes the connection after its own errors).
    replacement: Option<Bytes>,
    /// Bytes read after the current request's head (its body, or what a client sent early).
    body_read: u64,
    /// Set by the gateway when it lets a WebSocket upgrade through (`arm_tunnel`).
    arm: OnceLock<TunnelSettings>,
    /// The tunnel this connection became, once armed.
    tunnel: Option<Box<Tunnel>>,
    /// Resolves when the process begins a graceful upgrade or shutdown (tunnels close then).
    shutdown: Option<ShutdownWatch>,
}

/// The statuses Pingora answers with on its own before `request_filter`: a head it cannot
/// parse, and `CONNECT`.
const EARLY_STATUSES: [u16; 2] = [400, 405];

/// Makes the response for a request that Pingora refused before the gateway saw it.
pub trait EarlyRefusals: Send + Sync {
    /// The whole HTTP/1.1 response (head and problem+json body) to send instead of Pingora's
    /// `status`; also logs and counts the refusal.
    fn respond(&self, status: u16, client: Option<IpAddr>, tls: bool) -> Bytes;
}

/// Turn the connection under `stream` into a WebSocket tunnel once the response to the upgrade
/// request the gateway is letting through goes out. `false` when the connection cannot carry
/// one (HTTP/2, or the client already sent bytes after its request head).
pub fn arm_tunnel(stream: &Stream, settings: TunnelSettings) -> bool {
    let any = stream.as_any();
    match any.downcast_ref::<ClientStream>() {
        Some(client) if !client.preface_only && client.body_read == 0 => {
            client.arm.set(settings).is_ok()
        }
        _ => false,
    }
}

/// Tell the client stream under `stream` that the gateway has seen the request it carries.
pub fn mark_seen(stream: &Stream) {
    let any = stream.as_any();
    if let Some(client) = any.downcast_ref::<ClientStream>() {
        client.seen.store(true, Ordering::Relaxed);
    } else if let Some(replayed) = any.downcast_ref::<super::replay::ReplayStream>() {
        mark_seen(replayed.inner());
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("phase", &self.phase)
            .field("inner", &self.inner)
            .finish()
    }
}

impl ClientStream {
    /// Wrap a freshly accepted HTTP/1 connection: its first head must be complete within
    /// `limit`, and each later one within `limit` of its first byte; `early` answers what
    /// Pingora refuses on its own.
    pub fn wrap(
        inner: Stream,
        limit: Duration,
        early: Option<Arc<dyn EarlyRefusals>>,
        shutdown: Option<ShutdownWatch>,
    ) -> Stream {
        let mut stream = Self::new(inner, limit, false, early);
        stream.shutdown = shutdown;
        Box::new(stream)
    }

    /// Wrap a freshly accepted HTTP/2 connection: its preface must be complete within `limit`.
    pub fn wrap_h2(inner: Stream, limit: Duration) -> Stream {
        Box::new(Self::new(inner, limit, true, None))
    }

    fn new(
        inner: Stream,
        limit: Duration,
        preface_only: bool,
        early: Option<Arc<dyn EarlyRefusals>>,
    ) -> Self {
        ClientStream {
            inner,
            limit,
            phase: Phase::Head { newline: false },
            deadline: Instant::now() + limit,
            timer: None,
            preface_only,
            seen: AtomicBool::new(false),
            early,
            replacement: None,
            body_read: 0,
            arm: OnceLock::new(),
            tunnel: None,
            shutdown: None,
        }
    }

    /// Whether `bytes`, about to be written, start Pingora's own answer to a request the
    /// gateway never saw; if so, the replacement is made.
    fn replaces(&mut self, bytes: &[u8]) -> bool {
        if self.replacement.is_some() {
            return true;
        }
        if self.phase == Phase::Answered
            || self.seen.load(Ordering::Relaxed)
            || !bytes.starts_with(b"HTTP/1.")
            || is_informational(bytes)
        {
            return false;
        }
        let Some(early) = &self.early else {
            return false;
        };
        let status = bytes
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status.filter(|s| EARLY_STATUSES.contains(s)) else {
            log::warn!(
                "a response began on a connection whose request the gateway did not mark \
                 as seen; passed through unchanged"
            );
            return false;
        };
        let client = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls = self.inner.get_ssl_digest().is_some();
        self.replacement = Some(early.respond(status, client, tls));
        true
    }

    /// Send what is left of the replacement; then Pingora's `len` bytes count as written.
    fn write_replacement(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        while let Some(rest) = self.replacement.as_mut().filter(|r| !r.is_empty()) {
            match Pin::new(&mut *self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => rest.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(len))
    }

    /// Follow the bytes just read through the head.
    fn saw(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Answered {
            self.phase = Phase::Head { newline: false };
            self.deadline = Instant::now() + self.limit;
            self.seen.store(false, Ordering::Relaxed);
            self.body_read = 0;
        }
        let Phase::Head { newline } = self.phase else {
            self.body_read += bytes.len() as u64;
            return;
        };
        self.phase = match head_end(newline, bytes) {
            HeadScan::Ended { rest } => {
                self.body_read = rest as u64;
                Phase::Body
            }
            HeadScan::Open { newline } => Phase::Head { newline },
        };
    }

    /// Follow a write: the first bytes of a final response end the exchange.
    fn wrote(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Body && !self.preface_only && !is_informational(bytes) {
            self.phase = Phase::Answered;
        }
    }
}

/// Where a head stands after `bytes`, given whether the bytes before them ended a line.
#[derive(Debug, PartialEq, Eq)]
enum HeadScan {
    /// An empty line (`\n` or `\r\n`, any `\r` allowed before the `\n`) ended the head;
    /// `rest` bytes of the piece came after it.
    Ended { rest: usize },
    /// Not yet; `newline`: the bytes so far end with a line break and nothing but `\r` after it.
    Open { newline: bool },
}

/// The head ends at a `\n` whose line holds nothing but `\r`: found line by line with `memchr`
/// (a head is mostly header text, which a byte-at-a-time state machine walked one by one).
fn head_end(mut newline: bool, bytes: &[u8]) -> HeadScan {
    let only_cr = |line: &[u8]| line.iter().all(|&b| b == b'\r');
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', bytes) {
        if newline && bytes.get(from..at).is_some_and(only_cr) {
            return HeadScan::Ended {
                rest: bytes.len() - at - 1,
            };
        }
        newline = true;
        from = at + 1;
    }
    HeadScan::Open {
        newline: newline && bytes.get(from..).is_some_and(only_cr),
    }
}

/// `HTTP/1.x 1xx`: an interim response, after which the request body still follows.
fn is_informational(bytes: &[u8]) -> bool {
    bytes.len() >= 10 && bytes.starts_with(b"HTTP/1.") && bytes[9] == b'1'
}

impl ClientStream {
    /// A read of the head has to wait: whether the deadline has passed (else the timer is set
    /// to wake this task at the deadline).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// The tunnel this connection carries, made when the gateway armed one; dropped when the
    /// upstream refused the upgrade.
    fn has_tunnel(&mut self) -> bool {
        if self.tunnel.is_none() && self.arm.get().is_none() {
            return false;
        }
        if let Some(settings) = self.arm.take() {
            let shutdown = self.shutdown.take().map(|mut watch| {
                Box::pin(async move {
                    while !*watch.borrow_and_update() {
                        if watch.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }) as tunnel::Signal
            });
            self.tunnel = Some(Box::new(Tunnel::new(settings, shutdown)));
        }
        if self.tunnel.as_ref().is_some_and(|t| t.abandoned()) {
            self.tunnel = None;
        }
        self.tunnel.is_some()
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.has_tunnel() {
            if let Some(tunnel) = this.tunnel.as_deref_mut() {
                return tunnel::poll_read(tunnel, &mut this.inner, cx, buf);
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(new) = buf.filled().get(before..) {
                    if !new.is_empty() {
                        this.saw(new);
                    }
                }
                Poll::Ready(Ok(()))
            }
            // Bytes that have arrived are always taken; the deadline is checked whenever the
            // head is incomplete and nothing more is there, which for a client that trickles
            // its head in is after every piece.
            Poll::Pending if matches!(this.phase, Phase::Head { .. }) && this.expired(cx) => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "request head not complete within limits.header_read_timeout ({} ms)",
                        this.limit.as_millis()
                    ),
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.has_tunnel() {
            if let Some(tunnel) = this.tunnel.as_deref_mut() {
                return tunnel::poll_write(tunnel, &mut this.inner, cx, buf);
            }
        }
        if this.replaces(buf) {
            return this.write_replacement(cx, buf.len());
        }
        let result = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            if *n > 0 {
                this.wrote(buf);
            }
        }
        result
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let first: &[u8] = bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| b);
        if this.has_tunnel() {
            if let Some(tunnel) = this.tunnel.as_deref_mut() {
                return tunnel::poll_write(tunnel, &mut this.inner, cx, first);
            }
        }
        if this.replaces(first) {
            let len = bufs.iter().map(|b| b.len()).sum();
            return this.write_replacement(cx, len);
        }
        let result = Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result {
            if *n > 0 && !first.is_empty() {
                this.wrote(first);
            }
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

super::pass_through_io!(ClientStream);

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as a byte-at-a-time state machine: a `\n` ends the head when the line before
    /// it held nothing but `\r`.
    fn head_end_bytewise(mut newline: bool, bytes: &[u8]) -> HeadScan {
        for &b in bytes {
            match b {
                b'\n' if newline => return HeadScan::Ended { rest: 0 },
                b'\n' => newline = true,
                b'\r' => {}
                _ => newline = false,
            }
        }
        HeadScan::Open { newline }
    }

    proptest::proptest! {
        /// Fed in any pieces, the line-by-line scan ends the head where the byte-by-byte rule
        /// does.
        #[test]
        fn head_end_agrees_with_the_bytewise_rule(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let (mut fast, mut slow) = (HeadScan::Open { newline: false }, HeadScan::Open { newline: false });
            let mut start = 0;
            for end in cuts.into_iter().chain([bytes.len()]) {
                let piece = &bytes[start..end];
                start = end;
                if let HeadScan::Open { newline } = fast {
                    fast = head_end(newline, piece);
                }
                if let HeadScan::Open { newline } = slow {
                    slow = head_end_bytewise(newline, piece);
                }
                // Where it ended is told apart below; here, whether.
                if let HeadScan::Ended { .. } = fast {
                    fast = HeadScan::Ended { rest: 0 };
                }
                proptest::prop_assert_eq!(&fast, &slow, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn a_head_ends_at_its_empty_line() {
        assert_eq!(
            head_end(false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            HeadScan::Ended { rest: 0 }
        );
        assert_eq!(
            head_end(false, b"GET / HTTP/1.1\nHost: x\n\nearly"),
            HeadScan::Ended { rest: 5 }
        );
        assert_eq!(
            head_end(false, b"GET / HTTP/1.1\r\nHost: x\r\n"),
            HeadScan::Open { newline: true }
        );
        assert_eq!(head_end(true, b"\r\n"), HeadScan::Ended { rest: 0 });
        assert_eq!(head_end(true, b"\r"), HeadScan::Open { newline: true });
        assert_eq!(head_end(true, b"x\n"), HeadScan::Open { newline: true });
        assert_eq!(head_end(true, b"x"), HeadScan::Open { newline: false });
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A wrapped in-memory connection and the client end of it.
    fn pair(limit_ms: u64) -> (Stream, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(4096);
        (
            ClientStream::wrap(
                Box::new(server),
                Duration::from_millis(limit_ms),
                None,
                None,
            ),
            client,
        )
    }

    /// Answers every early refusal with a fixed marker and remembers the statuses it was
    /// asked for.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<u16>>);

    impl EarlyRefusals for Recorder {
        fn respond(&self, status: u16, _client: Option<IpAddr>, _tls: bool) -> Bytes {
            self.0.lock().unwrap().push(status);
            Bytes::from(format!("REPLACED {status}"))
        }
    }

    /// A wrapped connection with `early` answering, its client end, and the answers' record.
    fn answered_pair() -> (Stream, tokio::io::DuplexStream, Arc<Recorder>) {
        let (server, client) = tokio::io::duplex(4096);
        let recorder = Arc::new(Recorder::default());
        let early: Arc<dyn EarlyRefusals> = recorder.clone();
        let stream =
            ClientStream::wrap(Box::new(server), Duration::from_secs(5), Some(early), None);
        (stream, client, recorder)
    }

    /// What the client receives after the server side writes `writes` and closes.
    async fn exchange(seen: bool, writes: &[&[u8]]) -> (String, Vec<u16>) {
        let (mut server, mut client, recorder) = answered_pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read_some(&mut server).await.unwrap();
        if seen {
            mark_seen(&server);
        }
        for w in writes {
            server.write_all(w).await.unwrap();
        }
        server.shutdown().await.unwrap();
        drop(server);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        let statuses = recorder.0.lock().unwrap().clone();
        (got, statuses)
    }

    #[tokio::test]
    async fn only_pingoras_own_400_and_405_are_replaced() {
        let (got, asked) = exchange(false, &[b"HTTP/1.1 400 Bad Request\r\n\r\n"]).await;
        assert_eq!((got.as_str(), asked), ("REPLACED 400", vec![400]));
        let (got, asked) = exchange(false, &[b"HTTP/1.1 405 Method Not Allowed\r\n\r\n"]).await;
        assert_eq!((got.as_str(), asked), ("REPLACED 405", vec![405]));
        // Whatever Pingora writes after its error page is dropped with it.
        let (got, _) = exchange(false, &[b"HTTP/1.1 400 Bad Request\r\n", b"\r\nmore"]).await;
        assert_eq!(got, "REPLACED 400");
    }

    #[tokio::test]
    async fn a_request_the_gateway_saw_or_another_status_passes_untouched() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let bad: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        // Were the mark to miss, an upstream's answer still reaches the client as it is.
        assert_eq!(
            exchange(false, &[ok]).await,
            (String::from_utf8_lossy(ok).into(), vec![])
        );
        assert_eq!(
            exchange(true, &[bad]).await,
            (String::from_utf8_lossy(bad).into(), vec![])
        );
        assert_eq!(
            exchange(true, &[ok]).await,
            (String::from_utf8_lossy(ok).into(), vec![])
        );
        let garbled: &[u8] = b"HTTP/1.1 4x0 ?\r\n\r\n";
        assert_eq!(exchange(false, &[garbled]).await.1, Vec::<u16>::new());
    }

    async fn read_some(s: &mut Stream) -> std::io::Result<usize> {
        let mut buf = [0u8; 256];
        s.read(&mut buf).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_in_times_out() {
        let (mut server, mut client) = pair(1000);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_some(&mut server).await.unwrap(), 16);
        tokio::time::advance(Duration::from_millis(900)).await;
        client.write_all(b"X-A: 1\r\n").await.unwrap();
        assert_eq!(read_some(&mut server).await.unwrap(), 8);
        tokio::time::advance(Duration::from_millis(200)).await;
        // Past the deadline: what has arrived is still handed over, the next wait fails.
        client.write_all(b"X-B: 2\r\n").await.unwrap();
        assert_eq!(read_some(&mut server).await.unwrap(), 8);
        let err = read_some(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("limits.header_read_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_a_waiting_read() {
        let (mut server, mut client) = pair(1000);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        read_some(&mut server).await.unwrap();
        let started = Instant::now();
        // Nothing more comes: the read fails when the deadline passes, not later.
        let err = read_some(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited <= Duration::from_millis(1000), "{waited:?}");
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out() {
        let (mut server, _client) = pair(500);
        let err = read_some(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_head_stops_the_clock_until_the_next_request() {
        for end in [&b"\r\n\r\n"[..], b"\n\n", b"\r\n\n"] {
            let (mut server, mut client) = pair(1000);
            client.write_all(b"POST / HTTP/1.1\r\nA: b").await.unwrap();
            client.write_all(end).await.unwrap();
            read_some(&mut server).await.unwrap();
            // A slow body is not this deadline's business.
            tokio::time::advance(Duration::from_secs(5)).await;
            client.write_all(b"body").await.unwrap();
            assert_eq!(read_some(&mut server).await.unwrap(), 4);
            // An interim response does not end the exchange...
            server
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(5)).await;
            client.write_all(b"more").await.unwrap();
            assert_eq!(read_some(&mut server).await.unwrap(), 4);
            // ...a final one does; an idle kept-alive connection is not timed here...
            server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            tokio::time::advance(Duration::from_secs(5)).await;
            // ...but the next head is, from its first byte.
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            read_some(&mut server).await.unwrap();
            tokio::time::advance(Duration::from_millis(1100)).await;
            assert!(read_some(&mut server).await.is_err(), "end {end:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_split_between_reads_is_recognised() {
        let (mut server, mut client) = pair(1000);
        client.write_all(b"GET / HTTP/1.1\r\n\r").await.unwrap();
        read_some(&mut server).await.unwrap();
        client.write_all(b"\n").await.unwrap();
        read_some(&mut server).await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(read_some(&mut server).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_times_only_the_preface() {
        let (server, mut client) = tokio::io::duplex(4096);
        let mut server = ClientStream::wrap_h2(Box::new(server), Duration::from_millis(1000));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        read_some(&mut server).await.unwrap();
        // Frames in both directions, with long pauses: never timed again.
        for _ in 0..3 {
            server.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
            tokio::time::advance(Duration::from_secs(5)).await;
            client.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
            assert_eq!(read_some(&mut server).await.unwrap(), 9);
        }
        // Without a preface the connection is cut like a silent HTTP/1 one.
        let (server, _client) = tokio::io::duplex(4096);
        let mut server = ClientStream::wrap_h2(Box::new(server), Duration::from_millis(1000));
        let err = read_some(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn informational_responses_are_told_apart() {
        assert!(is_informational(b"HTTP/1.1 100 Continue\r\n"));
        assert!(is_informational(b"HTTP/1.0 103 Early Hints\r\n"));
        assert!(!is_informational(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_informational(b"HTTP/1.1"));
        assert!(!is_informational(b"{\"a\":1}"));
    }
}
