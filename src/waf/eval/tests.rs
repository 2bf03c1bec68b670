//! Unit tests of the evaluator, over small rule sets and CRS v4.
use super::body::read_json;
use super::*;
use crate::waf::ruleset::compile::compile;
use crate::waf::seclang::parse;
use std::path::Path;

fn rules(text: &str) -> RuleSet {
    compile(&parse(text, Path::new("t.conf")).unwrap()).unwrap()
}

fn get(uri: &str) -> Request<'_> {
    Request {
        method: "GET",
        uri,
        protocol: "HTTP/1.1",
        headers: vec![("Host", b"localhost")],
        body: b"",
        remote_addr: "127.0.0.1",
        unique_id: "1",
        json: None,
    }
}

const SCORING: &str = r#"
SecDefaultAction "phase:1,log,pass"
SecDefaultAction "phase:2,log,pass"
SecAction "id:1,phase:1,nolog,setvar:tx.critical=5,setvar:tx.threshold=5"
SecRule ARGS "@rx (?i)union\s+select" "id:10,phase:2,block,t:urlDecodeUni,setvar:'tx.score=+%{tx.critical}'"
SecRule REQUEST_COOKIES|!REQUEST_COOKIES:safe "@contains <script" "id:11,phase:2,block,t:lowercase,setvar:'tx.score=+%{tx.critical}'"
SecRule REQUEST_HEADERS:User-Agent "@pm sqlmap nikto" "id:12,phase:1,block,setvar:'tx.score=+%{tx.critical}'"
SecRule TX:score "@ge %{tx.threshold}" "id:949110,phase:2,deny,setvar:tx.blocking_inbound_anomaly_score=%{tx.score}"
"#;

#[test]
fn a_request_sees_nothing_of_the_last_one_on_its_thread() {
    // Collections keep their entries' buffers between requests: a shorter request after
    // a longer one must see only its own members, names and counts.
    let set = rules(
        r#"
SecRule ARGS_NAMES "@streq secret" "id:1,phase:2,deny"
SecRule &ARGS "@ge 3" "id:2,phase:2,deny"
SecRule ARGS_POST "@contains evil" "id:3,phase:2,deny"
SecRule REQUEST_COOKIES_NAMES "@streq admin" "id:4,phase:1,deny"
"#,
    );
    assert_eq!(evaluate(&set, &get("/?a=1&secret=2")).denied_by, Some(1));
    assert_eq!(evaluate(&set, &get("/?a=1&b=2")).denied_by, None);
    assert_eq!(evaluate(&set, &get("/?a=1&b=2&c=3")).denied_by, Some(2));
    assert_eq!(evaluate(&set, &get("/?a=1")).denied_by, None);
    let mut json = get("/");
    json.method = "POST";
    json.headers.push(("Content-Type", b"application/json"));
    json.body = br#"{"x":"evil","y":"ok"}"#;
    assert_eq!(evaluate(&set, &json).denied_by, Some(3));
    json.body = br#"{"x":"fine"}"#;
    assert_eq!(evaluate(&set, &json).denied_by, None);
    assert_eq!(evaluate(&set, &get("/")).denied_by, None);
    let mut cookie = get("/");
    cookie.headers.push(("Cookie", b"theme=dark; admin=1"));
    assert_eq!(evaluate(&set, &cookie).denied_by, Some(4));
    cookie.headers.pop();
    cookie.headers.push(("Cookie", b"theme=dark"));
    assert_eq!(evaluate(&set, &cookie).denied_by, None);
}

