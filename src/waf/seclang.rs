//! SecLang, the rule language of ModSecurity, Coraza and the OWASP Core Rule Set: files are
//! read into directives (rules, actions, markers, rule updates), each with the file and line it
//! starts on. This is syntax only; what the operators, transformations and actions mean is the
//! compiler's business, and anything it cannot evaluate faithfully is refused there.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a directive starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A syntax error: the file, the line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeclangError {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for SeclangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for SeclangError {}

/// A variable of a rule's target list, e.g. `ARGS`, `!REQUEST_COOKIES:/__utm/`,
/// `&TX:sampling_rnd100`, `REQUEST_HEADERS:User-Agent`, `XML:/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `!`: removes the selected members from the collection of the same rule.
    pub exclude: bool,
    /// `&`: the number of members instead of their values.
    pub count: bool,
    /// Upper case, e.g. `REQUEST_HEADERS`.
    pub collection: String,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A member name (compared case-insensitively for headers, cookies and args).
    Key(String),
    /// `/regex/`: the members whose names match.
    Regex(String),
}

/// A rule's operator, e.g. `@rx ^\d+$` or `!@eq 0`. A bare string is `@rx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub negated: bool,
    /// Without the `@`, e.g. `rx`, `pmFromFile`, `detectSQLi`.
    pub name: String,
    pub argument: String,
}

/// One action, e.g. `id:942100`, `t:urlDecodeUni`, `block`, `setvar:'tx.x=+5'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    /// Without the single quotes that may surround it.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `SecRule VARIABLES OPERATOR [ACTIONS]`
    Rule {
        variables: Vec<Variable>,
        operator: Operator,
        actions: Vec<Action>,
    },
    /// `SecAction ACTIONS`: a rule that always matches.
    Action(Vec<Action>),
    /// `SecMarker NAME`: a target for `skipAfter`.
    Marker(String),
    /// `SecDefaultAction ACTIONS`
    DefaultAction(Vec<Action>),
    /// `SecRuleUpdateTargetById ID VARIABLES`: adds or excludes targets of a rule.
    UpdateTargetById { id: u64, variables: Vec<Variable> },
    /// `SecRuleUpdateActionById ID ACTIONS`
    UpdateActionById { id: u64, actions: Vec<Action> },
    /// `SecRuleRemoveById ID|FROM-TO …`
    RemoveById(Vec<(u64, u64)>),
    /// `SecRuleRemoveByTag TAG`
    RemoveByTag(String),
    /// `SecComponentSignature TEXT`: informational.
    ComponentSignature(String),
    /// `SecCollectionTimeout SECONDS` (CRS 3's setup file): the lifetime of persistent
    /// collections. portcullis keeps none, so it changes nothing; rules that open one
    /// (`initcol`) are refused when the rule set is compiled.
    CollectionTimeout(u64),
}

/// A directive and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub at: Location,
    pub directive: Directive,
}

/// Parse one file's text. `file` is only used for locations.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Located>, SeclangError> {
    let mut out = Vec::new();
    for (line, logical) in logical_lines(text) {
        let at = Location {
            file: file.to_path_buf(),
            line,
        };
        let error = |message: String| SeclangError {
            at: at.clone(),
            message,
        };
        let words = split_words(&logical).map_err(error)?;
        let Some((name, args)) = words.split_first() else {
            continue;
        };
        let directive = directive(name, args).map_err(error)?;
        out.push(Located { at, directive });
    }
    Ok(out)
}

/// Read and parse a file.
pub fn parse_file(file: &Path) -> Result<Vec<Located>, SeclangError> {
    let text = std::fs::read_to_string(file).map_err(|e| SeclangError {
        at: Location {
            file: file.to_path_buf(),
            line: 0,
        },
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&text, file)
}

/// The `*.conf` files of a rule directory in name order: the order the Core Rule Set's files
/// are meant to load in (`REQUEST-901-…` before `REQUEST-942-…`).
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    Ok(files)
}

/// Parse files in the order given into one list of directives.
pub fn parse_files(files: &[PathBuf]) -> Result<Vec<Located>, SeclangError> {
    let mut all = Vec::new();
    for file in files {
        all.extend(parse_file(file)?);
    }
    Ok(all)
}

