//! SPEC §3 step 10: the `[waf]` rules (the OWASP Core Rule Set, or any SecLang rules) or,
//! without them, the built-in rules (`waf::builtin`), run on the whole request: request line,
//! every header and cookie, and the body the gateway buffered. CRS decides by anomaly score at
//! the route's paranoia level; a built-in rule denies on its own. `block` refuses with 400;
//! `detect` forwards and logs what `block` would have refused. The log and the metrics get the
//! ids of the rules that fired, their families and the anomaly score, never a matched value.

use crate::problem::{Family, Refusal};
use crate::waf::eval::{self, Settings, Verdict};
use crate::waf::ruleset::RuleSet;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// What happens to a body larger than `waf.max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// 413: a body the rules cannot see whole is not forwarded.
    Refuse,
    /// The first `max_body_bytes` are inspected, the whole body is forwarded, and the access
    /// log says `waf_body: "prefix"`.
    ScanPrefix,
}

/// The rules one route runs, and how.
#[derive(Debug, Clone)]
pub struct WafPolicy {
    /// Compiled once, shared by every route and thread.
    pub rules: Arc<RuleSet>,
    /// Paranoia level and threshold (pinned TX variables) and the route's exclusions.
    pub settings: Settings,
    pub paranoia_level: u8,
    pub max_body_bytes: usize,
    pub over_limit: OverLimit,
    /// The built-in rules: they inspect parsed values only, never a raw body, so bodies of a
    /// type the engine has no reader for stream unread; and they see the path as it is
    /// forwarded (normalised, SPEC §3 step 2). CRS sees the request as sent, as in ModSecurity.
    pub builtin: bool,
}

/// The TX variables of CRS v4 and v3 that `paranoia_level` and `anomaly_threshold` set. They are
/// pinned: `crs-setup.conf` cannot change what the gateway's configuration says.
pub fn pinned_settings(paranoia_level: u8, anomaly_threshold: i64) -> Vec<(String, Vec<u8>)> {
    let level = paranoia_level.to_string().into_bytes();
    let threshold = anomaly_threshold.to_string().into_bytes();
    [
        ("blocking_paranoia_level", &level),
        ("detection_paranoia_level", &level),
        ("paranoia_level", &level),
        ("executing_paranoia_level", &level),
        ("inbound_anomaly_score_threshold", &threshold),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// TX variables the gateway sets before the rules run, which `crs-setup.conf` may still
/// change: a body without a `Content-Type` is read as a form (CRS v4's
/// `enforce_bodyproc_urlencoded`, off in CRS itself), so that leaving the header out does not
/// leave the body unscanned.
pub fn initial_settings() -> Vec<(String, Vec<u8>)> {
    vec![("enforce_bodyproc_urlencoded".to_string(), b"1".to_vec())]
}

/// The attack family of a rule, from the CRS numbering (`942100` → `sqli`) or the built-in
/// rules' (`10050` → `sqli`). Bounded: these are the `kind` label values of
/// `portcullis_threats_total`.
pub fn family(rule: u64) -> &'static str {
    if crate::waf::builtin::IDS.contains(&rule) {
        return match rule {
            10_000 | 10_003 => "protocol",
            10_004 | 10_005 => "protocol_attack",
            10_000..=10_009 => "control_bytes",
            10_010..=10_019 => "path_traversal",
            10_020..=10_029 => "command_injection",
            10_030..=10_049 => "xss",
            10_050..=10_059 => "sqli",
            _ => "custom",
        };
    }
    match rule / 1000 {
        911 => "method",
        913 => "scanner",
        920 => "protocol",
        921 => "protocol_attack",
        922 => "multipart",
        930 => "path_traversal",
        931 => "remote_file_inclusion",
        932 => "command_injection",
        933 => "php_injection",
        934 => "generic_injection",
        941 => "xss",
        942 => "sqli",
        943 => "session_fixation",
        944 => "java_injection",
        949 | 980 => "anomaly",
        _ => "custom",
    }
}

fn blocked_reason(family: &str) -> &'static str {
    match family {
        "method" => "threat_method",
        "scanner" => "threat_scanner",
        "protocol" => "threat_protocol",
        "protocol_attack" => "threat_protocol_attack",
        "multipart" => "threat_multipart",
        "control_bytes" => "threat_control_bytes",
        "path_traversal" => "threat_path_traversal",
        "remote_file_inclusion" => "threat_remote_file_inclusion",
        "command_injection" => "threat_command_injection",
        "php_injection" => "threat_php_injection",
        "generic_injection" => "threat_generic_injection",
        "xss" => "threat_xss",
        "sqli" => "threat_sqli",
        "session_fixation" => "threat_session_fixation",
        "java_injection" => "threat_java_injection",
        _ => "threat_detected",
    }
}

