//! End-to-end load benchmark: one run, one table.
//!
//! A fast upstream (nginx answering `200 ok`), then the same load, from `wrk`, against
//! (a) the upstream directly, (b) portcullis on a public pass-through route, (c) portcullis with
//! the full chain (ES256 JWT, group ACL, a rate limit that never trips, JSON Schema on a 1 KiB
//! body, threat protection in block mode, JSON access log to a file) and (d) nginx as a
//! keep-alive reverse proxy. Every scenario sends the same request: a POST with a 1 KiB JSON
//! body and a bearer token. Then the latency the full chain adds at half of its peak load, and
//! the peak RSS with 1,000 open client connections. A fifth scenario, (e), is a bare Pingora
//! proxy with default settings and no checks (this binary re-runs itself as one), the floor
//! under any Pingora-based gateway on this machine; (k) is HAProxy (one thread,
//! `http-reuse always`), the fastest proxy a user could pick instead. (a), (b), (d), (e) and
//! (k) run a browser-like GET as well, in a second table, with portcullis's own CPU per
//! request above bare Pingora, (b) − (e), under each table.
//!
//! Run: `bash benches/load.sh` (installs wrk, nginx and HAProxy if missing), or
//! `cargo bench --bench load -- [--duration S] [--connections N] [--threads N] [--no-pin]`.
//! See BENCHMARKS.md.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Fallible<T> = Result<T, String>;

#[path = "shared/grpc.rs"]
mod grpc;

struct Options {
    duration: u64,
    warmup: u64,
    connections: u32,
    threads: u32,
    pin: bool,
    /// The CRS part: portcullis with `[waf]` beside nginx + ModSecurity, same rules.
    crs: bool,
}

impl Options {
    fn parse() -> Fallible<Options> {
        let mut o = Options {
            duration: 10,
            warmup: 2,
            connections: 64,
            threads: 1,
            pin: true,
            crs: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| -> Fallible<u64> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{name} needs a positive number"))
            };
            match a.as_str() {
                "--duration" => o.duration = value("--duration")?.max(1),
                "--warmup" => o.warmup = value("--warmup")?,
                "--connections" => o.connections = value("--connections")?.clamp(1, 10_000) as u32,
                "--threads" => o.threads = value("--threads")?.clamp(1, 64) as u32,
                "--no-pin" => o.pin = false,
                "--no-crs" => o.crs = false,
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument {other}; use --duration S, --warmup S, --connections N, --threads N, --no-pin, --no-crs"
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// A child process stopped when dropped, so that a failed run leaves nothing behind.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    /// SIGTERM first, so that nginx's master stops its workers (killed outright, it leaves
    /// them running), then SIGKILL whatever is still there after 3 s.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) only sends a signal to our own child process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Start `program`; its standard error goes to `stderr` (Pingora logs every connection
    /// that wrk cuts at the end of a run).
    fn start(
        name: &'static str,
        cpu: Option<&str>,
        program: &str,
        args: &[&str],
        stderr: &Path,
    ) -> Fallible<Proc> {
        let log = std::fs::File::create(stderr)
            .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
        // A shell raises the descriptor limit first: 1,000 client connections need it.
        let mut line = String::from("ulimit -n 65536 2>/dev/null; exec ");
        if let Some(cpu) = cpu {
            let _ = write!(line, "taskset -c {cpu} ");
        }
        line.push_str(program);
        for a in args {
            let _ = write!(line, " '{a}'");
        }
        let child = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> Fallible<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// One HTTP/1.1 request on a new connection; returns the status line and body.
fn http_get(port: u16, path: &str) -> Fallible<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn wait_ready(proc: &mut Proc, port: u16, path: &str) -> Fallible<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{} exited at start-up: {status}", proc.name));
        }
        if let Ok(r) = http_get(port, path) {
            if r.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{} not ready on port {port} after 20 s", proc.name));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid and its child processes (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            if rest.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
                out.push(child);
            }
        }
    }
    out
}

/// User plus system CPU seconds of the process and its children.
fn cpu_seconds(pid: u32) -> f64 {
    family(pid)
        .iter()
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
                .sum();
            ticks / 100.0
        })
        .sum()
}

/// Peak resident set (VmHWM) of the process and its children, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmHWM:")
}

/// Resident set now (VmRSS) of the process and its children, in MiB.
fn rss_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmRSS:")
}

fn memory_mib(pid: u32, field: &str) -> f64 {
    family(pid)
        .iter()
        .map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        })
        .sum()
}

/// Memory of a proxy holding idle keep-alive client connections.
struct Idle {
    name: String,
    before_mib: f64,
    with_idle_mib: f64,
    connections: usize,
}

