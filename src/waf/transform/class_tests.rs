//! Byte classes against what each transformation does (property-based).
use super::class::byte_classes;
use super::*;
use proptest::prelude::*;

/// Every transformation (for the property tests here and in `ruleset`).
pub(crate) const ALL: &[Transformation] = Transformation::ALL;

proptest! {
    /// The shortcut is exact: a transformation that does not touch any class of a value
    /// gives the value back unchanged.
    #[test]
    fn untouched_values_are_unchanged(
        v in proptest::collection::vec(
            prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x\x01\x1f\x7f@:|$?_".to_vec()),
            0..12,
        )
    ) {
        let classes = byte_classes(&v);
        for t in ALL {
            if t.leaves(classes) {
                prop_assert_eq!(&t.apply(&v)[..], &v[..], "{:?}", t);
            }
        }
    }

    /// `apply_into` appends what `apply` returns, after whatever the buffer held, and
    /// appends nothing (answering `false`) where `apply` leaves the value as it is.
    #[test]
    fn applied_into_a_buffer_as_applied(
        v in proptest::collection::vec(
            prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x\x01\x1f\x7f@:|$?_".to_vec()),
            0..12,
        ),
        held in proptest::collection::vec(prop::sample::select(b" a/".to_vec()), 0..3),
    ) {
        for t in ALL {
            let mut out = held.clone();
            let changed = t.apply_into(&v, &mut out);
            let applied = t.apply(&v);
            prop_assert_eq!(changed, matches!(applied, Cow::Owned(_)), "{:?}", t);
            prop_assert_eq!(&out[..held.len()], &held[..], "{:?}", t);
            match changed {
                true => prop_assert_eq!(&out[held.len()..], &applied[..], "{:?}", t),
                false => prop_assert_eq!(out.len(), held.len(), "{:?}", t),
            }
        }
    }

    /// A transformation's output holds only the classes of its input and those it
    /// `produces` (what lets a chain skip its later no-op transformations).
    #[test]
    fn outputs_hold_only_produced_classes(
        v in proptest::collection::vec(
            prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x\x01\x1f\x7f@:|$?_".to_vec()),
            0..12,
        )
    ) {
        let classes = byte_classes(&v);
        for t in ALL {
            let out = byte_classes(&t.apply(&v));
            prop_assert_eq!(out & !(classes | t.produces()), 0, "{:?} of {:?}", t, v);
        }
    }
}