fn detected_decision(family: &str) -> &'static str {
    match family {
        "method" => "detected_method",
        "scanner" => "detected_scanner",
        "protocol" => "detected_protocol",
        "protocol_attack" => "detected_protocol_attack",
        "multipart" => "detected_multipart",
        "control_bytes" => "detected_control_bytes",
        "path_traversal" => "detected_path_traversal",
        "remote_file_inclusion" => "detected_remote_file_inclusion",
        "command_injection" => "detected_command_injection",
        "php_injection" => "detected_php_injection",
        "generic_injection" => "detected_generic_injection",
        "xss" => "detected_xss",
        "sqli" => "detected_sqli",
        "session_fixation" => "detected_session_fixation",
        "java_injection" => "detected_java_injection",
        _ => "detected_threat",
    }
}

fn detail(family: &str) -> &'static str {
    match family {
        "sqli" => "the request looks like SQL injection",
        "xss" => "the request looks like cross-site scripting",
        "command_injection" => "the request looks like OS command injection",
        "path_traversal" => "the request looks like path traversal or local file access",
        "remote_file_inclusion" => "the request looks like remote file inclusion",
        "php_injection" => "the request looks like PHP injection",
        "java_injection" => "the request looks like Java code injection",
        "generic_injection" => "the request looks like code injection",
        "session_fixation" => "the request looks like session fixation",
        "protocol" | "protocol_attack" | "multipart" | "method" => {
            "the request breaks the HTTP protocol rules of this API"
        }
        "scanner" => "the request comes from a security scanner",
        "control_bytes" => "the request contains NUL or control characters",
        _ => "the request was refused by threat protection",
    }
}

/// What the rules found in one request: for the access log and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Every logging rule that fired, in order (CRS's scoring rules included).
    pub rules: Vec<u64>,
    pub anomaly_score: i64,
    /// The families of the attack rules that fired, each once, in order.
    pub families: Vec<&'static str>,
    /// Whether the rules decided to refuse (a `detect` route forwards anyway).
    pub refused: bool,
    /// Only the first `max_body_bytes` of the body were inspected.
    pub body_prefix: bool,
}

impl Findings {
    /// Whether anything is worth a log field: a rule fired, or the body was not read whole.
    pub fn noteworthy(&self) -> bool {
        !self.rules.is_empty() || self.refused || self.body_prefix
    }

    fn from_verdict(v: Verdict, body_prefix: bool) -> Self {
        let mut families = Vec::new();
        for id in &v.matched {
            let f = family(*id);
            if f != "anomaly" && !families.contains(&f) {
                families.push(f);
            }
        }
        Findings {
            rules: v.matched,
            anomaly_score: v.anomaly_score,
            families,
            refused: v.denied_by.is_some(),
            body_prefix,
        }
    }

    /// The family that names the refusal: the first injection or file-access rule's (CRS
    /// 930-944, or a built-in rule), else the first of any other family.
    pub fn main_family(&self) -> &'static str {
        self.rules
            .iter()
            .find(|id| (930_000..945_000).contains(*id) || crate::waf::builtin::IDS.contains(id))
            .map(|id| family(*id))
            .or_else(|| self.families.first().copied())
            .unwrap_or("custom")
    }

    /// The 400 of `block` mode.
    pub fn refusal(&self) -> Refusal {
        let family = self.main_family();
        Refusal::bad_request(blocked_reason(family), detail(family)).in_family(Family::Threat {
            kinds: self.families.clone(),
        })
    }

    /// The access-log decision of `detect` mode when the rules would have refused.
    pub fn detected_decision(&self) -> &'static str {
        detected_decision(self.main_family())
    }
}