/// Lines joined across trailing backslashes, comments and blank lines dropped, each with the
/// number of the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let continued = line.ends_with('\\');
        let body = if continued {
            &line[..line.len() - 1]
        } else {
            line
        };
        match current.as_mut() {
            Some((_, joined)) => joined.push_str(body),
            None => {
                let trimmed = body.trim_start();
                if trimmed.is_empty() && !continued || trimmed.starts_with('#') {
                    continue;
                }
                current = Some((i + 1, body.to_string()));
            }
        }
        if !continued {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// Words separated by white space; a double-quoted word may hold white space and `\"`.
/// Other backslash escapes are kept as written: they belong to the regex or the action text.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('"') => word.push('"'),
                        Some(other) => {
                            word.push('\\');
                            word.push(other);
                        }
                        None => word.push('\\'),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => word.push(other),
                }
            }
            if !closed {
                return Err("a quoted argument is not closed; add the missing '\"'".into());
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(
                    "text right after a closing '\"'; separate arguments with a space".into(),
                );
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

fn directive(name: &str, args: &[String]) -> Result<Directive, String> {
    let arity = |min: usize, max: usize, form: &str| {
        if (min..=max).contains(&args.len()) {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {form}; found {} argument(s)",
                args.len()
            ))
        }
    };
    match name {
        "SecRule" => {
            arity(2, 3, "VARIABLES \"OPERATOR\" \"ACTIONS\"")?;
            Ok(Directive::Rule {
                variables: variables(&args[0])?,
                operator: operator(&args[1]),
                actions: args.get(2).map(|a| actions(a)).transpose()?.unwrap_or_default(),
            })
        }
        "SecAction" => {
            arity(1, 1, "\"ACTIONS\"")?;
            Ok(Directive::Action(actions(&args[0])?))
        }
        "SecMarker" => {
            arity(1, 1, "a marker name")?;
            Ok(Directive::Marker(args[0].clone()))
        }
        "SecDefaultAction" => {
            arity(1, 1, "\"ACTIONS\"")?;
            Ok(Directive::DefaultAction(actions(&args[0])?))
        }
        "SecRuleUpdateTargetById" => {
            arity(2, 2, "a rule id and \"VARIABLES\"")?;
            Ok(Directive::UpdateTargetById {
                id: rule_id(&args[0])?,
                variables: variables(&args[1])?,
            })
        }
        "SecRuleUpdateActionById" => {
            arity(2, 2, "a rule id and \"ACTIONS\"")?;
            Ok(Directive::UpdateActionById {
                id: rule_id(&args[0])?,
                actions: actions(&args[1])?,
            })
        }
        "SecRuleRemoveById" => {
            arity(1, usize::MAX, "rule ids or ranges (FROM-TO)")?;
            let mut ranges = Vec::new();
            for arg in args {
                for part in arg.split_whitespace() {
                    let range = match part.split_once('-') {
                        Some((from, to)) => (rule_id(from)?, rule_id(to)?),
                        None => {
                            let id = rule_id(part)?;
                            (id, id)
                        }
                    };
                    if range.0 > range.1 {
                        return Err(format!("empty range {part}; write FROM-TO with FROM <= TO"));
                    }
                    ranges.push(range);
                }
            }
            Ok(Directive::RemoveById(ranges))
        }
        "SecRuleRemoveByTag" => {
            arity(1, 1, "a tag")?;
            Ok(Directive::RemoveByTag(args[0].clone()))
        }
        "SecComponentSignature" => {
            arity(1, 1, "a text")?;
            Ok(Directive::ComponentSignature(args[0].clone()))
        }
        "SecCollectionTimeout" => {
            arity(1, 1, "a number of seconds")?;
            args[0]
                .parse()
                .map(Directive::CollectionTimeout)
                .map_err(|_| format!("{:?} is not a number of seconds", args[0]))
        }
        other => Err(format!(
            "unsupported directive {other:?}: portcullis evaluates SecRule, SecAction, SecMarker, \
             SecDefaultAction, SecRuleUpdateTargetById, SecRuleUpdateActionById, SecRuleRemoveById, \
             SecRuleRemoveByTag, SecComponentSignature and SecCollectionTimeout; engine settings belong in portcullis.toml"
        )),
    }
}

fn rule_id(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{text:?} is not a rule id (a positive integer)"))
}

/// `A|!B:x|&C:/re|gex/`: split on `|` outside a `/…/` selector.
fn variables(text: &str) -> Result<Vec<Variable>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (part, next) = split_variable(rest);
        out.push(variable(part.trim())?);
        rest = next;
    }
    if out.is_empty() {
        return Err("no variables; name at least one, e.g. ARGS".into());
    }
    Ok(out)
}

/// The first variable of a list and what follows its `|`.
fn split_variable(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_regex = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_regex => i += 1,
            b'/' if in_regex => in_regex = false,
            // `XML:/*` and `XML://@*` are XPath expressions, not regexes.
            b'/' if i > 0
                && bytes[i - 1] == b':'
                && !text[..i - 1]
                    .trim_start_matches(['!', '&'])
                    .eq_ignore_ascii_case("XML") =>
            {
                in_regex = true
            }
            b'|' if !in_regex => return (&text[..i], &text[i + 1..]),
            _ => {}
        }
        i += 1;
    }
    (text, "")
}

