//! Indexing a compiled rule set for the evaluator: transformation chains shared by rules and
//! their effective chains numbered, `ctl` tags marked, TX names numbered, the prefilter's
//! screens built, and each rule's gate or TX test.

use super::*;
use crate::waf::operator::Part;
use crate::waf::prefilter::build::{build_screen, gate};
use crate::waf::scratch::TxNames;
use std::collections::HashMap;

/// Chains of up to this many transformations have their effective chains tabulated.
const TABULATED: usize = 10;

/// Number the effective chains: every sub-list of a chain's transformations (with its
/// `multiMatch`) gets one id, the same wherever the same list comes up.
pub(super) fn number_effective_chains(chains: &mut [Chain]) -> u32 {
    let mut ids: HashMap<(Vec<Transformation>, bool), u32> = HashMap::new();
    let mut intern = |list: Vec<Transformation>, multi: bool| {
        let next = ids.len() as u32;
        *ids.entry((list, multi)).or_insert(next)
    };
    for chain in chains.iter_mut() {
        let n = chain.transformations.len();
        if n > TABULATED {
            chain.own = intern(chain.transformations.clone(), chain.multi_match);
            continue;
        }
        chain.effective = (0..1u32 << n)
            .map(|mask| {
                let list = chain
                    .transformations
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, t)| *t)
                    .collect();
                intern(list, chain.multi_match)
            })
            .collect();
    }
    ids.len() as u32
}

/// Give every rule (and chain link) its chain id and `RegexSet` slot, and build the sets.
pub(super) fn index_chains(set: &mut RuleSet) {
    struct Index {
        ids: HashMap<(Vec<Transformation>, bool), u32>,
        chains: Vec<Chain>,
    }
    fn visit(rule: &mut Rule, index: &mut Index) {
        let key = (rule.transformations.clone(), rule.multi_match);
        let id = match index.ids.get(&key) {
            Some(id) => *id,
            None => {
                let id = index.chains.len() as u32;
                let touches = rule.transformations.iter().fold(0u32, |acc, t| {
                    let touches = t.touches();
                    if touches == crate::waf::transform::class::ANY
                        || acc == crate::waf::transform::class::ANY
                    {
                        crate::waf::transform::class::ANY
                    } else {
                        acc | touches
                    }
                });
                index.chains.push(Chain {
                    transformations: rule.transformations.clone(),
                    multi_match: rule.multi_match,
                    touches,
                    effective: Vec::new(),
                    own: 0,
                });
                index.ids.insert(key, id);
                id
            }
        };
        rule.chain_id = id;
        if let Some(next) = rule.chain.as_deref_mut() {
            visit(next, index);
        }
    }
    let mut index = Index {
        ids: HashMap::new(),
        chains: Vec::new(),
    };
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        visit(rule, &mut index);
    }
    set.effective_chains = number_effective_chains(&mut index.chains);
    set.chains = index.chains;
    mark_ctl_tags(set);
    number_tx_names(set);
    build_screen(set);
    let mut classes = Vec::new();
    let mut tests = Vec::new();
    set.gates = [
        gates(&set.phase1, &mut classes, &set.tx_names, &mut tests),
        gates(&set.phase2, &mut classes, &set.tx_names, &mut tests),
    ];
    set.tx_tests = tests;
    set.gate_classes = classes.len() as u32;
}

