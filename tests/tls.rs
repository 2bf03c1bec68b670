//! TLS termination and mTLS against the real gateway: certificates are made here with rcgen,
//! the client is OpenSSL (through Pingora's re-export) so that client certificates, protocol
//! versions and ALPN are under the test's control.

mod harness;

use harness::*;
use pingora_core::tls::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Setup {
    gw: Gateway,
    up: Upstream,
    tls_port: u16,
    pki: Pki,
    dir: tempfile::TempDir,
}

impl Setup {
    /// Write a client certificate and key for OpenSSL or curl; returns their paths.
    fn client_files(
        &self,
        name: &str,
        pair: &(String, String),
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &pair.0).unwrap();
        std::fs::write(&key, &pair.1).unwrap();
        (cert, key)
    }
}

fn setup() -> Setup {
    setup_with("")
}

/// `setup` with `extra` sections at the top of the config.
fn setup_with(extra: &str) -> Setup {
    setup_full(Pki::new("portcullis test CA"), extra, "", &[])
}

/// The test gateway of this file: `pki` signs its certificate and is its client CA; `extra`
/// goes at the top of the config, `tls_extra` into the listener's `tls` table, and `files`
/// beside the config.
fn setup_full(pki: Pki, extra: &str, tls_extra: &str, files: &[(&str, &[u8])]) -> Setup {
    let up = Upstream::start();
    let (server_cert, server_key) = pki.issue("localhost", &["localhost", "127.0.0.1"], false);
    let tls_port = free_port();
    let body = format!(
        r#"{extra}
[[listeners]]
address = "127.0.0.1:{tls_port}"
tls = {{ cert = "server.pem", key = "server.key", client_ca = "ca.pem"{tls_extra} }}

[limits]
header_read_timeout = "2s"

[[upstreams]]
name = "app"
targets = ["{up}"]

[[consumers]]
id = "mobile-app"
groups = ["partners"]
mtls_subjects = ["CN=mobile-app"]

[[consumers]]
id = "batch"
mtls_subjects = ["SAN=batch.internal"]

[[routes]]
name = "mtls"
path_prefix = "/m"
upstream = "app"
auth = ["mtls"]
allow = {{ consumers = ["mobile-app", "batch"] }}

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "app"
public = true
"#,
        up = up.addr
    );
    let ca_pem = pki.ca.pem();
    let mut all: Vec<(&str, &[u8])> = vec![
        ("server.pem", server_cert.as_bytes()),
        ("server.key", server_key.as_bytes()),
        ("ca.pem", ca_pem.as_bytes()),
    ];
    all.extend_from_slice(files);
    let gw = Gateway::start_with_files(&body, "", &all);
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", tls_port)
    )
    .is_ok()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
    Setup {
        gw,
        up,
        tls_port,
        pki,
        dir,
    }
}

/// One request over TLS with an optional client certificate; `None` when the handshake or the
/// exchange failed.
fn tls_get(
    s: &Setup,
    path: &str,
    client: Option<&(String, String)>,
    max_version: Option<SslVersion>,
) -> Option<HttpResponse> {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_ca_file(s.dir.path().join("ca.pem")).unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    if let Some(v) = max_version {
        builder.set_min_proto_version(Some(v)).ok();
        builder.set_max_proto_version(Some(v)).ok();
    }
    if let Some(pair) = client {
        let (cert_path, key_path) = s.client_files("client", pair);
        builder
            .set_certificate_file(&cert_path, SslFiletype::PEM)
            .unwrap();
        builder
            .set_private_key_file(&key_path, SslFiletype::PEM)
            .unwrap();
    }
    let connector = builder.build();
    let tcp = TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = connector.connect("localhost", tcp).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    read_response(&mut stream)
}

