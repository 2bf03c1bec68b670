//! Limits shared by two gateway instances through a real redis-server: together they admit no
//! more than the limit in a window; with Redis stopped both keep serving on local limits with
//! no error caused by the store; sharing resumes when Redis returns.

mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WINDOW: u64 = 10;

fn config(up: &Upstream, redis: &RedisServer) -> String {
    let mut out = format!(
        "[rate_limit_store]\nredis = \"redis://127.0.0.1:{}\"\non_store_error = \"local\"\n\n[[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n",
        redis.port, up.addr
    );
    for (name, limit, key) in [
        ("shared", 100, "route"),
        ("fresh", 100, "route"),
        ("resumed", 100, "route"),
        ("probe", 1_000_000, "header:X-Probe"),
    ] {
        out.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"app\"\npublic = true\nrate_limit = {{ requests = {limit}, per = \"{WINDOW}s\", key = \"{key}\" }}\n"
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