fn variable(text: &str) -> Result<Variable, String> {
    let (exclude, count, text) = match text.as_bytes().first() {
        Some(b'!') => (true, false, &text[1..]),
        Some(b'&') => (false, true, &text[1..]),
        _ => (false, false, text),
    };
    let (collection, selector) = match text.split_once(':') {
        Some((c, s)) => (c, Some(s)),
        None => (text, None),
    };
    if collection.is_empty()
        || !collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "{text:?} is not a variable; write e.g. ARGS or REQUEST_HEADERS:User-Agent"
        ));
    }
    let selector = match selector {
        None => None,
        Some("") => return Err(format!("{text:?} has an empty selector after ':'")),
        Some(s) if collection.eq_ignore_ascii_case("XML") => Some(Selector::Key(s.to_string())),
        Some(s) if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') => {
            Some(Selector::Regex(s[1..s.len() - 1].to_string()))
        }
        Some(s) => Some(Selector::Key(s.trim_matches('\'').to_string())),
    };
    Ok(Variable {
        exclude,
        count,
        collection: collection.to_ascii_uppercase(),
        selector,
    })
}

fn operator(text: &str) -> Operator {
    let (negated, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match text.strip_prefix('@') {
        Some(rest) => {
            let (name, argument) = rest
                .split_once(|c: char| c.is_whitespace())
                .unwrap_or((rest, ""));
            Operator {
                negated,
                name: name.to_string(),
                argument: argument.trim_start().to_string(),
            }
        }
        None => Operator {
            negated,
            name: "rx".into(),
            argument: text.to_string(),
        },
    }
}

/// `a,b:c,d:'e, f'`: split on commas outside single quotes.
fn actions(text: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                current.push(c);
                current.extend(chars.next());
            }
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => {
                out.push(action(&current)?);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "a quoted action value is not closed in {text:?}; add the missing \"'\""
        ));
    }
    if !current.trim().is_empty() {
        out.push(action(&current)?);
    }
    Ok(out)
}

