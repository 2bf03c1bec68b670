//! Threat protection through the real gateway with the built-in rules (no `[waf]`): each class
//! in the path, the query, headers, cookies and every body type, plain and encoded, is refused
//! in `block` mode before the upstream, forwarded and counted in `detect` mode, ignored when
//! `off`; benign traffic passes, and bodies the rules cannot read stream through untouched.

mod harness;

use harness::*;

fn start(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
{fixture}
validate = {{ content_types = ["application/json"] }}

[[routes]]
name = "watched"
path_prefix = "/d"
upstream = "app"
public = true
threat_protection = "detect"
validate = {{ content_types = ["application/json"] }}

[[routes]]
name = "open"
path_prefix = "/o"
upstream = "app"
public = true
threat_protection = "off"

[[routes]]
name = "plain"
path_prefix = "/p"
upstream = "app"
public = true
limits = {{ max_body_bytes = "512KiB" }}

[[routes]]
name = "tuned"
path_prefix = "/t"
upstream = "app"
public = true
waf = {{ exclude_rules = ["10050-10052"], exclude_targets = [{{ rule = "10030-10040", target = "ARGS:html" }}] }}
"#,
        fixture = public_route(up.addr, "blocked", "/b")
    ))
}

fn json_post(gw: &Gateway, path: &str, body: &str) -> HttpResponse {
    gw.raw(&format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn with_header(gw: &Gateway, path: &str, name: &str, value: &str) -> HttpResponse {
    gw.raw(&format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
    ))
}

/// (kind label, query value as sent, JSON string as sent (already JSON-escaped))
const CASES: &[(&str, &str, &str)] = &[
    ("sqli", "%27%20OR%201%3D1--", r#"' OR 1=1--"#),
    (
        "sqli",
        "1%20UNION%20SELECT%20password%20FROM%20users",
        "1 UNION SELECT password FROM users",
    ),
    // SQL libinjection has no entry for (rules 10051 and 10052: sqlmap's probes).
    (
        "sqli",
        "1%27%20AND%203773%3DJSON_EXTRACT(CHAR(123%2C125)%2C1)--%20x",
        "1' AND 3773=JSON_EXTRACT(CHAR(123,125),1)-- x",
    ),
    (
        "sqli",
        "x%3BDECLARE%20%40a%20NVARCHAR(99)",
        "x;DECLARE @a NVARCHAR(99)",
    ),
    (
        "xss",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "<script>alert(1)</script>",
    ),
    (
        "xss",
        "%253Cimg%2520src%253Dx%2520onerror%253Dalert(1)%253E",
        "<img src=x onerror=alert(1)>",
    ),
    (
        "command_injection",
        "%3B%20cat%20%2Fetc%2Fpasswd",
        "; cat /etc/passwd",
    ),
    ("command_injection", "%24(whoami)", "$(whoami)"),
    (
        "path_traversal",
        "..%2F..%2Fetc%2Fpasswd",
        "../../etc/passwd",
    ),
    ("path_traversal", "%252e%252e%252fsecret", "%2e%2e%2fsecret"),
    (
        "path_traversal",
        "%c0%ae%c0%ae%c0%afsecret",
        r"..\\..\\windows\\win.ini",
    ),
    ("control_bytes", "a%00b", "a\\u0000b"),
];

#[test]
fn block_mode_refuses_every_class_everywhere() {
    let up = Upstream::start();
    let gw = start(&up);
    for (kind, query, json) in CASES {
        let r = gw.get(&format!("/b/items?q={query}"));
        let body = r.assert_problem(400);
        assert!(
            body["detail"].as_str().unwrap().contains("looks like") || *kind == "control_bytes",
            "{kind}: {body}"
        );
        let r = json_post(&gw, "/b/items", &format!(r#"{{"note":"{json}"}}"#));
        assert_eq!(r.status, 400, "{kind} in body {json}: {}", r.text());
        // The same payloads, encoded, in a path segment and in a header.
        let r = gw.get(&format!("/b/{query}"));
        assert_eq!(r.status, 400, "{kind} in path {query}: {}", r.text());
        let r = with_header(&gw, "/b/x", "User-Agent", query);
        assert_eq!(r.status, 400, "{kind} in header {query}: {}", r.text());
    }
    // A path parameter before the last segment.
    assert_eq!(gw.get("/b/users/1%20OR%201=1/orders").status, 400);
    assert_eq!(
        gw.get("/b/users/1%20UNION%20SELECT%20password%20FROM%20users/x")
            .status,
        400
    );
    // Path, header, JSON key.
    assert_eq!(gw.get("/b/%253Cscript%253E").status, 400);
    assert_eq!(gw.get("/b/..%252f..%252fetc%252fpasswd").status, 400);
    assert_eq!(
        with_header(&gw, "/b/x", "User-Agent", "' OR 1=1--").status,
        400
    );
    assert_eq!(
        with_header(&gw, "/b/x", "Referer", "http://x/<script>alert(1)</script>").status,
        400
    );
    assert_eq!(json_post(&gw, "/b/x", r#"{"$(id)":1}"#).status, 400);
    nothing_arrived_and_each_kind_was_counted(
        &gw,
        &up,
        "blocked",
        &[
            "sqli",
            "xss",
            "command_injection",
            "path_traversal",
            "control_bytes",
        ],
    );
}

/// Every refusal was answered by the gateway (the upstream saw nothing), and each kind was
/// counted as blocked on `route`.
fn nothing_arrived_and_each_kind_was_counted(
    gw: &Gateway,
    up: &Upstream,
    route: &str,
    kinds: &[&str],
) {
    assert!(
        up.requests().is_empty(),
        "the upstream saw {:?}",
        up.requests()
    );
    for kind in kinds {
        assert!(
            gw.wait_metric(
                "portcullis_threats_total",
                &[("route", route), ("kind", kind), ("action", "block")],
                1.0
            ) >= 1.0,
            "{kind}"
        );
    }
}

#[test]
fn detect_mode_forwards_counts_and_logs_without_the_payload() {
    let up = Upstream::start();
    let gw = start(&up);
    let r = gw.get("/d/items?q=%27%20OR%201%3D1--");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = json_post(
        &gw,
        "/d/items",
        r#"{"note":"<script>alert('PAYLOAD-MARK')</script>"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().len(), 2);
    assert_eq!(
        gw.wait_metric(
            "portcullis_threats_total",
            &[("route", "watched"), ("kind", "sqli"), ("action", "detect")],
            1.0
        ),
        1.0
    );
    assert_eq!(
        gw.wait_metric(
            "portcullis_threats_total",
            &[("route", "watched"), ("kind", "xss"), ("action", "detect")],
            1.0
        ),
        1.0
    );
    let mut log = String::new();
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        log = gw.access_log();
        log.lines().count() >= 2
    }));
    assert!(log.contains("\"decision\":\"detected_sqli\""), "{log}");
    assert!(log.contains("\"decision\":\"detected_xss\""), "{log}");
    assert!(
        !gw.stderr().contains("PAYLOAD-MARK"),
        "the error log must not carry payloads"
    );
}

#[test]
fn off_mode_and_benign_traffic_pass() {
    let up = Upstream::start();
    let gw = start(&up);
    assert_eq!(gw.get("/o/items?q=%27%20OR%201%3D1--").status, 200);
    // The same attack on a blocking route is counted, so the series below is absent because
    // `off` counted nothing, not because the metric is missing.
    assert_eq!(gw.get("/b/items?q=%27%20OR%201%3D1--").status, 400);
    assert_eq!(
        gw.wait_metric("portcullis_threats_total", &[("route", "blocked")], 1.0),
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_threats_total", &[("route", "open")]),
        None
    );
    let benign = std::fs::read_to_string(data("threats/benign.txt")).unwrap();
    let mut sent = 0;
    for value in benign.lines().step_by(7) {
        let body = serde_json::json!({"name": value, "comment": value}).to_string();
        let r = json_post(&gw, "/b/orders", &body);
        assert_eq!(
            r.status,
            200,
            "benign value refused: {value:?}: {}",
            r.text()
        );
        sent += 1;
    }
    assert_eq!(
        up.requests().len(),
        sent + 1,
        "the refused attack never arrived"
    );
    // Ordinary user agents and query strings pass.
    let r = with_header(
        &gw,
        "/b/search?q=tea+%26+biscuits&page=2",
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A POST to the route without `validate` (any body type) with `headers`.
fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    browser_request(gw.port, "POST", path, headers, body)
}

/// Where the attack is, the headers, the body, and the kind it must be refused as.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, &'a str);

#[test]
fn builtin_rules_refuse_attacks_in_every_part_of_a_request() {
    let up = Upstream::start();
    let gw = start(&up);
    let upload = |name: &str, content: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n{content}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ--\r\n"
        )
    };
    let multipart = "multipart/form-data; boundary=XyZ";
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<Case> = vec![
        (
            "cookie",
            vec![(
                "Cookie",
                "session=1' UNION SELECT password FROM users--".into(),
            )],
            vec![],
            "sqli",
        ),
        (
            "cookie name",
            vec![("Cookie", "<script>alert(1)</script>=1".into())],
            vec![],
            "xss",
        ),
        (
            "referer",
            vec![("Referer", "http://x/?q=' OR 1=1--".into())],
            vec![],
            "sqli",
        ),
        (
            "form",
            vec![("Content-Type", form.into())],
            b"comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_vec(),
            "xss",
        ),
        (
            "form name",
            vec![("Content-Type", form.into())],
            b"%24(id)=1".to_vec(),
            "command_injection",
        ),
        (
            "json command",
            vec![("Content-Type", "application/json".into())],
            br#"{"host":"example.com; whoami"}"#.to_vec(),
            "command_injection",
        ),
        (
            "json nested",
            vec![("Content-Type", "application/json".into())],
            br#"{"a":{"b":["x","1' OR '1'='1"]}}"#.to_vec(),
            "sqli",
        ),
        (
            "json, vendor type",
            vec![("Content-Type", "application/vnd.api+json".into())],
            br#"{"q":"<svg onload=alert(1)>"}"#.to_vec(),
            "xss",
        ),
        (
            "xml text",
            vec![("Content-Type", "application/xml".into())],
            b"<order><note>1' OR '1'='1</note></order>".to_vec(),
            "sqli",
        ),
        (
            "xml attribute",
            vec![("Content-Type", "text/xml".into())],
            b"<order note=\"&lt;script&gt;alert(1)&lt;/script&gt;\"/>".to_vec(),
            "xss",
        ),
        (
            "multipart file name",
            vec![("Content-Type", multipart.into())],
            upload("../../etc/passwd", "hello").into_bytes(),
            "path_traversal",
        ),
        (
            "multipart field",
            vec![("Content-Type", multipart.into())],
            upload("a.txt", "hello")
                .replace("hello\r\n--XyZ--", "; cat /etc/shadow\r\n--XyZ--")
                .into_bytes(),
            "path_traversal",
        ),
        (
            "header injection",
            vec![("Content-Type", form.into())],
            b"next=%2Fhome%0D%0ASet-Cookie%3A%20admin%3D1".to_vec(),
            "protocol_attack",
        ),
        (
            "no content type",
            vec![],
            b"q=1'+UNION+SELECT+password+FROM+users--".to_vec(),
            "sqli",
        ),
        (
            "json that does not parse",
            vec![("Content-Type", "application/json".into())],
            br#"{"a":"x"} ' OR 1=1--"#.to_vec(),
            "protocol",
        ),
    ];
    for (place, headers, body, kind) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = if body.is_empty() {
            browser_request(gw.port, "GET", "/p/items", &headers, b"")
        } else {
            post(&gw, "/p/items", &headers, body)
        };
        assert_eq!(r.status, 400, "{place}: {}", r.text());
        r.assert_problem(400);
        // The request's access-log line names the family and the built-in rule that fired.
        let request_id = r.header("x-request-id").unwrap_or_default().to_string();
        let mut line = String::new();
        assert!(
            wait_until(std::time::Duration::from_secs(5), || {
                let log = gw.access_log();
                line = log
                    .lines()
                    .find(|l| l.contains(&request_id))
                    .unwrap_or_default()
                    .to_string();
                !line.is_empty()
            }),
            "{place}: no log line for {request_id}"
        );
        assert!(
            line.contains(&format!("\"decision\":\"threat_{kind}\"")),
            "{place}: {line}"
        );
        assert!(line.contains("\"waf_rules\":[100"), "{place}: {line}");
    }
    nothing_arrived_and_each_kind_was_counted(
        &gw,
        &up,
        "plain",
        &[
            "sqli",
            "xss",
            "command_injection",
            "path_traversal",
            "protocol",
            "protocol_attack",
        ],
    );
}

#[test]
fn bodies_the_rules_cannot_read_stream_and_readable_ones_arrive_whole() {
    let up = Upstream::start();
    let gw = start(&up);
    // Binary data with NUL bytes and a quote: not a type the rules read, so it streams.
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(300 * 1024).collect();
    binary.extend_from_slice(b"' OR 1=1--");
    let r = post(
        &gw,
        "/p/blob",
        &[("Content-Type", "application/octet-stream")],
        &binary,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A JSON body larger than Pingora's 64 KiB replay buffer, read whole by the rules, arrives
    // byte for byte.
    let items: Vec<String> = (0..6000)
        .map(|i| format!("{{\"sku\":\"SKU-{i:05}\",\"note\":\"Fatima D'Angelo's order\"}}"))
        .collect();
    let json = format!("[{}]", items.join(","));
    assert!(json.len() > 200 * 1024);
    let r = post(
        &gw,
        "/p/orders",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Past the route's limit: 413, as for a streamed body.
    let huge = vec![b'a'; 600 * 1024];
    let r = post(
        &gw,
        "/p/orders",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &huge,
    );
    r.assert_problem(413);
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body, binary);
    assert_eq!(seen[1].body, json.as_bytes());
}

/// A route's exclusions apply to the built-in rules as to CRS: a removed rule and a removed
/// target are not run there, and everything else still is.
#[test]
fn route_exclusions_apply_to_the_builtin_rules() {
    let up = Upstream::start();
    let gw = start(&up);
    assert_eq!(gw.get("/t/items?q=%27%20OR%201%3D1--").status, 200);
    assert_eq!(
        gw.get("/t/items?html=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            .status,
        200
    );
    gw.get("/t/items?other=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .assert_problem(400);
    gw.get("/t/items?q=..%2F..%2Fetc%2Fpasswd")
        .assert_problem(400);
    // The same requests on a route without exclusions.
    gw.get("/p/items?q=%27%20OR%201%3D1--").assert_problem(400);
    gw.get("/p/items?html=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .assert_problem(400);
    let seen: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        seen,
        [
            "/t/items?q=%27%20OR%201%3D1--",
            "/t/items?html=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
        ]
    );
}
