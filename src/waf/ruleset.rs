//! SecLang directives → one compiled, immutable rule set: rules grouped by request phase (1:
//! headers, 2: body), chains linked, `SecDefaultAction` applied, `t:` lists resolved (`none`
//! resets them), operators compiled, `skipAfter` markers resolved to positions, and
//! `SecRuleRemoveById` / `SecRuleUpdateTargetById` / `SecRuleUpdateActionById` applied.
//! Anything this engine would evaluate differently from ModSecurity is an error naming the file
//! and line; what it deliberately leaves out (response phases, persistent collections, GeoIP,
//! DNS lists) is a warning.

use super::operator::{Argument, Comparison, Operator, Part};
use super::seclang::{Action, Directive, Located, Location, Selector, Variable};
use super::transform::Transformation;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Defines `Collection` and `Collection::ALL` from one list, so that the table of
/// collections by index cannot drift from the enum.
macro_rules! collections {
    ($($(#[$doc:meta])* $name:ident,)+) => {
        /// A collection (or single variable) a rule can inspect.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Collection {
            $($(#[$doc])* $name,)+
        }

        impl Collection {
            /// Every collection, by its index.
            pub const ALL: [Collection; Collection::COUNT] = [$(Collection::$name,)+];
        }
    };
}

collections! {
    Args,
    ArgsNames,
    ArgsGet,
    ArgsGetNames,
    ArgsPost,
    ArgsPostNames,
    ArgsCombinedSize,
    Duration,
    Files,
    FilesNames,
    FilesSizes,
    FilesCombinedSize,
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    MultipartPartHeaders,
    QueryString,
    RemoteAddr,
    ReqbodyError,
    ReqbodyErrorMsg,
    ReqbodyProcessor,
    RequestBasename,
    RequestBody,
    RequestBodyLength,
    RequestCookies,
    RequestCookiesNames,
    RequestFilename,
    RequestHeaders,
    RequestHeadersNames,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    RequestUri,
    RequestUriRaw,
    Tx,
    UniqueId,
    Xml,
    /// Persistent collections (`IP`, `GLOBAL`, `SESSION`, `USER`, `RESOURCE`) and `GEO`: not
    /// kept by portcullis, so always empty (reported as a warning where a rule reads one).
    Unkept,
}

impl Collection {
    /// How many collections there are (`Unkept` is the last).
    pub const COUNT: usize = Collection::Unkept as usize + 1;

    /// Whether the collection holds the request's own values, fixed for the phase that
    /// reads them (not TX or MATCHED_*, which change as rules run).
    pub fn is_request(self) -> bool {
        !matches!(
            self,
            Collection::Tx
                | Collection::MatchedVar
                | Collection::MatchedVarName
                | Collection::MatchedVars
                | Collection::MatchedVarsNames
        )
    }

    pub fn from_name(name: &str) -> Option<Self> {
        use Collection::*;
        Some(match name {
            "ARGS" => Args,
            "ARGS_NAMES" => ArgsNames,
            "ARGS_GET" => ArgsGet,
            "ARGS_GET_NAMES" => ArgsGetNames,
            "ARGS_POST" => ArgsPost,
            "ARGS_POST_NAMES" => ArgsPostNames,
            "ARGS_COMBINED_SIZE" => ArgsCombinedSize,
            "DURATION" => Duration,
            "FILES" => Files,
            "FILES_NAMES" => FilesNames,
            "FILES_SIZES" => FilesSizes,
            "FILES_COMBINED_SIZE" => FilesCombinedSize,
            "MATCHED_VAR" => MatchedVar,
            "MATCHED_VAR_NAME" => MatchedVarName,
            "MATCHED_VARS" => MatchedVars,
            "MATCHED_VARS_NAMES" => MatchedVarsNames,
            "MULTIPART_PART_HEADERS" => MultipartPartHeaders,
            "QUERY_STRING" => QueryString,
            "REMOTE_ADDR" => RemoteAddr,
            "REQBODY_ERROR" => ReqbodyError,
            "REQBODY_ERROR_MSG" => ReqbodyErrorMsg,
            "REQBODY_PROCESSOR" => ReqbodyProcessor,
            "REQUEST_BASENAME" => RequestBasename,
            "REQUEST_BODY" => RequestBody,
            "REQUEST_BODY_LENGTH" => RequestBodyLength,
            "REQUEST_COOKIES" => RequestCookies,
            "REQUEST_COOKIES_NAMES" => RequestCookiesNames,
            "REQUEST_FILENAME" => RequestFilename,
            "REQUEST_HEADERS" => RequestHeaders,
            "REQUEST_HEADERS_NAMES" => RequestHeadersNames,
            "REQUEST_LINE" => RequestLine,
            "REQUEST_METHOD" => RequestMethod,
            "REQUEST_PROTOCOL" => RequestProtocol,
            "REQUEST_URI" => RequestUri,
            "REQUEST_URI_RAW" => RequestUriRaw,
            "TX" => Tx,
            "UNIQUE_ID" => UniqueId,
            "XML" => Xml,
            "IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" | "GEO" => Unkept,
            _ => return None,
        })
    }
}

/// One target of a rule: a collection, optionally narrowed to members, or counted (`&`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub collection: Collection,
    /// Lower-cased key for collections whose member names are case-insensitive.
    pub selector: Option<TargetSelector>,
    pub count: bool,
    /// For `TX:name`: the variable's number (`RuleSet::tx_names`), given when the rule set
    /// is compiled.
    pub tx_number: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum TargetSelector {
    Key(String),
    /// `/^header_name_/`: a regex that only anchors a literal, tested without the regex
    /// (lower case, compared case-insensitively as the regex would be).
    Prefix(String),
    Regex(regex::bytes::Regex),
}

impl PartialEq for TargetSelector {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TargetSelector::Key(a), TargetSelector::Key(b)) => a == b,
            (TargetSelector::Prefix(a), TargetSelector::Prefix(b)) => a == b,
            (TargetSelector::Regex(a), TargetSelector::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for TargetSelector {}

/// `setvar:COLLECTION.name=value`, `=+value`, `=-value`, `!COLLECTION.name`, or a bare name
/// (set to 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVar {
    /// Lower case; may hold macros (`tx.%{rule.id}-…`).
    pub name: Argument,
    /// The TX variable a constant name sets (`anomaly_score_pl1` of
    /// `tx.anomaly_score_pl1`), known at compile time: its number in `RuleSet::tx_names`.
    pub tx_number: Option<u32>,
    pub op: SetOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOp {
    Set(Argument),
    Add(Argument),
    Subtract(Argument),
    Delete,
}

/// What a matching rule does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruptive {
    /// Go on (anomaly scoring mode: the usual case).
    Pass,
    /// Refuse the request now.
    Deny,
    /// Stop evaluating rules of this phase and let the request through (`allow`).
    Allow,
}

/// `ctl:` actions that change the rest of this transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctl {
    RuleRemoveById(Vec<(u64, u64)>),
    RuleRemoveByTag(String),
    /// Ids `from..=to`, and the target (`ARGS:password`, lower case).
    RuleRemoveTargetById((u64, u64), String),
    RuleRemoveTargetByTag(String, String),
    /// `requestBodyProcessor=XML|JSON|URLENCODED|MULTIPART`
    RequestBodyProcessor(String),
    /// `forceRequestBodyVariable=on`: `REQUEST_BODY` is filled whatever the processor.
    ForceRequestBodyVariable(bool),
    /// `ruleEngine=On|Off|DetectionOnly` for the rest of this transaction.
    RuleEngine(EngineMode),
    /// Settings of ModSecurity's audit and debug logs: no effect on a decision.
    Ignored(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    Off,
    DetectionOnly,
}

/// A compiled rule (or a link of a chain). Laid out in the order the evaluator reads it:
/// the fields every visited rule reads come first, in the rule's first cache lines, and
/// those read only for a report or at compile time last (a benign request visits a few
/// hundred rules, and misses in the cache on each line it touches).
#[derive(Debug)]
#[repr(C)]
pub struct Rule {
    /// The id of the chain's first rule for every link.
    pub id: u64,
    /// Which of `RuleSet::ctl_tags` this rule carries (bit `i` for tag `i`).
    pub ctl_tags: u64,
    /// Index into `RuleSet::chains`: the transformation chain (and `multiMatch`) this rule
    /// shares with others, computed once per value and request.
    pub chain_id: u32,
    /// A plain `@rx` or a `@pm` list that ordinary values do not match: its patterns are
    /// part of `RuleSet::screen`, and the rule's own operator runs only on values that part
    /// of the screen matches.
    pub screen: Screening,
    /// The paranoia level of the rule (its chain's first rule's `paranoia-level/N` tag; 0
    /// without one): a request at level 1 uses a screen without the patterns of the rules
    /// above it, and runs those rules unscreened if it reaches them.
    pub level: u8,
    pub negated: bool,
    pub capture: bool,
    pub log: bool,
    /// Only on a chain's first rule.
    pub disruptive: Disruptive,
    pub multi_match: bool,
    /// Index (in this phase's list) to continue after, for `skipAfter`.
    pub skip_after: Option<usize>,
    /// Most rules read one target (a TX variable, a header): it is kept in the rule itself,
    /// not in a heap block of its own that a visit would have to fetch as well.
    pub targets: smallvec::SmallVec<[Target; 1]>,
    pub exclusions: Vec<Target>,
    pub setvars: Vec<SetVar>,
    pub ctl: Vec<Ctl>,
    pub chain: Option<Box<Rule>>,
    pub operator: Operator,
    pub at: Location,
    pub transformations: Vec<Transformation>,
    pub tags: Vec<String>,
    pub msg: Option<Argument>,
}

/// Which part of the rule set's screen stands for a rule's operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Screening {
    /// Not screened: the operator runs on every value.
    #[default]
    Off,
    /// The regexes (an `@rx` rule).
    Regex,
    /// The phrases (a `@pm` rule).
    Phrases,
}

impl Rule {
    pub fn screened(&self) -> bool {
        self.screen != Screening::Off
    }
}

/// A transformation chain shared by rules: a value is transformed once per chain.
#[derive(Debug)]
pub struct Chain {
    pub transformations: Vec<Transformation>,
    pub multi_match: bool,
    /// Every byte class one of the transformations may act on (`class::ANY` if one always
    /// acts).
    pub touches: u32,
    /// For a value, the transformations that can act on it (a bit mask over
    /// `transformations`, from its byte classes) name an *effective chain*, shared by every
    /// chain that reduces to the same list: its id, by mask (empty for a chain too long to
    /// tabulate, which is then its own effective chain, `own`). Values are transformed and
    /// screened once per effective chain.
    pub effective: Vec<u32>,
    pub own: u32,
}

/// What the evaluator reads of a rule before the rule itself: whether it can be passed over
/// when no member of its collections passes the screen after its chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
    /// The collections (bit `i` for `Collection::ALL[i]`) of a screened rule whose every
    /// target is a whole request collection (or a pattern over its members); 0 for a rule
    /// that is always read.
    pub collections: u64,
    pub chain_id: u32,
    pub screen: Screening,
    pub level: u8,
    /// Gates with the same collections, chain and screen part have the same answer while
    /// the request's collections stay as they are: they share this number
    /// (`0..RuleSet::gate_classes`), so that a transaction asks once for all of them.
    pub class: u32,
    /// For a rule that compares one TX variable (`TxTest`): its index in
    /// `RuleSet::tx_tests` plus one; 0 for any other rule.
    pub tx_test: u32,
}

/// A rule whose first link compares one TX variable, as it is, with a number or another TX
/// variable (`TX:DETECTION_PARANOIA_LEVEL "@lt 2"`, `TX:BLOCKING_INBOUND_ANOMALY_SCORE "@ge
/// %{tx.inbound_anomaly_score_threshold}"`, `&TX:x "@eq 0"`): the paranoia-level gates, the
/// set-up and the scoring rules, most of what a request visits. The evaluator decides such a
/// rule from this small copy without reading the rule, unless it matches and does more than
/// set MATCHED_VAR(S) and skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxTest {
    pub id: u64,
    /// The variable's number (`RuleSet::tx_names`).
    pub number: u32,
    /// `&TX:name`: 1 when the variable is set, else 0.
    pub count: bool,
    pub negated: bool,
    pub comparison: Comparison,
    pub argument: TxArgument,
    /// A match only sets MATCHED_VAR(S) and skips (`skip_after`): no `setvar`, `ctl`,
    /// chain, log or disruptive action.
    pub plain: bool,
    pub skip_after: Option<u32>,
}

