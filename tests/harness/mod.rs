//! Test harness: the real `portcullis` binary on ephemeral loopback ports, real upstream
//! servers (hyper) that record what they saw, and a raw HTTP/1.1 client so that tests control
//! every byte on the wire (HTTP client libraries normalise paths themselves).

#![allow(dead_code)]

pub mod crs;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// How a start ended.
enum Ready {
    Yes,
    /// Another process took a port between its choice and the gateway's bind.
    PortTaken,
}

/// Whether process `pid` holds a socket listening on loopback `port` (IPv4 or IPv6).
pub fn owns_listener(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if f.get(3) == Some(&"0A") && local_port == Some(port) {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

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
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

/// A real HTTP/1.1 upstream on loopback that records every request and counts connections.
/// A path ending in `/slow/<ms>` is answered after that many milliseconds.
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

/// A running gateway process. Killed when dropped.
pub struct Gateway {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    /// Processes replaced by `upgrade`, still draining.
    retired: Vec<Child>,
    server_extra: String,
    generation: usize,
}

impl Gateway {
    /// Start the gateway with `body` appended to a generated `[server]`, listener, metrics and
    /// logging section. `{PORT}`-style placeholders are not needed: use `format!` in the test.
    pub fn start(body: &str) -> Gateway {
        Self::start_with(body, "")
    }

    pub fn start_with(body: &str, server_extra: &str) -> Gateway {
        Self::start_with_files(body, server_extra, &[])
    }

    /// Like `start_with`, with extra files (name, content) written next to the config first.
    pub fn start_with_files(body: &str, server_extra: &str, files: &[(&str, &[u8])]) -> Gateway {
        Self::start_logging(body, server_extra, files, "warn")
    }

    /// Like `start_with_files`, with the error log at `rust_log` (e.g. "info").
    pub fn start_logging(
        body: &str,
        server_extra: &str,
        files: &[(&str, &[u8])],
        rust_log: &str,
    ) -> Gateway {
        let mut dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write fixture");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).ok();
            }
        }
        // Ports are picked free and bound a moment later by the gateway: another test may take
        // one in between. Such a start is retried on fresh ports.
        for _attempt in 0..5 {
            let port = free_port();
            // The kernel may hand out the same ephemeral port twice in a row.
            let metrics_port = (0..100)
                .map(|_| free_port())
                .find(|p| *p != port)
                .expect("a second ephemeral port");
            let config = harness_config(server_extra, port, metrics_port, body);
            let path = dir.path().join("portcullis.toml");
            std::fs::write(&path, config).expect("write config");
            let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["run", "-c"])
                .arg(&path)
                .env("RUST_LOG", rust_log)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file"))
                .spawn()
                .expect("start portcullis");
            let mut gateway = Gateway {
                port,
                metrics_port,
                dir,
                child,
                retired: Vec::new(),
                server_extra: server_extra.to_string(),
                generation: 0,
            };
            match gateway.wait_ready() {
                Ready::Yes => return gateway,
                Ready::PortTaken => {
                    dir =
                        std::mem::replace(&mut gateway.dir, tempfile::tempdir().expect("tempdir"));
                }
            }
        }
        panic!("portcullis could not get free ports in 5 attempts");
    }

    /// Pingora's graceful upgrade: start a new process with `-u` on a new config, then SIGQUIT
    /// the running one, which hands over its listening sockets and drains.
    pub fn upgrade(&mut self, body: &str) {
        self.generation += 1;
        let path = self
            .dir
            .path()
            .join(format!("portcullis-{}.toml", self.generation));
        std::fs::write(
            &path,
            harness_config(&self.server_extra, self.port, self.metrics_port, body),
        )
        .expect("write config");
        let stderr = std::fs::File::create(
            self.dir
                .path()
                .join(format!("stderr-{}.log", self.generation)),
        )
        .expect("stderr file");
        let next = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-u", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start portcullis -u");
        // Give it time to wait on the upgrade socket before the old one sends its sockets.
        std::thread::sleep(Duration::from_millis(500));
        signal(self.child.id(), "QUIT");
        let old = std::mem::replace(&mut self.child, next);
        self.retired.push(old);
    }

    /// The current process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (TERM, QUIT, …) to the current process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Wait (bounded) for the current process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Wait until this process listens on both its ports. Listening is checked by ownership
    /// (the listening socket's inode among the process's descriptors), not by a connection,
    /// which another process that took the port would accept as well.
    fn wait_ready(&mut self) -> Ready {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr = self.stderr();
                if stderr.contains("cannot listen") || stderr.contains("in use") {
                    return Ready::PortTaken;
                }
                panic!("portcullis exited early ({status}): {stderr}");
            }
            let pid = self.child.id();
            if owns_listener(pid, self.port) && owns_listener(pid, self.metrics_port) {
                return Ready::Yes;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("portcullis did not start listening: {}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Whether the process is still alive (signal 0 to its pid).
    pub fn is_running_ref(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .unwrap_or_default()
                .contains(") Z ")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send one raw request on a new connection and read the response.
    pub fn raw(&self, request: &str) -> HttpResponse {
        raw_request(self.port, request.as_bytes())
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
    }

    pub fn metrics(&self) -> String {
        raw_request(
            self.metrics_port,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .text()
    }

    /// The value of one metric sample, e.g. `portcullis_requests_total{route="a",…}`; matched
    /// on the name and every `label="value"` pair given.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// Requests are counted in Pingora's logging phase, just after the response is sent:
    /// poll briefly until the metric reaches `expected`, then return what it is.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
        let mut value = 0.0;
        wait_until(Duration::from_secs(5), || {
            value = self.metric(name, labels);
            value >= expected
        });
        value
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in self
            .retired
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The config the harness writes: its own [server], listener, metrics and logging, then `body`.
fn harness_config(server_extra: &str, port: u16, metrics_port: u16, body: &str) -> String {
    let grace = if server_extra.contains("grace_period") {
        ""
    } else {
        "grace_period = \"1s\"\n"
    };
    format!(
        "[server]\nthreads = 2\n{grace}graceful_shutdown_timeout = \"1s\"\n\
         upgrade_sock = \"upgrade.sock\"\npid_file = \"portcullis.pid\"\n{server_extra}\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n\n\
         [logging]\naccess_log = \"access.log\"\nredact_query_params = [\"custom_secret\"]\n\n{body}"
    )
}

/// Send a signal by name to a process, with the `kill` command.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Debug, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Assert an RFC 9457 problem response with this status and the request id echoed.
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        let v = self.json();
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], "about:blank");
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()));
        let id = v["request_id"].as_str().expect("request_id");
        assert!(!id.is_empty());
        assert_eq!(self.header("x-request-id"), Some(id));
        v
    }
}

