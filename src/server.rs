//! Assemble the Pingora server from the compiled configuration: `[server]` becomes Pingora's
//! `ServerConf` (no YAML file), then the proxy, health-check, metrics and demo services.

use crate::checks::auth::introspection::EndpointState;
use crate::checks::auth::sender::{ReplayCache, ReplayGuard};
use crate::checks::rate_limit::shared::{SharedLimiter, StoreConnector};
use crate::checks::throttle::{FailureThrottle, SuspectReader, ThrottleCarry};
use crate::config::model::Listener;
use crate::config::Config;
use crate::discovery::IntrospectionDiscovery;
use crate::echo::EchoApp;
use crate::gateway::respond::Respond;
use crate::gateway::Gateway;
use crate::health::{DrainWatch, Readiness};
use crate::jwks::JwksRefresher;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{Metrics, MetricsApp};
use crate::stream::app::ClientApp;
use crate::upstream::Upstreams;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpSocket;

/// Read buffer of each TLS client connection (Pingora's default is 64 KiB): OpenSSL reads each
/// record's 5-byte header and then its body, two syscalls a record without a buffer under it.
const TLS_READ_BUFFER: usize = 4 * 1024;

/// DPoP proofs this process remembers (each for its lifetime, `dpop_proof_lifetime` + 10 s).
const REPLAY_CAPACITY: usize = 200_000;

pub struct RunOptions {
    /// Take over the listening sockets of a running instance (`-u`).
    pub upgrade: bool,
    /// Run in the background (`-d`).
    pub daemon: bool,
    /// The configuration file's text, compared with the previous process's (`audit`).
    pub config_text: String,
}

/// How long after a shutdown or upgrade begins idle kept-alive connections are closed: half
/// the grace period. Until then a connection the old process accepted still gets its request
/// answered, and a kept-alive client's next request is answered with `Connection: close`; the
/// other half leaves those requests time to finish (then `graceful_shutdown_timeout` more).
pub fn drain_hold(grace_period: Duration) -> Duration {
    grace_period / 2
}

fn server_conf(config: &Config, options: &RunOptions) -> ServerConf {
    let s = &config.server;
    let mut conf = ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs().max(1)),
        daemon: options.daemon,
        ..ServerConf::default()
    };
    // Pingora retries a failed connection on our say-so (`fail_to_connect`); bound it anyway.
    conf.max_retries = 16;
    conf
}

/// How long an HTTP/2 connection may stay open with no request in progress: Pingora keeps such
/// connections forever by default; HTTP/1 keep-alive connections get 60 s.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pingora gives every client connection a 64 KiB read buffer, zero-filled when allocated:
/// with 1,000 clients that is most of the process's memory. A plain connection needs none:
/// Pingora reads the request head into its own buffer and bodies in large reads, so a buffer
/// under them only copies (and holds 4 KiB per idle keep-alive client). TLS keeps 4 KiB for
/// OpenSSL's small reads; reads larger than it bypass it.
fn listener_endpoint(listener: &Listener) -> Result<ListenerConfig, String> {
    let read = if listener.tls.is_some() {
        TLS_READ_BUFFER
    } else {
        0
    };
    let buffers = L4BufferSettings::default().read(read);
    let endpoint = ListenerConfig::tcp(&listener.address).l4_buffer(buffers);
    Ok(match &listener.tls {
        None => endpoint,
        Some(tls) => endpoint.tls(crate::tls::listener_settings(tls)?),
    })
}

fn server_options() -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    options
}

/// Every address portcullis will listen on, with the key that names it.
fn addresses(config: &Config) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners[{i}].address"), l.address.as_str()))
        .collect();
    if let Some(m) = &config.metrics {
        out.push(("metrics.address".into(), m.address.as_str()));
    }
    if let Some(e) = &config.demo_echo {
        out.push(("demo_echo.address".into(), e.as_str()));
    }
    out
}

/// Fail with a clear message, before Pingora starts, when an address cannot be bound.
///
/// The probe binds without listening (and with `SO_REUSEADDR`, as Pingora binds): a listening
/// probe would accept connections into its backlog for a moment and reset them when dropped,
/// which a load balancer or a client that connects during start-up sees as a failed request.
fn probe_addresses(config: &Config) -> Result<(), String> {
    for (key, address) in addresses(config) {
        if let Err(e) = probe(address) {
            return Err(format!(
                "{}: {key}: cannot listen on {address}: {e}; stop whatever uses it or pick another address (use `run -u` to take over from a running portcullis)",
                config.source.display()
            ));
        }
    }
    Ok(())
}