/// What a `TxTest` compares its variable with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxArgument {
    Number(i64),
    /// A TX variable by number (0 when unset, as the macro expands to nothing).
    Tx(u32),
}

/// The request phases portcullis evaluates: 1 (headers) and 2 (body).
#[derive(Debug, Default)]
pub struct RuleSet {
    pub phase1: Vec<Rule>,
    pub phase2: Vec<Rule>,
    /// Beside each rule of `phase1` and `phase2`, its gate: a small array walked in order,
    /// so that a rule that cannot match is passed over without touching its (large) data.
    pub gates: [Vec<Gate>; 2],
    pub warnings: Vec<String>,
    pub chains: Vec<Chain>,
    /// How many effective chains the chains reduce to (ids `0..effective_chains`).
    pub effective_chains: u32,
    /// How many distinct gates there are (`Gate::class`).
    pub gate_classes: u32,
    /// The tags that the rules' `ctl:ruleRemoveByTag` and `ctl:ruleRemoveTargetByTag` name
    /// (the first 64), so that whether a rule carries one is a bit test, not a walk through
    /// its tags (CRS's 941010 removes a target by tag on every ordinary request).
    pub ctl_tags: Vec<String>,
    /// The plain `@rx` patterns of the rules marked `screened`, as one automaton: one scan of
    /// a value (after a chain) that matches none of them answers for all of those rules.
    pub screen: Option<super::operator::Screen>,
    /// The screen of the patterns and phrases of the rules at paranoia level 1 and of those
    /// without a level (absent when that is all of them), for requests that run at level 1:
    /// a rule above it is not screened by it (`Rule::level`).
    pub screen_pl1: Option<super::operator::Screen>,
    /// The TX names rules read or set by a constant name, numbered (`Target::tx_number`,
    /// `SetVar::tx_number`).
    pub tx_names: std::sync::Arc<super::scratch::TxNames>,
    /// The rules decided by a `TxTest` (`Gate::tx_test`).
    pub tx_tests: Vec<TxTest>,
}

