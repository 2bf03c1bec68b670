//! Fetching JWKS documents over HTTP(S) with Pingora's own connector, as a Pingora background
//! service: on start, every `jwks_refresh`, and when a request asks because a token named an
//! unknown key. A failed fetch keeps the last good key set. Never runs on the request path.

use crate::checks::auth::jwt::{parse_jwks, KeySet, KeyStore};
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// A JWKS larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Whole fetch: connect, request, response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of a `jwks_url` that a fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(text: &str) -> Result<JwksUrl, String> {
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
            "{shown:?} must not carry credentials; a JWKS is public"
        ));
    }
    Ok(JwksUrl {
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

/// Fetch and parse a JWKS. TLS certificates and host names are verified.
pub async fn fetch(url: &JwksUrl, connector: &Connector) -> Result<KeySet, String> {
    let work = async {
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", url.host))?;
        let sni = if url.tls {
            url.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, url.tls, sni);
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.read_timeout = Some(Duration::from_secs(5));
        peer.options.write_timeout = Some(Duration::from_secs(5));
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        let (mut session, _) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut req =
            RequestHeader::build("GET", url.path.as_bytes(), None).map_err(|e| e.to_string())?;
        let host_header = if (url.tls && url.port == 443) || (!url.tls && url.port == 80) {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        };
        req.insert_header("Host", host_header)
            .map_err(|e| e.to_string())?;
        req.insert_header("Accept", "application/json")
            .map_err(|e| e.to_string())?;
        req.insert_header(
            "User-Agent",
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| e.to_string())?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| format!("no response: {e}"))?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_string())?;
        parse_jwks(&text)
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| format!("no complete answer within {FETCH_TIMEOUT:?}"))?
}

/// Keeps every remote key store fresh.
pub struct JwksRefresher {
    pub stores: Vec<(String, Arc<KeyStore>)>,
    pub failures: prometheus::IntCounterVec,
}

async fn refresh_loop(
    name: String,
    store: Arc<KeyStore>,
    failures: prometheus::IntCounterVec,
    mut shutdown: ShutdownWatch,
) {
    let Some(remote) = store.remote.as_ref() else {
        return;
    };
    let url = match parse_url(&remote.url) {
        Ok(url) => url,
        Err(e) => {
            log::error!("jwt provider {name}: {e}");
            return;
        }
    };
    let connector = Connector::new(None);
    loop {
        match fetch(&url, &connector).await {
            Ok(keys) => {
                log::info!(
                    "jwt provider {name}: loaded {} key(s) from {}",
                    keys.len(),
                    remote.url
                );
                store.replace(keys);
            }
            Err(e) => {
                failures.with_label_values(&[name.as_str()]).inc();
                log::error!(
                    "jwt provider {name}: cannot refresh the JWKS from {}: {e}; keeping the last good keys",
                    remote.url
                )
            }
        }
        remote.attempted();
        tokio::select! {
            _ = tokio::time::sleep(remote.refresh) => {}
            _ = remote.woken() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .stores
            .iter()
            .map(|(name, store)| {
                tokio::spawn(refresh_loop(
                    name.clone(),
                    store.clone(),
                    self.failures.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://id.example.com/.well-known/jwks.json").unwrap();
        assert_eq!(
            u,
            JwksUrl {
                tls: true,
                host: "id.example.com".into(),
                port: 443,
                path: "/.well-known/jwks.json".into()
            }
        );
        let u = parse_url("http://127.0.0.1:8080/keys?x=1").unwrap();
        assert!(!u.tls);
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/keys?x=1");
        assert_eq!(parse_url("http://[::1]:9/").unwrap().host, "::1");
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("https://user:pw@host/").is_err());
    }
}