#[test]
fn mtls_maps_verified_certificates_to_consumers() {
    let s = setup();
    let good = s.pki.issue("mobile-app", &[], false);
    let r = tls_get(&s, "/m/orders", Some(&good), None).expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let seen = &s.up.requests()[0];
    assert_eq!(seen.header("x-consumer-id"), Some("mobile-app"));
    assert_eq!(seen.header("x-consumer-groups"), Some("partners"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    s.up.clear();
    let by_san = s.pki.issue("whatever", &["batch.internal"], false);
    let r = tls_get(&s, "/m/x", Some(&by_san), None).expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(s.up.requests()[0].header("x-consumer-id"), Some("batch"));

    // A certificate from the right CA that no consumer claims.
    s.up.clear();
    let stranger = s.pki.issue("stranger", &[], false);
    let r = tls_get(&s, "/m/x", Some(&stranger), None).expect("a response");
    r.assert_problem(401);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert!(
        s.gw.wait_metric(
            "portcullis_auth_failures_total",
            &[("route", "mtls"), ("reason", "unknown_certificate")],
            1.0
        ) >= 1.0
    );
    assert!(s.up.requests().is_empty());
}

#[test]
fn certificates_that_fail_verification_never_reach_http() {
    let s = setup();
    let other_ca = Pki::new("some other CA");
    let foreign = other_ca.issue("mobile-app", &[], false);
    let expired = s.pki.issue("mobile-app", &[], true);
    assert!(
        tls_get(&s, "/m/x", None, None).is_none(),
        "no client certificate"
    );
    assert!(
        tls_get(&s, "/m/x", Some(&foreign), None).is_none(),
        "certificate from another CA"
    );
    assert!(
        tls_get(&s, "/m/x", Some(&expired), None).is_none(),
        "expired certificate"
    );
    assert!(s.up.requests().is_empty());
    // TLS 1.1 is refused whatever the certificate.
    let good = s.pki.issue("mobile-app", &[], false);
    assert!(tls_get(&s, "/m/x", Some(&good), Some(SslVersion::TLS1_1)).is_none());
    assert!(
        tls_get(&s, "/m/x", Some(&good), Some(SslVersion::TLS1_2)).is_some_and(|r| r.status == 200)
    );
}

#[test]
fn hsts_is_as_configured_on_upstream_answers_and_refusals() {
    let s = setup_with("[response]\nhsts = { max_age = \"2d\", include_subdomains = true }\n");
    let good = s.pki.issue("mobile-app", &[], false);
    let ok = tls_get(&s, "/m/x", Some(&good), None).expect("a response");
    assert_eq!(ok.status, 200);
    let refused = tls_get(&s, "/nowhere", Some(&good), None).expect("a response");
    refused.assert_problem(404);
    for r in [&ok, &refused] {
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=172800; includeSubDomains")
        );
    }
    assert!(s
        .gw
        .get("/public/x")
        .header("strict-transport-security")
        .is_none());

    let off = setup_with("[response]\nhsts = false\n");
    let good = off.pki.issue("mobile-app", &[], false);
    let r = tls_get(&off, "/m/x", Some(&good), None).expect("a response");
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_none());
}

#[test]
fn an_mtls_route_on_a_plain_listener_has_no_credential() {
    let s = setup();
    let r = s.gw.get("/m/x");
    r.assert_problem(401);
    assert!(r.header("strict-transport-security").is_none());
    assert!(s.up.requests().is_empty());
    assert_eq!(s.gw.get("/public/x").status, 200);
}