/// Open `n` client connections to the proxy on `port`, send one GET on each and read its
/// answer, then leave them open and idle: the proxy's resident memory before and while it
/// holds them.
fn idle_connections(name: &str, proxy: &Proc, port: u16, path: &str, n: usize) -> Fallible<Idle> {
    let before_mib = rss_mib(proxy.pid());
    let mut held = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("{name}: idle connection {i}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").map_err(|e| e.to_string())?;
        let got = s
            .read(&mut buf)
            .map_err(|e| format!("{name}: idle connection {i}: {e}"))?;
        if !buf[..got].starts_with(b"HTTP/1.1 200") {
            return Err(format!("{name}: idle connection {i} was not answered 200"));
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let with_idle_mib = rss_mib(proxy.pid());
    drop(held);
    Ok(Idle {
        name: name.to_string(),
        before_mib,
        with_idle_mib,
        connections: n,
    })
}

/// The three measurements every proxy gets: the main table's POST, the GET table, and the
/// memory with idle clients (not for the upstream itself, which has no `Proc`).
#[derive(Default)]
struct Tables {
    posts: Vec<Row>,
    gets: Vec<Row>,
    idle: Vec<Idle>,
}

/// Idle keep-alive client connections each proxy is measured with.
const IDLE: usize = 1000;

impl Tables {
    fn measure(
        &mut self,
        bench: &Bench,
        name: &str,
        port: u16,
        path: &str,
        proxy: Option<&Proc>,
    ) -> Fallible<()> {
        let c = bench.options.connections;
        self.posts.push(bench.scenario(name, port, path, proxy)?);
        self.gets
            .push(bench.scenario_method(name, "GET", c, port, path, proxy)?);
        if let Some(proxy) = proxy {
            self.idle
                .push(idle_connections(name, proxy, port, path, IDLE)?);
        }
        Ok(())
    }
}

fn print_idle(rows: &[Idle]) {
    println!(
        "| proxy | RSS before MiB | RSS with idle connections MiB | per idle connection KiB |"
    );
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            r.name,
            r.before_mib,
            r.with_idle_mib,
            (r.with_idle_mib - r.before_mib) * 1024.0 / r.connections.max(1) as f64
        );
    }
}

/// nginx stub_status of the upstream: (connections accepted, requests served).
fn upstream_counters(port: u16) -> Fallible<(u64, u64)> {
    let r = http_get(port, "/__status")?;
    let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
    let numbers: Vec<u64> = body
        .lines()
        .nth(2)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match numbers.as_slice() {
        [accepts, _handled, requests] => Ok((*accepts, *requests)),
        _ => Err(format!("unexpected stub_status answer: {body:?}")),
    }
}

#[derive(Default, Clone)]
struct WrkResult {
    requests: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    bad_status: u64,
    socket_errors: u64,
}

impl WrkResult {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

const WRK_SCRIPT: &str = r#"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
if os.getenv("BENCH_METHOD") == "GET" then
  -- A browser-like GET: 8 ordinary headers, 2 query arguments, 3 cookies.
  wrk.method = "GET"
  wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
  wrk.headers["Accept"] = "application/json"
  wrk.headers["Accept-Language"] = "en-GB,en;q=0.8"
  wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
  wrk.headers["X-Request-Id"] = "6f1c1a52-7d4b-4e0a-9a7c-3c1e0b7f9d21"
  wrk.headers["Cookie"] = "session=8b2f0c7e4a; theme=dark; lang=en-GB"
else
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  wrk.body = f:read("*a")
  f:close()
end
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

struct Bench {
    dir: PathBuf,
    options: Options,
    token: String,
    upstream_port: u16,
    machine: String,
}

impl Bench {
    fn wrk(
        &self,
        port: u16,
        path: &str,
        connections: u32,
        seconds: u64,
        delay_ms: u64,
    ) -> Fallible<WrkResult> {
        self.wrk_method("POST", port, path, connections, seconds, delay_ms)
    }

