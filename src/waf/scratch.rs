//! Buffers that rule evaluations reuse, so that evaluating an ordinary request allocates
//! little: TX variables that outlive their transaction as spare slots, and lists whose
//! entries keep their buffers when emptied. Each thread keeps one set between requests
//! (`eval` takes it and gives it back); a set that grew past a bound is dropped instead, so
//! one large request does not pin its memory to a thread.

/// The TX names a rule set reads or writes by a constant name (lower case), numbered when it
/// is compiled: a rule's target or `setvar` holds its variable's number, so that a visit reads
/// the value at that index instead of hashing and comparing the name. Names chosen by
/// requests (920450 names a variable after each header) have no number.
#[derive(Debug, Default)]
pub struct TxNames {
    names: Vec<String>,
    index: hashbrown::HashMap<String, u32>,
}

impl TxNames {
    /// The number of `name` (lower case), given now if it has none.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    pub fn number(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A TX value: most are short numbers, kept inline.
pub(super) type TxValue = smallvec::SmallVec<[u8; 24]>;

/// TX variables (names in lower case): those with a number (`TxNames`) in an array by number,
/// others in a map by name. A variable belongs to the current transaction when its
/// generation is the current one: starting a transaction bumps the generation, and setting a
/// variable that an earlier transaction also set reuses its entry (and any buffer).
/// hashbrown's default hasher (foldhash) is seeded per process: request-chosen names (920450
/// names a variable after each header) cannot plan collisions.
#[derive(Debug, Default)]
pub(super) struct TxVars {
    names: std::sync::Arc<TxNames>,
    numbered: Vec<(u32, TxValue)>,
    map: hashbrown::HashMap<String, (u32, TxValue)>,
    generation: u32,
}

/// Beyond this many names (left by request-named variables), a transaction starts afresh.
const TX_NAMES_KEPT: usize = 1024;

impl TxVars {
    /// Empties the collection for a new transaction of a rule set with these names.
    pub fn reset(&mut self, names: &std::sync::Arc<TxNames>) {
        if !std::sync::Arc::ptr_eq(&self.names, names) {
            self.names = names.clone();
            self.numbered.clear();
            self.map.clear();
        }
        if self.map.len() > TX_NAMES_KEPT || self.generation == u32::MAX {
            self.map.clear();
            self.numbered.clear();
            self.generation = 0;
        }
        self.numbered.resize_with(names.len(), Default::default);
        self.generation += 1;
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_key_value(name).map(|(_, v)| v)
    }

    pub fn get_key_value(&self, name: &str) -> Option<(&str, &[u8])> {
        if let Some(i) = self.names.number(name) {
            return self.numbered_key_value(i);
        }
        match self.map.get_key_value(name) {
            Some((k, (g, v))) if *g == self.generation => Some((k.as_str(), v.as_slice())),
            _ => None,
        }
    }

    /// The variable numbered `i` and its name.
    pub fn numbered_key_value(&self, i: u32) -> Option<(&str, &[u8])> {
        match self.numbered.get(i as usize) {
            Some((g, v)) if *g == self.generation => Some((self.names.name(i), v.as_slice())),
            _ => None,
        }
    }

    pub fn numbered(&self, i: u32) -> Option<&[u8]> {
        self.numbered_key_value(i).map(|(_, v)| v)
    }

    /// The variable's value, to be written: emptied if it was not set in this transaction,
    /// created if no transaction had it.
    pub fn slot(&mut self, name: &str) -> &mut TxValue {
        let generation = self.generation;
        let (g, value) = match self.names.number(name) {
            Some(i) => return self.numbered_slot(i),
            None => self
                .map
                .entry_ref(name)
                .or_insert((generation, TxValue::new())),
        };
        if *g != generation {
            *g = generation;
            value.clear();
        }
        value
    }

    /// The value of the variable numbered `i`, to be written (as `slot`).
    pub fn numbered_slot(&mut self, i: u32) -> &mut TxValue {
        let generation = self.generation;
        let at = i as usize;
        if at >= self.numbered.len() {
            // Numbers come from the rule set these variables were reset for.
            self.numbered.resize_with(at + 1, Default::default);
        }
        let (g, value) = &mut self.numbered[at];
        if *g != generation {
            *g = generation;
            value.clear();
        }
        value
    }

    pub fn set(&mut self, name: &str, value: &[u8]) {
        let slot = self.slot(name);
        slot.clear();
        slot.extend_from_slice(value);
    }

    pub fn remove(&mut self, name: &str) {
        let entry = match self.names.number(name) {
            Some(i) => self.numbered.get_mut(i as usize),
            None => self.map.get_mut(name),
        };
        if let Some((g, _)) = entry {
            *g = 0;
        }
    }