#[test]
fn chains_share_transformed_values_only_where_they_agree() {
    // Rules 1 and 2 differ by t:htmlEntityDecode: for members without `&` they reduce to
    // the same chain (and share the members passing the screen), for one with `&` they
    // do not. Rule 3 changes a value three times in a row, rule 4 keeps every step.
    let set = rules(
        r#"
SecRule ARGS "@rx <script" "id:1,phase:2,pass,log,t:lowercase"
SecRule ARGS "@rx <script" "id:2,phase:2,pass,log,t:htmlEntityDecode,t:lowercase"
SecRule ARGS "@rx <script" "id:3,phase:2,pass,log,t:urlDecodeUni,t:lowercase,t:htmlEntityDecode"
SecRule ARGS "@rx ^<script>$" "id:4,phase:2,pass,log,multiMatch,t:urlDecodeUni,t:lowercase,t:htmlEntityDecode"
"#,
    );
    let matched = |uri| evaluate(&set, &get(uri)).matched;
    assert_eq!(matched("/?a=HELLO&b=%3CSCRIPT%3E"), [1, 2, 3, 4]);
    assert_eq!(matched("/?a=HELLO&b=%26lt;SCRIPT%26gt;"), [2, 3, 4]);
    assert_eq!(matched("/?a=x&b=%2526lt%253Bscript%2526gt%253B"), [3, 4]);
    assert_eq!(matched("/?b=%2526LT%253BSCRIPT%2526GT%253B&a=x"), [3, 4]);
    assert_eq!(matched("/?a=HELLO&b=%3CSCRIPT"), [1, 2, 3]);
    // The next request on this thread knows nothing of the last one's values.
    assert_eq!(matched("/?a=HELLO&b=SCRIPT"), Vec::<u64>::new());
    assert_eq!(matched("/?a=%3Cscript&b=x"), [1, 2, 3]);
}

#[test]
fn ctl_removes_rules_and_targets_by_tag() {
    const RULES: &str = r#"
SecRule ARGS:mode "@streq quiet" "id:1,phase:1,pass,nolog,ctl:ruleRemoveByTag=noisy"
SecRule ARGS:mode "@streq partial" "id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=attack;ARGS:q"
SecRule ARGS "@contains evil" "id:10,phase:2,deny,tag:'attack',tag:'noisy'"
"#;
    // The first 64 tags that ctl actions name are tested as bits, the others by name:
    // both ways, with 64 other tags named first.
    let fillers: String = (0..64)
        .map(|i| {
            format!(
                "SecRule ARGS:never \"@streq x\" \"id:{},phase:1,pass,nolog,ctl:ruleRemoveByTag=filler{i}\"\n",
                100 + i
            )
        })
        .collect();
    for text in [RULES.to_string(), fillers + RULES] {
        let set = rules(&text);
        let denied = |uri| evaluate(&set, &get(uri)).denied_by;
        assert_eq!(denied("/?q=evil"), Some(10));
        assert_eq!(denied("/?q=evil&mode=quiet"), None, "removed by tag");
        assert_eq!(
            denied("/?q=evil&mode=partial"),
            None,
            "ARGS:q removed by tag"
        );
        assert_eq!(denied("/?x=evil&mode=partial"), Some(10), "ARGS:x stays");
    }
}

#[test]
fn phrase_lists_are_screened_without_changing_a_result() {
    let set = rules(
        r#"
SecRule ARGS "@pm passwd shadow" "id:1,phase:2,deny,t:urlDecodeUni,t:lowercase"
SecRule REQUEST_HEADERS:X-Kind "!@pm alpha beta" "id:2,phase:1,deny"
"#,
    );
    assert!(
        set.phase2.first().is_some_and(|r| r.screened()),
        "@pm is screened"
    );
    assert_eq!(evaluate(&set, &get("/?f=ok")).denied_by, None);
    assert_eq!(evaluate(&set, &get("/?f=/etc/PassWD")).denied_by, Some(1));
    assert_eq!(
        evaluate(&set, &get("/?f=%2Fetc%2F%53hadow")).denied_by,
        Some(1),
        "after the rule's transformations"
    );
    let mut kind = get("/?f=ok");
    kind.headers.push(("X-Kind", b"BETA"));
    assert_eq!(evaluate(&set, &kind).denied_by, None);
    kind.headers.pop();
    kind.headers.push(("X-Kind", b"gamma"));
    assert_eq!(evaluate(&set, &kind).denied_by, Some(2), "a negated list");
}

