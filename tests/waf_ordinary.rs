//! Ordinary API traffic through CRS v4 at paranoia level 1 (issue 14's false-positive bar) and
//! through the built-in rules (issue 34): every value of tests/data/ordinary/values.txt — names
//! with apostrophes, prose with SQL words, prices with `<` and `>`, e-mails, URLs, markdown,
//! international text — sent as a query argument, a JSON string, a form field, an XML element,
//! a multipart field and a cookie (one-line values) must reach the upstream, each body byte for
//! byte. A refusal is reported with the rules that fired.

mod harness;

use harness::*;
use std::path::PathBuf;
use std::time::Duration;

/// (where the value is, path, extra headers, body)
type Placed<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a [u8]);

fn values() -> Vec<String> {
    std::fs::read_to_string(data("ordinary/values.txt"))
        .expect("tests/data/ordinary/values.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| l.replace("\\n", "\n"))
        .collect()
}

/// Percent-encoding as a browser writes a query (`%20`) or a form (`+`).
fn encode(value: &str, plus: bool) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn send(
    gw: &Gateway,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    browser_request(gw.port, method, path, extra, body)
}

#[test]
fn ordinary_requests_pass_crs_at_paranoia_level_1() {
    let up = Upstream::start();
    let crs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crs");
    let gw = Gateway::start(&format!(
        r#"
[waf]
rules = ["{setup}", "{crs}/rules/*.conf"]

{fixture}"#,
        setup = crs.join("crs-setup.conf.example").display(),
        crs = crs.display(),
        fixture = public_route(up.addr, "api", "/api")
    ));
    ordinary_requests_pass(&gw, &up);
}

#[test]
fn ordinary_requests_pass_the_builtin_rules() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_route(up.addr, "api", "/api"));
    ordinary_requests_pass(&gw, &up);
}

/// XML text as written inside an element.
fn xml_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ordinary_requests_pass(gw: &Gateway, up: &Upstream) {
    let values = values();
    assert!(values.len() >= 60, "{} values", values.len());
    let mut sent = 0;
    let mut refused = Vec::new();
    for value in &values {
        let json =
            serde_json::json!({"comment": value, "rating": 4, "tags": ["gift", value]}).to_string();
        let form = format!("comment={}&rating=4", encode(value, true));
        let cookie = format!(
            "session=4f2a9c1e7b; pref={}; theme=dark",
            encode(value, false)
        );
        let query = format!("/api/search?q={}&page=2", encode(value, false));
        let xml = format!(
            "<?xml version=\"1.0\"?><review><comment>{}</comment><rating>4</rating></review>",
            xml_escape(value)
        );
        let multipart = format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n{value}\r\n--b0undary\r\nContent-Disposition: form-data; name=\"rating\"\r\n\r\n4\r\n--b0undary--\r\n"
        );
        let requests: [Placed; 6] = [
            ("query", query, vec![], b""),
            (
                "json",
                "/api/reviews".into(),
                vec![("Content-Type", "application/json")],
                json.as_bytes(),
            ),
            (
                "form",
                "/api/reviews".into(),
                vec![("Content-Type", "application/x-www-form-urlencoded")],
                form.as_bytes(),
            ),
            (
                "xml",
                "/api/reviews".into(),
                vec![("Content-Type", "application/xml")],
                xml.as_bytes(),
            ),
            (
                "multipart",
                "/api/reviews".into(),
                vec![("Content-Type", "multipart/form-data; boundary=b0undary")],
                multipart.as_bytes(),
            ),
            (
                "cookie",
                "/api/profile".into(),
                vec![("Cookie", cookie.as_str())],
                b"",
            ),
        ];
        for (place, path, headers, body) in requests {
            // A line break in a header is what CRS 921140 (header injection, PL1) looks for,
            // URL-encoded or not, as ModSecurity does: multi-line text goes in bodies and
            // queries, not cookies.
            if place == "cookie" && value.contains('\n') {
                continue;
            }
            up.clear();
            let method = if body.is_empty() { "GET" } else { "POST" };
            let r = send(gw, method, &path, &headers, body);
            sent += 1;
            if r.status != 200 {
                refused.push(format!(
                    "{place} {value:?}: {} {}",
                    r.status,
                    r.header("x-request-id").unwrap_or("")
                ));
                continue;
            }
            let seen = up.requests();
            assert_eq!(seen.len(), 1, "{place} {value:?}");
            assert_eq!(seen[0].body, body, "{place} {value:?}: the body changed");
        }
    }
    assert!(sent >= 300, "{sent} requests");
    if !refused.is_empty() {
        // Name the rules that fired for each refusal.
        std::thread::sleep(Duration::from_millis(300));
        let log = gw.access_log();
        let detail: Vec<String> = refused
            .iter()
            .map(|r| {
                let id = r.rsplit(' ').next().unwrap_or("");
                let line = log
                    .lines()
                    .find(|l| !id.is_empty() && l.contains(id))
                    .unwrap_or("");
                format!("{r} {line}")
            })
            .collect();
        panic!(
            "{} of {sent} ordinary requests refused:\n{}",
            refused.len(),
            detail.join("\n")
        );
    }
    eprintln!("{sent} ordinary requests, none refused");
}
