//! Detection and false-positive rates of the threat detector on the corpora in
//! `tests/data/threats/`: attack payloads as a client would send them in a query parameter,
//! benign API values both as JSON strings and percent-encoded in a query. Prints both rates.

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
