//! The built-in demo upstream: answers every request with what it received, as JSON, so that
//! the default configuration runs without any other program. Demo only: it reflects headers.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Bodies past this are not echoed in full (their length and hash still are).
const MAX_ECHO_BODY: usize = 64 * 1024;
/// Bodies are read up to this size at most.
const MAX_READ_BODY: usize = 16 * 1024 * 1024;

pub struct EchoApp;

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut hasher = Sha256::new();
        let mut body = Vec::new();
        let mut total = 0usize;
        let mut complete = true;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    total += chunk.len();
                    hasher.update(&chunk);
                    if body.len() < MAX_ECHO_BODY {
                        let room = MAX_ECHO_BODY - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    if total > MAX_READ_BODY {
                        complete = false;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            session.set_keepalive(None);
        }
        let req = session.req_header();
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let status = if req.uri.path() == "/healthz" {
            "ok"
        } else {
            "echo"
        };
        let value = json!({
            "service": "portcullis demo echo",
            "status": status,
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_bytes": total,
            "body_sha256": hex::encode(hasher.finalize()),
        });
        let bytes = serde_json::to_vec_pretty(&value).unwrap_or_default();
        Response::builder()
            .status(200)
            .header("Content-Type", "application/json")
            .header("Content-Length", bytes.len())
            .body(bytes)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
