//! SPEC §3 step 10: threat protection. The route's SecLang rules decide (`rules`): those of
//! `[waf]`, or the built-in ones. `block` refuses; `detect` logs, counts and forwards, keeping
//! the refusal `block` would have sent for the log and the metrics.

pub mod rules;

use super::body::ValidatedBody;
use crate::problem::Refusal;
use pingora_http::RequestHeader;
use rules::{Findings, WafPolicy};
use std::net::IpAddr;
use std::sync::Arc;

/// `threat_protection` of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreatMode {
    Block,
    Detect,
    Off,
}

/// The request as step 10 sees it.
pub struct Inputs<'a> {
    pub head: &'a RequestHeader,
    /// The path as normalised for routing and forwarding (SPEC §3 step 2).
    pub normalised_path: &'a str,
    pub body: Option<&'a ValidatedBody>,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    /// The route's name, for the log line.
    pub route: &'a str,
}

/// What step 10 runs on a route: its `threat_protection`, and the rules (`None` with
/// `threat_protection = "off"`).
#[derive(Debug, Clone)]
pub struct ThreatPolicy {
    pub mode: ThreatMode,
    pub rules: Option<Arc<WafPolicy>>,
}

/// No threat protection: without rules there is nothing to block with. Configured routes get
/// theirs from the config (the built-in rules at least); this is for routes built in tests.
impl Default for ThreatPolicy {
    fn default() -> Self {
        ThreatPolicy {
            mode: ThreatMode::Off,
            rules: None,
        }
    }
}

/// What step 10 leaves for the access log and the metrics, blocked or not.
#[derive(Debug, Default)]
pub struct ThreatReport {
    /// What the `[waf]` rules found, when anything.
    pub findings: Option<Findings>,
    /// In `detect` mode, what would have been refused.
    pub detected: Option<Detected>,
}

/// A threat that `detect` mode let through: the access-log decision, and the refusal `block`
/// mode would have answered (its family names the kinds counted in
/// `portcullis_threats_total{action="detect"}`).
#[derive(Debug)]
pub struct Detected {
    pub decision: &'static str,
    pub refusal: Refusal,
}

/// Step 10 on a route with `threat_protection` on; the findings go to `report` either way.
/// The matched value is never logged: it is attacker-controlled and may hold secrets.
pub fn check(
    policy: &ThreatPolicy,
    inputs: &Inputs,
    report: &mut ThreatReport,
) -> Result<(), Refusal> {
    let block = match policy.mode {
        ThreatMode::Off => return Ok(()),
        ThreatMode::Block => true,
        ThreatMode::Detect => false,
    };
    let Some(rules) = &policy.rules else {
        return Ok(());
    };
    let findings = rules::inspect(
        rules,
        &rules::Inputs {
            head: inputs.head,
            normalised_path: inputs.normalised_path,
            body: inputs.body.map_or(&[], |b| &b.bytes),
            json: inputs.body.and_then(|b| b.members.as_ref()),
            client_ip: &inputs.client_ip.to_string(),
            request_id: inputs.request_id,
        },
    );
    let found = findings.refused.then(|| {
        log::warn!(
            "request {} on route {}: {} (anomaly score {}) {}",
            inputs.request_id,
            inputs.route,
            findings.main_family(),
            findings.anomaly_score,
            if block {
                "blocked"
            } else {
                "detected, forwarded"
            }
        );
        (findings.refusal(), findings.detected_decision())
    });
    if findings.noteworthy() {
        report.findings = Some(findings);
    }
    let Some((refusal, decision)) = found else {
        return Ok(());
    };
    if block {
        return Err(refusal);
    }
    report.detected = Some(Detected { decision, refusal });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Family;

    /// Step 10 with the built-in rules on a route in `mode`, for a GET of `uri`.
    fn check_in(mode: ThreatMode, uri: &str) -> (Result<(), Refusal>, ThreatReport) {
        let rules = rules::WafPolicy {
            rules: Arc::new(crate::waf::builtin::compile().unwrap()),
            settings: Default::default(),
            paranoia_level: 1,
            max_body_bytes: usize::MAX,
            over_limit: rules::OverLimit::Refuse,
            builtin: true,
        };
        let policy = ThreatPolicy {
            mode,
            rules: Some(Arc::new(rules)),
        };
        let head = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        let inputs = Inputs {
            head: &head,
            normalised_path: head.uri.path(),
            body: None,
            client_ip: "192.0.2.1".parse().unwrap(),
            request_id: "rid",
            route: "api",
        };
        let mut report = ThreatReport::default();
        (check(&policy, &inputs, &mut report), report)
    }

    #[test]
    fn block_refuses_detect_forwards_and_remembers_off_ignores() {
        let attack = "/search?q=%27%20OR%201%3D1--";
        let (blocked, report) = check_in(ThreatMode::Block, attack);
        let refusal = blocked.unwrap_err();
        assert_eq!((refusal.status, refusal.reason), (400, "threat_sqli"));
        assert_eq!(
            refusal.family,
            Family::Threat {
                kinds: vec!["sqli"]
            }
        );
        assert!(report.detected.is_none());

        let (forwarded, report) = check_in(ThreatMode::Detect, attack);
        assert!(forwarded.is_ok());
        let detected = report.detected.expect("detect mode remembers the threat");
        assert_eq!(detected.decision, "detected_sqli");
        assert_eq!(detected.refusal.reason, "threat_sqli");
        assert_eq!(
            detected.refusal.family,
            Family::Threat {
                kinds: vec!["sqli"]
            }
        );

        let (ignored, report) = check_in(ThreatMode::Off, attack);
        assert!(ignored.is_ok() && report.detected.is_none());

        for mode in [ThreatMode::Block, ThreatMode::Detect] {
            let (clean, report) = check_in(mode, "/search?q=Fatima+D%27Angelo");
            assert!(clean.is_ok(), "{mode:?}");
            assert!(report.detected.is_none() && report.findings.is_none());
        }
    }
}
