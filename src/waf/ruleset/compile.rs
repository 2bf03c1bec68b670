//! SecLang directives → the rule set: rules grouped by request phase, chains linked,
//! `SecDefaultAction` applied, `t:` lists resolved (`none` resets them), operators compiled,
//! `skipAfter` markers resolved to positions, and `SecRuleRemoveById` /
//! `SecRuleUpdateTargetById` / `SecRuleUpdateActionById` applied. Anything this engine would
//! evaluate differently from ModSecurity is an error naming the file and line; what it
//! deliberately leaves out (response phases, persistent collections, GeoIP, DNS lists) is a
//! warning.

use super::index::index_chains;
use super::*;
use crate::waf::seclang::{Action, Directive, Located, Selector, Variable};
use std::collections::{HashMap, HashSet};

/// Meta-data actions: recorded by ModSecurity for its logs, no effect on a decision.
const META: &[&str] = &[
    "accuracy",
    "auditlog",
    "logdata",
    "maturity",
    "noauditlog",
    "rev",
    "severity",
    "ver",
    "status",
];

/// Directives in file order, before compiling.
enum Item<'a> {
    Chain(u8, Vec<Pending<'a>>),
    Marker(String),
}

/// A rule being compiled: its first directive's actions merged with the phase defaults.
struct Pending<'a> {
    at: &'a Location,
    variables: Vec<Variable>,
    operator: &'a crate::waf::seclang::Operator,
    actions: Vec<Action>,
}

/// What the directives say, read in file order: rules (by phase, as lists of chain links) and
/// markers, each phase's `SecDefaultAction`, and the removals and updates by id that apply to
/// rules wherever they are.
#[derive(Default)]
struct Directives<'a> {
    items: Vec<Item<'a>>,
    defaults: HashMap<u8, Vec<Action>>,
    removed: Vec<(u64, u64)>,
    target_updates: HashMap<u64, Vec<Variable>>,
    action_updates: HashMap<u64, Vec<Action>>,
}

/// Where the rules of each phase stand: the markers (phase, position in that phase's compiled
/// list, name) and the `skipAfter`s (phase, index in phase, marker name, where) to resolve.
#[derive(Default)]
struct Positions {
    markers: Vec<(u8, usize, String)>,
    skips: Vec<(u8, usize, String, Location)>,
}

/// The errors, warnings and engine gaps of one compile.
#[derive(Default)]
struct Report {
    errors: Vec<RuleError>,
    warnings: Vec<String>,
    gaps: Vec<String>,
}

impl Report {
    fn error(&mut self, at: &Location, message: String) {
        self.errors.push(RuleError {
            at: at.clone(),
            message,
        });
    }
}

/// Compile directives (in file order, all files concatenated) into a rule set: read them,
/// compile and place each rule, resolve the skips to markers, then index the set for the
/// evaluator.
pub fn compile(directives: &[Located]) -> Result<RuleSet, Vec<RuleError>> {
    let mut report = Report::default();
    let read = read_directives(directives, &mut report);
    let mut set = RuleSet::default();
    let positions = place_rules(read, &mut set, &mut report);
    resolve_skips(&mut set, positions, &mut report);
    set.warnings = std::mem::take(&mut report.warnings);
    set.gaps = std::mem::take(&mut report.gaps);
    index_chains(&mut set);
    set.reads = super::reads::reads_of(&set, directives);
    match report.errors.is_empty() {
        true => Ok(set),
        false => Err(report.errors),
    }
}

