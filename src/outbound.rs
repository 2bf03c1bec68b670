//! Requests the gateway itself makes to identity providers — a JWKS, a discovery document, a
//! token introspection — over Pingora's own connector: HTTP/1.1, TLS certificates and host
//! names verified, connections pooled and reused, every answer bounded in size and time.

use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::time::Duration;

/// How long a pooled connection to an identity provider may idle.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The parts of an `http(s)://` address that a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

impl Url {
    /// The host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(self.host.eq_ignore_ascii_case("localhost"))
    }

    /// The `Host` header: the port only when it is not the scheme's own.
    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parse an `https://` (or `http://`) address. Addresses with credentials are refused: what
/// the gateway fetches is public, and a client secret travels in a header, never a URL.
pub fn parse_url(text: &str) -> Result<Url, String> {
    // Messages show the URL without its userinfo: a credential never reaches a log.
    let shown = crate::observe::redact::redact_url(text);
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid URL {shown:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "{shown:?} must start with https:// (or http:// for a loopback test server)"
            ))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{shown:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "{shown:?} must not carry credentials in the address"
        ));
    }
    Ok(Url {
        tls,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into()),
        host,
    })
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the time allowed.
    Timeout,
    /// The host could not be resolved or connected to (TLS included).
    Connect(String),
    /// The request or the answer broke off, or the answer is larger than allowed.
    Exchange(String),
}

impl Failure {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect(_) => "connect",
            Failure::Exchange(_) => "exchange",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "no complete answer in time"),
            Failure::Connect(e) | Failure::Exchange(e) => write!(f, "{e}"),
        }
    }
}

/// One request: `POST` when `body` is given, else `GET`.
pub struct Request<'a> {
    pub url: &'a Url,
    pub headers: &'a [(&'static str, String)],
    pub body: Option<&'a [u8]>,
    /// Answers larger than this are refused; `what` names the document in that error.
    pub limit: usize,
    pub what: &'a str,
    pub timeout: Duration,
}

/// Send `r` and read the whole answer: its status and body. The connection goes back to the
/// pool when the answer allows it.
pub async fn send(r: &Request<'_>, connector: &Connector) -> Result<(u16, Vec<u8>), Failure> {
    tokio::time::timeout(r.timeout, exchange(r, connector))
        .await
        .map_err(|_| Failure::Timeout)?
}

/// GET one UTF-8 document of at most `limit` bytes (`what` names it in errors); any status
/// but 200 is an error.
pub async fn get(
    url: &Url,
    connector: &Connector,
    limit: usize,
    what: &str,
    timeout: Duration,
) -> Result<String, String> {
    let request = Request {
        url,
        headers: &[],
        body: None,
        limit,
        what,
        timeout,
    };
    let (status, body) = send(&request, connector).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    String::from_utf8(body).map_err(|_| format!("{what} is not UTF-8"))
}

async fn exchange(r: &Request<'_>, connector: &Connector) -> Result<(u16, Vec<u8>), Failure> {
    let url = r.url;
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| Failure::Connect(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| Failure::Connect(format!("{} has no address", url.host)))?;
    let sni = if url.tls {
        url.host.clone()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, url.tls, sni);
    peer.options.connection_timeout = Some(r.timeout);
    peer.options.read_timeout = Some(r.timeout);
    peer.options.write_timeout = Some(r.timeout);
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.idle_timeout = Some(POOL_IDLE);
    let (mut session, _reused) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| Failure::Connect(format!("cannot connect: {e}")))?;
    let exchange_error = |e: Box<pingora_core::Error>| Failure::Exchange(e.to_string());
    let method = if r.body.is_some() { "POST" } else { "GET" };
    let mut req =
        RequestHeader::build(method, url.path.as_bytes(), None).map_err(exchange_error)?;
    req.insert_header("Host", url.host_header())
        .map_err(exchange_error)?;
    req.insert_header("Accept", "application/json")
        .map_err(exchange_error)?;
    req.insert_header(
        "User-Agent",
        concat!("portcullis/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(exchange_error)?;
    for (name, value) in r.headers {
        req.insert_header(*name, value.as_str())
            .map_err(exchange_error)?;
    }
    if let Some(body) = r.body {
        req.insert_header("Content-Length", body.len().to_string())
            .map_err(exchange_error)?;
    }
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| Failure::Exchange(format!("cannot send the request: {e}")))?;
    if let Some(body) = r.body {
        session
            .write_request_body(bytes::Bytes::copy_from_slice(body), true)
            .await
            .map_err(|e| Failure::Exchange(format!("cannot send the request body: {e}")))?;
    }
    session
        .finish_request_body()
        .await
        .map_err(exchange_error)?;
    session
        .read_response_header()
        .await
        .map_err(|e| Failure::Exchange(format!("no response: {e}")))?;
    let status = session
        .response_header()
        .map(|h| h.status.as_u16())
        .unwrap_or(0);
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| Failure::Exchange(format!("cannot read the body: {e}")))?
    {
        if body.len() + chunk.len() > r.limit {
            return Err(Failure::Exchange(format!(
                "{} is larger than {} bytes",
                r.what, r.limit
            )));
        }
        body.extend_from_slice(&chunk);
    }
    connector
        .release_http_session(session, &peer, Some(POOL_IDLE))
        .await;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://id.example.com/.well-known/jwks.json").unwrap();
        assert_eq!(
            u,
            Url {
                tls: true,
                host: "id.example.com".into(),
                port: 443,
                path: "/.well-known/jwks.json".into()
            }
        );
        assert_eq!(u.host_header(), "id.example.com");
        let u = parse_url("http://127.0.0.1:8080/keys?x=1").unwrap();
        assert!(!u.tls);
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/keys?x=1");
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let v6 = parse_url("http://[::1]:9/").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.host_header(), "[::1]:9");
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
        let e = parse_url("https://user:pw@host/").unwrap_err();
        assert!(!e.contains("pw"), "{e}");
        assert!(parse_url("http://localhost:9/").unwrap().is_loopback());
        assert!(parse_url("http://[::1]:9/").unwrap().is_loopback());
        assert!(!parse_url("http://10.0.0.1/").unwrap().is_loopback());
    }
}
