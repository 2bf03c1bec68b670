//! The JSON access log of SPEC §6: one object a line, written by a dedicated thread so that a
//! slow disk or pipe never blocks a request. Secrets never reach it: the query values of
//! sensitive parameters are redacted and no header other than `User-Agent` is logged.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Lines buffered before new ones are dropped (and counted). The queue takes memory only for
/// the lines in it: a channel with its slots allocated up front would hold 2 MiB for this many
/// from the start.
const QUEUE_LINES: usize = 65_536;

/// Room for a typical line, so that writing one allocates once.
const LINE_CAPACITY: usize = 384;

/// The sending side of the writer's queue, bounded by counting the lines in it.
struct Queue {
    sender: Sender<String>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Queue a line; false when the queue is full or the writer is gone.
    fn push(&self, line: String) -> bool {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE_LINES {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if self.sender.send(line).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Query parameters whose values are always redacted, in addition to the configured ones.
const ALWAYS_REDACTED: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "id_token",
    "refresh_token",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "code",
    "auth",
    "authorization",
    "session",
    "jwt",
];

/// Where access-log lines go (`[logging] access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
    Off,
}

/// One line of the access log. Everything is borrowed from the request: the line is written
/// straight from these fields into one buffer, with no string made per field.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// Written as RFC 3339 in UTC with milliseconds.
    pub ts: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// The path as received; with `query`, written with sensitive values redacted.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Query parameters redacted besides the built-in ones (`logging.redact_query_params`).
    pub redact: &'a HashSet<String>,
    pub status: u16,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub decision: &'a str,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    /// The raw header value; bytes that are not UTF-8 are written as U+FFFD.
    pub user_agent: Option<&'a [u8]>,
    /// The W3C trace id (32 hex digits) the upstream got, `None` for a request refused before
    /// its head was read.
    pub trace_id: Option<&'a str>,
    /// The `[waf]` rules that fired (ids only, never what they matched).
    pub waf_rules: Option<&'a [u64]>,
    pub anomaly_score: Option<i64>,
    /// `"prefix"` when only the first `waf.max_body_bytes` of the body were inspected.
    pub waf_body: Option<&'static str>,
    /// `"masked"` when an upstream 5xx body was replaced (`upstream_errors = "mask"`).
    pub upstream_body: Option<&'static str>,
    /// Why the WebSocket tunnel this upgrade opened was closed (`client`, `idle`, …).
    pub websocket_close: Option<&'static str>,
    /// A gRPC call's `grpc-status`.
    pub grpc_status: Option<u8>,
    /// The label of the API key that authenticated the request (never the key).
    pub key_label: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// The JSON object of SPEC §6, without a newline. `waf_rules`, `anomaly_score` and
    /// `waf_body` appear only when the WAF ran, `upstream_body` only when an upstream error was
    /// masked, `websocket_close` only for a tunnel, `grpc_status` only for a gRPC call, `key_label` only for a labelled API key; the others always (`null` when unknown).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"ts\":\"");
        // Writing into a String cannot fail.
        let _ = write!(out, "{}", humantime::format_rfc3339_millis(self.ts));
        out.push_str("\",\"request_id\":");
        push_json_str(out, self.request_id);
        out.push_str(",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push('"');
                crate::text::push_ip(out, ip);
                out.push('"');
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"method\":");
        push_json_str(out, self.method);
        out.push_str(",\"path\":\"");
        push_redacted_path(out, self.path, self.query, self.redact);
        out.push_str("\",\"status\":");
        push_int(out, self.status);
        out.push_str(",\"route\":");
        push_json_str(out, self.route);
        out.push_str(",\"consumer\":");
        push_opt_str(out, self.consumer);
        out.push_str(",\"auth\":");
        push_opt_str(out, self.auth);
        out.push_str(",\"decision\":");
        push_json_str(out, self.decision);
        out.push_str(",\"upstream\":");
        push_opt_str(out, self.upstream);
        out.push_str(",\"upstream_status\":");
        push_opt_int(out, self.upstream_status);
        out.push_str(",\"bytes_sent\":");
        push_int(out, self.bytes_sent);
        out.push_str(",\"duration_ms\":");
        if self.duration_ms.is_finite() {
            out.push_str(ryu::Buffer::new().format_finite(self.duration_ms));
        } else {
            out.push_str("null");
        }
        out.push_str(",\"user_agent\":");
        match self.user_agent {
            Some(ua) => push_json_str(out, &String::from_utf8_lossy(ua)),
            None => out.push_str("null"),
        }
        out.push_str(",\"trace_id\":");
        push_opt_str(out, self.trace_id);
        if let Some(rules) = self.waf_rules {
            out.push_str(",\"waf_rules\":[");
            for (i, id) in rules.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_int(out, *id);
            }
            out.push(']');
        }
        if let Some(score) = self.anomaly_score {
            out.push_str(",\"anomaly_score\":");
            push_int(out, score);
        }
        if let Some(body) = self.waf_body {
            out.push_str(",\"waf_body\":");
            push_json_str(out, body);
        }
        if let Some(body) = self.upstream_body {
            out.push_str(",\"upstream_body\":");
            push_json_str(out, body);
        }
        if let Some(reason) = self.websocket_close {
            out.push_str(",\"websocket_close\":");
            push_json_str(out, reason);
        }
        if let Some(code) = self.grpc_status {
            out.push_str(",\"grpc_status\":");
            push_int(out, code);
        }
        if let Some(label) = self.key_label {
            out.push_str(",\"key_label\":");
            push_json_str(out, label);
        }
        out.push('}');
    }
}

