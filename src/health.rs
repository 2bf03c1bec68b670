//! Health endpoints for load balancers, served by the metrics listener's app
//! (`observe::metrics`), which asks this module through the `Ready` trait.
//!
//! - `/healthz`: the process is alive and answering (200 whenever it can answer at all).
//! - `/readyz`: 200 when this process should get traffic: the configuration is loaded (it is
//!   compiled before anything starts, so the check names it by its SHA-256), every listener
//!   is bound, every upstream has at least one target its health checks count as healthy,
//!   every JWT provider has keys (a `jwks_url` provider has none until its first fetch), and
//!   every introspection provider with `discovery` has its endpoint.
//!   503 otherwise, and from the moment a graceful upgrade or shutdown begins, so that a load
//!   balancer takes the old process out of rotation first.
//!
//! Both answer a small JSON object; `/readyz` lists each check with `ok` and a `detail` that
//! names what is missing.

use crate::checks::auth::introspection::EndpointState;
use crate::checks::auth::key_store::{KeySource, KeyStore};
use crate::observe::metrics::Ready;
use crate::upstream::Upstreams;
use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use serde_json::json;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A proxy listener's address, and whether it was found bound (once bound, it stays bound
/// until the process drains, which `/readyz` reports on its own).
struct Listening {
    key: String,
    address: String,
    bound: AtomicBool,
}

/// What `/readyz` checks, shared with the services it watches.
pub struct Readiness {
    config_sha256: String,
    listeners: Vec<Listening>,
    upstreams: Arc<Upstreams>,
    key_sets: Vec<(String, Arc<KeyStore>)>,
    /// Introspection providers whose endpoint a discovery document names.
    endpoints: Vec<(String, Arc<EndpointState>)>,
    draining: AtomicBool,
}

/// What `/readyz` says of a provider's keys: how many, where from (the JWKS address, and the
/// discovery document that named it), and why the last refresh failed, if it did.
fn key_detail(keys: usize, store: &KeyStore) -> String {
    let Some(remote) = &store.remote else {
        return if keys > 0 {
            format!("{keys} key(s) loaded")
        } else {
            "no keys".into()
        };
    };
    let status = remote.status();
    let mut detail = match (keys, &status.jwks_uri) {
        (0, _) => "no keys yet".to_string(),
        (n, Some(uri)) => format!("{n} key(s) loaded from {uri}"),
        (n, None) => format!("{n} key(s) loaded"),
    };
    if let KeySource::Discovery { url, .. } = &remote.source {
        detail.push_str(&format!(", discovery {url}"));
    }
    match (&status.last_error, keys) {
        (Some(error), _) => detail.push_str(&format!("; the last refresh failed: {error}")),
        (None, 0) => detail.push_str("; not fetched yet"),
        (None, _) => {}
    }
    detail
}

/// What `/readyz` says of a discovered introspection endpoint: which one, from which document,
/// and why the last read of the document failed, if it did.
fn endpoint_detail(state: &EndpointState) -> String {
    let mut detail = match state.endpoint_text() {
        Some(endpoint) => format!("endpoint {endpoint}"),
        None => "no endpoint yet".to_string(),
    };
    if let Some((url, _)) = state.discovery() {
        detail.push_str(&format!(", discovery {url}"));
    }
    match (state.last_error(), state.endpoint_text()) {
        (Some(error), _) => detail.push_str(&format!("; the last refresh failed: {error}")),
        (None, None) => detail.push_str("; not read yet"),
        (None, Some(_)) => {}
    }
    detail
}

/// One line of the `/readyz` answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Readiness {
    /// `listeners`: (config key, address) of each proxy listener; `key_sets`: each JWT
    /// provider's name and keys; `endpoints`: each introspection provider with `discovery`.
    pub fn new(
        config_sha256: String,
        listeners: Vec<(String, String)>,
        upstreams: Arc<Upstreams>,
        key_sets: Vec<(String, Arc<KeyStore>)>,
        endpoints: Vec<(String, Arc<EndpointState>)>,
    ) -> Self {
        Readiness {
            config_sha256,
            listeners: listeners
                .into_iter()
                .map(|(key, address)| Listening {
                    key,
                    address,
                    bound: AtomicBool::new(false),
                })
                .collect(),
            upstreams,
            key_sets,
            endpoints,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut out = vec![Check {
            name: "config".into(),
            ok: true,
            detail: format!("loaded, sha256 {}", self.config_sha256),
        }];
        for l in &self.listeners {
            let (ok, detail) = if l.bound.load(Ordering::Relaxed) {
                (true, format!("{} is listening", l.address))
            } else {
                match is_listening(&l.address) {
                    Ok(true) => {
                        l.bound.store(true, Ordering::Relaxed);
                        (true, format!("{} is listening", l.address))
                    }
                    Ok(false) => (false, format!("{} is not listening yet", l.address)),
                    Err(e) => (
                        false,
                        format!("cannot tell whether {} is bound: {e}", l.address),
                    ),
                }
            };
            out.push(Check {
                name: l.key.clone(),
                ok,
                detail,
            });
        }
        for i in 0..self.upstreams.len() {
            let healthy = self.upstreams.healthy_count(i);
            let total = self.upstreams.target_count(i);
            out.push(Check {
                name: format!("upstream {}", self.upstreams.name(i)),
                ok: healthy > 0,
                detail: format!("{healthy} of {total} target(s) healthy"),
            });
        }
        for (name, store) in &self.key_sets {
            let keys = store.load().len();
            out.push(Check {
                name: format!("jwt provider {name}"),
                ok: keys > 0,
                detail: key_detail(keys, store),
            });
        }
        for (name, state) in &self.endpoints {
            out.push(Check {
                name: format!("introspection provider {name}"),
                ok: state.endpoint_text().is_some(),
                detail: endpoint_detail(state),
            });
        }
        let draining = self.is_draining();
        out.push(Check {
            name: "shutdown".into(),
            ok: !draining,
            detail: if draining {
                "draining: a graceful upgrade or shutdown has begun".into()
            } else {
                "serving".into()
            },
        });
        out
    }
}