    /// The variables of this transaction, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let generation = self.generation;
        let numbered = self
            .numbered
            .iter()
            .enumerate()
            .filter(move |(_, (g, _))| *g == generation)
            .map(|(i, (_, v))| (self.names.name(i as u32), v.as_slice()));
        let named = self
            .map
            .iter()
            .filter(move |(_, (g, _))| *g == generation)
            .map(|(k, (_, v))| (k.as_str(), v.as_slice()));
        numbered.chain(named)
    }
}

/// A list of (name, value) pairs whose emptied entries keep their buffers: refilling it
/// allocates only past its largest length so far.
#[derive(Debug, Default)]
pub(super) struct Pairs {
    items: Vec<(String, Vec<u8>)>,
    len: usize,
}

impl crate::waf::json::Sink for Pairs {
    fn scalar(&mut self, path: &str, value: &[u8]) {
        self.push(path, value);
    }
}

impl Pairs {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends an entry, its name written by `name` into an emptied buffer.
    pub fn push_with(&mut self, name: impl FnOnce(&mut String), value: &[u8]) {
        if self.len == self.items.len() {
            self.items.push(Default::default());
        }
        if let Some((n, v)) = self.items.get_mut(self.len) {
            n.clear();
            name(n);
            v.clear();
            v.extend_from_slice(value);
            self.len += 1;
        }
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_with(|n| n.push_str(name), value);
    }

    pub fn as_slice(&self) -> &[(String, Vec<u8>)] {
        self.items.get(..self.len).unwrap_or_default()
    }

    pub fn last(&self) -> Option<&(String, Vec<u8>)> {
        self.as_slice().last()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, spare entries included.
    pub fn held(&self) -> usize {
        let entries = self.items.capacity() * std::mem::size_of::<(String, Vec<u8>)>();
        entries
            + self
                .items
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_variables_end_with_their_transaction() {
        let mut names = TxNames::default();
        names.intern("score");
        let names = std::sync::Arc::new(names);
        let mut tx = TxVars::default();
        tx.reset(&names);
        tx.set("score", b"5");
        tx.slot("list").extend_from_slice(b"a");
        tx.slot("list").extend_from_slice(b"b");
        assert_eq!(tx.get("score"), Some(&b"5"[..]));
        assert_eq!(tx.get("list"), Some(&b"ab"[..]));
        assert_eq!(tx.numbered(0), Some(&b"5"[..]), "score has a number");
        tx.remove("score");
        assert_eq!(tx.get("score"), None);
        assert_eq!(tx.iter().count(), 1);
        tx.reset(&names);
        assert_eq!(
            tx.get("list"),
            None,
            "a new transaction sees nothing of the last"
        );
        assert_eq!(tx.iter().count(), 0);
        // A reused slot starts empty.
        tx.slot("list").extend_from_slice(b"c");
        assert_eq!(tx.get("list"), Some(&b"c"[..]));
        tx.set("score", b"7");
        assert_eq!(tx.get("score"), Some(&b"7"[..]), "removed, then set again");
        let mut seen: Vec<_> = tx.iter().collect();
        seen.sort();
        assert_eq!(seen, [("list", &b"c"[..]), ("score", &b"7"[..])]);
        // Another rule set numbers its names afresh: nothing is read at an old number.
        let mut other = TxNames::default();
        other.intern("list");
        tx.reset(&std::sync::Arc::new(other));
        assert_eq!(
            (tx.get("list"), tx.get("score"), tx.numbered(0)),
            (None, None, None)
        );
        tx.set("list", b"d");
        assert_eq!(tx.numbered(0), Some(&b"d"[..]));
    }

    #[test]
    fn too_many_names_start_afresh() {
        let names = std::sync::Arc::new(TxNames::default());
        let mut tx = TxVars::default();
        tx.reset(&names);
        for i in 0..=TX_NAMES_KEPT {
            tx.set(&format!("header_name_{i}"), b"x");
        }
        tx.reset(&names);
        assert_eq!(tx.map.len(), 0);
        tx.generation = u32::MAX;
        tx.set("a", b"1");
        tx.reset(&names);
        assert_eq!((tx.generation, tx.get("a")), (1, None));
    }

    #[test]
    fn pairs_reuse_their_entries() {
        let mut p = Pairs::default();
        p.push("ARGS:a", b"1");
        p.push_with(|n| n.push_str("ARGS:b"), b"22");
        assert_eq!(p.as_slice().len(), 2);
        p.clear();
        assert!(p.is_empty() && p.last().is_none());
        p.push("X", b"");
        assert_eq!(p.as_slice(), [("X".to_string(), Vec::new())]);
        assert_eq!(p.items.len(), 2, "the second entry is kept as a spare");
    }
}
