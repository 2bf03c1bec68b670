//! Test certificates: a CA made on the spot (rcgen) that issues server and client
//! certificates, valid or expired.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test certificate authority (rcgen).
pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate PEM, key PEM)
    pub fn issue(&self, cn: &str, sans: &[&str], expired: bool) -> (String, String) {
        self.issue_numbered(cn, sans, expired, None)
    }

    /// Like `issue`, with the serial number given (for a CRL to name).
    pub fn issue_numbered(
        &self,
        cn: &str,
        sans: &[&str],
        expired: bool,
        serial: Option<u64>,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    /// A CRL of this CA (PEM) revoking the certificates with these serial numbers, issued on
    /// 2026-01-01 and due for renewal on `next_update` (year, month, day).
    pub fn crl(&self, revoked: &[u64], next_update: (i32, u8, u8)) -> String {
        let (y, m, d) = next_update;
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(y, m, d),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.ca).unwrap().pem().unwrap()
    }
}