#[test]
fn gated_rules_and_screen_parts_keep_every_result() {
    // Rule 1 is gated (a screened regex on whole collections); 2 names a member and is
    // gated through its collection; 3 is negated, 4 counts, 5 reads TX: never gated.
    // 6 is a phrase list on the same chain as 1: each part of the screen answers for
    // its own rules.
    let set = rules(
        r#"
SecRule ARGS|REQUEST_COOKIES "@rx (?i)union\s+select" "id:1,phase:2,deny,t:urlDecodeUni"
SecRule REQUEST_HEADERS:X-Probe "@rx sleep\(\d+\)" "id:2,phase:1,deny"
SecRule ARGS "!@rx ^[a-z0-9 ]*$" "id:3,phase:2,deny"
SecRule &ARGS "@gt 5" "id:4,phase:2,deny"
SecRule TX:LEVEL "@eq 7" "id:5,phase:2,deny"
SecRule ARGS "@pm /etc/passwd" "id:6,phase:2,deny,t:urlDecodeUni"
"#,
    );
    let gated: Vec<bool> = set.gates[1].iter().map(|g| g.collections != 0).collect();
    assert_eq!(gated, [true, false, false, false, true]);
    assert!(set.gates[0].first().is_some_and(|g| g.collections != 0));
    // (URI, extra headers, the rule that denies)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], Option<u64>);
    let cases: [Case; 8] = [
        ("/?q=hello+world", &[], None),
        ("/?q=1%20UNION%20SELECT%20pw", &[], Some(1)),
        ("/?q=ok", &[("Cookie", b"s=union select 1")], Some(1)),
        ("/?q=ok", &[("X-Probe", b"sleep(5)")], Some(2)),
        ("/?q=ok", &[("X-Other", b"sleep(5)")], None),
        ("/?q=Hello", &[], Some(3)),
        ("/?a=1&b=2&c=3&d=4&e=5&f=6", &[], Some(4)),
        ("/?f=%2Fetc%2Fpasswd", &[], Some(3)),
    ];
    for (uri, headers, expected) in cases {
        let mut request = get(uri);
        request.headers.extend_from_slice(headers);
        assert_eq!(
            evaluate(&set, &request).denied_by,
            expected,
            "{uri} {headers:?}"
        );
    }
    // The phrase rule alone (without the negated rule 3 ahead of it).
    let phrases = rules(
        r#"
SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:2,deny,t:urlDecodeUni"
SecRule ARGS "@pm /etc/passwd" "id:6,phase:2,deny,t:urlDecodeUni"
"#,
    );
    assert_eq!(
        evaluate(&phrases, &get("/?f=%2Fetc%2Fpasswd")).denied_by,
        Some(6)
    );
    assert_eq!(
        evaluate(&phrases, &get("/?f=union+select")).denied_by,
        Some(1)
    );
    assert_eq!(evaluate(&phrases, &get("/?f=etc")).denied_by, None);
}

#[test]
fn gates_of_one_class_answer_once_per_content_of_their_collections() {
    // 1, 2 and 3 share a gate (same collections, chain, screen part and needs: white
    // space); 4 differs in its chain. Rule 1 runs before the body is read, 2 and 3 after it: the body's
    // arguments must reach 2, although 1 found nothing passing in the query.
    let set = rules(
        r#"
SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:1,pass,t:urlDecodeUni,setvar:tx.one=1"
SecRule ARGS "@rx (?i)union\s+select" "id:2,phase:2,deny,t:urlDecodeUni"
SecRule ARGS "@rx (?i)sleep\s+\d+" "id:3,phase:2,deny,t:urlDecodeUni"
SecRule ARGS "@rx (?i)sleep\s+\d+" "id:4,phase:2,deny,t:lowercase"
"#,
    );
    let classes: Vec<u32> = set.gates.iter().flatten().map(|g| g.class).collect();
    assert_eq!(classes, [0, 0, 0, 1]);
    assert_eq!(set.gate_classes, 2);
    let form: &[(&str, &[u8])] = &[
        ("Host", b"localhost"),
        ("Content-Type", b"application/x-www-form-urlencoded"),
    ];
    let post = |body: &'static [u8]| Request {
        method: "POST",
        headers: form.to_vec(),
        body,
        ..get("/?q=ok")
    };
    // Each request on this thread reuses the last one's answers only if still valid.
    let cases: [(Request, Option<u64>); 5] = [
        (get("/?q=ok"), None),
        (post(b"q=1+UNION+SELECT+pw"), Some(2)),
        (get("/?q=ok"), None),
        (post(b"q=SLEEP+5"), Some(3)),
        (get("/?q=sleep%205"), Some(3)),
    ];
    for (request, expected) in cases {
        let verdict = evaluate(&set, &request);
        assert_eq!(verdict.denied_by, expected, "{:?}", request.body);
    }
}