    /// `wrk` with the benchmark's script: `POST` (the 1 KiB JSON order) or `GET` (a
    /// browser-like GET).
    fn wrk_method(
        &self,
        method: &str,
        port: u16,
        path: &str,
        connections: u32,
        seconds: u64,
        delay_ms: u64,
    ) -> Fallible<WrkResult> {
        let mut cmd = Command::new("sh");
        let cpu = if self.options.pin {
            "taskset -c 0 "
        } else {
            ""
        };
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n 65536 2>/dev/null; exec {cpu}wrk -t1 -c{connections} -d{seconds}s --timeout 5s -s '{}' 'http://127.0.0.1:{port}{path}'",
                self.dir.join("bench.lua").display()
            ))
            .env("BENCH_TOKEN", &self.token)
            .env("BENCH_METHOD", method)
            .env("BENCH_BODY", self.dir.join("body.json"))
            .env("BENCH_DELAY_MS", delay_ms.to_string());
        let out = cmd.output().map_err(|e| format!("cannot run wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| {
                format!(
                    "wrk printed no result: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let v: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() != 7 {
            return Err(format!("cannot read wrk's result line {line:?}"));
        }
        Ok(WrkResult {
            requests: v[0] as u64,
            seconds: v[1] / 1e6,
            p50_us: v[2],
            p99_us: v[3],
            p999_us: v[4],
            bad_status: v[5] as u64,
            socket_errors: v[6] as u64,
        })
    }

    fn nginx(&self, name: &'static str, conf: &str, cpu: Option<&str>) -> Fallible<Proc> {
        let prefix = self.dir.join(name);
        std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, conf).map_err(|e| e.to_string())?;
        let (p, f) = (prefix.display().to_string(), file.display().to_string());
        Proc::start(
            name,
            cpu,
            "nginx",
            &["-p", &p, "-c", &f, "-g", "daemon off;"],
            &prefix.join("stderr.log"),
        )
    }

    fn portcullis(&self, port: u16) -> Fallible<Proc> {
        self.portcullis_with(port, "")
    }

    /// portcullis with `extra` appended to its configuration.
    fn portcullis_with(&self, port: u16, extra: &str) -> Fallible<Proc> {
        let conf = self.dir.join("portcullis.toml");
        std::fs::write(&conf, portcullis_conf(self, port) + extra).map_err(|e| e.to_string())?;
        let exe = env!("CARGO_BIN_EXE_portcullis");
        let cpu = self.options.pin.then_some("1");
        let stderr = self.dir.join("portcullis.stderr");
        let mut p = Proc::start(
            "portcullis",
            cpu,
            exe,
            &["run", "-c", &conf.display().to_string()],
            &stderr,
        )?;
        if let Err(e) = wait_ready(&mut p, port, "/pass/ready") {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            return Err(format!("{e}; its standard error:\n{log}"));
        }
        Ok(p)
    }

    /// HAProxy (one thread, `http-reuse always`) as a keep-alive reverse proxy to the upstream.
    /// It logs nothing: HAProxy logs only to syslog, which this machine's benchmark lacks.
    fn haproxy(&self, port: u16) -> Fallible<Proc> {
        let conf = self.dir.join("haproxy.cfg");
        let text = format!(
            "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\nfrontend proxy\n  bind 127.0.0.1:{port}\n  default_backend app\n\nbackend app\n  server up 127.0.0.1:{upstream}\n",
            upstream = self.upstream_port
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        Proc::start(
            "HAProxy",
            self.options.pin.then_some("1"),
            "haproxy",
            &["-db", "-f", &conf.display().to_string()],
            &self.dir.join("haproxy.stderr"),
        )
    }

    /// This benchmark again, as a bare Pingora proxy (see `bare`).
    fn bare_pingora(&self, port: u16) -> Fallible<Proc> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let (exe, port, upstream, threads) = (
            exe.display().to_string(),
            port.to_string(),
            self.upstream_port.to_string(),
            self.options.threads.to_string(),
        );
        Proc::start(
            "bare Pingora proxy",
            self.options.pin.then_some("1"),
            &exe,
            &["--serve-bare-pingora", &port, &upstream, &threads],
            &self.dir.join("bare-pingora.stderr"),
        )
    }

    /// Warm up, then measure one scenario: load, proxy CPU, peak RSS, upstream connections.
    fn scenario(&self, name: &str, port: u16, path: &str, proxy: Option<&Proc>) -> Fallible<Row> {
        let c = self.options.connections;
        self.scenario_method(name, "POST", c, port, path, proxy)
    }

