//! The SecLang engine's cost counted, not timed: compile CRS v4 (PL1), then evaluate one benign
//! request N times. Run the built binary under callgrind with N = 0 and N = 300: the difference
//! of the two totals over 300 is the instructions of one evaluation, the same whatever else the
//! machine does (BENCHMARKS.md, the issue 33 A/B).
//!   cargo bench --bench crs_count --no-run
//!   valgrind --tool=callgrind target/release/deps/crs_count-* 300 get   (or: post)
//! A third argument, `builtin`, evaluates the built-in rules instead of CRS; a fourth names a
//! file whose content is the POST body instead of the order below.
#[path = "shared/requests.rs"]
mod requests;

use portcullis::waf::eval::{evaluate, Request};
fn main() {
    // `cargo bench` passes `--bench`: then nothing is evaluated.
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let post_mode = std::env::args().nth(2).as_deref() == Some("post");
    let set = if std::env::args().nth(3).as_deref() == Some("builtin") {
        portcullis::waf::builtin::compile().unwrap()
    } else {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs");
        let mut files = vec![root.join("crs-setup.conf.example")];
        files.extend(portcullis::waf::seclang::rule_files(&root.join("rules")).unwrap());
        let directives = portcullis::waf::seclang::parse_files(&files).unwrap();
        portcullis::waf::ruleset::compile::compile(&directives).unwrap()
    };
    let headers = requests::browser_headers();
    let body = br#"{"customer":{"name":"Ana Lopez","email":"ana@example.com","address":{"street":"12 High Street","city":"Leeds","postcode":"LS1 4AB"}},"items":[{"sku":"SKU-00042","qty":2,"price":19.99,"note":"gift wrap, please"},{"sku":"SKU-00043","qty":1,"price":5.5,"note":"fragile"}],"currency":"GBP","comment":"Please deliver after 5pm; ring twice.","coupon":"SPRING-2026","channel":"web","tags":["priority","repeat-customer"],"ref":"6f1c1a52-7d4b-4e0a-9a7c-3c1e0b7f9d21"}"#;
    let file_body = std::env::args()
        .nth(4)
        .map(std::fs::read)
        .transpose()
        .unwrap();
    let body: &[u8] = file_body.as_deref().unwrap_or(body);
    let mut post_headers = headers.clone();
    post_headers.push(("Content-Type", b"application/json"));
    let req = if post_mode {
        Request {
            method: "POST",
            uri: "/v1/orders",
            protocol: "HTTP/1.1",
            headers: post_headers,
            body,
            remote_addr: "192.0.2.10",
            unique_id: "x",
            json: None,
        }
    } else {
        Request {
            method: "GET",
            uri: "/v1/orders?status=shipped&page=2",
            protocol: "HTTP/1.1",
            headers,
            body: b"",
            remote_addr: "192.0.2.10",
            unique_id: "x",
            json: None,
        }
    };
    let mut denied = 0;
    for _ in 0..n {
        if evaluate(&set, std::hint::black_box(&req))
            .denied_by
            .is_some()
        {
            denied += 1;
        }
    }
    println!("{n} evaluations, {denied} denied");
}
