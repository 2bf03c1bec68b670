//! Hot-path micro-benchmark of step 3: path normalisation and route matching with 10 and
//! 1,000 routes. Prints a table; run with `cargo bench --bench routing`.

use portcullis::checks::path::normalise;
use portcullis::checks::route::RouteTable;
use portcullis::config::model::{PathMatch, Route};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn table(n: usize) -> RouteTable {
    let routes = (0..n)
        .map(|i| {
            let mut r = Route::public(
                &format!("route-{i}"),
                PathMatch::Prefix(format!("/v1/service-{i}/items")),
                0,
            );
            r.methods = Some(vec![http::Method::GET, http::Method::POST]);
            r
        })
        .collect();
    RouteTable::new(routes)
}

/// Nanoseconds per call, over at least 200 ms.
fn measure(mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_millis(200) {
        for _ in 0..1000 {
            f();
        }
        calls += 1000;
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let mut rows = Vec::new();
    let raw = "/v1/service-7/items/./1234//details/%7Eview";
    rows.push((
        "normalise (dot segment, escapes)",
        measure(|| {
            black_box(normalise(black_box(raw)).ok());
        }),
    ));
    for n in [10usize, 1000] {
        let t = table(n);
        let path = format!("/v1/service-{}/items/1234/details", n / 2);
        rows.push((
            if n == 10 {
                "match, 10 routes"
            } else {
                "match, 1,000 routes"
            },
            measure(|| {
                black_box(
                    t.match_request(None, black_box(&path), &http::Method::GET)
                        .ok(),
                );
            }),
        ));
        let miss = "/v2/unknown/path/with/several/segments";
        rows.push((
            if n == 10 {
                "miss, 10 routes"
            } else {
                "miss, 1,000 routes"
            },
            measure(|| {
                black_box(
                    t.match_request(None, black_box(miss), &http::Method::GET)
                        .ok(),
                );
            }),
        ));
    }
    println!("{:<36} {:>12}", "step", "ns/op");
    for (name, ns) in rows {
        println!("{name:<36} {ns:>12.1}");
    }
}
