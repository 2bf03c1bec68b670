//! The gRPC unary row of the load benchmark (included by `load.rs` with `#[path]`; not a
//! benchmark of its own): `h2load` sends the same unary call (a 12-byte
//! framed message, `te: trailers`) over h2c (a) to a gRPC server directly and (b) through
//! portcullis, an h2c listener in front of an h2c upstream on a route that authenticates
//! nothing and rate-limits nothing (the pass-through of gRPC). The server is this binary again
//! (`--serve-grpc PORT`): hyper answering every call with one message and `grpc-status: 0`.

use super::{free_port, wait_ready, Fallible, Proc};
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::path::Path;
use std::process::Command;

/// `Ping { text: "hello" }`, framed: no compression, 7 bytes of protobuf.
const CALL: [u8; 12] = [0, 0, 0, 0, 7, 0x0a, 5, b'h', b'e', b'l', b'l', b'o'];

/// Serve gRPC answers on `port` until killed.
pub fn serve(port: u16) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the gRPC server's port");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                        // Read the call before answering, as a gRPC server does.
                        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                                &CALL,
                            ))),
                            Ok(Frame::trailers({
                                let mut t = http::HeaderMap::new();
                                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                                t
                            })),
                        ];
                        let body = StreamBody::new(tokio_stream::iter(frames));
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    std::process::exit(0)
}

/// What `h2load` measured.
pub struct H2Load {
    pub rps: f64,
    pub succeeded: u64,
    pub failed: u64,
}

/// The row's two runs: (direct, through portcullis).
pub fn measure(
    dir: &Path,
    pin: bool,
    seconds: u64,
    connections: u32,
) -> Fallible<(H2Load, H2Load)> {
    let server_port = free_port()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut server = Proc::start(
        "gRPC server",
        pin.then_some("0"),
        &exe.display().to_string(),
        &["--serve-grpc", &server_port.to_string()],
        &dir.join("grpc-server.stderr"),
    )?;
    wait_tcp(&mut server, server_port)?;
    let direct = h2load(server_port, seconds, connections, pin)?;

    let port = free_port()?;
    let h2c_port = free_port()?;
    let conf = dir.join("portcullis-grpc.toml");
    let text = format!(
        r#"[server]
threads = 1
[[listeners]]
address = "127.0.0.1:{port}"
[[listeners]]
address = "127.0.0.1:{h2c_port}"
h2c = true
[logging]
access_log = "{log}"
[[upstreams]]
name = "grpc"
targets = ["127.0.0.1:{server_port}"]
protocol = "h2c"
[[routes]]
name = "ready"
path_exact = "/ready"
upstream = "grpc"
public = true
[[routes]]
name = "echo"
path_prefix = "/test.Echo"
methods = ["POST"]
upstream = "grpc"
public = true
"#,
        log = dir.join("grpc-access.log").display(),
    );
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let mut gw = Proc::start(
        "portcullis (gRPC)",
        pin.then_some("1"),
        env!("CARGO_BIN_EXE_portcullis"),
        &["run", "-c", &conf.display().to_string()],
        &dir.join("portcullis-grpc.stderr"),
    )?;
    wait_ready(&mut gw, port, "/ready")?;
    let through = h2load(h2c_port, seconds, connections, pin)?;
    drop(gw);
    drop(server);
    Ok((direct, through))
}

/// Wait until `port` accepts connections.
fn wait_tcp(proc: &mut Proc, port: u16) -> Fallible<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{} exited at start-up: {status}", proc.name));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(format!("{} not listening on {port}", proc.name))
}

/// `h2load` for `seconds` with `connections` connections of 10 streams each; pinned, on core
/// 0 with the server (as `wrk` is), the proxy alone on core 1.
fn h2load(port: u16, seconds: u64, connections: u32, pin: bool) -> Fallible<H2Load> {
    let data = std::env::temp_dir().join(format!("portcullis-grpc-call-{port}"));
    std::fs::write(&data, CALL).map_err(|e| e.to_string())?;
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "h2load"]);
        c
    } else {
        Command::new("h2load")
    };
    let out = cmd
        .args(["-D", &seconds.to_string(), "--warm-up-time", "1", "-c"])
        .arg(connections.to_string())
        .args(["-m", "10", "-t", "1", "-d"])
        .arg(&data)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://127.0.0.1:{port}/test.Echo/Say"))
        .output()
        .map_err(|e| format!("cannot run h2load (Debian package nghttp2-client): {e}"))?;
    let _ = std::fs::remove_file(&data);
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.strip_suffix(" req/s"))
        .and_then(|r| r.parse::<f64>().ok())
        .ok_or_else(|| format!("h2load printed no rate: {text}"))?;
    let count = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("requests:"))
            .and_then(|l| {
                l.split(", ")
                    .find(|part| part.ends_with(name))
                    .and_then(|part| part.split_whitespace().rev().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    Ok(H2Load {
        rps,
        succeeded: count("succeeded"),
        failed: count("failed") + count("errored"),
    })
}