/// The request as the rules see it.
pub struct Inputs<'a> {
    pub head: &'a RequestHeader,
    /// The path as normalised for routing and forwarding.
    pub normalised_path: &'a str,
    /// The body as buffered (possibly longer than the policy inspects).
    pub body: &'a [u8],
    /// Its JSON members, when step 9 parsed it (`checks::body::ValidatedBody::members`).
    pub json: Option<&'a crate::waf::json::Members>,
    pub client_ip: &'a str,
    pub request_id: &'a str,
}

/// Run the route's rules.
pub fn inspect(policy: &WafPolicy, inputs: &Inputs) -> Findings {
    let head = inputs.head;
    let raw = String::from_utf8_lossy(head.raw_path());
    let uri = if policy.builtin {
        match raw.split_once('?') {
            Some((_, query)) => format!("{}?{query}", inputs.normalised_path).into(),
            None => std::borrow::Cow::Borrowed(inputs.normalised_path),
        }
    } else {
        raw
    };
    let protocol = match head.version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let headers: Vec<(&str, &[u8])> = head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let prefix = inputs.body.len() > policy.max_body_bytes;
    let body = &inputs.body[..inputs.body.len().min(policy.max_body_bytes)];
    let request = eval::Request {
        method: head.method.as_str(),
        uri: &uri,
        protocol,
        headers,
        body,
        remote_addr: inputs.client_ip,
        unique_id: inputs.request_id,
        // The members stand for the whole body only.
        json: inputs.json.filter(|_| !prefix),
    };
    let verdict = eval::evaluate_with(&policy.rules, &request, &policy.settings);
    Findings::from_verdict(verdict, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_request;
    use crate::waf::{ruleset, seclang};
    use std::path::Path;

    const RULES: &str = r#"
SecDefaultAction "phase:1,log,pass"
SecDefaultAction "phase:2,log,pass"
SecRule &TX:blocking_paranoia_level "@eq 0" "id:901120,phase:1,nolog,pass,setvar:tx.blocking_paranoia_level=1"
SecRule &TX:inbound_anomaly_score_threshold "@eq 0" "id:901100,phase:1,nolog,pass,setvar:tx.inbound_anomaly_score_threshold=5"
SecAction "id:900000,phase:1,nolog,pass,setvar:tx.blocking_paranoia_level=4"
SecRule ARGS "@rx (?i)union\s+select" "id:942100,phase:2,block,t:urlDecodeUni,setvar:'tx.blocking_inbound_anomaly_score=+5'"
SecRule TX:BLOCKING_PARANOIA_LEVEL "@lt 2" "id:942011,phase:2,pass,nolog,skipAfter:END-942-PL2"
SecRule ARGS "@rx select" "id:942300,phase:2,block,setvar:'tx.blocking_inbound_anomaly_score=+5'"
SecMarker END-942-PL2
SecRule REQUEST_HEADERS:User-Agent "@contains scanner" "id:913100,phase:1,block,setvar:'tx.blocking_inbound_anomaly_score=+2'"
SecRule TX:BLOCKING_INBOUND_ANOMALY_SCORE "@ge %{tx.inbound_anomaly_score_threshold}" "id:949110,phase:2,deny,log"
"#;

    fn policy(level: u8, threshold: i64, exclusions: Settings) -> WafPolicy {
        let directives = seclang::parse(RULES, Path::new("t.conf")).expect("parses");
        let rules = ruleset::compile::compile(&directives).expect("compiles");
        WafPolicy {
            rules: Arc::new(rules),
            settings: Settings {
                pinned: pinned_settings(level, threshold),
                ..exclusions
            },
            paranoia_level: level,
            max_body_bytes: 16,
            over_limit: OverLimit::Refuse,
            builtin: false,
        }
    }

    /// The findings, `None` when nothing is worth logging.
    fn run(p: &WafPolicy, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Findings> {
        let head = test_request("POST", path, headers);
        Some(inspect(
            p,
            &Inputs {
                head: &head,
                normalised_path: path.split('?').next().unwrap_or(path),
                body,
                json: None,
                client_ip: "127.0.0.1",
                request_id: "r1",
            },
        ))
        .filter(Findings::noteworthy)
    }

    #[test]
    fn the_configured_paranoia_level_wins_over_the_rules_own_setting() {
        // The rules set PL4 in a SecAction (as crs-setup.conf may); the route says PL1.
        let pl1 = policy(1, 5, Settings::default());
        assert_eq!(run(&pl1, "/?q=select", &[], b""), None);
        let pl2 = policy(2, 5, Settings::default());
        let found = run(&pl2, "/?q=select", &[], b"").expect("fires at PL2");
        assert_eq!(found.rules, [942300, 949110]);
        assert!(found.refused);
        assert_eq!(found.refusal().reason, "threat_sqli");
        assert_eq!(found.anomaly_score, 5);
    }

    #[test]
    fn the_threshold_decides_and_findings_below_it_are_still_reported() {
        let p = policy(1, 5, Settings::default());
        let found = run(&p, "/", &[("User-Agent", "scanner/1")], b"").expect("fires");
        assert_eq!(found.rules, [913100]);
        assert_eq!(found.families, ["scanner"]);
        assert!(!found.refused);
        let strict = policy(1, 2, Settings::default());
        assert!(
            run(&strict, "/", &[("User-Agent", "scanner/1")], b"")
                .expect("fires")
                .refused
        );
    }

    #[test]
    fn exclusions_remove_rules_and_targets() {
        let by_id = policy(
            1,
            5,
            Settings {
                removed_ids: vec![(942100, 942100)],
                ..Settings::default()
            },
        );
        assert_eq!(run(&by_id, "/?q=union+select", &[], b""), None);
        let by_target = policy(
            1,
            5,
            Settings {
                removed_targets: vec![((942100, 942100), "args:q".into())],
                ..Settings::default()
            },
        );
        assert_eq!(run(&by_target, "/?q=union+select", &[], b""), None);
        assert!(
            run(&by_target, "/?other=union+select", &[], b"")
                .expect("another argument is still inspected")
                .refused
        );
    }

    #[test]
    fn bodies_are_inspected_up_to_the_limit_and_say_so() {
        let p = policy(1, 5, Settings::default());
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let found = run(&p, "/", &form, b"a=union select 1").expect("fires");
        assert!(found.refused);
        assert!(!found.body_prefix);
        // The attack is past the first 16 bytes: only the prefix is read, and flagged.
        let past = run(&p, "/", &form, b"a=xxxxxxxxxxxxxxxxxx&b=union select 1").expect("flagged");
        assert!(past.rules.is_empty() && past.body_prefix && !past.refused);
        let found = run(&p, "/", &form, b"a=union select 1&b=xxxxxxxxxxxxxx").expect("fires");
        assert!(found.body_prefix);
    }

    #[test]
    fn an_injection_names_the_refusal_before_a_protocol_finding() {
        let found = Findings {
            rules: vec![920350, 942100, 941100, 949110],
            families: vec!["protocol", "sqli", "xss"],
            refused: true,
            ..Findings::default()
        };
        assert_eq!(found.refusal().reason, "threat_sqli");
        assert_eq!(found.detected_decision(), "detected_sqli");
    }

    #[test]
    fn families_follow_the_crs_numbering() {
        assert_eq!(family(942100), "sqli");
        assert_eq!(family(941110), "xss");
        assert_eq!(family(930120), "path_traversal");
        assert_eq!(family(949110), "anomaly");
        assert_eq!(family(1), "custom");
        assert_eq!(family(10_001), "control_bytes");
        assert_eq!(family(10_003), "protocol");
        assert_eq!(family(10_004), "protocol_attack");
        assert_eq!(family(10_011), "path_traversal");
        assert_eq!(family(10_020), "command_injection");
        assert_eq!(family(10_040), "xss");
        assert_eq!(family(10_050), "sqli");
        assert_eq!(family(10_099), "custom");
        assert_eq!(
            Findings::default().refusal().reason,
            "threat_detected",
            "a custom rule's refusal still has a reason"
        );
    }
}