#[test]
fn a_rule_on_one_tx_variable_reads_it_as_the_general_path_does() {
    // Each rule reads one TX variable as it is (the direct path); the same rules with a
    // transformation that changes none of these values take the general path. Both
    // must record the same matches: names, values, captures, counts and negation.
    let text = |t: &str| {
        format!(
            r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=2"
SecRule &TX:missing "@eq 0" "id:2,phase:1,pass,{t}setvar:'tx.seen=%{{MATCHED_VAR_NAME}}/%{{MATCHED_VAR}}'"
SecRule &TX:level "@eq 1" "id:3,phase:1,pass,{t}setvar:'tx.counted=%{{MATCHED_VAR_NAME}}/%{{MATCHED_VAR}}'"
SecRule TX:LEVEL "!@lt 2" "id:4,phase:1,pass,{t}setvar:'tx.named=%{{MATCHED_VAR_NAME}}/%{{MATCHED_VAR}}'"
SecRule TX:level "@rx ^(\d)$" "id:5,phase:1,pass,capture,{t}setvar:'tx.cap=%{{TX.1}}'"
SecRule TX:missing "!@rx x" "id:6,phase:1,pass,{t}setvar:tx.absent=1"
SecRule TX:level "@lt 2" "id:7,phase:1,pass,{t}setvar:tx.never=1"
SecRule TX:seen "@streq &TX/0" "id:8,phase:1,pass,setvar:tx.ok=1"
SecRule TX:counted "@streq &TX/1" "id:9,phase:1,pass,setvar:tx.ok=+1"
SecRule TX:named "@streq TX:level/2" "id:10,phase:1,pass,setvar:tx.ok=+1"
SecRule TX:cap "@eq 2" "id:11,phase:1,pass,setvar:tx.ok=+1"
SecRule TX:ok "@eq 4" "id:12,phase:1,deny"
"#
        )
    };
    let direct = rules(&text(""));
    let general = rules(&text("t:trim,"));
    for set in [&direct, &general] {
        let verdict = evaluate(set, &get("/"));
        assert_eq!(verdict.denied_by, Some(12));
        assert_eq!(verdict.matched, [2, 3, 4, 5, 8, 9, 10, 11, 12]);
    }
}

#[test]
fn a_tx_comparison_is_decided_from_its_copy_as_the_rule_would_decide_it() {
    // Rules 2-3, 6, 9-10 and 20-23 are decided from their `TxTest` (no match, or a
    // plain match that records MATCHED_VAR(S) and skips); the same rules with a
    // transformation that changes none of these values go through the rule itself. A
    // rule or target removed by id or by tag is left to the rule's own path.
    let text = |t: &str| {
        format!(
            r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1,setvar:tx.limit=3"
SecRule TX:level "@lt 1" "id:2,phase:1,pass,nolog,{t}skipAfter:END-1"
SecRule TX:level "@lt %{{tx.limit}}" "id:3,phase:1,pass,nolog,{t}skipAfter:END-1"
SecAction "id:4,phase:1,pass,nolog,setvar:tx.wrong=1"
SecMarker END-1
SecRule MATCHED_VAR_NAME "@streq TX:level" "id:5,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule &TX:wrong "@eq 0" "id:6,phase:1,pass,nolog,{t}skipAfter:END-2"
SecAction "id:7,phase:1,pass,nolog,setvar:tx.wrong=1"
SecMarker END-2
SecRule MATCHED_VAR_NAME "@streq &TX" "id:8,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule TX:unset "!@eq 1" "id:9,phase:1,pass,nolog,{t}setvar:tx.wrong=1"
SecRule TX:limit "!@gt 5" "id:10,phase:1,pass,nolog,{t}skipAfter:END-3"
SecAction "id:11,phase:1,pass,nolog,setvar:tx.wrong=1"
SecMarker END-3
SecRule MATCHED_VAR_NAME "@streq TX:limit" "id:12,phase:1,pass,nolog,setvar:tx.ok=+1"
SecAction "id:19,phase:1,pass,nolog,ctl:ruleRemoveById=20,ctl:ruleRemoveTargetById=21;TX:level"
SecRule TX:level "@eq 1" "id:20,phase:1,pass,nolog,{t}setvar:tx.wrong=1"
SecRule TX:level "@eq 1" "id:21,phase:1,pass,nolog,{t}setvar:tx.wrong=1"
SecAction "id:18,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=tx-rules;TX:level,ctl:ruleRemoveByTag=gone"
SecRule TX:level "@eq 1" "id:22,phase:1,pass,nolog,tag:'tx-rules',{t}skipAfter:END-4"
SecRule TX:level "@eq 1" "id:23,phase:1,pass,nolog,tag:'gone',{t}skipAfter:END-4"
SecAction "id:24,phase:1,pass,nolog,setvar:tx.ok=+1"
SecMarker END-4
SecRule TX:wrong "@eq 1" "id:30,phase:1,deny"
SecRule TX:ok "@eq 4" "id:31,phase:1,deny"
"#
        )
    };
    let decided = rules(&text(""));
    assert_eq!(decided.tx_tests.len(), 11, "{:?}", decided.tx_tests);
    // Regex groups are written to tx.0…tx.9 by these numbers.
    for n in 0..CAPTURE_KEYS as u32 {
        assert_eq!(decided.tx_names.number(&n.to_string()), Some(n));
    }
    let general = rules(&text("t:trim,"));
    assert_eq!(general.tx_tests.len(), 2, "only 30 and 31");
    for set in [&decided, &general] {
        assert_eq!(evaluate(set, &get("/")).denied_by, Some(31));
    }
}