    fn scenario_method(
        &self,
        name: &str,
        method: &str,
        c: u32,
        port: u16,
        path: &str,
        proxy: Option<&Proc>,
    ) -> Fallible<Row> {
        if self.options.warmup > 0 {
            self.wrk_method(method, port, path, c, self.options.warmup, 0)?;
        }
        let (accepts0, requests0) = upstream_counters(self.upstream_port)?;
        let cpu0 = proxy.map(|p| cpu_seconds(p.pid())).unwrap_or(0.0);
        // LOAD_PERF="(g)": record a profile of the proxy during the scenarios so named.
        let perf = match (std::env::var("LOAD_PERF"), proxy) {
            (Ok(prefix), Some(p)) if name.starts_with(&prefix) => Command::new("perf")
                .args(["record", "-F", "2999", "-g", "-o"])
                .arg(format!(
                    "/tmp/perf-{}.data",
                    prefix.trim_matches(['(', ')'])
                ))
                .args(["-p", &p.pid().to_string(), "--", "sleep"])
                .arg(self.options.duration.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok(),
            _ => None,
        };
        let r = self.wrk_method(method, port, path, c, self.options.duration, 0)?;
        if let Some(mut perf) = perf {
            let _ = perf.wait();
        }
        let cpu1 = proxy.map(|p| cpu_seconds(p.pid())).unwrap_or(0.0);
        let (accepts1, requests1) = upstream_counters(self.upstream_port)?;
        check_clean(name, &r)?;
        // The status request itself is one connection and one request.
        let opened = accepts1.saturating_sub(accepts0 + 1);
        let upstream_requests = requests1.saturating_sub(requests0 + 1);
        Ok(Row {
            name: name.to_string(),
            result: r.clone(),
            cpu_per_10k: proxy.map(|_| (cpu1 - cpu0) / r.requests.max(1) as f64 * 10_000.0),
            rss_mib: proxy.map(|p| peak_rss_mib(p.pid())),
            upstream_opened: opened,
            upstream_requests,
        })
    }
}

fn check_clean(name: &str, r: &WrkResult) -> Fallible<()> {
    if r.bad_status > 0 || r.socket_errors > 0 || r.requests == 0 {
        return Err(format!(
            "{name}: {} requests, {} non-2xx answers, {} socket errors: the benchmark is not valid",
            r.requests, r.bad_status, r.socket_errors
        ));
    }
    Ok(())
}

struct Row {
    name: String,
    result: WrkResult,
    cpu_per_10k: Option<f64>,
    rss_mib: Option<f64>,
    upstream_opened: u64,
    upstream_requests: u64,
}

/// An nginx configuration with one worker: the shared settings around `servers`.
fn nginx_conf(access_log: &str, servers: &str) -> String {
    format!(
        r#"worker_processes 1;
user root;
error_log logs/error.log warn;
pid logs/nginx.pid;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log {access_log};
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{servers}
}}
"#
    )
}

fn upstream_conf(port: u16) -> String {
    nginx_conf(
        "off",
        &format!(
            r#"    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /__status {{ stub_status; }}
        location / {{ return 200 "ok\n"; }}
    }}"#
        ),
    )
}

fn nginx_proxy_conf(port: u16, upstream: u16) -> String {
    nginx_conf("logs/access.log", &proxy_servers(port, upstream, ""))
}

/// nginx as a keep-alive reverse proxy to `upstream`, with `directives` added to its server.
fn proxy_servers(port: u16, upstream: u16, directives: &str) -> String {
    format!(
        r#"    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;{directives}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"#
    )
}