fn push_int(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_opt_int(out: &mut String, n: Option<impl itoa::Integer>) {
    match n {
        Some(n) => push_int(out, n),
        None => out.push_str("null"),
    }
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped (as serde_json
/// does), everything else as it is.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_json_escaped(out, s);
    out.push('"');
}

fn push_json_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

pub struct AccessLog {
    /// Opened at start-up so that a bad path fails early; handed to the writer thread, which
    /// starts with the first line (after Pingora may have forked into a daemon).
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    queue: OnceLock<Option<Queue>>,
    dropped: prometheus::IntCounter,
    reopen: Reopen,
}

/// Reopening the file after log rotation: `SIGUSR1` (the nginx convention, which logrotate's
/// `postrotate` uses) sets the flag; the writer thread sees it within `REOPEN_CHECK`, flushes
/// what it holds into the old file and opens the path again (creating it when rotation moved it
/// away). If the path cannot be opened, it keeps writing to the file it has and says so.
#[derive(Clone)]
struct Reopen {
    asked: Arc<AtomicBool>,
    path: Option<PathBuf>,
}

/// How often an idle writer looks at the reopen flag.
const REOPEN_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl AccessLog {
    /// Open the target. A file is opened in append mode.
    pub fn open(
        target: &AccessLogTarget,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        let writer: Option<Box<dyn Write + Send>> = match target {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Box::new(std::io::stdout())),
            AccessLogTarget::File(path) => Some(Box::new(open_append(path)?)),
        };
        let path = match target {
            AccessLogTarget::File(path) => Some(path.clone()),
            _ => None,
        };
        Ok(AccessLog {
            writer: Mutex::new(writer),
            queue: OnceLock::new(),
            dropped,
            reopen: Reopen {
                asked: Arc::new(AtomicBool::new(false)),
                path,
            },
        })
    }

    /// The flag that asks for the file to be reopened (set from a signal handler).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.asked.clone()
    }

    fn queue(&self) -> Option<&Queue> {
        self.queue
            .get_or_init(|| {
                let writer = self.writer.lock().ok()?.take()?;
                let (sender, receiver) = channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let counter = queued.clone();
                let reopen = self.reopen.clone();
                match std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_lines(receiver, &counter, writer, &reopen))
                {
                    Ok(_) => Some(Queue { sender, queued }),
                    Err(e) => {
                        log::error!("cannot start the access log writer: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Write one line that is not a request's (an event such as a failed TLS handshake).
    pub fn write_line(&self, line: String) {
        let Some(queue) = self.queue() else { return };
        if !queue.push(line) {
            self.dropped.inc();
        }
    }

    pub fn record(&self, record: &AccessRecord) {
        let Some(queue) = self.queue() else { return };
        let mut line = String::with_capacity(LINE_CAPACITY);
        record.write_json(&mut line);
        if !queue.push(line) {
            self.dropped.inc();
        }
    }
}

/// How long the writer waits after a batch before it looks again. Under load the queue is never
/// empty when it looks, so it never sleeps on the channel, and request threads never have to
/// wake it (a futex call and a context switch per line, the largest cost of logging).
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

fn write_lines(
    receiver: Receiver<String>,
    queued: &AtomicUsize,
    writer: Box<dyn Write + Send>,
    reopen: &Reopen,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    loop {
        let first = match receiver.recv_timeout(REOPEN_CHECK) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Before writing: a line that arrives after the signal goes to the new file.
        if reopen.asked.swap(false, Ordering::Relaxed) {
            reopen_into(&mut out, reopen.path.as_deref());
        }
        let Some(line) = first else { continue };
        queued.fetch_sub(1, Ordering::Relaxed);
        let mut result = writeln!(out, "{line}");
        // Drain what is queued, then flush once: lines reach the file promptly in bursts.
        while let Ok(more) = receiver.try_recv() {
            queued.fetch_sub(1, Ordering::Relaxed);
            if result.is_ok() {
                result = writeln!(out, "{more}");
            }
        }
        if let Err(e) = result.and_then(|_| out.flush()) {
            log::error!("cannot write the access log: {e}");
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

/// Flush into the old file, then write to `path` opened anew.
fn reopen_into(
    out: &mut std::io::BufWriter<Box<dyn Write + Send>>,
    path: Option<&std::path::Path>,
) {
    let Some(path) = path else {
        log::info!("SIGUSR1: the access log is not a file; nothing to reopen");
        return;
    };
    if let Err(e) = out.flush() {
        log::error!("cannot write the access log: {e}");
    }
    match open_append(path) {
        Ok(file) => {
            *out = std::io::BufWriter::with_capacity(64 * 1024, Box::new(file));
            log::info!("SIGUSR1: reopened the access log {}", path.display());
        }
        Err(e) => log::error!(
            "SIGUSR1: cannot reopen the access log {}: {e}; still writing to the file opened before (check the directory's permissions)",
            path.display()
        ),
    }
}

/// The path and query for the log, JSON-escaped, with the values of sensitive parameters
/// replaced.
fn push_redacted_path(out: &mut String, path: &str, query: Option<&str>, redact: &HashSet<String>) {
    push_json_escaped(out, path);
    let Some(query) = query else { return };
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        push_json_escaped(out, name);
        if let Some(value) = value {
            out.push('=');
            let decoded = percent_decoded_lower(name);
            let sensitive =
                redact.contains(&decoded) || ALWAYS_REDACTED.contains(&decoded.as_str());
            if sensitive {
                out.push_str("REDACTED");
            } else {
                push_json_escaped(out, value);
            }
        }
    }
}

/// A parameter name as the application will see it: `%6Bey` is `key`.
fn percent_decoded_lower(name: &str) -> String {
    use crate::percent::hex_value as hex;
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_reopen_follows_the_path_and_survives_a_path_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.log");
        let second = dir.path().join("b.log");
        let file = open_append(&first).unwrap();
        let mut out: std::io::BufWriter<Box<dyn Write + Send>> =
            std::io::BufWriter::new(Box::new(file));
        writeln!(out, "one").unwrap();
        // A path that cannot be opened: what is buffered is kept, writing goes on as before.
        reopen_into(&mut out, Some(&dir.path().join("missing/dir.log")));
        writeln!(out, "two").unwrap();
        reopen_into(&mut out, Some(&second));
        writeln!(out, "three").unwrap();
        out.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "three\n");
        // Not a file (stdout or off): nothing changes.
        reopen_into(&mut out, None);
        writeln!(out, "four").unwrap();
        out.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "three\nfour\n");
    }

    use super::*;

    #[test]
    fn the_queue_is_bounded_and_frees_room_as_lines_are_taken() {
        let (sender, receiver) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = Queue {
            sender,
            queued: queued.clone(),
        };
        for i in 0..QUEUE_LINES {
            assert!(queue.push(i.to_string()));
        }
        assert!(!queue.push("one too many".into()));
        assert_eq!(queued.load(Ordering::Relaxed), QUEUE_LINES);
        // The writer takes a line (and counts it off, as write_lines does): room for one.
        assert_eq!(receiver.recv().ok().as_deref(), Some("0"));
        queued.fetch_sub(1, Ordering::Relaxed);
        assert!(queue.push("fits".into()));
        assert!(!queue.push("full again".into()));
        // A writer that is gone takes nothing, and the count stays right.
        drop(receiver);
        queued.store(0, Ordering::Relaxed);
        assert!(!queue.push("nobody reads this".into()));
        assert_eq!(queued.load(Ordering::Relaxed), 0);
    }

    fn redacted_path(path: &str, query: Option<&str>, redact: &HashSet<String>) -> String {
        let mut out = String::new();
        push_redacted_path(&mut out, path, query, redact);
        out
    }

    #[test]
    fn sensitive_values_are_redacted() {
        let mut redact = HashSet::new();
        redact.insert("custom".to_string());
        assert_eq!(redacted_path("/a", None, &redact), "/a");
        assert_eq!(
            redacted_path(
                "/a",
                Some("x=1&token=abc&Custom=s3cret&API_KEY=k&flag"),
                &redact
            ),
            "/a?x=1&token=REDACTED&Custom=REDACTED&API_KEY=REDACTED&flag"
        );
        assert_eq!(
            redacted_path("/a", Some("%74oken=abc"), &redact),
            "/a?%74oken=REDACTED"
        );
        assert_eq!(redacted_path("/a", Some("%zz=1&%"), &redact), "/a?%zz=1&%");
        assert_eq!(
            redacted_path("/a", Some("é%=1&to%6Ben=x"), &redact),
            "/a?é%=1&to%6Ben=REDACTED"
        );
    }

    fn record<'a>(redact: &'a HashSet<String>) -> AccessRecord<'a> {
        AccessRecord {
            ts: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123),
            request_id: "rid-1",
            client_ip: Some(IpAddr::from([192, 0, 2, 7])),
            method: "GET",
            path: "/a",
            query: None,
            redact,
            status: 200,
            route: "r",
            consumer: None,
            auth: None,
            decision: "allow",
            upstream: Some("app"),
            upstream_status: Some(204),
            bytes_sent: 12,
            duration_ms: 0.25,
            user_agent: None,
            trace_id: None,
            waf_rules: None,
            anomaly_score: None,
            waf_body: None,
            upstream_body: None,
            websocket_close: None,
            grpc_status: None,
            key_label: None,
        }
    }

    fn line(r: &AccessRecord) -> serde_json::Value {
        let mut out = String::new();
        r.write_json(&mut out);
        assert!(!out.contains('\n'), "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let redact = HashSet::new();
        let v = line(&record(&redact));
        let expected = serde_json::json!({
            "ts": "2025-11-24T16:00:00.123Z", "request_id": "rid-1", "client_ip": "192.0.2.7",
            "method": "GET", "path": "/a", "status": 200, "route": "r", "consumer": null,
            "auth": null, "decision": "allow", "upstream": "app", "upstream_status": 204,
            "bytes_sent": 12, "duration_ms": 0.25, "user_agent": null, "trace_id": null,
        });
        assert_eq!(v, expected);
        let mut r = record(&redact);
        r.client_ip = Some("2001:db8::7".parse().unwrap());
        r.consumer = Some("alice");
        r.auth = Some("jwt:main");
        r.upstream_status = None;
        r.duration_ms = 1.0;
        r.waf_rules = Some(&[942100, 920350]);
        r.anomaly_score = Some(10);
        r.waf_body = Some("prefix");
        r.upstream_body = Some("masked");
        r.websocket_close = Some("idle");
        r.grpc_status = Some(16);
        r.key_label = Some("ci-2027");
        let v = line(&r);
        assert_eq!(v["client_ip"], "2001:db8::7");
        assert_eq!(v["consumer"], "alice");
        assert_eq!(v["auth"], "jwt:main");
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 1.0);
        assert_eq!(v["waf_rules"], serde_json::json!([942100, 920350]));
        assert_eq!(v["anomaly_score"], 10);
        assert_eq!(v["waf_body"], "prefix");
        assert_eq!(v["upstream_body"], "masked");
        assert_eq!(v["websocket_close"], "idle");
        assert_eq!(v["grpc_status"], 16);
        assert_eq!(v["key_label"], "ci-2027");
        r.duration_ms = f64::NAN;
        assert_eq!(line(&r)["duration_ms"], serde_json::Value::Null);
    }

    #[test]
    fn hostile_text_stays_inside_its_string() {
        let redact = HashSet::new();
        let nasty = "a\"b\\c\nd\re\tf\u{0}\u{1f}\u{7f}g\u{8}\u{c}é🦀\"},\"status\":1";
        let mut r = record(&redact);
        r.request_id = nasty;
        r.route = nasty;
        r.decision = nasty;
        r.user_agent = Some(b"ua \xff\xfe \"x\" \x01");
        r.path = "/p\"q";
        r.query = Some("x=\"1\\&token=\"secret");
        let v = line(&r);
        assert_eq!(v["request_id"], nasty);
        assert_eq!(v["route"], nasty);
        assert_eq!(v["decision"], nasty);
        assert_eq!(v["status"], 200);
        assert_eq!(v["user_agent"], "ua \u{fffd}\u{fffd} \"x\" \u{1}");
        assert_eq!(v["path"], "/p\"q?x=\"1\\&token=REDACTED");
    }
}
