//! The built-in rules: the threat protection every route gets when the config has no `[waf]`
//! rule files, written in SecLang (`builtin.conf` beside this file) and compiled into the
//! binary. The same engine runs them as it runs the OWASP Core Rule Set, with the same
//! exclusions, detect mode, log fields and metrics. `portcullis rules --print` shows them;
//! an operator replaces them by naming rule files in `[waf] rules` (a copy of these among them,
//! edited, if wanted).

use super::ruleset::RuleSet;
use super::{ruleset, seclang};
use std::path::Path;

/// The rules as written.
pub const SOURCE: &str = include_str!("builtin.conf");

/// The name the rules' errors and warnings give as their file.
pub const NAME: &str = "<built-in rules>";

/// The rule ids the built-in rules use (ModSecurity leaves 1–99,999 to local rules).
pub const IDS: std::ops::RangeInclusive<u64> = 10_000..=10_099;

/// The built-in rules, compiled. An error here is a defect of the binary, not of any config:
/// the tests compile them on every build.
pub fn compile() -> Result<RuleSet, String> {
    let directives = seclang::parse(SOURCE, Path::new(NAME)).map_err(|e| e.to_string())?;
    let rules = ruleset::compile::compile(&directives).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if let Some(w) = rules.warnings.first().or(rules.gaps.first()) {
        return Err(w.clone());
    }
    Ok(rules)
}

/// One line per rule, for `portcullis rules`: id, attack family and message.
pub fn summary(rules: &RuleSet) -> Vec<(u64, String)> {
    rules
        .phase1
        .iter()
        .chain(&rules.phase2)
        .map(|r| {
            let msg = r
                .msg
                .as_ref()
                .and_then(|m| m.constant())
                .unwrap_or_default();
            (r.id, String::from_utf8_lossy(msg).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_compile_cleanly_and_use_only_their_ids() {
        let rules = compile().unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = summary(&rules).into_iter().map(|(id, _)| id).collect();
        assert!(ids.len() >= 8, "{ids:?}");
        assert!(ids.iter().all(|id| IDS.contains(id)), "{ids:?}");
    }

    /// Rules 10051 and 10052 (SQL that libinjection has no entry for) against the prose
    /// nearest their shapes: the probes are refused, the prose is not.
    #[test]
    fn sql_shapes_refuse_probes_and_pass_prose() {
        let rules = compile().unwrap_or_else(|e| panic!("{e}"));
        let denied = |value: &str| {
            let mut query = String::from("/s?q=");
            for b in value.bytes() {
                query.push_str(&format!("%{b:02X}"));
            }
            let request = crate::waf::eval::Request {
                method: "GET",
                uri: &query,
                protocol: "HTTP/1.1",
                headers: vec![("host", b"a")],
                body: b"",
                remote_addr: "127.0.0.1",
                unique_id: "t",
                json: None,
            };
            crate::waf::eval::evaluate(&rules, &request).denied_by
        };
        for (probe, rule) in [
            ("1 AND 3773=JSON_EXTRACT(CHAR(123,125),1)", 10051),
            ("1) AND GTID_SUBSET(CONCAT(0x71,1),4703)", 10051),
            ("1\") AND CASE WHEN 1=1 THEN 1 END", 10051),
            ("1 WAITFOR DELAY '0:0:5'", 10052),
            ("x;DECLARE @a NVARCHAR(99)", 10052),
            ("1';(SELECT * FROM (SELECT(SLEEP(5)))GmVx)#", 10052),
        ] {
            assert_eq!(denied(probe), Some(rule), "{probe}");
        }
        for prose in [
            "Sleep (8 hours) and exercise",
            "2 or more (see notes)",
            "version 2 and later (beta)",
            "O'Brien and Sons",
            "Ship it; execute the plan",
            "results of the benchmark (2024)",
        ] {
            assert_eq!(denied(prose), None, "{prose}");
        }
    }
}
