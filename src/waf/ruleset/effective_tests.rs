//! Effective chains against the transformations they stand for (property-based).
use super::index::number_effective_chains;
use super::*;
use crate::waf::transform::class::{self, byte_classes};
use crate::waf::transform::class_tests::ALL;
use proptest::prelude::*;
use std::borrow::Cow;

fn chain(list: Vec<Transformation>, multi_match: bool) -> Chain {
    let touches = list.iter().fold(0u32, |acc, t| {
        if acc == class::ANY || t.touches() == class::ANY {
            class::ANY
        } else {
            acc | t.touches()
        }
    });
    let mut chains = vec![Chain {
        transformations: list,
        multi_match,
        touches,
        effective: Vec::new(),
        own: 0,
    }];
    number_effective_chains(&mut chains);
    chains.remove(0)
}

/// The values a rule sees after the chain's transformations selected by `mask`, as the
/// evaluator computes them: the last value, or with multiMatch the original and every
/// change.
fn values(chain: &Chain, mask: u32, value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec()];
    for (i, t) in chain.transformations.iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        let last = out.last().map_or(value, |v| v.as_slice());
        if let Cow::Owned(next) = t.apply(last) {
            if chain.multi_match {
                out.push(next);
            } else {
                out[0] = next;
            }
        }
    }
    out
}

proptest! {
    /// Running only a chain's effective transformations for a value gives the values the
    /// whole chain gives (what lets chains that reduce to the same list share one result).
    #[test]
    fn effective_chains_give_what_the_whole_chain_gives(
        picks in proptest::collection::vec(0..ALL.len(), 0..8),
        multi_match in any::<bool>(),
        v in proptest::collection::vec(
            prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x".to_vec()),
            0..12,
        )
    ) {
        let c = chain(picks.iter().map(|i| ALL[*i]).collect(), multi_match);
        let whole = values(&c, u32::MAX, &v);
        let reduced = match c.effective(byte_classes(&v)) {
            None => vec![v.clone()],
            Some((mask, _)) => values(&c, mask, &v),
        };
        let (mut whole, mut reduced) = (whole, reduced);
        // multiMatch tests each distinct value; a step that repeats one changes nothing.
        if multi_match {
            whole.sort();
            whole.dedup();
            reduced.sort();
            reduced.dedup();
        }
        prop_assert_eq!(whole, reduced, "{:?}", c.transformations);
    }
}

#[test]
fn chains_reducing_to_the_same_list_share_an_id() {
    use Transformation::*;
    let long = chain(vec![UrlDecodeUni, HtmlEntityDecode, Lowercase], false);
    let short = chain(vec![Lowercase], false);
    let mut both = vec![long, short];
    number_effective_chains(&mut both);
    let ua = b"Mozilla/5.0 (X11; Linux x86_64)";
    let (a, b) = (
        both[0].effective(byte_classes(ua)),
        both[1].effective(byte_classes(ua)),
    );
    assert_eq!(a.map(|(_, id)| id), b.map(|(_, id)| id));
    assert!(a.is_some());
    // With a `%` the decoder can act: another list, another id.
    let encoded = b"Mozilla%2F5.0";
    assert_ne!(
        both[0].effective(byte_classes(encoded)).map(|(_, id)| id),
        both[1].effective(byte_classes(encoded)).map(|(_, id)| id)
    );
}