/// A connector that trusts the test CA and presents the client certificate in these files.
fn client_connector(
    s: &Setup,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> pingora_core::tls::ssl::SslConnectorBuilder {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_ca_file(s.dir.path().join("ca.pem")).unwrap();
    builder
        .set_certificate_file(cert_path, SslFiletype::PEM)
        .unwrap();
    builder
        .set_private_key_file(key_path, SslFiletype::PEM)
        .unwrap();
    builder
}

/// A TLS connection with a client certificate, offering the ALPN protocols `offer` (wire
/// format); nothing is sent after the handshake.
fn alpn_connect(
    s: &Setup,
    client: &(String, String),
    offer: &[u8],
) -> pingora_core::tls::ssl::SslStream<TcpStream> {
    let (cert_path, key_path) = s.client_files("alpn", client);
    let mut builder = client_connector(s, &cert_path, &key_path);
    builder.set_alpn_protos(offer).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    builder
        .build()
        .connect("localhost", tcp)
        .expect("handshake")
}

#[test]
fn alpn_offers_h2_and_http1() {
    let s = setup();
    let good = s.pki.issue("mobile-app", &[], false);
    for (offer, expected) in [
        (&b"\x02h2\x08http/1.1"[..], &b"h2"[..]),
        (&b"\x08http/1.1"[..], &b"http/1.1"[..]),
    ] {
        let stream = alpn_connect(&s, &good, offer);
        assert_eq!(stream.ssl().selected_alpn_protocol(), Some(expected));
    }
}

#[test]
fn idle_tls_connections_are_closed_at_the_head_deadline() {
    let s = setup();
    let good = s.pki.issue("mobile-app", &[], false);
    // HTTP/1.1 waits for a request head; HTTP/2 for its connection preface. Neither comes.
    for (offer, expected) in [
        (&b"\x08http/1.1"[..], &b"http/1.1"[..]),
        (&b"\x02h2"[..], &b"h2"[..]),
    ] {
        let mut stream = alpn_connect(&s, &good, offer);
        stream
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        assert_eq!(stream.ssl().selected_alpn_protocol(), Some(expected));
        let started = Instant::now();
        let mut buf = [0u8; 512];
        // HTTP/2 servers speak first (SETTINGS); read until the connection ends.
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        let waited = started.elapsed();
        assert!(closed, "{expected:?}: still open after {waited:?}");
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
            "{expected:?}: closed after {waited:?}"
        );
    }
    assert!(s.up.requests().is_empty());
}

#[test]
fn weak_tls12_cipher_suites_are_refused() {
    let s = setup();
    let good = s.pki.issue("mobile-app", &[], false);
    let (cert_path, key_path) = s.client_files("weak", &good);
    for (ciphers, accepted) in [
        ("AES128-SHA256:AES128-GCM-SHA256", false),
        ("ECDHE-ECDSA-AES128-SHA", false),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", true),
    ] {
        let mut builder = client_connector(&s, &cert_path, &key_path);
        builder
            .set_max_proto_version(Some(SslVersion::TLS1_2))
            .unwrap();
        builder.set_cipher_list(ciphers).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
        let handshake = builder.build().connect("localhost", tcp);
        assert_eq!(handshake.is_ok(), accepted, "{ciphers}");
    }
}

/// The address `localhost` resolves to first: where a target written as `localhost:PORT`
/// connects, so that the TLS upstream listens exactly there.
fn localhost_ip() -> std::net::IpAddr {
    use std::net::ToSocketAddrs;
    ("localhost", 0)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
        .ip()
}