/// Step 1: the directives in file order — chains gathered link by link, defaults, removals
/// and updates recorded, `SecRuleRemoveByTag` applied to the rules read so far.
fn read_directives<'a>(directives: &'a [Located], report: &mut Report) -> Directives<'a> {
    let mut read = Directives::default();
    let mut open_chain = false;
    for d in directives {
        match &d.directive {
            Directive::Rule {
                variables,
                operator,
                actions,
            } => {
                let pending = Pending {
                    at: &d.at,
                    variables: variables.clone(),
                    operator,
                    actions: actions.clone(),
                };
                match read.items.last_mut() {
                    Some(Item::Chain(_, links)) if open_chain => links.push(pending),
                    _ => {
                        let phase = phase_of(actions, &mut report.errors, &d.at);
                        read.items.push(Item::Chain(phase, vec![pending]));
                    }
                }
                open_chain = actions.iter().any(|a| a.name == "chain");
            }
            Directive::Action(actions) => {
                if open_chain {
                    report.error(&d.at, "SecAction cannot be a link of a chain".into());
                }
                let phase = phase_of(actions, &mut report.errors, &d.at);
                read.items.push(Item::Chain(
                    phase,
                    vec![Pending {
                        at: &d.at,
                        variables: Vec::new(),
                        operator: &UNCONDITIONAL,
                        actions: actions.clone(),
                    }],
                ));
                open_chain = false;
            }
            Directive::Marker(name) => {
                read.items.push(Item::Marker(name.clone()));
                open_chain = false;
            }
            Directive::DefaultAction(actions) => {
                let phase = phase_of(actions, &mut report.errors, &d.at);
                read.defaults.insert(
                    phase,
                    actions
                        .iter()
                        .filter(|a| a.name != "phase")
                        .cloned()
                        .collect(),
                );
            }
            Directive::UpdateTargetById { id, variables } => {
                read.target_updates
                    .entry(*id)
                    .or_default()
                    .extend(variables.iter().cloned());
            }
            Directive::UpdateActionById { id, actions } => {
                read.action_updates
                    .entry(*id)
                    .or_default()
                    .extend(actions.iter().cloned());
            }
            Directive::RemoveById(ranges) => read.removed.extend(ranges.iter().copied()),
            Directive::RemoveByTag(tag) => {
                report.warnings.push(format!(
                    "{}: SecRuleRemoveByTag {tag:?} is applied to the rules before it only",
                    d.at
                ));
                let tag = tag.clone();
                read.items.retain(|item| match item {
                    Item::Chain(_, links) => !links[0]
                        .actions
                        .iter()
                        .any(|a| a.name == "tag" && a.value.as_deref() == Some(tag.as_str())),
                    Item::Marker(_) => true,
                });
            }
            Directive::ComponentSignature(_) | Directive::CollectionTimeout(_) => {}
        }
    }
    if open_chain {
        if let Some(Item::Chain(_, links)) = read.items.last() {
            report.error(
                links[links.len() - 1].at,
                "the last rule says chain, but no rule follows".into(),
            );
        }
    }
    read
}

/// Step 2: each rule compiled with its id checked, removals and updates applied, and placed
/// in its phase (response phases are left out); markers and skips are noted by position.
fn place_rules(read: Directives, set: &mut RuleSet, report: &mut Report) -> Positions {
    let mut positions = Positions::default();
    let mut seen_ids = HashSet::new();
    for item in read.items {
        let (phase, mut links) = match item {
            Item::Marker(name) => {
                positions.markers.push((1, set.phase1.len(), name.clone()));
                positions.markers.push((2, set.phase2.len(), name));
                continue;
            }
            Item::Chain(phase, links) => (phase, links),
        };
        let first = &links[0];
        let id = first
            .actions
            .iter()
            .find(|a| a.name == "id")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(id) = id else {
            report.error(first.at, "a rule without an id; add id:N".into());
            continue;
        };
        if !seen_ids.insert(id) {
            report.error(first.at, format!("duplicate rule id {id}"));
        }
        if read.removed.iter().any(|(a, b)| (*a..=*b).contains(&id)) {
            continue;
        }
        if !matches!(phase, 1 | 2) {
            // Response phases: portcullis inspects requests only.
            continue;
        }
        if let Some(extra) = read.target_updates.get(&id) {
            links[0].variables.extend(extra.iter().cloned());
        }
        if let Some(extra) = read.action_updates.get(&id) {
            links[0].actions.extend(extra.iter().cloned());
        }
        let index = match phase {
            1 => set.phase1.len(),
            _ => set.phase2.len(),
        };
        let defaults = read.defaults.get(&phase).map(Vec::as_slice).unwrap_or(&[]);
        let Some((rule, skips)) = compile_chain(id, &links, defaults, report) else {
            continue;
        };
        for (marker, at) in skips {
            positions.skips.push((phase, index, marker, at));
        }
        match phase {
            1 => set.phase1.push(rule),
            _ => set.phase2.push(rule),
        }
    }
    positions
}

