//! TLS termination on listeners: certificate and key from files, TLS 1.2 minimum, h2 and
//! http/1.1 via ALPN, and — with `client_ca` — a verified client certificate whose names and
//! fingerprint are recorded for mTLS authentication; with `crl`, checked against the
//! revocation lists in that file (read at start, so a graceful upgrade reloads them).

use crate::checks::auth::mtls::PeerCert;
use crate::config::model::ListenerTls;
use crate::observe::handshakes;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::hash::MessageDigest;
use pingora_core::tls::nid::Nid;
use pingora_core::tls::ssl::{SslFiletype, SslVerifyMode, SslVersion};
use pingora_core::tls::x509::store::X509Lookup;
use pingora_core::tls::x509::verify::X509VerifyFlags;
use pingora_core::tls::x509::X509Name;
use std::any::Any;
use std::sync::Arc;

/// The TLS 1.2 cipher suites offered: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
pub const MODERN_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Records the verified client certificate after the handshake.
struct ClientCertRecorder;

#[async_trait]
impl TlsAccept for ClientCertRecorder {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let cert = ssl.peer_certificate()?;
        let common_names = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok())
            .collect();
        let sans = cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        n.dnsname()
                            .or_else(|| n.email())
                            .or_else(|| n.uri())
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fingerprint = cert
            .digest(MessageDigest::sha256())
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(&d[..]).ok())?;
        Some(Arc::new(PeerCert {
            common_names,
            sans,
            fingerprint,
        }))
    }
}

fn path_str(path: &std::path::Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}

/// Build the TLS settings of a listener. Errors name the file.
pub fn listener_settings(tls: &ListenerTls) -> Result<TlsSettings, String> {
    let mut settings = TlsSettings::with_callbacks(Box::new(ClientCertRecorder))
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let cert = path_str(&tls.cert)?;
    let key = path_str(&tls.key)?;
    settings
        .set_certificate_chain_file(cert)
        .map_err(|e| format!("tls.cert: cannot use {cert}: {e}"))?;
    settings
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("tls.key: cannot use {key}: {e}"))?;
    settings
        .check_private_key()
        .map_err(|e| format!("tls.key: {key} does not match {cert}: {e}"))?;
    settings
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| format!("cannot require TLS 1.2: {e}"))?;
    // TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all of that kind).
    settings
        .set_cipher_list(MODERN_TLS12_CIPHERS)
        .map_err(|e| format!("cannot set the cipher suites: {e}"))?;
    if let Some(ca) = &tls.client_ca {
        let ca = path_str(ca)?;
        settings
            .set_ca_file(ca)
            .map_err(|e| format!("tls.client_ca: cannot use {ca}: {e}"))?;
        let names = X509Name::load_client_ca_file(ca)
            .map_err(|e| format!("tls.client_ca: cannot read {ca}: {e}"))?;
        settings.set_client_ca_list(names);
        if let Some(crl) = &tls.crl {
            let crl = path_str(crl)?;
            let store = settings.cert_store_mut();
            store
                .add_lookup(X509Lookup::file())
                .and_then(|lookup| lookup.load_crl_file(crl, SslFiletype::PEM))
                .map_err(|e| format!("tls.crl: cannot use {crl}: {e}"))?;
            // The client's own certificate is checked; its CA is the one configured.
            store
                .set_flags(X509VerifyFlags::CRL_CHECK)
                .map_err(|e| format!("tls.crl: cannot turn on revocation checks: {e}"))?;
        }
        // Verification stays OpenSSL's; the callback only notes why one failed, for the
        // handshake-failure count and log line (`observe::handshakes`).
        settings.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            |verified, ctx| {
                if !verified {
                    handshakes::verify_failed(ctx.error().as_raw());
                }
                verified
            },
        );
    }
    settings.enable_h2();
    Ok(settings)
}