#[test]
fn upstream_tls_verifies_the_target_name_against_trusted_cas_only() {
    // The TLS upstream is a second gateway with a certificate from a CA nobody trusts by
    // default: one listener takes any client, one requires a client certificate.
    let up = Upstream::start();
    let pki = Pki::new("private upstream CA");
    let (cert, key) = pki.issue("upstream", &["localhost", "upstream.test"], false);
    let client = pki.issue("portcullis-client", &[], false);
    let ip = localhost_ip();
    let host = if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let (open_port, mtls_port) = (free_port(), free_port());
    let tls_upstream = Gateway::start_with_files(
        &format!(
            r#"
[[listeners]]
address = "{host}:{open_port}"
tls = {{ cert = "up.pem", key = "up.key" }}

[[listeners]]
address = "{host}:{mtls_port}"
tls = {{ cert = "up.pem", key = "up.key", client_ca = "ca.pem" }}

{fixture}"#,
            fixture = public_route(up.addr, "all", "/")
        ),
        "",
        &[
            ("up.pem", cert.as_bytes()),
            ("up.key", key.as_bytes()),
            ("ca.pem", pki.ca.pem().as_bytes()),
        ],
    );
    for port in [open_port, mtls_port] {
        assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
            (ip, port)
        )
        .is_ok()));
    }
    let upstream = |name: &str, port: u16, target_host: &str, tls: &str| {
        format!(
            "[[upstreams]]\nname = \"{name}\"\ntargets = [\"{target_host}:{port}\"]\ntls = {tls}\n\n\
             [[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\npublic = true\n\n"
        )
    };
    let ip_target = host.as_str();
    let cases: &[(&str, u16, &str, &str, u16)] = &[
        // tls = true verifies against the system's CAs and the target's host name.
        ("bare", open_port, "localhost", "true", 502),
        ("verify", open_port, "localhost", "{ verify = true }", 502),
        // The CA is trusted, but the name checked is not one the certificate carries.
        (
            "wrongsni",
            open_port,
            ip_target,
            r#"{ sni = "other.test", ca_file = "ca.pem" }"#,
            502,
        ),
        (
            "byhost",
            open_port,
            "localhost",
            r#"{ ca_file = "ca.pem" }"#,
            200,
        ),
        (
            "bysni",
            open_port,
            ip_target,
            r#"{ sni = "upstream.test", ca_file = "ca.pem" }"#,
            200,
        ),
        // Same address, same name, no ca_file: the connection "bysni" verified and pooled a
        // moment ago must not be reused by an upstream that does not trust that CA.
        (
            "samename",
            open_port,
            ip_target,
            r#"{ sni = "upstream.test" }"#,
            502,
        ),
        (
            "nocert",
            mtls_port,
            ip_target,
            r#"{ sni = "upstream.test", ca_file = "ca.pem" }"#,
            502,
        ),
        (
            "mtls",
            mtls_port,
            ip_target,
            r#"{ sni = "upstream.test", ca_file = "ca.pem", client_cert = "client.pem", client_key = "client.key" }"#,
            200,
        ),
        (
            "unverified",
            open_port,
            ip_target,
            r#"{ sni = "localhost", verify = false }"#,
            200,
        ),
    ];
    let body: String = cases
        .iter()
        .map(|(name, port, target, tls, _)| upstream(name, *port, target, tls))
        .collect();
    let gw = Gateway::start_with_files(
        &body,
        "",
        &[
            ("ca.pem", pki.ca.pem().as_bytes()),
            ("client.pem", client.0.as_bytes()),
            ("client.key", client.1.as_bytes()),
        ],
    );
    for (name, _, _, tls, status) in cases {
        up.clear();
        let path = format!("/{name}/x");
        let response = gw.get(&path);
        if *status == 502 {
            response.assert_problem(502);
            assert!(
                up.requests().is_empty(),
                "{name} ({tls}): a request reached an upstream that failed verification"
            );
        } else {
            assert_eq!(response.status, 200, "{name} ({tls}): {}", response.text());
            let seen = up.requests();
            assert_eq!(seen.len(), 1, "{name}");
            assert_eq!(seen[0].uri, path);
        }
    }
    drop(tls_upstream);
}

#[test]
fn upstream_tls_without_a_name_to_verify_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let config = |tls: &str| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\n[[upstreams]]\nname = \"app\"\n\
             targets = [\"127.0.0.1:9443\"]\ntls = {tls}\n\n[[routes]]\nname = \"r\"\n\
             path_prefix = \"/\"\nupstream = \"app\"\npublic = true\n\
             rate_limit = {{ requests = 10, per = \"1s\" }}\n"
        )
    };
    for tls in ["true", "{ verify = true }", "{ ca_file = \"ca.pem\" }"] {
        std::fs::write(dir.path().join("ca.pem"), Pki::new("x").ca.pem()).unwrap();
        std::fs::write(&path, config(tls)).unwrap();
        let (code, _, err) = cli(&["check", "-c", path.to_str().unwrap()], None);
        assert_eq!(code, 1, "tls = {tls}: {err}");
        assert!(
            err.contains("upstreams[0].targets[0]") && err.contains("set tls.sni"),
            "tls = {tls}: {err}"
        );
    }
    // Without verification there is nothing to check a name against: allowed, with a warning.
    std::fs::write(&path, config("{ verify = false }")).unwrap();
    let (code, _, err) = cli(&["check", "-c", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: upstreams[0].tls.verify"), "{err}");
    for (tls, message) in [
        (
            r#"{ sni = "x.test", client_cert = "ca.pem" }"#,
            "client_cert and client_key go together",
        ),
        (
            r#"{ sni = "x.test", ca_file = "missing.pem" }"#,
            "upstreams[0].tls.ca_file",
        ),
        (
            r#"{ sni = "x.test", ca_file = "p.toml" }"#,
            "holds no PEM certificate",
        ),
        (r#"{ sni = "10.0.0.1" }"#, "is not a host name"),
    ] {
        std::fs::write(&path, config(tls)).unwrap();
        let (code, _, err) = cli(&["check", "-c", path.to_str().unwrap()], None);
        assert_eq!(code, 1, "tls = {tls}: {err}");
        assert!(err.contains(message), "tls = {tls}: {err}");
    }
}

#[test]
fn h2_and_http1_requests_both_work_through_tls() {
    let s = setup();
    let good = s.pki.issue("mobile-app", &[], false);
    let (cert_path, key_path) = s.client_files("curl", &good);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                flag,
                "--cacert",
            ])
            .arg(s.dir.path().join("ca.pem"))
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg(format!("https://localhost:{}/m/h2", s.tls_port))
            .output()
            .expect("curl (Debian package curl; .ci/deps installs it)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{version} 200"),
            "{flag}"
        );
    }
    assert_eq!(s.up.requests().len(), 2);
    assert!(s
        .up
        .requests()
        .iter()
        .all(|r| r.header("x-consumer-id") == Some("mobile-app")));
}

