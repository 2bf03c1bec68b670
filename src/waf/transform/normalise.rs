//! The normalisers: command lines, whitespace, comments (SQL, C, shell) and paths, as
//! ModSecurity 3 normalises them.

use super::bytes::*;

/// Shell command-line normalisation: `" ' \ ^` removed; runs of space, tab, CR, LF, `,` and
/// `;` become one space; a space before `/` or `(` is removed; letters lowercased.
pub(super) fn cmd_line(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    cmd_line_into(v, &mut out);
    out
}

/// `cmdLine`, appended to `out`.
pub(super) fn cmd_line_into(v: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn compress_whitespace(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    compress_whitespace_into(v, &mut out);
    out
}

/// `compressWhitespace`, appended to `out`.
pub(super) fn compress_whitespace_into(v: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn replace_comments(v: &[u8]) -> Vec<u8> {
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
pub(super) fn remove_comments(v: &[u8]) -> Vec<u8> {
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
pub(super) fn remove_comments_char(v: &[u8]) -> Vec<u8> {
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

/// Path normalisation: repeated slashes merged, `.` segments removed, `..` removing the
/// segment before it (never above the root; a relative path keeps the `..` it cannot resolve),
/// a trailing slash kept only if there was one. With `win`, backslashes are slashes first.
/// Written from ModSecurity's documented behaviour rather than its byte-by-byte algorithm:
/// the cases tested here agree with it; the CRS regression corpus is the judge of the rest.
pub(super) fn normalize_path(v: &[u8], win: bool) -> Vec<u8> {
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
