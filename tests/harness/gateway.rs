//! The gateway under test: the real `portcullis` binary, started on ephemeral loopback ports
//! with a generated `[server]`, listener, metrics and logging section, and killed when dropped;
//! its metrics, its access log, the CLI, and the config fixture most tests start from.

use super::wire::{raw_request, HttpResponse};
use super::{free_port, wait_until};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        self.upgrade_logging(body, "warn")
    }

    /// Like `upgrade`, the new process's error log at `rust_log` (read it with `stderr_of`).
    pub fn upgrade_logging(&mut self, body: &str, rust_log: &str) {
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
            .env("RUST_LOG", rust_log)
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

    /// The error log of the process started by the `generation`th upgrade (0: the first one).
    pub fn stderr_of(&self, generation: usize) -> String {
        match generation {
            0 => self.stderr(),
            n => std::fs::read_to_string(self.dir.path().join(format!("stderr-{n}.log")))
                .unwrap_or_default(),
        }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The access-log line of the request with this id (waits up to 5 s for it).
    pub fn access_line(&self, request_id: &str) -> serde_json::Value {
        let mut found = None;
        super::wait_until(Duration::from_secs(5), || {
            found = self
                .access_log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["request_id"] == request_id);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no access line for {request_id}: {}", self.access_log()))
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

    /// `/readyz` on the metrics listener.
    pub fn readyz(&self) -> HttpResponse {
        raw_request(
            self.metrics_port,
            b"GET /readyz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        )
    }

    pub fn metrics(&self) -> String {
        raw_request(
            self.metrics_port,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .text()
    }

    /// The sum of the samples of `name` that carry every `label="value"` pair given (e.g.
    /// `portcullis_requests_total{route="a",…}`); `None` when no sample matches — a series never
    /// touched, or a metric that does not exist (say, renamed), is never read as 0.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    /// Requests are counted in Pingora's logging phase, just after the response is sent:
    /// poll briefly until the metric exists and reaches `expected` (> 0), then return what it
    /// is (0 when it never appeared).
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
        assert!(
            expected > 0.0,
            "waiting for {name} to reach {expected} proves nothing"
        );
        let mut value = None;
        wait_until(Duration::from_secs(5), || {
            value = self.metric(name, labels);
            value.is_some_and(|v| v >= expected)
        });
        value.unwrap_or(0.0)
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

/// The sum of the samples of `name` in a Prometheus text exposition that carry every
/// `label="value"` pair given; `None` when no sample matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once("} ") {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        // Label values written by the gateway hold no `",`, so the pairs split cleanly.
        let pairs: Vec<&str> = label_text
            .split("\",")
            .map(|p| p.trim_end_matches('"'))
            .collect();
        let matches = labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}").as_str()));
        if let (true, Ok(value)) = (matches, value.trim().parse::<f64>()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
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

/// The upstream `app` at `addr` and one public route to it, `name` on `path_prefix`: the start of
/// most test configs. Keys on the lines right after it belong to the route; further sections
/// follow.
pub fn public_route(addr: SocketAddr, name: &str, path_prefix: &str) -> String {
    format!(
        "\n[[upstreams]]\nname = \"app\"\ntargets = [\"{addr}\"]\n\n\
         [[routes]]\nname = \"{name}\"\npath_prefix = \"{path_prefix}\"\nupstream = \"app\"\npublic = true"
    )
}
