//! Which collections a rule set reads: the evaluator fills only those (and what they are
//! made from), so a rule set that never reads `REQUEST_LINE` or `ARGS_POST_NAMES` does not pay
//! to build them on every request.

use super::{Collection, Rule, RuleSet};
use crate::waf::seclang::{Directive, Located};

/// A set of collections, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads(u64);

const _: () = assert!(Collection::COUNT <= 64, "a collection set is one u64");

impl Default for Reads {
    /// Every collection: a rule set not compiled from directives reads what it likes.
    fn default() -> Self {
        Reads(u64::MAX)
    }
}

/// Collections made from others: a collection read needs its sources filled.
const SOURCES: [(Collection, &[Collection]); 8] = {
    use Collection::*;
    [
        (Args, &[ArgsGet, ArgsPost]),
        (ArgsNames, &[Args]),
        (ArgsCombinedSize, &[Args]),
        (ArgsGetNames, &[ArgsGet]),
        (ArgsPostNames, &[ArgsPost]),
        (RequestHeadersNames, &[RequestHeaders]),
        (RequestCookiesNames, &[RequestCookies]),
        (FilesNames, &[Files]),
    ]
};

impl Reads {
    pub fn has(self, c: Collection) -> bool {
        self.0 & (1 << c as u32) != 0
    }

    fn add(&mut self, c: Collection) {
        self.0 |= 1 << c as u32;
    }

    /// What the rules of `set` read through their targets, and what the directives' operator
    /// arguments and actions name in macros (`%{REQUEST_HEADERS.host}`), with their sources.
    /// `REQBODY_PROCESSOR` is always kept: a `ctl` sets it.
    pub fn of(set: &RuleSet, directives: &[Located]) -> Reads {
        let mut reads = Reads(0);
        reads.add(Collection::ReqbodyProcessor);
        let mut rules: Vec<&Rule> = set.phase1.iter().chain(&set.phase2).collect();
        while let Some(rule) = rules.pop() {
            rule.targets.iter().for_each(|t| reads.add(t.collection));
            rules.extend(rule.chain.as_deref());
        }
        for d in directives {
            let (operator, actions) = match &d.directive {
                Directive::Rule {
                    operator, actions, ..
                } => (Some(operator.argument.as_str()), actions),
                Directive::Action(actions)
                | Directive::DefaultAction(actions)
                | Directive::UpdateActionById { actions, .. } => (None, actions),
                _ => continue,
            };
            let values = actions.iter().filter_map(|a| a.value.as_deref());
            for text in operator.into_iter().chain(values) {
                macro_collections(text).for_each(|c| reads.add(c));
            }
        }
        // Sources of sources (ARGS_NAMES <- ARGS <- ARGS_GET): two rounds reach them all.
        for _ in 0..2 {
            for (made, sources) in SOURCES {
                if reads.has(made) {
                    sources.iter().for_each(|s| reads.add(*s));
                }
            }
        }
        reads
    }
}

/// The collections that the macros of `text` name (`%{ARGS.id}`, `%{request_line}`).
fn macro_collections(text: &str) -> impl Iterator<Item = Collection> + '_ {
    text.split("%{").skip(1).filter_map(|rest| {
        let name = rest.split(['.', '}', ':']).next()?;
        Collection::from_name(&name.to_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::ruleset::compile::compile;
    use crate::waf::seclang::parse;
    use Collection::*;

    fn reads(text: &str) -> Reads {
        let directives = parse(text, std::path::Path::new("t.conf")).unwrap();
        Reads::of(&compile(&directives).unwrap(), &directives)
    }

    #[test]
    fn targets_macros_and_their_sources_are_read() {
        let r = reads(concat!(
            "SecRule ARGS_NAMES \"@rx a\" \"id:1,phase:2,pass\"\n",
            "SecRule REQUEST_METHOD \"@rx a\" \"id:2,phase:1,pass,chain\"\n",
            "SecRule &REQUEST_COOKIES_NAMES \"@eq 1\" \"setvar:'tx.x=%{request_line}'\"\n",
            "SecRule TX:x \"@streq %{REQUEST_HEADERS.host}\" \"id:3,phase:2,pass\"\n",
        ));
        for c in [
            ArgsNames,
            Args,
            ArgsGet,
            ArgsPost,
            RequestMethod,
            RequestCookiesNames,
            RequestCookies,
            RequestLine,
            RequestHeaders,
            ReqbodyProcessor,
            Tx,
        ] {
            assert!(r.has(c), "{c:?}");
        }
        for c in [
            ArgsGetNames,
            ArgsPostNames,
            RequestHeadersNames,
            RequestUri,
            QueryString,
            Files,
        ] {
            assert!(!r.has(c), "{c:?}");
        }
    }

    #[test]
    fn the_built_in_rules_skip_what_they_never_read() {
        let r = crate::waf::builtin::compile().unwrap().reads;
        assert!(r.has(RequestFilename) && r.has(Xml) && r.has(ReqbodyError));
        assert!(!r.has(RequestLine) && !r.has(ArgsPostNames) && !r.has(QueryString));
        assert!(Reads::default().has(RequestLine));
    }
}