/// One chain's links compiled last to first, each holding the next: the first rule, and the
/// `skipAfter` markers its links name. `None` when a link does not compile (its error
/// recorded).
fn compile_chain(
    id: u64,
    links: &[Pending],
    defaults: &[Action],
    report: &mut Report,
) -> Option<(Rule, Vec<(String, Location)>)> {
    let mut compiled: Option<Rule> = None;
    let mut skips = Vec::new();
    for (n, link) in links.iter().enumerate().rev() {
        match compile_rule(id, link, defaults, n == 0, &mut report.gaps) {
            Ok((mut rule, skip)) => {
                if let Some(marker) = skip {
                    skips.push((marker, link.at.clone()));
                }
                rule.chain = compiled.take().map(Box::new);
                compiled = Some(rule);
            }
            Err(message) => {
                report.error(link.at, message);
                return None;
            }
        }
    }
    compiled.map(|rule| (rule, skips))
}

/// Step 3: each `skipAfter` resolved to the position of the first marker of that name after
/// its rule, in its phase.
fn resolve_skips(set: &mut RuleSet, positions: Positions, report: &mut Report) {
    for (phase, index, marker, at) in positions.skips {
        let rules = match phase {
            1 => &mut set.phase1,
            _ => &mut set.phase2,
        };
        let Some(target) = positions
            .markers
            .iter()
            .filter(|(p, _, name)| *p == phase && *name == marker)
            .map(|(_, position, _)| *position)
            .find(|position| *position > index)
        else {
            report.error(
                &at,
                format!("skipAfter:{marker} names no SecMarker after this rule"),
            );
            continue;
        };
        if let Some(rule) = rules.get_mut(index) {
            rule.skip_after = Some(target);
        }
    }
}

static UNCONDITIONAL: std::sync::LazyLock<crate::waf::seclang::Operator> =
    std::sync::LazyLock::new(|| crate::waf::seclang::Operator {
        negated: false,
        name: "unconditionalMatch".into(),
        argument: String::new(),
    });

fn phase_of(actions: &[Action], errors: &mut Vec<RuleError>, at: &Location) -> u8 {
    match actions.iter().rev().find(|a| a.name == "phase") {
        None => 2,
        Some(a) => match a.value.as_deref() {
            Some("1" | "request_headers") => 1,
            Some("2" | "request") => 2,
            Some("3" | "response_headers") => 3,
            Some("4" | "response") => 4,
            Some("5" | "logging") => 5,
            other => {
                errors.push(RuleError {
                    at: at.clone(),
                    message: format!("phase:{} is not a phase (1-5)", other.unwrap_or("")),
                });
                2
            }
        },
    }
}

fn target(v: &Variable) -> Result<Target, String> {
    let collection = Collection::from_name(&v.collection).ok_or_else(|| {
        format!(
            "variable {} is not supported; portcullis inspects requests (ARGS, REQUEST_HEADERS, \
             REQUEST_COOKIES, REQUEST_BODY, FILES, XML, TX, …)",
            v.collection
        )
    })?;
    let selector = match &v.selector {
        None => None,
        Some(Selector::Key(k)) => Some(TargetSelector::Key(k.to_ascii_lowercase())),
        Some(Selector::Regex(r)) if literal_prefix(r).is_some() => {
            literal_prefix(r).map(|p| TargetSelector::Prefix(p.to_ascii_lowercase()))
        }
        Some(Selector::Regex(r)) => Some(TargetSelector::Regex(
            regex::bytes::RegexBuilder::new(r)
                .case_insensitive(true)
                .build()
                .map_err(|e| format!("the selector /{r}/ is not a valid regex: {e}"))?,
        )),
    };
    Ok(Target {
        collection,
        selector,
        count: v.count,
        tx_number: None,
    })
}

