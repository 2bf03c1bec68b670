//! `[waf]` and each route's `waf = { … }`: the SecLang rule files are found (globs, in the
//! order written), parsed and compiled once into one rule set that every route shares; each
//! route gets its paranoia level, anomaly threshold and exclusions. A rule that cannot be
//! read or would be mis-evaluated is an error naming its file and line. Without `[waf]`, the
//! built-in rules (`waf::builtin`) are the rule set, with the same route exclusions.

use crate::checks::threat::rules::{initial_settings, pinned_settings, OverLimit, WafPolicy};
use crate::config::diagnostics::{relative_to, Errors};
use crate::config::model::{RuleSource, WafDefaults};
use crate::config::raw::{RawRouteWaf, RawRuleIds, RawTargetExclusion, RawWaf};
use crate::waf::eval::Settings;
use crate::waf::{ruleset, seclang};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bodies the rules inspect by default (ModSecurity's `SecRequestBodyNoFilesLimit` is 128 KiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 128 * 1024;

/// The rule files of `rules`, each glob expanded in name order, in the order written.
fn rule_files(e: &mut Errors, raw: &RawWaf, file: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if raw.rules.is_empty() {
        e.add(
            "waf.rules",
            "no rule files; list them, e.g. [\"/usr/share/modsecurity-crs/owasp-crs.load\"] or [\"crs/crs-setup.conf\", \"crs/rules/*.conf\"]",
        );
    }
    for (i, pattern) in raw.rules.iter().enumerate() {
        let key = format!("waf.rules[{i}]");
        let path = relative_to(file, pattern);
        let text = path.to_string_lossy().into_owned();
        if !pattern.contains(['*', '?', '[']) {
            if path.is_file() {
                files.push(path);
            } else {
                e.add(key, format!("{} is not a readable file", path.display()));
            }
            continue;
        }
        match glob::glob(&text) {
            Err(err) => e.add(key, format!("{pattern:?} is not a valid glob: {err}")),
            Ok(paths) => {
                let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                found.retain(|p| p.is_file());
                found.sort();
                if found.is_empty() {
                    e.add(key, format!("{pattern:?} matches no file"));
                }
                files.extend(found);
            }
        }
    }
    files
}

/// `942100` or `"942100-942999"` → an inclusive range.
fn rule_ids(e: &mut Errors, key: &str, raw: &RawRuleIds) -> Option<(u64, u64)> {
    let id = |text: &str| text.trim().parse::<u64>().ok().filter(|n| *n > 0);
    let range = match raw {
        RawRuleIds::One(n) if *n > 0 => Some((*n as u64, *n as u64)),
        RawRuleIds::One(_) => None,
        RawRuleIds::Range(text) => match text.split_once('-') {
            Some((a, b)) => id(a).zip(id(b)).filter(|(a, b)| a <= b),
            None => id(text).map(|n| (n, n)),
        },
    };
    if range.is_none() {
        e.add(
            key,
            "not a rule id; write a positive number (942100) or a range (\"942100-942999\")",
        );
    }
    range
}

/// Rule ids removed, and (rule ids, target) pairs removed.
type Exclusions = (Vec<(u64, u64)>, Vec<((u64, u64), String)>);

fn exclusions(
    e: &mut Errors,
    key: &str,
    rules: &[RawRuleIds],
    targets: &[RawTargetExclusion],
) -> Exclusions {
    let ids = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule_ids(e, &format!("{key}.exclude_rules[{i}]"), r))
        .collect();
    let mut removed = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let k = format!("{key}.exclude_targets[{i}]");
        let Some(range) = rule_ids(e, &format!("{k}.rule"), &t.rule) else {
            continue;
        };
        let target = t.target.trim().to_ascii_lowercase();
        let (collection, member) = match target.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (target.as_str(), None),
        };
        let known = crate::waf::ruleset::Collection::from_name(&collection.to_ascii_uppercase());
        if known.is_none() || member.is_some_and(str::is_empty) {
            e.add(
                format!("{k}.target"),
                format!(
                    "{:?} is not a rule target; write a collection and optionally a member, e.g. \"ARGS:password\" or \"REQUEST_COOKIES\"",
                    t.target
                ),
            );
            continue;
        }
        removed.push((range, target));
    }
    (ids, removed)
}

fn level(e: &mut Errors, key: &str, raw: Option<i64>, default: u8) -> u8 {
    e.count(key, raw, default as usize, 4) as u8
}

/// The built-in rules, for a config without `[waf]`. They deny on a single match (paranoia
/// level and threshold do not apply) and see each body whole, up to the route's limit.
fn builtin(e: &mut Errors) -> Option<WafDefaults> {
    let rules = match crate::waf::builtin::compile() {
        Ok(rules) => rules,
        Err(err) => {
            // A defect of this binary, not of the config; the tests compile them on every build.
            e.add(
                "waf",
                format!("the built-in rules do not compile ({err}); add [waf] rules = [...] and report this"),
            );
            return None;
        }
    };
    Some(WafDefaults {
        rules: Arc::new(rules),
        source: RuleSource::Builtin,
        paranoia_level: 1,
        anomaly_threshold: 5,
        max_body_bytes: usize::MAX,
        over_limit: OverLimit::Refuse,
        removed_ids: Vec::new(),
        removed_targets: Vec::new(),
    })
}

