//! `setvar`: TX variables set, incremented and removed, with macro expansion of names and values
//! written without allocating for the common numeric cases.

use super::*;

impl Transaction<'_> {
    pub(super) fn setvar(&mut self, s: &crate::waf::ruleset::SetVar) {
        // Expanded names and values are written into buffers the thread keeps.
        let (mut name, mut value) = std::mem::take(&mut self.s.expanded);
        self.setvar_with(s, &mut name, &mut value);
        self.s.expanded = (name, value);
    }

    pub(super) fn setvar_with(
        &mut self,
        s: &crate::waf::ruleset::SetVar,
        name: &mut Vec<u8>,
        new: &mut Vec<u8>,
    ) {
        // Most names are constant (`tx.anomaly_score_pl1`): their TX variable is numbered
        // when the rule set is compiled; others are expanded here.
        enum Key<'k> {
            Number(u32),
            Name(Cow<'k, str>),
        }
        let rules = self.rules;
        let key = match (s.tx_number, s.name.constant()) {
            (Some(i), _) => Key::Number(i),
            // A constant name outside TX: persistent collections are not kept.
            (None, Some(_)) => return,
            (None, None) => {
                name.clear();
                s.name.expand_into(&*self, name);
                if !name.starts_with(b"tx.") {
                    return;
                }
                // TX names are case-insensitive: kept in lower case.
                let key = &mut name[3..];
                key.make_ascii_lowercase();
                Key::Name(String::from_utf8_lossy(key))
            }
        };
        let key_name = match &key {
            Key::Number(i) => rules.tx_names.name(*i),
            Key::Name(n) => n.as_ref(),
        };
        if self
            .pinned
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key_name))
        {
            return;
        }
        let number = |t: &Self, a: &Argument| crate::waf::operator::stoi(&a.expand(t));
        let now = |t: &Self| {
            let value = match &key {
                Key::Number(i) => t.s.tx.numbered(*i),
                Key::Name(n) => t.s.tx.get(n),
            };
            value.map_or(0, crate::waf::operator::stoi)
        };
        // The new value: a constant is copied into the variable's own buffer; an expansion
        // or a number is written into `new` first (it may read the variable itself).
        let mut digits = [0u8; 20];
        let value: &[u8] = match &s.op {
            SetOp::Delete => {
                self.s.tx.remove(key_name);
                return;
            }
            SetOp::Set(a) => match a.constant() {
                Some(c) => c,
                None => {
                    new.clear();
                    a.expand_into(&*self, new);
                    new
                }
            },
            SetOp::Add(a) => signed(now(self).saturating_add(number(self, a)), &mut digits),
            SetOp::Subtract(a) => signed(now(self).saturating_sub(number(self, a)), &mut digits),
        };
        let slot = match &key {
            Key::Number(i) => self.s.tx.numbered_slot(*i),
            Key::Name(n) => self.s.tx.slot(n),
        };
        slot.clear();
        slot.extend_from_slice(value);
    }
}

/// `&ARGS`, the name of a count target, written into `buf` (collection names are short ASCII).
pub(super) fn counted<'b>(buf: &'b mut [u8; 48], collection: &str) -> &'b str {
    let name = collection.as_bytes();
    let len = (name.len() + 1).min(buf.len());
    buf[0] = b'&';
    buf[1..len].copy_from_slice(&name[..len - 1]);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// `n` in decimal, written into `buf`.
pub(super) fn signed(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let len = decimal(n.unsigned_abs(), buf).len();
    match (n < 0, buf.len() - len) {
        (true, start @ 1..) => {
            buf[start - 1] = b'-';
            &buf[start - 1..]
        }
        (_, start) => &buf[start..],
    }
}

/// `n` in decimal, written into `buf`.
pub(super) fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    &buf[at..]
}