/// Everything sent back on a fresh connection to `payload`, read until the gateway closes the
/// connection or `within` has passed (each read waits at most 1.5 s). With `close_write` the
/// client half-closes after sending, as a client with nothing more to say.
pub fn raw_exchange(port: u16, payload: &[u8], close_write: bool, within: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("a read timeout");
    let _ = stream.write_all(payload);
    if close_write {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// What arrives on `stream` until the peer closes it (and after how long), or until `limit`
/// has passed with the connection still open (`None`).
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (out, Some(started.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, Some(started.elapsed())),
        }
    }
    (out, None)
}

/// The status of the first response in raw bytes.
pub fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

pub fn raw_request(port: u16, request: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok();
    stream.write_all(request).expect("write");
    read_response(&mut stream).unwrap_or_default()
}

/// A request as a browser-based API client sends it: a host name (CRS scores a numeric
/// Host), browser headers, `extra` headers, and a body (with its length) for a POST.
pub fn browser_request(
    port: u16,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: application/json, text/plain, */*\r\nAccept-Language: en-GB,en;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(port, &bytes)
}

/// Read one response: status line, headers, then a body by Content-Length, chunked, or close.
pub fn read_response(stream: &mut impl Read) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).ok()?;
        response.body = body;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).ok()?;
                line.push(byte[0]);
            }
            let size_text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if response.status >= 200 && response.status != 204 && response.status != 304 {
        let _ = stream.read_to_end(&mut response.body);
    }
    Some(response)
}

/// Run `portcullis` with arguments (and optional stdin); returns (exit code, stdout, stderr).
pub fn cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Absolute path of a file under `tests/data`.
pub fn data(path: &str) -> String {
    format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))
}

pub fn header_map(seen: &Seen) -> HashMap<String, String> {
    seen.headers.iter().cloned().collect()
}

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
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
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

/// A real redis-server on a loopback port, for shared rate limits. Stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    server_args: Vec<String>,
    cli_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(|port| (vec!["--port".into(), port.to_string()], Vec::new()))
    }

    /// Start with the arguments `configure` gives for the port: (redis-server arguments that
    /// say where and how it listens, redis-cli arguments to reach it).
    pub fn start_with(configure: impl FnOnce(u16) -> (Vec<String>, Vec<String>)) -> RedisServer {
        let port = free_port();
        let (server_args, cli_args) = configure(port);
        let mut server = RedisServer {
            port,
            child: None,
            server_args,
            cli_args,
        };
        server.restart();
        server
    }

    /// Start (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.server_args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; .ci/deps does)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                self.port
            ))
            .is_ok()),
            "redis-server did not start"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Run a redis-cli command against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