fn portcullis_conf(b: &Bench, port: u16) -> String {
    let d = b.dir.display();
    format!(
        r#"[server]
threads = {threads}
pid_file = "{d}/portcullis.pid"
upgrade_sock = "{d}/upgrade.sock"

[[listeners]]
address = "127.0.0.1:{port}"

[logging]
access_log = "{d}/access.log"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:{upstream}"]

[[jwt_providers]]
name = "bench"
issuer = "https://id.bench.invalid"
audiences = ["bench-api"]
algorithms = ["ES256"]
jwks_file = "{jwks}"

[[consumers]]
id = "bench-user"
groups = ["bench"]

[[routes]]
name = "pass"
path_prefix = "/pass"
upstream = "app"
public = true
threat_protection = "off"

[[routes]]
name = "full"
path_prefix = "/full"
methods = ["POST"]
upstream = "app"
auth = ["jwt:bench"]
allow = {{ groups = ["bench"] }}
rate_limit = {{ requests = 1000000000, per = "1s", key = "consumer" }}
validate = {{ content_types = ["application/json"], json_schema = "{schema}", max_body_bytes = "16KiB" }}
threat_protection = "block"
"#,
        threads = b.options.threads,
        upstream = b.upstream_port,
        jwks = data("jwt/jwks.json").display(),
        schema = data("schemas/order.json").display(),
    )
}

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A 1 KiB order that the schema accepts and the threat scan finds clean.
fn body() -> String {
    let mut items = String::new();
    let mut i = 0;
    loop {
        let item = format!(r#"{{"sku":"SKU-{i:05}-BLUE-M","qty":{}}}"#, i % 7 + 1);
        let next = items.len() + item.len() + 1;
        if next > 900 {
            break;
        }
        if !items.is_empty() {
            items.push(',');
        }
        items.push_str(&item);
        i += 1;
    }
    let mut b = format!(r#"{{"id":4711,"email":"buyer@example.com","items":[{items}],"note":""#);
    while b.len() < 1022 {
        b.push('x');
    }
    b.push_str("\"}");
    b
}

fn token() -> Fallible<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let pem = std::fs::read(data("jwt/ec256.pem")).map_err(|e| e.to_string())?;
    let key = EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec256".into());
    let claims = serde_json::json!({
        "iss": "https://id.bench.invalid", "aud": "bench-api", "sub": "bench-user",
        "iat": now, "exp": now + 3600, "scope": "orders:write",
    });
    encode(&header, &claims, &key).map_err(|e| e.to_string())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn fmt_ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn print_table(b: &Bench, rows: &[Row], request: &str, connections: u32) {
    let o = &b.options;
    println!();
    println!("machine: {}", b.machine);
    println!(
        "load: wrk -t1 -c{connections} -d{}s after {}s warm-up; {request}; {}",
        o.duration,
        o.warmup,
        if o.pin {
            "wrk and the upstream on CPU 0, the proxy under test on CPU 1"
        } else {
            "no CPU pinning"
        }
    );
    println!("portcullis: {} worker thread(s)", o.threads);
    println!();
    println!(
        "| scenario | req/s | p50 ms | p99 ms | p99.9 ms | proxy CPU s / 10k req | peak RSS MiB | upstream conns opened | reused |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let w = &r.result;
        let reused = if r.upstream_requests > 0 {
            format!(
                "{:.3} %",
                100.0 * (1.0 - r.upstream_opened as f64 / r.upstream_requests as f64)
            )
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            w.rps(),
            fmt_ms(w.p50_us),
            fmt_ms(w.p99_us),
            fmt_ms(w.p999_us),
            r.cpu_per_10k
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.rss_mib
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.upstream_opened,
            reused
        );
    }
}

/// One line per `(label, a, b, as a multiple)`: the throughput of row `a` over row `b`, as a
/// percentage or as a multiple (`7.4x`).
fn print_ratios(rows: &[Row], ratios: &[(&str, &str, &str, bool)]) {
    for (label, a, b, multiple) in ratios {
        match ratio(rows, a, b) {
            Some(v) if *multiple => println!("{label}: {v:.1}x"),
            Some(v) => println!("{label}: {:.1} %", v * 100.0),
            None => println!("{label}: -"),
        }
    }
}

/// What portcullis itself adds to a request: its CPU per request above bare Pingora's.
fn print_own_cost(rows: &[Row]) {
    let cpu = |n: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(n))
            .and_then(|r| r.cpu_per_10k)
    };
    if let (Some(b), Some(e)) = (cpu("(b)"), cpu("(e)")) {
        // Seconds per 10,000 requests to microseconds per request: times 100.
        println!(
            "(b)-(e) portcullis's own CPU per pass-through request above bare Pingora: {:.1} us [target <= 5 us]",
            (b - e) * 100.0
        );
    }
}

fn ratio(rows: &[Row], a: &str, b: &str) -> Option<f64> {
    let find = |n: &str| rows.iter().find(|r| r.name.starts_with(n));
    Some(find(a)?.result.rps() / find(b)?.result.rps())
}