/// The literal of a selector regex `^literal` made only of letters, digits, `_` and `-`
/// (which mean themselves in a regex).
fn literal_prefix(regex: &str) -> Option<&str> {
    let literal = regex.strip_prefix('^')?;
    let plain = literal
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (plain && !literal.is_empty()).then_some(literal)
}

fn setvar(value: &str) -> Result<SetVar, String> {
    let (delete, value) = match value.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (name, op) = match value.split_once('=') {
        None if delete => (value, SetOp::Delete),
        None => (value, SetOp::Set(Argument::parse("1"))),
        Some((name, v)) => (
            name,
            if let Some(add) = v.strip_prefix('+') {
                SetOp::Add(Argument::parse(add))
            } else if let Some(sub) = v.strip_prefix('-') {
                SetOp::Subtract(Argument::parse(sub))
            } else {
                SetOp::Set(Argument::parse(v))
            },
        ),
    };
    let name = name.trim().to_ascii_lowercase();
    if !name.contains('.') {
        return Err(format!(
            "setvar:{value:?} names no collection; write tx.NAME=VALUE"
        ));
    }
    let name = Argument::parse(&name);
    // Numbered with the other TX names once the rule set is whole.
    Ok(SetVar {
        name,
        tx_number: None,
        op,
    })
}

fn ctl(value: &str) -> Result<Ctl, String> {
    let (name, arg) = value
        .split_once('=')
        .ok_or_else(|| format!("ctl:{value} has no '='"))?;
    let id = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("ctl:{name}: {s:?} is not a rule id"))
    };
    let range = |part: &str| -> Result<(u64, u64), String> {
        match part.split_once('-') {
            Some((a, b)) => Ok((id(a)?, id(b)?)),
            None => Ok((id(part)?, id(part)?)),
        }
    };
    Ok(match name {
        "ruleRemoveById" => Ctl::RuleRemoveById(
            arg.split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(range)
                .collect::<Result<_, _>>()?,
        ),
        "ruleEngine" => Ctl::RuleEngine(match arg.to_ascii_lowercase().as_str() {
            "on" => EngineMode::On,
            "off" => EngineMode::Off,
            "detectiononly" => EngineMode::DetectionOnly,
            _ => {
                return Err(format!(
                    "ctl:ruleEngine={arg}: write On, Off or DetectionOnly"
                ))
            }
        }),
        "ruleRemoveByTag" => Ctl::RuleRemoveByTag(arg.to_string()),
        "ruleRemoveTargetById" | "ruleRemoveTargetByTag" => {
            let (which, target) = arg
                .split_once(';')
                .ok_or_else(|| format!("ctl:{name}={arg}: write ID_OR_TAG;VARIABLE"))?;
            let target = target.to_ascii_lowercase();
            if name == "ruleRemoveTargetById" {
                Ctl::RuleRemoveTargetById(range(which)?, target)
            } else {
                Ctl::RuleRemoveTargetByTag(which.to_string(), target)
            }
        }
        "requestBodyProcessor" => Ctl::RequestBodyProcessor(arg.to_ascii_uppercase()),
        "forceRequestBodyVariable" => Ctl::ForceRequestBodyVariable(arg.eq_ignore_ascii_case("on")),
        "auditEngine" | "auditLogParts" | "debugLogLevel" => Ctl::Ignored(name.to_string()),
        other => {
            return Err(format!(
                "ctl:{other} is not supported; portcullis evaluates ruleRemoveById, \
                 ruleRemoveByTag, ruleRemoveTargetById, ruleRemoveTargetByTag, ruleEngine, \
                 requestBodyProcessor and forceRequestBodyVariable"
            ))
        }
    })
}

