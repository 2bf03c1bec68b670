//! Upstreams on loopback: `Upstream`, a real HTTP/1.1 server (hyper) that records every
//! request and counts connections, and `Silent`, which accepts connections and never answers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header_value(&self.headers, name)
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

/// A real HTTP/1.1 upstream on loopback that records every request and counts connections.
/// A path ending in `/slow/<ms>` is answered after that many milliseconds; one ending in
/// `/status/<code>` is answered with that status, as plain text naming it (with `Allow: GET`
/// on a 405), so that a test can tell the upstream's own answer from the gateway's; one ending
/// in `/banners` carries `Server`, `X-Powered-By` and ASP.NET version headers; one ending in
/// `/cached` sets its own `Cache-Control` and `X-Content-Type-Options`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// While set, `GET /healthz` answers 503 (every other path is served as usual).
    pub failing_health: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let failing_health = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (s, c, f) = (seen.clone(), connections.clone(), failing_health.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, f) = (s.clone(), f.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (s, f) = (s.clone(), f.clone());
                        async move {
                            let failing = f.load(Ordering::SeqCst);
                            Ok::<_, hyper::Error>(respond(req, s, failing).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            failing_health,
            _runtime: runtime,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests other than health checks.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri != "/healthz")
            .collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    failing_health: bool,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let uri = parts.uri.to_string();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    if let Some(ms) = uri
        .rsplit_once("/slow/")
        .and_then(|(_, m)| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if failing_health && uri == "/healthz" {
        return Response::builder()
            .status(503)
            .body(Full::new(Bytes::from_static(b"failing")))
            .unwrap();
    }
    if let Some(code) = uri
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse::<u16>().ok())
    {
        return Response::builder()
            .status(code)
            .header("Content-Type", "text/plain")
            .header("X-Upstream", "test")
            .header("Allow", "GET")
            .body(Full::new(Bytes::from(format!("the upstream's own {code}"))))
            .unwrap();
    }
    if uri.ends_with("/cached") {
        return Response::builder()
            .header("Content-Type", "text/plain")
            .header("Cache-Control", "public, max-age=60")
            .header("X-Content-Type-Options", "nosniff")
            .body(Full::new(Bytes::from_static(b"cached")))
            .unwrap();
    }
    if uri.ends_with("/crash") {
        return Response::builder()
            .status(503)
            .header("Content-Type", "text/html")
            .header("Retry-After", "7")
            .header("Set-Cookie", "JSESSIONID=0123456789")
            .header("X-Upstream", "test")
            .body(Full::new(Bytes::from_static(
                b"<html><body><h1>HTTP Status 503</h1><pre>java.lang.IllegalStateException: pool exhausted\n\tat com.example.orders.Db.get(Db.java:42)</pre><p>Apache Tomcat/9.0.1</p></body></html>",
            )))
            .unwrap();
    }
    if uri.ends_with("/own-cors") {
        return Response::builder()
            .header("Content-Type", "text/plain")
            .header("Access-Control-Allow-Origin", "*")
            .header("Access-Control-Allow-Credentials", "true")
            .header("Access-Control-Expose-Headers", "x-secret")
            .header("Vary", "Accept-Encoding")
            .body(Full::new(Bytes::from_static(b"own-cors")))
            .unwrap();
    }
    if uri.ends_with("/banners") {
        return Response::builder()
            .header("Content-Type", "text/plain")
            .header("Server", "Apache/2.4.1 (Unix) PHP/5.4.0")
            .header("X-Powered-By", "PHP/5.4.0")
            .header("x-aspnet-version", "4.0.30319")
            .header("X-AspNetMvc-Version", "5.2")
            .header("X-Upstream", "test")
            .body(Full::new(Bytes::from_static(b"banners")))
            .unwrap();
    }
    let payload = format!("{{\"upstream\":\"ok\",\"uri\":{uri:?}}}");
    Response::builder()
        .header("Content-Type", "application/json")
        .header("X-Upstream", "test")
        .body(Full::new(Bytes::from(payload)))
        .unwrap()
}

/// An upstream that accepts connections and never answers.
pub struct Silent {
    pub addr: SocketAddr,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
                if held.len() > 256 {
                    held.remove(0);
                }
            }
        });
        Silent { addr }
    }
}

pub fn header_map(seen: &Seen) -> HashMap<String, String> {
    seen.headers.iter().cloned().collect()
}
