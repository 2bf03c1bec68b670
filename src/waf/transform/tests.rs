//! Unit tests of the transformations, against ModSecurity's behaviour.
use super::*;
use Transformation::*;

fn t(tr: Transformation, input: &[u8]) -> Vec<u8> {
    tr.apply(input).into_owned()
}

#[test]
fn names_are_known_case_insensitively() {
    assert_eq!(
        Transformation::from_name("urlDecodeUni"),
        Some(UrlDecodeUni)
    );
    assert_eq!(
        Transformation::from_name("base64decode"),
        Some(Base64Decode)
    );
    assert_eq!(
        Transformation::from_name("normalisePath"),
        Some(NormalizePath)
    );
    assert_eq!(Transformation::from_name("none"), None);
    assert_eq!(Transformation::from_name("alert"), None);
}

/// Every `t:` of both Core Rule Sets here (v4 snapshot, Debian's 3.3.4) is one of ours.
#[test]
fn every_transformation_the_crs_uses_is_known() {
    use crate::waf::seclang::{parse_file, Directive};
    let mut seen = std::collections::BTreeSet::new();
    for path in crate::waf::testing::both() {
        for d in parse_file(&path).unwrap() {
            let (Directive::Rule { actions, .. } | Directive::Action(actions)) = d.directive else {
                continue;
            };
            for a in actions.iter().filter(|a| a.name == "t") {
                let name = a.value.clone().unwrap_or_default();
                assert!(
                    name == "none" || Transformation::from_name(&name).is_some(),
                    "{}: t:{name}",
                    d.at
                );
                seen.insert(name);
            }
        }
    }
    assert!(seen.len() > 15, "{seen:?}");
}

#[test]
fn url_decoding() {
    assert_eq!(t(UrlDecode, b"a%27b+c%2"), b"a'b c%2");
    assert_eq!(t(UrlDecode, b"%zz%41"), b"%zzA");
    assert_eq!(t(UrlDecodeUni, b"%u0027%uff1cscript%uFF1E"), b"'<script>");
    assert_eq!(t(UrlDecodeUni, b"%u12"), b"%u12");
    assert_eq!(t(UrlDecodeUni, b"%uzzzz%41"), b"%uzzzzA");
    assert!(matches!(UrlDecode.apply(b"plain"), Cow::Borrowed(_)));
}

#[test]
fn utf8_to_unicode_and_its_quirks() {
    assert_eq!(t(Utf8ToUnicode, "é€😀".as_bytes()), b"%u00e9%u20ac%u1f600");
    assert_eq!(
        t(Utf8ToUnicode, b"a\xc3"),
        b"a",
        "a lead byte without its continuation is dropped"
    );
    assert_eq!(
        t(Utf8ToUnicode, b"\x80x"),
        b"\x80x",
        "a stray continuation byte is copied"
    );
    assert_eq!(
        t(Utf8ToUnicode, b"\xc0\xaf"),
        b"%u002f\xc0",
        "overlong: lead byte appended"
    );
    assert_eq!(t(Utf8ToUnicode, b"a\0b\0"), b"ab\0");
}

#[test]
fn js_and_css_and_escape_sequences() {
    assert_eq!(t(JsDecode, br"\u0041\x42\103\n\'\q\"), b"ABC\n'q\\");
    assert_eq!(t(JsDecode, br"\uff1c\777"), b"<\x3f7");
    assert_eq!(
        t(
            CssDecode,
            br"\3c script\3E\000041\ff1c\
x\"
        ),
        b"<script>A<x"
    );
    assert_eq!(t(CssDecode, br"ja\vascript"), b"javascript");
    assert_eq!(
        t(CssDecode, br"j\ava"),
        b"j\nva",
        "a is a hex digit: \\a is byte 0x0a"
    );
    assert_eq!(t(EscapeSeqDecode, br"\x41\101\t\q\"), b"AA\t\\q\\");
}

#[test]
fn html_entities() {
    assert_eq!(
        t(HtmlEntityDecode, b"&lt;a&#60;&#x3c&QUOT;&amp&nbsp;"),
        b"<a<<\"&\xa0"
    );
    assert_eq!(t(HtmlEntityDecode, b"&#;&#x;&foo;&"), b"&#;&#x;&foo;&");
    assert_eq!(
        t(HtmlEntityDecode, b"&#0000065"),
        b"\x000065",
        "three decimal digits at most"
    );
}

#[test]
fn command_lines_and_white_space() {
    assert_eq!(
        t(CmdLine, br#"C"A"T ,; /e^tc\/p'asswd  (x)"#),
        b"cat/etc/passwd(x)"
    );
    assert_eq!(t(CompressWhitespace, b"a \t\n b\x0bc"), b"a b c");
    assert_eq!(t(RemoveWhitespace, b" a\tb\xc2\xa0c "), b"abc");
    assert_eq!(t(Trim, b" \t a b \n"), b"a b");
    assert_eq!(t(RemoveNulls, b"a\0b"), b"ab");
    assert_eq!(t(ReplaceNulls, b"a\0b"), b"a b");
    assert_eq!(t(Lowercase, b"SeLeCT"), b"select");
}

#[test]
fn comments() {
    assert_eq!(t(ReplaceComments, b"un/**/ion/* x"), b"un ion ");
    assert_eq!(t(RemoveComments, b"a/*x*/bc<!--y-->de--z"), b"abcde ");
    assert_eq!(t(RemoveCommentsChar, b"a/*b*/c<!--d-->e--f#g"), b"abcdefg");
}

#[test]
fn paths() {
    assert_eq!(
        t(NormalizePath, b"/a/./b/../../../etc//passwd"),
        b"/etc/passwd"
    );
    assert_eq!(t(NormalizePath, b"a/../../x/"), b"../x/");
    assert_eq!(t(NormalizePath, b"/a/b/.."), b"/a");
    assert_eq!(
        t(NormalizePathWin, br"c:\a\..\windows\win.ini"),
        b"c:/windows/win.ini"
    );
    assert_eq!(t(NormalizePathWin, br"..\..\boot.ini"), b"../../boot.ini");
}

#[test]
fn encodings_and_digests() {
    assert_eq!(t(Base64Decode, b"c2VsZWN0IDE="), b"select 1");
    assert_eq!(t(Base64Decode, b"c2VsZWN0IDE"), b"select 1");
    assert_eq!(t(Base64Decode, b"c2Vs\r\nZWN0"), b"select");
    assert_eq!(t(Base64Decode, b"not base64!"), b"");
    assert_eq!(t(HexEncode, b"A\xff"), b"41ff");
    assert_eq!(t(Length, b"hello"), b"5");
    assert_eq!(
        hex::encode(t(Sha1, b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
}