/// The `TxTest` of a rule whose first link compares one TX variable as it is (no
/// transformation, no exclusion) with a constant or one TX variable.
fn tx_test(rule: &Rule, names: &TxNames) -> Option<TxTest> {
    let [target] = rule.targets.as_slice() else {
        return None;
    };
    let number = target.tx_number?;
    if !rule.transformations.is_empty() || !rule.exclusions.is_empty() {
        return None;
    }
    let Operator::Compare(comparison, argument) = &rule.operator else {
        return None;
    };
    let argument = match (argument.constant(), argument.parts()) {
        (Some(c), _) => TxArgument::Number(crate::waf::operator::stoi(c)),
        (None, [Part::Macro { collection, key }]) if collection == "TX" => {
            TxArgument::Tx(names.number(key)?)
        }
        _ => return None,
    };
    Some(TxTest {
        id: rule.id,
        number,
        count: target.count,
        negated: rule.negated,
        comparison: *comparison,
        argument,
        plain: rule.setvars.is_empty()
            && rule.ctl.is_empty()
            && rule.chain.is_none()
            && !rule.log
            && rule.disruptive == Disruptive::Pass,
        skip_after: match rule.skip_after {
            Some(to) => Some(u32::try_from(to).ok()?),
            None => None,
        },
    })
}

/// Numbers the TX names that rules read (`TX:name`) or set (`setvar:tx.name`) by a constant
/// name, and the regex groups' `tx.0`…`tx.9`.
fn number_tx_names(set: &mut RuleSet) {
    fn number(rule: &mut Rule, names: &mut TxNames) {
        for t in rule.targets.iter_mut().chain(rule.exclusions.iter_mut()) {
            if let (Collection::Tx, Some(TargetSelector::Key(k))) = (t.collection, &t.selector) {
                t.tx_number = Some(names.intern(k));
            }
        }
        // A comparison with one TX variable (`@ge %{tx.threshold}`): `TxTest::argument`.
        if let Operator::Compare(_, a) = &rule.operator {
            if let [Part::Macro { collection, key }] = a.parts() {
                if collection == "TX" {
                    names.intern(key);
                }
            }
        }
        for s in &mut rule.setvars {
            let key = s.name.constant().and_then(|n| n.strip_prefix(b"tx."));
            s.tx_number = key
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(|k| names.intern(k));
        }
        if let Some(next) = rule.chain.as_deref_mut() {
            number(next, names);
        }
    }
    let mut names = TxNames::default();
    for n in 0..10 {
        names.intern(&n.to_string());
    }
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        number(rule, &mut names);
    }
    set.tx_names = std::sync::Arc::new(names);
}

/// Gathers the tags that `ctl` actions remove rules or targets by, and marks each rule (each
/// link of a chain on its own, as each is evaluated with its own tags) with those it carries.
fn mark_ctl_tags(set: &mut RuleSet) {
    fn gather(rule: &Rule, tags: &mut Vec<String>) {
        for c in &rule.ctl {
            if let Ctl::RuleRemoveByTag(t) | Ctl::RuleRemoveTargetByTag(t, _) = c {
                if !tags.contains(t) && tags.len() < 64 {
                    tags.push(t.clone());
                }
            }
        }
        if let Some(next) = rule.chain.as_deref() {
            gather(next, tags);
        }
    }
    fn mark(rule: &mut Rule, tags: &[String]) {
        rule.ctl_tags = tags
            .iter()
            .enumerate()
            .filter(|(_, t)| rule.tags.contains(t))
            .fold(0, |bits, (i, _)| bits | 1 << i);
        if let Some(next) = rule.chain.as_deref_mut() {
            mark(next, tags);
        }
    }
    let mut tags = Vec::new();
    for rule in set.phase1.iter().chain(&set.phase2) {
        gather(rule, &mut tags);
    }
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        mark(rule, &tags);
    }
    set.ctl_tags = tags;
}

/// Each rule's gate: a `TxTest` for a rule that compares one TX variable (added to `tests`),
/// else the prefilter's gate (`prefilter::build::gate`).
fn gates(
    rules: &[Rule],
    classes: &mut Vec<(u64, u32, ScreenPart, u32)>,
    names: &TxNames,
    tests: &mut Vec<TxTest>,
) -> Vec<Gate> {
    rules
        .iter()
        .map(|rule| match tx_test(rule, names) {
            Some(test) => {
                tests.push(test);
                Gate {
                    tx_test: tests.len() as u32,
                    ..Gate::default()
                }
            }
            None => gate(rule, classes),
        })
        .collect()
}
