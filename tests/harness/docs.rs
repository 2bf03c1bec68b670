//! A document server for JWKS tests: its body can be switched, its hits counted, and it can be
//! stopped so that connections are refused.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A real HTTP server for JWKS documents whose body can be switched, counted and stopped.
pub struct DocServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DocServer {
    pub fn start(body: &str) -> DocServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(body.to_string()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (shared.clone(), hits.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().unwrap().clone();
                        async move {
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("Content-Type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        DocServer {
            addr,
            body: shared,
            hits,
            runtime: Some(runtime),
        }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
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
