//! Detection and false-positive rates on the corpora in `tests/data/threats/` (attack payloads
//! as a client would send them in a query parameter, benign API values both as JSON strings and
//! percent-encoded in a query) of the built-in detector, and of the built-in rules written in
//! SecLang that are to replace it (issue 34). Prints the rates.

use portcullis::checks::threat::builtin::{scan, scan_query, Field};

fn lines(name: &str) -> Vec<String> {
    let path = format!("{}/tests/data/threats/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn corpus_rates_meet_the_goals() {
    let attacks = lines("attacks.txt");
    let benign = lines("benign.txt");
    let mut missed = Vec::new();
    for line in &attacks {
        let (kind, payload) = line.split_once('\t').expect("kind<TAB>payload");
        if scan(payload.as_bytes(), Field::Query).is_none() {
            missed.push(format!("{kind}: {payload}"));
        }
    }
    let mut false_positives = Vec::new();
    for value in &benign {
        let as_body = scan(value.as_bytes(), Field::Body);
        let as_query = scan_query(&format!("q={}", encode_query_value(value)));
        if let Some(kind) = as_body.or(as_query) {
            false_positives.push(format!("{}: {value}", kind.label()));
        }
    }
    let detection = 100.0 * (attacks.len() - missed.len()) as f64 / attacks.len() as f64;
    let fp_rate = 100.0 * false_positives.len() as f64 / benign.len() as f64;
    println!(
        "threat corpus: {} attacks, detected {detection:.1} %",
        attacks.len()
    );
    println!(
        "benign corpus: {} values, false positives {fp_rate:.2} %",
        benign.len()
    );
    for m in &missed {
        println!("  missed  {m}");
    }
    for f in &false_positives {
        println!("  flagged {f}");
    }
    assert!(
        attacks.len() >= 150 && benign.len() >= 1000,
        "corpora too small"
    );
    assert!(detection >= 95.0, "detection {detection:.1} % < 95 %");
    assert!(fp_rate <= 0.5, "false positives {fp_rate:.2} % > 0.5 %");
}

/// The built-in rules written in SecLang (`src/waf/builtin.conf`, issue 34), run in process by
/// the rule engine: on the same corpora they keep the detector's results — every attack it
/// finds, no benign value flagged — and they see every part of a request (cookies, forms,
/// JSON, XML, multipart file names, headers), where the detector saw only some.
mod built_in_rules {
    use super::{encode_query_value, lines};
    use portcullis::checks::threat::builtin::{scan, scan_query, Field};
    use portcullis::waf::eval::{evaluate, Request};
    use portcullis::waf::ruleset::RuleSet;

    fn rules() -> RuleSet {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/waf/builtin.conf");
        let text = std::fs::read_to_string(path).unwrap();
        let directives = portcullis::waf::seclang::parse(&text, std::path::Path::new(path))
            .unwrap_or_else(|e| panic!("{e}"));
        let set = portcullis::waf::ruleset::compile::compile(&directives)
            .unwrap_or_else(|e| panic!("{}", e[0]));
        assert!(set.warnings.is_empty() && set.gaps.is_empty());
        for rule in set.phase1.iter().chain(&set.phase2) {
            assert!((10_000..10_100).contains(&rule.id), "rule {}", rule.id);
        }
        set
    }

    /// Header lines of a test request.
    type Headers<'a> = Vec<(&'a str, &'a [u8])>;

    const HEADERS: [(&str, &[u8]); 2] =
        [("Host", b"api.example.com"), ("User-Agent", b"Mozilla/5.0")];

    /// The rule that denied a request with `extra` headers, `uri` and `body`, if any.
    fn denied(set: &RuleSet, uri: &str, extra: &[(&str, &[u8])], body: &[u8]) -> Option<u64> {
        let mut headers = HEADERS.to_vec();
        headers.extend_from_slice(extra);
        let request = Request {
            method: if body.is_empty() { "GET" } else { "POST" },
            uri,
            protocol: "HTTP/1.1",
            headers,
            body,
            remote_addr: "192.0.2.1",
            unique_id: "t",
        };
        evaluate(set, &request).denied_by
    }

    /// A payload as a client sends it in a query value: as written in the corpus (which may be
    /// percent-encoded already), with the characters a query cannot hold encoded.
    fn in_query(payload: &str) -> String {
        format!(
            "/search?q={}",
            payload
                .replace(' ', "%20")
                .replace('#', "%23")
                .replace('&', "%26")
        )
    }

    #[test]
    fn they_find_every_attack_the_detector_finds_and_flag_no_benign_value() {
        let set = rules();
        let attacks = lines("attacks.txt");
        let mut missed = Vec::new();
        for line in &attacks {
            let (kind, payload) = line.split_once('\t').expect("kind<TAB>payload");
            let by_rules = denied(&set, &in_query(payload), &[], b"").is_some();
            let by_detector = scan(payload.as_bytes(), Field::Query).is_some();
            assert!(
                by_rules || !by_detector,
                "the detector finds {kind}: {payload}, the rules do not"
            );
            if !by_rules {
                missed.push(format!("{kind}: {payload}"));
            }
        }
        let json = [("Content-Type", &b"application/json"[..])];
        let mut flagged = Vec::new();
        for value in lines("benign.txt") {
            let body = serde_json::json!({ "name": value, "comment": value }).to_string();
            let query = format!("/search?q={}", encode_query_value(&value));
            if let Some(id) = denied(&set, "/orders", &json, body.as_bytes())
                .or_else(|| denied(&set, &query, &[], b""))
            {
                flagged.push(format!("{id}: {value}"));
            }
            // The detector agrees on every benign value.
            assert!(scan_query(&format!("q={}", encode_query_value(&value))).is_none());
        }
        let detection = 100.0 * (attacks.len() - missed.len()) as f64 / attacks.len() as f64;
        println!(
            "built-in rules: {} attacks, detected {detection:.1} %; missed {missed:?}",
            attacks.len()
        );
        println!("built-in rules: flagged {flagged:?}");
        assert!(detection >= 95.0, "detection {detection:.1} % < 95 %");
        assert!(flagged.is_empty(), "{flagged:?}");
    }

    #[test]
    fn they_see_every_part_of_a_request() {
        let set = rules();
        let form = [("Content-Type", &b"application/x-www-form-urlencoded"[..])];
        let json = [("Content-Type", &b"application/json"[..])];
        let xml = [("Content-Type", &b"application/xml"[..])];
        let multipart = [("Content-Type", &b"multipart/form-data; boundary=XyZ"[..])];
        let upload = |name: &str| {
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n"
            )
        };
        // Where, the headers, the body, and the rule expected to deny.
        let cases: Vec<(&str, Headers, Vec<u8>, u64)> = vec![
            (
                "cookie",
                vec![("Cookie", b"session=1' UNION SELECT password FROM users--")],
                vec![],
                10050,
            ),
            (
                "cookie name",
                vec![("Cookie", b"<script>alert(1)</script>=1")],
                vec![],
                10030,
            ),
            (
                "referer",
                vec![("Referer", b"http://x/?q=' OR 1=1--")],
                vec![],
                10050,
            ),
            (
                "form",
                form.to_vec(),
                b"comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_vec(),
                10030,
            ),
            (
                "json",
                json.to_vec(),
                br#"{"host":"example.com; cat /etc/passwd"}"#.to_vec(),
                10010,
            ),
            (
                "json command",
                json.to_vec(),
                br#"{"host":"example.com; whoami"}"#.to_vec(),
                10020,
            ),
            (
                "json key",
                json.to_vec(),
                br#"{"' OR 1=1--":1}"#.to_vec(),
                10050,
            ),
            (
                "xml",
                xml.to_vec(),
                b"<order><note>1' OR '1'='1</note></order>".to_vec(),
                10050,
            ),
            (
                "multipart file name",
                multipart.to_vec(),
                upload("../../etc/passwd").into_bytes(),
                10010,
            ),
            ("path", vec![], vec![], 10010),
        ];
        for (part, headers, body, rule) in cases {
            let uri = if part == "path" {
                "/files/..%252f..%252fetc%252fpasswd"
            } else {
                "/orders"
            };
            assert_eq!(denied(&set, uri, &headers, &body), Some(rule), "{part}");
        }
        // Ordinary values (names with apostrophes, prose with SQL words, prices with < and >,
        // markdown, URLs, international text) pass in every one of those parts.
        let values = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ordinary/values.txt"
        ))
        .unwrap();
        let values: Vec<String> = values
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|l| l.replace("\\n", "\n"))
            .collect();
        assert!(values.len() >= 60, "{} values", values.len());
        for value in &values {
            let encoded = encode_query_value(value);
            let json_body = serde_json::json!({ "note": value }).to_string();
            let form_body = format!("note={encoded}");
            let cookie = format!("pref={encoded}");
            let tries: Vec<(&str, Headers, &[u8], String)> = vec![
                ("query", vec![], b"", format!("/search?q={encoded}")),
                (
                    "json",
                    json.to_vec(),
                    json_body.as_bytes(),
                    "/orders".into(),
                ),
                (
                    "form",
                    form.to_vec(),
                    form_body.as_bytes(),
                    "/orders".into(),
                ),
                (
                    "cookie",
                    vec![("Cookie", cookie.as_bytes())],
                    b"",
                    "/orders".into(),
                ),
            ];
            for (part, headers, body, uri) in tries {
                // A line break is a control byte outside a body, as for the detector.
                if value.contains('\n') && matches!(part, "query" | "cookie") {
                    continue;
                }
                assert_eq!(
                    denied(&set, &uri, &headers, body),
                    None,
                    "{part}: {value:?}"
                );
            }
        }
    }
}
