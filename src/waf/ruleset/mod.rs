//! The compiled, immutable rule set: rules grouped by request phase (1: headers, 2: body), each
//! with its targets, operator, transformation chain and actions; the chains shared by rules;
//! what the evaluator reads before a rule (gates, TX tests); the prefilter's screens. `compile`
//! builds it from SecLang directives; `index` numbers and indexes it for the evaluator.

pub mod compile;
#[cfg(test)]
mod effective_tests;
mod index;
pub(super) mod reads;
#[cfg(test)]
mod tests;

use super::operator::{Argument, Comparison, Operator};
use super::prefilter::{Screen, ScreenPart};
use super::seclang::Location;
use super::transform::Transformation;
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
    /// A portcullis extension, not in ModSecurity: each segment of `REQUEST_FILENAME`, named
    /// by its position from 1, so that a rule can test a path parameter on its own.
    RequestPathSegments,
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
            "REQUEST_PATH_SEGMENTS" => RequestPathSegments,
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
    pub screen: ScreenPart,
    /// The paranoia level of the rule (its chain's first rule's `paranoia-level/N` tag; 0
    /// without one): a request at level 1 uses a screen without the patterns of the rules
    /// above it, and runs those rules unscreened if it reaches them.
    pub level: u8,
    /// `Operator::needs`: a value (after the chain) holding no byte of these classes cannot
    /// match the operator.
    pub needs: u32,
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

impl Rule {
    pub fn screened(&self) -> bool {
        self.screen != ScreenPart::Off
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
    pub screen: ScreenPart,
    /// The rule's `needs`: a collection none of whose values holds a byte of these classes
    /// (and that the chain leaves as they are) passes nothing, unscreened.
    pub needs: u32,
    pub level: u8,
    /// Gates with the same collections, chain, screen part and needs have the same answer while
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
    /// What the operator's rule files do that probably is not meant (a `SecRuleRemoveByTag`
    /// that can only reach the rules before it).
    pub warnings: Vec<String>,
    /// What the rules use that this engine leaves out on purpose (persistent collections,
    /// `@geoLookup`, `@rbl`): those parts never act. Facts about the engine, not about the
    /// configuration.
    pub gaps: Vec<String>,
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
    pub screen: Option<Screen>,
    /// The screen of the patterns and phrases of the rules at paranoia level 1 and of those
    /// without a level (absent when that is all of them), for requests that run at level 1:
    /// a rule above it is not screened by it (`Rule::level`).
    pub screen_pl1: Option<Screen>,
    /// The TX names rules read or set by a constant name, numbered (`Target::tx_number`,
    /// `SetVar::tx_number`).
    pub tx_names: std::sync::Arc<super::scratch::TxNames>,
    /// The rules decided by a `TxTest` (`Gate::tx_test`).
    pub tx_tests: Vec<TxTest>,
    /// The collections the evaluator fills: those the rules read, and their sources.
    pub reads: Reads,
}

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

impl Reads {
    pub const NONE: Reads = Reads(0);

    pub fn has(self, c: Collection) -> bool {
        self.0 & (1 << c as u32) != 0
    }

    pub fn add(&mut self, c: Collection) {
        self.0 |= 1 << c as u32;
    }
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
