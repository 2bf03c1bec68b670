//! The scratch arena of a transaction: the values each chain's transformations produced, what
//! the prefilter answered for each, the matches of the rule being run, and the buffers a thread
//! keeps between transactions (emptied, not freed) so that an ordinary request allocates little.

use crate::waf::prefilter::Answers;
use crate::waf::ruleset::{Collection, RuleSet};
use crate::waf::scratch::{Pairs, TxVars};
use std::cell::{Cell, RefCell};

/// The values one rule matched: each name (`ARGS:q`) and the value the operator saw, and the
/// regex groups of those that captured (by index into `matched`).
#[derive(Default)]
pub(super) struct Hits {
    pub(super) matched: Pairs,
    pub(super) captures: Vec<(usize, Vec<Vec<u8>>)>,
}

impl Hits {
    pub(super) fn clear(&mut self) {
        self.matched.clear();
        self.captures.clear();
    }
}

/// One value the operator sees after a transformation chain: the original, or a changed
/// value kept in `Arena::bytes`, with what the screen answered for it.
pub(super) struct Step {
    /// `bytes[start..end]`; `start == ORIGINAL_STEP` for the value as it is.
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) screened: Answers,
}

pub(super) const ORIGINAL_STEP: u32 = u32::MAX;

/// The steps a value has after a chain: `Arena::steps[first..first + len]` (with
/// `multiMatch`, the original and every changed step; else the last one).
#[derive(Clone, Copy, Default)]
pub(super) struct Span {
    pub(super) first: u32,
    pub(super) len: u32,
}

impl Span {
    pub(super) fn indices(self) -> std::ops::Range<usize> {
        self.first as usize..(self.first + self.len) as usize
    }
}

/// Step 0 of every transaction's arena: the value as it is.
pub(super) const UNCHANGED: Span = Span { first: 0, len: 1 };

/// A request value transformed by an effective chain (a list per value, linked by `next`).
pub(super) struct Entry {
    pub(super) effective: u32,
    pub(super) steps: Span,
    pub(super) next: u32,
}

pub(super) const NO_ENTRY: u32 = u32::MAX;

/// What a transaction computes of its values, kept in a few flat buffers that the thread
/// reuses (nothing allocated per value): transformed bytes, steps, the cache of transformed
/// request values (by value and effective chain) and the lists of members passing the
/// screen.
#[derive(Default)]
pub(super) struct Arena {
    pub(super) bytes: Vec<u8>,
    /// A transformation's output before it joins `bytes`.
    pub(super) spare: Vec<u8>,
    pub(super) steps: Vec<Step>,
    pub(super) entries: Vec<Entry>,
    pub(super) passing: Vec<u32>,
}

impl Arena {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.steps.clear();
        self.entries.clear();
        self.passing.clear();
        self.steps.push(Step {
            start: ORIGINAL_STEP,
            end: 0,
            screened: Answers::default(),
        });
    }

    /// Step `n`: a changed value and its step, or `None` for the value as it is.
    pub(super) fn changed(&self, n: usize) -> Option<(&Step, &[u8])> {
        let step = self.steps.get(n).filter(|s| s.start != ORIGINAL_STEP)?;
        let bytes = self.bytes.get(step.start as usize..step.end as usize)?;
        Some((step, bytes))
    }

    /// Bytes held.
    pub(super) fn held(&self) -> usize {
        self.bytes.capacity()
            + self.spare.capacity()
            + self.steps.capacity() * std::mem::size_of::<Step>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.passing.capacity() * 4
    }
}

