//! `Operator::needs` against the operators themselves (property-based): a value holding no
//! byte of a class the operator needs never matches it. Each value is drawn from the bytes
//! whose classes the operator does not need, so every case tests the claim.
use super::tests::op;
use super::*;
use crate::waf::transform::class::{byte_classes, ANY};
use proptest::prelude::*;

struct NoMacros;

impl Macros for NoMacros {
    fn value(&self, _: &str, _: &str) -> Option<Cow<'_, [u8]>> {
        None
    }
}

/// The operators with a shortcut: the built-in rules' and CRS's byte ranges, the detectors, the
/// encoding checks and regexes (the built-in rules' among them).
fn gated() -> Vec<Operator> {
    let builtin = crate::waf::builtin::SOURCE
        .lines()
        .filter_map(|l| {
            l.split_once("\"@rx ")
                .map(|(_, p)| p.trim_end_matches(['"', ' ', '\\']))
        })
        .map(|p| op("rx", p));
    let mut ops: Vec<Operator> = builtin.collect();
    assert!(ops.len() >= 6, "the built-in rules' regexes were not found");
    ops.extend([
        op("detectSQLi", ""),
        op("detectXSS", ""),
        op("validateUrlEncoding", ""),
        op("validateUtf8Encoding", ""),
        op("rx", r"(?i)union\s+select"),
        op("rx", r"<script|javascript:"),
    ]);
    for ranges in [
        "9,32-126,128-255",
        "9,10,13,32-126,128-255",
        "1-255",
        "32-126",
        "38,44-46,48-58,61,65-90,95,97-122",
    ] {
        ops.push(op("validateByteRange", ranges));
    }
    ops
}

/// The bytes a value may hold and still be passed over by the operator.
fn unneeded(needs: u32) -> Vec<u8> {
    (0..=255u8)
        .filter(|b| byte_classes(&[*b]) & needs == 0)
        .collect()
}

#[test]
fn every_byte_but_digits_and_underscore_has_a_class() {
    for b in 0..=255u8 {
        let classless = b.is_ascii_digit() || b == b'_';
        assert_eq!(byte_classes(&[b]) == 0, classless, "byte {b:#04x}");
    }
}

#[test]
fn a_value_of_no_class_lacks_only_a_needed_class() {
    use crate::waf::transform::class::{lacks, DOT};
    assert!(!lacks(0, ANY), "no shortcut: every value is tested");
    assert!(lacks(0, DOT));
    assert!(!lacks(DOT, DOT));
}

#[test]
fn the_shortcuts_are_there_and_narrow() {
    for op in gated() {
        let needs = op.needs();
        assert_ne!(needs, ANY, "{op:?}");
        assert!(!unneeded(needs).is_empty(), "{op:?}");
    }
    // A range that refuses a digit (a byte of no class) has no shortcut.
    assert_eq!(op("validateByteRange", "32-47,58-126").needs(), ANY);
    assert_eq!(op("rx", "[0-9]+").needs(), ANY);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn values_without_a_needed_class_never_match(picks in proptest::collection::vec(any::<u16>(), 0..40)) {
        for op in gated() {
            let alphabet = unneeded(op.needs());
            let value: Vec<u8> = picks
                .iter()
                .map(|p| alphabet[*p as usize % alphabet.len()])
                .collect();
            prop_assert_eq!(byte_classes(&value) & op.needs(), 0);
            prop_assert!(op.test(&value, &NoMacros, false).is_none(), "{:?} matched {:?}", op, value);
        }
    }

    /// Words of the SQL keywords' letters: the draws above rarely spell a keyword.
    #[test]
    fn keywords_of_letters_and_digits_are_not_sqli(
        words in proptest::collection::vec(
            prop::sample::select(vec!["select", "UNION", "or", "1", "and", "_", "sleep", "0x41", "null", "from", "where", "1e1"]),
            1..8,
        )
    ) {
        let value = words.concat();
        prop_assert!(op("detectSQLi", "").test(value.as_bytes(), &NoMacros, false).is_none(), "{}", value);
    }

    /// Told from its classes or read byte by byte, a value gets the same verdict: drawn from
    /// letters, dots, digits and a few bytes that end plainness.
    #[test]
    fn a_verdict_from_classes_is_the_verdict_from_bytes(
        picks in proptest::collection::vec(prop::sample::select(b"aZ.0_9 '<=-".to_vec()), 0..24)
    ) {
        for op in [op("detectSQLi", ""), op("detectXSS", "")] {
            let by_bytes = op.test(&picks, &NoMacros, false).is_some();
            let by_classes = op.test_with_classes(&picks, byte_classes(&picks), &NoMacros, false).is_some();
            let unknown = op.test_with_classes(&picks, ANY, &NoMacros, false).is_some();
            prop_assert_eq!(by_bytes, by_classes, "{:?} on {:?}", op, String::from_utf8_lossy(&picks));
            prop_assert_eq!(by_bytes, unknown);
        }
    }
}
