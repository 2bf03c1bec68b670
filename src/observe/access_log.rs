//! The JSON access log of SPEC §6: one object a line, written by a dedicated thread so that a
//! slow disk or pipe never blocks a request. Secrets never reach it: the query values of
//! sensitive parameters are redacted and no header other than `User-Agent` is logged.

use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Lines buffered before new ones are dropped (and counted). The queue takes memory only for
/// the lines in it: a channel with its slots allocated up front would hold 2 MiB for this many
/// from the start.
const QUEUE_LINES: usize = 65_536;

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

/// The `ts` field: now, RFC 3339 in UTC with milliseconds.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Where access-log lines go (`[logging] access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: Option<String>,
    pub method: &'a str,
    pub path: String,
    pub status: u16,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub decision: &'a str,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub user_agent: Option<String>,
    /// The `[waf]` rules that fired (ids only, never what they matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waf_rules: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly_score: Option<i64>,
    /// `"prefix"` when only the first `waf.max_body_bytes` of the body were inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waf_body: Option<&'static str>,
}

pub struct AccessLog {
    /// Opened at start-up so that a bad path fails early; handed to the writer thread, which
    /// starts with the first line (after Pingora may have forked into a daemon).
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    queue: OnceLock<Option<Queue>>,
    dropped: prometheus::IntCounter,
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
            AccessLogTarget::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(AccessLog {
            writer: Mutex::new(writer),
            queue: OnceLock::new(),
            dropped,
        })
    }

    fn queue(&self) -> Option<&Queue> {
        self.queue
            .get_or_init(|| {
                let writer = self.writer.lock().ok()?.take()?;
                let (sender, receiver) = channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let counter = queued.clone();
                match std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_lines(receiver, &counter, writer))
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

    pub fn record(&self, record: &AccessRecord) {
        let Some(queue) = self.queue() else { return };
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                log::error!("cannot format an access log line: {e}");
                return;
            }
        };
        if !queue.push(line) {
            self.dropped.inc();
        }
    }
}

/// How long the writer waits after a batch before it looks again. Under load the queue is never
/// empty when it looks, so it never sleeps on the channel, and request threads never have to
/// wake it (a futex call and a context switch per line, the largest cost of logging).
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

fn write_lines(receiver: Receiver<String>, queued: &AtomicUsize, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(line) = receiver.recv() {
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

/// The path and query for the log, with the values of sensitive parameters replaced.
pub fn redacted_path(path: &str, query: Option<&str>, redact: &HashSet<String>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            let decoded = percent_decoded_lower(name);
            let sensitive =
                redact.contains(&decoded) || ALWAYS_REDACTED.contains(&decoded.as_str());
            if sensitive {
                out.push_str("REDACTED");
            } else {
                out.push_str(value);
            }
        }
    }
    out
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
}
