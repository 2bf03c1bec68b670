//! A real redis-server on a loopback port, for the shared rate-limit tests.

use super::{free_port, wait_until};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
