//! Failed TLS handshakes, made visible: counted by reason in
//! `portcullis_tls_handshake_failures_total{reason}` and written to the access log as
//! `{"event":"tls_handshake_failed","client_ip":…,"reason":…}`. Before, they reached only the
//! error log.
//!
//! Pingora performs the handshake and reports a failure in one error-log line ("Downstream
//! handshake error from ADDR: …"); `Intercept`, the process's logger, reads that line as it
//! passes (and lets it through). The line says what OpenSSL said ("no shared cipher",
//! "unsupported protocol", "peer did not return a certificate", "certificate verify failed").
//! Which verification failed — an unknown CA, an expired or revoked certificate — only the
//! verify callback of the listener knows (`verify_failed`); it leaves the reason for the
//! thread it runs on, where Pingora writes the line right after (the same poll of the
//! handshake: OpenSSL fails it as soon as verification does).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

/// Where failures go, set once the metrics and the access log exist.
pub struct HandshakeRecorder {
    pub failures: prometheus::IntCounterVec,
    pub access_log: Arc<super::access_log::AccessLog>,
}

static RECORDER: OnceLock<HandshakeRecorder> = OnceLock::new();

pub fn install(recorder: HandshakeRecorder) {
    let _ = RECORDER.set(recorder);
}

thread_local! {
    /// The reason the last client certificate on this thread failed verification, and when.
    static LAST_VERIFY: Cell<Option<(&'static str, Instant)>> = const { Cell::new(None) };
}

/// OpenSSL's `X509_V_ERR_*` codes the reasons tell apart (stable across OpenSSL versions).
const UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const UNABLE_TO_GET_CRL: i32 = 3;
const CERT_NOT_YET_VALID: i32 = 9;
const CERT_HAS_EXPIRED: i32 = 10;
const CRL_NOT_YET_VALID: i32 = 11;
const CRL_HAS_EXPIRED: i32 = 12;
const DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
const CERT_REVOKED: i32 = 23;
const CERT_UNTRUSTED: i32 = 27;

/// The reason of a certificate verification error code.
pub fn verify_reason(code: i32) -> &'static str {
    match code {
        CERT_HAS_EXPIRED => "certificate_expired",
        CERT_NOT_YET_VALID => "certificate_not_yet_valid",
        CERT_REVOKED => "certificate_revoked",
        UNABLE_TO_GET_ISSUER_CERT
        | UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | DEPTH_ZERO_SELF_SIGNED_CERT
        | SELF_SIGNED_CERT_IN_CHAIN
        | CERT_UNTRUSTED => "unknown_ca",
        UNABLE_TO_GET_CRL | CRL_NOT_YET_VALID | CRL_HAS_EXPIRED => "crl_unusable",
        _ => "certificate_invalid",
    }
}

/// Called by a listener's verify callback when a client certificate fails.
pub fn verify_failed(code: i32) {
    LAST_VERIFY.with(|last| last.set(Some((verify_reason(code), Instant::now()))));
}

/// The reason of a handshake error, from OpenSSL's words.
pub fn classify(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("peer did not return a certificate") {
        "no_certificate"
    } else if m.contains("no shared cipher") || m.contains("no suitable signature algorithm") {
        "cipher_refused"
    } else if m.contains("unsupported protocol")
        || m.contains("version too low")
        || m.contains("wrong version number")
        || m.contains("no protocols available")
        || m.contains("unexpected message")
    {
        "protocol_refused"
    } else if m.contains("unexpected eof") || m.contains("connection reset") {
        "aborted"
    } else if m.contains("http request") {
        "not_tls"
    } else if m.contains("certificate verify failed") {
        "certificate_invalid"
    } else {
        "other"
    }
}

/// The reason of a failed handshake: what the verify callback left on this thread moments ago,
/// else OpenSSL's words.
fn reason_of(message: &str) -> &'static str {
    let left = LAST_VERIFY.with(|last| last.take());
    let classified = classify(message);
    match left {
        Some((reason, at)) if at.elapsed().as_secs() < 5 && classified == "certificate_invalid" => {
            reason
        }
        _ => classified,
    }
}

