//! The transformation cache: a value after a chain's transformations is computed once per
//! request and effective chain (chains that agree on a value's byte classes share it), and the
//! byte classes of every request value are known before any rule runs.

use super::*;

impl Transaction<'_> {
    /// A value after a chain's transformations, computed once per request and effective
    /// chain: request values (those with a key) keep their transformed entries in a list
    /// beside them; TX and MATCHED_* values change as rules run and are transformed afresh.
    pub(super) fn transformed(&self, value_key: Option<u64>, value: &[u8], chain: &Chain) -> Span {
        if chain.transformations.is_empty() {
            return UNCHANGED;
        }
        let Some((mask, effective)) = chain.effective(self.byte_classes(value_key, value)) else {
            return UNCHANGED;
        };
        let known = value_key.and_then(|k| self.known(k));
        let mut arena = self.s.arena.borrow_mut();
        if let Some(known) = known {
            let mut at = known.transformed.get();
            while let Some(entry) = arena.entries.get(at as usize) {
                if entry.effective == effective {
                    return entry.steps;
                }
                at = entry.next;
            }
        }
        // Only the transformations that may act on the value run; a transformation that
        // changes nothing adds no step. Without `multiMatch`, only the last changed value
        // is kept (each replaces the one before it at the end of `bytes`).
        let first = arena.steps.len();
        if chain.multi_match {
            arena.steps.push(Step {
                start: ORIGINAL_STEP,
                end: 0,
                screened: Answers::default(),
            });
        }
        let mut last: Option<(usize, usize)> = None;
        for (i, tr) in chain.transformations.iter().enumerate() {
            if i < 32 && mask & (1 << i) == 0 {
                continue;
            }
            let start = arena.bytes.len();
            let current = match last {
                Some((a, b)) => arena.bytes.get(a..b).unwrap_or_default(),
                None => value,
            };
            if *tr == Transformation::Lowercase {
                // The commonest transformation, written in place of a buffer of its own.
                if !current.iter().any(u8::is_ascii_uppercase) {
                    continue;
                }
                match last {
                    Some((a, b)) => arena.bytes.extend_from_within(a..b),
                    None => arena.bytes.extend_from_slice(value),
                }
                if let Some(fresh) = arena.bytes.get_mut(start..) {
                    fresh.make_ascii_lowercase();
                }
            } else {
                // Written into the arena's spare buffer: `current` may be in `bytes`.
                let arena = &mut *arena;
                let current = match last {
                    Some((a, b)) => arena.bytes.get(a..b).unwrap_or_default(),
                    None => value,
                };
                arena.spare.clear();
                if !tr.apply_into(current, &mut arena.spare) {
                    continue;
                }
                arena.bytes.extend_from_slice(&arena.spare);
            }
            // Without `multiMatch` only the last changed value is kept: it takes the place
            // of the one before it.
            let start = match (last, chain.multi_match) {
                (Some((a, _)), false) => {
                    arena.bytes.copy_within(start.., a);
                    let len = arena.bytes.len() - start;
                    arena.bytes.truncate(a + len);
                    a
                }
                _ => start,
            };
            let end = arena.bytes.len();
            last = Some((start, end));
            if chain.multi_match {
                arena.steps.push(Step {
                    start: start as u32,
                    end: end as u32,
                    screened: Answers::default(),
                });
            }
        }
        let steps = match (last, chain.multi_match) {
            // Left as it is.
            (None, _) => {
                arena.steps.truncate(first);
                UNCHANGED
            }
            (Some((a, b)), false) => {
                arena.steps.push(Step {
                    start: a as u32,
                    end: b as u32,
                    screened: Answers::default(),
                });
                Span {
                    first: first as u32,
                    len: 1,
                }
            }
            (Some(_), true) => Span {
                first: first as u32,
                len: (arena.steps.len() - first) as u32,
            },
        };
        if let Some(known) = known {
            let at = arena.entries.len() as u32;
            arena.entries.push(Entry {
                effective,
                steps,
                next: known.transformed.get(),
            });
            known.transformed.set(at);
        }
        steps
    }

    /// The byte classes of a value (known from the start for request values).
    pub(super) fn byte_classes(&self, key: Option<u64>, value: &[u8]) -> u32 {
        match key.and_then(|k| self.known(k)) {
            Some(known) => known.classes,
            None => crate::waf::transform::class::byte_classes(value),
        }
    }

    /// What is known of the request value a cache key names.
    pub(super) fn known(&self, key: u64) -> Option<&Known> {
        let c = (key >> 56) as usize;
        let index = ((key >> 32) & 0xff_ffff) as usize;
        self.s.known.get(c)?.get(index)
    }

    /// Collection `c` changed: describe its values afresh.
    pub(super) fn describe(&mut self, c: Collection) {
        if let Some(known) = self.s.known.get_mut(c as usize) {
            known.clear();
        }
        self.describe_added(c);
    }

    /// Collection `c` grew: describe its new values (what is known of the others stays).
    pub(super) fn describe_added(&mut self, c: Collection) {
        let (Some(values), Some(known)) = (
            self.s.collections.get(c as usize),
            self.s.known.get_mut(c as usize),
        ) else {
            return;
        };
        let added = values.as_slice().get(known.len()..).unwrap_or_default();
        known.extend(added.iter().map(|(_, v)| Known {
            classes: crate::waf::transform::class::byte_classes(v),
            screened: Answers::default(),
            transformed: Cell::new(NO_ENTRY),
        }));
        let all = known.iter().fold(0, |all, k| all | k.classes);
        if let Some(slot) = self.s.classes.get_mut(c as usize) {
            *slot = all;
        }
    }
}
