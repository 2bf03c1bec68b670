//! SecLang operators (`@rx`, `@pm`, `@detectSQLi`, comparisons, …), compiled once from a rule's
//! text into what tests a value. Each follows ModSecurity 3: regexes are PCRE with `DOTALL` and
//! `MULTILINE` over bytes (here: the `regex` crate's byte regexes with `(?s)(?m)` and ASCII
//! classes), phrase matches are case-insensitive, numbers are read as C++'s `std::stoi` reads
//! them (garbage is 0). An argument may hold macros (`%{tx.allowed_methods}`), expanded per
//! transaction; everything else is prepared here.

pub mod needs;
#[cfg(test)]
mod needs_tests;
pub mod pcre;
mod verdicts;
pub mod words;

use crate::waf::seclang;
use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use pcre::{compile_regex, Regex};
use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use verdicts::Detector;
use words::{is_plain, is_word_path, is_word_text, may_be_xss};

/// A piece of an operator argument: text, or a macro `%{COLLECTION.key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(Vec<u8>),
    /// Collection upper case (`TX`, `REQUEST_HEADERS`), key lower case.
    Macro {
        collection: String,
        key: String,
    },
}

/// An operator argument that may need expanding per transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    parts: Vec<Part>,
}

/// What a transaction can say about a macro's value.
pub trait Macros {
    fn value(&self, collection: &str, key: &str) -> Option<Cow<'_, [u8]>>;
}

