//! The phase loop: each rule of a phase in order, its chain, skips and markers, the disruptive
//! action that ends the transaction, the TX comparisons decided without the rule's own path,
//! and the `ctl` actions that remove rules and targets for the rest of the request.

use super::setvar::decimal;
use super::*;

/// What a `TxTest` decided.
pub(super) enum TxOutcome {
    /// The rule does not match.
    NoMatch,
    /// It matched and its match is recorded: go on after it (or where it skips to).
    Plain,
    /// The rule's own path decides (a removal may concern it, or its match does more).
    Full,
}

impl Transaction<'_> {
    /// Runs one phase; `true` when evaluation must stop (denied, allowed or engine off).
    pub(super) fn run_phase(&mut self, phase: u8, verdict: &mut Verdict) -> bool {
        let (rules, gates) = if phase == 1 {
            (&self.rules.phase1, &self.rules.gates[0])
        } else {
            (&self.rules.phase2, &self.rules.gates[1])
        };
        let mut i = 0;
        while i < rules.len() {
            if self.engine == EngineMode::Off {
                return true;
            }
            if let Some(gate) = gates.get(i) {
                // A comparison of one TX variable, decided from its small copy.
                let test = self
                    .rules
                    .tx_tests
                    .get((gate.tx_test as usize).wrapping_sub(1));
                match test.map(|t| (t, self.tx_test(t))) {
                    Some((_, TxOutcome::NoMatch)) => {
                        i += 1;
                        continue;
                    }
                    Some((t, TxOutcome::Plain)) => {
                        i = t.skip_after.map_or(i + 1, |to| to as usize);
                        continue;
                    }
                    Some((_, TxOutcome::Full)) => {}
                    None if self.nothing_passes(gate) => {
                        i += 1;
                        continue;
                    }
                    None => {}
                }
            }
            let rule = &rules[i];
            i += 1;
            if self.is_removed(rule) {
                continue;
            }
            if !self.rule_matches(rule, true) {
                continue;
            }
            if rule.log {
                verdict.matched.push(rule.id);
            }
            let mut link = Some(rule);
            while let Some(r) = link {
                for c in &r.ctl {
                    self.apply_ctl(c);
                }
                link = r.chain.as_deref();
            }
            match rule.disruptive {
                Disruptive::Deny if self.engine == EngineMode::On => {
                    verdict.denied_by = Some(rule.id);
                    return true;
                }
                Disruptive::Allow if self.engine == EngineMode::On => return false,
                _ => {}
            }
            if let Some(to) = rule.skip_after {
                i = to;
            }
        }
        false
    }

    /// A rule that compares one TX variable, decided without reading the rule where that
    /// gives the same result: the variable is read by its number, the argument was read when
    /// the rule set was compiled. A plain match (`TxTest::plain`) is recorded here.
    pub(super) fn tx_test(&mut self, t: &TxTest) -> TxOutcome {
        // Removed rules and targets are the rule's own path.
        let within = |(a, b): &(u64, u64)| (*a..=*b).contains(&t.id);
        if self.removed_by_tag_for_tx
            || self.removed_ids.iter().any(within)
            || self
                .removed_targets_by_id
                .iter()
                .any(|(ids, _)| within(ids))
        {
            return TxOutcome::Full;
        }
        let found = self.s.tx.numbered_key_value(t.number);
        let mut digits = [0u8; 20];
        let (value, n) = match (t.count, found) {
            (true, _) => {
                let n = i64::from(found.is_some());
                (decimal(n as u64, &mut digits), n)
            }
            (false, Some((_, v))) => (v, crate::waf::operator::stoi(v)),
            // No member: no match, negated or not.
            (false, None) => return TxOutcome::NoMatch,
        };
        let argument = match t.argument {
            TxArgument::Number(a) => a,
            TxArgument::Tx(j) => self.s.tx.numbered(j).map_or(0, crate::waf::operator::stoi),
        };
        if t.comparison.holds(n, argument) == t.negated {
            return TxOutcome::NoMatch;
        }
        if !t.plain {
            return TxOutcome::Full;
        }
        // As `rule_matches` records the one match of a rule without effects of its own.
        let name = |n: &mut String| match (t.count, found) {
            (true, _) => n.push_str("&TX"),
            (false, member) => {
                n.push_str("TX:");
                n.push_str(member.map_or("", |(m, _)| m));
            }
        };
        self.s.matched_vars.clear();
        self.s.matched_vars.push_with(name, value);
        self.s.matched_var.clear();
        self.s.matched_var.push_with(name, value);
        TxOutcome::Plain
    }

    pub(super) fn is_removed(&self, rule: &Rule) -> bool {
        self.removed_ids
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&rule.id))
            || self
                .removed_tags
                .iter()
                .any(|(bit, tag)| carries(rule, *bit, tag))
    }

    /// A tag's bit in the rules' `ctl_tags`, if it has one.
    pub(super) fn tag_bit(&self, tag: &str) -> Option<u64> {
        let i = self.rules.ctl_tags.iter().position(|t| t == tag)?;
        Some(1 << i)
    }

    pub(super) fn apply_ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RuleRemoveById(ranges) => self.removed_ids.extend(ranges.iter().copied()),
            Ctl::RuleRemoveByTag(tag) => {
                let bit = self.tag_bit(tag);
                self.removed_tags.push((bit, tag.clone()));
                self.removed_by_tag_for_tx = true;
            }
            Ctl::RuleRemoveTargetById(ids, target) => {
                self.removed_targets_by_id.push((*ids, target.clone()))
            }
            Ctl::RuleRemoveTargetByTag(tag, target) => {
                // A removed target whose collection is not TX cannot be a TxTest's.
                let collection = target.split_once(':').map_or(target.as_str(), |(c, _)| c);
                if collection.eq_ignore_ascii_case("tx") {
                    self.removed_by_tag_for_tx = true;
                }
                self.removed_targets_by_tag
                    .push((self.tag_bit(tag), tag.clone(), target.clone()))
            }
            Ctl::RequestBodyProcessor(p) => {
                self.body_processor = Some(p.clone());
                self.one(
                    Collection::ReqbodyProcessor,
                    "REQBODY_PROCESSOR",
                    p.as_str(),
                );
            }
            Ctl::ForceRequestBodyVariable(on) => self.force_body_variable = *on,
            Ctl::RuleEngine(mode) => self.engine = *mode,
            Ctl::Ignored(_) => {}
        }
    }
}

/// `ctl:ruleRemoveTarget…` removes `args:password` (that member) or `args` (all of it); the
/// target is in lower case.
pub(super) fn removes(target: &str, collection: &str, member: &str) -> bool {
    match target.split_once(':') {
        Some((c, m)) => c.eq_ignore_ascii_case(collection) && m.eq_ignore_ascii_case(member),
        None => target.eq_ignore_ascii_case(collection),
    }
}

pub(super) fn selects(selector: &TargetSelector, name: &str) -> bool {
    match selector {
        TargetSelector::Key(k) => name.eq_ignore_ascii_case(k),
        TargetSelector::Prefix(p) => name
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        TargetSelector::Regex(re) => re.is_match(name.as_bytes()),
    }
}

/// Whether a rule carries a tag: by its bit when the tag has one.
pub(super) fn carries(rule: &Rule, bit: Option<u64>, tag: &str) -> bool {
    match bit {
        Some(bit) => rule.ctl_tags & bit != 0,
        None => rule.tags.iter().any(|t| t == tag),
    }
}
