//! Limits shared by two gateway instances through a real redis-server: together they admit no
//! more than the limit in a window; with Redis stopped both keep serving on local limits with
//! no error caused by the store; sharing resumes when Redis returns.

mod harness;

use harness::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WINDOW: u64 = 10;
/// The window of the `sliding` route.
const SLIDING_WINDOW_MS: u64 = 2000;

fn config(up: &Upstream, redis: &RedisServer) -> String {
    let mut out = format!(
        "[rate_limit_store]\nredis = \"redis://127.0.0.1:{}\"\non_store_error = \"local\"\n\n[[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n",
        redis.port, up.addr
    );
    for (name, limit, key) in [
        ("shared", 100, "route"),
        ("fresh", 100, "route"),
        ("resumed", 100, "route"),
        ("sliding", 40, "route"),
        ("probe", 1_000_000, "header:X-Probe"),
    ] {
        out.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"app\"\npublic = true\nrate_limit = {{ requests = {limit}, per = \"{}s\", key = \"{key}\" }}\n",
            if name == "sliding" { SLIDING_WINDOW_MS / 1000 } else { WINDOW }
        ));
    }
    out
}

/// Wait (bounded) until a fresh wall-clock window has just begun.
fn align_to_window_start() {
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let into = now.as_secs() % WINDOW;
        if into == 0 && now.subsec_millis() < 300 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alternate `count` requests between the two gateways; returns (admitted, statuses seen).
fn split_load(a: &Gateway, b: &Gateway, path: &str, count: usize) -> (usize, Vec<u16>) {
    let mut admitted = 0;
    let mut statuses = Vec::new();
    for i in 0..count {
        let gw = if i % 2 == 0 { a } else { b };
        let status = gw.get(path).status;
        if status == 200 {
            admitted += 1;
        }
        statuses.push(status);
    }
    (admitted, statuses)
}

#[test]
fn two_instances_share_a_limit_and_survive_the_store_going_away() {
    let up = Upstream::start();
    let mut redis = RedisServer::start();
    let a = Gateway::start(&config(&up, &redis));
    let b = Gateway::start(&config(&up, &redis));
    std::thread::sleep(Duration::from_millis(1500));

    align_to_window_start();
    let (admitted, statuses) = split_load(&a, &b, "/shared/x", 300);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        (80..=100).contains(&admitted),
        "{admitted} admitted by two instances sharing a limit of 100 (bound: 100, at most 2 × 10 unused)"
    );
    assert!(redis
        .cli(&["--scan", "--pattern", "portcullis:rl:shared-0:*"])
        .contains("portcullis:rl:shared-0:"));

    // Redis goes away: both keep serving on their own limits, and nothing fails because of it.
    redis.stop();
    let (admitted, statuses) = split_load(&a, &b, "/fresh/x", 100);
    assert_eq!(
        admitted, 100,
        "each instance still allows its local 100: {statuses:?}"
    );
    let more: Vec<u16> = (0..60).map(|_| a.get("/fresh/x").status).collect();
    assert!(more.iter().all(|s| *s == 200 || *s == 429), "{more:?}");
    assert_eq!(
        more.iter().filter(|s| **s == 200).count(),
        50,
        "instance a stops at its local 100"
    );
    assert!(a.wait_metric("portcullis_rate_limit_store_errors_total", &[], 1.0) >= 1.0);

    // Redis returns: sharing resumes by itself (each instance reconnects within a few seconds).
    redis.restart();
    for (i, gw) in [&a, &b].into_iter().enumerate() {
        // Each probe value is its own key in Redis: a new key shows this instance is back.
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(15), || {
                n += 1;
                let before = redis.cli(&["dbsize"]);
                gw.raw(&format!(
                    "GET /probe/x HTTP/1.1\r\nHost: x\r\nX-Probe: {i}-{n}\r\nConnection: close\r\n\r\n"
                ));
                redis.cli(&["dbsize"]) != before
            }),
            "an instance did not reconnect to Redis"
        );
    }
    align_to_window_start();
    let (admitted, statuses) = split_load(&a, &b, "/resumed/x", 300);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        (80..=100).contains(&admitted),
        "{admitted} admitted after Redis came back"
    );
}