/// A client certificate on the listener's CRL fails the handshake, one not on it passes; every
/// failed handshake — revoked, unknown CA, expired, no certificate, an old protocol — is counted
/// by reason and written to the access log with the client's address.
#[test]
fn revoked_certificates_fail_the_handshake_and_failed_handshakes_are_visible() {
    let pki = Pki::new("portcullis CRL test CA");
    let crl = pki.crl(&[1001], (2030, 1, 1));
    let s = setup_full(
        pki,
        "",
        ", crl = \"crl.pem\"",
        &[("crl.pem", crl.as_bytes())],
    );
    let good = s.pki.issue_numbered("mobile-app", &[], false, Some(1002));
    let revoked = s.pki.issue_numbered("mobile-app", &[], false, Some(1001));
    let expired = s.pki.issue_numbered("mobile-app", &[], true, Some(1003));
    let foreign = Pki::new("someone else").issue("mobile-app", &[], false);

    let r = tls_get(&s, "/m/orders", Some(&good), None).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.up.requests().len(), 1);
    s.up.clear();
    for (what, client, version) in [
        ("revoked", Some(&revoked), None),
        ("foreign", Some(&foreign), None),
        ("expired", Some(&expired), None),
        ("none", None, None),
        ("TLS 1.1", Some(&good), Some(SslVersion::TLS1_1)),
    ] {
        assert!(
            tls_get(&s, "/m/orders", client, version).is_none_or(|r| r.status != 200),
            "{what} got through"
        );
    }
    // A client offering only a TLS 1.2 suite the listener does not.
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .unwrap();
    builder.set_cipher_list("AES128-SHA").unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", s.tls_port)).unwrap();
    assert!(builder.build().connect("localhost", tcp).is_err());
    assert!(s.up.requests().is_empty(), "{:?}", s.up.requests());

    let reasons = [
        "cipher_refused",
        "certificate_revoked",
        "unknown_ca",
        "certificate_expired",
        "no_certificate",
        "protocol_refused",
    ];
    let counted = |reason: &str| {
        s.gw.metric(
            "portcullis_tls_handshake_failures_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || reasons
            .iter()
            .all(|r| counted(r) >= 1.0)),
        "{}\n{}",
        s.gw.metrics(),
        s.gw.stderr()
    );
    let mut logged = std::collections::BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            logged =
                s.gw.access_log()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|v| v["event"] == "tls_handshake_failed")
                    .inspect(|v| assert_eq!(v["client_ip"], "127.0.0.1", "{v}"))
                    .filter_map(|v| v["reason"].as_str().map(str::to_string))
                    .collect();
            reasons.iter().all(|r| logged.contains(*r))
        }),
        "{logged:?}"
    );
}