/// A compile error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

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
    operator: &'a super::seclang::Operator,
    actions: Vec<Action>,
}

/// Compile directives (in file order, all files concatenated) into a rule set.
pub fn compile(directives: &[Located]) -> Result<RuleSet, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut defaults: HashMap<u8, Vec<Action>> = HashMap::new();
    // Rules (by phase, as lists of chain links) and markers, in file order.
    let mut items: Vec<Item> = Vec::new();
    let mut removed: Vec<(u64, u64)> = Vec::new();
    let mut target_updates: HashMap<u64, Vec<Variable>> = HashMap::new();
    let mut action_updates: HashMap<u64, Vec<Action>> = HashMap::new();
    let mut open_chain = false;
    let err = |errors: &mut Vec<RuleError>, at: &Location, message: String| {
        errors.push(RuleError {
            at: at.clone(),
            message,
        })
    };
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
                match items.last_mut() {
                    Some(Item::Chain(_, links)) if open_chain => links.push(pending),
                    _ => {
                        let phase = phase_of(actions, &mut errors, &d.at);
                        items.push(Item::Chain(phase, vec![pending]));
                    }
                }
                open_chain = actions.iter().any(|a| a.name == "chain");
            }
            Directive::Action(actions) => {
                if open_chain {
                    err(
                        &mut errors,
                        &d.at,
                        "SecAction cannot be a link of a chain".into(),
                    );
                }
                let phase = phase_of(actions, &mut errors, &d.at);
                items.push(Item::Chain(
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
                items.push(Item::Marker(name.clone()));
                open_chain = false;
            }
            Directive::DefaultAction(actions) => {
                let phase = phase_of(actions, &mut errors, &d.at);
                defaults.insert(
                    phase,
                    actions
                        .iter()
                        .filter(|a| a.name != "phase")
                        .cloned()
                        .collect(),
                );
            }
            Directive::UpdateTargetById { id, variables } => {
                target_updates
                    .entry(*id)
                    .or_default()
                    .extend(variables.iter().cloned());
            }
            Directive::UpdateActionById { id, actions } => {
                action_updates
                    .entry(*id)
                    .or_default()
                    .extend(actions.iter().cloned());
            }
            Directive::RemoveById(ranges) => removed.extend(ranges.iter().copied()),
            Directive::RemoveByTag(tag) => {
                warnings.push(format!(
                    "{}: SecRuleRemoveByTag {tag:?} is applied to the rules before it only",
                    d.at
                ));
                let tag = tag.clone();
                items.retain(|item| match item {
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
        if let Some(Item::Chain(_, links)) = items.last() {
            err(
                &mut errors,
                links[links.len() - 1].at,
                "the last rule says chain, but no rule follows".into(),
            );
        }
    }

    let mut set = RuleSet::default();
    let mut seen_ids = HashSet::new();
    // (phase, position in that phase's compiled list, name) of every marker.
    let mut markers: Vec<(u8, usize, String)> = Vec::new();
    // (phase, index in phase, marker name) of every skipAfter, resolved at the end.
    let mut skips: Vec<(u8, usize, String, Location)> = Vec::new();
    for item in items {
        let (phase, links) = match item {
            Item::Marker(name) => {
                markers.push((1, set.phase1.len(), name.clone()));
                markers.push((2, set.phase2.len(), name));
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
            err(
                &mut errors,
                first.at,
                "a rule without an id; add id:N".into(),
            );
            continue;
        };
        if !seen_ids.insert(id) {
            err(&mut errors, first.at, format!("duplicate rule id {id}"));
        }
        if removed.iter().any(|(a, b)| (*a..=*b).contains(&id)) {
            continue;
        }
        if !matches!(phase, 1 | 2) {
            // Response phases: portcullis inspects requests only.
            continue;
        }
        let index = if phase == 1 {
            set.phase1.len()
        } else {
            set.phase2.len()
        };
        let mut links = links;
        if let Some(extra) = target_updates.get(&id) {
            links[0].variables.extend(extra.iter().cloned());
        }
        if let Some(extra) = action_updates.get(&id) {
            links[0].actions.extend(extra.iter().cloned());
        }
        let phase_defaults = defaults.get(&phase).map(Vec::as_slice).unwrap_or(&[]);
        let mut compiled: Option<Rule> = None;
        for (n, link) in links.iter().enumerate().rev() {
            match compile_rule(id, link, phase_defaults, n == 0, &mut warnings) {
                Ok((mut rule, skip)) => {
                    if let Some(marker) = skip {
                        skips.push((phase, index, marker, link.at.clone()));
                    }
                    rule.chain = compiled.take().map(Box::new);
                    compiled = Some(rule);
                }
                Err(message) => {
                    err(&mut errors, link.at, message);
                    compiled = None;
                    break;
                }
            }
        }
        if let Some(rule) = compiled {
            match phase {
                1 => set.phase1.push(rule),
                _ => set.phase2.push(rule),
            }
        }
    }
    for (phase, index, marker, at) in skips {
        let rules = if phase == 1 {
            &mut set.phase1
        } else {
            &mut set.phase2
        };
        let Some(target) = markers
            .iter()
            .filter(|(p, _, name)| *p == phase && *name == marker)
            .map(|(_, position, _)| *position)
            .find(|position| *position > index)
        else {
            err(
                &mut errors,
                &at,
                format!("skipAfter:{marker} names no SecMarker after this rule"),
            );
            continue;
        };
        if let Some(rule) = rules.get_mut(index) {
            rule.skip_after = Some(target);
        }
    }
    set.warnings = warnings;
    index_chains(&mut set);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Chains of up to this many transformations have their effective chains tabulated.
const TABULATED: usize = 10;

impl Chain {
    /// Whether the chain certainly gives back a value with these byte classes as it is.
    pub fn leaves(&self, classes: u32) -> bool {
        self.touches != super::transform::class::ANY && self.touches & classes == 0
    }

    /// For a value with these byte classes: the transformations that may change it (a mask
    /// over `transformations`) and the id of that effective chain; `None` when none may.
    pub fn effective(&self, classes: u32) -> Option<(u32, u32)> {
        if self.leaves(classes) {
            return None;
        }
        if self.effective.is_empty() {
            return Some((u32::MAX, self.own));
        }
        let (mut now, mut mask) = (classes, 0u32);
        for (i, t) in self.transformations.iter().enumerate() {
            if !t.leaves(now) {
                mask |= 1 << i;
                now |= t.produces();
            }
        }
        match mask {
            0 => None,
            m => self.effective.get(m as usize).map(|id| (m, *id)),
        }
    }
}

/// Number the effective chains: every sub-list of a chain's transformations (with its
/// `multiMatch`) gets one id, the same wherever the same list comes up.
fn number_effective_chains(chains: &mut [Chain]) -> u32 {
    let mut ids: HashMap<(Vec<Transformation>, bool), u32> = HashMap::new();
    let mut intern = |list: Vec<Transformation>, multi: bool| {
        let next = ids.len() as u32;
        *ids.entry((list, multi)).or_insert(next)
    };
    for chain in chains.iter_mut() {
        let n = chain.transformations.len();
        if n > TABULATED {
            chain.own = intern(chain.transformations.clone(), chain.multi_match);
            continue;
        }
        chain.effective = (0..1u32 << n)
            .map(|mask| {
                let list = chain
                    .transformations
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, t)| *t)
                    .collect();
                intern(list, chain.multi_match)
            })
            .collect();
    }
    ids.len() as u32
}

/// Give every rule (and chain link) its chain id and `RegexSet` slot, and build the sets.
fn index_chains(set: &mut RuleSet) {
    struct Index {
        ids: HashMap<(Vec<Transformation>, bool), u32>,
        chains: Vec<Chain>,
    }
    fn visit(rule: &mut Rule, index: &mut Index) {
        let key = (rule.transformations.clone(), rule.multi_match);
        let id = match index.ids.get(&key) {
            Some(id) => *id,
            None => {
                let id = index.chains.len() as u32;
                let touches = rule.transformations.iter().fold(0u32, |acc, t| {
                    let touches = t.touches();
                    if touches == super::transform::class::ANY
                        || acc == super::transform::class::ANY
                    {
                        super::transform::class::ANY
                    } else {
                        acc | touches
                    }
                });
                index.chains.push(Chain {
                    transformations: rule.transformations.clone(),
                    multi_match: rule.multi_match,
                    touches,
                    effective: Vec::new(),
                    own: 0,
                });
                index.ids.insert(key, id);
                id
            }
        };
        rule.chain_id = id;
        if let Some(next) = rule.chain.as_deref_mut() {
            visit(next, index);
        }
    }
    let mut index = Index {
        ids: HashMap::new(),
        chains: Vec::new(),
    };
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        visit(rule, &mut index);
    }
    set.effective_chains = number_effective_chains(&mut index.chains);
    set.chains = index.chains;
    mark_ctl_tags(set);
    number_tx_names(set);
    build_screen(set);
    let mut classes = Vec::new();
    let mut tests = Vec::new();
    set.gates = [
        gates(&set.phase1, &mut classes, &set.tx_names, &mut tests),
        gates(&set.phase2, &mut classes, &set.tx_names, &mut tests),
    ];
    set.tx_tests = tests;
    set.gate_classes = classes.len() as u32;
}

/// Each rule's gate. A screened rule that is not negated matches only through a member that
/// passes the screen after its chain; when every target is a whole request collection (or
/// members selected by a pattern), none passing in any of them means no match, and neither
/// exclusions nor removed targets can add one. Counted and named targets are read from the
/// rule itself (a named member is screened on its own, without the whole collection).
/// `classes` gathers the distinct (collections, chain, screen part) of the gates numbered
/// so far. A rule that compares one TX variable gets a `TxTest` (added to `tests`) instead.
fn gates(
    rules: &[Rule],
    classes: &mut Vec<(u64, u32, Screening)>,
    names: &super::scratch::TxNames,
    tests: &mut Vec<TxTest>,
) -> Vec<Gate> {
    rules
        .iter()
        .map(|rule| {
            if let Some(test) = tx_test(rule, names) {
                tests.push(test);
                return Gate {
                    tx_test: tests.len() as u32,
                    ..Gate::default()
                };
            }
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
            let key = (collections, rule.chain_id, rule.screen);
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
                level: rule.level,
                class: class as u32,
                tx_test: 0,
            }
        })
        .collect()
}

/// The `TxTest` of a rule whose first link compares one TX variable as it is (no
/// transformation, no exclusion) with a constant or one TX variable.
fn tx_test(rule: &Rule, names: &super::scratch::TxNames) -> Option<TxTest> {
    let [target] = rule.targets.as_slice() else {
        return None;
    };
    let number = target.tx_number?;
    if !rule.transformations.is_empty() || !rule.exclusions.is_empty() {
        return None;
    }
    let Operator::Compare(comparison, argument) = &rule.operator else {
        return None;
    };
    let argument = match (argument.constant(), argument.parts()) {
        (Some(c), _) => TxArgument::Number(super::operator::stoi(c)),
        (None, [Part::Macro { collection, key }]) if collection == "TX" => {
            TxArgument::Tx(names.number(key)?)
        }
        _ => return None,
    };
    Some(TxTest {
        id: rule.id,
        number,
        count: target.count,
        negated: rule.negated,
        comparison: *comparison,
        argument,
        plain: rule.setvars.is_empty()
            && rule.ctl.is_empty()
            && rule.chain.is_none()
            && !rule.log
            && rule.disruptive == Disruptive::Pass,
        skip_after: match rule.skip_after {
            Some(to) => Some(u32::try_from(to).ok()?),
            None => None,
        },
    })
}

/// Numbers the TX names that rules read (`TX:name`) or set (`setvar:tx.name`) by a constant
/// name, and the regex groups' `tx.0`…`tx.9`.
fn number_tx_names(set: &mut RuleSet) {
    fn number(rule: &mut Rule, names: &mut super::scratch::TxNames) {
        for t in rule.targets.iter_mut().chain(rule.exclusions.iter_mut()) {
            if let (Collection::Tx, Some(TargetSelector::Key(k))) = (t.collection, &t.selector) {
                t.tx_number = Some(names.intern(k));
            }
        }
        // A comparison with one TX variable (`@ge %{tx.threshold}`): `TxTest::argument`.
        if let Operator::Compare(_, a) = &rule.operator {
            if let [Part::Macro { collection, key }] = a.parts() {
                if collection == "TX" {
                    names.intern(key);
                }
            }
        }
        for s in &mut rule.setvars {
            let key = s.name.constant().and_then(|n| n.strip_prefix(b"tx."));
            s.tx_number = key
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(|k| names.intern(k));
        }
        if let Some(next) = rule.chain.as_deref_mut() {
            number(next, names);
        }
    }
    let mut names = super::scratch::TxNames::default();
    for n in 0..10 {
        names.intern(&n.to_string());
    }
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        number(rule, &mut names);
    }
    set.tx_names = std::sync::Arc::new(names);
}

