//! `[waf]` through the real gateway with the CRS v4 snapshot in ../shared/crs: attacks in
//! every place CRS looks (query, path, header, cookie, urlencoded, JSON, XML, multipart and
//! untyped bodies) are refused before the upstream; ordinary requests and their bodies reach it
//! byte for byte; `detect` forwards and logs; per-route paranoia levels and exclusions apply;
//! bodies past `waf.max_body_bytes` are refused or inspected in part as configured; `check`
//! names a broken rule by file and line.

mod harness;

use harness::*;
use std::path::PathBuf;
use std::time::Duration;

fn crs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crs")
}

fn waf_section(extra: &str) -> String {
    let crs = crs();
    format!(
        "[waf]\nrules = [\"{}\", \"{}/rules/*.conf\"]\n{extra}\n",
        crs.join("crs-setup.conf.example").display(),
        crs.display()
    )
}

fn start(up: &Upstream, waf_extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"{waf}
{fixture}
[[routes]]
name = "validated"
path_prefix = "/v"
upstream = "app"
public = true
validate = {{ content_types = ["application/json"] }}

[[routes]]
name = "watched"
path_prefix = "/d"
upstream = "app"
public = true
threat_protection = "detect"

[[routes]]
name = "strict"
path_prefix = "/pl2"
upstream = "app"
public = true
waf = {{ paranoia_level = 2 }}

[[routes]]
name = "comments"
path_prefix = "/c"
upstream = "app"
public = true
waf = {{ exclude_targets = [{{ rule = "941000-941999", target = "ARGS:comment" }}], exclude_rules = [942100] }}

[[routes]]
name = "open"
path_prefix = "/o"
upstream = "app"
public = true
threat_protection = "off"
"#,
        waf = waf_section(waf_extra),
        fixture = public_route(up.addr, "blocked", "/b")
    ))
}

/// A browser-like request (see `browser_request`).
fn request(
    gw: &Gateway,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    browser_request(gw.port, method, path, extra, body)
}

/// The access-log line of a response, by its request id.
fn log_line(gw: &Gateway, response: &HttpResponse) -> serde_json::Value {
    let id = response
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = gw
            .access_log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == id.as_str());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no access-log line for {id}"))
}

/// (what, method, path, headers, body, expected decision)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Headers,
    &'static [u8],
    &'static str,
);

/// Extra request headers.
type Headers = Vec<(&'static str, &'static str)>;

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const XML: (&str, &str) = ("Content-Type", "application/xml");

