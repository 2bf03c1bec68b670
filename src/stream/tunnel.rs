//! A WebSocket tunnel on a client connection, once the gateway has let an upgrade through
//! (`client::arm_tunnel`). The bytes pass unchanged; this follows the frames in both
//! directions (headers parsed by `tungstenite`) so that it can
//! - close with 1009 a client message (all its fragments) larger than the route allows, before
//!   the frame that crosses the limit reaches the upstream;
//! - close with 1002 an unmasked client frame or a malformed one, as RFC 6455 §5.1 requires;
//! - close with 1001 a tunnel idle for too long, older than its lifetime, or still open when the
//!   process begins a graceful upgrade or shutdown.
//!
//! A close is never cut into a frame: the close frame to the client waits until the frame being
//! written to it is complete, and the one to the upstream (masked, as a client's must be) until
//! the client's frame in progress is complete, or a few seconds have passed.

use bytes::{Buf, Bytes, BytesMut};
use pingora_core::protocols::Stream;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::time::{Instant, Sleep};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

/// What a route allows a tunnel, and who hears about it.
#[derive(Clone)]
pub struct TunnelSettings {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub max_message_bytes: u64,
    pub events: Arc<dyn TunnelEvents>,
}

/// Told when a tunnel opens (the `101` went out) and why it closed.
pub trait TunnelEvents: Send + Sync {
    fn opened(&self);
    /// Once per opened tunnel: `client`, `upstream`, `idle`, `lifetime`, `message_too_big`,
    /// `protocol_error`, `shutdown` or `disconnected`.
    fn closed(&self, reason: &'static str);
}

/// How long a client may take to finish the frame it is sending once the gateway closes.
const FINISH_FRAME: Duration = Duration::from_secs(5);

/// Where one direction's byte stream stands.
#[derive(Debug, Default)]
struct Frames {
    /// Header bytes of the frame being started (at most 14).
    header: Vec<u8>,
    /// Payload bytes still to come of the current frame.
    payload_left: u64,
    /// Payload bytes of the data message in progress (its fragments so far).
    message: u64,
}

/// A frame header, as far as the tunnel cares.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A whole header: its opcode, whether the frame is masked, its payload length.
    Header {
        opcode: OpCode,
        masked: bool,
        is_final: bool,
        len: u64,
    },
    /// Not a frame header a peer may send.
    Malformed,
}

impl Frames {
    /// At a frame boundary: no header or payload in progress.
    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }

    /// Follow `bytes` only as far as the end of the frame in progress (none: 0).
    fn finish_frame(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        if !self.header.is_empty() {
            at = self.walk(bytes, |_, _, _| false);
        }
        let take = self.payload_left.min((bytes.len() - at) as u64);
        self.payload_left -= take;
        at + take as usize
    }

    /// Follow `bytes`; `on_header` judges each whole header, given the offset where it began
    /// in `bytes` (negative when it began in an earlier chunk) — returning `false` stops the
    /// walk there. Returns how many bytes were walked.
    fn walk(
        &mut self,
        bytes: &[u8],
        mut on_header: impl FnMut(&mut Self, Seen, isize) -> bool,
    ) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if self.payload_left > 0 {
                let take = self.payload_left.min((bytes.len() - at) as u64);
                self.payload_left -= take;
                at += take as usize;
                continue;
            }
            let started = at as isize - self.header.len() as isize;
            // Two bytes tell the header's full length; take up to it.
            let need = header_len(&self.header);
            let take = (need - self.header.len()).min(bytes.len() - at);
            self.header.extend_from_slice(&bytes[at..at + take]);
            at += take;
            if self.header.len() < header_len(&self.header) {
                continue;
            }
            let parsed = FrameHeader::parse(&mut Cursor::new(&self.header));
            self.header.clear();
            let seen = match parsed {
                Ok(Some((h, len))) => {
                    self.payload_left = len;
                    Seen::Header {
                        opcode: h.opcode,
                        masked: h.mask.is_some(),
                        is_final: h.is_final,
                        len,
                    }
                }
                _ => Seen::Malformed,
            };
            if !on_header(self, seen, started) {
                return at;
            }
        }
        at
    }
}