/// `[waf]`, or the built-in rules when the section is absent; `None` after an error.
pub(super) fn compile(e: &mut Errors, raw: Option<&RawWaf>, file: &Path) -> Option<WafDefaults> {
    let Some(raw) = raw else {
        return builtin(e);
    };
    let files = rule_files(e, raw, file);
    let paranoia_level = level(e, "waf.paranoia_level", raw.paranoia_level, 1);
    let anomaly_threshold =
        e.count("waf.anomaly_threshold", raw.anomaly_threshold, 5, 10_000) as i64;
    let max_body_bytes = e.size(
        "waf.max_body_bytes",
        raw.max_body_bytes.as_ref(),
        DEFAULT_MAX_BODY_BYTES,
    ) as usize;
    let over_limit = match raw.body_over_limit.as_deref() {
        None | Some("refuse") => OverLimit::Refuse,
        Some("scan_prefix") => OverLimit::ScanPrefix,
        Some(other) => {
            e.add(
                "waf.body_over_limit",
                format!("invalid value {other:?}; write \"refuse\" (413) or \"scan_prefix\""),
            );
            OverLimit::Refuse
        }
    };
    let (removed_ids, removed_targets) =
        exclusions(e, "waf", &raw.exclude_rules, &raw.exclude_targets);
    if files.is_empty() {
        return None;
    }
    let directives = match seclang::parse_files(&files) {
        Ok(d) => d,
        Err(err) => {
            e.add_at(&err.at.file, err.at.line, "waf.rules", err.message);
            return None;
        }
    };
    let rules = match ruleset::compile::compile(&directives) {
        Ok(r) => r,
        Err(errs) => {
            for err in errs {
                e.add_at(&err.at.file, err.at.line, "waf.rules", err.message);
            }
            return None;
        }
    };
    drop(directives);
    crate::waf::release_compile_memory();
    let mut shown = std::collections::HashSet::new();
    for w in rules.warnings.iter().filter(|w| shown.insert(*w)) {
        e.warn(crate::config::lint::waf_rules(w));
    }
    for gap in rules.gaps.iter().filter(|g| shown.insert(*g)) {
        e.warn(crate::config::lint::waf_gap(gap));
    }
    Some(WafDefaults {
        rules: Arc::new(rules),
        source: RuleSource::Files(files),
        paranoia_level,
        anomaly_threshold,
        max_body_bytes,
        over_limit,
        removed_ids,
        removed_targets,
    })
}

/// A route's policy: the gateway's rules with the route's overrides; `None` with threat
/// protection off (or after an error in `[waf]`).
pub(super) fn route_policy(
    e: &mut Errors,
    key: &str,
    defaults: Option<&WafDefaults>,
    raw: Option<&RawRouteWaf>,
    enabled: bool,
) -> Option<Arc<WafPolicy>> {
    let d = defaults?;
    let empty = RawRouteWaf::default();
    let r = raw.unwrap_or(&empty);
    let builtin = d.source == RuleSource::Builtin;
    if builtin {
        for (name, set) in [
            ("paranoia_level", r.paranoia_level.is_some()),
            ("anomaly_threshold", r.anomaly_threshold.is_some()),
        ] {
            if set {
                e.add(
                    format!("{key}.waf.{name}"),
                    "has no effect on the built-in rules, which refuse on a single match; remove it, or add [waf] rules = [...] (e.g. the OWASP Core Rule Set)",
                );
            }
        }
    }
    let paranoia_level = level(
        e,
        &format!("{key}.waf.paranoia_level"),
        r.paranoia_level,
        d.paranoia_level,
    );
    let threshold = e.count(
        &format!("{key}.waf.anomaly_threshold"),
        r.anomaly_threshold,
        d.anomaly_threshold as usize,
        10_000,
    ) as i64;
    let (ids, targets) = exclusions(
        e,
        &format!("{key}.waf"),
        &r.exclude_rules,
        &r.exclude_targets,
    );
    if !enabled {
        return None;
    }
    Some(Arc::new(WafPolicy {
        rules: d.rules.clone(),
        settings: Settings {
            pinned: pinned_settings(paranoia_level, threshold),
            initial: initial_settings(),
            removed_ids: d.removed_ids.iter().copied().chain(ids).collect(),
            removed_targets: d.removed_targets.iter().cloned().chain(targets).collect(),
        },
        paranoia_level,
        max_body_bytes: d.max_body_bytes,
        over_limit: d.over_limit,
        builtin,
    }))
}
