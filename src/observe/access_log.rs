//! The JSON access log of SPEC §6: one object a line, written by a dedicated thread so that a
//! slow disk or pipe never blocks a request. Secrets never reach it: the query values of
//! sensitive parameters are redacted and no header other than `User-Agent` is logged.

use crate::config::model::AccessLogTarget;
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

/// Lines buffered before new ones are dropped (and counted).
const QUEUE_LINES: usize = 65_536;

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
}

pub struct AccessLog {
    /// Opened at start-up so that a bad path fails early; handed to the writer thread, which
    /// starts with the first line (after Pingora may have forked into a daemon).
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    sender: OnceLock<Option<SyncSender<String>>>,
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
            sender: OnceLock::new(),
            dropped,
        })
    }

    fn sender(&self) -> Option<&SyncSender<String>> {
        self.sender
            .get_or_init(|| {
                let writer = self.writer.lock().ok()?.take()?;
                let (sender, receiver) = sync_channel(QUEUE_LINES);
                match std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_lines(receiver, writer))
                {
                    Ok(_) => Some(sender),
                    Err(e) => {
                        log::error!("cannot start the access log writer: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    pub fn record(&self, record: &AccessRecord) {
        let Some(sender) = self.sender() else { return };
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                log::error!("cannot format an access log line: {e}");
                return;
            }
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(line) {
            self.dropped.inc();
        }
    }
}

/// How long the writer waits after a batch before it looks again. Under load the queue is never
/// empty when it looks, so it never sleeps on the channel, and request threads never have to
/// wake it (a futex call and a context switch per line, the largest cost of logging).
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

fn write_lines(receiver: Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(line) = receiver.recv() {
        let mut result = writeln!(out, "{line}");
        // Drain what is queued, then flush once: lines reach the file promptly in bursts.
        while let Ok(more) = receiver.try_recv() {
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
    use crate::checks::path::hex_value as hex;
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
