//! SecLang transformations (`t:…`): what a rule does to a value before its operator sees it.
//! Each one reproduces what ModSecurity 3 does, quirks included, because the Core Rule Set's
//! regexes and its regression tests were written against that behaviour: a decoder that is
//! "more correct" than ModSecurity's would make rules miss or fire where CRS does not expect it.
//! Values are bytes; a transformation that would change nothing borrows its input.

use crate::percent::hex_value;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transformation {
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

/// Classes of bytes in a value, one bit each: a transformation can change a value only if it
/// holds a byte of a class the transformation `touches`, so a chain none of whose
/// transformations touches a value's classes leaves it as it is, without being run.
pub mod class {
    pub const UPPER: u32 = 1;
    pub const LOWER: u32 = 1 << 1;
    pub const PERCENT: u32 = 1 << 2;
    pub const PLUS: u32 = 1 << 3;
    pub const AMP: u32 = 1 << 4;
    pub const BACKSLASH: u32 = 1 << 5;
    pub const NUL: u32 = 1 << 6;
    pub const SPACE: u32 = 1 << 7;
    /// `\t \n \r \x0b \x0c`
    pub const WS: u32 = 1 << 8;
    pub const HIGH: u32 = 1 << 9;
    pub const SLASH: u32 = 1 << 10;
    pub const DOT: u32 = 1 << 11;
    pub const STAR: u32 = 1 << 12;
    pub const DASH: u32 = 1 << 13;
    pub const HASH: u32 = 1 << 14;
    /// `"` and `'`
    pub const QUOTE: u32 = 1 << 15;
    pub const CARET: u32 = 1 << 16;
    pub const COMMA: u32 = 1 << 17;
    pub const SEMI: u32 = 1 << 18;
    /// Transformations that may change any value (decoders of whole values, digests).
    pub const ANY: u32 = u32::MAX;
}

const fn class_of(b: u8) -> u32 {
    use class::*;
    match b {
        b'A'..=b'Z' => UPPER,
        b'a'..=b'z' => LOWER,
        b'%' => PERCENT,
        b'+' => PLUS,
        b'&' => AMP,
        b'\\' => BACKSLASH,
        0 => NUL,
        b' ' => SPACE,
        b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => WS,
        0x80..=0xff => HIGH,
        b'/' => SLASH,
        b'.' => DOT,
        b'*' => STAR,
        b'-' => DASH,
        b'#' => HASH,
        b'"' | b'\'' => QUOTE,
        b'^' => CARET,
        b',' => COMMA,
        b';' => SEMI,
        _ => 0,
    }
}

static CLASSES: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

/// The classes of the bytes in `v`.
pub fn byte_classes(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, b| acc | CLASSES[*b as usize])
}

/// The no-break space byte that `htmlEntityDecode` makes of `&nbsp;` (ISO 8859-1).
const NBSP: u8 = 0xa0;

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

/// What `removeWhitespace` keeps: not white space, nor a byte of a UTF-8 no-break space
/// (0xc2 0xa0).
fn kept_by_remove_whitespace(b: u8) -> bool {
    !is_space(b) && b != 0xa0 && b != 0xc2
}

/// C's `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Two hex digits (known to be valid) as a byte.
fn hex_pair(hi: u8, lo: u8) -> u8 {
    (hex_value(hi).unwrap_or(0) << 4) | hex_value(lo).unwrap_or(0)
}

fn trim_start(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !is_space(*b)).unwrap_or(v.len());
    &v[start..]
}

fn trim_end(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|b| !is_space(*b)).map_or(0, |i| i + 1);
    &v[..end]
}

/// The low byte of a `%uHHHH` / `\uHHHH` code, with full-width ASCII (U+FF01–U+FF5E) mapped
/// to ASCII, as ModSecurity does without a Unicode map.
fn low_byte_of_code(digits: &[u8]) -> u8 {
    let mut b = hex_pair(digits[2], digits[3]);
    if b > 0
        && b < 0x5f
        && digits[0].eq_ignore_ascii_case(&b'f')
        && digits[1].eq_ignore_ascii_case(&b'f')
    {
        b += 0x20;
    }
    b
}