/// What a transaction keeps between rules and a thread keeps between transactions: caches
/// and collections, emptied (not freed) for the next request.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) arena: RefCell<Arena>,
    /// What is known of each request value, by collection and index (as `collections`).
    pub(super) known: Vec<Vec<Known>>,
    /// Every byte class some value of a collection has, by collection.
    pub(super) classes: Vec<u32>,
    /// The members of a collection that pass the screen after a chain, by the effective
    /// chain the chain reduces to for the collection's classes (the last slot for a chain
    /// that leaves all of them as they are) and collection: `arena.passing[first..first +
    /// len]`, valid while `generation` is the collection's.
    pub(super) passing: RefCell<Vec<Passing>>,
    /// Each collection's generation: a number no earlier content of any collection had,
    /// given whenever it is refilled (and to all when a transaction starts).
    pub(super) generations: Vec<u64>,
    /// The last generation given (never reset: a thread's numbers do not repeat).
    pub(super) generation: u64,
    /// Each gate class's answer (`nothing_passes`) as `generation << 1 | answer`, valid while
    /// `generation` is the last given: any change to any collection makes it stale.
    pub(super) gate_answers: Vec<Cell<u64>>,
    /// Request collections, indexed by `Collection` (absent ones empty).
    pub(super) collections: Vec<Pairs>,
    pub(super) tx: TxVars,
    /// MATCHED_VAR: the last value matched (at most one entry).
    pub(super) matched_var: Pairs,
    pub(super) matched_vars: Pairs,
    pub(super) hits: RefCell<Hits>,
    /// A `setvar`'s expanded name and value.
    pub(super) expanded: (Vec<u8>, Vec<u8>),
}

/// Beyond these, a thread's scratch is dropped after its transaction instead of kept.
pub(super) const KEPT_ARENA_BYTES: usize = 256 * 1024;

pub(super) const KEPT_MATCH_BYTES: usize = 64 * 1024;

pub(super) const KEPT_COLLECTION_BYTES: usize = 256 * 1024;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

impl Scratch {
    /// This thread's scratch, emptied, or a new one.
    pub(super) fn take(rules: &RuleSet) -> Box<Scratch> {
        let mut s = SCRATCH.with(Cell::take).unwrap_or_default();
        s.arena.get_mut().clear();
        s.known.resize_with(Collection::COUNT, Vec::new);
        s.known.iter_mut().for_each(Vec::clear);
        s.classes.clear();
        s.classes.resize(Collection::COUNT, 0);
        let slots = (rules.effective_chains as usize + 1) * 2 * Collection::COUNT;
        let passing = s.passing.get_mut();
        if passing.len() < slots {
            passing.resize(slots, Passing::default());
        }
        // Whatever was known of the last transaction's collections is stale.
        s.generation += 1;
        let generation = s.generation;
        s.generations.clear();
        s.generations.resize(Collection::COUNT, generation);
        if s.gate_answers.len() < rules.gate_classes as usize {
            s.gate_answers
                .resize_with(rules.gate_classes as usize, Cell::default);
        }
        s.collections.resize_with(Collection::COUNT, Pairs::default);
        s.collections.iter_mut().for_each(Pairs::clear);
        s.tx.reset(&rules.tx_names);
        s.matched_var.clear();
        s.matched_vars.clear();
        s.hits.get_mut().clear();
        s
    }

    /// Keeps the scratch for this thread's next transaction, unless it grew large.
    pub(super) fn give_back(self: Box<Scratch>) {
        let large = self.arena.borrow().held() > KEPT_ARENA_BYTES
            || self.matched_vars.held()
                + self.hits.borrow().matched.held()
                + self.expanded.0.capacity()
                + self.expanded.1.capacity()
                > KEPT_MATCH_BYTES
            || self.collections.iter().map(Pairs::held).sum::<usize>() > KEPT_COLLECTION_BYTES;
        if !large {
            SCRATCH.with(|cell| cell.set(Some(self)));
        }
    }
}

/// What a transaction knows of one request value: its byte classes, what the screen
/// answered for it as it is, and the first of its transformed entries.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) classes: u32,
    pub(super) screened: Answers,
    pub(super) transformed: Cell<u32>,
}

/// The members of a collection passing the screen after a chain, as last computed.
#[derive(Clone, Copy, Default)]
pub(super) struct Passing {
    pub(super) generation: u64,
    pub(super) members: Span,
}