/// One link: its own actions after the phase defaults (defaults do not apply to chain links
/// after the first, whose disruptive action is the chain's).
fn compile_rule(
    id: u64,
    link: &Pending,
    defaults: &[Action],
    first: bool,
    gaps: &mut Vec<String>,
) -> Result<(Rule, Option<String>), String> {
    let mut targets = smallvec::SmallVec::new();
    let mut exclusions = Vec::new();
    for v in &link.variables {
        let t = target(v)?;
        if t.collection == Collection::Unkept {
            gaps.push(format!(
                "{}: rule {id} reads {}, a collection portcullis does not keep: it is always empty",
                link.at, v.collection
            ));
        }
        if v.exclude {
            exclusions.push(t);
        } else {
            targets.push(t);
        }
    }
    let operator = Operator::compile(link.operator, &link.at.file)?;
    if let Operator::Unavailable(name) = &operator {
        gaps.push(format!(
            "{}: rule {id} uses @{name}, which portcullis does not evaluate: it never matches",
            link.at
        ));
    }
    let needs = operator.needs();
    let mut rule = Rule {
        id,
        needs,
        at: link.at.clone(),
        targets,
        exclusions,
        transformations: Vec::new(),
        operator,
        negated: link.operator.negated,
        capture: false,
        multi_match: false,
        setvars: Vec::new(),
        ctl: Vec::new(),
        tags: Vec::new(),
        ctl_tags: 0,
        disruptive: Disruptive::Pass,
        skip_after: None,
        log: true,
        msg: None,
        chain: None,
        chain_id: 0,
        screen: ScreenPart::Off,
        level: 0,
    };
    let mut skip_after = None;
    // The default `block` is the phase's default disruptive action.
    let mut default_disruptive = Disruptive::Pass;
    let actions = if first {
        defaults
            .iter()
            .chain(link.actions.iter())
            .collect::<Vec<_>>()
    } else {
        link.actions.iter().collect()
    };
    let mut in_defaults = if first { defaults.len() } else { 0 };
    for a in actions {
        let from_defaults = in_defaults > 0;
        in_defaults = in_defaults.saturating_sub(1);
        let value = a.value.as_deref().unwrap_or("");
        match a.name.as_str() {
            "id" | "phase" | "chain" => {}
            "t" if value == "none" => rule.transformations.clear(),
            "t" => rule.transformations.push(
                Transformation::from_name(value)
                    .ok_or_else(|| format!("t:{value} is not a supported transformation"))?,
            ),
            "capture" => rule.capture = true,
            "multiMatch" => rule.multi_match = true,
            "setvar" => rule.setvars.push(setvar(value)?),
            "ctl" => rule.ctl.push(ctl(value)?),
            "tag" => rule.tags.push(value.to_string()),
            "msg" => rule.msg = Some(Argument::parse(value)),
            "log" => rule.log = true,
            "nolog" => rule.log = false,
            "pass" | "deny" | "allow" | "block" | "drop" if !first => {
                return Err(format!(
                "{} in a chained rule: only a chain's first rule may name the disruptive action",
                a.name
            ))
            }
            "pass" => {
                if from_defaults {
                    default_disruptive = Disruptive::Pass;
                }
                rule.disruptive = Disruptive::Pass;
            }
            "deny" | "drop" => {
                if from_defaults {
                    default_disruptive = Disruptive::Deny;
                }
                rule.disruptive = Disruptive::Deny;
            }
            "allow" if value.is_empty() => rule.disruptive = Disruptive::Allow,
            "allow" => {
                return Err(format!(
                    "allow:{value} is not supported; use allow (the whole phase)"
                ))
            }
            "block" => rule.disruptive = default_disruptive,
            "skipAfter" => skip_after = Some(value.to_string()),
            "initcol" | "expirevar" | "deprecatevar" => gaps.push(format!(
                "{}: rule {id}: {} has no effect (portcullis keeps no persistent collections)",
                link.at, a.name
            )),
            name if META.contains(&name) => {}
            other => {
                return Err(format!(
                    "action {other} is not supported, so this rule cannot be evaluated as written"
                ))
            }
        }
    }
    Ok((rule, skip_after))
}