#[test]
fn setvar_names_and_values_expand_as_the_request_has_them() {
    // Names built from macros (as CRS's 920450 names a variable after each header) are
    // kept in lower case; values keep their case; a name outside TX sets nothing.
    let set = rules(
        r#"
SecRule REQUEST_HEADERS_NAMES "@rx ^X-.*$" "id:1,phase:1,pass,nolog,capture,setvar:'tx.header_name_%{tx.0}=/%{tx.0}/'"
SecRule TX:header_name_x-custom "@streq /X-Custom/" "id:2,phase:1,pass,nolog,setvar:tx.ok=+1"
SecAction "id:3,phase:1,pass,nolog,setvar:'tx.seen_%{rule.id}=%{tx.ok}%{tx.ok}',setvar:'ip.%{rule.id}=1'"
SecRule TX:seen_3 "@eq 11" "id:4,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule &TX:/^3$/ "@eq 0" "id:5,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule TX:ok "@eq 3" "id:6,phase:1,deny"
"#,
    );
    let request = Request {
        headers: vec![("Host", b"localhost"), ("X-Custom", b"1")],
        ..get("/")
    };
    assert_eq!(evaluate(&set, &request).denied_by, Some(6));
}

#[test]
fn a_level_1_request_uses_the_level_1_screen_and_still_runs_higher_rules() {
    // 2 is a level-2 rule that a level-1 request still reaches (no skipAfter gate): the
    // level-1 screen does not hold its pattern, so it runs unscreened, and still denies.
    let text = |level: u8| {
        format!(
            r#"
SecAction "id:10,phase:1,pass,nolog,setvar:tx.detection_paranoia_level={level}"
SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:2,deny,t:urlDecodeUni,tag:'paranoia-level/1'"
SecRule ARGS "@rx (?i)benchmark\(" "id:2,phase:2,deny,t:urlDecodeUni,tag:'paranoia-level/2'"
SecRule ARGS "@pm xp_cmdshell" "id:3,phase:2,deny,tag:'paranoia-level/3'"
"#
        )
    };
    for level in [1, 2] {
        let set = rules(&text(level));
        assert!(set.screen_pl1.is_some(), "a level-1 screen apart");
        let levels: Vec<u8> = set.phase2.iter().map(|r| r.level).collect();
        assert_eq!(levels, [1, 2, 3]);
        let cases = [
            ("/?q=hello", None),
            ("/?q=1+UNION+SELECT+2", Some(1)),
            ("/?q=benchmark(1000,md5(1))", Some(2)),
            ("/?q=exec+xp_cmdshell", Some(3)),
        ];
        for (uri, expected) in cases {
            assert_eq!(
                evaluate(&set, &get(uri)).denied_by,
                expected,
                "{uri} at {level}"
            );
        }
    }
    let none = rules(r#"SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:2,deny""#);
    assert!(none.screen_pl1.is_none(), "no level above 1: one screen");
}

#[test]
fn anomaly_scoring_blocks_and_passes() {
    let set = rules(SCORING);
    let clean = evaluate(&set, &get("/search?q=hello+world"));
    assert_eq!(clean.denied_by, None, "{clean:?}");
    let attack = evaluate(&set, &get("/search?q=1%20UNION%20SELECT%20password"));
    assert_eq!(attack.denied_by, Some(949110), "{attack:?}");
    assert_eq!(attack.matched, [10, 949110], "rule 1 is nolog");
    assert_eq!(attack.anomaly_score, 5);
    // Two matching arguments: the score counts each match, as ModSecurity does.
    let twice = evaluate(&set, &get("/?a=union+select+1&b=union%20select%202"));
    assert_eq!(twice.anomaly_score, 10);
    // Cookies, with one excluded by name.
    let mut r = get("/");
    r.headers.push(("Cookie", b"safe=<script>; a=1"));
    assert_eq!(evaluate(&set, &r).denied_by, None);
    r.headers.push(("Cookie", b"theme=<SCRIPT>"));
    assert_eq!(evaluate(&set, &r).denied_by, Some(949110));
    let mut ua = get("/");
    ua.headers.push(("user-agent", b"sqlmap/1.7"));
    assert_eq!(evaluate(&set, &ua).matched, [12, 949110]);
}

#[test]
fn bodies_chains_skips_and_ctl() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^text/plain" "id:1,phase:1,pass,nolog,ctl:requestBodyProcessor=URLENCODED"
SecRule ARGS_POST:name "@streq bob" "id:2,phase:2,pass,chain"
SecRule ARGS_POST_NAMES "@rx ^age$" "t:none,setvar:tx.both=1"
SecRule REQUEST_URI "@beginsWith /skip" "id:3,phase:2,pass,nolog,skipAfter:END"
SecRule ARGS "@rx evil" "id:4,phase:2,deny"
SecMarker END
SecRule ARGS_NAMES "@rx ^json\.user\.roles\.array_1$" "id:5,phase:2,pass,ctl:ruleRemoveTargetById=6;ARGS:json.user.name"
SecRule ARGS "@rx ^mallory$" "id:6,phase:2,deny"
SecRule &TX:both "@eq 1" "id:7,phase:2,pass"
SecRule REQUEST_BODY "@contains secret" "id:8,phase:2,deny"
"#,
    );
    let mut post = get("/form");
    post.method = "POST";
    post.headers.push(("Content-Type", b"text/plain"));
    post.body = b"name=bob&age=7";
    let v = evaluate(&set, &post);
    assert_eq!(v.matched, [2, 7], "{v:?}");
    post.body = b"name=bob&age=7&x=evil";
    assert_eq!(evaluate(&set, &post).denied_by, Some(4));
    post.uri = "/skip";
    assert_eq!(
        evaluate(&set, &post).denied_by,
        None,
        "skipAfter passes rule 4"
    );
    post.body = b"secret";
    assert_eq!(
        evaluate(&set, &post).denied_by,
        Some(8),
        "REQUEST_BODY of URLENCODED"
    );
    let mut json = get("/api");
    json.method = "POST";
    json.headers.push(("Content-Type", b"application/json"));
    json.body = br#"{"user":{"name":"mallory","roles":["a","b"]}}"#;
    let v = evaluate(&set, &json);
    assert_eq!(
        v.denied_by, None,
        "the ctl removed ARGS:json.user.name from rule 6: {v:?}"
    );
    json.body = br#"{"user":{"name":"mallory","roles":["a"]}}"#;
    assert_eq!(evaluate(&set, &json).denied_by, Some(6));
}