fn action(text: &str) -> Result<Action, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty action (two commas in a row, or a trailing comma)".into());
    }
    let (name, value) = match text.split_once(':') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (text, None),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "{text:?} is not an action; write NAME or NAME:VALUE"
        ));
    }
    let value = value.map(|v| {
        let unquoted = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        unquoted.replace("\\'", "'")
    });
    Ok(Action {
        name: name.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Directive {
        let mut all = parse(text, Path::new("t.conf")).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).directive
    }

    fn err(text: &str) -> SeclangError {
        parse(text, Path::new("t.conf")).unwrap_err()
    }

    #[test]
    fn a_crs_style_rule_across_lines() {
        let text = "# comment\n\nSecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|ARGS:/^(a|b)$/|&TX:x|XML:/*|XML://@* \"@rx (?i)\\\"a b\\\\\" \\\n    \"id:942100,\\\n    phase:2,\\\n    t:none,t:urlDecodeUni,\\\n    msg:'SQL, it\\'s here',\\\n    setvar:'tx.score=+%{tx.critical}',\\\n    chain\"\n";
        let all = parse(text, Path::new("t.conf")).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].at.line, 3);
        let Directive::Rule {
            variables,
            operator,
            actions,
        } = &all[0].directive
        else {
            panic!("{all:?}");
        };
        let names: Vec<(&str, bool, bool, Option<&Selector>)> = variables
            .iter()
            .map(|v| {
                (
                    v.collection.as_str(),
                    v.exclude,
                    v.count,
                    v.selector.as_ref(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("REQUEST_COOKIES", false, false, None),
                (
                    "REQUEST_COOKIES",
                    true,
                    false,
                    Some(&Selector::Regex("__utm".into()))
                ),
                (
                    "ARGS",
                    false,
                    false,
                    Some(&Selector::Regex("^(a|b)$".into()))
                ),
                ("TX", false, true, Some(&Selector::Key("x".into()))),
                ("XML", false, false, Some(&Selector::Key("/*".into()))),
                ("XML", false, false, Some(&Selector::Key("//@*".into()))),
            ]
        );
        assert_eq!(operator.name, "rx");
        assert_eq!(operator.argument, "(?i)\"a b\\\\");
        let got: Vec<(&str, Option<&str>)> = actions
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("id", Some("942100")),
                ("phase", Some("2")),
                ("t", Some("none")),
                ("t", Some("urlDecodeUni")),
                ("msg", Some("SQL, it's here")),
                ("setvar", Some("tx.score=+%{tx.critical}")),
                ("chain", None),
            ]
        );
    }

    #[test]
    fn operators_actions_and_other_directives() {
        assert_eq!(
            one("SecRule ARGS \"!@eq 0\" \"id:1\""),
            Directive::Rule {
                variables: vec![Variable {
                    exclude: false,
                    count: false,
                    collection: "ARGS".into(),
                    selector: None
                }],
                operator: Operator {
                    negated: true,
                    name: "eq".into(),
                    argument: "0".into()
                },
                actions: vec![Action {
                    name: "id".into(),
                    value: Some("1".into())
                }],
            }
        );
        assert!(matches!(
            one("SecRule ARGS \"bare regex\""),
            Directive::Rule { operator, actions, .. } if operator.name == "rx" && operator.argument == "bare regex" && actions.is_empty()
        ));
        assert_eq!(
            one("SecMarker \"END-X\""),
            Directive::Marker("END-X".into())
        );
        assert_eq!(
            one("SecRuleRemoveById 942100 920000-920999"),
            Directive::RemoveById(vec![(942100, 942100), (920000, 920999)])
        );
        assert!(matches!(
            one("SecRuleUpdateTargetById 942100 \"!ARGS:password\""),
            Directive::UpdateTargetById { id: 942100, variables } if variables[0].exclude
        ));
        assert!(matches!(
            one("SecAction \"id:900000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=1\""),
            Directive::Action(actions) if actions.len() == 5
        ));
    }

    #[test]
    fn malformed_input_is_an_error_with_its_line() {
        for (text, line, words) in [
            ("\nSecRule ARGS \"@rx a", 2, "not closed"),
            (
                "SecRuleEngine On",
                1,
                "unsupported directive \"SecRuleEngine\"",
            ),
            ("SecRule ARGS", 1, "takes VARIABLES"),
            (
                "SecRule ARGS \"@rx a\" \"id:1,,phase:2\"",
                1,
                "empty action",
            ),
            ("SecRule ARGS \"@rx a\" \"msg:'open\"", 1, "not closed"),
            ("SecRule AR-GS \"@rx a\"", 1, "not a variable"),
            ("SecRule ARGS: \"@rx a\"", 1, "empty selector"),
            ("SecRuleRemoveById 10-2", 1, "empty range"),
            ("SecRuleRemoveById abc", 1, "not a rule id"),
            ("#x\n\nSecRule ARGS \"a\"x", 3, "right after"),
        ] {
            let e = err(text);
            assert_eq!(e.at.line, line, "{text}: {e}");
            assert!(e.message.contains(words), "{text}: {e}");
            assert!(e.to_string().starts_with("t.conf:"), "{e}");
        }
        assert!(parse("", Path::new("t.conf")).unwrap().is_empty());
        assert!(parse("# only\n  # comments\n\n", Path::new("t.conf"))
            .unwrap()
            .is_empty());
    }

    /// Parses every file and checks what a rule set must hold: as many rules as `SecRule` lines,
    /// an id on every rule that is not a chain link, no id twice.
    fn parse_rule_set(files: &[PathBuf]) -> (usize, std::collections::HashSet<u64>) {
        let (mut rules, mut ids) = (0, std::collections::HashSet::new());
        let mut expected_rules = 0;
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            expected_rules += text
                .lines()
                .filter(|l| l.trim_start().starts_with("SecRule "))
                .count();
            let parsed = parse(&text, file).unwrap_or_else(|e| panic!("{e}"));
            let mut chained = false;
            for d in &parsed {
                if let Directive::Rule { actions, .. } | Directive::Action(actions) = &d.directive {
                    if matches!(d.directive, Directive::Rule { .. }) {
                        rules += 1;
                    }
                    let id = actions.iter().find(|a| a.name == "id");
                    match (chained, id) {
                        (false, Some(id)) => {
                            let id: u64 = id.value.as_deref().unwrap().parse().unwrap();
                            assert!(ids.insert(id), "{}: duplicate id {id}", d.at);
                        }
                        (false, None) => panic!("{}: a rule without an id", d.at),
                        (true, _) => {}
                    }
                    chained = actions.iter().any(|a| a.name == "chain");
                }
            }
        }
        assert_eq!(rules, expected_rules);
        (rules, ids)
    }

    /// The CRS v4 snapshot in ../shared/crs parses whole: every rule file and the setup file.
    #[test]
    fn the_crs_v4_snapshot_parses() {
        let (rules, ids) = parse_rule_set(&crate::waf::testing::crs_v4());
        assert!(rules > 600, "{rules}");
        assert!(ids.contains(&942100) && ids.contains(&949110));
    }

    /// Debian's modsecurity-crs 3.3.4 (installed by .ci/deps) parses whole too.
    #[test]
    fn debians_crs_3_parses() {
        let (rules, ids) = parse_rule_set(&crate::waf::testing::debian_crs3());
        assert!(rules > 500, "{rules}");
        assert!(ids.contains(&942100) && ids.contains(&949110));
    }
}