/// Bind `address` (its first resolution, the one Pingora binds) without listening; the caller
/// drops the socket.
fn probe(address: &str) -> std::io::Result<TcpSocket> {
    let Some(addr) = address.to_socket_addrs()?.next() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        ));
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Build every service and serve until told to stop. Returns only on a start-up error.
pub fn run(config: Config, options: RunOptions) -> Result<(), String> {
    if !options.upgrade {
        probe_addresses(&config)?;
    }
    if options.daemon {
        // Pingora panics when it cannot write the pid file of a daemon: say it first, clearly.
        let pid_file = std::path::Path::new(&config.server.pid_file);
        let dir = pid_file
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "{}: server.pid_file: the directory {} does not exist; create it or choose another pid_file",
                config.source.display(),
                dir.display()
            ));
        }
    }
    let file = config.source.display().to_string();
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("cannot register metrics: {e}"))?);
    metrics
        .config_info
        .with_label_values(&[config.sha256.as_str()])
        .set(1);
    let access_log = Arc::new(
        AccessLog::open(
            &config.logging.access_log,
            metrics.access_log_dropped_total.clone(),
        )
        .map_err(|e| {
            format!(
                "{file}: logging.access_log: cannot open {:?}: {e}",
                config.logging.access_log
            )
        })?,
    );
    crate::observe::handshakes::install(crate::observe::handshakes::HandshakeRecorder {
        failures: metrics.tls_handshake_failures_total.clone(),
        access_log: access_log.clone(),
    });
    // SIGUSR1 reopens the access log (after logrotate moved it). Without a handler the
    // signal's default action would end the process.
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, access_log.reopen_flag())
        .map_err(|e| format!("cannot handle SIGUSR1 (access log reopening): {e}"))?;
    let (upstreams, health_checks) = Upstreams::build(&config.upstreams, &metrics)
        .map_err(|e| format!("{file}: upstreams: {e}"))?;

    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, &options));
    server.bootstrap();

    let config = Arc::new(config);
    let shared_limits = config.rate_limit_store.as_ref().map(|s| {
        Arc::new(SharedLimiter::new(
            s.clone(),
            metrics.rate_limit_store_errors_total.clone(),
        ))
    });
    if let Some(limiter) = &shared_limits {
        server.add_service(background_service(
            "rate limit store",
            StoreConnector {
                limiter: limiter.clone(),
            },
        ));
    }
    let respond = Arc::new(Respond {
        metrics: metrics.clone(),
        access_log,
        hsts: config.hsts.clone(),
        grpc_labels: Default::default(),
    });
    let upstreams = Arc::new(upstreams);
    let readiness = Arc::new(Readiness::new(
        config.sha256.clone(),
        config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("listeners[{i}]"), l.address.clone()))
            .collect(),
        upstreams.clone(),
        config
            .identities
            .jwt_providers
            .iter()
            .map(|p| (p.name.clone(), p.keys.clone()))
            .collect(),
        discovered_endpoints(&config),
    ));
    server.add_service(background_service(
        "drain watch",
        DrainWatch::new(readiness.clone(), server.watch_execution_phase()),
    ));
    let replay = Arc::new(ReplayGuard {
        local: ReplayCache::new(REPLAY_CAPACITY),
        shared: shared_limits.clone(),
    });
    let throttle = config.auth_failure_limit.map(|l| {
        Arc::new(FailureThrottle::new(
            l.failures,
            l.per,
            shared_limits.clone(),
        ))
    });
    match (&throttle, &shared_limits) {
        (Some(throttle), Some(_)) => {
            server.add_service(background_service(
                "throttle suspects",
                SuspectReader {
                    throttle: throttle.clone(),
                },
            ));
        }
        (Some(throttle), None) => {
            // Without a shared store the failures travel through a file beside the pid file.
            let path = std::path::Path::new(&config.server.pid_file).with_extension("throttle");
            if let Ok(text) = std::fs::read_to_string(&path) {
                let taken = throttle.restore(&text);
                if taken > 0 {
                    log::info!(
                        "brute-force throttle: {taken} failure(s) of the previous process taken over from {}",
                        path.display()
                    );
                }
            }
            server.add_service(background_service(
                "throttle carry",
                ThrottleCarry {
                    throttle: throttle.clone(),
                    path,
                    warned: Default::default(),
                },
            ));
        }
        _ => {}
    }
    let gateway = Gateway {
        replay,
        shared_limits,
        config: config.clone(),
        upstreams,
        metrics: metrics.clone(),
        respond: respond.clone(),
        throttle: throttle.clone(),
    };
    // Plain and h2c listeners need two proxy services: Pingora turns h2c on per service.
    for h2c in [false, true] {
        let listeners: Vec<(usize, &Listener)> = config
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.h2c == h2c)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        let mut http = pingora_proxy::http_proxy(&server.configuration, gateway.clone());
        let mut options = server_options();
        options.h2c = h2c;
        http.server_options = Some(options);
        // Kept-alive connections are closed only halfway through the grace period (stream/app.rs).
        let name = if h2c {
            "portcullis gateway (h2c)"
        } else {
            "portcullis gateway"
        };
        let mut proxy = Service::new(
            name.to_string(),
            ClientApp {
                inner: Arc::new(http),
                hold: drain_hold(config.server.grace_period),
                head_deadline: config.limits.header_read_timeout,
                early: respond.clone(),
                h2c,
            },
        );
        for (i, listener) in listeners {
            proxy.add_listener(
                listener_endpoint(listener).map_err(|e| format!("{file}: listeners[{i}].{e}"))?,
            );
        }
        server.add_service(proxy);
    }
    for service in health_checks {
        server.add_service(service);
    }
    let remote_keys: Vec<_> = config
        .identities
        .jwt_providers
        .iter()
        .filter(|p| p.keys.remote.is_some())
        .map(|p| (p.name.clone(), p.keys.clone()))
        .collect();
    if !remote_keys.is_empty() {
        server.add_service(background_service(
            "jwks refresh",
            JwksRefresher {
                stores: remote_keys,
                failures: metrics.jwks_refresh_failures_total.clone(),
            },
        ));
    }
    for provider in &config.identities.introspection {
        provider.install_metrics(metrics.introspection.clone());
    }
    let discovered = discovered_endpoints(&config);
    if !discovered.is_empty() {
        server.add_service(background_service(
            "introspection discovery",
            IntrospectionDiscovery {
                providers: discovered,
                errors: metrics.introspection.errors.clone(),
            },
        ));
    }
    if let Some(m) = &config.metrics {
        let mut service = Service::new(
            "portcullis metrics".to_string(),
            MetricsApp {
                metrics: metrics.clone(),
                readiness,
            },
        );
        service.add_tcp(&m.address);
        server.add_service(service);
    }
    if let Some(address) = &config.demo_echo {
        let mut service = Service::new("portcullis demo echo".to_string(), EchoApp);
        service.add_tcp(address);
        server.add_service(service);
    }
    crate::audit::record(&config, &options.config_text);
    log::info!(
        "portcullis {} serving {} route(s) of config sha256 {} on {}",
        env!("CARGO_PKG_VERSION"),
        config.routes.routes().len(),
        config.sha256,
        config
            .listeners
            .iter()
            .map(|l| l.address.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}

/// The introspection providers whose endpoint a discovery document names.
fn discovered_endpoints(config: &Config) -> Vec<(String, Arc<EndpointState>)> {
    config
        .identities
        .introspection
        .iter()
        .filter(|p| p.endpoint().discovery().is_some())
        .map(|p| (p.name().to_string(), p.endpoint().clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_probe_binds_but_accepts_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let address = format!("127.0.0.1:{port}");
        let held = probe(&address).unwrap();
        // A client connecting while the probe holds the port is refused, not accepted into a
        // backlog that is reset a moment later.
        let err = std::net::TcpStream::connect(&address).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        drop(held);
        // An address in use is found.
        let taken = std::net::TcpListener::bind(&address).unwrap();
        assert!(probe(&address).is_err());
        drop(taken);
        assert!(probe("127.0.0.1:notaport").is_err());
    }
}
