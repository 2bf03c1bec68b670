//! The prefilter: one multi-pattern scan of a value stands for many rules. The plain `@rx`
//! patterns and `@pm` phrases of the rules it screens are compiled into one automaton (`Screen`);
//! a value the screen does not match cannot match any of those rules, so a transaction runs a
//! screened rule's own operator only on the values that pass. A rule whose collections have no
//! passing member after its chain is skipped whole (its `Gate`). Which rules are screened
//! changes the cost, never a result.
//!
//! Built when the rule set is compiled (`build`); consulted by a transaction in
//! `eval::screened`, which keeps each value's `Answers` beside it.

pub mod build;

use crate::waf::transform::class::lacks;
use aho_corasick::AhoCorasick;
use std::cell::Cell;

/// Which part of the screen stands for a rule's operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScreenPart {
    /// Not screened: the operator runs on every value.
    #[default]
    Off,
    /// The regexes (an `@rx` rule).
    Regex,
    /// The phrases (a `@pm` rule).
    Phrases,
}

/// Many plain `@rx` patterns compiled into one automaton, with their flags, for one answer:
/// does any of them match a value. It is the rule set's only multi-pattern copy of its
/// regexes (a rule runs its own regex on the values it matches).
#[derive(Debug)]
pub struct Screen {
    regex: regex_automata::meta::Regex,
    /// The phrases of the screened `@pm` rules, case-insensitively.
    phrases: Option<AhoCorasick>,
    /// The byte classes of which a value must hold one to match a regex (`regex_needs`), or
    /// hold a phrase: a value without any is answered without a scan.
    regex_needs: u32,
    phrase_needs: u32,
}

impl Screen {
    pub fn new(patterns: &[String], phrases: &[String]) -> Result<Screen, String> {
        use regex_automata::{meta, nfa::thompson::WhichCaptures, util::syntax};
        let regex = meta::Builder::new()
            .syntax(
                syntax::Config::new()
                    .dot_matches_new_line(true)
                    .multi_line(true)
                    .unicode(false)
                    .utf8(false),
            )
            .configure(
                meta::Config::new()
                    // Only "whether" is asked: no capture states, no engines that exist
                    // for captures.
                    .which_captures(WhichCaptures::None)
                    .backtrack(false)
                    .onepass(false)
                    .utf8_empty(false)
                    .nfa_size_limit(Some(256 << 20))
                    .hybrid_cache_capacity(16 << 20),
            )
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        let compiled_phrases = match phrases.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(phrases)
                    .map_err(|e| e.to_string())?,
            ),
        };
        use crate::waf::operator::needs::{phrase_needs, regex_needs};
        Ok(Screen {
            regex,
            phrases: compiled_phrases,
            regex_needs: patterns.iter().fold(0, |all, p| all | regex_needs(p)),
            phrase_needs: phrases.iter().fold(0, |all, p| all | phrase_needs(p)),
        })
    }

    /// Whether a value matches any screened regex (`Regex`) or holds any screened phrase
    /// (`Phrases`); a value is never screened out for a rule that is not screened (`Off`).
    pub fn is_match(&self, part: ScreenPart, value: &[u8]) -> bool {
        self.is_match_with(
            part,
            value,
            crate::waf::transform::class::byte_classes(value),
        )
    }

    /// `is_match` for a value whose byte classes are known.
    pub fn is_match_with(&self, part: ScreenPart, value: &[u8], classes: u32) -> bool {
        match part {
            ScreenPart::Off => true,
            ScreenPart::Regex => !lacks(classes, self.regex_needs) && self.regex.is_match(value),
            ScreenPart::Phrases => {
                !lacks(classes, self.phrase_needs)
                    && self.phrases.as_ref().is_some_and(|p| p.is_match(value))
            }
        }
    }
}

/// Whether each part of the screen (regexes, phrases) matches a value: 2 bits a part
/// (asked, matched), each part asked at most once.
#[derive(Debug, Clone, Default)]
pub struct Answers(Cell<u8>);

impl Answers {
    pub fn get_or(&self, part: ScreenPart, ask: impl FnOnce() -> bool) -> bool {
        let shift = match part {
            ScreenPart::Off => return true,
            ScreenPart::Regex => 0,
            ScreenPart::Phrases => 2,
        };
        let bits = self.0.get() >> shift;
        if bits & 1 != 0 {
            return bits & 2 != 0;
        }
        let found = ask();
        self.0
            .set(self.0.get() | (1 | u8::from(found) << 1) << shift);
        found
    }
}