/// Raise this process's descriptor limit to its hard limit: the idle-connection measurement
/// holds 1,000 sockets.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run() -> Fallible<()> {
    let options = Options::parse()?;
    raise_fd_limit();
    for tool in ["wrk", "nginx", "haproxy", "taskset", "h2load"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "{tool} is not installed: run `bash benches/load.sh`, which installs wrk, nginx, HAProxy and h2load (apt-get install -y wrk nginx haproxy nghttp2-client)"
            ));
        }
    }
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let bench = Bench {
        dir: dir.path().to_path_buf(),
        options,
        token: token()?,
        upstream_port: free_port()?,
        machine: machine(),
    };
    std::fs::write(bench.dir.join("bench.lua"), WRK_SCRIPT).map_err(|e| e.to_string())?;
    std::fs::write(bench.dir.join("body.json"), body()).map_err(|e| e.to_string())?;
    let pin = bench.options.pin;

    let mut upstream = bench.nginx(
        "upstream",
        &upstream_conf(bench.upstream_port),
        pin.then_some("0"),
    )?;
    wait_ready(&mut upstream, bench.upstream_port, "/")?;
    // Each proxy under the POST, under a browser-like GET without a body (as in issue 16's
    // comparison), and holding idle keep-alive clients after those loads.
    let mut t = Tables::default();

    eprintln!("(a) upstream directly");
    t.measure(
        &bench,
        "(a) upstream direct",
        bench.upstream_port,
        "/direct",
        None,
    )?;

    eprintln!("(b) portcullis, pass-through");
    let port = free_port()?;
    let gw = bench.portcullis(port)?;
    t.measure(
        &bench,
        "(b) portcullis pass-through",
        port,
        "/pass/orders",
        Some(&gw),
    )?;
    drop(gw);

    eprintln!("(c) portcullis, full chain");
    let port = free_port()?;
    let gw = bench.portcullis(port)?;
    let full = bench.scenario("(c) portcullis full chain", port, "/full/orders", Some(&gw))?;
    let peak = full.result.rps();
    t.posts.push(full);

    // Half of the full chain's peak, the same offered load on both routes: wrk waits a fixed
    // pause between requests on each connection.
    let pause_ms = 2u64;
    let half = (peak / 2.0).max(100.0);
    let conns = ((half * pause_ms as f64 / 1000.0).round() as u32).clamp(1, 1000);
    eprintln!("latency at half load: {conns} connections, {pause_ms} ms pause");
    let secs = bench.options.duration;
    let pass_half = bench.wrk(port, "/pass/orders", conns, secs, pause_ms)?;
    check_clean("pass-through at half load", &pass_half)?;
    let full_half = bench.wrk(port, "/full/orders", conns, secs, pause_ms)?;
    check_clean("full chain at half load", &full_half)?;

    eprintln!("(c) with 1,000 client connections");
    let thousand = bench.wrk(port, "/full/orders", 1000, secs.min(5), 0)?;
    check_clean("full chain, 1,000 connections", &thousand)?;
    let rss_thousand = peak_rss_mib(gw.pid());
    drop(gw);

    eprintln!("(d) nginx reverse proxy");
    let port = free_port()?;
    let mut nginx = bench.nginx(
        "proxy",
        &nginx_proxy_conf(port, bench.upstream_port),
        pin.then_some("1"),
    )?;
    wait_ready(&mut nginx, port, "/ready")?;
    t.measure(
        &bench,
        "(d) nginx reverse proxy",
        port,
        "/orders",
        Some(&nginx),
    )?;
    drop(nginx);

    eprintln!("(k) HAProxy reverse proxy");
    let port = free_port()?;
    let mut haproxy = bench.haproxy(port)?;
    wait_ready(&mut haproxy, port, "/ready")?;
    t.measure(
        &bench,
        "(k) HAProxy reverse proxy",
        port,
        "/orders",
        Some(&haproxy),
    )?;
    drop(haproxy);

    eprintln!("(e) bare Pingora proxy");
    let port = free_port()?;
    let mut bare = bench.bare_pingora(port)?;
    wait_ready(&mut bare, port, "/ready")?;
    t.measure(
        &bench,
        "(e) bare Pingora proxy",
        port,
        "/orders",
        Some(&bare),
    )?;
    eprintln!("(e) with 1,000 client connections");
    let bare_thousand = bench.wrk(port, "/orders", 1000, secs.min(5), 0)?;
    check_clean("bare Pingora, 1,000 connections", &bare_thousand)?;
    let rss_bare_thousand = peak_rss_mib(bare.pid());
    drop(bare);

    let Tables { posts, gets, idle } = t;
    print_table(
        &bench,
        &posts,
        "POST, 1 KiB JSON body, bearer token",
        bench.options.connections,
    );
    println!();
    print_ratios(
        &posts,
        &[
            (
                "(b)/(a) pass-through vs upstream direct",
                "(b)",
                "(a)",
                false,
            ),
            (
                "(c)/(b) full chain vs pass-through [target >= 50 %]",
                "(c)",
                "(b)",
                false,
            ),
            (
                "(b)/(d) pass-through vs nginx [target >= 100 %]",
                "(b)",
                "(d)",
                false,
            ),
            ("(e)/(d) bare Pingora vs nginx", "(e)", "(d)", false),
            ("(b)/(e) pass-through vs bare Pingora", "(b)", "(e)", false),
            ("(b)/(k) pass-through vs HAProxy", "(b)", "(k)", false),
            ("(d)/(k) nginx vs HAProxy", "(d)", "(k)", false),
        ],
    );
    print_own_cost(&posts);
    println!(
        "half load ({:.0} req/s offered as {conns} connections with {pause_ms} ms pauses): pass-through p99 {} ms at {:.0} req/s, full chain p99 {} ms at {:.0} req/s; added p99 {} ms [target <= 1 ms]",
        half,
        fmt_ms(pass_half.p99_us),
        pass_half.rps(),
        fmt_ms(full_half.p99_us),
        full_half.rps(),
        fmt_ms(full_half.p99_us - pass_half.p99_us),
    );
    println!(
        "1,000 client connections, full chain: {:.0} req/s, p99 {} ms; peak RSS {:.1} MiB [target <= 64 MiB]",
        thousand.rps(),
        fmt_ms(thousand.p99_us),
        rss_thousand
    );
    println!(
        "1,000 client connections, bare Pingora (its default 64 KiB read buffers): {:.0} req/s; peak RSS {:.1} MiB",
        bare_thousand.rps(),
        rss_bare_thousand
    );
    println!();
    println!("The same proxies, a browser-like GET (8 headers, the bearer token, no body):");
    print_table(
        &bench,
        &gets,
        "browser-like GET, no body",
        bench.options.connections,
    );
    println!();
    print_ratios(
        &gets,
        &[
            (
                "(b)/(d) pass-through vs nginx, GET [target >= 80 %]",
                "(b)",
                "(d)",
                false,
            ),
            ("(e)/(d) bare Pingora vs nginx, GET", "(e)", "(d)", false),
            (
                "(b)/(e) pass-through vs bare Pingora, GET",
                "(b)",
                "(e)",
                false,
            ),
            ("(b)/(k) pass-through vs HAProxy, GET", "(b)", "(k)", false),
        ],
    );
    print_own_cost(&gets);
    println!();
    println!(
        "Resident memory after the loads above, then while holding {IDLE} idle keep-alive client connections (each answered once) [target: portcullis <= 48 MiB]:"
    );
    print_idle(&idle);
    eprintln!("(l) gRPC unary over h2c: direct, then through portcullis");
    let (direct, through) = grpc::measure(
        &bench.dir,
        pin,
        bench.options.duration,
        bench.options.connections.min(32),
    )?;
    println!();
    println!(
        "gRPC unary over h2c (h2load, {} connections x 10 streams; a public route, no checks that refuse):",
        bench.options.connections.min(32)
    );
    println!("| scenario | calls/s | succeeded | failed |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, r) in [
        ("(l) gRPC server direct", &direct),
        ("(m) portcullis h2c pass-through", &through),
    ] {
        println!("| {name} | {:.0} | {} | {} |", r.rps, r.succeeded, r.failed);
    }
    println!(
        "(m)/(l) portcullis gRPC pass-through vs the server direct: {:.1} %",
        100.0 * through.rps / direct.rps.max(1.0)
    );
    if bench.options.crs {
        // After the main table, so that its figures stand even if this part cannot run.
        let crs_rows = crs_scenarios(&bench)?;
        println!();
        println!(
            "OWASP CRS v4 (../shared/crs) at paranoia level 1, the same rules and settings in both; the GET is browser-like (8 headers, 2 query arguments, 3 cookies), the POST the 1 KiB JSON order:"
        );
        print_table(
            &bench,
            &crs_rows,
            "GET as a browser sends it, or POST with the 1 KiB JSON order",
            bench.options.connections.min(16),
        );
        println!();
        print_ratios(
            &crs_rows,
            &[
                (
                    "(g)/(h) portcullis CRS vs nginx + ModSecurity, GET [target >= 15x]",
                    "(g)",
                    "(h)",
                    true,
                ),
                (
                    "(i)/(j) portcullis CRS vs nginx + ModSecurity, JSON POST [target >= 25x]",
                    "(i)",
                    "(j)",
                    true,
                ),
                (
                    "(g)/(f) portcullis CRS vs its pass-through, GET [target >= 50 %]",
                    "(g)",
                    "(f)",
                    false,
                ),
            ],
        );
    }
    drop(upstream);
    Ok(())
}