impl Ready for Readiness {
    /// The `/readyz` answer: status code and JSON body.
    fn answer(&self) -> (u16, Vec<u8>) {
        let checks = self.checks();
        let ready = checks.iter().all(|c| c.ok);
        let status = if ready {
            "ready"
        } else if self.is_draining() {
            "draining"
        } else {
            "not_ready"
        };
        let body = json!({
            "status": status,
            "checks": checks
                .iter()
                .map(|c| json!({ "name": c.name, "ok": c.ok, "detail": c.detail }))
                .collect::<Vec<_>>(),
        });
        (if ready { 200 } else { 503 }, body.to_string().into_bytes())
    }
}

/// Whether a socket is listening on `address`, from the kernel's socket table (no connection
/// is made: a test connection would show up as a failed handshake on a TLS listener).
fn is_listening(address: &str) -> std::io::Result<bool> {
    let Some(addr) = address.to_socket_addrs()?.next() else {
        return Ok(false);
    };
    let table = match addr {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table)?;
    Ok(listed_as_listening(&text, addr))
}

/// Whether the table text (`/proc/net/tcp` or `tcp6` format) has `addr` in the LISTEN state.
fn listed_as_listening(table: &str, addr: SocketAddr) -> bool {
    let want = kernel_hex(addr.ip());
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(local), Some(_), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let Some((ip, port)) = local.split_once(':') else {
            return false;
        };
        state == "0A"
            && u16::from_str_radix(port, 16) == Ok(addr.port())
            && ip.eq_ignore_ascii_case(&want)
    })
}

/// An address as the kernel prints it in `/proc/net/tcp*`: each 32-bit word of the address,
/// in network order, printed as a host-order number.
fn kernel_hex(ip: IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes
        .chunks(4)
        .map(|w| {
            let word = [w[0], w[1], w[2], w[3]];
            format!("{:08X}", u32::from_ne_bytes(word))
        })
        .collect()
}

/// Turns readiness off as soon as Pingora starts a graceful upgrade or shutdown: on `SIGQUIT`
/// Pingora first hands the listening sockets over and keeps serving for a few seconds before it
/// broadcasts the shutdown, so the execution phase is watched, not only the shutdown signal.
pub struct DrainWatch {
    readiness: Arc<Readiness>,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl DrainWatch {
    pub fn new(readiness: Arc<Readiness>, phases: broadcast::Receiver<ExecutionPhase>) -> Self {
        DrainWatch {
            readiness,
            phases: Mutex::new(Some(phases)),
        }
    }
}

/// Whether a phase means this process is on its way out.
fn leaving(phase: &ExecutionPhase) -> bool {
    !matches!(
        phase,
        ExecutionPhase::Setup
            | ExecutionPhase::Bootstrap
            | ExecutionPhase::BootstrapComplete
            | ExecutionPhase::Running
    )
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().ok().and_then(|mut p| p.take());
        let phase_says_leaving = async move {
            let Some(mut phases) = phases else {
                return std::future::pending().await;
            };
            loop {
                match phases.recv().await {
                    Ok(phase) if leaving(&phase) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        let shutdown_says_leaving = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        tokio::select! {
            _ = phase_says_leaving => {}
            _ = shutdown_says_leaving => {}
        }
        log::info!("draining: /readyz answers 503 from now on");
        self.readiness.start_draining();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:2383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";

    #[test]
    fn the_socket_table_is_read_as_the_kernel_writes_it() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listed_as_listening(TCP, at("127.0.0.1:8080")));
        assert!(listed_as_listening(TCP, at("0.0.0.0:9091")));
        // Same port, other address; established, not listening; nothing there.
        assert!(!listed_as_listening(TCP, at("10.0.0.1:8080")));
        assert!(!listed_as_listening(TCP, at("127.0.0.1:8081")));
        assert!(!listed_as_listening(TCP, at("127.0.0.1:1")));
        assert!(!listed_as_listening(
            "garbage\nmore garbage here\n",
            at("127.0.0.1:8080")
        ));
        assert_eq!(
            kernel_hex("::1".parse().unwrap()),
            format!("{}{:08X}", "0".repeat(24), u32::from_ne_bytes([0, 0, 0, 1]))
        );
    }

    #[test]
    fn a_real_listener_is_found_and_a_closed_one_is_not() {
        for host in ["127.0.0.1", "[::1]"] {
            let Ok(l) = std::net::TcpListener::bind(format!("{host}:0")) else {
                continue; // no IPv6 on this host
            };
            let address = l.local_addr().unwrap().to_string();
            assert!(is_listening(&address).unwrap(), "{address}");
            drop(l);
            assert!(!is_listening(&address).unwrap(), "{address}");
        }
    }
}