#[test]
fn attacks_anywhere_in_the_request_are_refused_before_the_upstream() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let multipart_type = "multipart/form-data; boundary=XyZ";
    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
    let cases: Vec<Case> = vec![
        (
            "query",
            "GET",
            "/b/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
            vec![],
            b"",
            "threat_sqli",
        ),
        (
            "path",
            "GET",
            "/b/.git/config",
            vec![],
            b"",
            "threat_path_traversal",
        ),
        (
            "header",
            "GET",
            "/b/",
            vec![("Referer", "<script>alert(document.cookie)</script>")],
            b"",
            "threat_xss",
        ),
        (
            "cookie",
            "GET",
            "/b/",
            vec![("Cookie", "session=abc; pref=1' or '1'='1")],
            b"",
            "threat_sqli",
        ),
        (
            "form",
            "POST",
            "/b/comments",
            vec![FORM],
            b"name=x&text=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "threat_xss",
        ),
        (
            "json",
            "POST",
            "/b/orders",
            vec![JSON],
            br#"{"items":[{"note":"x; uname -a"}]}"#,
            "threat_command_injection",
        ),
        (
            "json member sent twice (the first is not hidden by the second)",
            "POST",
            "/b/orders",
            vec![JSON],
            br#"{"q":"1' UNION SELECT password FROM users--","q":"x"}"#,
            "threat_sqli",
        ),
        (
            "xml",
            "POST",
            "/b/import",
            vec![XML],
            b"<order><note>&lt;script&gt;alert(1)&lt;/script&gt;</note></order>",
            "threat_xss",
        ),
        (
            "multipart file name",
            "POST",
            "/b/upload",
            vec![("Content-Type", multipart_type)],
            multipart,
            "threat_path_traversal",
        ),
        (
            "untyped body",
            "POST",
            "/b/raw",
            vec![],
            b"a=1 union select password from users",
            "threat_sqli",
        ),
        (
            "validated JSON",
            "POST",
            "/v/orders",
            vec![JSON],
            br#"{"q":"<img src=x onerror=alert(1)>"}"#,
            "threat_xss",
        ),
    ];
    for (what, method, path, headers, body, reason) in &cases {
        up.clear();
        let r = request(&gw, method, path, headers, body);
        let problem = r.assert_problem(400);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("the request looks like")),
            "{what}: {problem}"
        );
        assert!(
            up.requests().is_empty(),
            "{what}: the upstream saw a refused request"
        );
        let line = log_line(&gw, &r);
        assert_eq!(line["decision"], *reason, "{what}: {line}");
        assert!(
            line["anomaly_score"].as_i64().is_some_and(|s| s >= 5),
            "{what}: {line}"
        );
        let rules = line["waf_rules"].as_array().expect("rule ids");
        assert!(rules.contains(&serde_json::json!(949110)), "{what}: {line}");
    }
    // The matched values never reach a log.
    let logs = gw.access_log() + &gw.stderr();
    for needle in ["UNION SELECT", "etc/passwd", "alert(", "or '1'='1"] {
        assert!(!logs.contains(needle), "{needle:?} was logged");
    }
    let counted = |kind: &str| {
        gw.metric(
            "portcullis_threats_total",
            &[("route", "blocked"), ("kind", kind), ("action", "block")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        counted("sqli") >= 3.0 && counted("xss") >= 3.0,
        "{}",
        gw.metrics()
    );
    assert!(counted("command_injection") >= 1.0 && counted("path_traversal") >= 2.0);
}

#[test]
fn ordinary_requests_and_their_bodies_reach_the_upstream_byte_for_byte() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let bodies: Vec<(&str, Headers, &[u8])> = vec![
        ("/b/people?name=O%27Brien&city=K%C3%B6ln", vec![], b""),
        ("/b/notes", vec![JSON], br#"{"title":"Select the best option","text":"Tom & Jerry <3 pizza; price < 10 and > 5","tags":["or","and"]}"#),
        ("/b/signup", vec![FORM], b"email=ana%40example.com&bio=I+like+cats+and+dogs.&site=https%3A%2F%2Fexample.com%2Fme"),
        ("/v/orders", vec![JSON], br#"{"sku":"A-1","qty":2,"note":"leave at the door, it's fine"}"#),
        ("/b/doc", vec![XML], b"<doc><p>Fish &amp; chips</p></doc>"),
    ];
    for (path, headers, body) in &bodies {
        up.clear();
        let method = if body.is_empty() { "GET" } else { "POST" };
        let r = request(&gw, method, path, headers, body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = up.requests();
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].body, *body, "{path}: body changed on the way");
        let line = log_line(&gw, &r);
        assert_eq!(line["decision"], "allow", "{line}");
        assert!(line.get("waf_rules").is_none(), "{path}: {line}");
    }
}

#[test]
fn detect_forwards_and_logs_what_block_would_refuse() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let r = request(
        &gw,
        "GET",
        "/d/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
    let line = log_line(&gw, &r);
    assert_eq!(line["decision"], "detected_xss", "{line}");
    assert!(line["waf_rules"]
        .as_array()
        .is_some_and(|r| r.contains(&serde_json::json!(941100))));
    assert_eq!(
        gw.metric(
            "portcullis_threats_total",
            &[("route", "watched"), ("kind", "xss"), ("action", "detect")]
        ),
        Some(1.0)
    );
    // `off`: not even looked at.
    up.clear();
    let r = request(
        &gw,
        "GET",
        "/o/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().len(), 1);
    assert!(log_line(&gw, &r).get("waf_rules").is_none());
}

#[test]
fn paranoia_levels_and_exclusions_are_per_route() {
    let up = Upstream::start();
    let gw = start(&up, "");
    // `<b>` is only suspicious at paranoia level 2.
    let pl1 = request(&gw, "GET", "/b/?a=%3Cb%3E", &[], b"");
    assert_eq!(pl1.status, 200, "{}", pl1.text());
    up.clear();
    request(&gw, "GET", "/pl2/?a=%3Cb%3E", &[], b"").assert_problem(400);
    assert!(up.requests().is_empty());
    // The comments route lets XSS rules ignore ARGS:comment, and nothing else.
    let script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let ok = request(&gw, "GET", &format!("/c/?comment={script}"), &[], b"");
    assert_eq!(ok.status, 200, "{}", ok.text());
    up.clear();
    request(&gw, "GET", &format!("/c/?title={script}"), &[], b"").assert_problem(400);
    assert!(up.requests().is_empty());
}

#[test]
fn bodies_past_the_inspection_limit_are_refused_or_inspected_in_part() {
    let up = Upstream::start();
    let gw = start(&up, "max_body_bytes = \"1KiB\"");
    let mut big = b"note=".to_vec();
    big.resize(4096, b'a');
    let r = request(&gw, "POST", "/b/notes", &[FORM], &big);
    let problem = r.assert_problem(413);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1024 bytes")),
        "{problem}"
    );
    assert!(up.requests().is_empty());
    // A small body is still read whole.
    let r = request(&gw, "POST", "/b/notes", &[FORM], b"note=hello");
    assert_eq!(r.status, 200);

    let up = Upstream::start();
    let gw = start(
        &up,
        "max_body_bytes = \"1KiB\"\nbody_over_limit = \"scan_prefix\"",
    );
    let r = request(&gw, "POST", "/b/notes", &[FORM], &big);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].body, big, "the whole body is forwarded");
    assert_eq!(log_line(&gw, &r)["waf_body"], "prefix");
    // An attack inside the inspected part is still refused.
    up.clear();
    let mut attack = b"note=%3Cscript%3Ealert(1)%3C%2Fscript%3E&pad=".to_vec();
    attack.resize(4096, b'a');
    request(&gw, "POST", "/b/notes", &[FORM], &attack).assert_problem(400);
    assert!(up.requests().is_empty());
}

