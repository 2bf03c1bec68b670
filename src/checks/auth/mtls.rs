//! mTLS identity (SPEC §3 step 6): the client certificate was verified against `client_ca`
//! during the handshake; here it is mapped to a consumer through `mtls_subjects` — the
//! subject CN, a SAN, or the certificate's SHA-256 fingerprint.

/// What the TLS handshake learned about the client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    pub common_names: Vec<String>,
    pub sans: Vec<String>,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtlsSubject {
    CommonName(String),
    San(String),
    Fingerprint([u8; 32]),
}

/// `CN=name`, `SAN=name`, or a SHA-256 fingerprint (`sha256:` and `:` separators optional).
pub fn parse_subject(text: &str) -> Result<MtlsSubject, String> {
    if let Some(cn) = text.strip_prefix("CN=") {
        if cn.is_empty() {
            return Err("empty CN".into());
        }
        return Ok(MtlsSubject::CommonName(cn.to_string()));
    }
    if let Some(san) = text.strip_prefix("SAN=") {
        if san.is_empty() {
            return Err("empty SAN".into());
        }
        return Ok(MtlsSubject::San(san.to_string()));
    }
    let hex_text: String = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    match hex::decode(&hex_text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(fp) => Ok(MtlsSubject::Fingerprint(fp)),
        None => Err(format!(
            "invalid subject {text:?}; write \"CN=name\", \"SAN=name\" or a SHA-256 certificate fingerprint"
        )),
    }
}

/// The consumer a verified client certificate belongs to: the first whose `mtls_subjects`
/// names it.
pub fn consumer_for_cert<'a>(
    consumers: impl IntoIterator<Item = &'a [MtlsSubject]>,
    cert: &PeerCert,
) -> Option<usize> {
    consumers
        .into_iter()
        .position(|subjects| subjects.iter().any(|s| matches(s, cert)))
}

pub fn matches(subject: &MtlsSubject, cert: &PeerCert) -> bool {
    match subject {
        MtlsSubject::CommonName(cn) => cert.common_names.iter().any(|c| c == cn),
        MtlsSubject::San(san) => cert.sans.iter().any(|s| s == san),
        MtlsSubject::Fingerprint(fp) => *fp == cert.fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            parse_subject("CN=app"),
            Ok(MtlsSubject::CommonName("app".into()))
        );
        assert_eq!(
            parse_subject("SAN=app.internal"),
            Ok(MtlsSubject::San("app.internal".into()))
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_subject(&hex),
            Ok(MtlsSubject::Fingerprint([0xab; 32]))
        );
        assert_eq!(
            parse_subject(&format!("sha256:{hex}")),
            Ok(MtlsSubject::Fingerprint([0xab; 32]))
        );
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert_eq!(
            parse_subject(&colons.join(":")),
            Ok(MtlsSubject::Fingerprint([0xab; 32]))
        );
        assert!(parse_subject("CN=").is_err());
        assert!(parse_subject("app").is_err());
        let cert = PeerCert {
            common_names: vec!["app".into()],
            sans: vec!["app.internal".into()],
            fingerprint: [1; 32],
        };
        assert!(matches(&MtlsSubject::CommonName("app".into()), &cert));
        assert!(!matches(&MtlsSubject::CommonName("App".into()), &cert));
        assert!(matches(&MtlsSubject::San("app.internal".into()), &cert));
        assert!(matches(&MtlsSubject::Fingerprint([1; 32]), &cert));
        assert!(!matches(&MtlsSubject::Fingerprint([2; 32]), &cert));
    }
}
