//! The decoders: URL (with IIS `%u`), UTF-8 to `%u`, JavaScript, CSS, HTML entities, escape
//! sequences and base64, each as ModSecurity 3 decodes, quirks included.

use super::bytes::*;
use crate::percent::hex_value;

/// The low byte of a `%uHHHH` / `\uHHHH` code, with full-width ASCII (U+FF01–U+FF5E) mapped
/// to ASCII, as ModSecurity does without a Unicode map.
pub(super) fn low_byte_of_code(digits: &[u8]) -> u8 {
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
pub(super) fn utf8_to_unicode(v: &[u8]) -> Vec<u8> {
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
pub(super) fn js_decode(v: &[u8]) -> Vec<u8> {
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
pub(super) fn css_decode(v: &[u8]) -> Vec<u8> {
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
pub(super) fn html_entity_decode(v: &[u8]) -> Vec<u8> {
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

/// ANSI C escapes: `\a \b \f \n \r \t \v \\ \? \' \"`, `\xHH`, `\OOO` (one byte); anything else
/// is kept as written.
pub(super) fn escape_seq_decode(v: &[u8]) -> Vec<u8> {
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
pub(super) fn base64_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    base64_decode_into(v, &mut out);
    out
}

/// `base64Decode`, appended to `out` (nothing appended for invalid input).
pub(super) fn base64_decode_into(v: &[u8], out: &mut Vec<u8>) {
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