#[test]
fn json_bodies_keep_every_member_in_order() {
    let read = |body: &str| {
        let mut out = Pairs::default();
        let ok = read_json(body.as_bytes(), &mut out);
        let pairs: Vec<(String, String)> = out
            .as_slice()
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        (ok, pairs)
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let (ok, got) = read(
        r#"{"z":1,"a":{"":[true,null,-2.5,"x"],"b":18446744073709551615},"q":"<attack>","q":"x"}"#,
    );
    assert!(ok);
    assert_eq!(
        got,
        [
            pair("json.z", "1"),
            pair("json.a.empty-key.array_0", "true"),
            pair("json.a.empty-key.array_1", ""),
            pair("json.a.empty-key.array_2", "-2.5"),
            pair("json.a.empty-key.array_3", "x"),
            pair("json.a.b", "18446744073709551615"),
            pair("json.q", "<attack>"),
            pair("json.q", "x"),
        ],
        "document order; a duplicated member is kept, not overwritten"
    );
    assert_eq!(read(r#""top""#), (true, vec![pair("json", "top")]));
    let (_, many) = read(r#"{"n":[0,1,2,3,4,5,6,7,8,9,10,-9223372036854775808]}"#);
    assert_eq!(
        many.last(),
        Some(&pair("json.n.array_11", "-9223372036854775808")),
        "indices and integers of several digits, the most negative one too"
    );
    assert_eq!(many.get(10), Some(&pair("json.n.array_10", "10")));
    assert_eq!(read("[]"), (true, vec![]));
    // Escapes are decoded; what was read before an error stays.
    assert_eq!(
        read(r#"{"a":"<script>","b":"#),
        (false, vec![pair("json.a", "<script>")])
    );
    assert!(!read(r#"{"a":1} trailing"#).0);
    assert!(!read(&"[".repeat(10_000)).0, "nesting is bounded");
}

#[test]
fn multipart_bodies() {
    let set = rules(
        r#"
SecRule ARGS_POST:comment "@contains <script" "id:1,phase:2,deny"
SecRule FILES "@rx \.php$" "id:2,phase:2,deny"
SecRule MULTIPART_PART_HEADERS "@rx ^content-type\s*:\s*(.*)$" "id:3,phase:2,pass,t:lowercase,capture,chain"
SecRule TX:1 "@rx evil" "setvar:tx.evil=1"
SecRule TX:evil "@eq 1" "id:4,phase:2,deny"
SecRule REQBODY_ERROR "@eq 1" "id:5,phase:2,deny"
"#,
    );
    let mut post = get("/upload");
    post.method = "POST";
    post.headers
        .push(("Content-Type", b"multipart/form-data; boundary=XyZ"));
    let body = |parts: &str| format!("--XyZ\r\n{parts}\r\n--XyZ--\r\n").into_bytes();
    let ok = body("Content-Disposition: form-data; name=\"comment\"\r\n\r\nhello");
    post.body = &ok;
    assert_eq!(evaluate(&set, &post).denied_by, None);
    let xss = body("Content-Disposition: form-data; name=\"comment\"\r\n\r\n<script>");
    post.body = &xss;
    assert_eq!(evaluate(&set, &post).denied_by, Some(1));
    let file = body(
        "Content-Disposition: form-data; name=\"f\"; filename=\"shell.php\"\r\nContent-Type: text/plain\r\n\r\n<?php",
    );
    post.body = &file;
    assert_eq!(evaluate(&set, &post).denied_by, Some(2));
    let typed =
        b"--XyZ\nContent-Disposition: form-data; name=\"a\"\nContent-Type: Evil/x\n\nv\n--XyZ--\n";
    post.body = typed;
    assert_eq!(
        evaluate(&set, &post).denied_by,
        Some(4),
        "LF line ends, headers read"
    );
    let quoted =
        body("Content-Disposition: form-data; name=\"x;y\"; filename=\"a\\\"b;c.php\"\r\n\r\n1");
    post.body = &quoted;
    assert_eq!(
        evaluate(&set, &post).denied_by,
        Some(2),
        "; and \\\" inside quotes"
    );
    post.body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end";
    assert_eq!(
        evaluate(&set, &post).denied_by,
        Some(5),
        "no closing delimiter"
    );
}

#[test]
fn xml_bodies() {
    let set = rules(
        r#"
SecRule XML:/* "@contains 1 OR 1=1" "id:1,phase:2,deny"
SecRule XML://@* "@rx ^<script" "id:2,phase:2,deny"
SecRule REQBODY_ERROR "@eq 1" "id:3,phase:2,deny"
"#,
    );
    let mut post = get("/xml");
    post.method = "POST";
    post.headers.push(("Content-Type", b"application/xml"));
    // Text, CDATA and character references of every element joined: "1 OR 1=1".
    post.body = b"<a><b>1 </b><![CDATA[O]]>&#x52;&#32;1=1</a>";
    assert_eq!(evaluate(&set, &post).denied_by, Some(1));
    post.body = b"<a><b>1 OR </b><c>2=2</c></a>";
    assert_eq!(evaluate(&set, &post).denied_by, None);
    post.body = br#"<a x="&lt;script>"/>"#;
    assert_eq!(evaluate(&set, &post).denied_by, Some(2));
    post.body = b"<a><b></a>";
    assert_eq!(evaluate(&set, &post).denied_by, Some(3), "not well-formed");
    post.body = b"<a>fine</a>";
    assert_eq!(evaluate(&set, &post).denied_by, None);
}

#[test]
fn request_line_variables() {
    let set = rules(
        r#"
SecRule REQUEST_FILENAME "@streq /a b/c+d.php" "id:1,phase:1,pass"
SecRule REQUEST_BASENAME "@streq c+d.php" "id:2,phase:1,pass"
SecRule QUERY_STRING "@streq x=%41" "id:3,phase:1,pass"
SecRule ARGS_GET:x "@streq A" "id:4,phase:1,pass"
SecRule REQUEST_LINE "@streq GET /a%20b/c+d.php?x=%41 HTTP/1.1" "id:5,phase:1,pass"
SecRule &ARGS "@eq 1" "id:6,phase:1,pass"
SecRule REQUEST_METHOD "!@within GET POST" "id:7,phase:1,deny"
"#,
    );
    let v = evaluate(&set, &get("/a%20b/c+d.php?x=%41"));
    assert_eq!(v.matched, [1, 2, 3, 4, 5, 6], "{v:?}");
    let mut put = get("/");
    put.method = "PUT";
    assert_eq!(evaluate(&set, &put).denied_by, Some(7));
}

/// The real CRS v4 at its default paranoia level 1 on a few requests: an attack is refused
/// by the blocking rule, ordinary requests pass.
#[test]
fn crs_v4_blocks_an_attack_and_passes_ordinary_requests() {
    let all = crate::waf::seclang::parse_files(&crate::waf::testing::crs_v4()).unwrap();
    let set = compile(&all).unwrap();
    let request = |uri: &'static str| Request {
        method: "GET",
        uri,
        protocol: "HTTP/1.1",
        headers: vec![
            ("Host", b"localhost"),
            ("User-Agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
            ("Accept", b"text/html"),
        ],
        body: b"",
        remote_addr: "127.0.0.1",
        unique_id: "1",
        json: None,
    };
    for ordinary in [
        "/",
        "/search?q=O%27Brien%20and%20sons",
        "/products?id=42&sort=price",
    ] {
        let v = evaluate(&set, &request(ordinary));
        assert_eq!(v.denied_by, None, "{ordinary}: {v:?}");
    }
    for (attack, family) in [
        ("/search?q=1%27%20OR%20%271%27%3D%271", 942),
        ("/?x=%3Cscript%3Ealert(1)%3C/script%3E", 941),
        ("/?file=../../../../etc/passwd", 930),
        ("/?cmd=;cat%20/etc/passwd", 932),
    ] {
        let v = evaluate(&set, &request(attack));
        assert_eq!(v.denied_by, Some(949110), "{attack}: {v:?}");
        assert!(v.anomaly_score >= 5, "{attack}: {v:?}");
        assert!(
            v.matched.iter().any(|id| id / 1000 == family),
            "{attack}: no {family}xxx rule in {v:?}"
        );
    }
}

#[test]
fn values_of_digits_alone_reach_rules_that_need_no_class() {
    // Digits have no byte class: a rule without a class shortcut (`needs` = ANY) must still
    // see them, screened (1), unscreened (2) or through a phrase (3); a rule whose operator
    // needs a class (4: white space) is passed over for them and still sees its attack.
    let set = rules(
        r#"
SecRule ARGS:a "@rx ^(?:4294967296|2147483648)$" "id:1,phase:2,deny"
SecRule ARGS:b "@rx ^\d+$" "id:2,phase:2,deny"
SecRule ARGS:c "@pm 4294967296" "id:3,phase:2,deny"
SecRule ARGS:d "@rx \s1" "id:4,phase:2,deny"
"#,
    );
    for (uri, expected) in [
        ("/?a=4294967296", Some(1)),
        ("/?b=12", Some(2)),
        ("/?c=4294967296", Some(3)),
        ("/?d=11", None),
        ("/?d=%201", Some(4)),
        ("/?a=1&b=x&c=1&d=1", None),
    ] {
        assert_eq!(evaluate(&set, &get(uri)).denied_by, expected, "{uri}");
    }
}