/// `%XX` decoded where both digits are hex (else the `%` is kept); with `iis_unicode`, also
/// IIS's `%uHHHH` (its low byte; full-width ASCII folded); with `plus_is_space`, `+` → space
/// (query-string style; `REQUEST_FILENAME` keeps its `+`).
pub(crate) fn url_decode(v: &[u8], iis_unicode: bool, plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' if iis_unicode && i + 1 < v.len() && (v[i + 1] == b'u' || v[i + 1] == b'U') => {
                if i + 5 < v.len() && v[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) {
                    out.push(low_byte_of_code(&v[i + 2..i + 6]));
                    i += 6;
                } else {
                    out.extend_from_slice(&v[i..i + 2]);
                    i += 2;
                }
            }
            b'%' if i + 2 < v.len()
                && v[i + 1].is_ascii_hexdigit()
                && v[i + 2].is_ascii_hexdigit() =>
            {
                out.push(hex_pair(v[i + 1], v[i + 2]));
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Multi-byte UTF-8 characters as `%uHHHH` (at least four lowercase hex digits). What
/// ModSecurity does with broken sequences is kept: a lead byte whose continuation bytes are
/// missing or wrong is dropped, a stray continuation byte is copied, and an overlong or
/// surrogate encoding gets its lead byte appended after the `%u` form. A NUL byte is dropped
/// unless it is the last byte.
fn utf8_to_unicode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 2);
    let mut i = 0;
    let continuation = |k: usize| v.get(k).is_some_and(|b| b & 0xc0 == 0x80);
    while i < v.len() {
        let c = v[i];
        let (len, code) = if c & 0x80 == 0 {
            if c != 0 || i + 1 == v.len() {
                out.push(c);
            }
            i += 1;
            continue;
        } else if c & 0xe0 == 0xc0 {
            if !(continuation(i + 1)) {
                (0, 0)
            } else {
                (2, (u32::from(c & 0x1f) << 6) | u32::from(v[i + 1] & 0x3f))
            }
        } else if c & 0xf0 == 0xe0 {
            if !(continuation(i + 1) && continuation(i + 2)) {
                (0, 0)
            } else {
                (
                    3,
                    (u32::from(c & 0x0f) << 12)
                        | (u32::from(v[i + 1] & 0x3f) << 6)
                        | u32::from(v[i + 2] & 0x3f),
                )
            }
        } else if c & 0xf8 == 0xf0 {
            if c >= 0xf5 {
                out.push(c);
            }
            if !(continuation(i + 1) && continuation(i + 2) && continuation(i + 3)) {
                (0, 0)
            } else {
                (
                    4,
                    (u32::from(c & 0x07) << 18)
                        | (u32::from(v[i + 1] & 0x3f) << 12)
                        | (u32::from(v[i + 2] & 0x3f) << 6)
                        | u32::from(v[i + 3] & 0x3f),
                )
            }
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        if len > 0 {
            out.extend_from_slice(format!("%u{code:04x}").as_bytes());
            let overlong = match len {
                2 => code < 0x80,
                3 => code < 0x800,
                _ => code < 0x10000,
            };
            if (0xd800..=0xdfff).contains(&code) {
                out.push(c);
            }
            if overlong {
                out.push(c);
            }
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// JavaScript escapes: `\uHHHH` (low byte, full-width ASCII folded), `\xHH`, `\OOO` (octal, one
/// byte), `\a \b \f \n \r \t \v`, and any other escaped character as itself.
fn js_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let octal = |b: u8| (b'0'..=b'7').contains(&b);
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        if i + 5 < v.len() && v[i + 1] == b'u' && v[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit)
        {
            out.push(low_byte_of_code(&v[i + 2..i + 6]));
            i += 6;
        } else if i + 3 < v.len()
            && v[i + 1] == b'x'
            && v[i + 2].is_ascii_hexdigit()
            && v[i + 3].is_ascii_hexdigit()
        {
            out.push(hex_pair(v[i + 2], v[i + 3]));
            i += 4;
        } else if i + 1 < v.len() && octal(v[i + 1]) {
            let mut j = 1;
            while j < 3 && i + 1 + j < v.len() && octal(v[i + 1 + j]) {
                j += 1;
            }
            // At most one byte: \400 and above take two digits only.
            if j == 3 && v[i + 1] > b'3' {
                j = 2;
            }
            let value = v[i + 1..i + 1 + j]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(value as u8);
            i += 1 + j;
        } else if i + 1 < v.len() {
            out.push(match v[i + 1] {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        } else {
            out.push(b'\\');
            i += 1;
        }
    }
    out
}

/// CSS escapes: `\` and 1–6 hex digits (the last two make the byte; four-digit and zero-padded
/// longer forms fold full-width ASCII), one white-space byte after a hex escape is eaten,
/// `\` + newline is dropped, `\` + another character is that character, a final `\` is dropped.
fn css_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        i += 1;
        if i >= v.len() {
            break;
        }
        let mut j = 0;
        while j < 6 && i + j < v.len() && v[i + j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > 0 {
            let digits = &v[i..i + j];
            let last_two = |d: &[u8]| hex_pair(d[d.len() - 2], d[d.len() - 1]);
            let fold = match j {
                4 => true,
                5 => digits[0] == b'0',
                6 => digits[0] == b'0' && digits[1] == b'0',
                _ => false,
            };
            let mut b = if j == 1 {
                hex_value(digits[0]).unwrap_or(0)
            } else {
                last_two(digits)
            };
            if fold
                && b > 0
                && b < 0x5f
                && digits[j - 3].eq_ignore_ascii_case(&b'f')
                && digits[j - 4].eq_ignore_ascii_case(&b'f')
            {
                b += 0x20;
            }
            out.push(b);
            if i + j < v.len() && is_space(v[i + j]) {
                j += 1;
            }
            i += j;
        } else if v[i] == b'\n' {
            i += 1;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// HTML entities: `&#DDD;` (up to three digits) and `&#xHH;` (up to two), one byte each, the
/// `;` optional; `&quot; &amp; &lt; &gt; &nbsp;` (name prefix compared case-insensitively, as
/// ModSecurity does); anything else is kept.
fn html_entity_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let skip_semicolon = |j: usize| if v.get(j) == Some(&b';') { j + 1 } else { j };
    while i < v.len() {
        if v[i] != b'&' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if v[j] == b'#' {
            j += 1;
            let hex = v.get(j).is_some_and(|b| *b == b'x' || *b == b'X');
            if hex {
                j += 1;
            }
            let (max, radix) = if hex { (2, 16) } else { (3, 10) };
            let start = j;
            while j - start < max && j < v.len() && (v[j] as char).is_digit(radix) {
                j += 1;
            }
            if j > start {
                let value = v[start..j].iter().fold(0u32, |acc, d| {
                    acc * radix + (*d as char).to_digit(radix).unwrap_or(0)
                });
                out.push(value as u8);
                i = skip_semicolon(j);
            } else {
                // `&#` or `&#x` without digits: copied as they are.
                out.extend_from_slice(&v[i..j]);
                i = j;
            }
            continue;
        }
        let start = j;
        while j < v.len() && v[j].is_ascii_alphanumeric() {
            j += 1;
        }
        let name = &v[start..j];
        let starts = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
        let decoded = if starts(b"quot") {
            Some(b'"')
        } else if starts(b"amp") {
            Some(b'&')
        } else if starts(b"lt") {
            Some(b'<')
        } else if starts(b"gt") {
            Some(b'>')
        } else if starts(b"nbsp") {
            Some(NBSP)
        } else {
            None
        };
        match decoded {
            Some(b) if j > start => {
                out.push(b);
                i = skip_semicolon(j);
            }
            _ => {
                out.extend_from_slice(&v[i..j.max(i + 1)]);
                i = j.max(i + 1);
            }
        }
    }
    out
}

/// Shell command-line normalisation: `" ' \ ^` removed; runs of space, tab, CR, LF, `,` and
/// `;` become one space; a space before `/` or `(` is removed; letters lowercased.
fn cmd_line(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    cmd_line_into(v, &mut out);
    out
}

/// `cmdLine`, appended to `out`.
fn cmd_line_into(v: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let mut space = false;
    for &b in v {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space && out.len() > start {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            other => {
                out.push(other.to_ascii_lowercase());
                space = false;
            }
        }
    }
}

/// Runs of white space become one space.
fn compress_whitespace(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    compress_whitespace_into(v, &mut out);
    out
}

/// `compressWhitespace`, appended to `out`.
fn compress_whitespace_into(v: &[u8], out: &mut Vec<u8>) {
    let mut in_space = false;
    for &b in v {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
                in_space = true;
            }
        } else {
            in_space = false;
            out.push(b);
        }
    }
}

/// `/* … */` comments become one space each; an unterminated one runs to the end (one space).
fn replace_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let mut in_comment = false;
    while i < v.len() {
        if !in_comment {
            if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
                in_comment = true;
                i += 2;
            } else {
                out.push(v[i]);
                i += 1;
            }
        } else if v[i] == b'*' && v.get(i + 1) == Some(&b'/') {
            in_comment = false;
            out.push(b' ');
            i += 2;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// `/* */` and `<!-- -->` comments removed; `--` or `#` ends the value (one space in their
/// place); an unterminated comment leaves one space. As in ModSecurity, the byte right after
/// a comment's end is copied whatever it is.
fn remove_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let mut in_comment = false;
    let at = |i: usize, p: &[u8]| v.len() >= i + p.len() && &v[i..i + p.len()] == p;
    while i < v.len() {
        if !in_comment {
            if at(i, b"/*") {
                in_comment = true;
                i += 2;
            } else if at(i, b"<!--") {
                in_comment = true;
                i += 4;
            } else if at(i, b"--") || v[i] == b'#' {
                out.push(b' ');
                return out;
            } else {
                out.push(v[i]);
                i += 1;
            }
        } else if at(i, b"*/") || at(i, b"-->") {
            in_comment = false;
            i += if v[i] == b'*' { 2 } else { 3 };
            if let Some(&b) = v.get(i) {
                out.push(b);
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// The comment markers `/*`, `*/`, `<!--`, `-->`, `--` and `#` removed.
fn remove_comments_char(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let at = |i: usize, p: &[u8]| v.len() >= i + p.len() && &v[i..i + p.len()] == p;
    while i < v.len() {
        if at(i, b"/*") || at(i, b"*/") {
            i += 2;
        } else if at(i, b"<!--") {
            i += 4;
        } else if at(i, b"-->") {
            i += 3;
        } else if at(i, b"--") {
            i += 2;
        } else if v[i] == b'#' {
            i += 1;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// ANSI C escapes: `\a \b \f \n \r \t \v \\ \? \' \"`, `\xHH`, `\OOO` (one byte); anything else
/// is kept as written.
fn escape_seq_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let octal = |b: u8| (b'0'..=b'7').contains(&b);
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let simple = match v[i + 1] {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'?' | b'\'' | b'"' => Some(v[i + 1]),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
        } else if (v[i + 1] == b'x' || v[i + 1] == b'X')
            && i + 3 < v.len()
            && v[i + 2].is_ascii_hexdigit()
            && v[i + 3].is_ascii_hexdigit()
        {
            out.push(hex_pair(v[i + 2], v[i + 3]));
            i += 4;
        } else if octal(v[i + 1]) {
            let mut j = 1;
            while j < 3 && i + 1 + j < v.len() && octal(v[i + 1 + j]) {
                j += 1;
            }
            let value = v[i + 1..i + 1 + j]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(value as u8);
            i += 1 + j;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// Base64 decoding up to the first NUL byte; white space (space, CR, LF) is skipped and `=`
/// padding is optional. Anything else that is not of the alphabet makes the result empty, as
/// ModSecurity's decoder (mbedTLS) returns nothing for invalid input.
fn base64_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    base64_decode_into(v, &mut out);
    out
}

/// `base64Decode`, appended to `out` (nothing appended for invalid input).
fn base64_decode_into(v: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let v = &v[..v.iter().position(|b| *b == 0).unwrap_or(v.len())];
    let mut bits = 0u32;
    let mut count = 0;
    let mut padding = 0;
    for &b in v {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                if padding > 2 {
                    out.truncate(start);
                    return;
                }
                continue;
            }
            b' ' | b'\r' | b'\n' => continue,
            _ => {
                out.truncate(start);
                return;
            }
        };
        if padding > 0 {
            out.truncate(start);
            return;
        }
        bits = (bits << 6) | u32::from(value);
        count += 1;
        if count == 4 {
            out.extend_from_slice(&[(bits >> 16) as u8, (bits >> 8) as u8, bits as u8]);
            bits = 0;
            count = 0;
        }
    }
    match count {
        2 => out.push((bits >> 4) as u8),
        3 => out.extend_from_slice(&[(bits >> 10) as u8, (bits >> 2) as u8]),
        _ => {}
    }
}

/// Path normalisation: repeated slashes merged, `.` segments removed, `..` removing the
/// segment before it (never above the root; a relative path keeps the `..` it cannot resolve),
/// a trailing slash kept only if there was one. With `win`, backslashes are slashes first.
/// Written from ModSecurity's documented behaviour rather than its byte-by-byte algorithm:
/// the cases tested here agree with it; the CRS regression corpus is the judge of the rest.
fn normalize_path(v: &[u8], win: bool) -> Vec<u8> {
    if v.is_empty() {
        return Vec::new();
    }
    let text: Vec<u8> = if win {
        v.iter()
            .map(|b| if *b == b'\\' { b'/' } else { *b })
            .collect()
    } else {
        v.to_vec()
    };
    let absolute = text[0] == b'/';
    let trailing = text[text.len() - 1] == b'/';
    let mut segments: Vec<&[u8]> = Vec::new();
    // How many leading `..` of a relative path could not be resolved.
    let mut unresolved = 0;
    for part in text.split(|b| *b == b'/') {
        match part {
            b"" => {}
            b"." => {}
            b".." => {
                if segments.len() > unresolved {
                    segments.pop();
                } else if !absolute {
                    segments.push(part);
                    unresolved += 1;
                }
            }
            _ => segments.push(part),
        }
    }
    let mut out = Vec::with_capacity(text.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
pub(crate) mod class_tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const ALL: [Transformation; 26] = {
        use Transformation::*;
        [
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
        ]
    };

    proptest! {
        /// The shortcut is exact: a transformation that does not touch any class of a value
        /// gives the value back unchanged.
        #[test]
        fn untouched_values_are_unchanged(
            v in proptest::collection::vec(
                prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x".to_vec()),
                0..12,
            )
        ) {
            let classes = byte_classes(&v);
            for t in ALL {
                if t.leaves(classes) {
                    prop_assert_eq!(&t.apply(&v)[..], &v[..], "{:?}", t);
                }
            }
        }

        /// `apply_into` appends what `apply` returns, after whatever the buffer held, and
        /// appends nothing (answering `false`) where `apply` leaves the value as it is.
        #[test]
        fn applied_into_a_buffer_as_applied(
            v in proptest::collection::vec(
                prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x".to_vec()),
                0..12,
            ),
            held in proptest::collection::vec(prop::sample::select(b" a/".to_vec()), 0..3),
        ) {
            for t in ALL {
                let mut out = held.clone();
                let changed = t.apply_into(&v, &mut out);
                let applied = t.apply(&v);
                prop_assert_eq!(changed, matches!(applied, Cow::Owned(_)), "{:?}", t);
                prop_assert_eq!(&out[..held.len()], &held[..], "{:?}", t);
                match changed {
                    true => prop_assert_eq!(&out[held.len()..], &applied[..], "{:?}", t),
                    false => prop_assert_eq!(out.len(), held.len(), "{:?}", t),
                }
            }
        }

        /// A transformation's output holds only the classes of its input and those it
        /// `produces` (what lets a chain skip its later no-op transformations).
        #[test]
        fn outputs_hold_only_produced_classes(
            v in proptest::collection::vec(
                prop::sample::select(b"aZ09%+&\\\0 \t\n\xa0\xc2/.*-#\"'^,;<>!=()x".to_vec()),
                0..12,
            )
        ) {
            let classes = byte_classes(&v);
            for t in ALL {
                let out = byte_classes(&t.apply(&v));
                prop_assert_eq!(out & !(classes | t.produces()), 0, "{:?} of {:?}", t, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
                let (Directive::Rule { actions, .. } | Directive::Action(actions)) = d.directive
                else {
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
}