/// The length of a header whose first bytes are `have`: 2, plus 2 or 8 for a long length,
/// plus 4 for a mask (2 while the second byte has not come).
fn header_len(have: &[u8]) -> usize {
    match have.get(1) {
        None => 2,
        Some(second) => {
            let extra = match second & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + extra + if second & 0x80 != 0 { 4 } else { 0 }
        }
    }
}

/// A close frame with this code; masked as a client's (towards the upstream) or not.
fn close_frame(code: CloseCode, masked: bool) -> Bytes {
    let mut frame = Frame::close(Some(CloseFrame {
        code,
        reason: "".into(),
    }));
    if masked {
        let mut mask = [0u8; 4];
        // A fixed mask would do for the upstream, which sits behind the gateway; a random one
        // is what RFC 6455 asks of a client.
        let _ = getrandom::fill(&mut mask);
        frame.header_mut().mask = Some(mask);
    }
    let mut out = Vec::with_capacity(8);
    // Writing to a Vec cannot fail.
    let _ = frame.format(&mut out);
    Bytes::from(out)
}

/// Why the gateway closes a tunnel, with the code it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Idle,
    Lifetime,
    Shutdown,
    TooBig,
    Protocol,
}

impl Closing {
    fn code(self) -> CloseCode {
        match self {
            Closing::TooBig => CloseCode::Size,
            Closing::Protocol => CloseCode::Protocol,
            _ => CloseCode::Away,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Closing::Idle => "idle",
            Closing::Lifetime => "lifetime",
            Closing::Shutdown => "shutdown",
            Closing::TooBig => "message_too_big",
            Closing::Protocol => "protocol_error",
        }
    }
}

/// Where the tunnel is.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Armed: the response head being written, kept until its empty line.
    Handshake { scanned: Vec<u8> },
    /// The `101` went out: frames both ways.
    Open,
    /// The upstream answered something else: the connection is plain HTTP again.
    Abandoned,
}

/// One tunnel's state, driven by the client stream's reads and writes (`client.rs`).
pub struct Tunnel {
    settings: TunnelSettings,
    stage: Stage,
    /// Client → upstream.
    from_client: Frames,
    /// Upstream → client.
    to_client: Frames,
    /// Header bytes held back from the upstream until the header is whole.
    held: BytesMut,
    closing: Option<Closing>,
    /// The close frame for the client; empty once written.
    close_to_client: Option<Bytes>,
    /// The close frame for the upstream, until Pingora reads it; then reads end.
    close_to_upstream: Option<Bytes>,
    /// A close frame came from the upstream or the client: the peers close on their own.
    peer_closed: bool,
    reads_ended: bool,
    reported: bool,
    last_activity: Instant,
    opened: Instant,
    /// Until when the client may finish its frame once the gateway closes.
    finish_by: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Locked only by the connection's own task: the mutex makes the future `Sync`, as a
    /// stream must be.
    shutdown: Option<std::sync::Mutex<Signal>>,
}

