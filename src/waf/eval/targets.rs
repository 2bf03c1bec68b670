//! The target walk: a rule's operator over every selected value of its targets after its
//! transformations, only over the values the prefilter lets through for a screened rule, with
//! TX variables read by their number; and the matches it records.

use super::phases::{carries, removes, selects};
use super::setvar::{counted, decimal};
use super::variables::collection_name;
use super::*;
use crate::waf::transform::class;

impl Transaction<'_> {
    /// A rule and the rest of its chain. MATCHED_VARS collects the matches of the whole chain
    /// (a later link reads what the earlier ones matched).
    pub(super) fn rule_matches(&mut self, rule: &Rule, chain_start: bool) -> bool {
        self.rule_id = rule.id;
        if chain_start {
            self.s.matched_vars.clear();
        }
        self.find_hits(rule);
        if self.s.hits.get_mut().matched.is_empty() {
            return false;
        }
        // The hits are read while the rule's effects change the transaction; their buffers
        // go back before the next link looks for its own.
        let hits = std::mem::take(self.s.hits.get_mut());
        let matched = !hits.matched.is_empty();
        // Each match's effects, in order: capture, MATCHED_VAR(S), the rule's setvars.
        let mut captured = hits.captures.iter().peekable();
        for (i, (name, value)) in hits.matched.as_slice().iter().enumerate() {
            if let Some((_, groups)) = captured.next_if(|(at, _)| *at == i) {
                for (n, group) in groups.iter().enumerate() {
                    match n < CAPTURE_KEYS {
                        // `tx.0`…`tx.9` are numbered 0…9 (`ruleset::number_tx_names`).
                        true => {
                            let slot = self.s.tx.numbered_slot(n as u32);
                            slot.clear();
                            slot.extend_from_slice(group);
                        }
                        false => self.s.tx.set(&n.to_string(), group),
                    }
                }
            }
            self.s.matched_vars.push(name, value);
            self.s.matched_var.clear();
            self.s.matched_var.push(name, value);
            for s in &rule.setvars {
                self.setvar(s);
            }
        }
        *self.s.hits.get_mut() = hits;
        if !matched {
            return false;
        }
        match &rule.chain {
            Some(next) => self.rule_matches(next, false),
            None => true,
        }
    }

    /// Every match of a rule over its targets, read without copying the request: values are
    /// borrowed, and a name is formatted only for a value that matched. (The effects of a
    /// match are applied after all of the rule's values are tested, so a rule's own `setvar`
    /// is not seen by its later values; CRS rules never rely on that.)
    pub(super) fn find_hits(&self, rule: &Rule) {
        self.s.hits.borrow_mut().clear();
        let Some(chain) = self.rules.chains.get(rule.chain_id as usize) else {
            return;
        };
        // Most rules look for attacks that an ordinary request does not hold: such a rule only
        // visits the members of its collections that pass the screen (usually none).
        let part = self.part(rule);
        let screened_only = part != ScreenPart::Off && !rule.negated;
        // A value that the chain leaves as it is and that holds no byte of a class the
        // operator needs cannot match: it is passed over, and so is a whole collection of
        // such values.
        let gated = rule.needs != class::ANY && !rule.negated;
        let cannot_match =
            |classes: u32| class::lacks(classes, rule.needs) && chain.effective(classes).is_none();
        let test = |value_key: Option<u64>, collection: &str, member: &str, value: &[u8]| {
            // `ANY` (no shortcut) where nothing reads them.
            let classes = match gated || rule.operator.reads_classes() {
                true => self.byte_classes(value_key, value),
                false => class::ANY,
            };
            if gated && cannot_match(classes) {
                return;
            }
            let steps = self.transformed(value_key, value, chain);
            for n in steps.indices() {
                // Operators and `hit` read the arena but never add to it.
                let arena = self.s.arena.borrow();
                let changed = arena.changed(n);
                let candidate = changed.map_or(value, |(_, bytes)| bytes);
                // A value the screen does not match cannot match a screened rule's regex.
                let passes = || match changed {
                    Some((step, bytes)) => self.changed_screened(step, bytes, part),
                    None => self.screened(value_key.map(|k| k | ORIGINAL), value, part),
                };
                let hit = match (part != ScreenPart::Off && !passes(), changed) {
                    (true, _) => None,
                    (false, None) => {
                        rule.operator
                            .test_with_classes(candidate, classes, self, rule.capture)
                    }
                    (false, Some(_)) => rule.operator.test(candidate, self, rule.capture),
                };
                let captures = match (hit, rule.negated) {
                    (Some(m), false) => m.captures,
                    (None, true) => Vec::new(),
                    _ => continue,
                };
                self.hit(collection, member, candidate, captures);
            }
        };
        if rule.targets.is_empty() {
            // SecAction: one empty value, so that its unconditional match runs once.
            test(None, "", "", b"");
            return;
        }
        // Targets removed from this rule by a ctl or the route's exclusions (usually none).
        let none = self.removed_targets_by_id.is_empty() && self.removed_targets_by_tag.is_empty();
        if none && rule.exclusions.is_empty() && chain.transformations.is_empty() {
            if let [only] = rule.targets.as_slice() {
                if self.tx_variable(rule, only) {
                    return;
                }
            }
        }
        let removed: Vec<&str> = if none {
            Vec::new()
        } else {
            self.removed_targets_by_id
                .iter()
                .filter(|((a, b), _)| (*a..=*b).contains(&rule.id))
                .map(|(_, t)| t.as_str())
                .chain(
                    self.removed_targets_by_tag
                        .iter()
                        .filter(|(bit, tag, _)| carries(rule, *bit, tag))
                        .map(|(_, _, t)| t.as_str()),
                )
                .collect()
        };
        for target in &rule.targets {
            let collection = collection_name(target);
            if gated && !target.count && target.collection.is_request() {
                let all = self.s.classes.get(target.collection as usize);
                if all.is_some_and(|all| cannot_match(*all)) {
                    continue;
                }
            }
            if target.count {
                let mut n = 0usize;
                self.for_each_member(target, &mut |_, _, _| n += 1);
                let (mut name, mut digits) = ([0u8; 48], [0u8; 20]);
                test(
                    None,
                    counted(&mut name, collection),
                    "",
                    decimal(n as u64, &mut digits),
                );
                continue;
            }
            // A named member (`REQUEST_HEADERS:Connection`) is screened on its own; a whole
            // collection through the list of its members that pass after this chain.
            let named = matches!(target.selector, Some(TargetSelector::Key(_)));
            if screened_only && named && target.collection.is_request() {
                self.for_each_member(target, &mut |key, member, value| {
                    let passes = key.is_none_or(|k| self.value_screened(k, value, chain, part));
                    let excluded = rule.exclusions.iter().any(|e| {
                        e.collection == target.collection
                            && e.selector.as_ref().is_none_or(|s| selects(s, member))
                    }) || removed.iter().any(|t| removes(t, collection, member));
                    if passes && !excluded {
                        test(key, collection, member, value);
                    }
                });
                continue;
            }
            if screened_only && target.collection.is_request() {
                let passing = self.passing_members(chain, target.collection, part);
                let Some(values) = self.s.collections.get(target.collection as usize) else {
                    continue;
                };
                for n in passing.indices() {
                    let Some(i) = self.s.arena.borrow().passing.get(n).copied() else {
                        continue;
                    };
                    let Some((member, value)) = values.as_slice().get(i as usize) else {
                        continue;
                    };
                    let selected = target.selector.as_ref().is_none_or(|s| selects(s, member));
                    let excluded = rule.exclusions.iter().any(|e| {
                        e.collection == target.collection
                            && e.selector.as_ref().is_none_or(|s| selects(s, member))
                    }) || removed.iter().any(|t| removes(t, collection, member));
                    if selected && !excluded {
                        test(
                            Some(member_key(target.collection, i as usize)),
                            collection,
                            member,
                            value,
                        );
                    }
                }
                continue;
            }
            self.for_each_member(target, &mut |key, member, value| {
                let excluded = rule.exclusions.iter().any(|e| {
                    e.collection == target.collection
                        && e.selector.as_ref().is_none_or(|s| selects(s, member))
                }) || removed.iter().any(|t| removes(t, collection, member));
                if !excluded {
                    test(key, collection, member, value);
                }
            });
        }
    }

    /// A rule that reads one TX variable as it is (`TX:name` or `&TX:name`, no
    /// transformation): the operator runs on its value, found by name, without the walk over
    /// members and the transformation cache that other targets go through. The paranoia-level
    /// gates, the CRS set-up rules and the scoring rules are such (~120 of the ~160 rules a
    /// request at level 1 visits). `false` for any other target (nothing done).
    pub(super) fn tx_variable(&self, rule: &Rule, target: &Target) -> bool {
        let (Collection::Tx, Some(TargetSelector::Key(key))) =
            (target.collection, &target.selector)
        else {
            return false;
        };
        let found = match target.tx_number {
            Some(i) => self.s.tx.numbered_key_value(i),
            None => self.s.tx.get_key_value(key.as_str()),
        };
        let (mut name, mut digits) = ([0u8; 48], [0u8; 20]);
        let collection = collection_name(target);
        let (collection, member, value) = match (target.count, found) {
            (true, _) => (
                counted(&mut name, collection),
                "",
                decimal(u64::from(found.is_some()), &mut digits),
            ),
            (false, Some((member, value))) => (collection, member, value),
            (false, None) => return true,
        };
        let captures = match (rule.operator.test(value, self, rule.capture), rule.negated) {
            (Some(m), false) => m.captures,
            (None, true) => Vec::new(),
            _ => return true,
        };
        self.hit(collection, member, value, captures);
        true
    }

    /// Records a match: its name, the value and the regex groups.
    pub(super) fn hit(&self, collection: &str, member: &str, value: &[u8], captures: Vec<Vec<u8>>) {
        let mut hits = self.s.hits.borrow_mut();
        let name = |n: &mut String| {
            n.push_str(collection);
            if !member.is_empty() {
                n.push(':');
                n.push_str(member);
            }
        };
        hits.matched.push_with(name, value);
        if !captures.is_empty() {
            let at = hits.matched.as_slice().len().saturating_sub(1);
            hits.captures.push((at, captures));
        }
    }
}
