//! Building the prefilter when a rule set is compiled: which rules it stands for (calibrated
//! against ordinary values), the screens of all levels and of level 1, and each rule's gate.

use super::{Screen, ScreenPart};
use crate::waf::operator::pcre::Regex;
use crate::waf::operator::Operator;
use crate::waf::ruleset::{Gate, Rule, RuleSet, Target};

/// Ordinary values that calibrate the screen: a pattern that matches one of them (`^$`, `.`,
/// `^\d+$`, a list of common words) would make the screen match every request, so its rule
/// runs its own regex instead. Which patterns are screened changes the cost, never a result.
const ORDINARY: &[&[u8]] = &[
    b"",
    b"2",
    b"shipped",
    b"en-gb",
    b"en-GB,en;q=0.8",
    b"session",
    b"8b2f0c7e4a",
    b"mozilla/5.0 (x11; linux x86_64; rv:128.0) gecko/20100101 firefox/128.0",
    b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    b"application/json",
    b"gzip, deflate, br",
    b"api.example.com",
    b"/v1/orders",
    b"Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    b"6f1c1a52-7d4b-4e0a-9a7c-3c1e0b7f9d21",
    b"hello world, this is a note",
    b"Ana Lopez",
    b"ana@example.com",
];

pub fn build_screen(set: &mut RuleSet) {
    // Each pattern and phrase with the lowest paranoia level of a rule it stands for; ordered,
    // so that the screens are built the same way each time.
    let mut patterns: Vec<(String, u8)> = Vec::new();
    let mut phrases = std::collections::BTreeMap::<String, u8>::new();
    let mut mark = |rule: &mut Rule, level: u8| {
        rule.level = level;
        if let Operator::Pm(ac, list) = &mut rule.operator {
            // A phrase list is screened as its phrases, unless an ordinary value holds one;
            // the rule keeps only its own automaton.
            let list = std::mem::take(list);
            if !ORDINARY.iter().any(|v| ac.is_match(v)) {
                rule.screen = ScreenPart::Phrases;
                for phrase in list {
                    let at = phrases.entry(phrase).or_insert(level);
                    *at = (*at).min(level);
                }
            }
            return;
        }
        let Operator::Rx(Regex::Bytes(re)) = &rule.operator else {
            return;
        };
        // A clone has a search cache of its own, dropped here: calibration leaves the rule's
        // regex as cold as it was (warm caches of 230 regexes were tens of MiB per process).
        let probe = re.clone();
        if ORDINARY.iter().any(|v| probe.is_match(v)) {
            return;
        }
        rule.screen = ScreenPart::Regex;
        match patterns.iter_mut().find(|(p, _)| p == re.as_str()) {
            Some((_, at)) => *at = (*at).min(level),
            None => patterns.push((re.as_str().to_string(), level)),
        }
    };
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        // A chain's links run only after its first rule matched: they take its level.
        let level = paranoia_level(&rule.tags);
        let mut link = Some(rule);
        while let Some(r) = link {
            mark(r, level);
            link = r.chain.as_deref_mut();
        }
    }
    let screen = |most: u8| {
        let patterns: Vec<String> = patterns
            .iter()
            .filter(|(_, level)| *level <= most)
            .map(|(p, _)| p.clone())
            .collect();
        let phrases: Vec<String> = phrases
            .iter()
            .filter(|(_, level)| **level <= most)
            .map(|(p, _)| p.clone())
            .collect();
        Screen::new(&patterns, &phrases).ok()
    };
    set.screen = screen(u8::MAX);
    // Requests at paranoia level 1 (the default) use a screen of the level-1 rules alone:
    // a value that matches only a higher level's pattern (CRS's 932205 or 942130 match the
    // query string and the cookie header of ordinary requests) then sends no rule of its
    // chain to its own regex.
    if patterns.iter().any(|(_, level)| *level > 1) || phrases.values().any(|level| *level > 1) {
        set.screen_pl1 = screen(1);
    }
    if set.screen.is_none() {
        // Each rule runs its own regex: slower, the same results.
        set.screen_pl1 = None;
        for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
            let mut link = Some(rule);
            while let Some(r) = link {
                r.screen = ScreenPart::Off;
                link = r.chain.as_deref_mut();
            }
        }
    }
}

/// A rule's paranoia level from its `paranoia-level/N` tag (CRS's convention), 0 without one.
/// It only chooses which screen stands for the rule (see `RuleSet::screen_pl1`).
fn paranoia_level(tags: &[String]) -> u8 {
    tags.iter()
        .find_map(|t| t.strip_prefix("paranoia-level/"))
        .and_then(|n| n.parse::<u8>().ok())
        .map_or(0, |n| n.max(1))
}

/// A rule's gate, for the prefilter. A screened rule that is not negated matches only through a
/// member that passes the screen after its chain; when every target is a whole request
/// collection (or members selected by a pattern), none passing in any of them means no match,
/// and neither exclusions nor removed targets can add one. Counted and named targets are read
/// from the rule itself (a named member is screened on its own, without the whole collection).
/// `classes` gathers the distinct (collections, chain, screen part, needs) of the gates
/// numbered so far.
pub fn gate(rule: &Rule, classes: &mut Vec<(u64, u32, ScreenPart, u32)>) -> Gate {
    let whole = |t: &Target| !t.count && t.collection.is_request();
    if !rule.screened() || rule.negated || rule.targets.is_empty() {
        return Gate::default();
    }
    if !rule.targets.iter().all(whole) {
        return Gate::default();
    }
    let collections = rule
        .targets
        .iter()
        .fold(0, |bits, t| bits | 1 << t.collection as u64);
    let key = (collections, rule.chain_id, rule.screen, rule.needs);
    let class = match classes.iter().position(|k| *k == key) {
        Some(i) => i,
        None => {
            classes.push(key);
            classes.len() - 1
        }
    };
    Gate {
        collections,
        chain_id: rule.chain_id,
        screen: rule.screen,
        needs: rule.needs,
        level: rule.level,
        class: class as u32,
        tx_test: 0,
    }
}
