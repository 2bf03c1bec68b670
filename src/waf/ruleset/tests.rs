//! Unit tests of compiling SecLang into a rule set.
use super::compile::compile;
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
    assert!(set.warnings.is_empty(), "{:#?}", set.warnings);
    assert!(
        set.gaps.iter().all(|w| w.contains("901320: initcol")),
        "{:#?}",
        set.gaps
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

/// Debian's CRS 3.3.4 compiles too; what it uses that portcullis leaves out is reported as
/// engine gaps, not as warnings about the configuration.
#[test]
fn debians_crs_3_compiles_with_its_gaps_reported() {
    let set = compile_files(&crate::waf::testing::debian_crs3());
    assert!(set.phase2.len() > 250, "{}", set.phase2.len());
    assert!(set.warnings.is_empty(), "{:#?}", set.warnings);
    let text = set.gaps.join("\n");
    assert!(
        text.contains("@geoLookup") && text.contains("@rbl"),
        "{text}"
    );
    assert!(text.contains("persistent collections"), "{text}");
}

fn reads(text: &str) -> Reads {
    compile_text(text).unwrap().reads
}

#[test]
fn a_rule_set_reads_its_targets_macros_and_their_sources() {
    use Collection::*;
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
    use Collection::*;
    let r = crate::waf::builtin::compile().unwrap().reads;
    assert!(r.has(RequestFilename) && r.has(Xml) && r.has(ReqbodyError));
    assert!(!r.has(RequestLine) && !r.has(ArgsPostNames) && !r.has(QueryString));
    assert!(Reads::default().has(RequestLine));
}