#[test]
fn an_unreachable_store_is_denied_or_ignored_as_configured() {
    let up = Upstream::start();
    let dead = free_port();
    let config = |mode: &str| {
        format!(
            "[rate_limit_store]\nredis = \"redis://127.0.0.1:{dead}\"\non_store_error = \"{mode}\"\n\n\
             [[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\n\
             [[routes]]\nname = \"limited\"\npath_prefix = \"/\"\nupstream = \"app\"\npublic = true\n\
             rate_limit = {{ requests = 100, per = \"10s\" }}\n",
            up.addr
        )
    };
    let deny = Gateway::start(&config("deny"));
    let r = deny.get("/x");
    r.assert_problem(503);
    assert!(r.header("retry-after").is_some());
    assert!(
        up.requests().is_empty(),
        "a refused request never reaches the upstream"
    );
    assert!(deny.wait_metric("portcullis_rate_limit_store_errors_total", &[], 1.0) >= 1.0);
    let local = Gateway::start(&config("local"));
    assert_eq!(local.get("/x").status, 200);
    assert_eq!(up.requests().len(), 1);
}

const PASSWORD: &str = "Zx9-store-secret-7Qp";
const WRONG_PASSWORD: &str = "Wq4-not-the-secret-2Lm";

/// A gateway config whose route `name` allows 3 requests per 60 s, shared through `url`, and
/// whose route `probe` asks the store for every new `X-Probe` value.
fn store_config(up: &Upstream, url: &str, store_extra: &str, name: &str) -> String {
    format!(
        "[rate_limit_store]\nredis = \"{url}\"\n{store_extra}\non_store_error = \"local\"\n\n\
         [[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"app\"\npublic = true\n\
         rate_limit = {{ requests = 3, per = \"60s\", key = \"route\" }}\n\n\
         [[routes]]\nname = \"probe\"\npath_prefix = \"/probe\"\nupstream = \"app\"\npublic = true\n\
         rate_limit = {{ requests = 1000000, per = \"60s\", key = \"header:X-Probe\" }}\n",
        up.addr
    )
}

fn wait_for_log(gw: &Gateway, text: &str) -> bool {
    wait_until(Duration::from_secs(10), || gw.stderr().contains(text))
}