/// Gathers the tags that `ctl` actions remove rules or targets by, and marks each rule (each
/// link of a chain on its own, as each is evaluated with its own tags) with those it carries.
fn mark_ctl_tags(set: &mut RuleSet) {
    fn gather(rule: &Rule, tags: &mut Vec<String>) {
        for c in &rule.ctl {
            if let Ctl::RuleRemoveByTag(t) | Ctl::RuleRemoveTargetByTag(t, _) = c {
                if !tags.contains(t) && tags.len() < 64 {
                    tags.push(t.clone());
                }
            }
        }
        if let Some(next) = rule.chain.as_deref() {
            gather(next, tags);
        }
    }
    fn mark(rule: &mut Rule, tags: &[String]) {
        rule.ctl_tags = tags
            .iter()
            .enumerate()
            .filter(|(_, t)| rule.tags.contains(t))
            .fold(0, |bits, (i, _)| bits | 1 << i);
        if let Some(next) = rule.chain.as_deref_mut() {
            mark(next, tags);
        }
    }
    let mut tags = Vec::new();
    for rule in set.phase1.iter().chain(&set.phase2) {
        gather(rule, &mut tags);
    }
    for rule in set.phase1.iter_mut().chain(set.phase2.iter_mut()) {
        mark(rule, &tags);
    }
    set.ctl_tags = tags;
}

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

