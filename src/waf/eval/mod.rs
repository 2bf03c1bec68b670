//! Running a compiled rule set on one request, as ModSecurity 3 does: phase 1 on the request
//! line and headers, then the body is read into arguments (by the processor a phase-1 rule
//! may have chosen), then phase 2. A rule tests each value of each target after its
//! transformations; every match runs the rule's `setvar`s (ModSecurity's "independent"
//! actions), and once the whole chain has matched, its `ctl`s, disruptive action and
//! `skipAfter` apply.
//!
//! One file per job, as Coraza splits its engine: the scratch arena (`arena`), body processors
//! (`body`), request variables (`variables`), the phase loop and `ctl` (`phases`), the
//! transformation cache (`cache`), the target walk (`targets`) and its use of the prefilter
//! (`screened`), and `setvar` (`setvar`). They are `impl Transaction` blocks over the one
//! transaction type defined here.

mod arena;
mod body;
mod cache;
mod phases;
mod processor;
mod screened;
mod setvar;
mod targets;
mod variables;

pub use processor::body_processor;

use super::operator::{Argument, Macros};
use super::prefilter::{Answers, ScreenPart};
use super::ruleset::{
    Chain, Collection, Ctl, Disruptive, EngineMode, Gate, Rule, RuleSet, SetOp, Target,
    TargetSelector, TxArgument, TxTest,
};
use super::scratch::Pairs;
use super::transform::Transformation;
use arena::*;
use std::borrow::Cow;
use std::cell::Cell;

/// What the rules see of a request.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// As received: path and query (`/a%20b?x=1`).
    pub uri: &'a str,
    /// `HTTP/1.1`
    pub protocol: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
    pub remote_addr: &'a str,
    pub unique_id: &'a str,
    /// The body's JSON members, when the gateway parsed the body already (a validated JSON
    /// body, inspected whole): read by the JSON processor instead of the body.
    pub json: Option<&'a crate::waf::json::Members>,
}

/// The outcome: the rule that refused the request (if one did), and every logging rule (not
/// `nolog`) that matched in full, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub denied_by: Option<u64>,
    pub matched: Vec<u64>,
    /// `tx.blocking_inbound_anomaly_score` at the end (CRS's score), if set.
    pub anomaly_score: i64,
}

type Values = Vec<(String, Vec<u8>)>;

/// Called with each member of a target: its cache key (if any), name and value.
type MemberVisitor<'f> = dyn FnMut(Option<u64>, &str, &[u8]) + 'f;

/// The cache key of a request value: its collection and index.
fn member_key(c: Collection, index: usize) -> u64 {
    ((c as u64) << 56) | ((index as u64 & 0xff_ffff) << 32)
}

/// Cache keys: collection in bits 56-63, member index 32-55, chain 8-31, step 0-7; the chain
/// field all ones for a value as it is.
const ORIGINAL: u64 = 0xff_ffff << 8;

/// One transaction's collections and state.
struct Transaction<'r> {
    rules: &'r RuleSet,
    s: Box<Scratch>,
    pinned: &'r [(String, Vec<u8>)],
    removed_ids: Vec<(u64, u64)>,
    /// Tags whose rules are removed, with their bit in `RuleSet::ctl_tags` (if they have
    /// one; else the rule's tags are searched).
    removed_tags: Vec<(Option<u64>, String)>,
    removed_targets_by_id: Vec<((u64, u64), String)>,
    removed_targets_by_tag: Vec<(Option<u64>, String, String)>,
    /// A `ctl` removed rules by tag, or a TX target by tag: known when it is applied, so
    /// that a `TxTest` (which does not read the rule's tags) leaves its rule to the rule's own
    /// path without looking through the removals on every visit.
    removed_by_tag_for_tx: bool,
    engine: EngineMode,
    body_processor: Option<String>,
    force_body_variable: bool,
    /// The rule being evaluated, for `%{rule.id}`.
    rule_id: u64,
    /// The paranoia level of the screen in use (`screen_level`; 0 until chosen).
    screen_level: Cell<u8>,
}

/// How many regex groups are kept as numbered TX variables (`%{tx.0}` … `%{tx.9}`).
const CAPTURE_KEYS: usize = 10;

/// What the gateway's configuration sets for one route before the rules run.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// TX variables set before phase 1 that no rule may change (`paranoia_level`,
    /// `anomaly_threshold`: the gateway's config wins over `crs-setup.conf`). Names in
    /// lower case.
    pub pinned: Vec<(String, Vec<u8>)>,
    /// TX variables set before phase 1 that the rules may change (defaults of the gateway's
    /// own, such as reading untyped bodies as forms).
    pub initial: Vec<(String, Vec<u8>)>,
    /// Rules removed, as by `ctl:ruleRemoveById` before the first rule.
    pub removed_ids: Vec<(u64, u64)>,
    /// Targets removed from rules, as by `ctl:ruleRemoveTargetById` (`args:password`, lower
    /// case).
    pub removed_targets: Vec<((u64, u64), String)>,
}

/// Evaluate the rule set on a request.
pub fn evaluate(rules: &RuleSet, request: &Request) -> Verdict {
    evaluate_with(rules, request, &Settings::default())
}

/// Evaluate the rule set on a request with a route's settings.
pub fn evaluate_with(rules: &RuleSet, request: &Request, settings: &Settings) -> Verdict {
    let mut t = Transaction {
        rules,
        s: Scratch::take(rules),
        pinned: &settings.pinned,
        removed_ids: settings.removed_ids.clone(),
        removed_tags: Vec::new(),
        removed_targets_by_id: settings.removed_targets.clone(),
        removed_targets_by_tag: Vec::new(),
        removed_by_tag_for_tx: false,
        engine: EngineMode::On,
        body_processor: None,
        force_body_variable: false,
        rule_id: 0,
        screen_level: Cell::new(0),
    };
    for (name, value) in settings.initial.iter().chain(&settings.pinned) {
        t.s.tx.set(name, value);
    }
    t.read_head(request);
    let mut verdict = Verdict::default();
    for phase in [1, 2] {
        if phase == 2 {
            t.read_body(request);
        }
        if t.run_phase(phase, &mut verdict) {
            break;
        }
    }
    // CRS v4's score, or CRS v3's.
    verdict.anomaly_score =
        t.s.tx
            .get("blocking_inbound_anomaly_score")
            .or_else(|| t.s.tx.get("anomaly_score"))
            .map_or(0, super::operator::stoi);
    t.s.give_back();
    verdict
}

#[cfg(test)]
mod tests;
