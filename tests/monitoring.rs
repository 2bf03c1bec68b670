//! The monitoring assets in `monitoring/`: the alert rules pass `promtool check rules`, a live
//! scrape passes `promtool check metrics`, and every metric the rules and the dashboard use is
//! one the gateway exports.

mod harness;

use harness::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool() -> String {
    let unpacked = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/tools/prometheus/usr/bin/promtool"
    );
    if std::path::Path::new(unpacked).exists() {
        return unpacked.to_string();
    }
    if Command::new("promtool").arg("--version").output().is_ok() {
        return "promtool".to_string();
    }
    panic!("promtool not found: run `bash .ci/deps` (it unpacks Debian's prometheus package)");
}

fn asset(name: &str) -> String {
    std::fs::read_to_string(format!("{}/monitoring/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new(promtool())
        .args([
            "check",
            "rules",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/monitoring/portcullis-alerts.yml"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_live_scrape_passes_promtool_check_metrics() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "[[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"app\"\npublic = true\n",
        up.addr
    ));
    assert_eq!(gw.get("/x").status, 200);
    assert!(gw.wait_metric("portcullis_requests_total", &[], 1.0) >= 1.0);
    let scrape = gw.metrics();
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_metric_the_assets_use_is_exported() {
    let exported: BTreeSet<String> = portcullis::observe::metrics::Metrics::new()
        .unwrap()
        .family_names()
        .into_iter()
        .collect();
    let text = asset("portcullis-alerts.yml") + &asset("grafana-dashboard.json");
    let used: BTreeSet<String> = regex::Regex::new(r"portcullis_[a-z_]+")
        .unwrap()
        .find_iter(&text)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| exported.contains(*base))
                })
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    assert!(used.len() >= 12, "{used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "used but not exported: {unknown:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&asset("grafana-dashboard.json")).unwrap();
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| p.len() >= 10));
}