/// The CRS checkout the benchmark loads (the project's snapshot beside the work tree).
fn crs_root() -> Fallible<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs");
    if root.join("rules").is_dir() {
        Ok(root)
    } else {
        Err(format!(
            "the CRS part needs a CRS v4 checkout at {} (or pass --no-crs)",
            root.display()
        ))
    }
}

/// nginx's ModSecurity module (Debian: libnginx-mod-http-modsecurity).
fn modsecurity_module() -> Fallible<PathBuf> {
    ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]
        .iter()
        .map(|d| Path::new(d).join("ngx_http_modsecurity_module.so"))
        .find(|p| p.exists())
        .ok_or_else(|| {
            "nginx's ModSecurity module is missing: apt-get install -y libnginx-mod-http-modsecurity (or pass --no-crs)".to_string()
        })
}

/// portcullis with CRS PL1 on `/waf` (its pass-through route `/pass` stays), beside nginx +
/// ModSecurity with the same rules: (f) pass-through GET, (g) CRS GET, (h) ModSecurity GET,
/// (i) CRS JSON POST, (j) ModSecurity JSON POST.
fn crs_scenarios(bench: &Bench) -> Fallible<Vec<Row>> {
    let root = crs_root()?;
    let module = modsecurity_module()?;
    let get = "?status=shipped&page=2";
    // ModSecurity answers tens to hundreds of requests a second: with the main part's 64
    // connections its queue outlasts wrk's 5 s timeout. Every CRS scenario uses the same,
    // smaller count (one worker saturates with far fewer).
    let c = bench.options.connections.min(16);
    let mut rows = Vec::new();
    let port = free_port()?;
    let waf = format!(
        r#"
[waf]
rules = ["{root}/crs-setup.conf.example", "{root}/rules/*.conf"]
paranoia_level = 1

[[routes]]
name = "waf"
path_prefix = "/waf"
methods = ["GET", "POST"]
upstream = "app"
public = true
threat_protection = "block"
"#,
        root = root.display()
    );
    eprintln!("(f)-(j) CRS: portcullis [waf] and nginx + ModSecurity");
    let gw = bench.portcullis_with(port, &waf)?;
    rows.push(bench.scenario_method(
        "(f) portcullis pass-through, GET",
        "GET",
        c,
        port,
        &format!("/pass/orders{get}"),
        Some(&gw),
    )?);
    rows.push(bench.scenario_method(
        "(g) portcullis CRS PL1, GET",
        "GET",
        c,
        port,
        &format!("/waf/orders{get}"),
        Some(&gw),
    )?);
    rows.push(bench.scenario_method(
        "(i) portcullis CRS PL1, JSON POST",
        "POST",
        c,
        port,
        "/waf/orders",
        Some(&gw),
    )?);
    drop(gw);
    let port = free_port()?;
    let conf = modsecurity_conf(bench, &root, &module, port)?;
    let mut modsec = bench.nginx("modsecurity", &conf, bench.options.pin.then_some("1"))?;
    wait_ready(&mut modsec, port, "/ready")?;
    rows.push(bench.scenario_method(
        "(h) nginx + ModSecurity CRS PL1, GET",
        "GET",
        c,
        port,
        &format!("/orders{get}"),
        Some(&modsec),
    )?);
    rows.push(bench.scenario_method(
        "(j) nginx + ModSecurity CRS PL1, JSON POST",
        "POST",
        c,
        port,
        "/orders",
        Some(&modsec),
    )?);
    drop(modsec);
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// nginx (one worker, keep-alive upstream as in (d)) with ModSecurity 3 and CRS, configured
/// by `tests/data/modsecurity.conf`.
fn modsecurity_conf(bench: &Bench, root: &Path, module: &Path, port: u16) -> Fallible<String> {
    let d = bench.dir.join("modsecurity");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let rules = d.join("modsec.conf");
    // The one ModSecurity configuration portcullis is measured against.
    let template = std::fs::read_to_string(data("modsecurity.conf")).map_err(|e| e.to_string())?;
    std::fs::write(
        &rules,
        template
            .replace("@TMP@", &d.display().to_string())
            .replace("@CRS@", &root.display().to_string()),
    )
    .map_err(|e| e.to_string())?;
    let servers = proxy_servers(
        port,
        bench.upstream_port,
        &format!(
            "\n        modsecurity on;\n        modsecurity_rules_file {};",
            rules.display()
        ),
    );
    Ok(format!(
        "load_module {};\n{}",
        module.display(),
        nginx_conf("off", &servers)
    ))
}

/// A minimal Pingora proxy: every request to one upstream, default settings, nothing else.
mod bare {
    use async_trait::async_trait;
    use pingora::prelude::*;
    use pingora_core::server::configuration::ServerConf;

    struct Bare {
        upstream: String,
    }

    #[async_trait]
    impl ProxyHttp for Bare {
        type CTX = ();
        fn new_ctx(&self) {}
        async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
            Ok(Box::new(HttpPeer::new(
                self.upstream.as_str(),
                false,
                String::new(),
            )))
        }
    }

    /// `--serve-bare-pingora PORT UPSTREAM_PORT THREADS`: never returns.
    pub fn serve(port: u16, upstream: u16, threads: usize) -> ! {
        let conf = ServerConf {
            threads,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut proxy = http_proxy_service(
            &server.configuration,
            Bare {
                upstream: format!("127.0.0.1:{upstream}"),
            },
        );
        proxy.add_tcp(&format!("127.0.0.1:{port}"));
        server.add_service(proxy);
        server.run_forever()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-grpc") {
        match args.get(2).and_then(|v| v.parse::<u16>().ok()) {
            Some(port) => grpc::serve(port),
            None => {
                eprintln!("usage: --serve-grpc PORT");
                std::process::exit(2);
            }
        }
    }
    if args.get(1).map(String::as_str) == Some("--serve-bare-pingora") {
        let number = |i: usize| args.get(i).and_then(|v| v.parse::<u16>().ok());
        match (number(2), number(3), number(4)) {
            (Some(port), Some(upstream), Some(threads)) => {
                bare::serve(port, upstream, threads.max(1) as usize)
            }
            _ => {
                eprintln!("usage: --serve-bare-pingora PORT UPSTREAM_PORT THREADS");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run() {
        eprintln!("load benchmark failed: {e}");
        std::process::exit(1);
    }
}