/// Three requests pass, the fourth is refused, and the shared count is in Redis.
fn assert_shared(gw: &Gateway, up: &Upstream, redis: &RedisServer, name: &str) {
    up.clear();
    let statuses: Vec<u16> = (0..4)
        .map(|_| gw.get(&format!("/{name}/x")).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{name}");
    assert_eq!(
        up.requests().len(),
        3,
        "{name}: the refused request reached the upstream"
    );
    let keys = redis.cli(&["--scan", "--pattern", &format!("portcullis:rl:{name}-0:*")]);
    assert!(
        keys.contains("portcullis:rl:"),
        "{name}: nothing counted in Redis"
    );
}

#[test]
fn the_store_password_never_reaches_a_log_or_check() {
    let up = Upstream::start();
    let mut redis = RedisServer::start_with(|port| {
        (
            vec![
                "--port".into(),
                port.to_string(),
                "--requirepass".into(),
                PASSWORD.into(),
            ],
            vec!["-a".into(), PASSWORD.into(), "--no-auth-warning".into()],
        )
    });
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let from_file = Gateway::start_logging(
        &store_config(&up, &url, "password_file = \"redis.pw\"", "file"),
        "",
        &[("redis.pw", format!("{PASSWORD}\n").as_bytes())],
        "info",
    );
    let inline_url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let inline = Gateway::start_logging(
        &store_config(&up, &inline_url, "", "inline"),
        "",
        &[],
        "info",
    );
    let wrong = Gateway::start_logging(
        &store_config(&up, &url, "password_file = \"redis.pw\"", "wrong"),
        "",
        &[("redis.pw", WRONG_PASSWORD.as_bytes())],
        "info",
    );
    assert!(wait_for_log(
        &from_file,
        &format!("rate limit store {url} connected")
    ));
    assert!(wait_for_log(
        &inline,
        &format!(
            "rate limit store redis://***@127.0.0.1:{} connected",
            redis.port
        )
    ));
    assert_shared(&from_file, &up, &redis, "file");
    assert_shared(&inline, &up, &redis, "inline");
    // A wrong password: Redis refuses it, the error is logged, requests use local limits.
    assert!(wait_for_log(&wrong, "rate limit store"));
    assert_eq!(wrong.get("/wrong/x").status, 200);
    assert!(redis
        .cli(&["--scan", "--pattern", "portcullis:rl:wrong-0:*"])
        .trim()
        .is_empty());

    // Redis goes away: the connected instances log their errors too.
    redis.stop();
    for gw in [&from_file, &inline] {
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(15), || {
                n += 1;
                gw.raw(&format!(
                    "GET /probe/x HTTP/1.1\r\nHost: x\r\nX-Probe: {n}\r\nConnection: close\r\n\r\n"
                ));
                gw.metric("portcullis_rate_limit_store_errors_total", &[])
                    .is_some_and(|n| n >= 1.0)
            }),
            "no store error after Redis stopped"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for (gw, name) in [(&from_file, "file"), (&inline, "inline"), (&wrong, "wrong")] {
        let logs = format!("{}\n{}\n{}", gw.stderr(), gw.access_log(), gw.metrics());
        assert!(
            logs.contains("rate limit store"),
            "{name}: nothing logged: {logs}"
        );
        for secret in [PASSWORD, WRONG_PASSWORD] {
            assert!(
                !logs.contains(secret),
                "{name}: the password was logged:\n{logs}"
            );
        }
    }

    // `check` warns about the inline password and never prints it, nor on an error.
    let (code, out, err) = cli(
        &[
            "check",
            "-c",
            inline.path().join("portcullis.toml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: rate_limit_store.redis"), "{err}");
    assert!(err.contains("password_env or password_file"), "{err}");
    assert!(!format!("{out}{err}").contains(PASSWORD), "{out}{err}");
    let broken = inline.dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        store_config(&up, &format!("redis//:{PASSWORD}@127.0.0.1:1"), "", "x"),
    )
    .unwrap();
    let (code, out, err) = cli(&["check", "-c", broken.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rate_limit_store.redis"), "{err}");
    assert!(!format!("{out}{err}").contains(PASSWORD), "{out}{err}");
}

#[test]
fn a_tls_store_is_used_only_when_its_certificate_verifies() {
    let up = Upstream::start();
    let pki = Pki::new("store CA");
    let (cert, key) = pki.issue("redis", &["127.0.0.1", "localhost"], false);
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("redis.pem", &cert),
        ("redis.key", &key),
        ("ca.pem", &pki.ca.pem()),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let redis = RedisServer::start_with(|port| {
        let server = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("redis.pem"),
            "--tls-key-file",
            &file("redis.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ];
        (
            server.iter().map(|s| s.to_string()).collect(),
            vec!["--tls".into(), "--cacert".into(), file("ca.pem")],
        )
    });
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let trusted = Gateway::start_logging(
        &store_config(&up, &url, "ca_file = \"ca.pem\"", "trusted"),
        "",
        &[("ca.pem", pki.ca.pem().as_bytes())],
        "info",
    );
    let untrusted =
        Gateway::start_logging(&store_config(&up, &url, "", "untrusted"), "", &[], "info");
    assert!(wait_for_log(
        &trusted,
        &format!("rate limit store {url} connected")
    ));
    assert_shared(&trusted, &up, &redis, "trusted");
    // The system's CAs do not know the store's: no connection, local limits, an error logged.
    assert!(wait_for_log(&untrusted, "cannot connect"));
    assert_eq!(untrusted.get("/untrusted/x").status, 200);
    assert!(
        !untrusted.stderr().contains(&format!("{url} connected")),
        "{}",
        untrusted.stderr()
    );
    assert!(redis
        .cli(&["--scan", "--pattern", "portcullis:rl:untrusted-0:*"])
        .trim()
        .is_empty());
}

/// Two instances take turns under a steady load on one shared limit (40 per 2 s) for more than
/// three windows, beginning just before a wall-clock window ends. Counted by when each answer
/// came, no window-long interval — wherever it starts, across the windows' boundaries too —
/// holds more than 1.1 × the limit of admitted requests. (Counted in fixed wall-clock windows,
/// as before, the limit was admitted on each side of the first boundary: 80 within 0.4 s.)
#[test]
fn two_instances_admit_at_most_the_limit_in_any_window_long_interval() {
    let up = Upstream::start();
    let redis = RedisServer::start();
    let a = Gateway::start(&config(&up, &redis));
    let b = Gateway::start(&config(&up, &redis));
    std::thread::sleep(Duration::from_millis(1500));
    // Begin the load late in a wall-clock window, where counting in fixed windows would admit
    // the limit once before the boundary and once more right after it.
    let late = |ms: u64| (1600..1700).contains(&(ms % SLIDING_WINDOW_MS));
    assert!(wait_until(Duration::from_secs(3), || late(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    )));
    let started = std::time::Instant::now();
    let mut admitted_ms = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..4000 {
        if started.elapsed() > Duration::from_millis(3 * SLIDING_WINDOW_MS + 700) {
            break;
        }
        let gw = if i % 2 == 0 { &a } else { &b };
        let sent = started.elapsed().as_millis() as u64;
        let status = gw.get("/sliding/x").status;
        let answered = started.elapsed().as_millis() as u64;
        *statuses.entry(status).or_insert(0) += 1;
        if status == 200 {
            admitted_ms.push((sent + answered) / 2);
        }
        std::thread::sleep(Duration::from_millis(4));
    }
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let limit = 40.0;
    // The busiest interval a little shorter than a window (the client's clock is a few
    // milliseconds from the gateways').
    let span = SLIDING_WINDOW_MS - 20;
    let busiest = admitted_ms
        .iter()
        .map(|&end| {
            admitted_ms
                .iter()
                .filter(|&&t| t + span >= end && t <= end)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest as f64 <= 1.1 * limit,
        "{busiest} admitted within one window ({statuses:?})"
    );
    // And the limit is not starved: more than a window and a half over three windows and more
    // (a loose bound: a loaded machine sends fewer requests).
    assert!(
        admitted_ms.len() >= 60,
        "{} admitted ({statuses:?})",
        admitted_ms.len()
    );
}

/// The brute-force throttle shared through the store: wrong keys tried in turn at two instances
/// spend one budget of 6 (not 6 at each), a right key from the throttled address is refused
/// too, and a graceful upgrade does not hand out a fresh budget.
#[test]
fn a_brute_force_spread_over_two_instances_is_stopped_at_the_shared_budget() {
    let up = Upstream::start();
    let redis = RedisServer::start();
    let right = "a-right-key-that-is-long-enough-0001";
    let hash = {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(right.as_bytes()))
        )
    };
    let config = format!(
        "[rate_limit_store]\nredis = \"redis://127.0.0.1:{}\"\non_store_error = \"local\"\n\n\
         [security]\nauth_failure_limit = {{ failures = 6, per = \"30s\" }}\n\n\
         [[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\n\
         [[consumers]]\nid = \"ci\"\napi_keys = [\"{hash}\"]\n\n\
         [[routes]]\nname = \"keys\"\npath_prefix = \"/k\"\nupstream = \"app\"\nauth = [\"api_key\"]\nallow = {{ consumers = [\"*\"] }}\n",
        redis.port, up.addr
    );
    let mut a = Gateway::start(&config);
    let b = Gateway::start(&config);
    std::thread::sleep(Duration::from_millis(1500));
    let attempt = |gw: &Gateway, key: &str| {
        gw.raw(&format!(
            "GET /k/x HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        ))
        .status
    };
    let mut statuses = Vec::new();
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(attempt(gw, &format!("guess-{i}")));
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 401, 429, 429, 429, 429, 429, 429],
        "one budget for both instances"
    );
    assert_eq!(
        attempt(&a, right),
        429,
        "throttled before the key is looked at"
    );
    assert_eq!(attempt(&b, right), 429);
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // Only hashes of the address are in the store.
    let keys = redis.cli(&["--scan", "--pattern", "portcullis:throttle:*"]);
    assert!(keys.contains("portcullis:throttle:"), "{keys}");
    assert!(!keys.contains("127.0.0.1"), "{keys}");

    // A graceful upgrade: the new process reads the same count.
    a.upgrade(&config);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        attempt(&a, right),
        429,
        "no fresh budget after an upgrade: {}",
        a.stderr_of(1)
    );
    assert!(up.requests().is_empty());
}