/// Count and log one failed handshake.
pub fn handshake_failed(peer: Option<SocketAddr>, message: &str) {
    let reason = reason_of(message);
    let Some(recorder) = RECORDER.get() else {
        return;
    };
    recorder.failures.with_label_values(&[reason]).inc();
    let line = serde_json::json!({
        "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "event": "tls_handshake_failed",
        "client_ip": peer.map(|p| p.ip().to_string()),
        "client_port": peer.map(|p| p.port()),
        "reason": reason,
    });
    recorder.access_log.write_line(line.to_string());
}

/// Pingora's error-log line of a failed handshake: the peer (when it says) and the error.
pub fn parse_line(text: &str) -> Option<(Option<SocketAddr>, &str)> {
    if text == "Downstream handshake timeout" {
        return Some((None, "timeout"));
    }
    let rest = text.strip_prefix("Downstream handshake error")?;
    if let Some(rest) = rest.strip_prefix(" from ") {
        let (addr, error) = rest.split_once(": ")?;
        let peer = addr.parse().ok();
        return Some((peer, error));
    }
    Some((None, rest.strip_prefix(": ").unwrap_or(rest)))
}

/// The process's logger: `inner`, with failed handshakes counted and logged on the way.
pub struct Intercept<L> {
    pub inner: L,
}

impl<L: log::Log> log::Log for Intercept<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record
            .target()
            .starts_with("pingora_core::services::listening")
        {
            let text = record.args().to_string();
            if let Some((peer, error)) = parse_line(&text) {
                let error = if error == "timeout" {
                    "handshake timeout"
                } else {
                    error
                };
                handshake_failed(peer, error);
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_lines_are_read() {
        let (peer, error) = parse_line(
            "Downstream handshake error from 127.0.0.1:5555: TLSHandshakeFailure context: TLS accept() failed: error:0A000412:SSL routines::sslv3 alert bad certificate",
        )
        .unwrap();
        assert_eq!(peer, Some("127.0.0.1:5555".parse().unwrap()));
        assert!(error.contains("TLS accept() failed"));
        let (peer, _) = parse_line("Downstream handshake error from [::1]:80: x").unwrap();
        assert_eq!(peer, Some("[::1]:80".parse().unwrap()));
        assert_eq!(
            parse_line("Downstream handshake timeout"),
            Some((None, "timeout"))
        );
        assert_eq!(
            parse_line("Downstream handshake error: x"),
            Some((None, "x"))
        );
        assert_eq!(parse_line("something else"), None);
    }

    #[test]
    fn reasons() {
        assert_eq!(
            classify("…:peer did not return a certificate:…"),
            "no_certificate"
        );
        assert_eq!(
            classify("error:0A0000C1:SSL routines::no shared cipher"),
            "cipher_refused"
        );
        assert_eq!(classify("…:unsupported protocol:…"), "protocol_refused");
        assert_eq!(classify("…:http request:…"), "not_tls");
        assert_eq!(
            classify("…:certificate verify failed:…"),
            "certificate_invalid"
        );
        assert_eq!(
            classify("ssl3_read_bytes:unexpected message:"),
            "protocol_refused"
        );
        assert_eq!(classify("TLS accept() failed: unexpected EOF"), "aborted");
        assert_eq!(classify("bad record mac"), "other");
        assert_eq!(verify_reason(CERT_HAS_EXPIRED), "certificate_expired");
        assert_eq!(verify_reason(CERT_REVOKED), "certificate_revoked");
        assert_eq!(
            verify_reason(UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
            "unknown_ca"
        );
        assert_eq!(verify_reason(CRL_HAS_EXPIRED), "crl_unusable");
        // What the verify callback left decides a verification failure, once.
        verify_failed(CERT_REVOKED);
        assert_eq!(
            reason_of("certificate verify failed"),
            "certificate_revoked"
        );
        assert_eq!(
            reason_of("certificate verify failed"),
            "certificate_invalid"
        );
        verify_failed(CERT_REVOKED);
        assert_eq!(reason_of("no shared cipher"), "cipher_refused");
    }
}
