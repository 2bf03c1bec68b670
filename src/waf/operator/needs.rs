//! What a value must hold for an operator to match it, as byte classes (`transform::class`):
//! a value that holds no byte of those classes, and that the rule's chain leaves as it is,
//! cannot match, so the evaluator passes it over (or a whole collection of such values)
//! without running the operator or the screen. `class::ANY` when nothing can be said.

use super::pcre::Regex;
use super::Operator;
use crate::waf::transform::class::*;
use regex_syntax::hir::{Class, Hir, HirKind};

impl Operator {
    /// The byte classes of which a value must hold one for the operator to match it. Held
    /// against the operators by `needs_tests`.
    pub fn needs(&self) -> u32 {
        match self {
            // Values of letters, digits and `_` are `is_plain`.
            Operator::DetectSqli => !(UPPER | LOWER),
            // `may_be_xss`.
            Operator::DetectXss => LT | EQ,
            // The classes of the bytes it refuses.
            Operator::ValidateByteRange(allowed) => {
                union((0..=255u8).filter(|b| !allowed[*b as usize]))
            }
            Operator::ValidateUrlEncoding => PERCENT,
            Operator::ValidateUtf8Encoding => HIGH,
            Operator::Rx(Regex::Bytes(re)) => regex_needs(re.as_str()),
            _ => ANY,
        }
    }
}

impl Operator {
    /// Whether `test_with_classes` reads the classes.
    pub fn reads_classes(&self) -> bool {
        matches!(self, Operator::DetectSqli | Operator::DetectXss)
    }

    /// `test` for a value whose byte classes are known (`ANY` when they are not): a plain value (`words::is_plain`:
    /// letters, digits, `_` and `.` without `..`) is told from its classes, not its bytes.
    pub fn test_with_classes(
        &self,
        value: &[u8],
        classes: u32,
        macros: &dyn super::Macros,
        capture: bool,
    ) -> Option<super::Matched> {
        let detector = self.reads_classes();
        let plain = || {
            classes & !(UPPER | LOWER | DOT) == 0
                && (classes & DOT == 0 || !value.windows(2).any(|w| w == b".."))
        };
        match detector && plain() {
            true => None,
            false => self.test(value, macros, capture),
        }
    }
}

/// The classes of some bytes; `ANY` if one of them has no class (a digit or `_`: nothing then
/// tells from its classes whether a value holds it).
fn union(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes
        .map(|b| match byte_classes(&[b]) {
            0 => ANY,
            c => c,
        })
        .fold(0, |all, c| all | c)
}

/// The classes of which every match of a regex (compiled as `pcre::compile_regex` compiles it)
/// holds a byte.
pub fn regex_needs(pattern: &str) -> u32 {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .build()
        .parse(pattern)
        .ok()
        .and_then(|hir| required(&hir))
        .unwrap_or(ANY)
}

/// The classes of which a phrase matched case-insensitively (`@pm`) holds a byte: its rarest
/// byte's.
pub fn phrase_needs(phrase: &str) -> u32 {
    phrase
        .bytes()
        .map(|b| union([b, b.to_ascii_lowercase(), b.to_ascii_uppercase()].into_iter()))
        .min_by_key(|c| weight(*c))
        .unwrap_or(ANY)
}

/// Classes of which every match of `hir` holds a byte, if there are such classes.
fn required(hir: &Hir) -> Option<u32> {
    let needs = match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        // Every byte of a literal is in each match: its rarest one.
        HirKind::Literal(lit) => lit
            .0
            .iter()
            .map(|b| union(std::iter::once(*b)))
            .min_by_key(|c| weight(*c)),
        HirKind::Class(Class::Bytes(class)) => Some(union(
            class.ranges().iter().flat_map(|r| r.start()..=r.end()),
        )),
        // Without Unicode, a character above ASCII is matched as its UTF-8 bytes.
        HirKind::Class(Class::Unicode(class)) => Some(class.ranges().iter().fold(0, |all, r| {
            let ascii_end = (r.end() as u32).min(0x7f);
            let ascii = match r.start() as u32 <= ascii_end {
                true => union((r.start() as u32..=ascii_end).map(|b| b as u8)),
                false => 0,
            };
            let high = if r.end() as u32 > 0x7f { HIGH } else { 0 };
            all | ascii | high
        })),
        HirKind::Repetition(rep) if rep.min > 0 => required(&rep.sub),
        HirKind::Repetition(_) => None,
        HirKind::Capture(cap) => required(&cap.sub),
        // One part is enough: the rarest.
        HirKind::Concat(parts) => parts.iter().filter_map(required).min_by_key(|c| weight(*c)),
        HirKind::Alternation(alternatives) => alternatives
            .iter()
            .map(required)
            .try_fold(0, |all, c| c.map(|c| all | c)),
    };
    needs.filter(|c| *c != ANY)
}

/// How common values holding a byte of these classes are: letters most, then the
/// punctuation of ordinary text, then the rest.
fn weight(classes: u32) -> u32 {
    if classes == ANY {
        return u32::MAX;
    }
    let common = (classes & (UPPER | LOWER)).count_ones() * 64;
    let ordinary = (classes & (SPACE | DOT | DASH | SLASH | COMMA)).count_ones() * 8;
    common + ordinary + classes.count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rarest_required_part_is_named() {
        assert_eq!(regex_needs(r"\.\."), DOT);
        assert_eq!(regex_needs(r"(?i)union\s+select"), WS | SPACE);
        assert_eq!(regex_needs(r"[\n\r]+[\t ]*[A-Za-z]+:"), WS);
        assert_eq!(regex_needs(r"<script|javascript:"), LT | OTHER);
        assert_eq!(regex_needs(r"\xc0[\xae\xaf]"), HIGH);
        assert_eq!(regex_needs(r"etc/passwd|\.\./"), SLASH | DOT);
    }

    #[test]
    fn patterns_that_may_match_anything_need_nothing() {
        for p in [r"^$", r"x*", r"\d+", r"[0-9_]", r"^", r"a|b?", r"(?:)"] {
            assert_eq!(regex_needs(p), ANY, "{p}");
        }
        assert_eq!(regex_needs("(unbalanced"), ANY);
    }
}