#[test]
fn check_names_rule_files_and_lines_it_cannot_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("bad.conf");
    std::fs::write(
        &rules,
        "SecRule ARGS \"@rx a\" \"id:1,phase:2,deny\"\nSecRule ARGS \"@noSuchOperator x\" \"id:2,phase:2,deny\"\n",
    )
    .expect("write rules");
    let config = dir.path().join("portcullis.toml");
    let write = |waf: &str| {
        std::fs::write(
            &config,
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:2\"]\n{waf}\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"a\"\npublic = true\n"
            ),
        )
        .expect("write config");
    };
    write("[waf]\nrules = [\"bad.conf\"]");
    let (code, out, err) = cli(&["check", "-c", config.to_str().expect("utf-8")], None);
    let text = out + &err;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("bad.conf:2"), "{text}");
    assert!(text.contains("noSuchOperator"), "{text}");

    write("[waf]\nrules = [\"missing/*.conf\"]\nparanoia_level = 5");
    let (code, out, err) = cli(&["check", "-c", config.to_str().expect("utf-8")], None);
    let text = out + &err;
    assert_ne!(code, 0);
    assert!(
        text.contains("waf.rules[0]") && text.contains("matches no file"),
        "{text}"
    );
    assert!(text.contains("waf.paranoia_level"), "{text}");

    write(&format!(
        "{}\n",
        waf_section("exclude_targets = [{ rule = 942100, target = \"NOPE:x\" }]")
    ));
    let (code, out, err) = cli(&["check", "-c", config.to_str().expect("utf-8")], None);
    let text = out + &err;
    assert_ne!(code, 0);
    assert!(text.contains("waf.exclude_targets[0].target"), "{text}");
}

/// The shipped production config (`conf/production.toml`, what the package installs) runs the
/// Core Rule Set from Debian's modsecurity-crs: with its own [waf], upstream, provider and route
/// — only the upstream and the JWKS address pointed at test servers, and the harness's own
/// [server], listener, metrics and logging in place of the ones for the real machine — an
/// authenticated attack is refused with nothing reaching the upstream, an ordinary request
/// passes, and a request without a token never gets as far as the rules.
#[test]
fn the_production_config_refuses_a_crs_attack() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let up = Upstream::start();
    let jwks = DocServer::start(&std::fs::read_to_string(data("jwt/jwks.json")).unwrap());
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/production.toml"))
            .unwrap();
    let mut conf: toml::Table = toml::from_str(&shipped).unwrap();
    for machine_only in ["server", "listeners", "metrics", "logging"] {
        conf.remove(machine_only);
    }
    assert!(conf.contains_key("waf"), "the shipped config runs CRS");
    conf["upstreams"][0]["targets"] = toml::Value::Array(vec![up.addr.to_string().into()]);
    conf["upstreams"][0]
        .as_table_mut()
        .unwrap()
        .remove("health_check");
    conf["jwt_providers"][0]["jwks_url"] = format!("http://{}/jwks.json", jwks.addr).into();
    let gw = Gateway::start(&toml::to_string(&conf).unwrap());

    let provider = &conf["jwt_providers"][0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    let key = EncodingKey::from_rsa_pem(&std::fs::read(data("jwt/rsa.pem")).unwrap()).unwrap();
    let claims = serde_json::json!({
        "sub": "alice",
        "iss": provider["issuer"].as_str().unwrap(),
        "aud": provider["audiences"][0].as_str().unwrap(),
        "exp": now + 600,
    });
    let token = encode(&header, &claims, &key).unwrap();
    let get = |target: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n{auth}Connection: close\r\n\r\n"
        ))
    };

    // The key set is fetched in the background: an ordinary request passes once it is there.
    assert!(
        wait_until(Duration::from_secs(10), || get(
            "/orders?status=shipped",
            Some(&token)
        )
        .status
            == 200),
        "{}",
        gw.stderr()
    );
    let seen = up.requests().len();
    assert!(seen >= 1);
    let attack = get(
        "/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E",
        Some(&token),
    );
    let problem = attack.assert_problem(400);
    assert_eq!(problem["status"], 400);
    let attack_sqli = get(
        "/search?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        Some(&token),
    );
    attack_sqli.assert_problem(400);
    assert_eq!(up.requests().len(), seen, "no attack reached the upstream");
    let line = log_line(&gw, &attack);
    assert!(
        line["decision"]
            .as_str()
            .is_some_and(|d| d.starts_with("threat_")),
        "{line}"
    );
    assert!(
        line["waf_rules"].as_array().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
    // Without a token the route refuses first (step 6 before step 10).
    get("/search?q=%3Cscript%3E", None).assert_problem(401);
    assert_eq!(up.requests().len(), seen);
}
