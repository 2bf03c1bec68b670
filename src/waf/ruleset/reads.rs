//! Which collections a rule set reads: the evaluator fills only those (and what they are
//! made from), so a rule set that never reads `REQUEST_LINE` or `ARGS_POST_NAMES` does not pay
//! to build them on every request.

use super::{Collection, Reads, Rule, RuleSet};
use crate::waf::seclang::{Directive, Located};

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

/// What the rules of `set` read through their targets, and what the directives' operator
/// arguments and actions name in macros (`%{REQUEST_HEADERS.host}`), with their sources.
/// `REQBODY_PROCESSOR` is always kept: a `ctl` sets it.
pub fn reads_of(set: &RuleSet, directives: &[Located]) -> Reads {
    let mut reads = Reads::NONE;
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

/// The collections that the macros of `text` name (`%{ARGS.id}`, `%{request_line}`).
fn macro_collections(text: &str) -> impl Iterator<Item = Collection> + '_ {
    text.split("%{").skip(1).filter_map(|rest| {
        let name = rest.split(['.', '}', ':']).next()?;
        Collection::from_name(&name.to_ascii_uppercase())
    })
}
