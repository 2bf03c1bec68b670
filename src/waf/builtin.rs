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
}
