//! A document server for JWKS and discovery tests: its bodies can be switched (one default, and
//! one per path if set), its hits counted in all and per path, and it can be stopped so that
//! connections are refused.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per path: the status and body served there, and the path's hits.
type Paths = Arc<Mutex<HashMap<String, (u16, String, usize)>>>;

/// Serve HTTP/1.1 on a fresh loopback port with `workers` threads: `answer` turns each request
/// into a status and a JSON body.
pub fn serve_json<F, Fut>(workers: usize, answer: F) -> (SocketAddr, tokio::runtime::Runtime)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, String)> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (status, body) = answer(req).await;
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header("Content-Type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("a response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, runtime)
}

/// A real HTTP server for JWKS documents whose body can be switched, counted and stopped.
pub struct DocServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
    paths: Paths,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DocServer {
    pub fn start(body: &str) -> DocServer {
        let shared = Arc::new(Mutex::new(body.to_string()));
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Paths::default();
        let (b, h, p) = (shared.clone(), hits.clone(), paths.clone());
        let (addr, runtime) = serve_json(1, move |req: Request<Incoming>| {
            h.fetch_add(1, Ordering::SeqCst);
            let answer = match p.lock().unwrap().get_mut(req.uri().path()) {
                Some((status, body, hits)) => {
                    *hits += 1;
                    (*status, body.clone())
                }
                None => (200, b.lock().unwrap().clone()),
            };
            async move { answer }
        });
        DocServer {
            addr,
            body: shared,
            hits,
            paths,
            runtime: Some(runtime),
        }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    /// Serve `status` and `body` at `path` (hits there keep counting).
    pub fn set_path(&self, path: &str, status: u16, body: &str) {
        let mut paths = self.paths.lock().unwrap();
        let entry = paths
            .entry(path.to_string())
            .or_insert((200, String::new(), 0));
        entry.0 = status;
        entry.1 = body.to_string();
    }

    /// Requests for `path` since it was first set.
    pub fn hits_of(&self, path: &str) -> usize {
        self.paths.lock().unwrap().get(path).map_or(0, |e| e.2)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop serving: the port is closed and connections are refused.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
