//! SecLang transformations (`t:…`): what a rule does to a value before its operator sees it.
//! Each one reproduces what ModSecurity 3 does, quirks included, because the Core Rule Set's
//! regexes and its regression tests were written against that behaviour: a decoder that is
//! "more correct" than ModSecurity's would make rules miss or fire where CRS does not expect it.
//! Values are bytes; a transformation that would change nothing borrows its input.
//!
//! Here: the transformations, what each may change (`class`) and does; the decoders are in
//! `decode`, the normalisers (whitespace, comments, command lines, paths) in `normalise`.

mod bytes;
pub mod class;
#[cfg(test)]
pub(crate) mod class_tests;
pub(crate) mod decode;
mod normalise;
#[cfg(test)]
mod tests;

use bytes::*;
use decode::*;
use normalise::*;
use std::borrow::Cow;

/// Defines `Transformation` and `Transformation::ALL` from one list, so that the list the
/// property tests walk cannot drift from the enum.
macro_rules! transformations {
    ($($name:ident,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Transformation {
            $($name,)+
        }

        impl Transformation {
            /// Every transformation.
            pub const ALL: &'static [Transformation] = &[$(Transformation::$name,)+];
        }
    };
}

transformations! {
    Base64Decode,
    CmdLine,
    CompressWhitespace,
    CssDecode,
    EscapeSeqDecode,
    HexEncode,
    HtmlEntityDecode,
    JsDecode,
    Length,
    Lowercase,
    NormalizePath,
    NormalizePathWin,
    RemoveComments,
    RemoveCommentsChar,
    RemoveNulls,
    RemoveWhitespace,
    ReplaceComments,
    ReplaceNulls,
    Sha1,
    Trim,
    TrimLeft,
    TrimRight,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    Utf8ToUnicode,
}

impl Transformation {
    /// Whether this transformation certainly gives back a value with these byte classes as
    /// it is (`ANY` ones always run: `length` of an empty value is `0`).
    pub fn leaves(self, classes: u32) -> bool {
        let touches = self.touches();
        touches != class::ANY && touches & classes == 0
    }

    /// The byte classes this transformation may act on (see `class`).
    pub fn touches(self) -> u32 {
        use class::*;
        use Transformation::*;
        match self {
            Base64Decode | HexEncode | Length | Sha1 => ANY,
            CmdLine => UPPER | QUOTE | BACKSLASH | CARET | COMMA | SEMI | SPACE | WS,
            CompressWhitespace | Trim | TrimLeft | TrimRight => SPACE | WS,
            CssDecode | JsDecode | EscapeSeqDecode => BACKSLASH,
            HtmlEntityDecode => AMP,
            Lowercase => UPPER,
            Uppercase => LOWER,
            NormalizePath => SLASH | DOT,
            NormalizePathWin => SLASH | DOT | BACKSLASH,
            RemoveComments | RemoveCommentsChar => STAR | DASH | HASH,
            ReplaceComments => STAR,
            RemoveNulls | ReplaceNulls => NUL,
            RemoveWhitespace => SPACE | WS | HIGH,
            UrlDecode | UrlDecodeUni => PERCENT | PLUS,
            Utf8ToUnicode => HIGH | NUL,
        }
    }

    /// The byte classes this transformation may bring into a value that did not hold them
    /// (`ANY` for decoders: they may make any byte). With `touches`, this says which later
    /// transformations of a chain can still act on a value.
    pub fn produces(self) -> u32 {
        use class::*;
        use Transformation::*;
        match self {
            Base64Decode | HexEncode | Length | Sha1 | CssDecode | JsDecode | EscapeSeqDecode
            | HtmlEntityDecode | UrlDecode | UrlDecodeUni | Utf8ToUnicode => ANY,
            CmdLine => LOWER | SPACE,
            CompressWhitespace | RemoveComments | ReplaceComments | ReplaceNulls => SPACE,
            Lowercase => LOWER,
            Uppercase => UPPER,
            NormalizePathWin => SLASH,
            NormalizePath | RemoveCommentsChar | RemoveNulls | RemoveWhitespace | Trim
            | TrimLeft | TrimRight => 0,
        }
    }

    /// The transformation named in `t:NAME` (names compared case-insensitively, as
    /// ModSecurity does: CRS writes `t:base64decode` once). `none` is not a transformation but
    /// the reset of a rule's list, handled by the compiler.
    pub fn from_name(name: &str) -> Option<Self> {
        use Transformation::*;
        let known = [
            ("base64Decode", Base64Decode),
            ("cmdLine", CmdLine),
            ("compressWhitespace", CompressWhitespace),
            ("cssDecode", CssDecode),
            ("escapeSeqDecode", EscapeSeqDecode),
            ("hexEncode", HexEncode),
            ("htmlEntityDecode", HtmlEntityDecode),
            ("jsDecode", JsDecode),
            ("length", Length),
            ("lowercase", Lowercase),
            ("normalisePath", NormalizePath),
            ("normalizePath", NormalizePath),
            ("normalisePathWin", NormalizePathWin),
            ("normalizePathWin", NormalizePathWin),
            ("removeComments", RemoveComments),
            ("removeCommentsChar", RemoveCommentsChar),
            ("removeNulls", RemoveNulls),
            ("removeWhitespace", RemoveWhitespace),
            ("replaceComments", ReplaceComments),
            ("replaceNulls", ReplaceNulls),
            ("sha1", Sha1),
            ("trim", Trim),
            ("trimLeft", TrimLeft),
            ("trimRight", TrimRight),
            ("uppercase", Uppercase),
            ("urlDecode", UrlDecode),
            ("urlDecodeUni", UrlDecodeUni),
            ("utf8toUnicode", Utf8ToUnicode),
        ];
        known
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
    }

    /// Apply to one value, appending the result to `out`: `false` (nothing appended) when
    /// the value is left as it is. The commonest transformations that change a value write
    /// straight into `out`, a buffer its owner keeps, instead of a new one.
    pub fn apply_into(self, v: &[u8], out: &mut Vec<u8>) -> bool {
        use Transformation::*;
        let start = out.len();
        match self {
            CmdLine => cmd_line_into(v, out),
            CompressWhitespace => compress_whitespace_into(v, out),
            Base64Decode => base64_decode_into(v, out),
            RemoveWhitespace => {
                out.extend(v.iter().copied().filter(|b| kept_by_remove_whitespace(*b)))
            }
            Trim => out.extend_from_slice(trim_end(trim_start(v))),
            TrimLeft => out.extend_from_slice(trim_start(v)),
            TrimRight => out.extend_from_slice(trim_end(v)),
            other => match other.apply(v) {
                Cow::Borrowed(_) => return false,
                Cow::Owned(changed) => out.extend_from_slice(&changed),
            },
        }
        if out.get(start..) == Some(v) {
            out.truncate(start);
            return false;
        }
        true
    }

    /// Apply to one value.
    pub fn apply<'a>(self, v: &'a [u8]) -> Cow<'a, [u8]> {
        use Transformation::*;
        let owned = match self {
            Base64Decode => base64_decode(v),
            CmdLine => cmd_line(v),
            CompressWhitespace => {
                if !v.windows(2).any(|w| is_space(w[0]) && is_space(w[1]))
                    && !v.iter().any(|b| is_space(*b) && *b != b' ')
                {
                    return Cow::Borrowed(v);
                }
                compress_whitespace(v)
            }
            CssDecode if !v.contains(&b'\\') => return Cow::Borrowed(v),
            CssDecode => css_decode(v),
            EscapeSeqDecode if !v.contains(&b'\\') => return Cow::Borrowed(v),
            EscapeSeqDecode => escape_seq_decode(v),
            HexEncode => hex::encode(v).into_bytes(),
            HtmlEntityDecode if !v.contains(&b'&') => return Cow::Borrowed(v),
            HtmlEntityDecode => html_entity_decode(v),
            JsDecode if !v.contains(&b'\\') => return Cow::Borrowed(v),
            JsDecode => js_decode(v),
            Length => v.len().to_string().into_bytes(),
            Lowercase if !v.iter().any(u8::is_ascii_uppercase) => return Cow::Borrowed(v),
            Lowercase => v.to_ascii_lowercase(),
            Uppercase if !v.iter().any(u8::is_ascii_lowercase) => return Cow::Borrowed(v),
            Uppercase => v.to_ascii_uppercase(),
            // One segment (no separator) is left as it is, unless it is `.` (which goes).
            NormalizePath if !v.contains(&b'/') && v != b"." => return Cow::Borrowed(v),
            NormalizePathWin if !v.iter().any(|b| *b == b'/' || *b == b'\\') && v != b"." => {
                return Cow::Borrowed(v)
            }
            NormalizePath => normalize_path(v, false),
            NormalizePathWin => normalize_path(v, true),
            RemoveComments => remove_comments(v),
            RemoveCommentsChar => remove_comments_char(v),
            RemoveNulls if !v.contains(&0) => return Cow::Borrowed(v),
            RemoveNulls => v.iter().copied().filter(|b| *b != 0).collect(),
            ReplaceNulls if !v.contains(&0) => return Cow::Borrowed(v),
            ReplaceNulls => v.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect(),
            RemoveWhitespace => {
                let keep = |b: &u8| kept_by_remove_whitespace(*b);
                if v.iter().all(keep) {
                    return Cow::Borrowed(v);
                }
                v.iter().copied().filter(keep).collect()
            }
            ReplaceComments if !v.windows(2).any(|w| w == b"/*") => return Cow::Borrowed(v),
            ReplaceComments => replace_comments(v),
            Sha1 => {
                use sha1::{Digest, Sha1 as Hasher};
                Hasher::digest(v).to_vec()
            }
            Trim => trim_end(trim_start(v)).to_vec(),
            TrimLeft => trim_start(v).to_vec(),
            TrimRight => trim_end(v).to_vec(),
            UrlDecode | UrlDecodeUni if !v.iter().any(|b| *b == b'%' || *b == b'+') => {
                return Cow::Borrowed(v)
            }
            UrlDecode => url_decode(v, false, true),
            UrlDecodeUni => url_decode(v, true, true),
            Utf8ToUnicode if v.is_ascii() && !v.contains(&0) => return Cow::Borrowed(v),
            Utf8ToUnicode => utf8_to_unicode(v),
        };
        if owned == v {
            Cow::Borrowed(v)
        } else {
            Cow::Owned(owned)
        }
    }
}