/// A future that resolves when the process begins a graceful upgrade or shutdown.
pub type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Tunnel {
    /// A tunnel armed for the upgrade now being answered; `shutdown` resolves when the process
    /// begins a graceful upgrade or shutdown.
    pub fn new(settings: TunnelSettings, shutdown: Option<Signal>) -> Self {
        let now = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(now + settings.idle_timeout));
        Tunnel {
            settings,
            stage: Stage::Handshake {
                scanned: Vec::new(),
            },
            from_client: Frames::default(),
            to_client: Frames::default(),
            held: BytesMut::new(),
            closing: None,
            close_to_client: None,
            close_to_upstream: None,
            peer_closed: false,
            reads_ended: false,
            reported: false,
            last_activity: now,
            opened: now,
            finish_by: None,
            timer,
            shutdown: shutdown.map(std::sync::Mutex::new),
        }
    }

    /// The upstream refused the upgrade: nothing more to follow.
    pub fn abandoned(&self) -> bool {
        self.stage == Stage::Abandoned
    }

    /// Header bytes held back from the last read, to go first into the next one.
    pub fn take_held(&mut self) -> BytesMut {
        std::mem::take(&mut self.held)
    }

    /// Put back what `take_held` gave when nothing new came.
    pub fn put_back(&mut self, held: BytesMut) {
        self.held = held;
    }

    /// The reads are over: a close went to the upstream, or the client never finished its frame.
    pub fn reads_ended(&self) -> bool {
        self.reads_ended
    }

    /// The close frame for the upstream, handed up as read bytes; reads end after it.
    pub fn take_close_to_upstream(&mut self) -> Option<Bytes> {
        let frame = self.close_to_upstream.take();
        if frame.is_some() {
            self.reads_ended = true;
        }
        frame
    }

    /// The rest of the close frame for the client, when it is due and no frame is being written.
    pub fn close_to_client(&mut self) -> Option<&mut Bytes> {
        if !self.to_client.at_boundary() {
            return None;
        }
        self.close_to_client.as_mut().filter(|b| !b.is_empty())
    }

    /// The gateway's close went to the client: whatever Pingora writes now is dropped.
    pub fn drops_writes(&self) -> bool {
        self.close_to_client.as_ref().is_some_and(|b| b.is_empty())
    }

    /// Bytes read from the client (what `take_held` gave, then new ones): returns how many of
    /// them go on to the upstream. The rest is a header cut by the end of the read (held for
    /// the next) or what follows a frame that closes the tunnel (dropped).
    pub fn read(&mut self, bytes: &[u8]) -> usize {
        self.last_activity = Instant::now();
        if self.reads_ended || self.stage == Stage::Abandoned {
            return if self.reads_ended { 0 } else { bytes.len() };
        }
        if self.closing.is_some() {
            let n = self.from_client.finish_frame(bytes);
            if self.from_client.at_boundary() {
                self.queue_close_to_upstream();
            }
            return n;
        }
        let max = self.settings.max_message_bytes;
        let mut stop: Option<(Closing, usize)> = None;
        let mut client_close = false;
        let walked = self.from_client.walk(bytes, |frames, seen, started| {
            let verdict = match seen {
                Seen::Malformed | Seen::Header { masked: false, .. } => Some(Closing::Protocol),
                Seen::Header {
                    opcode: OpCode::Control(control),
                    len,
                    is_final,
                    ..
                } => {
                    client_close |= control == Control::Close;
                    (len > 125 || !is_final).then_some(Closing::Protocol)
                }
                Seen::Header {
                    opcode: OpCode::Data(kind),
                    len,
                    is_final,
                    ..
                } => {
                    frames.message = match kind {
                        Data::Continue => frames.message.saturating_add(len),
                        _ => len,
                    };
                    let over = frames.message > max;
                    if is_final {
                        frames.message = 0;
                    }
                    over.then_some(Closing::TooBig)
                }
            };
            match verdict {
                Some(closing) => {
                    stop = Some((closing, started.max(0) as usize));
                    false
                }
                None => true,
            }
        });
        if client_close && !self.peer_closed {
            self.peer_closed = true;
            self.report("client");
        }
        if let Some((closing, at)) = stop {
            // The offending frame is not passed on: the close follows what came before it.
            self.from_client = Frames::default();
            self.begin_closing(closing);
            return at;
        }
        let partial = self.from_client.header.len();
        if partial > 0 {
            self.held
                .extend_from_slice(&bytes[walked - partial..walked]);
            self.from_client.header.clear();
        }
        walked - partial
    }

    /// How many of `bytes`, which Pingora is about to write to the client, may go now: all,
    /// unless the gateway is closing — then the rest of the frame in progress only.
    pub fn writable(&self, bytes: &[u8]) -> usize {
        if self.closing.is_none() || self.stage != Stage::Open {
            return bytes.len();
        }
        let mut frames = Frames {
            header: self.to_client.header.clone(),
            payload_left: self.to_client.payload_left,
            message: 0,
        };
        frames.finish_frame(bytes)
    }

    /// Pingora wrote `bytes` to the client: follow them.
    pub fn wrote(&mut self, bytes: &[u8]) {
        self.last_activity = Instant::now();
        let mut at = 0;
        if let Stage::Handshake { scanned } = &mut self.stage {
            let Some(end) = find_head_end(scanned, bytes) else {
                return;
            };
            if !scanned.starts_with(b"HTTP/1.1 101") {
                self.stage = Stage::Abandoned;
                return;
            }
            at = end;
            self.stage = Stage::Open;
            self.opened = Instant::now();
            self.last_activity = self.opened;
            self.settings.events.opened();
        }
        if self.stage != Stage::Open {
            return;
        }
        if self.closing.is_some() {
            self.to_client.finish_frame(&bytes[at..]);
            return;
        }
        let mut upstream_close = false;
        self.to_client.walk(&bytes[at..], |_, seen, _| {
            if let Seen::Header {
                opcode: OpCode::Control(Control::Close),
                ..
            } = seen
            {
                upstream_close = true;
            }
            true
        });
        if upstream_close && !self.peer_closed {
            self.peer_closed = true;
            self.report("upstream");
        }
    }

    /// The client's connection ended.
    pub fn client_gone(&mut self) {
        if self.stage == Stage::Open {
            self.report("disconnected");
        }
    }

    /// Check the timers and the shutdown signal, beginning a close that is due; registers the
    /// task to be woken at the next deadline.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) {
        if self.stage != Stage::Open || self.peer_closed {
            return;
        }
        let Some(_) = self.closing else {
            if let Some(shutdown) = self.shutdown.as_mut() {
                let signal = shutdown.get_mut().unwrap_or_else(|e| e.into_inner());
                if signal.as_mut().poll(cx).is_ready() {
                    self.shutdown = None;
                    return self.begin_closing(Closing::Shutdown);
                }
            }
            let idle_at = self.last_activity + self.settings.idle_timeout;
            let life_at = self.opened + self.settings.max_lifetime;
            let now = Instant::now();
            if now >= life_at {
                return self.begin_closing(Closing::Lifetime);
            }
            if now >= idle_at {
                return self.begin_closing(Closing::Idle);
            }
            return self.wake_at(idle_at.min(life_at), cx);
        };
        if let Some(by) = self.finish_by.filter(|_| !self.reads_ended) {
            if Instant::now() >= by {
                // The client never finished its frame: the reads end without a close frame.
                self.reads_ended = true;
                self.close_to_upstream = None;
            } else {
                self.wake_at(by, cx);
            }
        }
    }

    fn wake_at(&mut self, at: Instant, cx: &mut Context<'_>) {
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    fn begin_closing(&mut self, why: Closing) {
        if self.closing.is_some() || self.peer_closed {
            return;
        }
        self.closing = Some(why);
        self.report(why.reason());
        self.close_to_client = Some(close_frame(why.code(), false));
        self.finish_by = Some(Instant::now() + FINISH_FRAME);
        if self.from_client.at_boundary() {
            self.held.clear();
            self.queue_close_to_upstream();
        }
    }

    fn queue_close_to_upstream(&mut self) {
        if let (Some(why), false) = (self.closing, self.reads_ended) {
            if self.close_to_upstream.is_none() {
                self.close_to_upstream = Some(close_frame(why.code(), true));
            }
        }
    }

    /// A close for the upstream or the end of the reads is waiting to be handed up.
    pub fn read_due(&self) -> bool {
        self.close_to_upstream.is_some() || self.reads_ended
    }

    fn report(&mut self, reason: &'static str) {
        if !self.reported {
            self.reported = true;
            self.settings.events.closed(reason);
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.client_gone();
    }
}

/// Follow a response head being written: `scanned` keeps its bytes until the empty line;
/// then the offset in `bytes` just past it.
fn find_head_end(scanned: &mut Vec<u8>, bytes: &[u8]) -> Option<usize> {
    let before = scanned.len();
    scanned.extend_from_slice(bytes);
    let end = memchr::memmem::find(scanned, b"\r\n\r\n")? + 4;
    scanned.truncate(end);
    Some(end - before)
}

/// A read on a client connection that carries a tunnel: what is due goes first (the close
/// frame to the client, written from here so that an idle tunnel closes; the close frame to
/// the upstream; the end of the reads), then what the client sent, as `Tunnel::read` allows.
pub fn poll_read(
    tunnel: &mut Tunnel,
    inner: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        // Timers are looked at on every read: a client that never pauses still meets its
        // lifetime.
        tunnel.poll_due(cx);
        let close_blocked = match write_close(tunnel, inner, cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(_)) => false,
            Poll::Pending => true,
        };
        if let Some(frame) = tunnel.take_close_to_upstream() {
            if buf.remaining() >= frame.len() {
                buf.put_slice(&frame);
                return Poll::Ready(Ok(()));
            }
        }
        if tunnel.reads_ended() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let held = tunnel.take_held();
        if buf.remaining() <= held.len() {
            tunnel.put_back(held);
            return Poll::Ready(Err(std::io::ErrorKind::OutOfMemory.into()));
        }
        buf.put_slice(&held);
        match Pin::new(&mut **inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled().len();
                if filled == before + held.len() {
                    // The client's connection ended.
                    buf.set_filled(before);
                    tunnel.client_gone();
                    return Poll::Ready(Ok(()));
                }
                let pass = tunnel.read(&buf.filled()[before..]);
                buf.set_filled(before + pass);
                if pass > 0 {
                    return Poll::Ready(Ok(()));
                }
                // Only a header's start, or bytes dropped: read on (or hand up what is due).
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                buf.set_filled(before);
                tunnel.put_back(held);
                let close_writable = tunnel.close_to_client().is_some() && !close_blocked;
                if !tunnel.read_due() && !close_writable {
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A write to a client connection that carries a tunnel: once the gateway closes, only the
/// frame in progress is finished, then its close frame goes, then writes are dropped.
pub fn poll_write(
    tunnel: &mut Tunnel,
    inner: &mut Stream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<std::io::Result<usize>> {
    loop {
        if tunnel.drops_writes() {
            return Poll::Ready(Ok(buf.len()));
        }
        match write_close(tunnel, inner, cx) {
            Poll::Ready(Ok(true)) => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(false)) => {}
        }
        let n = tunnel.writable(buf);
        if n == 0 && !buf.is_empty() {
            // At the frame's end: the close goes next.
            continue;
        }
        let result = Pin::new(&mut **inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(written)) = &result {
            tunnel.wrote(&buf[..*written]);
        }
        return result;
    }
}

/// Write what is left of a due close frame to the client: `true` once it is all out.
fn write_close(
    tunnel: &mut Tunnel,
    inner: &mut Stream,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<bool>> {
    let mut wrote = false;
    while let Some(rest) = tunnel.close_to_client() {
        match Pin::new(&mut **inner).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                rest.advance(n);
                wrote = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    if wrote {
        if let Poll::Ready(Err(e)) = Pin::new(&mut **inner).poll_flush(cx) {
            return Poll::Ready(Err(e));
        }
    }
    Poll::Ready(Ok(wrote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tungstenite::protocol::frame::coding::Data;

    #[derive(Default)]
    struct Events(Mutex<Vec<&'static str>>);

    impl TunnelEvents for Events {
        fn opened(&self) {
            self.0.lock().unwrap().push("opened");
        }
        fn closed(&self, reason: &'static str) {
            self.0.lock().unwrap().push(reason);
        }
    }

    /// An open tunnel (its `101` written) with this message limit.
    fn open(max: u64) -> (Tunnel, Arc<Events>) {
        let events = Arc::new(Events::default());
        let mut t = Tunnel::new(
            TunnelSettings {
                idle_timeout: Duration::from_secs(60),
                max_lifetime: Duration::from_secs(3600),
                max_message_bytes: max,
                events: events.clone(),
            },
            None,
        );
        t.wrote(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        (t, events)
    }

    /// A client frame (masked) of `len` bytes.
    fn client_frame(opcode: OpCode, len: usize, is_final: bool) -> Vec<u8> {
        let mut frame = Frame::message(vec![b'x'; len], opcode, is_final);
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    /// Feed `bytes` to the tunnel in pieces cut at `cuts`, as the client stream does: what was
    /// held goes first into the next read. Returns what was passed on.
    fn feed(t: &mut Tunnel, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut passed = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([bytes.len()]) {
            let end = end.clamp(start, bytes.len());
            let mut read = t.take_held().to_vec();
            read.extend_from_slice(&bytes[start..end]);
            start = end;
            let n = t.read(&read);
            passed.extend_from_slice(&read[..n]);
        }
        passed
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    proptest::proptest! {
        /// Frames under the limit pass byte for byte however the reads cut them.
        #[test]
        fn frames_pass_unchanged_in_any_pieces(
            sizes in proptest::collection::vec(0usize..70_000, 1..5),
            cuts in proptest::collection::vec(0usize..300_000, 0..12),
        ) {
            let rt = runtime();
            let _guard = rt.enter();
            let (mut t, _) = open(1 << 20);
            let mut bytes = Vec::new();
            for size in &sizes {
                bytes.extend(client_frame(OpCode::Data(Data::Binary), *size, true));
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            proptest::prop_assert_eq!(feed(&mut t, &bytes, &cuts), bytes);
            proptest::prop_assert!(!t.read_due());
        }
    }

    #[test]
    fn a_message_over_the_limit_stops_before_its_frame_and_closes_with_1009() {
        let rt = runtime();
        let _guard = rt.enter();
        let (mut t, events) = open(1000);
        let first = client_frame(OpCode::Data(Data::Text), 600, false);
        let second = client_frame(OpCode::Data(Data::Continue), 600, true);
        let bytes = [first.clone(), second].concat();
        // The crossing frame's header is cut in two by the reads.
        let passed = feed(&mut t, &bytes, &[first.len() + 1]);
        assert_eq!(passed, first);
        let close = t
            .take_close_to_upstream()
            .expect("a close for the upstream");
        assert_eq!(
            &close[..2],
            &[0x88, 0x82],
            "a masked close frame with a code"
        );
        assert!(t.reads_ended());
        let to_client = t.close_to_client().expect("a close for the client").clone();
        assert_eq!(&to_client[..], &[0x88, 0x02, 0x03, 0xF1], "1009, unmasked");
        assert_eq!(*events.0.lock().unwrap(), ["opened", "message_too_big"]);
    }

    #[test]
    fn unmasked_and_oversized_control_frames_are_protocol_errors() {
        let rt = runtime();
        let _guard = rt.enter();
        let mut unmasked = Vec::new();
        Frame::message(b"hi".to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut unmasked)
            .unwrap();
        let mut long_ping = Frame::ping(vec![0u8; 126]);
        long_ping.header_mut().mask = Some([9, 9, 9, 9]);
        let mut ping = Vec::new();
        long_ping.format(&mut ping).unwrap();
        for bytes in [unmasked, ping, vec![0x83, 0x80, 0, 0, 0, 0]] {
            let (mut t, events) = open(1 << 20);
            assert_eq!(t.read(&bytes), 0);
            assert!(t.take_close_to_upstream().is_some());
            assert_eq!(events.0.lock().unwrap()[1], "protocol_error");
        }
    }

    #[test]
    fn a_close_waits_for_the_frame_being_written_to_the_client() {
        let rt = runtime();
        let _guard = rt.enter();
        let (mut t, _) = open(1 << 20);
        let mut frame = Vec::new();
        Frame::message(vec![b'y'; 300], OpCode::Data(Data::Binary), true)
            .format(&mut frame)
            .unwrap();
        t.wrote(&frame[..100]);
        t.begin_closing(Closing::Shutdown);
        assert!(t.close_to_client().is_none(), "mid-frame");
        let next = [frame.clone(), frame.clone()].concat();
        let rest = &next[100..];
        assert_eq!(
            t.writable(rest),
            frame.len() - 100,
            "only the frame in progress"
        );
        t.wrote(&rest[..frame.len() - 100]);
        assert_eq!(t.writable(&frame), 0);
        let close = t.close_to_client().expect("due now").clone();
        assert_eq!(&close[..], &[0x88, 0x02, 0x03, 0xE9], "1001");
    }

    #[test]
    fn a_refused_upgrade_abandons_the_tunnel() {
        let rt = runtime();
        let _guard = rt.enter();
        let events = Arc::new(Events::default());
        let mut t = Tunnel::new(
            TunnelSettings {
                idle_timeout: Duration::from_secs(1),
                max_lifetime: Duration::from_secs(2),
                max_message_bytes: 10,
                events: events.clone(),
            },
            None,
        );
        t.wrote(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno");
        assert!(t.abandoned());
        drop(t);
        assert!(events.0.lock().unwrap().is_empty());
    }
}
