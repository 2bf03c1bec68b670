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
    run_promtool(&[
        "check",
        "rules",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/monitoring/portcullis-alerts.yml"
        ),
    ]);
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
    assert_success(&child.wait_with_output().unwrap(), "promtool check metrics");
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

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool()).args(args).output().unwrap();
    assert_success(&out, &format!("promtool {args:?}"));
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    run_promtool(&[
        "test",
        "rules",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/monitoring/portcullis-alerts.test.yml"
        ),
    ]);
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    use yaml_rust2::YamlLoader;
    let rules = &YamlLoader::load_from_str(&asset("portcullis-alerts.yml")).unwrap()[0];
    let alerts: Vec<String> = rules["groups"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_vec().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let tests = &YamlLoader::load_from_str(&asset("portcullis-alerts.test.yml")).unwrap()[0];
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().unwrap().iter())
        .map(|c| {
            let fires = c["exp_alerts"].as_vec().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    for alert in &alerts {
        for fires in [true, false] {
            assert!(
                cases.iter().any(|(a, f)| a == alert && *f == fires),
                "{alert} has no case where it is expected {}",
                if fires { "to fire" } else { "quiet" }
            );
        }
    }
    // Every case names a rule that exists (a renamed alert would otherwise test nothing).
    for (name, _) in &cases {
        assert!(alerts.contains(name), "test case for unknown alert {name}");
    }
}

#[test]
fn every_dashboard_query_parses() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&asset("grafana-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_string());
            }
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Grafana's interval variables stand for a duration; any other variable for a label value.
    let intervals = regex::Regex::new(r"\$(__rate_interval|__interval|__range)\b").unwrap();
    let variables = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").unwrap();
    // Each query as a recording rule: `promtool check rules` parses every expression.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = intervals.replace_all(expr, "5m");
        let expr = variables.replace_all(&expr, ".*");
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, &rules).unwrap();
    run_promtool(&["check", "rules", path.to_str().unwrap()]);
    // And the check is real: a broken query fails it.
    let broken = rules.replace(
        "dashboard:panel_0\n        expr: \"",
        "dashboard:panel_0\n        expr: \"sum by (",
    );
    std::fs::write(&path, broken).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken query passed promtool");
}

/// The harness's metric reader, on which every metric assertion rests: an absent series is
/// `None`, never 0; labels match whole names and values; matching series add up.
#[test]
fn the_metric_reader_tells_absent_from_zero() {
    let text = "# HELP portcullis_x_total x\n# TYPE portcullis_x_total counter\n\
                portcullis_x_total{route=\"open\",reason=\"a\"} 2\n\
                portcullis_x_total{route=\"opener\",reason=\"a\"} 5\n\
                portcullis_x_total{xroute=\"open\",reason=\"b\"} 7\n\
                portcullis_x_total_more{route=\"open\"} 11\n\
                portcullis_zero{route=\"open\"} 0\n\
                portcullis_plain 3\n";
    assert_eq!(
        metric_value(text, "portcullis_x_total", &[("route", "open")]),
        Some(2.0)
    );
    assert_eq!(
        metric_value(text, "portcullis_x_total", &[("reason", "a")]),
        Some(7.0)
    );
    assert_eq!(metric_value(text, "portcullis_x_total", &[]), Some(14.0));
    assert_eq!(
        metric_value(text, "portcullis_zero", &[("route", "open")]),
        Some(0.0)
    );
    assert_eq!(metric_value(text, "portcullis_plain", &[]), Some(3.0));
    assert_eq!(
        metric_value(text, "portcullis_x_total", &[("route", "closed")]),
        None
    );
    assert_eq!(metric_value(text, "portcullis_renamed_total", &[]), None);
    assert_eq!(metric_value(text, "portcullis_x", &[]), None);
}
