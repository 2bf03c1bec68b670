//! The transaction's side of the prefilter (`waf::prefilter`): which screen a request uses, which
//! members of a collection pass it after a chain, and whether a gated rule can be skipped
//! because nothing passes. Answers are kept beside each value and each transformed step.

use super::*;

/// The slot of the members of collection `c` passing a part of the screen after effective
/// chain `reduced` (two parts a chain: regexes, phrases).
pub(super) fn passing_slot(reduced: u32, c: Collection, part: ScreenPart) -> usize {
    let part = usize::from(part == ScreenPart::Phrases);
    (reduced as usize * 2 + part) * Collection::COUNT + c as usize
}

impl Transaction<'_> {
    /// Whether a gated rule's collections have no member passing the screen after its
    /// chain (false for a rule without a gate).
    pub(super) fn nothing_passes(&self, gate: &Gate) -> bool {
        if gate.collections == 0 || gate.level > self.screen_level() {
            return false;
        }
        // Gates of the same class ask the same question of the same collections.
        let memo = self.s.gate_answers.get(gate.class as usize);
        let now = self.s.generation << 1;
        if let Some(known) = memo.map(Cell::get).filter(|k| k & !1 == now) {
            return known & 1 == 1;
        }
        let nothing = self.nothing_passes_now(gate);
        if let Some(m) = memo {
            m.set(now | u64::from(nothing));
        }
        nothing
    }

    pub(super) fn nothing_passes_now(&self, gate: &Gate) -> bool {
        let Some(chain) = self.rules.chains.get(gate.chain_id as usize) else {
            return false;
        };
        let mut bits = gate.collections;
        while bits != 0 {
            let Some(&c) = Collection::ALL.get(bits.trailing_zeros() as usize) else {
                return false;
            };
            bits &= bits - 1;
            let all = self.s.classes.get(c as usize).copied().unwrap_or(u32::MAX);
            if crate::waf::transform::class::lacks(all, gate.needs)
                && chain.effective(all).is_none()
            {
                continue;
            }
            if self.passing_members(chain, c, gate.screen).len != 0 {
                return false;
            }
        }
        true
    }

    /// The paranoia level of the screen this transaction uses, chosen when first asked: the
    /// screen of the rules at level 1 (and untagged ones) when the request runs at level 1,
    /// else the whole one (4). A screened rule above it runs its own operator on every value
    /// instead: the choice changes the cost, never a result.
    pub(super) fn screen_level(&self) -> u8 {
        let level = self.screen_level.get();
        if level != 0 {
            return level;
        }
        let running = ["detection_paranoia_level", "paranoia_level"]
            .iter()
            .find_map(|k| self.s.tx.get(k))
            .map(crate::waf::operator::stoi);
        let level = match (running, &self.rules.screen_pl1) {
            (Some(l), Some(_)) if l <= 1 => 1,
            _ => 4,
        };
        self.screen_level.set(level);
        level
    }

    pub(super) fn screen(&self) -> Option<&crate::waf::prefilter::Screen> {
        match self.screen_level() {
            1 => self.rules.screen_pl1.as_ref(),
            _ => self.rules.screen.as_ref(),
        }
    }

    /// The part of this transaction's screen that stands for a rule (`Off` for a rule above
    /// its level).
    pub(super) fn part(&self, rule: &Rule) -> ScreenPart {
        // Asked only for a screened rule: the level is chosen once the rules that set it ran.
        match rule.screen != ScreenPart::Off && rule.level <= self.screen_level() {
            true => rule.screen,
            false => ScreenPart::Off,
        }
    }

    /// Whether a request value, after a chain, passes a part of the screen (in any of its
    /// steps).
    pub(super) fn value_screened(
        &self,
        value_key: u64,
        value: &[u8],
        chain: &Chain,
        part: ScreenPart,
    ) -> bool {
        let steps = self.transformed(Some(value_key), value, chain);
        steps
            .indices()
            .any(|n| self.step_screened(n, value_key, value, part))
    }

    /// Whether step `n` of a request value passes a part of the screen.
    pub(super) fn step_screened(
        &self,
        n: usize,
        value_key: u64,
        value: &[u8],
        part: ScreenPart,
    ) -> bool {
        let arena = self.s.arena.borrow();
        match arena.changed(n) {
            Some((step, changed)) => self.changed_screened(step, changed, part),
            None => self.screened(Some(value_key | ORIGINAL), value, part),
        }
    }

    /// The members of collection `c` that pass the screen after `chain` (known once per
    /// request and collection content; usually none). Chains that reduce to the same
    /// effective chain for every byte class the collection holds reduce to the same one
    /// for each of its members (a transformation that leaves them all leaves each), so they
    /// share the answer.
    pub(super) fn passing_members(&self, chain: &Chain, c: Collection, part: ScreenPart) -> Span {
        let classes = self.s.classes.get(c as usize).copied().unwrap_or(0);
        let reduced = chain
            .effective(classes)
            .map_or(self.rules.effective_chains, |(_, id)| id);
        let slot = passing_slot(reduced, c, part);
        let generation = self.s.generations.get(c as usize).copied().unwrap_or(0);
        if let Some(known) = self.s.passing.borrow().get(slot) {
            if known.generation == generation {
                return known.members;
            }
        }
        let first = self.s.arena.borrow().passing.len();
        if let Some(values) = self.s.collections.get(c as usize) {
            for (i, (_, value)) in values.as_slice().iter().enumerate() {
                // Screening transforms (and adds to the arena) before the index is added.
                if self.value_screened(member_key(c, i), value, chain, part) {
                    self.s.arena.borrow_mut().passing.push(i as u32);
                }
            }
        }
        let members = Span {
            first: first as u32,
            len: (self.s.arena.borrow().passing.len() - first) as u32,
        };
        let mut known = self.s.passing.borrow_mut();
        if known.len() <= slot {
            known.resize(slot + 1, Passing::default());
        }
        if let Some(k) = known.get_mut(slot) {
            *k = Passing {
                generation,
                members,
            };
        }
        members
    }

    /// A collection changed: what was known of its members passing the screen is not.
    pub(super) fn forget_screening(&mut self, c: Collection) {
        self.s.generation += 1;
        if let Some(g) = self.s.generations.get_mut(c as usize) {
            *g = self.s.generation;
        }
    }

    /// Whether a part of the rule set's screen matches a transformed step (kept in its
    /// step).
    pub(super) fn changed_screened(&self, step: &Step, value: &[u8], part: ScreenPart) -> bool {
        let Some(screen) = self.screen() else {
            return true;
        };
        step.screened.get_or(part, || screen.is_match(part, value))
    }

    /// Whether a part of the rule set's screen matches a value (kept beside a request value
    /// as it is).
    pub(super) fn screened(&self, key: Option<u64>, value: &[u8], part: ScreenPart) -> bool {
        let Some(screen) = self.screen() else {
            return true;
        };
        match key
            .filter(|k| k & 0xffff_ffff == ORIGINAL)
            .and_then(|k| self.known(k))
        {
            Some(known) => known
                .screened
                .get_or(part, || screen.is_match_with(part, value, known.classes)),
            None => screen.is_match(part, value),
        }
    }
}