impl Argument {
    pub fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            let name = &rest[start + 2..start + 2 + len];
            if !rest[..start].is_empty() {
                parts.push(Part::Text(rest.as_bytes()[..start].to_vec()));
            }
            let (collection, key) = name.split_once('.').unwrap_or((name, ""));
            parts.push(Part::Macro {
                collection: collection.to_ascii_uppercase(),
                key: key.to_ascii_lowercase(),
            });
            rest = &rest[start + 2 + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.as_bytes().to_vec()));
        }
        Argument { parts }
    }

    /// Whether the argument is known without a transaction.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The argument's text when it holds no macro.
    pub fn constant(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The argument with its macros expanded (an unknown macro expands to nothing, as in
    /// ModSecurity).
    pub fn expand<'a>(&'a self, macros: &'a dyn Macros) -> Cow<'a, [u8]> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(b""),
            [Part::Text(t)] => Cow::Borrowed(t),
            // One macro: its value as the transaction holds it, not copied.
            [Part::Macro { collection, key }] => {
                macros.value(collection, key).unwrap_or(Cow::Borrowed(b""))
            }
            _ => {
                let mut out = Vec::new();
                self.expand_into(macros, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// The argument expanded (as `expand`), appended to `out`: a buffer that a caller keeps
    /// between uses allocates nothing.
    pub fn expand_into(&self, macros: &dyn Macros, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Macro { collection, key } => {
                    if let Some(v) = macros.value(collection, key) {
                        out.extend_from_slice(&v);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Comparison {
    /// Whether `value` compares so with `argument`.
    pub fn holds(self, value: i64, argument: i64) -> bool {
        match self {
            Comparison::Eq => value == argument,
            Comparison::Ge => value >= argument,
            Comparison::Gt => value > argument,
            Comparison::Le => value <= argument,
            Comparison::Lt => value < argument,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringTest {
    /// The value equals the argument.
    Streq,
    /// The value contains the argument.
    Contains,
    BeginsWith,
    EndsWith,
    /// The argument contains the value (an empty value matches).
    Within,
}

/// A compiled operator (without its `!`: the rule negates the result).
#[derive(Debug)]
pub enum Operator {
    Rx(Regex),
    /// `@rx` whose pattern holds macros (CRS 3: `^%{tx.allowed_request_content_type_charset}$`):
    /// compiled per distinct expansion, the last few kept.
    RxExpanded(Argument, RegexCache),
    /// `@pm` and `@pmFromFile`: any of the phrases, case-insensitively (the phrases until
    /// the rule set's screen takes them, when the rule set is compiled).
    Pm(AhoCorasick, Vec<String>),
    DetectSqli,
    DetectXss,
    Compare(Comparison, Argument),
    Strings(StringTest, Argument),
    /// `@validateByteRange`: matches when a byte is outside the allowed ranges.
    ValidateByteRange(Box<[bool; 256]>),
    /// Matches when a `%` is not followed by two hex digits.
    ValidateUrlEncoding,
    /// Matches when the value is not valid UTF-8.
    ValidateUtf8Encoding,
    IpMatch(Vec<IpNet>),
    UnconditionalMatch,
    /// `@geoLookup` (no GeoIP database) and `@rbl` (no DNS lookups from the request path):
    /// never match, as in ModSecurity without `SecGeoLookupDb` or a resolver. The rule-set
    /// compiler reports every rule that uses one.
    Unavailable(&'static str),
}

/// Regexes compiled from expanded `@rx` patterns: the expansions of one rule are few (the
/// values of setup variables), so a small list is enough.
#[derive(Debug, Default)]
pub struct RegexCache {
    compiled: std::sync::Mutex<Vec<(Vec<u8>, CachedRegex)>>,
}

/// A compiled expansion; `None` when it is not a valid regex.
type CachedRegex = std::sync::Arc<Option<Regex>>;

const REGEX_CACHE_SIZE: usize = 8;

impl RegexCache {
    fn get(&self, pattern: &[u8]) -> CachedRegex {
        let mut compiled = match self.compiled.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((_, re)) = compiled.iter().find(|(p, _)| p == pattern) {
            return re.clone();
        }
        // A pattern that does not compile never matches (ModSecurity logs and goes on).
        let re = std::sync::Arc::new(
            std::str::from_utf8(pattern)
                .ok()
                .and_then(|p| compile_regex(p).ok()),
        );
        if compiled.len() >= REGEX_CACHE_SIZE {
            compiled.remove(0);
        }
        compiled.push((pattern.to_vec(), re.clone()));
        re
    }
}

/// What matched: for `@rx`, the whole match and its groups (for `capture`: `TX.0` … `TX.9`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matched {
    pub captures: Vec<Vec<u8>>,
}

impl Operator {
    /// Compile `op` of a rule in `rule_file` (data files of `@pmFromFile` are next to it).
    pub fn compile(op: &seclang::Operator, rule_file: &Path) -> Result<Self, String> {
        let arg = op.argument.as_str();
        let constant = |what: &str| -> Result<(), String> {
            if Argument::parse(arg).is_constant() {
                Ok(())
            } else {
                Err(format!("@{what} takes no macros: {arg:?}"))
            }
        };
        Ok(match op.name.as_str() {
            "rx" if Argument::parse(arg).is_constant() => Operator::Rx(compile_regex(arg)?),
            "rx" => Operator::RxExpanded(Argument::parse(arg), RegexCache::default()),
            "pm" => {
                constant("pm")?;
                phrases(arg.split_whitespace().map(str::to_string).collect())?
            }
            "pmFromFile" | "pmf" => {
                let dir = rule_file.parent().unwrap_or(Path::new("."));
                let mut list = Vec::new();
                for name in arg.split_whitespace() {
                    let path = dir.join(name);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("@pmFromFile: cannot read {}: {e}", path.display()))?;
                    list.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                phrases(list)?
            }
            "detectSQLi" => Operator::DetectSqli,
            "detectXSS" => Operator::DetectXss,
            "eq" => Operator::Compare(Comparison::Eq, Argument::parse(arg)),
            "ge" => Operator::Compare(Comparison::Ge, Argument::parse(arg)),
            "gt" => Operator::Compare(Comparison::Gt, Argument::parse(arg)),
            "le" => Operator::Compare(Comparison::Le, Argument::parse(arg)),
            "lt" => Operator::Compare(Comparison::Lt, Argument::parse(arg)),
            "streq" => Operator::Strings(StringTest::Streq, Argument::parse(arg)),
            "contains" => Operator::Strings(StringTest::Contains, Argument::parse(arg)),
            "beginsWith" => Operator::Strings(StringTest::BeginsWith, Argument::parse(arg)),
            "endsWith" => Operator::Strings(StringTest::EndsWith, Argument::parse(arg)),
            "within" => Operator::Strings(StringTest::Within, Argument::parse(arg)),
            "validateByteRange" => {
                constant("validateByteRange")?;
                Operator::ValidateByteRange(byte_ranges(arg)?)
            }
            "validateUrlEncoding" => Operator::ValidateUrlEncoding,
            "validateUtf8Encoding" => Operator::ValidateUtf8Encoding,
            "ipMatch" => {
                constant("ipMatch")?;
                let mut nets = Vec::new();
                for item in arg.split([',', ' ']).filter(|s| !s.is_empty()) {
                    let net = item
                        .parse::<IpNet>()
                        .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("@ipMatch: {item:?} is not an address or CIDR"))?;
                    nets.push(net);
                }
                Operator::IpMatch(nets)
            }
            "unconditionalMatch" => Operator::UnconditionalMatch,
            "geoLookup" => Operator::Unavailable("geoLookup"),
            "rbl" => Operator::Unavailable("rbl"),
            other => {
                return Err(format!(
                    "operator @{other} is not supported; portcullis evaluates @rx, @pm, \
                     @pmFromFile, @detectSQLi, @detectXSS, @eq, @ge, @gt, @le, @lt, @streq, \
                     @contains, @beginsWith, @endsWith, @within, @validateByteRange, \
                     @validateUrlEncoding, @validateUtf8Encoding, @ipMatch and @unconditionalMatch"
                ))
            }
        })
    }

    /// Test one (transformed) value. `capture`: also return the regex groups.
    pub fn test(&self, value: &[u8], macros: &dyn Macros, capture: bool) -> Option<Matched> {
        let yes = |hit: bool| hit.then(Matched::default);
        match self {
            Operator::Rx(re) => regex_test(re, value, capture),
            Operator::RxExpanded(pattern, cache) => {
                let re = cache.get(&pattern.expand(macros));
                regex_test(re.as_ref().as_ref()?, value, capture)
            }
            Operator::Pm(ac, _) => yes(ac.is_match(value)),
            // A value without `<` or `=` is never flagged as XSS (`words::may_be_xss`): the
            // cheapest test first.
            Operator::DetectXss if !may_be_xss(value) => None,
            // A value of letters, digits, `_` and `.` alone, or words and numbers joined by
            // `-`, `/` or single spaces, is never flagged by libinjection (`words`' tests
            // `plain_values_are_clean_for_every_rule`, `word_paths_are_clean_for_libinjection`
            // and `word_texts_are_clean_for_libinjection` run both detectors on such values);
            // most values are such, and the detectors are costly.
            Operator::DetectSqli | Operator::DetectXss
                if is_plain(value) || is_word_path(value) || is_word_text(value) =>
            {
                None
            }
            Operator::DetectSqli => yes(verdicts::verdict(Detector::Sqli, value, |v| {
                libinjectionrs::SqliState::new(v, libinjectionrs::SqliFlags::FLAG_NONE).detect()
            })),
            Operator::DetectXss => yes(verdicts::verdict(Detector::Xss, value, |v| {
                libinjectionrs::detect_xss(v).is_injection()
            })),
            Operator::Compare(cmp, arg) => yes(compare(*cmp, value, arg, macros)),
            Operator::Strings(test, arg) => {
                let a = arg.expand(macros);
                yes(match test {
                    StringTest::Streq => value == &a[..],
                    StringTest::Contains => find(value, &a),
                    StringTest::BeginsWith => value.starts_with(&a),
                    StringTest::EndsWith => value.ends_with(&a),
                    StringTest::Within => value.is_empty() || find(&a, value),
                })
            }
            Operator::ValidateByteRange(allowed) => {
                yes(value.iter().any(|b| !allowed[*b as usize]))
            }
            Operator::ValidateUrlEncoding => yes(bad_url_encoding(value)),
            Operator::ValidateUtf8Encoding => yes(std::str::from_utf8(value).is_err()),
            Operator::IpMatch(nets) => {
                let ip = std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| t.trim().parse::<IpAddr>().ok());
                yes(ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))))
            }
            Operator::UnconditionalMatch => Some(Matched::default()),
            Operator::Unavailable(_) => None,
        }
    }
}

/// `@eq`, `@lt`, …: both sides read as integers. Apart from `test`, which is large, so that
/// the scoring and paranoia-level rules (most of what a request visits) stay cheap.
#[inline(never)]
fn compare(cmp: Comparison, value: &[u8], arg: &Argument, macros: &dyn Macros) -> bool {
    let a = match arg.constant() {
        Some(constant) => stoi(constant),
        None => stoi(&arg.expand(macros)),
    };
    cmp.holds(stoi(value), a)
}

fn regex_test(re: &Regex, value: &[u8], capture: bool) -> Option<Matched> {
    if !capture {
        return re.is_match(value).then(Matched::default);
    }
    Some(Matched {
        captures: re.captures(value)?,
    })
}

fn phrases(list: Vec<String>) -> Result<Operator, String> {
    if list.is_empty() {
        return Err("@pm has no phrases".into());
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&list)
        .map(|ac| Operator::Pm(ac, list))
        .map_err(|e| format!("@pm cannot be built: {e}"))
}

/// `32-36,38-126,9`: the bytes allowed.
fn byte_ranges(arg: &str) -> Result<Box<[bool; 256]>, String> {
    let mut allowed = Box::new([false; 256]);
    for item in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bound = |s: &str| {
            s.trim().parse::<u8>().map_err(|_| {
                format!("@validateByteRange: {item:?} is not a byte or a range of bytes")
            })
        };
        let (from, to) = match item.split_once('-') {
            Some((a, b)) => (bound(a)?, bound(b)?),
            None => (bound(item)?, bound(item)?),
        };
        if from > to {
            return Err(format!("@validateByteRange: empty range {item:?}"));
        }
        for b in from..=to {
            allowed[b as usize] = true;
        }
    }
    Ok(allowed)
}

/// C++'s `std::stoi`: white space, a sign, digits; no digits or out of `int` range → 0.
pub fn stoi(v: &[u8]) -> i64 {
    // One pass, byte by byte: the values read are short (scores, levels, counts).
    let mut i = 0;
    while v.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let negative = v.get(i) == Some(&b'-');
    if matches!(v.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let mut n: i64 = 0;
    while let Some(d) = v.get(i).filter(|b| b.is_ascii_digit()) {
        n = n * 10 + i64::from(d - b'0');
        if n > i64::from(i32::MAX) + 1 {
            return 0;
        }
        i += 1;
    }
    let n = if negative { -n } else { n };
    if n > i64::from(i32::MAX) || n < i64::from(i32::MIN) {
        0
    } else {
        n
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn bad_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if i + 2 >= v.len() || !v[i + 1].is_ascii_hexdigit() || !v[i + 2].is_ascii_hexdigit() {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::words::is_word_byte;
    use super::*;
    use std::collections::HashMap;

    struct Tx(HashMap<(String, String), Vec<u8>>);

    impl Macros for Tx {
        fn value(&self, collection: &str, key: &str) -> Option<Cow<'_, [u8]>> {
            self.0
                .get(&(collection.to_string(), key.to_string()))
                .map(|v| Cow::Borrowed(v.as_slice()))
        }
    }

    fn tx() -> Tx {
        Tx(HashMap::from([
            (
                ("TX".into(), "allowed_methods".into()),
                b"GET HEAD POST OPTIONS".to_vec(),
            ),
            (("TX".into(), "threshold".into()), b"5".to_vec()),
        ]))
    }

    /// An operator compiled from its name and argument (the needs tests use it too).
    pub(super) fn op(name: &str, argument: &str) -> Operator {
        Operator::compile(
            &seclang::Operator {
                negated: false,
                name: name.into(),
                argument: argument.into(),
            },
            Path::new("t.conf"),
        )
        .unwrap()
    }

    fn hit(o: &Operator, v: &[u8]) -> bool {
        o.test(v, &tx(), false).is_some()
    }

    #[test]
    fn regexes_are_pcre_like_over_bytes() {
        let rx = op("rx", r"(?i)^sel.ct\s+(\w+)$");
        assert!(hit(&rx, b"x\nSEL\nCT  abc\ny"), "dotall and multiline");
        assert!(!hit(&rx, "select é".as_bytes()), "\\w is ASCII");
        assert!(
            hit(&op("rx", r"\xff"), b"a\xffb"),
            "bytes that are not UTF-8"
        );
        let m = rx.test(b"select abc", &tx(), true).unwrap();
        assert_eq!(m.captures, vec![b"select abc".to_vec(), b"abc".to_vec()]);
        // Without groups: the whole match alone, leftmost-first as with groups.
        for (pattern, value, whole) in [
            (r"^.*$", &b"X-Forwarded-For"[..], &b"X-Forwarded-For"[..]),
            (r"^.*$", b"a\nb", b"a\nb"),
            (r"a|ab", b"xab", b"a"),
            (r"b+", b"abbbc", b"bbb"),
        ] {
            let m = op("rx", pattern).test(value, &tx(), true).unwrap();
            assert_eq!(m.captures, vec![whole.to_vec()], "{pattern}");
        }
        assert!(op("rx", "z").test(b"abc", &tx(), true).is_none());
    }

    #[test]
    fn phrases_numbers_strings_and_macros() {
        let pm = op("pm", "document.cookie <!-- union");
        assert!(hit(&pm, b"x=DOCUMENT.Cookie"));
        assert!(!hit(&pm, b"documentcookie"));
        assert!(hit(&op("gt", "%{tx.threshold}"), b"6"));
        assert!(!hit(&op("gt", "%{tx.threshold}"), b"5"));
        assert!(hit(&op("eq", "0"), b"abc"), "garbage reads as 0");
        assert!(hit(&op("lt", "1"), b" -3x"));
        assert!(hit(&op("within", "%{tx.allowed_methods}"), b"POST"));
        assert!(!hit(&op("within", "%{tx.allowed_methods}"), b"DELETE"));
        assert!(
            hit(&op("within", "%{tx.allowed_methods}"), b""),
            "empty is within"
        );
        assert!(hit(&op("endsWith", ".pdf"), b"a.pdf"));
        assert!(
            hit(&op("streq", "%{tx.unknown}"), b""),
            "unknown macros expand to nothing"
        );
        assert!(hit(&op("contains", "-->"), b"a-->b"));
        assert!(hit(&op("beginsWith", "ab"), b"abc"));
    }

    #[test]
    fn validators_detectors_and_addresses() {
        let range = op("validateByteRange", "32-36,38-126");
        assert!(!hit(&range, b"a b~"));
        assert!(hit(&range, b"a%b&"), "& (38) is allowed, % (37) is not");
        assert!(hit(&op("validateUrlEncoding", ""), b"a%zz"));
        assert!(hit(&op("validateUrlEncoding", ""), b"a%4"));
        assert!(!hit(&op("validateUrlEncoding", ""), b"a%41"));
        assert!(hit(&op("validateUtf8Encoding", ""), b"a\xc3("));
        assert!(!hit(&op("validateUtf8Encoding", ""), "é".as_bytes()));
        assert!(hit(&op("detectSQLi", ""), b"1' OR '1'='1"));
        assert!(!hit(&op("detectSQLi", ""), b"O'Brien"));
        assert!(hit(&op("detectXSS", ""), b"<script>alert(1)</script>"));
        let ip = op("ipMatch", "127.0.0.1,::1,10.0.0.0/8");
        assert!(hit(&ip, b"10.1.2.3") && hit(&ip, b"::1") && !hit(&ip, b"11.0.0.1"));
        assert!(hit(&op("unconditionalMatch", ""), b""));
    }

    #[test]
    fn bad_operators_are_errors() {
        let compile = |name: &str, argument: &str| {
            Operator::compile(
                &seclang::Operator {
                    negated: false,
                    name: name.into(),
                    argument: argument.into(),
                },
                Path::new("/nonexistent/t.conf"),
            )
            .unwrap_err()
        };
        assert!(compile("rx", "(unclosed").contains("cannot be compiled"));
        assert!(compile("pm", "a %{tx.x}").contains("no macros"));
        assert!(compile("pmFromFile", "missing.data").contains("cannot read"));
        assert!(compile("validateByteRange", "300").contains("not a byte"));
        assert!(compile("validateByteRange", "9-1").contains("empty range"));
        assert!(compile("ipMatch", "nope").contains("not an address"));
        assert!(compile("fuzzyHash", "").contains("not supported"));
        assert!(compile("pm", "").contains("no phrases"));
    }

    #[test]
    fn pcre_syntax_the_crate_reads_differently() {
        // A literal `{`, `[` inside a class, `&&` inside a class, `\x{..}`, non-ASCII bytes.
        assert!(hit(&op("rx", r"^\(\s*\)\s+{"), b"() {"));
        let class = op("rx", r"^[a[b]x$");
        assert!(hit(&class, b"[x") && hit(&class, b"bx") && !hit(&class, b"x"));
        assert!(hit(&op("rx", r"^[&&]+$"), b"&&"));
        assert!(hit(&op("rx", r"[\x7f-\x{ff}]"), b"\xfe"));
        let quotes = op("rx", "[´’]");
        assert!(
            hit(&quotes, b"\xb4") && hit(&quotes, b"\xe2"),
            "each byte is a member"
        );
        assert!(!hit(&quotes, b"a"));
        assert!(hit(&op("rx", r"a{2}b{1,}c{,"), b"aabbc{,"));
        // Look-around goes to the back-tracking engine, over bytes too.
        let behind = op("rx", r"(?<!&amp);");
        assert!(matches!(behind, Operator::Rx(Regex::Backtracking(_))));
        assert!(hit(&behind, b"a;") && !hit(&behind, b"&amp;"));
        assert!(hit(&op("rx", r"<\?(?!xml)"), b"<?php\xff"));
    }

    #[test]
    fn expanded_patterns_and_unavailable_operators() {
        let rx = op("rx", "^%{tx.allowed_methods}$");
        assert!(hit(&rx, b"GET HEAD POST OPTIONS"));
        assert!(!hit(&rx, b"GET"));
        assert!(
            !hit(&op("rx", "(%{tx.threshold}"), b"(5"),
            "an invalid expansion never matches"
        );
        assert!(!hit(&op("geoLookup", ""), b"1.2.3.4"));
        assert!(!hit(&op("rbl", "sbl-xbl.spamhaus.org"), b"1.2.3.4"));
    }

    #[test]
    fn stoi_reads_like_cpp() {
        for (text, n) in [
            (&b"42"[..], 42),
            (b"  -7abc", -7),
            (b"+3", 3),
            (b"x1", 0),
            (b"", 0),
            (b"99999999999", 0),
            (b"-2147483648", -2147483648),
            (b"2147483648", 0),
            (b" \t\n5", 5),
            (b"-", 0),
            (b"+-1", 0),
            (b" ", 0),
            (b"007", 7),
        ] {
            assert_eq!(stoi(text), n, "{:?}", String::from_utf8_lossy(text));
        }
    }

    /// Every operator of both Core Rule Sets here compiles: CRS v4 (the snapshot) and
    /// Debian's 3.3.4, whose data files sit next to their rules.
    #[test]
    fn every_crs_operator_compiles() {
        use crate::waf::seclang::{parse_file, Directive};
        let mut compiled = 0;
        let mut failures = Vec::new();
        for path in crate::waf::testing::both() {
            for d in parse_file(&path).unwrap() {
                if let Directive::Rule { operator, .. } = &d.directive {
                    match Operator::compile(operator, &path) {
                        Ok(_) => compiled += 1,
                        Err(e) => failures.push(format!("{}: {e}", d.at)),
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(compiled > 1_000, "{compiled}");
    }

    /// Every word of libinjection's keyword table, in any case and wherever it stands, takes
    /// a value out of the word-path shape; the packing into `u64` keeps words apart.
    #[test]
    fn no_keyword_is_an_inert_part() {
        let mut words = 0;
        for keyword in libinjectionrs::sqli::sqli_data::SQL_KEYWORDS {
            let word = keyword.word;
            if word.is_empty() || !word.bytes().all(is_word_byte) {
                continue;
            }
            words += 1;
            for value in [
                word.to_string(),
                word.to_ascii_lowercase(),
                format!("SKU-{}", word.to_ascii_lowercase()),
                format!("/v1/{word}/7"),
            ] {
                assert!(!is_word_path(value.as_bytes()), "{value}");
            }
        }
        assert!(words > 1_000, "{words} keywords");
        // Barewords next to keywords: a prefix or an extension of one is not one.
        for inert in [
            "SKU-00042-BLUE-M",
            "2026-12-03",
            "/v1/orders/4711",
            "selects",
            "unio",
        ] {
            assert!(is_word_path(inert.as_bytes()), "{inert}");
        }
        for outside in [
            "SeLeCt",
            "a-UNION",
            "x/current_timestamp",
            "-",
            "a--b",
            "1a",
            "a.b",
        ] {
            assert!(!is_word_path(outside.as_bytes()), "{outside}");
        }
    }
}