fn build_screen(set: &mut RuleSet) {
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
                rule.screen = Screening::Phrases;
                for phrase in list {
                    let at = phrases.entry(phrase).or_insert(level);
                    *at = (*at).min(level);
                }
            }
            return;
        }
        let Operator::Rx(super::operator::Regex::Bytes(re)) = &rule.operator else {
            return;
        };
        // A clone has a search cache of its own, dropped here: calibration leaves the rule's
        // regex as cold as it was (warm caches of 230 regexes were tens of MiB per process).
        let probe = re.clone();
        if ORDINARY.iter().any(|v| probe.is_match(v)) {
            return;
        }
        rule.screen = Screening::Regex;
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
        super::operator::Screen::new(&patterns, &phrases).ok()
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
                r.screen = Screening::Off;
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

static UNCONDITIONAL: std::sync::LazyLock<super::seclang::Operator> =
    std::sync::LazyLock::new(|| super::seclang::Operator {
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
    warnings: &mut Vec<String>,
) -> Result<(Rule, Option<String>), String> {
    let mut targets = smallvec::SmallVec::new();
    let mut exclusions = Vec::new();
    for v in &link.variables {
        let t = target(v)?;
        if t.collection == Collection::Unkept {
            warnings.push(format!(
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
        warnings.push(format!(
            "{}: rule {id} uses @{name}, which portcullis does not evaluate: it never matches",
            link.at
        ));
    }
    let mut rule = Rule {
        id,
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
        screen: Screening::Off,
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
            "initcol" | "expirevar" | "deprecatevar" => warnings.push(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::seclang::parse;
    use std::path::{Path, PathBuf};

    fn compile_text(text: &str) -> Result<RuleSet, Vec<RuleError>> {
        compile(&parse(text, Path::new("t.conf")).unwrap())
    }

    #[test]
    fn defaults_chains_markers_and_removals() {
        let set = compile_text(
            r#"
SecDefaultAction "phase:2,log,auditlog,pass,t:lowercase"
SecRule ARGS "@rx a" "id:1,phase:2,block,t:urlDecodeUni,setvar:'tx.score=+%{tx.critical}',skipAfter:END"
SecRule REQUEST_HEADERS:User-Agent|!ARGS:/^pass/ "@pm x y" "id:2,phase:2,deny,t:none,t:removeNulls,chain"
    SecRule MATCHED_VARS "@rx b" "t:none,setvar:tx.two=1,chain"
        SecRule TX:x "@eq 1" "setvar:!tx.y"
SecRule ARGS "@rx c" "id:3,phase:1,pass,nolog"
SecRule ARGS "@rx d" "id:4,phase:2,block"
SecMarker END
SecRule ARGS "@rx e" "id:5,phase:2,allow"
SecRuleRemoveById 4
"#,
        )
        .unwrap();
        assert_eq!(set.phase1.iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
        assert_eq!(
            set.phase2.iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 2, 5]
        );
        let one = &set.phase2[0];
        assert_eq!(
            one.transformations,
            [Transformation::Lowercase, Transformation::UrlDecodeUni],
            "the default t: comes first"
        );
        assert_eq!(one.disruptive, Disruptive::Pass, "block = the default pass");
        assert_eq!(
            one.skip_after,
            Some(2),
            "continue at the rule after the marker"
        );
        assert_eq!(one.setvars.len(), 1);
        let two = &set.phase2[1];
        assert_eq!(two.disruptive, Disruptive::Deny);
        assert_eq!(two.transformations, [Transformation::RemoveNulls]);
        assert_eq!(two.exclusions.len(), 1);
        let link = two.chain.as_ref().unwrap();
        assert_eq!(link.id, 2);
        assert!(link.transformations.is_empty());
        let last = link.chain.as_ref().unwrap();
        assert_eq!(last.setvars[0].op, SetOp::Delete);
        assert!(last.chain.is_none());
        assert_eq!(set.phase2[2].disruptive, Disruptive::Allow);
        assert!(!set.phase1[0].log);
    }

    #[test]
    fn what_cannot_be_evaluated_is_an_error_with_its_line() {
        for (text, line, words) in [
            ("SecRule ARGS \"@rx a\" \"phase:2\"", 1, "without an id"),
            (
                "SecRule ARGS \"@rx a\" \"id:1\"\nSecRule ARGS \"@rx b\" \"id:1\"",
                2,
                "duplicate rule id 1",
            ),
            (
                "SecRule RESPONSE_BODY \"@rx a\" \"id:1\"",
                1,
                "RESPONSE_BODY is not supported",
            ),
            ("SecRule ARGS \"@rx a\" \"id:1,t:magic\"", 1, "t:magic"),
            (
                "SecRule ARGS \"@rx a\" \"id:1,exec:/bin/sh\"",
                1,
                "action exec",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,skipAfter:NOWHERE\"",
                1,
                "names no SecMarker",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,chain\"",
                1,
                "no rule follows",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,chain\"\nSecRule ARGS \"@rx b\" \"deny\"",
                2,
                "chained rule",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,ctl:requestBodyAccess=Off\"",
                1,
                "ctl:requestBodyAccess",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,ctl:ruleEngine=Maybe\"",
                1,
                "ruleEngine=Maybe",
            ),
            ("SecRule ARGS \"@rx a\" \"id:1,phase:9\"", 1, "not a phase"),
            ("SecRule ARGS \"@rx (\" \"id:1\"", 1, "cannot be compiled"),
        ] {
            let Err(errors) = compile_text(text) else {
                panic!("{text}: compiled");
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.at.line == line && e.message.contains(words)),
                "{text}: {errors:?}"
            );
        }
    }

    fn compile_files(list: &[PathBuf]) -> RuleSet {
        let all = crate::waf::seclang::parse_files(list).unwrap();
        compile(&all).unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    /// CRS v4 (with its setup file first, as deployed) compiles whole; the one warning is its
    /// optional persistent collections (off unless tx.enable_default_collections is set).
    #[test]
    fn every_collection_sits_at_its_index_in_all() {
        // Gates name collections by their index into `Collection::ALL`.
        assert_eq!(Collection::ALL.len(), Collection::COUNT);
        for (i, c) in Collection::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    #[test]
    fn crs_v4_compiles() {
        let set = compile_files(&crate::waf::testing::crs_v4());
        assert!(
            set.phase1.len() > 150 && set.phase2.len() > 250,
            "{} / {}",
            set.phase1.len(),
            set.phase2.len()
        );
        assert!(
            set.warnings.iter().all(|w| w.contains("901320: initcol")),
            "{:#?}",
            set.warnings
        );
        let sqli = set.phase2.iter().find(|r| r.id == 942100).unwrap();
        assert_eq!(
            sqli.transformations,
            [
                Transformation::Utf8ToUnicode,
                Transformation::UrlDecodeUni,
                Transformation::RemoveNulls
            ]
        );
        let blocking = set.phase2.iter().find(|r| r.id == 949110).unwrap();
        assert_eq!(blocking.disruptive, Disruptive::Deny);
        // Every skipAfter lands inside its phase.
        for rules in [&set.phase1, &set.phase2] {
            for (i, r) in rules.iter().enumerate() {
                if let Some(to) = r.skip_after {
                    assert!(to > i && to <= rules.len(), "rule {} skips to {to}", r.id);
                }
            }
        }
    }

    /// Debian's CRS 3.3.4 compiles too; what it uses that portcullis leaves out is reported.
    #[test]
    fn debians_crs_3_compiles_with_warnings() {
        let set = compile_files(&crate::waf::testing::debian_crs3());
        assert!(set.phase2.len() > 250, "{}", set.phase2.len());
        let text = set.warnings.join("\n");
        assert!(
            text.contains("@geoLookup") && text.contains("@rbl"),
            "{text}"
        );
        assert!(text.contains("persistent collections"), "{text}");
    }
}

#[cfg(test)]
mod effective_tests {
    use super::*;
    use crate::waf::transform::{byte_classes, class, class_tests::ALL};
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
}
