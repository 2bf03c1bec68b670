//! A token introspection endpoint (RFC 7662) for tests: it checks the gateway's client
//! credentials (HTTP Basic), answers from a table of tokens, counts and records every call, and
//! can be made slow, failing (any status), nonsensical, or stopped.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// From the token table: known tokens get their answer, others `{"active": false}`.
    Normal,
    /// This status, with an empty JSON object.
    Status(u16),
    /// 200 with a body that is not an introspection response.
    Garbage,
}

/// One call as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub method: String,
    /// The form fields of the body, decoded.
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Value>,
    calls: Vec<Call>,
    delay: Duration,
    mode: Option<Mode>,
}

pub struct IntrospectionServer {
    pub addr: SocketAddr,
    /// What the gateway must send: `Basic base64(client_id:secret)`.
    pub expected_authorization: String,
    state: Arc<Mutex<State>>,
    started: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn decode_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl IntrospectionServer {
    /// An endpoint that accepts client `client_id` with `secret`.
    pub fn start(client_id: &str, secret: &str) -> IntrospectionServer {
        use base64::Engine;
        let expected_authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
        );
        let state = Arc::new(Mutex::new(State::default()));
        let started = Arc::new(AtomicUsize::new(0));
        let (st, count, auth) = (
            state.clone(),
            started.clone(),
            expected_authorization.clone(),
        );
        let (addr, runtime) = super::docs::serve_json(2, move |req: Request<Incoming>| {
            let (st, count, auth) = (st.clone(), count.clone(), auth.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let authorization = header("authorization");
                let content_type = header("content-type");
                let method = req.method().to_string();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let form = decode_form(&body);
                let (delay, mode, answer) = {
                    let mut s = st.lock().unwrap();
                    let token = form.get("token").cloned().unwrap_or_default();
                    let answer = s
                        .tokens
                        .get(&token)
                        .cloned()
                        .unwrap_or_else(|| json!({"active": false}));
                    s.calls.push(Call {
                        authorization: authorization.clone(),
                        content_type,
                        method,
                        form,
                    });
                    (s.delay, s.mode.clone().unwrap_or(Mode::Normal), answer)
                };
                tokio::time::sleep(delay).await;
                if authorization.as_deref() != Some(auth.as_str()) {
                    return (401, json!({"error": "invalid_client"}).to_string());
                }
                match mode {
                    Mode::Normal => (200, answer.to_string()),
                    Mode::Status(code) => (code, "{}".to_string()),
                    Mode::Garbage => (200, "<html>login</html>".to_string()),
                }
            }
        });
        IntrospectionServer {
            addr,
            expected_authorization,
            state,
            started,
            runtime: Some(runtime),
        }
    }

    /// The endpoint's address.
    pub fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// Answer `answer` for `token` from now on.
    pub fn set_token(&self, token: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.to_string(), answer);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Calls received so far (counted as they arrive, before any delay).
    pub fn calls(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Every call, as received.
    pub fn seen(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Stop serving: the port is closed and connections are refused.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.stop();
    }
}
